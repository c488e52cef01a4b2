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
import jax
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


def _cos_sin_quarter(m, dtype):
    """Exact cos and sin of ``m`` quarter turns (``m`` in {0, 1, 2, 3}, traced)."""
    return jnp.array([1, 0, -1, 0], dtype)[m], jnp.array([0, 1, 0, -1], dtype)[m]


def _cos_sin(angle):
    """cos and sin of ``angle``, exact (0, +-1) within ``SNAP_TOLERANCE`` of a quarter turn."""
    m, phi = _quarter_turns(angle)
    c_phi, s_phi = jnp.cos(phi), jnp.sin(phi)
    # Rotate (cos phi, sin phi) by m quarter turns: exact when phi == 0.
    cos_m, sin_m = _cos_sin_quarter(m, angle.dtype)
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


def _rows_and_weights(shape, samples):
    """Flat row indices (of a ``shape = (rows, cols)`` grid) and weights of ``samples``;
    off-grid samples are clamped to a nearby edge pixel and get weight zero."""
    n_a, n_b = shape
    out = []
    for a, b, weight in samples:
        inside = (a >= 0) & (a < n_a) & (b >= 0) & (b < n_b)
        w = jnp.where(inside, weight, jnp.zeros_like(weight))
        out.append(((jnp.clip(a, 0, n_a - 1) * n_b + jnp.clip(b, 0, n_b - 1)).reshape(-1), w.reshape(-1)))
    return out


def _gather(volume, samples, out_shape=None):
    """``out[q] = sum_k w_k[q] * volume[a_k[q], b_k[q]]`` (zero off the grid): a linear map.

    ``volume``: ``(rows, cols, nz)``; the samples' arrays share one shape, ``out_shape`` (by
    default the volume's ``(rows, cols)``); the result is ``(*out_shape, nz)``."""
    n_a, n_b, nz = volume.shape
    flat = volume.reshape(n_a * n_b, nz)
    out = None
    for row, w in _rows_and_weights((n_a, n_b), samples):
        term = w[:, None] * flat.at[row].get(mode="promise_in_bounds")
        out = term if out is None else out + term
    return out.reshape(*(out_shape or (n_a, n_b)), nz)


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


def _three_pass_shears(p: int, phi, dtype):
    """Shifts ``(t, s, t)`` of the x, y, x shears whose product is ``R(-phi)`` on a ``p x p``
    grid: ``x[a, b] <- x[a + t[b], b]``, ``x[a, b] <- x[a, b + s[a]]``, then ``t`` again."""
    offsets = jnp.arange(p, dtype=dtype) - (p - 1) / 2
    return offsets * jnp.tan(phi / 2), offsets * -jnp.sin(phi)


def _taps(shifts):
    """Integer part and the two linear-interpolation weights of fractional ``shifts``."""
    base = jnp.floor(shifts)
    frac = shifts - base
    return base.astype(jnp.int32), ((0, 1 - frac), (1, frac))


def _quarter_turn_matrix(m):
    """Integer ``A`` of ``numpy.rot90(v, m)``: ``out[q] = v[c + A (q - c)]`` about the centre,
    ``A = [[cos, sin], [-sin, cos]]`` of ``m`` quarter turns."""
    cos_m, sin_m = _cos_sin_quarter(m, jnp.int32)
    return cos_m, sin_m, -sin_m, cos_m


def _apart(x, fn, *args):
    """``fn(*args)``, on CPU computed on its own (a conditional on finite ``x``, always true)
    so that XLA cannot fuse it into its consumer. Used between the shears of the three-pass
    rotation: XLA CPU otherwise fuses the gathers into one loop that recomputes the first for
    every output (and drops ``lax.optimization_barrier`` before fusion). Elsewhere plain: a
    conditional on a GPU waits for the predicate on the host."""
    out = jax.eval_shape(fn, *args)
    zeros = lambda *a: jax.tree_util.tree_map(lambda o: jnp.zeros(o.shape, o.dtype), out)
    on_cpu = lambda x, *a: lax.cond(jnp.isfinite(x), fn, zeros, *a)
    return lax.platform_dependent(x, *args, cpu=on_cpu, default=lambda x, *a: fn(*a))


