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


def _gather_rows(flat, rows_and_weights):
    """``out[q] = sum_k w_k[q] * flat[row_k[q]]`` for ``flat`` of shape ``(rows, nz)``; the
    ``(row_k, w_k)`` are flat arrays of in-bounds rows (weight zero where nothing is read)."""
    out = None
    for row, w in rows_and_weights:
        term = w[:, None] * flat.at[row].get(mode="promise_in_bounds")
        out = term if out is None else out + term
    return out


def _gather(volume, samples):
    """``out[q] = sum_k w_k[q] * volume[a_k[q], b_k[q]]`` (zero off the grid): a linear map.

    ``volume``: ``(rows, cols, nz)``; the samples list the outputs in order, ``rows * cols`` of
    them; the result has the volume's shape."""
    n_a, n_b, nz = volume.shape
    out = _gather_rows(volume.reshape(n_a * n_b, nz), _rows_and_weights((n_a, n_b), samples))
    return out.reshape(n_a, n_b, nz)


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


def _shift(position, centre, slope, dtype):
    """Integer part and fraction of the shear shift ``(position - centre) * slope`` (the
    shifts of the three-pass rotation, evaluated where they are needed rather than tabled)."""
    shift = (position.astype(dtype) - centre) * slope
    base = jnp.floor(shift)
    return base.astype(jnp.int32), shift - base


def _tent(k, frac):
    """Weight of tap ``k`` (0 or 1, an array broadcasting against ``frac``) of a linear
    interpolation at fraction ``frac``."""
    return jnp.where(k == 0, 1 - frac, frac)


def _quarter_turn_matrix(m):
    """Integer ``A`` of ``numpy.rot90(v, m)``: ``out[q] = v[c + A (q - c)]`` about the centre,
    ``A = [[cos, sin], [-sin, cos]]`` of ``m`` quarter turns."""
    cos_m, sin_m = _cos_sin_quarter(m, jnp.int32)
    return cos_m, sin_m, -sin_m, cos_m


def _apart(x, fn, *args):
    """``fn(*args)``, on CPU computed on its own (a conditional on finite ``x``, always true)
    so that XLA cannot fuse it into its consumer. Used for the two stages of the three-pass
    rotation's taps: fused into the gathers (or into each other), XLA CPU recomputes the
    whole index chain, and the angle's trigonometry, for every output (measured 2-4x slower);
    it drops ``lax.optimization_barrier`` before fusion. Elsewhere plain: a conditional on a
    GPU waits for the predicate on the host."""
    out = jax.eval_shape(fn, *args)
    zeros = lambda *a: jax.tree_util.tree_map(lambda o: jnp.zeros(o.shape, o.dtype), out)
    on_cpu = lambda x, *a: lax.cond(jnp.isfinite(x), fn, zeros, *a)
    return lax.platform_dependent(x, *args, cpu=on_cpu, default=lambda x, *a: fn(*a))


def _three_pass_coefficients(n: int, angle, dtype):
    """Per-angle scalars of the three-pass taps (:func:`_three_pass_pairs`): the shear
    slopes ``(tan(phi/2), -sin(phi))`` and the integer affine maps between the turned padded grid and the volume's
    pixels ``(a11, a12, a21, a22, i0, j0, a0_0, b1_0)`` (see there)."""
    m, phi = _quarter_turns(jnp.asarray(angle, dtype))
    pad = three_pass_padding(n)
    twice_c = n + 2 * pad - 1  # 2c on the padded grid
    a11, a12, a21, a22 = _quarter_turn_matrix(m)
    # Turned grid -> volume: (i, j) = A ((a0, b1 + pad) - c) + c - pad; back: A' = A^T. Each
    # row and column of A has one non-zero entry, so the offsets are integers.
    i0 = (twice_c - (a11 + a12) * twice_c) // 2 - pad + a12 * pad
    j0 = (twice_c - (a21 + a22) * twice_c) // 2 - pad + a22 * pad
    a0_0 = (twice_c - (a11 + a21) * twice_c) // 2 + (a11 + a21) * pad
    b1_0 = (twice_c - (a12 + a22) * twice_c) // 2 + (a12 + a22 - 1) * pad
    slopes = jnp.stack([jnp.tan(phi / 2), -jnp.sin(phi)])
    return slopes, jnp.stack([a11, a12, a21, a22, i0, j0, a0_0, b1_0])


