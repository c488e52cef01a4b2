"""Phantoms (analytic shapes, torso, hot-rod, Shepp-Logan) and attenuation coefficients."""

import math
import time

import jax
import numpy as np
import pytest

from jaxspect.phantoms import (
    ATTENUATION_ENERGIES_KEV,
    MASS_ATTENUATION_CM2_PER_G,
    PHOTON_ENERGIES_KEV,
    TORSO_ORGANS,
    attenuation_coefficients,
    ellipsoid,
    elliptic_cylinder,
    hot_rod_phantom,
    linear_attenuation,
    shepp_logan_2d,
    shepp_logan_3d,
    torso_phantom,
    voxel_centres,
)


def test_voxel_centres_are_centred():
    x, y, z = voxel_centres((4, 4, 3), (2.0, 2.0, 5.0))
    np.testing.assert_allclose(x[:, 0, 0], [-3, -1, 1, 3])
    np.testing.assert_allclose(z[0, 0, :], [-5, 0, 5])


def test_ellipsoid_volume_matches_analytic():
    vs = (2.0, 2.0, 2.0)
    e = ellipsoid((40, 40, 40), vs, (3.0, -4.0, 1.0), (20.0, 14.0, 10.0), supersample=4)
    volume = e.sum() * np.prod(vs)
    assert volume == pytest.approx(4 / 3 * np.pi * 20 * 14 * 10, rel=0.01)
    assert e.min() == 0 and e.max() == 1


def test_elliptic_cylinder_extent_and_errors():
    c = elliptic_cylinder((21, 21, 5), (1.0, 1.0, 1.0), (10.0, 5.0), z_range_mm=(-1.0, 1.0))
    assert c[:, 10, 2].sum() == 21 and c[10, :, 2].sum() == 11
    assert c[:, :, 0].sum() == 0
    with pytest.raises(ValueError, match="semi_axes_mm"):
        ellipsoid((4, 4, 4), (1.0, 1.0, 1.0), (0, 0, 0), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="voxel_size"):
        elliptic_cylinder((4, 4, 4), (1.0, -1.0, 1.0), (1.0, 1.0))


# --- attenuation coefficients -------------------------------------------------------------------


def test_linear_attenuation_table_and_interpolation():
    # Tabulated points are reproduced exactly (mu/rho * rho / 10, 1/mm).
    assert linear_attenuation("water", 150.0) == pytest.approx(0.1505 / 10, rel=1e-12)
    assert linear_attenuation("bone", 200.0) == pytest.approx(0.1309 * 1.92 / 10, rel=1e-12)
    assert linear_attenuation("lung", 100.0) == pytest.approx(0.1695 * 0.26 / 10, rel=1e-12)
    assert linear_attenuation("soft_tissue", 300.0) == pytest.approx(0.1175 * 1.06 / 10, rel=1e-12)
    # Log-log interpolation: at the geometric mean energy the coefficient is the geometric mean.
    e = math.sqrt(100.0 * 150.0)
    assert linear_attenuation("water", e) == pytest.approx(math.sqrt(0.1707 * 0.1505) / 10, rel=1e-12)
    # The familiar value: water at Tc-99m's 140 keV is about 0.154 /cm.
    assert linear_attenuation("water", 140.0) == pytest.approx(0.0154, abs=2e-4)
    assert linear_attenuation("water", 140.0, density=2.0) == pytest.approx(2 * linear_attenuation("water", 140.0))
    for energy in (*PHOTON_ENERGIES_KEV.values(), *ATTENUATION_ENERGIES_KEV):
        mu = attenuation_coefficients(energy)
        assert mu["bone"] > mu["soft_tissue"] > mu["water"] > mu["lung"] > 0
    # Monotone decreasing with energy over the table (no edges between 50 and 500 keV).
    for table in MASS_ATTENUATION_CM2_PER_G.values():
        assert all(a > b for a, b in zip(table, table[1:]))
    with pytest.raises(ValueError, match="unknown material"):
        linear_attenuation("lead", 140.0)
    with pytest.raises(ValueError, match="outside the tabulated range"):
        linear_attenuation("water", 30.0)
    with pytest.raises(ValueError, match="outside the tabulated range"):
        linear_attenuation("water", 511.0)
    with pytest.raises(ValueError, match="outside the tabulated range"):
        linear_attenuation("water", float("nan"))
    with pytest.raises(ValueError, match="density"):
        linear_attenuation("water", 140.0, density=0.0)


# --- torso phantom ------------------------------------------------------------------------------

VOXEL_ML = 4.8**3 / 1e3


@pytest.fixture(scope="module")
def torsos():
    return [torso_phantom(jax.random.key(s)) for s in range(4)]


