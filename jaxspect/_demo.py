"""The README's main job: make a torso-like phantom, project it, back-project, print figures."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ._geometry import SPECTGeometry
from ._projector import back_project, forward_project
from ._psf import GaussianPSF
from .phantoms import ellipsoid, elliptic_cylinder

# Tc-99m (140 keV) narrow-beam linear attenuation of water, 0.1536 /cm (NIST XCOM), in 1/mm.
MU_WATER_140KEV = 0.01536
# A low-energy high-resolution (LEHR) parallel-hole collimator: ~7.4 mm FWHM at 100 mm.
LEHR_FWHM0_MM, LEHR_SLOPE = 1.7, 0.072


def torso_phantom(n: int, nz: int, voxel_mm: float):
    """A small torso-like activity/attenuation pair: elliptical body (activity 1), a liver-like
    ellipsoid (4), a hot lesion (12) and a cold region (0); water attenuation in the body."""
    shape, vs = (n, n, nz), (voxel_mm,) * 3
    half = n * voxel_mm / 2
    body = elliptic_cylinder(shape, vs, (0.80 * half, 0.55 * half))
    liver = ellipsoid(shape, vs, (-0.3 * half, -0.05 * half, 0.0), (0.35 * half, 0.28 * half, 0.4 * nz * voxel_mm), supersample=2)
    lesion = ellipsoid(shape, vs, (-0.35 * half, -0.1 * half, 0.0), (0.08 * half,) * 3, supersample=2)
    cold = ellipsoid(shape, vs, (0.35 * half, 0.1 * half, 0.0), (0.12 * half,) * 3, supersample=2)
    activity = body + 3 * liver + 8 * lesion
    activity = activity * (1 - cold) * body
    return activity.astype(np.float32), (MU_WATER_140KEV * body).astype(np.float32), body


def _timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, first, time.perf_counter() - start


def run_demo(n: int = 64, nz: int = 32, nview: int = 60, voxel_mm: float = 4.8, rotation: str = "bilinear") -> dict:
    """Run the demo and print its figures; returns them as a dict."""
    activity, mumap, body = torso_phantom(n, nz, voxel_mm)
    angles = 2 * np.pi * np.arange(nview) / nview
    psf = GaussianPSF(LEHR_FWHM0_MM, LEHR_SLOPE)
    # Body-contouring orbit: 10 mm clearance from the body outline in every view (as in the paper).
    probe = SPECTGeometry((n, n, nz), (voxel_mm,) * 3, psf, angles=angles, radii=n * voxel_mm)
    radii = np.asarray(probe.object_extent(body)) + 10.0
    geometry = SPECTGeometry((n, n, nz), (voxel_mm,) * 3, psf, angles=angles, radii=radii)
    x, mu = jnp.asarray(activity), jnp.asarray(mumap)

    project = jax.jit(lambda x, mu: forward_project(x, mu, geometry, rotation=rotation))
    backproject = jax.jit(lambda v, mu: back_project(v, mu, geometry, rotation=rotation))
    views, t_fp_first, t_fp = _timed(project, x, mu)
    free_views = project(x, jnp.zeros_like(mu))
    sensitivity, t_bp_first, t_bp = _timed(backproject, jnp.ones_like(views), mu)
    rng = np.random.default_rng(0)
    u = jnp.asarray(rng.standard_normal(activity.shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(views.shape), jnp.float32)
    dot_error = abs(float(jnp.vdot(w, project(u, mu))) - float(jnp.vdot(backproject(w, mu), u))) / abs(
        float(jnp.vdot(w, project(u, mu)))
    )
    psf_px = geometry.psf.as_array(geometry).shape[:2]
    counts = np.asarray(views).sum(axis=(0, 1))
    figures = {
        "image_shape": (n, n, nz),
        "views_shape": tuple(views.shape),
        "psf_taps": tuple(psf_px),
        "orbit_radius_mm": (float(radii.min()), float(radii.max())),
        "activity_total": float(activity.sum()),
        "view_counts_min_max": (float(counts.min()), float(counts.max())),
        "attenuation_survival": float(views.sum() / free_views.sum()),
        "sensitivity_min_max_in_body": (
            float(np.asarray(sensitivity)[body > 0].min()),
            float(np.asarray(sensitivity)[body > 0].max()),
        ),
        "adjoint_dot_test_rel_error": dot_error,
        "forward_ms": 1e3 * t_fp,
        "back_ms": 1e3 * t_bp,
        "compile_s": t_fp_first - t_fp + t_bp_first - t_bp,
    }
    print(f"jaxspect demo on {jax.devices()[0].platform.upper()} ({jax.device_count()} device(s)), rotation={rotation}")
    print(f"  phantom {n}x{n}x{nz} voxels of {voxel_mm} mm, total activity {figures['activity_total']:.1f}")
    print(f"  {nview} views, body-contouring orbit {radii.min():.0f}-{radii.max():.0f} mm, LEHR PSF {psf_px[0]}x{psf_px[1]} taps")
    print(f"  projections {figures['views_shape']}: counts per view {counts.min():.1f} .. {counts.max():.1f}")
    print(f"  fraction of photons surviving attenuation: {figures['attenuation_survival']:.3f}")
    lo, hi = figures["sensitivity_min_max_in_body"]
    print(f"  sensitivity A'1 inside the body: {lo:.2f} .. {hi:.2f}")
    print(f"  adjoint dot test |<w,Au> - <A'w,u>| / |<w,Au>| = {dot_error:.2e}")
    print(f"  forward {figures['forward_ms']:.0f} ms, back {figures['back_ms']:.0f} ms (after {figures['compile_s']:.1f} s compiling)")
    return figures