def _three_pass_pairs(n: int, coefficients, depth_major: bool, adjoint: bool):
    """The first two steps of the tap chain of the three-pass rotation (or its transpose) of
    an ``n x n`` slice: ``(outer, inner, weight)``, of shapes ``(2, 1, n, n)``, ``(2, 2, n, n)``
    and ``(2, 2, n, n)`` (the first and second steps' taps, then the output pixel), from which
    :func:`_three_pass_last_step` makes the 8 taps.

    The rotation is defined on the zero-padded ``p x p`` grid (``p = n + 2 pad``,
    :func:`three_pass_padding`): turn by ``m`` quarter turns, shear along x by
    ``t(b) = (b - c) tan(phi/2)`` per column, along y by ``s(a) = -(a - c) sin(phi)`` per row,
    along x by ``t`` again, crop the centre ``n x n``; each shear a 2-tap linear interpolation.
    Output ``(a, b)`` reads ``a1 = a + pad + t(b) + k3`` of the second shear's result, which
    reads column ``b1 = b + s(a1) + k2`` of the first's, which reads row
    ``a0 = a1 + t(b1) + k1`` of the turned grid: 8 taps, weighted by the product of the three
    interpolation weights, zero where an intermediate index leaves its grid (there the
    padding is zero). The transpose walks the same chain backwards from ``(a0, b1)``, with the
    same weights. The pairs hold the first two steps' indices (``a1, b1`` forward, ``a1, b``
    back) and the product of their weights; the last step's shift ``t(inner)`` is
    recomputed from ``inner`` rather than stored. The taps are array axes rather than a
    Python loop: XLA CPU then computes each quantity in one loop over all taps instead of one
    small loop per tap (each with its fixed cost). Measured per view at ``n = 128``: 0.10 ms
    for both stages, against 0.18 ms with a loop over taps and five stored arrays.
    ``depth_major``: the rotated side is laid out ``(b, a)``.
    ``coefficients``: :func:`_three_pass_coefficients`.
    """
    (tan_half, minus_sin), (a11, a12, a21, a22, i0, j0, a0_0, b1_0) = coefficients
    dtype = tan_half.dtype
    pad = three_pass_padding(n)
    p = n + 2 * pad
    t = lambda pos: _shift(pos, (n - 1) / 2, tan_half, dtype)  # columns, crop coordinates
    s = lambda pos: _shift(pos, (p - 1) / 2, minus_sin, dtype)  # rows of the padded grid
    inside = lambda v, lo, hi: (v >= lo) & (v < hi)
    first = jnp.arange(2).reshape(2, 1, 1, 1)  # the first step's tap (k3 forward, k1 back)
    second = jnp.arange(2).reshape(1, 2, 1, 1)  # the second step's (k2)
    if not adjoint:
        a = lax.broadcasted_iota(jnp.int32, (n, n), 1 if depth_major else 0)
        b = lax.broadcasted_iota(jnp.int32, (n, n), 0 if depth_major else 1)
        t_base, t_frac = t(b)
        a1 = a + pad + t_base + first
        s_base, s_frac = s(a1)
        b1 = b + s_base + second
        ok = inside(a1, 0, p) & inside(b1, 0, n)
        weight = jnp.where(ok, _tent(first, t_frac) * _tent(second, s_frac), 0)
        return a1, jnp.clip(b1, 0, n - 1), weight
    # Transpose: pixel (i, j) of the volume is (a0, b1 + pad) of the turned grid.
    i = lax.broadcasted_iota(jnp.int32, (n, n), 0)
    j = lax.broadcasted_iota(jnp.int32, (n, n), 1)
    a0 = a0_0 + a11 * i + a21 * j
    b1 = b1_0 + a12 * i + a22 * j
    t1_base, t1_frac = t(b1)
    a1 = a0 - t1_base - first
    s_base, s_frac = s(a1)
    b = b1 - s_base - second
    ok = inside(a1, 0, p) & inside(b, 0, n)
    weight = jnp.where(ok, _tent(first, t1_frac) * _tent(second, s_frac), 0)
    return a1, jnp.clip(b, 0, n - 1), weight


