"""In-plane image rotation about the z axis: 2-D bilinear and three-pass 1-D linear (shears).

Both methods implement the same map, for every z-slice of a square volume ``(n, n, nz)``
with rotation centre ``c = (n - 1) / 2`` (0-based, between pixels when ``n`` is even)::

    out[i, j] = in[c + cos(t) (i - c) + sin(t) (j - c),  c - sin(t) (i - c) + cos(t) (j - c)]

i.e. ``out(q) = in(c + R(-t) (q - c))`` with ``R(t) = [[cos t, -sin t], [sin t, cos t]]``:
the content turns from the +i axis toward the +j axis, the SPECTrecon.jl convention.
Samples that fall outside the grid read zero (zero boundary); nothing inside the inscribed
circle is ever lost.

Both rotations are linear in the volume and written with gathers. Their exact adjoints are
gathers too: the transposed shears are shears back by the same integer shifts with the same
weights, and the bilinear transpose "pulls" each input pixel's contributions with the forward
rotation's own weights (scatter-adds, which is what autodiff would produce, are several times
slower on CPU). There is no approximate "rotate by -t" anywhere; tests compare with dense
transposes and with JAX's autodiff transpose.

Angles within ``SNAP_TOLERANCE`` radians of a multiple of 90 degrees are snapped to it, so
that such rotations are exact permutations (float32 angles such as ``2*pi*32/128`` are
otherwise off by ~1e-7 rad, which makes every pixel a blend).
"""

from __future__ import annotations

import math
from typing import Literal

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from ._linear import AbstractLinearMap, linear_apply

RotationMethod = Literal["bilinear", "three_pass"]
ROTATION_METHODS: tuple[str, ...] = ("bilinear", "three_pass")

SNAP_TOLERANCE = 1e-5
"""Angles this close (radians) to a multiple of pi/2 are rotated as exact 90-degree turns."""


def three_pass_padding(n: int) -> int:
    """Zero padding per side for the three-pass rotation of an ``n x n`` slice.

    ``ceil(1 + n*sqrt(2)/2 - n/2)``, as in SPECTrecon.jl: large enough that the intermediate
    shears never push content of the inscribed circle off the padded grid.
    """
    return math.ceil(1 + n * math.sqrt(2) / 2 - n / 2)


def _quarter_turns(angle):
    """Split ``angle`` into ``m * pi/2 + phi`` with ``m in {0,1,2,3}``, ``|phi| <= pi/4``,
    and ``phi`` snapped to exactly zero within ``SNAP_TOLERANCE``."""
    half_pi = jnp.asarray(jnp.pi / 2, angle.dtype)
    turns = jnp.floor(angle / half_pi + 0.5)
    phi = angle - turns * half_pi
    phi = jnp.where(jnp.abs(phi) < SNAP_TOLERANCE, jnp.zeros_like(phi), phi)
    m = jnp.mod(turns, 4).astype(jnp.int32)
    return m, phi


def _cos_sin(angle):
    """cos and sin of ``angle``, exact (0, +-1) within ``SNAP_TOLERANCE`` of a quarter turn."""
    m, phi = _quarter_turns(angle)
    c_phi, s_phi = jnp.cos(phi), jnp.sin(phi)
    # Rotate (cos phi, sin phi) by m quarter turns: exact when phi == 0.
    cos_m = jnp.array([1, 0, -1, 0], angle.dtype)[m]
    sin_m = jnp.array([0, 1, 0, -1], angle.dtype)[m]
    return cos_m * c_phi - sin_m * s_phi, sin_m * c_phi + cos_m * s_phi


def _bilinear_samples(n: int, angle, dtype, depth_major: bool = False):
    """Flattened ``(a, b, weight)`` source samples of the bilinear rotation of an ``n x n`` grid,
    listed in output order ``(i, j)``, or ``(j, i)`` when ``depth_major``."""
    cos_t, sin_t = _cos_sin(angle)
    centre = (n - 1) / 2
    q = jnp.arange(n, dtype=dtype) - centre
    qi, qj = (q[None, :], q[:, None]) if depth_major else (q[:, None], q[None, :])
    src_i = (centre + cos_t * qi + sin_t * qj).reshape(-1)
    src_j = (centre - sin_t * qi + cos_t * qj).reshape(-1)
    i0f, j0f = jnp.floor(src_i), jnp.floor(src_j)
    fi, fj = src_i - i0f, src_j - j0f
    i0, j0 = i0f.astype(jnp.int32), j0f.astype(jnp.int32)
    return [
        (i0 + di, j0 + dj, wi * wj)
        for di, wi in ((0, 1 - fi), (1, fi))
        for dj, wj in ((0, 1 - fj), (1, fj))
    ]


