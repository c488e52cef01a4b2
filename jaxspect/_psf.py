"""Collimator response: depth- and view-dependent point spread functions (PSFs).

A PSF is given per depth plane ``j`` (0 = nearest the detector) and view ``l`` as a 2-D kernel
``psf[:, :, j, l]`` of odd size ``(px, pz)`` over (detector bin, axial slice) offsets, centred
at ``(px // 2, pz // 2)``. Two models:

- :class:`GaussianPSF`: the usual parallel-hole collimator model
  ``FWHM(d) = sqrt(fwhm0**2 + (slope * d)**2)`` at distance ``d`` (mm) from the detector face,
  evaluated per plane *and* per view from the orbit radii, with pixel-integrated taps,
  normalised to sum 1. Separable in x and z.
- :class:`ExplicitPSF`: any array ``(px, pz, ny, nview)`` with point-symmetric slices
  (``p == p[::-1, ::-1]``), e.g. measured or Monte Carlo-fitted responses.

Internally every PSF is held as separable factors, ``psf[:, :, j, l] = sum_r x[r, j, :, l] z[r,
j, :, l]^T`` (rank 1 for the Gaussian model, the numerical rank of each slice for explicit
arrays). The blur of one view (:func:`blur_and_sum`) applies the z factor of every plane as a
dense matrix product with the replicate ("edge") padding of SPECTrecon.jl folded into the
matrix, and the x factor together with the sum over depth tap by tap: one GEMM weighs the planes
by each tap, then the taps' shifts of the edge-padded result are summed. This is exactly the
convolution with replicate padding (``scipy.ndimage.convolve(mode="nearest")``), and it runs as
GEMMs rather than FFTs or depthwise convolutions (which XLA's CPU backend runs 25x slower).
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf
from jaxtyping import Array, Float

FWHM_PER_SIGMA = math.sqrt(8 * math.log(2))  # 2.35482...


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class AbstractPSF(eqx.Module):
    """A collimator response model: produces per-view separable PSF factors."""

    @abc.abstractmethod
    def factors(self, geometry) -> tuple[Float[Array, "nview r ny px"], Float[Array, "nview r ny pz"]]:
        """Separable factors ``(fx, fz)`` of every (plane, view) slice of the PSF.

        ``psf[:, :, j, l] == sum_r outer(fx[l, r, j], fz[l, r, j])``.
        """

    @abc.abstractmethod
    def _check(self, image_shape, voxel_size, nview, radii) -> "AbstractPSF":
        """Validate against a geometry and return the (possibly resolved) PSF."""

    def view_subset(self, indices) -> "AbstractPSF":
        """The PSF restricted to the views ``indices`` (a 1-D integer array)."""
        return self

    def as_array(self, geometry) -> Float[Array, "px pz ny nview"]:
        """The dense PSF array ``(px, pz, ny, nview)`` this model stands for."""
        fx, fz = self.factors(geometry)
        return jnp.einsum("lrjp,lrjq->pqjl", fx, fz)


def gaussian_taps(fwhm: Float[Array, "..."], spacing: float, half_width: int) -> Float[Array, "... p"]:
    """Pixel-integrated 1-D Gaussian taps at offsets ``-h..h`` pixels, normalised to sum 1.

    ``tap[o] = Phi((o + 1/2) d / sigma) - Phi((o - 1/2) d / sigma)`` with
    ``sigma = fwhm / sqrt(8 ln 2)``, ``fwhm`` and ``spacing`` ``d`` in mm. ``fwhm == 0`` gives a
    Kronecker delta.
    """
    fwhm = jnp.asarray(fwhm)
    offsets = jnp.arange(-half_width, half_width + 1, dtype=fwhm.dtype) * spacing
    sigma = fwhm[..., None] / FWHM_PER_SIGMA
    tiny = jnp.finfo(fwhm.dtype).tiny
    scale = 1 / (jnp.sqrt(2.0).astype(fwhm.dtype) * jnp.maximum(sigma, tiny))
    cdf = lambda u: 0.5 * erf(u * scale)
    taps = cdf(offsets + spacing / 2) - cdf(offsets - spacing / 2)
    return taps / jnp.sum(taps, axis=-1, keepdims=True)


class GaussianPSF(AbstractPSF):
    """Depth- and view-dependent Gaussian collimator response.

    ``FWHM(d) = sqrt(fwhm0**2 + (slope * d)**2)`` (mm) at distance ``d`` (mm) from the detector
    face. For view ``l`` with orbit radius ``R_l`` (rotation axis to detector face) the plane
    ``j`` (0 = nearest the detector) lies at ``d = R_l + (j - (ny - 1)/2) * dy``. Taps are
    pixel-integrated in x (spacing ``dx``) and z (spacing ``dz``) and each axis sums to 1.

    Arguments:
        fwhm0: intrinsic+collimator FWHM at the detector face, mm.
        slope: FWHM growth per mm of distance (dimensionless); e.g. for a parallel-hole
            collimator of hole diameter ``D`` and effective length ``L``, ``slope = D / L``.
        half_width_x, half_width_z: tap half-widths in pixels (kernel sizes ``2h + 1``). By
            default chosen when the geometry is built so that every kernel covers +-3 sigma
            of the widest response.
    """

    fwhm0: Float[Array, ""]
    slope: Float[Array, ""]
    half_width_x: int | None = eqx.field(static=True, default=None)
    half_width_z: int | None = eqx.field(static=True, default=None)

    def __init__(self, fwhm0, slope, *, half_width_x=None, half_width_z=None):
        for name, value in (("fwhm0", fwhm0), ("slope", slope)):
            if _is_concrete(value):
                v = np.asarray(value)
                if v.shape != () or not np.isfinite(v) or v < 0:
                    raise ValueError(f"GaussianPSF {name} must be a finite scalar >= 0, got {value!r}")
        for name, value in (("half_width_x", half_width_x), ("half_width_z", half_width_z)):
            if value is not None and (int(value) != value or value < 0):
                raise ValueError(f"GaussianPSF {name} must be an integer >= 0, got {value!r}")
        self.fwhm0 = jnp.asarray(fwhm0, dtype=jnp.result_type(float))
        self.slope = jnp.asarray(slope, dtype=jnp.result_type(float))
        self.half_width_x = None if half_width_x is None else int(half_width_x)
        self.half_width_z = None if half_width_z is None else int(half_width_z)

    def fwhm(self, geometry) -> Float[Array, "nview ny"]:
        """FWHM in mm of every (view, plane)."""
        return jnp.sqrt(self.fwhm0**2 + (self.slope * geometry.plane_distances()) ** 2)

    def _check(self, image_shape, voxel_size, nview, radii):
        if radii is None:
            raise ValueError("a GaussianPSF needs the orbit: pass radii= (mm) to SPECTGeometry")
        hx, hz = self.half_width_x, self.half_width_z
        if hx is None or hz is None:
            if not (_is_concrete(radii) and _is_concrete(self.fwhm0) and _is_concrete(self.slope)):
                raise ValueError(
                    "GaussianPSF tap sizes are chosen from concrete radii; when building the "
                    "geometry under a JAX transform pass half_width_x= and half_width_z="
                )
            _, ny, nz = image_shape
            dx, dy, dz = voxel_size
            d_max = float(np.max(np.asarray(radii))) + (ny - 1) / 2 * dy
            sigma = math.sqrt(float(self.fwhm0) ** 2 + (float(self.slope) * d_max) ** 2) / FWHM_PER_SIGMA
            if hx is None:
                hx = min(math.ceil(3 * sigma / dx), 2 * image_shape[0])
            if hz is None:
                hz = 0 if nz == 1 else min(math.ceil(3 * sigma / dz), 2 * nz)
        return GaussianPSF(self.fwhm0, self.slope, half_width_x=hx, half_width_z=hz)

    def factors(self, geometry):
        dx, _, dz = geometry.voxel_size
        fwhm = self.fwhm(geometry)  # (nview, ny)
        fx = gaussian_taps(fwhm, dx, self.half_width_x)
        fz = gaussian_taps(fwhm, dz, self.half_width_z)
        return fx[:, None], fz[:, None]


class ExplicitPSF(AbstractPSF):
    """A PSF given as an array ``(px, pz, ny, nview)`` (odd ``px``, ``pz``; ``pz == 1`` allowed),
    each slice point-symmetric: ``psf[:, :, j, l] == psf[::-1, ::-1, j, l]``.

    Slices are not renormalised. The array is factorised once (SVD per slice, keeping singular
    values above ``rtol`` times the largest), so building one needs a concrete array.
    """

    factor_x: Float[Array, "nview r ny px"]
    factor_z: Float[Array, "nview r ny pz"]

    def __init__(self, psf, *, rtol: float = 1e-7):
        if not _is_concrete(psf):
            raise ValueError("ExplicitPSF needs a concrete array (build it outside jit)")
        p = np.asarray(psf)
        if p.ndim != 4:
            raise ValueError(f"psf must have shape (px, pz, ny, nview), got shape {p.shape}")
        px, pz = p.shape[:2]
        if px % 2 == 0 or pz % 2 == 0:
            raise ValueError(f"psf kernel sizes (px, pz) must be odd, got ({px}, {pz})")
        if not np.issubdtype(p.dtype, np.floating):
            raise TypeError(f"psf must be a floating-point array, got dtype {p.dtype}")
        if not np.all(np.isfinite(p)):
            raise ValueError("psf contains NaN or Inf")
        scale = np.max(np.abs(p), axis=(0, 1), keepdims=True)
        asym = np.max(np.abs(p - p[::-1, ::-1]) / np.where(scale > 0, scale, 1))
        if asym > 1e-5:
            raise ValueError(
                "psf slices must be point-symmetric (psf[:, :, j, l] == psf[::-1, ::-1, j, l]); "
                f"largest relative asymmetry is {asym:.3g}. Symmetrise with (p + p[::-1, ::-1]) / 2."
            )
        slices = np.moveaxis(p, (0, 1), (-2, -1))  # (ny, nview, px, pz)
        u, s, vt = np.linalg.svd(slices.astype(np.float64), full_matrices=False)
        keep = s > rtol * np.max(s, axis=-1, keepdims=True)
        rank = max(int(np.max(np.sum(keep, axis=-1))), 1)
        root = np.sqrt(np.where(keep, s, 0))[..., :rank]
        fx = u[..., :, :rank] * root[..., None, :]  # (ny, nview, px, r)
        fz = vt[..., :rank, :] * root[..., :, None]  # (ny, nview, r, pz)
        self.factor_x = jnp.asarray(np.transpose(fx, (1, 3, 0, 2)), dtype=p.dtype)
        self.factor_z = jnp.asarray(np.transpose(fz, (1, 2, 0, 3)), dtype=p.dtype)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.factor_x.shape[-1], self.factor_z.shape[-1]

    def _check(self, image_shape, voxel_size, nview, radii):
        nview_psf, _, ny_psf, _ = self.factor_x.shape
        if ny_psf != image_shape[1] or nview_psf != nview:
            raise ValueError(
                f"psf must have shape (px, pz, ny, nview) = (px, pz, {image_shape[1]}, {nview}), "
                f"got (px, pz, {ny_psf}, {nview_psf})"
            )
        return self

    def factors(self, geometry):
        return self.factor_x, self.factor_z

    def view_subset(self, indices):
        return eqx.tree_at(lambda p: (p.factor_x, p.factor_z), self, (self.factor_x[indices], self.factor_z[indices]))


def gaussian_psf_array(fwhm_x, fwhm_z, dx: float, dz: float, px: int, pz: int):
    """Dense pixel-integrated Gaussian kernels ``(px, pz, *fwhm.shape)`` for given FWHMs (mm).

    Convenience for building an :class:`ExplicitPSF` (e.g. from per-plane fitted FWHMs).
    """
    if px % 2 == 0 or pz % 2 == 0:
        raise ValueError(f"px and pz must be odd, got ({px}, {pz})")
    gx = gaussian_taps(jnp.asarray(fwhm_x), dx, px // 2)
    gz = gaussian_taps(jnp.asarray(fwhm_z), dz, pz // 2)
    return jnp.moveaxis(gx[..., :, None] * gz[..., None, :], (-2, -1), (0, 1))


# --- applying the blur -----------------------------------------------------------------------


def _blur_matrix_index(n: int, p: int) -> np.ndarray:
    """Static map from each matrix entry ``(i, k)`` to its source in ``[taps, first, last, 0]``."""
    h = (p - 1) // 2
    i = np.arange(n)[:, None]
    k = np.arange(n)[None, :]
    t = i - k + h
    zero = p + 2 * n
    index = np.where((t >= 0) & (t < p), t, zero)
    index[:, 0] = p + np.arange(n)  # column 0: every tap reaching index <= 0
    index[:, n - 1] = p + n + np.arange(n)  # column n-1: every tap reaching index >= n-1
    if n == 1:
        index[0, 0] = p  # a single pixel receives all taps
    return index


def _fold_taps(taps: Float[Array, "... p"], n: int) -> Float[Array, "... q"]:
    """Taps of the same replicate-padded convolution of an axis of length ``n`` with at most
    ``2n - 1`` taps: offsets at or beyond ``+-(n - 1)`` always read the edge pixel, so they are
    summed into the taps at ``+-(n - 1)``."""
    p = taps.shape[-1]
    h, m = (p - 1) // 2, n - 1
    if h <= m:
        return taps
    if m == 0:
        return jnp.sum(taps, axis=-1, keepdims=True)
    left = jnp.sum(taps[..., : h - m + 1], axis=-1, keepdims=True)
    right = jnp.sum(taps[..., h + m :], axis=-1, keepdims=True)
    return jnp.concatenate([left, taps[..., h - m + 1 : h + m], right], axis=-1)


def _shifted_sum(padded: Float[Array, "r p nz m"], n: int) -> Float[Array, "r nz n"]:
    """``out[..., a] = sum_t padded[:, t, ..., a + 2h - t]`` for ``p = 2h + 1`` taps: the sum
    over tap offsets of a tap-major stack edge-padded by ``h`` along its last axis (``m = n +
    2h``)."""
    p = padded.shape[1]
    h = (p - 1) // 2
    out = padded[:, 0, ..., 2 * h : 2 * h + n]
    for t in range(1, p):
        out = out + padded[:, t, ..., 2 * h - t : 2 * h - t + n]
    return out


def _edge_fold(spread: Float[Array, "p m nz"], n: int) -> Float[Array, "p n nz"]:
    """Transpose of edge-padding axis 1 by ``h`` on each side (``m = n + 2h``): interior rows
    are copied, the ``h + 1`` first (last) are summed into row 0 (``n - 1``)."""
    h = (spread.shape[1] - n) // 2
    if n == 1:
        return jnp.sum(spread, axis=1, keepdims=True)
    first = jnp.sum(spread[:, : h + 1], axis=1, keepdims=True)
    last = jnp.sum(spread[:, n - 1 + h :], axis=1, keepdims=True)
    return jnp.concatenate([first, spread[:, h + 1 : n - 1 + h], last], axis=1)


def blur_matrices(taps: Float[Array, "... p"], n: int) -> Float[Array, "... n n"]:
    """Matrices ``M`` with ``M @ u == convolve(u, taps, mode="nearest")`` along one axis.

    ``(M @ u)[i] = sum_t taps[t] * u[clip(i - (t - h), 0, n - 1)]`` with ``h = (p - 1) // 2``:
    a Toeplitz band, plus the replicate-padding tails folded into the first and last columns.
    Built with a single gather.
    """
    p = taps.shape[-1]
    h = (p - 1) // 2
    csum = jnp.concatenate([jnp.zeros_like(taps[..., :1]), jnp.cumsum(taps, axis=-1)], axis=-1)
    rows = np.arange(n)
    # Column 0 of row i: taps t >= i + h (source index i - t + h <= 0).
    first = csum[..., -1:] - csum[..., np.clip(rows + h, 0, p)]
    if n == 1:
        first = csum[..., -1:]
    # Column n-1 of row i: taps t <= i + h - n + 1 (source index >= n - 1).
    last = csum[..., np.clip(rows + h - n + 2, 0, p)]
    source = jnp.concatenate([taps, first, last, jnp.zeros_like(taps[..., :1])], axis=-1)
    return source[..., _blur_matrix_index(n, p)]


def blur_and_sum(planes: Float[Array, "ny nx nz"], fx, fz) -> Float[Array, "nx nz"]:
    """Blur each depth plane ``planes[j]`` (an ``(nx, nz)`` slab, depth-major layout) by its PSF
    and sum over depth.

    ``fx``: ``(r, ny, px)``, ``fz``: ``(r, ny, pz)`` separable factors of one view. The z blur
    is a batch of small GEMMs (one per plane, replicate padding folded into the matrices),
    written ``(k, i)``-major as XLA's CPU GEMM produces it. The x blur and the depth sum are
    done tap by tap: ``U[t] = sum_j fx[j, t] T[j]`` is one GEMM ``(px, ny) @ (ny, nz*nx)``
    (``2 px`` FLOPs per voxel rather than ``2 nx`` for a dense x matrix), then ``out[a] =
    sum_t U[t, clip(a - t + h)]``: the taps' shifts of the edge-padded ``U``, which is the
    replicate padding.
    """
    ny, nx, nz = planes.shape
    fx = _fold_taps(fx, nx)
    r, _, px = fx.shape
    h = (px - 1) // 2
    bz = blur_matrices(fz, nz)  # (r, ny, k, m)
    t = jnp.einsum("jim,rjkm->rjki", planes, bz).reshape(r, ny, nz * nx)
    u = jnp.einsum("rjt,rjv->rtv", fx, t).reshape(r, px, nz, nx)
    u = jnp.pad(u, ((0, 0), (0, 0), (0, 0), (h, h)), mode="edge")
    return jnp.sum(_shifted_sum(u, nx), axis=0).T


def blur_and_sum_adjoint(view: Float[Array, "nx nz"], fx, fz) -> Float[Array, "ny nx nz"]:
    """Exact adjoint of :func:`blur_and_sum`: spread a view over all depth planes (each step of
    the forward transposed, in reverse order)."""
    nx, nz = view.shape
    fx = _fold_taps(fx, nx)
    r, ny, px = fx.shape
    h = (px - 1) // 2
    # Transpose of the shifted sum: tap t sees the view shifted by t - 2h, zero outside. Rows
    # are x here (not z as in the forward), so that the GEMM writes (j, i, k), the layout of
    # the z blur's output and of the rotation's input.
    wide = jnp.pad(view, ((2 * h, 2 * h), (0, 0)))
    spread = jnp.stack([wide[t : t + nx + 2 * h] for t in range(px)])  # (px, nx + 2h, nz)
    u = _edge_fold(spread, nx).reshape(px, nx * nz)
    t = (fx.reshape(r * ny, px) @ u).reshape(r, ny, nx, nz)
    bz = blur_matrices(fz, nz)
    return jnp.einsum("rjik,rjkm->jim", t, bz)