def _three_pass_last_step(n: int, coefficients, pairs, depth_major: bool, adjoint: bool):
    """The 8 taps ``(rows, weights)``, each ``(8, n * n)`` in the order ``(k3, k2, k1)``
    forward (``(k1, k2, k3)`` back), from the pairs of :func:`_three_pass_pairs`: the chain's
    last step, and the row of the flattened input it reads."""
    (tan_half, _), (a11, a12, a21, a22, i0, j0, _, _) = coefficients
    pad = three_pass_padding(n)
    outer, inner, weight = (q[:, :, None] for q in pairs)
    base, frac = _shift(inner, (n - 1) / 2, tan_half, tan_half.dtype)
    k = jnp.arange(2).reshape(1, 1, 2, 1, 1)
    if adjoint:  # outer a1, inner b: output row a of the rotated image
        a = outer - pad - base - k
        ok = (a >= 0) & (a < n)
        a = jnp.clip(a, 0, n - 1)
        row = inner * n + a if depth_major else a * n + inner
    else:  # outer a1, inner b1: row a0 of the turned grid, pixel (i, j) of the volume
        a0 = outer + base + k
        ok = (a0 >= pad) & (a0 < pad + n)
        a0 = jnp.clip(a0, pad, pad + n - 1)
        row = (i0 * n + j0) + (a11 * n + a21) * a0 + (a12 * n + a22) * inner  # (i, j) -> i n + j
    return row.reshape(8, n * n), jnp.where(ok, weight * _tent(k, frac), 0).reshape(8, n * n)


def _three_pass(volumes, angle, depth_major, adjoint):
    """The three-pass rotation (or its exact transpose) of each ``(n, n, nz)`` volume in the
    tuple ``volumes``: one 8-tap gather each (measured faster than two gathers of 4 and 2
    taps with an intermediate image), with the taps computed first, once for all volumes, in
    two stages (:func:`_three_pass_pairs`, :func:`_three_pass_last_step`) so that no step of
    the chain is recomputed per tap."""
    n = volumes[0].shape[0]
    dtype = volumes[0].dtype
    angle = jnp.asarray(angle, dtype)
    coefficients = _three_pass_coefficients(n, angle, dtype)
    pairs = _apart(angle, lambda c: _three_pass_pairs(n, c, depth_major, adjoint), coefficients)
    rows, weights = _apart(angle, lambda c, q: _three_pass_last_step(n, c, q, depth_major, adjoint), coefficients, pairs)
    taps = [(rows[k], weights[k]) for k in range(8)]
    return tuple(_gather_rows(v.reshape(n * n, v.shape[2]), taps).reshape(v.shape) for v in volumes)


def _check_square(volume):
    """The volumes of one rotation (an array, or a tuple of arrays rotated together):
    ``(n, n, nz)`` each, one ``n`` and one dtype for all."""
    if not isinstance(volume, tuple):
        if volume.ndim != 3 or volume.shape[0] != volume.shape[1]:
            raise ValueError(f"rotation needs a volume of shape (n, n, nz), got {volume.shape}")
        return (volume,)
    shapes = [v.shape for v in volume]
    if any(len(s) != 3 or s[:2] != shapes[0][:2] or s[0] != s[1] for s in shapes):
        raise ValueError(f"volumes rotated together need shapes (n, n, nz) with one n, got {shapes}")
    if len({v.dtype for v in volume}) > 1:
        raise ValueError(f"volumes rotated together need one dtype, got {[v.dtype for v in volume]}")
    return volume


def _rotate_impl(volume, angle, method, depth_major=False):
    """Rotated volume ``out[i, j, k]``; with ``depth_major``, laid out as ``out[j, i, k]``.
    ``volume`` may be a tuple of volumes rotated together (the three-pass taps are computed
    once for all); the result has the same structure."""
    volumes = _check_square(volume)
    n = volumes[0].shape[0]
    angle = jnp.asarray(angle, volumes[0].dtype)
    if method == "bilinear":
        out = tuple(_gather(v, _bilinear_samples(n, angle, v.dtype, depth_major)) for v in volumes)
    else:
        out = _three_pass(volumes, angle, depth_major, adjoint=False)
    return out if isinstance(volume, tuple) else out[0]


def _rotate_adjoint_impl(image, angle, method, depth_major=False):
    """Exact transpose of :func:`_rotate_impl` (``image`` in its output layout, or a tuple)."""
    images = _check_square(image)
    angle = jnp.asarray(angle, images[0].dtype)
    if method == "bilinear":
        out = tuple(_bilinear_adjoint(v, angle, depth_major) for v in images)
    else:
        out = _three_pass(images, angle, depth_major, adjoint=True)
    return out if isinstance(image, tuple) else out[0]


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
    volumes = _check_square(volume)
    angle = jnp.asarray(angle, volumes[0].dtype)
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