def _rows_and_weights(n: int, samples):
    """Flat row indices and weights of ``samples``; off-grid samples are clamped to a nearby
    edge pixel and get weight zero."""
    out = []
    for a, b, weight in samples:
        inside = (a >= 0) & (a < n) & (b >= 0) & (b < n)
        w = jnp.where(inside, weight, jnp.zeros_like(weight))
        out.append((jnp.clip(a, 0, n - 1) * n + jnp.clip(b, 0, n - 1), w))
    return out


def _gather(volume, samples):
    """``out[q] = sum_k w_k[q] * volume[a_k[q], b_k[q]]`` (zero off the grid): a linear map."""
    n, _, nz = volume.shape
    flat = volume.reshape(n * n, nz)
    out = None
    for row, w in _rows_and_weights(n, samples):
        term = w[:, None] * flat.at[row].get(mode="promise_in_bounds")
        out = term if out is None else out + term
    return out.reshape(n, n, nz)


def _bilinear_adjoint(image, angle, depth_major: bool):
    """Exact transpose of the bilinear rotation, written as a gather ("pull") rather than a
    scatter-add, which XLA runs several times slower on CPU.

    Input pixel ``p`` was read by the outputs ``q`` whose sample point
    ``s(q) = c + R(-t)(q - c)`` lies within one pixel of ``p`` (per axis), with weight
    ``tent(s_i(q) - p_i) * tent(s_j(q) - p_j)``. Those ``q`` lie in a 2 x 2 square rotated about
    ``q* = c + R(t)(p - c)``, inside a 3 x 3 block of candidates; ``s(q)`` is computed with the
    forward rotation's own expression, so the weights are the forward's.
    """
    n, _, nz = image.shape
    dtype = image.dtype
    cos_t, sin_t = _cos_sin(angle)
    centre = (n - 1) / 2
    offsets = jnp.arange(n, dtype=dtype) - centre
    pi, pj = offsets[:, None], offsets[None, :]
    star_i = centre + cos_t * pi - sin_t * pj
    star_j = centre + sin_t * pi + cos_t * pj
    reach = jnp.abs(cos_t) + jnp.abs(sin_t)  # half-width of the rotated square's bounding box
    base_i = (jnp.floor(star_i - reach) + 1).astype(jnp.int32)
    base_j = (jnp.floor(star_j - reach) + 1).astype(jnp.int32)
    flat = image.reshape(n * n, nz)
    out = None
    for di in range(3):
        for dj in range(3):
            qa, qb = base_i + di, base_j + dj
            qi = qa.astype(dtype) - centre
            qj = qb.astype(dtype) - centre
            src_i = centre + cos_t * qi + sin_t * qj
            src_j = centre - sin_t * qi + cos_t * qj
            weight = jnp.maximum(1 - jnp.abs(src_i - (pi + centre)), 0) * jnp.maximum(
                1 - jnp.abs(src_j - (pj + centre)), 0
            )
            inside = (qa >= 0) & (qa < n) & (qb >= 0) & (qb < n)
            weight = jnp.where(inside, weight, 0).reshape(-1)
            qa, qb = jnp.clip(qa, 0, n - 1), jnp.clip(qb, 0, n - 1)
            row = (qb * n + qa if depth_major else qa * n + qb).reshape(-1)
            term = weight[:, None] * flat.at[row].get(mode="promise_in_bounds")
            out = term if out is None else out + term
    return out.reshape(n, n, nz)


def _shear_samples(p: int, shift_axis: int, shifts, adjoint: bool):
    """Samples of the linear-interpolation shear ``out[a, b] = in[a + shifts[b], b]``
    (``shift_axis=0``) or ``out[a, b] = in[a, b + shifts[a]]`` (``shift_axis=1``).

    With ``adjoint=True``, the samples of its exact transpose, which is again a gather: each
    column is translated back by the same integer shift with the same two weights.
    """
    base = jnp.floor(shifts)
    frac = shifts - base
    base = base.astype(jnp.int32)
    idx = jnp.arange(p, dtype=jnp.int32)
    sign = -1 if adjoint else 1
    if shift_axis == 0:
        moving = lambda k: (idx[:, None] + sign * (base[None, :] + k)).reshape(-1)
        fixed = jnp.broadcast_to(idx[None, :], (p, p)).reshape(-1)
        f = jnp.broadcast_to(frac[None, :], (p, p)).reshape(-1)
        return [(moving(0), fixed, 1 - f), (moving(1), fixed, f)]
    moving = lambda k: (idx[None, :] + sign * (base[:, None] + k)).reshape(-1)
    fixed = jnp.broadcast_to(idx[:, None], (p, p)).reshape(-1)
    f = jnp.broadcast_to(frac[:, None], (p, p)).reshape(-1)
    return [(fixed, moving(0), 1 - f), (fixed, moving(1), f)]


def _three_pass_shears(p: int, phi, dtype):
    """(axis, shifts) of the x, y, x shears whose product is ``R(-phi)`` on a ``p x p`` grid."""
    offsets = jnp.arange(p, dtype=dtype) - (p - 1) / 2
    t = offsets * jnp.tan(phi / 2)
    s = offsets * -jnp.sin(phi)
    return [(0, t), (1, s), (0, t)]


