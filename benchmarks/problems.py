"""The benchmarks' problems, built once here from the public API (imported by every script).

1. **The projector benchmark's torso** (:class:`ProjectorCase`, :data:`PROJECTOR_CASES`,
   :func:`projector_phantom`, :func:`projector_geometry`; used by ``projector.py`` and
   ``gpu.py``): an elliptical water cylinder (semi-axes 140 x 100 mm, full axial length) with
   two lungs (30% density, low activity), a liver and two hot spheres, attenuation of water at
   140 keV (0.0153 /mm), 4.8 mm voxels, a circular orbit and a depth-dependent Gaussian PSF for
   a low-energy high-resolution collimator, FWHM(d) = sqrt(3.5^2 + (0.06 d)^2) mm.
2. **The paper's OSEM problem** (:func:`osem_problem`; ``osem.py``, ``gpu.py`` and the
   PyTomography peer's checks): ``jaxspect.phantoms.torso_phantom`` (Lu-177 at 208 keV, four
   liver lesions of 67/10/9/5 mL) on a body-contouring orbit (10 mm clearance, as in the paper)
   with a medium-energy collimator, FWHM(d) = sqrt(2.5^2 + (0.1 d)^2) mm (~10 mm at 100 mm).
3. **Simulated torso patients for the learned experiments** (:func:`make_patient`,
   :data:`SIZES`, :func:`training_data`, ...; ``training_methods.py``, ``beta_sweep.py``,
   ``map.py``, ``gpu.py``), described below.

Simulated torso patients:

- torso phantoms (``jaxspect.phantoms.torso_phantom``: Lu-177 at 208 keV, liver lesions of
  67/10/9/5 mL), each patient a different PRNG key (anatomy, concentrations, lesion positions);
  the field of view is cropped axially around the liver (the phantom's anatomy is in mm, the
  grid is centred on it), so the whole body still fits transaxially;
- a body-contouring orbit (10 mm clearance), a medium-energy collimator response
  FWHM(d) = sqrt(2.5^2 + (0.1 d)^2) mm, Poisson counts plus 10 % uniform scatter;
- **no inverse crime** (``fine=True``, the default): the phantom is built on a grid twice as fine
  in every direction and projected there (detector bins of half the size, the same angles),
  the counts are drawn there and summed over 2 x 2 detector bins; the reconstruction grid's truth,
  attenuation map and VOI masks are the 2 x 2 x 2 means of the fine ones (a mask keeps the coarse
  voxels at least half inside the fine VOI). The reconstruction's system model therefore never
  generated its data;
- warm start: OSEM 16 iterations x 4 subsets from a uniform image (as in the paper).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxspect as js
from jaxspect.metrics import voi_table
from jaxspect.phantoms import torso_phantom
from jaxspect.recon import TrainingData, batch_osem, stack_projectors

# --- 1. the projector benchmark's torso ----------------------------------------------------------

LEHR_FWHM0_MM, LEHR_SLOPE = 3.5, 0.06  # low-energy high-resolution collimator: ~7 mm at 10 cm
MU_WATER_PER_MM = 0.0153  # water at 140 keV (Tc-99m)


@dataclasses.dataclass(frozen=True)
class ProjectorCase:
    """An ``(n, n, nz)`` image of ``voxel_mm`` voxels, ``nview`` views over 360 degrees on a
    circular orbit of ``radius_mm``, Gaussian PSF taps ``2 psf_half_width + 1`` per axis."""

    name: str
    shape: tuple[int, int, int]
    nview: int
    psf_half_width: int
    voxel_mm: float = 4.8
    radius_mm: float = 260.0
    note: str = ""

    @property
    def psf_size(self) -> int:
        return 2 * self.psf_half_width + 1

    def describe(self) -> str:
        nx, ny, nz = self.shape
        p = self.psf_size
        return (f"case {self.name}: image {nx}x{ny}x{nz}, {self.nview} views, PSF {p}x{p}, "
                f"voxel {self.voxel_mm} mm, orbit radius {self.radius_mm:g} mm ({self.note})")


PROJECTOR_CASES = {
    "a": ProjectorCase("a", (64, 64, 40), 60, 9,
                       note="SPECTrecon.jl timing setup: 290 ms forward / 208 ms back published"),
    # 19 taps cover +-3 sigma of the widest response at this orbit (FWHM 34 mm at 560 mm)
    "b": ProjectorCase("b", (128, 128, 80), 128, 9, note="the paper's size"),
    "tiny": ProjectorCase("tiny", (16, 16, 8), 8, 2, voxel_mm=19.2, note="a smoke test"),
}


def projector_phantom(case: ProjectorCase):
    """Activity and attenuation maps (numpy float32, ``case.shape``; 1/mm), fixed for a case.

    Lengths are in mm, so the body is the same physical size at every grid and fits inside the
    orbit.
    """
    nx, ny, nz = case.shape
    d = case.voxel_mm
    x = (np.arange(nx) - (nx - 1) / 2)[:, None, None] * d
    y = (np.arange(ny) - (ny - 1) / 2)[None, :, None] * d
    z = (np.arange(nz) - (nz - 1) / 2)[None, None, :] * d

    def ellipsoid(cx, cy, cz, ax, ay, az):
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1

    body = np.broadcast_to((x / 140.0) ** 2 + (y / 100.0) ** 2 <= 1, case.shape)
    lungs = ellipsoid(60, 10, 40, 40, 50, 70) | ellipsoid(-60, 10, 40, 40, 50, 70)
    liver = ellipsoid(-45, -10, -40, 55, 45, 50) & ~lungs
    lesions = [(ellipsoid(40, -30, -20, 15, 15, 15), 10.0), (ellipsoid(0, 45, 20, 10, 10, 10), 8.0)]

    mumap = np.where(body, MU_WATER_PER_MM, 0.0)
    mumap = np.where(body & lungs, 0.3 * MU_WATER_PER_MM, mumap)
    activity = np.where(body, 1.0, 0.0)
    activity = np.where(body & lungs, 0.2, activity)
    activity = np.where(body & liver, 4.0, activity)
    for mask, value in lesions:
        activity = np.where(body & mask, value, activity)
    return activity.astype(np.float32), mumap.astype(np.float32)


def projector_geometry(case: ProjectorCase, *, psf_half_width: int | None = None, explicit_psf: bool = False):
    """The case's ``SPECTGeometry``; ``psf_half_width`` overrides the case's taps (0: no PSF),
    ``explicit_psf`` gives the same Gaussian as an ``ExplicitPSF`` array."""
    h = case.psf_half_width if psf_half_width is None else psf_half_width
    psf = js.GaussianPSF(LEHR_FWHM0_MM, LEHR_SLOPE, half_width_x=h, half_width_z=h)
    geometry = js.SPECTGeometry(case.shape, (case.voxel_mm,) * 3, psf, nview=case.nview, radii=case.radius_mm)
    if explicit_psf:
        psf = js.ExplicitPSF(np.asarray(psf.as_array(geometry)))
        geometry = js.SPECTGeometry(case.shape, (case.voxel_mm,) * 3, psf, nview=case.nview, radii=case.radius_mm)
    return geometry


# --- 2 and 3. torso_phantom problems (Lu-177) ----------------------------------------------------

FWHM0_MM, SLOPE = 2.5, 0.1  # medium-energy parallel-hole collimator (Lu-177)
ROWS = ("lesion_1", "lesion_2", "lesion_3", "lesion_4", "liver", "lung", "spleen", "kidney")
SMALL_LESIONS = ("lesion_2", "lesion_3", "lesion_4")


@dataclasses.dataclass(frozen=True)
class ProblemSize:
    """Reconstruction grid ``(n, n, nz)`` of ``voxel_mm`` voxels, ``nview`` views, and the
    expected primary counts per patient."""

    n: int
    nz: int
    voxel_mm: float
    nview: int
    counts: float

    def describe(self) -> str:
        return (f"{self.n}x{self.n}x{self.nz} voxels of {self.voxel_mm} mm ({self.n * self.voxel_mm:.0f} x "
                f"{self.n * self.voxel_mm:.0f} x {self.nz * self.voxel_mm:.0f} mm, axially cropped around the liver), "
                f"{self.nview} views, {self.counts:.3g} primary counts + 10% scatter")


SIZES = {
    "quick": ProblemSize(24, 12, 19.2, 24, 3e5),
    "default": ProblemSize(40, 16, 9.6, 40, 1e6),
    "fine": ProblemSize(80, 40, 4.8, 64, 1e6),  # the paper's voxels
    "liver": ProblemSize(80, 24, 4.8, 32, 1e6),  # the paper's voxels, 115 mm around the liver, 32 views
    "full": ProblemSize(128, 80, 4.8, 128, 2e6),  # the paper's size
}


def _pool(a, f: int):
    """Mean over ``f x f x f`` blocks."""
    nx, ny, nz = a.shape
    return a.reshape(nx // f, f, ny // f, f, nz // f, f).mean(axis=(1, 3, 5))


def _bin_views(v, f: int):
    """Sum over ``f x f`` detector bins of views ``(nx, nz, nview)``."""
    nx, nz, nview = v.shape
    return v.reshape(nx // f, f, nz // f, f, nview).sum(axis=(1, 3))


def contoured_geometry(shape, voxel_mm, angles, body, *, fixed_taps=True):
    """A body-contouring orbit (10 mm clearance around the ``body`` mask) with the Lu-177
    medium-energy collimator response.

    ``fixed_taps``: the PSF's tap half width set from the field of view (3 sigma at a depth of
    one field of view: a detector at most half a field of view from the axis, which these
    orbits are), so that the taps, and hence the projectors of different patients, agree and
    stack; else ``GaussianPSF``'s own choice for this orbit.
    """
    half = None
    if fixed_taps:
        depth = shape[0] * voxel_mm
        half = int(np.ceil(3 * np.hypot(FWHM0_MM, SLOPE * depth) / 2.3548 / voxel_mm))
    psf = js.GaussianPSF(FWHM0_MM, SLOPE, half_width_x=half, half_width_z=half)
    probe = js.SPECTGeometry(shape, (voxel_mm,) * 3, psf, angles=angles, radii=shape[0] * voxel_mm)
    radii = np.asarray(probe.object_extent(body)) + 10.0
    return js.SPECTGeometry(shape, (voxel_mm,) * 3, psf, angles=angles, radii=radii)


def osem_problem(n: int = 128, nz: int = 80, nview: int = 128, voxel_mm: float = 4.8, seed: int = 0):
    """``(phantom, geometry)``: ``torso_phantom`` on an ``(n, n, nz)`` grid (defaults: the
    paper's size), ``nview`` views over 360 degrees on a body-contouring orbit."""
    shape = (n, n, nz)
    phantom = torso_phantom(jax.random.key(seed), shape=shape, voxel_size=(voxel_mm,) * 3, energy_kev=208.0)
    angles = 2 * np.pi * np.arange(nview) / nview
    return phantom, contoured_geometry(shape, voxel_mm, angles, phantom.masks["body"], fixed_taps=False)


def make_patient(seed: int, size: ProblemSize, n_noise: int, *, fine: bool = True) -> dict:
    """One simulated patient: projector (reconstruction grid), ``n_noise`` count realisations,
    background, true activity in the data's count units, and VOI masks."""
    f = 2 if fine else 1
    shape = (size.n, size.n, size.nz)
    sim_shape = tuple(f * s for s in shape)
    phantom = torso_phantom(jax.random.key(seed), shape=sim_shape, voxel_size=(size.voxel_mm / f,) * 3)
    angles = 2 * np.pi * np.arange(size.nview) / size.nview
    sim_geometry = contoured_geometry(sim_shape, size.voxel_mm / f, angles, phantom.masks["body"])
    sim = js.SPECTProjector(sim_geometry, jnp.asarray(phantom.mumap, jnp.float32))
    primary = eqx.filter_jit(sim)(jnp.asarray(phantom.activity, jnp.float32))
    primary = _bin_views(primary, f)
    scale = size.counts / float(jnp.sum(primary))
    primary = primary * scale
    background = jnp.full_like(primary, 0.1 * size.counts / primary.size)
    keys = jax.random.split(jax.random.key(1000 + seed), n_noise)
    counts = jax.vmap(lambda k: jax.random.poisson(k, primary + background).astype(jnp.float32))(keys)

    pool = (lambda a: _pool(np.asarray(a, np.float64), f)) if f > 1 else (lambda a: np.asarray(a, np.float64))
    fractions = {k: pool(v) for k, v in phantom.masks.items()}
    # a coarse voxel belongs to a VOI when at least half of it does (or, for a VOI smaller than
    # every coarse voxel, when it holds at least half the VOI's largest fraction)
    masks = {k: v >= min(0.5, 0.5 * v.max()) for k, v in fractions.items()}
    masks["lung"] = masks["lung_left"] | masks["lung_right"]
    masks["kidney"] = masks["kidney_left"] | masks["kidney_right"]
    mumap = jnp.asarray(pool(phantom.mumap), jnp.float32)
    geometry = contoured_geometry(shape, size.voxel_mm, angles, pool(phantom.masks["body"]) > 0)  # mumap's support
    # activity per voxel of the reconstruction grid, in the data's count units (f^3 fine voxels)
    target = jnp.asarray(pool(phantom.activity) * f**3 * scale, jnp.float32)
    return {
        "projector": js.SPECTProjector(geometry, mumap),
        "counts": counts,
        "background": background,
        "target": target,
        "masks": {name: masks[name] for name in ROWS},
    }


def lesion_weights(patient, strength: float) -> np.ndarray:
    """Voxel weights of the training loss that make the lesions count: ``1`` everywhere, plus
    ``strength * N / (n_L * N_l)`` in lesion ``l`` (``N`` voxels in the image, ``n_L`` lesions,
    ``N_l`` voxels in lesion ``l``), so that together the lesions' extra weight is ``strength``
    times the whole image's and every lesion, small or large, gets the same share."""
    lesions = [m for name, m in patient["masks"].items() if name.startswith("lesion_") and m.any()]
    w = np.ones(patient["target"].shape)
    for m in lesions:
        w += m * strength * w.size / (len(lesions) * m.sum())
    return w


def training_data(patients, realisation: int, lesion_weight: float = 0.0) -> TrainingData:
    """Patients of one noise realisation, with OSEM 16x4 warm starts (and, with
    ``lesion_weight > 0``, the loss weights of :func:`lesion_weights`)."""
    projectors = stack_projectors([p["projector"] for p in patients])
    y = jnp.stack([p["counts"][realisation] for p in patients])
    background = jnp.stack([p["background"] for p in patients])
    x0 = batch_osem(projectors, y, n_iter=16, n_subsets=4, background=background)
    weights = (jnp.asarray(np.stack([lesion_weights(p, lesion_weight) for p in patients]), jnp.float32)
               if lesion_weight > 0 else None)
    return TrainingData(projectors, y, background, x0, jnp.stack([p["target"] for p in patients]), weights)


def voi_masks(patients) -> dict:
    """``{voi: (P, nx, ny, nz) bool}`` for ``fit(voi_masks=...)``."""
    return {name: jnp.stack([p["masks"][name] for p in patients]) for name in ROWS}


def evaluate(images, patients) -> dict:
    """Per-VOI MAE and NRMSE (%) of ``images`` (one per patient), averaged over the patients."""
    tables = [voi_table(img, p["target"], p["masks"]) for img, p in zip(images, patients)]
    return {row: {m: float(np.mean([t[row][m] for t in tables])) for m in ("MAE %", "NRMSE %")} for row in ROWS}


def print_table(results: dict, metric: str, rows=ROWS) -> None:
    """``results[method]`` is a list (one per noise realisation) of :func:`evaluate` outputs."""
    methods = list(results)
    width = max(16, max(len(m) for m in methods) + 2)
    print(f"\n{metric} (mean +- std over noise realisations; * lowest)")
    print(f"{'VOI':10s}" + "".join(f"{m:>{width}s}" for m in methods))
    for row in rows:
        means = [np.mean([r[row][metric] for r in results[m]]) for m in methods]
        best = int(np.argmin(means))
        cells = [f"{np.mean([r[row][metric] for r in results[m]]):.1f} +- "
                 f"{np.std([r[row][metric] for r in results[m]]):.1f}{'*' if i == best else ' '}"
                 for i, m in enumerate(methods)]
        print(f"{row:10s}" + "".join(f"{c:>{width}s}" for c in cells))