def test_torso_lesion_volumes_within_5_percent(torsos):
    for p in torsos:
        for i, requested in enumerate((67.0, 10.0, 9.0, 5.0)):
            volume = p.masks[f"lesion_{i + 1}"].sum() * VOXEL_ML
            assert volume == pytest.approx(requested, rel=0.05)
            assert p.lesion_volumes_ml[i] == pytest.approx(volume)
    p = torso_phantom(jax.random.key(11), lesion_volumes_ml=(100.0, 25.0, 5.0))
    for i, requested in enumerate((100.0, 25.0, 5.0)):
        assert p.masks[f"lesion_{i + 1}"].sum() * VOXEL_ML == pytest.approx(requested, rel=0.05)
    assert "lesion_4" not in p.masks


def _dilate(mask):
    out = mask.copy()
    for axis in range(3):
        out |= np.roll(mask, 1, axis) | np.roll(mask, -1, axis)
    return out


def test_torso_masks_disjoint_and_nested(torsos):
    for p in torsos:
        body = p.masks["body"]
        organs = [p.masks[name] for name in TORSO_ORGANS]
        assert all(m.dtype == bool and m.shape == (128, 128, 80) for m in p.masks.values())
        assert all(m.sum() > 100 for m in organs)
        total = sum(m.astype(int) for m in organs)
        assert total.max() == 1  # organs pairwise disjoint
        lesions = [p.masks[f"lesion_{i}"] for i in range(1, 5)]
        assert sum(m.astype(int) for m in lesions).max() == 1  # lesions pairwise disjoint
        for i, m in enumerate(lesions):
            assert m.any() and not (m & ~p.masks["liver"]).any()  # inside the liver
            # one voxel of liver all round it, and never touching another lesion
            assert not (_dilate(m) & ~p.masks["liver"]).any()
            others = np.any([o for j, o in enumerate(lesions) if j != i], axis=0)
            assert not (_dilate(m) & others).any()
        for m in p.masks.values():
            assert not (m & ~body).any()  # everything inside the body
        # Anatomy (LPS): liver on the patient's right (x < 0), spleen left, kidneys and spine
        # posterior (y > 0), lungs above the liver.
        x, y, z = voxel_centres((128, 128, 80), (4.8, 4.8, 4.8))
        centroid = {k: np.array([c[m].mean() for c in (x, y, z)]) for k, m in p.masks.items()}
        assert centroid["liver"][0] < -20 and centroid["spleen"][0] > 20
        assert centroid["kidney_right"][0] < 0 < centroid["kidney_left"][0]
        assert min(centroid["kidney_left"][1], centroid["kidney_right"][1], centroid["spine"][1]) > 30
        assert abs(centroid["spine"][0]) < 5
        assert min(centroid["lung_left"][2], centroid["lung_right"][2]) > centroid["liver"][2] + 50
        # Body outline: AP thinner than lateral.
        extent = [np.ptp(c[body]) for c in (x, y)]
        assert extent[1] < 0.8 * extent[0]


def test_torso_mumap_values(torsos):
    for p in torsos:
        mu = attenuation_coefficients(p.energy_kev)
        assert p.mumap.dtype == np.float32 and p.mumap.shape == (128, 128, 80)
        lungs = p.masks["lung_left"] | p.masks["lung_right"]
        spine = p.masks["spine"]
        soft = p.masks["body"] & ~lungs & ~spine
        np.testing.assert_allclose(p.mumap[soft], np.float32(mu["soft_tissue"]), rtol=0)
        np.testing.assert_allclose(p.mumap[lungs], np.float32(mu["lung"]), rtol=0)
        np.testing.assert_allclose(p.mumap[spine], np.float32(mu["bone"]), rtol=0)
        assert (p.mumap[~p.masks["body"]] == 0).all()
    # Lu-177 208 keV default: soft tissue ~0.0142 /mm; the map follows the energy.
    assert torsos[0].mu["soft_tissue"] == pytest.approx(0.01418, abs=1e-4)
    p140 = torso_phantom(jax.random.key(0), energy_kev=PHOTON_ENERGIES_KEV["Tc-99m"])
    assert p140.mumap.max() == pytest.approx(linear_attenuation("bone", 140.5), rel=1e-6)
    assert (p140.mumap[torsos[0].masks["body"]] > torsos[0].mumap[torsos[0].masks["body"]]).all()


