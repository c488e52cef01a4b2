"""A randomisable 3-D torso phantom in the spirit of XCAT, for Lu-177 DOTATATE-like SPECT studies.

XCAT cannot be shipped, so this is a geometric stand-in: an elliptic-cylinder body with
ellipsoidal organs at anatomically plausible places, an elliptic-cylinder spine, and spherical
lesions of prescribed volumes inside the liver (the paper's set-up: 128 x 128 x 80 voxels of
4.8 mm, lesions of 5-100 mL in the liver).

Patient coordinates (mm, relative to the grid centre, as in :func:`voxel_centres`) follow the
DICOM LPS convention: ``+x`` (image axis 0) points to the patient's **left**, ``+y`` (axis 1) to
the **posterior** (back), ``+z`` (axis 2, the rotation axis) to the **superior** (head). So the
liver lies at ``x < 0``, the spleen at ``x > 0``, kidneys and spine at ``y > 0`` and the lungs in
the upper (``z > 0``) part of the field of view.

Everything is computed with numpy on the host (no Python loop over voxels); the result holds
numpy arrays (``jnp.asarray`` them as needed). It is not traceable under ``jit``.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from .._attenuation_coefficients import LU177_KEV, linear_attenuation

__all__ = ["TorsoPhantom", "torso_phantom", "TORSO_ACTIVITY_DEFAULTS", "TORSO_ORGANS"]

#: Organ masks the torso phantom returns (besides ``"body"`` and ``"lesion_<i>"``), in the
#: order of precedence used to make them disjoint (an earlier organ wins an overlap).
TORSO_ORGANS: tuple[str, ...] = (
    "spine",
    "kidney_left",
    "kidney_right",
    "spleen",
    "liver",
    "lung_left",
    "lung_right",
)

#: Default relative activity concentrations (per unit volume; body background = 1), roughly
#: those seen a day after Lu-177 DOTATATE: high in spleen and kidneys, moderate in the liver,
#: low in lungs and bone, lesions (neuro-endocrine liver metastases) highest.
TORSO_ACTIVITY_DEFAULTS: dict[str, float] = {
    "body": 1.0,
    "lungs": 0.3,
    "liver": 6.0,
    "spleen": 12.0,
    "kidneys": 10.0,
    "spine": 0.5,
    "lesions": 25.0,
}

# Nominal anatomy (mm). Ellipsoids: centre (x, y, z), semi-axes (x, y, z).
_BODY_SEMI_AXES = (165.0, 110.0)  # lateral (x), antero-posterior (y): AP thinner than lateral
_SPINE = ((0.0, 72.0), (17.0, 15.0))  # centre (x, y), semi-axes (x, y); the full z extent
_ELLIPSOIDS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "lung_left": ((80.0, 0.0, 125.0), (55.0, 75.0, 110.0)),
    "lung_right": ((-80.0, 0.0, 130.0), (55.0, 75.0, 110.0)),
    "liver": ((-55.0, -10.0, -15.0), (85.0, 72.0, 75.0)),
    "spleen": ((80.0, 35.0, 20.0), (25.0, 42.0, 52.0)),
    "kidney_left": ((60.0, 60.0, -55.0), (28.0, 25.0, 55.0)),
    "kidney_right": ((-60.0, 60.0, -70.0), (28.0, 25.0, 55.0)),
}
_GROUPS = {"lungs": ("lung_left", "lung_right"), "kidneys": ("kidney_left", "kidney_right")}


class TorsoPhantom(NamedTuple):
    """Result of :func:`torso_phantom` (numpy arrays of shape ``(nx, ny, nz)``).

    Attributes
    ----------
    activity : np.ndarray
        float32 ``(nx, ny, nz)``, relative activity concentration per voxel (uniform within each
        region; ``concentrations`` gives the values).
    mumap : np.ndarray
        float32 ``(nx, ny, nz)``, linear attenuation coefficient in 1/mm at ``energy_kev``: ICRU-44
        soft tissue (1.06 g/cm^3) in the body, inflated lung (0.26 g/cm^3) in the lungs, cortical
        bone (1.92 g/cm^3) in the spine, 0 (air) outside the body.
    masks : dict[str, np.ndarray]
        bool ``(nx, ny, nz)`` voxel-centre masks: ``"body"``, the organs of :data:`TORSO_ORGANS`
        (pairwise disjoint, all inside the body) and ``"lesion_1"`` .. ``"lesion_n"`` (spheres,
        pairwise disjoint, each a subset of ``"liver"``, in the order of ``lesion_volumes_ml``).
        ``"liver"`` includes its lesions; ``"body"`` includes every organ.
    concentrations : dict[str, float]
        The concentration used per region: ``"body"`` (background: body outside every organ),
        each organ (the liver's value holds outside its lesions) and each lesion.
    mu : dict[str, float]
        Attenuation coefficients used (1/mm): ``"soft_tissue"``, ``"lung"``, ``"bone"``.
    lesion_volumes_ml : tuple[float, ...]
        Voxelised lesion volumes (voxel count times voxel volume), mL.
    lesion_centres_mm : tuple[tuple[float, float, float], ...]
        Lesion centres ``(x, y, z)`` in mm.
    energy_kev : float
        Photon energy of ``mumap``, keV.
    """

    activity: np.ndarray
    mumap: np.ndarray
    masks: dict
    concentrations: dict
    mu: dict
    lesion_volumes_ml: tuple
    lesion_centres_mm: tuple
    energy_kev: float


def _rng_from_key(key) -> np.random.Generator:
    """A numpy Generator seeded by all the words of a ``jax.random`` key (typed or raw uint32),
    or by a non-negative Python int."""
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"an integer key must be non-negative, got {key!r}")
        words = [int(key)]
    else:
        import jax

        arr = key
        if hasattr(arr, "dtype") and jax.dtypes.issubdtype(arr.dtype, jax.dtypes.prng_key):
            arr = jax.random.key_data(arr)
        words = np.asarray(arr).astype(np.uint64).ravel().tolist()
        if not words:
            raise ValueError("key must be a jax.random key (or a non-negative int)")
    return np.random.default_rng(np.random.SeedSequence([0x70686E74, *words]))


def _axes(shape, voxel_size):
    return [(np.arange(n) - (n - 1) / 2) * d for n, d in zip(shape, voxel_size)]


def _ellipsoid_mask(axes, centre, semi):
    """Voxel-centre mask of an axis-aligned ellipsoid, evaluated only in its bounding box."""
    shape = tuple(len(a) for a in axes)
    out = np.zeros(shape, bool)
    sl, terms = [], []
    for k, (a, c, s) in enumerate(zip(axes, centre, semi)):
        idx = np.nonzero(np.abs(a - c) <= s)[0]
        if idx.size == 0:
            return out
        sl.append(slice(idx[0], idx[-1] + 1))
        terms.append(((a[idx[0] : idx[-1] + 1] - c) / s) ** 2)
    r = terms[0][:, None, None] + terms[1][None, :, None] + terms[2][None, None, :]
    out[tuple(sl)] = r <= 1.0
    return out


def _resolve_activity(activity: Mapping[str, float] | None, n_lesions: int) -> dict[str, float]:
    """Per-region concentrations from defaults overridden by ``activity`` (group keys
    ``lungs``/``kidneys``/``lesions`` apply to members not named individually)."""
    lesion_names = [f"lesion_{i + 1}" for i in range(n_lesions)]
    groups = dict(_GROUPS, lesions=tuple(lesion_names))
    regions = ["body", *TORSO_ORGANS, *lesion_names]
    given = dict(activity or {})
    unknown = sorted(set(given) - set(regions) - set(groups))
    if unknown:
        raise ValueError(
            f"unknown activity region(s) {unknown}; use {regions} or the groups {sorted(groups)}"
        )
    out = {}
    for name in regions:
        group = next((g for g, members in groups.items() if name in members), None)
        if name in given:
            value = given[name]
        elif group is not None and group in given:
            value = given[group]
        elif name in TORSO_ACTIVITY_DEFAULTS:
            value = TORSO_ACTIVITY_DEFAULTS[name]
        else:
            value = TORSO_ACTIVITY_DEFAULTS[group]
        value = float(value)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"activity of {name!r} must be finite and >= 0, got {value!r}")
        out[name] = value
    return out


def _place_lesion(rng, axes, voxel_size, allowed, occupied, volume_mm3, margin_mm, tries):
    """Centre and mask of a voxelised sphere of ``volume_mm3`` whose voxels, and all voxels within
    ``margin_mm`` of its surface, lie in ``allowed`` and avoid ``occupied``.

    The radius is chosen after voxelising: with the (sub-voxel, random) centre fixed, voxel
    centres are sorted by distance and the radius is put midway between the distance of the
    ``n``-th and ``n+1``-th, ``n`` the voxel count closest to ``volume / voxel volume``.
    """
    shape = allowed.shape
    vs = np.asarray(voxel_size, float)
    vvox = float(np.prod(vs))
    n_target = volume_mm3 / vvox
    r0 = (3.0 * volume_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
    reach = r0 + margin_mm + float(vs.max())  # radius of the neighbourhood to check, mm
    half = np.ceil(reach / vs).astype(int) + 1  # box half-size, voxels

    # Cheap pre-filter: voxels whose axis and diagonal probes at distance r0 + margin are allowed.
    free = allowed & ~occupied
    cand = np.argwhere(free)
    inside = np.all((cand >= half) & (cand < np.asarray(shape) - half), axis=1)
    cand = cand[inside]
    probe = r0 + margin_mm
    dirs = [np.eye(3)[k] * sgn for k in range(3) for sgn in (1.0, -1.0)]
    dirs += [np.array((a, b, c)) / math.sqrt(3.0) for a in (1, -1) for b in (1, -1) for c in (1, -1)]
    keep = np.ones(len(cand), bool)
    for u in dirs:
        q = np.clip(cand + np.rint(probe * u / vs).astype(int), 0, np.asarray(shape) - 1)
        keep &= free[q[:, 0], q[:, 1], q[:, 2]]
    cand = cand[keep]
    if len(cand) == 0:
        return None
    order = rng.permutation(len(cand))[:tries]
    for idx in cand[order]:
        centre = np.array([axes[k][idx[k]] for k in range(3)]) + rng.uniform(-0.5, 0.5, 3) * vs
        lo, hi = idx - half, idx + half + 1
        box = tuple(slice(lo[k], hi[k]) for k in range(3))
        d2 = (
            ((axes[0][box[0]] - centre[0]) ** 2)[:, None, None]
            + ((axes[1][box[1]] - centre[1]) ** 2)[None, :, None]
            + ((axes[2][box[2]] - centre[2]) ** 2)[None, None, :]
        )
        dist = np.sqrt(d2)
        ds = np.sort(dist, axis=None)
        n = int(np.clip(np.rint(n_target), 1, ds.size - 1))
        radius = 0.5 * (ds[n - 1] + ds[n])
        near = dist <= radius + margin_mm
        if np.all(free[box][near]):
            mask = np.zeros(shape, bool)
            mask[box] = dist <= radius
            return centre, mask
    return None


def torso_phantom(
    key=None,
    shape: Sequence[int] = (128, 128, 80),
    voxel_size: Sequence[float] = (4.8, 4.8, 4.8),
    *,
    energy_kev: float = LU177_KEV,
    lesion_volumes_ml: Sequence[float] = (67.0, 10.0, 9.0, 5.0),
    activity: Mapping[str, float] | None = None,
    randomize: bool = True,
    activity_jitter: float = 0.1,
) -> TorsoPhantom:
    """Torso phantom with liver lesions: activity image, attenuation map and region masks.

    Parameters
    ----------
    key : jax.random key or int, optional
        Randomness (typed ``jax.random.key`` or raw ``PRNGKey``, or a non-negative int); the
        same key gives the same phantom, different keys different ones. Required when
        ``randomize``; with ``randomize=False`` the anatomy is the nominal one and lesion
        positions come from ``key`` if given, else from a fixed seed.
    shape : (nx, ny, nz)
        Grid shape; default the paper's 128 x 128 x 80.
    voxel_size : (dx, dy, dz)
        Voxel size in mm; default 4.8 mm. The anatomy is in mm (body 330 x 220 mm, organs over
        about 380 mm of z), so grids with a smaller field of view crop it.
    energy_kev : float
        Photon energy (keV, 50-500) of ``mumap``; default Lu-177's 208.4 keV.
    lesion_volumes_ml : sequence of float
        Volumes (mL) of the spherical liver lesions ``lesion_1`` ...; default four lesions of
        67, 10, 9 and 5 mL. Each is placed entirely inside the liver, at least one voxel from its
        boundary and from the other lesions, with a radius chosen so that the voxelised volume is
        the achievable one closest to the request (within half a voxel: within 1.2 % for 5 mL
        at 4.8 mm voxels). May be empty.
    activity : mapping str -> float, optional
        Relative concentrations overriding :data:`TORSO_ACTIVITY_DEFAULTS`, by region
        (``"body"``, ``"liver"``, ``"spleen"``, ``"spine"``, ``"lung_left"``, ``"lung_right"``,
        ``"kidney_left"``, ``"kidney_right"``, ``"lesion_<i>"``) or group (``"lungs"``,
        ``"kidneys"``, ``"lesions"``); the individual name wins over its group.
    randomize : bool
        Jitter organ semi-axes (about 5 %), organ positions (about 4 mm), body size (about 4 %) and
        the concentrations (see ``activity_jitter``); lesion positions are random in any case.
    activity_jitter : float
        Relative (log-normal) spread of each region's concentration when ``randomize``; 0 keeps
        the requested values exactly.

    Returns
    -------
    TorsoPhantom
        ``activity`` and ``mumap`` (float32, ``(nx, ny, nz)``; ``mumap`` in 1/mm), ``masks``
        (bool, ``(nx, ny, nz)``), the ``concentrations`` and ``mu`` used, the voxelised
        ``lesion_volumes_ml`` and ``lesion_centres_mm``.

    Raises
    ------
    ValueError
        For a bad shape/voxel size/energy/activity, a missing key with ``randomize``, or lesions
        that cannot be fitted into the liver.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}")
    voxel_size = tuple(float(d) for d in voxel_size)
    if len(voxel_size) != 3 or not all(math.isfinite(d) and d > 0 for d in voxel_size):
        raise ValueError(f"voxel_size must be 3 positive lengths (mm), got {voxel_size!r}")
    volumes = tuple(float(v) for v in lesion_volumes_ml)
    if not all(math.isfinite(v) and v > 0 for v in volumes):
        raise ValueError(f"lesion_volumes_ml must be positive volumes (mL), got {lesion_volumes_ml!r}")
    if not (math.isfinite(activity_jitter) and activity_jitter >= 0):
        raise ValueError(f"activity_jitter must be >= 0, got {activity_jitter!r}")
    if randomize and key is None:
        raise ValueError("randomize=True needs a key (jax.random.key(...) or an int)")
    mu = {m: linear_attenuation(m, energy_kev) for m in ("soft_tissue", "lung", "bone")}
    conc = _resolve_activity(activity, len(volumes))

    rng = _rng_from_key(key if key is not None else 0)
    axes = _axes(shape, voxel_size)

    def jitter(size, scale):
        return np.clip(rng.standard_normal(size), -2.0, 2.0) * scale if randomize else np.zeros(size)

    # Body: elliptic cylinder along z.
    ba, bb = np.asarray(_BODY_SEMI_AXES) * (1.0 + jitter(2, 0.04))
    body = (((axes[0] / ba) ** 2)[:, None] + ((axes[1] / bb) ** 2)[None, :] <= 1.0)[:, :, None]
    body = np.broadcast_to(body, shape).copy()

    raw = {}
    (sx, sy), (sa, sb) = _SPINE
    sx, sy = np.asarray((sx, sy)) + jitter(2, 2.0)
    spine2d = (((axes[0] - sx) / sa) ** 2)[:, None] + (((axes[1] - sy) / sb) ** 2)[None, :]
    raw["spine"] = np.broadcast_to((spine2d <= 1.0)[:, :, None], shape)
    for name, (centre, semi) in _ELLIPSOIDS.items():
        c = np.asarray(centre) + jitter(3, 4.0)
        s = np.asarray(semi) * (1.0 + jitter(3, 0.05))
        raw[name] = _ellipsoid_mask(axes, c, s)

    masks = {"body": body}
    occupied = np.zeros(shape, bool)
    for name in TORSO_ORGANS:  # precedence order: earlier organs win overlaps
        m = raw[name] & body & ~occupied
        occupied |= m
        masks[name] = m

    # Lesions, largest first (easier packing), named in the caller's order.
    margin = max(voxel_size)
    taken = np.zeros(shape, bool)
    centres: list = [None] * len(volumes)
    lesion_masks: list = [None] * len(volumes)
    for i in sorted(range(len(volumes)), key=lambda i: -volumes[i]):
        placed = None
        for m_mm in (margin, 0.0):  # relax the clearance only if nothing fits with it
            placed = _place_lesion(rng, axes, voxel_size, masks["liver"], taken, volumes[i] * 1e3, m_mm, 400)
            if placed is not None:
                break
        if placed is None:
            raise ValueError(
                f"could not fit a {volumes[i]:g} mL lesion into the liver (free volume "
                f"{(masks['liver'] & ~taken).sum() * np.prod(voxel_size) / 1e3:.0f} mL)"
            )
        centres[i], lesion_masks[i] = placed
        taken |= lesion_masks[i]
    for i, m in enumerate(lesion_masks):
        masks[f"lesion_{i + 1}"] = m

    if randomize and activity_jitter > 0:
        conc = {k: v * float(np.exp(activity_jitter * np.clip(rng.standard_normal(), -2.5, 2.5))) for k, v in conc.items()}

    act = np.zeros(shape, np.float32)
    act[body] = conc["body"]
    for name in (*TORSO_ORGANS, *(f"lesion_{i + 1}" for i in range(len(volumes)))):
        act[masks[name]] = conc[name]

    mumap = np.zeros(shape, np.float32)
    mumap[body] = mu["soft_tissue"]
    mumap[masks["lung_left"] | masks["lung_right"]] = mu["lung"]
    mumap[masks["spine"]] = mu["bone"]

    vvox_ml = float(np.prod(voxel_size)) / 1e3
    return TorsoPhantom(
        activity=act,
        mumap=mumap,
        masks=masks,
        concentrations=conc,
        mu=mu,
        lesion_volumes_ml=tuple(float(m.sum()) * vvox_ml for m in lesion_masks),
        lesion_centres_mm=tuple(tuple(float(v) for v in c) for c in centres),
        energy_kev=float(energy_kev),
    )
