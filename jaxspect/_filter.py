"""Gaussian post-filter for reconstructed images."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._psf import FWHM_PER_SIGMA, blur_matrices, gaussian_taps


def gaussian_filter(
    image: Float[Array, "nx ny nz"], fwhm_mm, voxel_size, *, truncate: float = 3.0
) -> Float[Array, "nx ny nz"]:
    """Separable 3-D Gaussian filter with the FWHM in mm, per axis.

    The taps are pixel-integrated Gaussians (as the PSF model's) out to ``truncate`` standard
    deviations, normalised to sum 1; image edges are replicated (``mode="nearest"``), so a
    uniform image is unchanged. A FWHM of 0 leaves that axis alone.

    Arguments:
        image: ``(nx, ny, nz)``.
        fwhm_mm: full width at half maximum in mm, a scalar for all axes or ``(fx, fy, fz)``,
            each ``>= 0`` (static: Python numbers).
        voxel_size: ``(dx, dy, dz)`` in mm.
        truncate: kernel half-width in standard deviations.
    """
    image = jnp.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be 3-D (nx, ny, nz), got shape {image.shape}")
    fwhm = np.broadcast_to(np.asarray(fwhm_mm, np.float64), (3,)) if np.ndim(fwhm_mm) in (0, 1) else None
    if fwhm is None or np.shape(fwhm_mm) not in ((), (3,)) or not np.all(np.isfinite(fwhm)) or np.any(fwhm < 0):
        raise ValueError(f"fwhm_mm must be a number >= 0 or three of them (mm), got {fwhm_mm!r}")
    vs = np.asarray(voxel_size, np.float64)
    if vs.shape != (3,) or not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise ValueError(f"voxel_size must be three positive numbers (mm), got {voxel_size!r}")
    dtype = image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.result_type(float)
    image = image.astype(dtype)
    for axis in range(3):
        if fwhm[axis] == 0:
            continue
        half_width = max(1, math.ceil(truncate * fwhm[axis] / FWHM_PER_SIGMA / vs[axis]))
        taps = gaussian_taps(jnp.asarray(fwhm[axis], dtype), float(vs[axis]), half_width)
        matrix = blur_matrices(taps, image.shape[axis])
        image = jnp.moveaxis(jnp.tensordot(matrix, image, axes=([1], [axis])), 0, axis)
    return image
