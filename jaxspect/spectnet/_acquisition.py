"""SPECTnet's simulated acquisition: the LEHR brain-SPECT geometry, projection and Poisson noise.

Simulated acquisition (the paper: analytic projection with attenuation and a depth-dependent
Gaussian collimator response "based on LEHR collimators"; 120 views over 360 degrees, 128 bins)
------------------------------------------------------------------------------------------------
- Image ``(128, 128, 1)`` of 2-mm pixels, projected by :func:`jaxspect.forward_project` (one
  2-D slice: views ``(128, 1, 120)``, turned into a ``(120, 128)`` sinogram, rows = views).
- Circular orbit of radius ``RADIUS_MM = 130`` mm (rotation axis to collimator face), a typical
  brain-SPECT radius; the largest head reaches 105 mm from the axis.
- Collimator response :func:`lehr_psf`: ``GaussianPSF(fwhm0, slope)``, ``FWHM(d) =
  sqrt(fwhm0^2 + (slope d)^2)``, fitted (least squares in FWHM^2 over the distances
  ``d = 25..235`` mm the head can occupy) to the textbook system resolution of a parallel-hole
  collimator (Cherry, Sorenson & Phelps, *Physics in Nuclear Medicine*, 4th ed., ch. 14):
  ``R_sys(d) = sqrt(R_i^2 + (D (L_eff + d) / L_eff)^2)``, ``L_eff = L - 2 / mu_Pb``, with the
  Siemens LEHR collimator's hole diameter ``D = 1.11`` mm and length ``L = 24.05`` mm, lead
  ``mu_Pb = 2.7 /mm`` at 140 keV and intrinsic resolution ``R_i = 3.8`` mm (Symbia). This gives
  ``R_sys = 7.0`` mm at 100 mm (the data sheet quotes 7.5 mm); the fit is ``fwhm0 = 4.62``
  mm, ``slope = 0.0515`` (6.9 mm at 100 mm; within 8% of the formula over 25-235 mm).
- Attenuation from the phantom's map (water and cortical bone at 140.5 keV), no scatter.
- Sinograms are in activity units: the projector's output for the activity image (sum along
  the ray of activity times attenuation factor, blurred). Optional Poisson noise
  (:func:`add_poisson_noise`): each sinogram is scaled to ``count_level`` expected counts,
  drawn, and scaled back (a calibrated system). The clinical level used by default,
  ``CLINICAL_COUNTS_PER_SLICE = 1e5``, is an estimate: a Tc-99m HMPAO/ECD brain perfusion study
  collects about 5-10 million counts over ~70 two-millimetre transaxial rows of the brain,
  i.e. ~1e5 per 2-D sinogram.
- The sinogram is padded from 120 to 128 rows by repeating its first 8 rows after the last.

Simulation without the inverse crime (``oversample``)
-----------------------------------------------------
Reconstructing data made by the reconstruction's own model flatters the reconstruction. With
``oversample = k`` the data are simulated on a grid ``k`` times finer than the reconstruction's
(:func:`oversampled_geometry`: pixels and detector bins of ``pixel_size / k``, same views,
orbit and LEHR response, the Gaussian taps re-integrated over the finer bins), from phantoms
generated at that resolution, and the detector bins are merged ``k`` at a time
(:func:`bin_sinogram`). Units: the projector's output is a sum over pixels of activity, so a
unit of it stands for one pixel area's worth of activity; :func:`bin_sinogram` divides the sum
of ``k`` bins by ``k^2`` so that the binned sinogram is in the coarse grid's units and the total
activity seen (value times pixel area) is conserved.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._collimators import get_collimator
from .._geometry import SPECTGeometry
from .._projector import forward_project
from .._psf import GaussianPSF
from ._networks import views_to_sinogram

__all__ = ["RADIUS_MM", "NVIEW", "PIXEL_MM", "CLINICAL_COUNTS_PER_SLICE", "lehr_psf", "lehr_system_fwhm",
           "spectnet_geometry", "oversampled_geometry", "project_phantoms", "bin_sinogram", "add_poisson_noise"]

RADIUS_MM = 130.0
NVIEW = 120
PIXEL_MM = 2.0
CLINICAL_COUNTS_PER_SLICE = 1e5

# Siemens Symbia LEHR collimator and detector (see the module docstring).
INTRINSIC_FWHM_MM = 3.8


def lehr_system_fwhm(distance_mm):
    """Textbook LEHR system resolution (FWHM, mm) at ``distance_mm`` from the collimator face:
    :mod:`jaxspect._collimators`' ``"sy-lehr"`` at 140 keV, with the image plane at the
    collimator's back face (``c = 0``, as in the paper's textbook formula)."""
    return get_collimator("sy-lehr").system_fwhm_mm(distance_mm, 140.0, intrinsic_fwhm_mm=INTRINSIC_FWHM_MM,
                                                    image_plane_mm=0.0)


def lehr_psf(distance_range_mm=(25.0, 235.0)) -> GaussianPSF:
    """``GaussianPSF(fwhm0, slope)`` fitted to :func:`lehr_system_fwhm` over ``distance_range_mm``
    (least squares in FWHM^2, which is linear in ``fwhm0^2`` and ``slope^2``)."""
    lo, hi = distance_range_mm
    if not 0 <= lo < hi:
        raise ValueError(f"distance_range_mm must be (lo, hi) with 0 <= lo < hi, got {distance_range_mm!r}")
    d = np.linspace(lo, hi, 211)
    design = np.stack([np.ones_like(d), d**2], axis=1)
    (c0, c1), *_ = np.linalg.lstsq(design, lehr_system_fwhm(d) ** 2, rcond=None)
    return GaussianPSF(math.sqrt(c0), math.sqrt(c1))


def spectnet_geometry(*, image_size: int = 128, pixel_size: float = PIXEL_MM, nview: int = NVIEW,
                      radius: float = RADIUS_MM, psf=None) -> SPECTGeometry:
    """The paper's acquisition: a 2-D slice ``(n, n, 1)`` of ``pixel_size`` mm, ``nview``
    views over 360 degrees, circular orbit of ``radius`` mm, LEHR response (:func:`lehr_psf`)."""
    if nview > image_size:
        raise ValueError(f"nview must be <= image_size (the sinogram is padded to a square), got {nview} > {image_size}")
    psf = lehr_psf() if psf is None else psf
    return SPECTGeometry((image_size, image_size, 1), (pixel_size,) * 3, psf, nview=nview, radii=radius)


def oversampled_geometry(geometry: SPECTGeometry, factor: int) -> SPECTGeometry:
    """The acquisition of ``geometry`` on a grid ``factor`` times finer: image ``(k n, k n, 1)``
    of ``pixel_size / k`` mm pixels and detector bins, the same view angles and orbit radii, and
    the same Gaussian response model (its taps re-integrated over the finer bins). ``factor = 1``
    returns ``geometry``. The fine grid covers the same field of view; coarse pixel ``i`` holds
    fine pixels ``k i .. k i + k - 1`` along each axis."""
    if not isinstance(factor, (int, np.integer)) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"factor (oversample) must be a positive integer, got {factor!r}")
    if factor == 1:
        return geometry
    if not isinstance(geometry.psf, GaussianPSF):
        raise ValueError(f"oversampling needs a GaussianPSF geometry (its response is re-sampled), "
                         f"got {type(geometry.psf).__name__}")
    n, _, nz = geometry.image_shape
    if nz != 1:
        raise ValueError(f"geometry must be 2-D, image_shape (n, n, 1); got {geometry.image_shape}")
    dx, _, dz = geometry.voxel_size
    psf = GaussianPSF(geometry.psf.fwhm0, geometry.psf.slope)
    return SPECTGeometry((factor * n, factor * n, 1), (dx / factor, dx / factor, dz), psf,
                         angles=geometry.angles, radii=geometry.radii)


def bin_sinogram(sinograms: Float[Array, "... nview m"], factor: int) -> Float[Array, "... nview m/factor"]:
    """Merge detector bins ``factor`` at a time: ``(..., nview, k n) -> (..., nview, n)``, the
    sum of each group of ``k`` bins divided by ``k^2`` (from fine-grid to coarse-grid activity
    units; see the module docstring), so ``sum(out) * k^2 == sum(sinograms)``."""
    if not isinstance(factor, (int, np.integer)) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    m = sinograms.shape[-1]
    if m % factor:
        raise ValueError(f"the number of detector bins ({m}) must be a multiple of factor={factor}")
    grouped = sinograms.reshape(*sinograms.shape[:-1], m // factor, factor)
    return jnp.sum(grouped, axis=-1) / factor**2


@eqx.filter_jit
def project_phantoms(geometry: SPECTGeometry, activity: Float[Array, "b n n"],
                     mumap: Float[Array, "b n n"]) -> Float[Array, "b nview n"]:
    """Noise-free sinograms ``(B, nview, n)`` (rows = views) of 2-D activity images with their
    attenuation maps (1/mm), by :func:`jaxspect.forward_project` (8 views per loop step)."""
    one = lambda a, m: forward_project(a[..., None], m[..., None], geometry, views_per_batch=8)
    return views_to_sinogram(jax.vmap(one)(activity, mumap))


@eqx.filter_jit
def add_poisson_noise(keys: PRNGKeyArray, sinograms: Float[Array, "b nview n"],
                      count_level: float) -> Float[Array, "b nview n"]:
    """Poisson noise at ``count_level`` expected counts per sinogram: ``Poisson(s y) / s`` with
    ``s = count_level / sum(y)`` per sinogram (``keys``: one per sinogram)."""
    total = jnp.sum(sinograms, axis=(1, 2), keepdims=True)
    scale = count_level / jnp.where(total > 0, total, 1)
    draw = lambda k, lam: jax.random.poisson(k, lam).astype(sinograms.dtype)
    return jax.vmap(draw)(keys, sinograms * scale) / scale
