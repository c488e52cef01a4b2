"""SIMIND's own output: a header per energy window with window limits, radius, collimator and
photon energy in comment lines (key spellings from a header SIMIND V7.0.3 wrote)."""

import numpy as np
import pytest

import jax.numpy as jnp

import jaxspect as js
import jaxspect.io as jio
from jaxspect._cli import main
from jaxspect.io._projections import views_to_frames

N, NZ, NVIEW, PIXEL = 16, 6, 16, 6.0
RADIUS_CM = 15.0
WINDOWS = {1: (147.07, 170.93), 2: (123.22, 147.07), 3: (170.93, 194.78)}  # SIMIND's scattwin order: peak first


def simind_header(name, window, *, radius_line=True, extra=(), start=0.0, direction="CCW"):
    lo, hi = WINDOWS[window]
    lines = [
        "!INTERFILE :=", "!imaging modality := nucmed", ";# imaging modality 2 := EMS", "!originating system := simind",
        "!version of keys := 3.3", "program author := M Ljungberg, Lund University", "program version := V7.0.3", "  ",
        "!GENERAL DATA :=", "original institution := Medical Radiation Physics", "contact person := M Ljungberg",
        "!data offset in bytes := 0",
        f"!name of data file := C:\\Users\\someone\\simind\\{name}_tot_w{window}.a00",
        f"patient name := SMC_{name}_tot_w{window}.a00", f"!study ID := {name}", "data description := EMISSION VMAN",
        ";# Radionuclide := i123", "exam type := EMISSION VMAN", "!patient ID := SIMIND", "  ",
        "!GENERAL IMAGE DATA :=", "patient orientation := head_in", "patient rotation := supine",
        "!type of data := tomographic", "study date := 2024:10:15", "study time := 14:39:04",
        "imagedata byte order := LITTLEENDIAN", f";energy window lower level := {lo:.2f}",
        f";energy window upper level := {hi:.2f}", f"!total number of images := {NVIEW}",
        "!number of energy windows := 1", ";# Units of data (ECT) := counts", "  ",
        "!SPECT STUDY (General) :=", "number of detector heads := 1", f"!matrix size [1] := {N}",
        f"!matrix size [2] := {NZ}", "!number format := short float", "!number of bytes per pixel := 4",
        f"scaling factor (mm/pixel) [1] := {PIXEL:.3f}", f"scaling factor (mm/pixel) [2] := {PIXEL:.3f}",
        "!extent of rotation := 360", "!process status := acquired", f"!number of projections := {NVIEW}",
        f"!number of images/energy window := {NVIEW}", "!time per projection (sec) := 12.000",
        f"image duration (sec) := {12.0 * NVIEW:.3f}", "  ", "!SPECT STUDY (acquired data) :=", "orbit := circular",
    ]
    if radius_line:
        lines.append(f";#Radius := {RADIUS_CM:.3f}")
    lines += ["acquisition mode := stepped", f"!direction of rotation := {direction}", f"start angle := {start:.3f}",
              ";#X_offset := 0.000", "  ", *extra, ";# SIMIND-SPECIFIC PARAMETERS :=",
              ";# Intrinsic FWHM for the camera := 0.380", ";# Collimator := sy-lehr",
              ";# Collimator hole diameter := 0.111", ";# Collimator hole septa := 0.016",
              ";# Collimator thickness := 2.405", ";# SIMIND: Photon Energy := 159.000",
              ";# SIMIND: Time shift := -9999.000", "  ", "!END OF INTERFILE :="]
    return "\n".join(lines) + "\n"