def _check_activity(p):
    lesion_names = [k for k in p.masks if k.startswith("lesion_")]
    background = p.masks["body"] & ~np.any([p.masks[k] for k in TORSO_ORGANS], axis=0)
    np.testing.assert_array_equal(p.activity[background], np.float32(p.concentrations["body"]))
    lesions = np.any([p.masks[k] for k in lesion_names], axis=0)
    for name in TORSO_ORGANS:
        region = p.masks[name] & ~lesions if name == "liver" else p.masks[name]
        np.testing.assert_array_equal(p.activity[region], np.float32(p.concentrations[name]))
    for name in lesion_names:
        np.testing.assert_array_equal(p.activity[p.masks[name]], np.float32(p.concentrations[name]))
    assert (p.activity[~p.masks["body"]] == 0).all()


def test_torso_activity_equals_requested_concentrations(torsos):
    request = {"liver": 4.0, "kidneys": 7.0, "kidney_left": 8.0, "lesions": 30.0, "lesion_2": 50.0}
    p = torso_phantom(None, randomize=False, activity=request)
    expected = {
        "body": 1.0, "lung_left": 0.3, "lung_right": 0.3, "liver": 4.0, "spleen": 12.0,
        "kidney_left": 8.0, "kidney_right": 7.0, "spine": 0.5,
        "lesion_1": 30.0, "lesion_2": 50.0, "lesion_3": 30.0, "lesion_4": 30.0,
    }  # fmt: skip
    assert p.concentrations == expected
    _check_activity(p)
    assert p.activity.dtype == np.float32 and p.activity.max() == 50.0
    # Randomised: the map still equals the reported concentrations, each within the jitter
    # (exp(+-2.5 * 0.1)) of the default.
    for q in torsos:
        _check_activity(q)
        assert q.concentrations["liver"] == pytest.approx(6.0, rel=0.29)
        assert q.concentrations["lesion_1"] == pytest.approx(25.0, rel=0.29)
    exact = torso_phantom(jax.random.key(0), activity=request, activity_jitter=0.0)
    assert exact.concentrations == expected
    with pytest.raises(ValueError, match="unknown activity region"):
        torso_phantom(None, randomize=False, activity={"heart": 2.0})


def test_torso_deterministic_per_key_and_differs_across_keys(torsos):
    again = torso_phantom(jax.random.key(0))
    np.testing.assert_array_equal(again.activity, torsos[0].activity)
    np.testing.assert_array_equal(again.mumap, torsos[0].mumap)
    assert again.lesion_centres_mm == torsos[0].lesion_centres_mm
    legacy = torso_phantom(jax.random.PRNGKey(0))  # raw uint32 key: same words, same phantom
    np.testing.assert_array_equal(legacy.activity, torsos[0].activity)
    for a, b in [(0, 1), (1, 2), (2, 3)]:
        assert not np.array_equal(torsos[a].masks["liver"], torsos[b].masks["liver"])
        assert not np.array_equal(torsos[a].masks["lesion_1"], torsos[b].masks["lesion_1"])
        assert torsos[a].concentrations != torsos[b].concentrations
    nominal = [torso_phantom(None, randomize=False) for _ in range(2)]
    np.testing.assert_array_equal(nominal[0].activity, nominal[1].activity)
    with pytest.raises(ValueError, match="needs a key"):
        torso_phantom(None)


def test_torso_is_fast():
    torso_phantom(jax.random.key(5))  # warm-up
    t0 = time.perf_counter()
    torso_phantom(jax.random.key(6))
    assert time.perf_counter() - t0 < 2.0  # ~0.1 s on one core; loose for loaded CI machines


# --- hot-rod phantom ----------------------------------------------------------------------------


