"""Random 2-D brain phantoms for SPECTnet (Shao, Rowe & Du, Ann Transl Med 2021).

The paper's generator: 128 x 128 pixels of 2 mm; an elliptical low-uptake background of
activity 1; a few high-uptake regions of random shapes and positions inside it whose (common)
activity is drawn from a Gaussian centred at 6 and limited to 3..9; zero outside the ellipse.
The attenuation map has water inside the ellipse and a 2-4 mm ring of cortical bone (a skull)
just outside it.

Everything is pure ``jax.numpy`` on fixed shapes, so a phantom is a function of its PRNG key
only: :func:`brain_phantom_2d` ``jit``s and ``vmap``s, and :func:`brain_phantoms_2d` makes a
batch from a batch of keys. A data set of any size (the paper's 20,000) is then a base key and
a range of indices (:func:`phantom_keys`), generated batch by batch and never stored.

Geometry (mm, relative to the grid centre; pixel ``(i, j)`` has centre
``((i - (n-1)/2) dx, (j - (n-1)/2) dx)``, axis 0 first, as :func:`jaxspect.phantoms.voxel_centres`):

- head ellipse: semi-axes ``a ~ U(70, 90)``, ``b ~ U(56, 72)`` mm (a brain 140-180 mm long and
  112-144 mm wide), orientation ``U(0, pi)``, centre offset ``U(-6, 6)`` mm per axis;
- skull: the points at radial distance ``r_e(phi) < r <= r_e(phi) + t`` from the ellipse centre,
  ``r_e(phi)`` the ellipse's radius in direction ``phi`` and ``t ~ U(2, 4)`` mm, so the bone is
  exactly ``t`` thick along every ray from the head centre;
- high-uptake regions: ``K ~ U{1..max_regions}`` star-shaped blobs, radius
  ``r0 (1 + c2 cos(2 th + p2) + c3 cos(3 th + p3))`` around a centre drawn uniformly in the
  ellipse scaled by 0.6, ``r0 ~ U(6, 16)`` mm, ``c2, c3 ~ U(0, 0.25)``; each is clipped to the
  ellipse shrunk radially by 4 mm, so high-uptake regions are always surrounded by background;
- activity: 1 in the ellipse, ``v`` in the union of the blobs, 0 outside, sampled at pixel
  centres (the ground truth has exactly these three values); ``v = 6 + 1.5 z`` with ``z`` a
  standard normal truncated to ``[-2, 2]``, i.e. ``v`` in ``[3, 9]``;
- attenuation map (1/mm): ``mu_water * f_head + mu_bone * f_bone`` with ``f`` the area
  fractions of each pixel (``supersample x supersample`` sub-pixel samples; the skull is thinner
  than two pixels, so a pixel-centre test would make it 1 or 2 pixels wide at random).
  Coefficients from :func:`jaxspect.phantoms.linear_attenuation` at ``energy_kev`` (default
  140.5 keV, Tc-99m: water 0.01536 /mm, cortical bone 0.02845 /mm).
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._attenuation_coefficients import TC99M_KEV, linear_attenuation

__all__ = ["BrainPhantom2D", "brain_phantom_2d", "brain_phantoms_2d", "draw_uptake", "phantom_keys"]

_HEAD_A_MM = (70.0, 90.0)
_HEAD_B_MM = (56.0, 72.0)
_HEAD_OFFSET_MM = 6.0
_SKULL_MM = (2.0, 4.0)
_REGION_R0_MM = (6.0, 16.0)
_REGION_HARMONIC_MAX = 0.25
_REGION_CENTRE_FRACTION = 0.6
_REGION_MARGIN_MM = 4.0
UPTAKE_MEAN = 6.0
UPTAKE_SD = 1.5
UPTAKE_RANGE = (3.0, 9.0)


class BrainPhantom2D(eqx.Module):
    """One 2-D brain phantom (or a batch of them, with a leading batch axis on every field).

    Attributes:
        activity: ``(n, n)`` activity per pixel: 0 outside the head, 1 in the background,
            ``uptake`` in the high-uptake regions (relative units; counts come from the
            simulation's count level).
        mumap: ``(n, n)`` linear attenuation coefficients in 1/mm.
        high_uptake: ``(n, n)`` bool, pixels of the high-uptake regions.
        background: ``(n, n)`` bool, pixels of the low-uptake background (head minus regions).
        bone_fraction: ``(n, n)`` area fraction of each pixel covered by the skull, in [0, 1].
        uptake: ``()`` activity of the high-uptake regions, in [3, 9].
        skull_thickness: ``()`` radial thickness of the skull in mm, in [2, 4].
        centre: ``(2,)`` head-ellipse centre in mm (axis 0, axis 1) from the grid centre.
        semi_axes: ``(2,)`` head-ellipse semi-axes ``(a, b)`` in mm.
        orientation: ``()`` angle of the ``a`` axis from image axis 0, radians.
    """

    activity: Float[Array, "*b n n"]
    mumap: Float[Array, "*b n n"]
    high_uptake: Bool[Array, "*b n n"]
    background: Bool[Array, "*b n n"]
    bone_fraction: Float[Array, "*b n n"]
    uptake: Float[Array, "*b"]
    skull_thickness: Float[Array, "*b"]
    centre: Float[Array, "*b 2"]
    semi_axes: Float[Array, "*b 2"]
    orientation: Float[Array, "*b"]


def draw_uptake(key: PRNGKeyArray, dtype=None) -> Float[Array, ""]:
    """The high-uptake activity of one phantom: ``6 + 1.5 z``, ``z`` a standard normal truncated
    to ``[-2, 2]``, so in ``[3, 9]`` with mean 6 and standard deviation ``1.5 * 0.880 = 1.32``."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    z = jax.random.truncated_normal(key, -2.0, 2.0, (), dtype)
    return jnp.clip(UPTAKE_MEAN + UPTAKE_SD * z, *UPTAKE_RANGE)


def _check_options(size, pixel_size, max_regions, supersample):
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise ValueError(f"size must be an integer >= 8 (pixels per side), got {size!r}")
    if not (isinstance(pixel_size, (int, float)) and math.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size must be a positive number of mm, got {pixel_size!r}")
    if not isinstance(max_regions, int) or max_regions < 1:
        raise ValueError(f"max_regions must be a positive integer, got {max_regions!r}")
    if not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
    half_fov = size * pixel_size / 2
    reach = _HEAD_A_MM[1] + _SKULL_MM[1] + math.sqrt(2) * _HEAD_OFFSET_MM
    if reach > half_fov:
        raise ValueError(
            f"size * pixel_size = {2 * half_fov:g} mm is too small a field of view for the head "
            f"(needs >= {2 * reach:.0f} mm, e.g. 128 pixels of 2 mm)"
        )


def _head_coordinates(x, y, centre, cos_o, sin_o, a, b):
    """``(r, q)``: distance from the head centre (mm) and ``q = sqrt((u/a)^2 + (v/b)^2)``.

    The ellipse is ``q <= 1``; its radius in the direction of a point is ``r / q``.
    """
    dx, dy = x - centre[0], y - centre[1]
    u = cos_o * dx + sin_o * dy
    v = -sin_o * dx + cos_o * dy
    return jnp.sqrt(dx**2 + dy**2), jnp.sqrt((u / a) ** 2 + (v / b) ** 2)


def brain_phantom_2d(
    key: PRNGKeyArray,
    *,
    size: int = 128,
    pixel_size: float = 2.0,
    energy_kev: float = TC99M_KEV,
    uptake: float | Float[Array, ""] | None = None,
    max_regions: int = 4,
    supersample: int = 4,
    dtype=None,
) -> BrainPhantom2D:
    """A random 2-D brain phantom, a pure function of ``key`` (``jit``/``vmap`` friendly).

    Arguments:
        key: ``jax.random`` key; the same key always gives the same phantom.
        size: pixels per side (default 128, the paper's).
        pixel_size: pixel side in mm (default 2, the paper's). ``size * pixel_size`` must hold
            the largest head (>= 206 mm).
        energy_kev: photon energy for the attenuation coefficients (default 140.5 keV, Tc-99m).
        uptake: fix the high-uptake activity (e.g. 4, 5, 6, 7, 9 for the paper's Table 1)
            instead of drawing it; must lie in [3, 9]. May be a traced scalar.
        max_regions: most high-uptake regions (1..max_regions, uniformly).
        supersample: sub-pixel samples per axis for the attenuation map's area fractions.
        dtype: float dtype (default: JAX's default float).

    Returns:
        A :class:`BrainPhantom2D` (see the module docstring for the distributions).
    """
    _check_options(size, pixel_size, max_regions, supersample)
    mu_water = linear_attenuation("water", energy_kev)
    mu_bone = linear_attenuation("bone", energy_kev)
    dtype = jnp.result_type(float) if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    if uptake is not None and not isinstance(uptake, jax.core.Tracer):
        u = float(uptake)
        if not UPTAKE_RANGE[0] <= u <= UPTAKE_RANGE[1]:
            raise ValueError(f"uptake must lie in [{UPTAKE_RANGE[0]:g}, {UPTAKE_RANGE[1]:g}], got {uptake!r}")
    fixed = uptake is not None
    uptake = jnp.asarray(0.0 if uptake is None else uptake, dtype)
    return _phantom(key, uptake, fixed=fixed, size=size, pixel_size=float(pixel_size), mu_water=mu_water,
                    mu_bone=mu_bone, max_regions=max_regions, supersample=supersample, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("fixed", "size", "pixel_size", "mu_water", "mu_bone", "max_regions",
                                             "supersample", "dtype"))
def _phantom(key, uptake, *, fixed, size, pixel_size, mu_water, mu_bone, max_regions, supersample, dtype):
    keys = jax.random.split(key, 10)
    unif = lambda k, lo, hi, shape=(): jax.random.uniform(k, shape, dtype, lo, hi)
    a = unif(keys[0], *_HEAD_A_MM)
    b = unif(keys[1], *_HEAD_B_MM)
    orientation = unif(keys[2], 0.0, math.pi)
    centre = unif(keys[3], -_HEAD_OFFSET_MM, _HEAD_OFFSET_MM, (2,))
    thickness = unif(keys[4], *_SKULL_MM)
    value = uptake if fixed else draw_uptake(keys[5], dtype)
    value = jnp.clip(value, *UPTAKE_RANGE)
    n_regions = jax.random.randint(keys[6], (), 1, max_regions + 1)
    cos_o, sin_o = jnp.cos(orientation), jnp.sin(orientation)

    # Region centres: uniform in the ellipse scaled by 0.6 (polar sampling in the ellipse frame).
    rho = _REGION_CENTRE_FRACTION * jnp.sqrt(unif(keys[7], 0.0, 1.0, (max_regions,)))
    ang = unif(keys[8], 0.0, 2 * math.pi, (max_regions,))
    cu, cv = rho * a * jnp.cos(ang), rho * b * jnp.sin(ang)
    region_centres = centre + jnp.stack([cos_o * cu - sin_o * cv, sin_o * cu + cos_o * cv], axis=-1)
    shape_keys = jax.random.split(keys[9], 4)
    r0 = unif(shape_keys[0], *_REGION_R0_MM, (max_regions,))
    harmonics = unif(shape_keys[1], 0.0, _REGION_HARMONIC_MAX, (max_regions, 2))
    phases = unif(shape_keys[2], 0.0, 2 * math.pi, (max_regions, 2))
    active = jnp.arange(max_regions) < n_regions

    # Pixel centres (mm).
    coords = (jnp.arange(size, dtype=dtype) - (size - 1) / 2) * pixel_size
    x, y = coords[:, None], coords[None, :]
    r, q = _head_coordinates(x, y, centre, cos_o, sin_o, a, b)
    head = q <= 1
    radius_to_edge = r / jnp.maximum(q, 1e-12)  # the ellipse's radius in this direction
    inner = r <= radius_to_edge - _REGION_MARGIN_MM

    def blob(c, r0_k, h, p):
        dx, dy = x - c[0], y - c[1]
        th = jnp.arctan2(dy, dx)
        edge = r0_k * (1 + h[0] * jnp.cos(2 * th + p[0]) + h[1] * jnp.cos(3 * th + p[1]))
        return dx**2 + dy**2 <= edge**2

    blobs = jax.vmap(blob)(region_centres, r0, harmonics, phases) & active[:, None, None]
    high = jnp.any(blobs, axis=0) & inner & head
    activity = jnp.where(high, value, jnp.where(head, 1.0, 0.0)).astype(dtype)

    # Attenuation map from area fractions (supersample x supersample samples per pixel).
    s = supersample
    sub = (jnp.arange(s, dtype=dtype) + 0.5) / s - 0.5
    fine = (coords[:, None] + sub[None, :] * pixel_size).reshape(-1)
    rf, qf = _head_coordinates(fine[:, None], fine[None, :], centre, cos_o, sin_o, a, b)
    head_f = qf <= 1
    bone_f = (~head_f) & (rf * (1 - 1 / jnp.maximum(qf, 1e-12)) <= thickness)
    pool = lambda m: m.astype(dtype).reshape(size, s, size, s).mean(axis=(1, 3))
    head_fraction, bone_fraction = pool(head_f), pool(bone_f)
    mumap = (mu_water * head_fraction + mu_bone * bone_fraction).astype(dtype)

    return BrainPhantom2D(
        activity=activity,
        mumap=mumap,
        high_uptake=high,
        background=head & ~high,
        bone_fraction=bone_fraction,
        uptake=value,
        skull_thickness=thickness,
        centre=centre,
        semi_axes=jnp.stack([a, b]),
        orientation=orientation,
    )


def phantom_keys(key: PRNGKeyArray, indices) -> PRNGKeyArray:
    """Keys of phantoms ``indices`` (1-D integers) of the data set seeded by ``key``:
    ``fold_in(key, i)``, so phantom ``i`` is the same whichever batch it is generated in."""
    indices = jnp.asarray(indices)
    if indices.ndim != 1 or not jnp.issubdtype(indices.dtype, jnp.integer):
        raise ValueError(f"indices must be a 1-D integer array, got {indices.dtype} of shape {indices.shape}")
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)


def brain_phantoms_2d(keys: PRNGKeyArray, **options) -> BrainPhantom2D:
    """A batch of phantoms, one per key of ``keys`` (shape ``(B,)``), jit-compiled and vmapped.

    ``options`` are those of :func:`brain_phantom_2d` (static; ``uptake`` may also be a
    ``(B,)`` array of fixed uptakes). Every field gets a leading batch axis ``B``.
    """
    if not (jnp.ndim(keys) == 1 or (jnp.ndim(keys) == 2 and keys.dtype == jnp.uint32)):
        raise ValueError(f"keys must be a 1-D batch of PRNG keys, got shape {jnp.shape(keys)}")
    uptake = options.pop("uptake", None)
    if uptake is not None:
        uptake = jnp.asarray(uptake)
        if uptake.ndim not in (0, 1) or (uptake.ndim == 1 and uptake.shape[0] != jnp.shape(keys)[0]):
            raise ValueError(f"uptake must be a scalar or have shape (B,) = ({jnp.shape(keys)[0]},), got {uptake.shape}")
        if not isinstance(uptake, jax.core.Tracer) and not bool(
            jnp.all((uptake >= UPTAKE_RANGE[0]) & (uptake <= UPTAKE_RANGE[1]))
        ):
            raise ValueError(f"uptake must lie in [{UPTAKE_RANGE[0]:g}, {UPTAKE_RANGE[1]:g}], got {uptake}")
        uptake = jnp.broadcast_to(uptake, jnp.shape(keys)[:1])
    return _phantom_batch(keys, uptake, **options)


@eqx.filter_jit
def _phantom_batch(keys, uptake, **options):
    if uptake is None:
        return jax.vmap(lambda k: brain_phantom_2d(k, **options))(keys)
    return jax.vmap(lambda k, u: brain_phantom_2d(k, uptake=u, **options))(keys, uptake)