HOT = (11, 4, 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("simind")
    angles = np.deg2rad(np.arange(NVIEW) * 360.0 / NVIEW)  # CCW from 0
    psf = js.get_collimator("sy-lehr").psf(159.0)
    geometry = js.SPECTGeometry((N, N, NZ), (PIXEL,) * 3, psf, angles=angles, radii=10 * RADIUS_CM)
    source = np.zeros((N, N, NZ), np.float32)
    source[HOT] = 500.0
    peak = np.asarray(js.forward_project(jnp.asarray(source), None, geometry))
    scatter = {2: 0.1 * peak.mean() + 0.02 * peak, 3: 0.05 * peak.mean() + 0.01 * peak}
    for w, views in ((1, peak), (2, scatter[2]), (3, scatter[3])):
        (folder / f"pt_tot_w{w}.h00").write_text(simind_header("pt", w), encoding="latin-1")
        views_to_frames(views).astype("<f4").tofile(folder / f"pt_tot_w{w}.a00")
    return folder, peak, scatter


def test_read_simind_windows_comments_and_tew(run):
    folder, peak, scatter = run
    assert jio.is_simind_header(folder / "pt_tot_w2.h00")
    data = jio.read_projections(folder / "pt_tot_w2.h00", scatter="tew")  # any window's header finds the run
    assert data.photopeak == "w1" and set(data.windows) == {"w1", "w2", "w3"}  # the window holding 159 keV
    np.testing.assert_allclose(data.counts, peak, rtol=1e-6)
    np.testing.assert_allclose(data.radii, 150.0)  # ;#Radius is cm
    assert data.window_ranges_kev["w2"] == (123.22, 147.07)
    w = {n: hi - lo for n, (lo, hi) in data.window_ranges_kev.items()}
    np.testing.assert_allclose(data.background, (scatter[2] / w["w2"] + scatter[3] / w["w3"]) * w["w1"] / 2, rtol=1e-5)
    assert data.metadata["collimator"] == "sy-lehr" and data.metadata["photon_energy_kev"] == 159.0
    assert data.metadata["intrinsic_fwhm_mm"] == pytest.approx(3.8) and data.metadata["frame_duration_s"] == 12.0
    assert jio.read_simind(folder / "pt_tot_w1.h00", window=2).photopeak == "w2"


def test_cor_named_in_a_comment(tmp_path):
    radii_cm = 14.0 + 0.1 * np.arange(NVIEW)
    (tmp_path / "orbit.cor").write_text("".join(f"{r:.3f}\n" for r in radii_cm))
    header = simind_header("nc", 1, radius_line=False, extra=(";# Non-circular orbit file := C:\\sim\\orbit.cor",))
    (tmp_path / "nc_tot_w1.h00").write_text(header.replace("orbit := circular", "orbit := non-circular"))
    np.zeros((NVIEW, NZ, N), "<f4").tofile(tmp_path / "nc_tot_w1.a00")
    data = jio.read_projections(tmp_path / "nc_tot_w1.h00")
    np.testing.assert_allclose(data.radii, 10 * radii_cm)
    (tmp_path / "orbit.cor").unlink()
    with pytest.raises(FileNotFoundError, match="orbit.cor named in SIMIND header"):
        jio.read_projections(tmp_path / "nc_tot_w1.h00")


def test_cli_simind_tew_and_collimator_from_header(run, tmp_path, capsys):
    folder, _, _ = run
    out = tmp_path / "r.nii"
    assert main(["reconstruct", str(folder / "pt_tot_w1.h00"), "--scatter", "tew", "--iterations", "6",
                 "--subsets", "4", "--no-progress", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "collimator sy-lehr at 159 keV" in printed and "as named in" in printed and "scatter background" in printed
    image, _ = jio.read_nifti(out)
    assert np.unravel_index(np.argmax(image), image.shape) == HOT


def simind_hct(stem, shape, voxel_mm, *, units="mu"):
    """An aligned map header as SIMIND V8.0 writes it (flag 15), for float mu maps in 1/cm."""
    nx, ny, nz = shape
    corner = (-nx / 2 * voxel_mm, -ny / 2 * voxel_mm, nz / 2 * voxel_mm)
    lines = [
        "!INTERFILE :=", "!imaging modality := nucmed", ";# imaging modality 2 := EMS", "!originating system := simind",
        "!version of keys := 3.3", "program author := M Ljungberg, Lund University", "program version := V8.0", "  ",
        "!GENERAL DATA :=", "original institution := Medical Radiation Physics", "contact person := M Ljungberg",
        "!data offset in bytes := 0", f"!name of data file := {stem}.ict", f"patient name := SMC_{stem}.a00",
        "!study ID := Aligned CT Map", "exam type := CT DATA", "!patient ID := SIMIND", "  ",
        "!GENERAL IMAGE DATA :=", "!type of data := tomographic", "study date := 2025:12:19", "study time := 15:25:06",
        "imagedata byte order := LITTLEENDIAN", f"!total number of images := {nz}", "  ",
        "!SPECT STUDY (General) :=", f"!matrix size [1] := {nx}", f"!matrix size [2] := {ny}",
        f"!matrix size [3] := {nz}", *(f"scaling factor (mm/pixel) [{n}] := {voxel_mm:.6f}" for n in (1, 2, 3)),
        ";# Image Position First image := {:.4f} {:.4f} {:.6f}".format(*corner),
        ";# Image Orientation := 1.0 0.0 0.0 0.0 1.0 0.0", f"!number of images/energy window := {nz}",
        ";# CT Images interpolated to ECT Images := 1", f";# CT Spacing between slices := {voxel_mm:.6f}",
        "!process status := reconstructed", "!number of bytes per pixel := 4", "!number format := short float",
        f";# Units of data (ECT) := {units}", "  ", "!END OF INTERFILE :=",
    ]
    return "\n".join(lines) + "\n"


def write_ict(path, mu_per_cm_lps):
    """(nx, ny, nz) LPS -> SIMIND's images: first image at the head end, rows along y, columns along x."""
    np.ascontiguousarray(mu_per_cm_lps[:, :, ::-1].transpose(2, 1, 0)).astype("<f4").tofile(path)


def test_simind_off_centre_point_with_cor_orbit_and_density_map(tmp_path, capsys):
    """SIMIND's start angle, rotation direction, .cor orbit and .hct map: a point reconstructs
    where the header's geometry put it, and flipping the direction key moves it."""
    start, direction = 90.0, "CW"
    angles = np.deg2rad(start - np.arange(NVIEW) * 360.0 / NVIEW)  # CW: decreasing gantry angle
    radii_cm = np.round(13.0 + 2.0 * np.abs(np.cos(angles)), 3)  # as the .cor holds them
    (tmp_path / "orbit.cor").write_text("".join(f"{r:.3f}\n" for r in radii_cm))
    # water cylinder (mu 0.150/cm) off the axis, a bone-like rod marking one side: asymmetric in every axis
    i, j = np.meshgrid(np.arange(2 * N), np.arange(2 * N), indexing="ij")
    fine = np.zeros((2 * N, 2 * N, 2 * NZ), np.float32)
    fine[(i - 2 * N / 2 - 2) ** 2 + (j - 2 * N / 2) ** 2 < (0.4 * 2 * N) ** 2] = 0.150
    fine[20:24, 10:14, 2:] = 0.25
    (tmp_path / "map.hct").write_text(simind_hct("map", fine.shape, PIXEL / 2))
    write_ict(tmp_path / "map.ict", fine)
    mumap = jio.read_simind_density_map(tmp_path / "map.hct", 159.0, shape=(N, N, NZ),
                                        grid_affine_mm=jio.grid_affine((N, N, NZ), (PIXEL,) * 3))
    coarse = fine.reshape(N, 2, N, 2, NZ, 2).mean(axis=(1, 3, 5)) / 10  # the 2x2x2 average, in 1/mm
    np.testing.assert_allclose(mumap, coarse, atol=1e-6)

    psf = js.get_collimator("sy-lehr").psf(159.0)
    geometry = js.SPECTGeometry((N, N, NZ), (PIXEL,) * 3, psf, angles=angles, radii=10 * radii_cm)
    source = np.zeros((N, N, NZ), np.float32)
    source[HOT] = 500.0
    views = np.asarray(js.forward_project(jnp.asarray(source), jnp.asarray(coarse), geometry))
    extra = (";# Non-circular orbit file := orbit.cor",)
    for stem, d in (("nc", direction), ("flip", "CCW")):
        header = simind_header(stem, 1, radius_line=False, extra=extra, start=start, direction=d)
        (tmp_path / f"{stem}_tot_w1.h00").write_text(header.replace("orbit := circular", "orbit := non-circular"))
        views_to_frames(views).astype("<f4").tofile(tmp_path / f"{stem}_tot_w1.a00")
    data = jio.read_projections(tmp_path / "nc_tot_w1.h00")
    np.testing.assert_allclose(data.angles, angles)
    np.testing.assert_allclose(data.radii, 10 * radii_cm)
    out = tmp_path / "r.nii"
    assert main(["reconstruct", str(tmp_path / "nc_tot_w1.h00"), "--mumap", str(tmp_path / "map.hct"),
                 "--algorithm", "mlem", "--iterations", "10", "--no-progress", "--output", str(out)]) == 0
    assert "attenuation map from SIMIND" in capsys.readouterr().out
    image, _ = jio.read_nifti(out)
    assert np.unravel_index(np.argmax(image), image.shape) == HOT
    flipped = jio.read_projections(tmp_path / "flip_tot_w1.h00")
    projector = js.SPECTProjector(flipped.spect_geometry(psf), jnp.asarray(mumap))
    moved = js.mlem(projector, jnp.asarray(flipped.counts), jnp.ones((N, N, NZ)), n_iter=10).image
    where = np.unravel_index(int(jnp.argmax(moved)), moved.shape)
    assert max(abs(a - b) for a, b in zip(where, HOT)) >= 3


def test_simind_density_map_units_and_refusals(tmp_path):
    shape = (4, 5, 3)
    values = np.zeros(shape, np.float32)
    values[1, 2, 0] = 1.0  # g/cm^3 at (i, j, k) = (1, 2, 0): the last image SIMIND writes
    (tmp_path / "d.hct").write_text(simind_hct("d", shape, 4.0, units="density"))
    write_ict(tmp_path / "d.ict", values)
    raw = np.fromfile(tmp_path / "d.ict", "<f4").reshape(3, 5, 4)
    assert raw[2, 2, 1] == 1.0  # image 2 (the feet end), row 2, column 1
    mu = jio.read_simind_density_map(tmp_path / "d.hct", 140.5)
    assert mu[1, 2, 0] == pytest.approx(0.01536, rel=2e-3) and np.count_nonzero(mu) == 1  # water at 140.5 keV
    mu208 = jio.read_simind_density_map(tmp_path / "d.hct", 208.4, units="mu")  # as mu 1.0/cm: scaled to 1/mm
    assert mu208[1, 2, 0] == pytest.approx(0.1)
    text = (tmp_path / "d.hct").read_text()
    (tmp_path / "d.hct").write_text(text.replace(";# Units of data (ECT) := density\n", ""))
    with pytest.raises(ValueError, match=r"no ';# Units of data \(ECT\)' line.*units="):
        jio.read_simind_density_map(tmp_path / "d.hct", 140.5)
    (tmp_path / "d.hct").write_text(text.replace("density", "HU"))
    with pytest.raises(ValueError, match=r"CT Voltage"):
        jio.read_simind_density_map(tmp_path / "d.hct", 140.5)
    hu = jio.read_simind_density_map(tmp_path / "d.hct", 140.5, kvp=120)  # HU 0 (water) and 1 HU: water's mu
    assert hu[1, 2, 0] == pytest.approx(0.01536, rel=5e-3)
    (tmp_path / "d.hct").write_text(text.replace("1.0 0.0 0.0 0.0 1.0 0.0", "1.0 0.0 0.0 0.0 0.0 -1.0"))
    with pytest.raises(ValueError, match="Image Orientation"):
        jio.read_simind_density_map(tmp_path / "d.hct", 140.5)
    (tmp_path / "d.hct").write_text(text.replace("total number of images := 3", "total number of images := 4"))
    with pytest.raises(ValueError, match="differs from '!matrix size"):
        jio.read_simind_density_map(tmp_path / "d.hct", 140.5)
    (tmp_path / "d.hct").write_text(text)
    write_ict(tmp_path / "d.ict", -values)
    with pytest.raises(ValueError, match="must be >= 0"):
        jio.read_simind_density_map(tmp_path / "d.hct", 140.5)