def _three_pass(volume, angle, depth_major, adjoint):
    """The three-pass rotation (or its exact transpose) of an ``(n, n, nz)`` volume.

    The rotation is defined on the zero-padded ``p x p`` grid (``p = n + 2 pad``,
    :func:`three_pass_padding`): turn by ``m`` quarter turns, shear along x (``t``), along y
    (``s``), along x (``t``), crop the centre ``n x n``. Only what can be non-zero or is read
    is computed: the first two shears on ``p x n`` (the crop's columns: in the others the
    padding stays zero) as one 4-tap gather from ``volume`` (the quarter turn and the padding
    read straight from it), the last as a 2-tap gather onto the crop. The transpose gathers
    back through the same taps in reverse order (2, then 4 taps). These two gathers measured
    faster than three separate ones or one of 8 taps. ``depth_major``: the rotated volume is
    laid out ``(j, i, k)``.
    """
    n, _, nz = volume.shape
    dtype = volume.dtype
    m, phi = _quarter_turns(jnp.asarray(angle, dtype))
    pad = three_pass_padding(n)
    p = n + 2 * pad
    t, s = _three_pass_shears(p, phi, dtype)
    base_t, taps_t = _taps(t[pad : pad + n])  # shears 1 and 3: per column of the crop
    base_s, taps_s = _taps(s)  # shear 2: per row of the p x p grid
    a11, a12, a21, a22 = _quarter_turn_matrix(m)
    twice_c = p - 1  # the quarter turn in integers: offsets from the centre c doubled
    tall = lambda x: jnp.broadcast_to(x, (p, n))  # p x n: global rows, crop columns
    square = lambda x: jnp.broadcast_to(x, (n, n))
    rows = jnp.arange(p, dtype=jnp.int32)[:, None]
    crop_rows = jnp.arange(n, dtype=jnp.int32)[:, None]
    cols = jnp.arange(n, dtype=jnp.int32)[None, :]

    if not adjoint:
        # shears 1 and 2 as one 4-tap gather from the volume: s2[a, b] = s1[a, b + s_a] with
        # s1[a, b'] = V[a + t_b', b' + pad] (zero for b' outside the crop's columns) and
        # V = rot90(pad(volume), m), that is V[q] = pad(volume)[c + A (q - c)]
        samples = []
        for k2, w2 in taps_s:
            b1 = tall(cols + base_s[:, None] + k2)
            inside = (b1 >= 0) & (b1 < n)
            b1 = jnp.clip(b1, 0, n - 1)
            for k1, w1 in taps_t:
                da, db = 2 * (rows + base_t[b1] + k1) - twice_c, 2 * (b1 + pad) - twice_c
                source_a = (twice_c + a11 * da + a12 * db) // 2 - pad
                source_b = (twice_c + a21 * da + a22 * db) // 2 - pad
                samples.append((source_a, source_b, jnp.where(inside, w2[:, None] * w1[b1], 0)))
        s2 = _apart(phi, lambda v: _gather(v, samples, (p, n)), volume)
        # shear 3 onto the crop: out[a, b] = s2[a + pad + t_b, b] (listed (b, a) when depth-major)
        samples = [(square(crop_rows + pad + base_t + k), square(cols), square(w)) for k, w in taps_t]
        if depth_major:
            samples = [tuple(x.T for x in sample) for sample in samples]
        return _gather(s2, samples, (n, n))
    # Shear 3 transposed: s2_bar[a, b] = sum_k w_k(b) y[a - pad - t_b - k, b].
    y_rows = [tall(rows - pad - base_t - k) for k, _ in taps_t]
    shear3 = [((tall(cols), r) if depth_major else (r, tall(cols))) + (tall(w),) for r, (_, w) in zip(y_rows, taps_t)]
    s2_bar = _apart(phi, lambda v: _gather(v, shear3, (p, n)), volume)
    # Shears 2 and 1 and the padded quarter turn transposed, as one 4-tap gather: pixel x sits
    # at q = c + A' (x + pad - c) of V, so x_bar[x] = sum_k w_k(b) s1_bar[q_a - t_b - k, b] with
    # b = q_b - pad, and s1_bar[a, b] = sum_k w_k(a) s2_bar[a, b - s_a - k].
    di, dj = 2 * (crop_rows + pad) - twice_c, 2 * (cols + pad) - twice_c
    q_a = square((twice_c + a11 * di + a21 * dj) // 2)
    b = square((twice_c + a12 * di + a22 * dj) // 2 - pad)
    samples = []
    for k1, w1 in taps_t:
        a1 = q_a - base_t[b] - k1
        inside = (a1 >= 0) & (a1 < p)
        a1 = jnp.clip(a1, 0, p - 1)
        for k2, w2 in taps_s:
            samples.append((a1, b - base_s[a1] - k2, jnp.where(inside, w1[b] * w2[a1], 0)))
    return _gather(s2_bar, samples, (n, n))


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
    return _three_pass(volume, angle, depth_major, adjoint=False)


def _rotate_adjoint_impl(image, angle, method, depth_major=False):
    """Exact transpose of :func:`_rotate_impl` (``image`` in its output layout)."""
    _check_square(image)
    angle = jnp.asarray(angle, image.dtype)
    if method == "bilinear":
        return _bilinear_adjoint(image, angle, depth_major)
    return _three_pass(image, angle, depth_major, adjoint=True)


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