def test_hot_rod_sectors_diameters_and_areas():
    px = 0.8
    diameters = (6.5, 5.5, 4.5, 3.5, 2.2, 1.6)
    h = hot_rod_phantom(128, px)
    assert h.image.shape == (128, 128) and h.image.dtype == np.float32
    assert tuple(h.rod_masks) == diameters and tuple(h.sector_masks) == diameters
    assert sum(m.astype(int) for m in h.sector_masks.values()).max() == 1  # sectors disjoint
    for k, d in enumerate(diameters):
        c = h.rod_centres_mm[d]
        assert len(c) >= 6
        # triangular packing with centre-to-centre spacing 2 d
        dist = np.hypot(*(c[:, None, :] - c[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(dist, np.inf)
        np.testing.assert_allclose(dist.min(axis=1), 2 * d, rtol=1e-9)
        # each rod fully inside its 60-degree wedge, outside the cold centre, inside the disc
        r = np.hypot(c[:, 0], c[:, 1])
        ang = np.mod(np.arctan2(c[:, 1], c[:, 0]), 2 * np.pi) - k * np.pi / 3
        assert (r * np.sin(ang) >= d / 2).all() and (r * np.sin(np.pi / 3 - ang) >= d / 2).all()
        assert (r - d / 2 >= 15.0).all() and (r + d / 2 <= 0.48 * 128 * px).all()
        # the (partial-volume) image holds exactly the rods' area; the pixel-centre masks roughly
        rod_px = len(c) * np.pi * d**2 / 4 / px**2
        assert h.image[h.sector_masks[d]].sum() == pytest.approx(rod_px, rel=0.02)
        assert h.rod_masks[d].sum() == pytest.approx(rod_px, rel=0.25)
        assert (h.image[h.rod_masks[d]] > 0.3).all()
        fraction = h.rod_masks[d].sum() / h.sector_masks[d].sum()
        assert 0.08 < fraction < np.pi / (8 * np.sqrt(3)) * 1.1  # below the infinite-lattice 0.227
    x, y = voxel_centres((128, 128, 1), (px, px, px))[:2]
    far = np.hypot(x[..., 0], y[..., 0]) > 0.48 * 128 * px + px  # beyond any partial-volume edge
    assert (h.image[h.cold_mask] == 0).all() and (h.image[far] == 0).all()
    warm = hot_rod_phantom(128, px, background=0.1, supersample=1)
    rods = np.any(list(warm.rod_masks.values()), axis=0)
    inner = warm.phantom_mask & ~warm.cold_mask & ~rods
    np.testing.assert_allclose(warm.image[inner], 0.1)
    np.testing.assert_allclose(warm.image[rods], 1.0)
    with pytest.raises(ValueError, match="rod_diameters_mm"):
        hot_rod_phantom(rod_diameters_mm=(3.0, 2.0))


# --- Shepp-Logan --------------------------------------------------------------------------------


def test_shepp_logan_2d_values_and_symmetry():
    n = 129
    img = shepp_logan_2d(n)
    assert img.shape == (n, n) and img.dtype == np.float32
    assert img.min() == 0.0 and img.max() == 1.0
    levels = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 1.0], np.float32)
    assert np.isin(np.unique(img), levels).all()
    u = np.linspace(-1, 1, n)
    at = lambda x, y: img[np.argmin(abs(u - x)), np.argmin(abs(u - y))]  # noqa: E731
    assert at(0, 0) == pytest.approx(0.2)  # brain
    assert at(0, 0.35) == pytest.approx(0.3)  # ellipse 5 on brain
    assert at(0.22, 0) == 0.0 and at(-0.22, 0) == 0.0  # ventricles
    assert at(0, 0.9) == 1.0 and at(0, -0.9) == 1.0  # skull
    assert at(0.9, 0) == 0.0  # outside the head
    skull = img > 0.5
    np.testing.assert_array_equal(skull, skull[::-1, :])  # skull mirror-symmetric in x
    assert not np.array_equal(img, img[::-1, :])  # ventricles differ left/right
    # the skull ring's area: pi * (0.69 * 0.92 - 0.6624 * 0.874) in [-1, 1]^2 units
    pixel_area = (2 / (n - 1)) ** 2
    assert skull.sum() * pixel_area == pytest.approx(np.pi * (0.69 * 0.92 - 0.6624 * 0.874), rel=0.1)


def test_shepp_logan_3d_values_and_central_slice():
    n = 65
    vol = shepp_logan_3d(n)
    assert vol.shape == (n, n, n) and vol.dtype == np.float32
    assert vol.min() == 0.0 and vol.max() == 1.0
    assert np.isin(np.unique(vol), np.array([0.0, 0.1, 0.2, 0.3, 0.4, 1.0], np.float32)).all()
    assert vol[n // 2, n // 2, n // 2] == pytest.approx(0.2)
    # z = 0 slice: same skull as the 2-D phantom; head volume ~ 4/3 pi abc of ellipsoid 1
    np.testing.assert_array_equal(vol[:, :, n // 2] > 0.5, shepp_logan_2d(n) > 0.5)
    head = vol > 0
    assert head.sum() * (2 / (n - 1)) ** 3 == pytest.approx(4 / 3 * np.pi * 0.69 * 0.92 * 0.81, rel=0.08)
    # the two small ellipsoids at y = +-0.1 sit at z = 0.25, not below the centre plane
    u = np.linspace(-1, 1, n)
    at = lambda x, y, z: vol[tuple(int(np.argmin(abs(u - v))) for v in (x, y, z))]  # noqa: E731
    assert at(0, -0.1, 0.25) == pytest.approx(0.3) and at(0, -0.1, -0.25) == pytest.approx(0.2)
    assert at(0, 0, 0.75) == pytest.approx(0.2) and at(0, 0, 0.9) == 0.0  # brain top, outside
    assert vol[n // 2, n // 2, :].max() == 1.0  # the skull is crossed along z
    aniso = shepp_logan_3d((32, 40, 24))
    assert aniso.shape == (32, 40, 24) and aniso.max() == 1.0