def _rot90(volume, m):
    """``numpy.rot90(volume, m, axes=(0, 1))`` for a traced ``m`` in {0, 1, 2, 3}."""
    return lax.switch(m, [lambda v, k=k: jnp.rot90(v, k, axes=(0, 1)) for k in range(4)], volume)


def _check_square(volume):
    if volume.ndim != 3 or volume.shape[0] != volume.shape[1]:
        raise ValueError(f"rotation needs a volume of shape (n, n, nz), got {volume.shape}")


def _rotate_impl(volume, angle, method, depth_major=False):
    """Rotated volume ``out[i, j, k]``; with ``depth_major``, laid out as ``out[j, i, k]``."""
    _check_square(volume)
    n = volume.shape[0]
    angle = jnp.asarray(angle, volume.dtype)
    if method == "bilinear":
        return _gather(volume, _bilinear_samples(n, angle, volume.dtype, depth_major))
    m, phi = _quarter_turns(angle)
    pad = three_pass_padding(n)
    work = _rot90(jnp.pad(volume, ((pad, pad), (pad, pad), (0, 0))), m)
    for axis, shifts in _three_pass_shears(n + 2 * pad, phi, volume.dtype):
        work = _gather(work, _shear_samples(n + 2 * pad, axis, shifts, adjoint=False))
    out = work[pad : pad + n, pad : pad + n, :]
    return jnp.swapaxes(out, 0, 1) if depth_major else out


def _rotate_adjoint_impl(image, angle, method, depth_major=False):
    """Exact transpose of :func:`_rotate_impl` (``image`` in its output layout)."""
    _check_square(image)
    n = image.shape[0]
    angle = jnp.asarray(angle, image.dtype)
    if method == "bilinear":
        return _bilinear_adjoint(image, angle, depth_major)
    if depth_major:
        image = jnp.swapaxes(image, 0, 1)
    m, phi = _quarter_turns(angle)
    pad = three_pass_padding(n)
    work = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    for axis, shifts in reversed(_three_pass_shears(n + 2 * pad, phi, image.dtype)):
        work = _gather(work, _shear_samples(n + 2 * pad, axis, shifts, adjoint=True))
    work = _rot90(work, (4 - m) % 4)
    return work[pad : pad + n, pad : pad + n, :]


def _check_method(method):
    if method not in ROTATION_METHODS:
        raise ValueError(f"rotation must be one of {ROTATION_METHODS}, got {method!r}")


class _Rotation(AbstractLinearMap):
    """The rotation (``adjoint=False``) or its exact transpose, linear in the volume; the
    residual is the angle (its derivative differentiates the interpolation weights)."""

    method: str = eqx.field(static=True)
    depth_major: bool = eqx.field(static=True)
    adjoint: bool = eqx.field(static=True)

    def apply(self, angle, volume):
        fn = _rotate_adjoint_impl if self.adjoint else _rotate_impl
        return fn(volume, angle, self.method, self.depth_major)

    def transpose(self):
        return _Rotation(self.method, self.depth_major, not self.adjoint)


def _rotate(volume, angle, method, depth_major=False, adjoint=False):
    """:func:`_rotate_impl` (or, with ``adjoint``, its transpose) as a linear map whose transpose
    is the other one: every JAX transformation sees the exact gather-based pair."""
    _check_square(volume)
    angle = jnp.asarray(angle, volume.dtype)
    return linear_apply(_Rotation(method, bool(depth_major), bool(adjoint)), angle, volume)


def rotate(
    volume: Float[Array, "n n nz"], angle, method: RotationMethod = "bilinear"
) -> Float[Array, "n n nz"]:
    """Rotate every z-slice of ``volume`` (shape ``(n, n, nz)``) by ``angle`` radians.

    ``method`` is ``"bilinear"`` (2-D bilinear interpolation) or ``"three_pass"`` (exact
    quarter turns, then three 1-D linear shears x, y, x by the residual angle
    ``|phi| <= pi/4`` with ``t = tan(phi/2)``, ``s = -sin(phi)``, on a zero-padded grid).
    See the module docstring for the convention. Its transpose (VJP, ``jax.linear_transpose``)
    is :func:`rotate_adjoint`; forward mode and ``vmap`` work too.
    """
    _check_method(method)
    return _rotate(volume, angle, method, False)


def rotate_adjoint(
    image: Float[Array, "n n nz"], angle, method: RotationMethod = "bilinear"
) -> Float[Array, "n n nz"]:
    """Exact adjoint (transpose) of :func:`rotate` with the same ``angle`` and ``method``.

    Not a rotation by ``-angle``: it spreads each sample back with the interpolation weights
    the forward rotation read it with.
    """
    _check_method(method)
    return _rotate(image, angle, method, adjoint=True)
