"""Rotation-equivariant (steerable) voxel and pixel convolutions built on e3nn-jax primitives.

Only ``e3nn_jax``'s core is used (``Irreps``, ``IrrepsArray``, ``spherical_harmonics``,
``clebsch_gordan``, ``soft_one_hot_linspace``, ``gate``); nothing from
``e3nn_jax.experimental`` (which imports Haiku and Flax), ``e3nn.haiku``/``e3nn.flax`` or the
legacy tensor products.

Feature maps are **unbatched, channels-last** :class:`e3nn_jax.IrrepsArray` s: ``(nx, ny, nz, dim)``
for volumes, ``(nx, ny, dim)`` for images (``vmap`` for batches). Array axis ``a`` is the
coordinate axis ``a`` of e3nn's vectors (``x`` = axis 0, ``y`` = axis 1, ``z`` = axis 2); the
kernel taps sit at physical offsets ``((i - c_x) s_x, (j - c_y) s_y, (k - c_z) s_z)`` in **mm**,
``s`` the voxel (pixel) step, so anisotropic voxels are handled geometrically.

The kernel from input irrep ``a`` to output irrep ``b`` is

    K_ab(p) = sum_{l, k} R_k(|p|) C^{a, l, b} Y_l(p / |p|) W[l, k, u, w]

over the spherical-harmonic degrees ``l <= lmax`` whose parity and triangle rule allow
``a x Y_l -> b``: ``R_k`` radial functions, ``C`` Clebsch-Gordan coefficients, ``W`` the learned
weights (``u``/``w`` the input/output multiplicities). The centre tap (where ``Y_l`` is
undefined) carries only the ``l = 0`` Schur self-connection ``kron(W, I)`` between equal irreps.
The basis is a pure function of the static configuration, built once in float64 numpy and
cached (``functools.lru_cache``); it is never a module leaf, so the only leaves are the weights
and the bias, and N(0, 1) weights give unit-variance outputs for unit-variance inputs (the
basis is scaled by the fan-in of every output irrep).

Exact equivariance holds for the symmetries of the voxel lattice (90-degree rotations and axis
flips; with anisotropic steps only those that map the lattice to itself); other rotations are
approximate (the kernel is a sampled steerable filter).
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Sequence

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, PRNGKeyArray

from ._conv import conv3d

__all__ = [
    "EquivariantConv3d",
    "EquivariantConv2d",
    "Gate",
    "NormActivation",
    "EquivariantInstanceNorm",
    "gate_irreps",
]


# --------------------------------------------------------------------------------------------
# Argument checking
# --------------------------------------------------------------------------------------------


def _irreps(value, name: str) -> e3nn.Irreps:
    try:
        irreps = e3nn.Irreps(value)
    except Exception as err:  # e3nn raises ValueError/AssertionError/TypeError
        raise ValueError(f"{name} must be an irreps string such as '8x0e+4x1o+2x2e', got {value!r} ({err})") from None
    if irreps.dim == 0:
        raise ValueError(f"{name} must have at least one component, got {value!r}")
    return irreps


def _tuple(value, n: int, name: str, kind=float) -> tuple:
    if np.ndim(value) == 0:
        value = (value,) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"{name} must be a scalar or a sequence of {n} values, got {value!r}")
    try:
        out = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must hold numbers, got {value!r}") from None
    if kind is int and any(o != v for o, v in zip(out, value)):
        raise ValueError(f"{name} must hold integers, got {value!r}")
    return out


def _kernel_size(value, n: int) -> tuple[int, ...]:
    ks = _tuple(value, n, "kernel_size", int)
    if any(k < 1 or k % 2 == 0 for k in ks):
        raise ValueError(f"kernel_size must be odd and positive (a centred kernel), got {value!r}")
    return ks


def _steps(value, n: int, name: str) -> tuple[float, ...]:
    st = _tuple(value, n, name, float)
    if not all(math.isfinite(s) and s > 0 for s in st):
        raise ValueError(f"{name} must be positive, finite lengths in mm, got {value!r}")
    return st


def _as_irreps_array(x, irreps: e3nn.Irreps, spatial: int, name: str = "x") -> e3nn.IrrepsArray:
    """Wrap/check a channels-last feature map with ``spatial`` spatial axes."""
    if isinstance(x, e3nn.IrrepsArray):
        if x.irreps.simplify() != irreps.simplify():
            raise ValueError(f"{name} has irreps {x.irreps}, expected {irreps}")
        array = x.array
    else:
        array = jnp.asarray(x)
    if array.ndim != spatial + 1 or array.shape[-1] != irreps.dim:
        raise ValueError(
            f"{name} must be an unbatched channels-last array of shape ({'n, ' * spatial}{irreps.dim}) "
            f"for irreps {irreps}; got shape {tuple(array.shape)} (vmap for batches)"
        )
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {array.dtype}")
    return e3nn.IrrepsArray(irreps, array)


# --------------------------------------------------------------------------------------------
# The cached kernel basis
# --------------------------------------------------------------------------------------------


class _Path(NamedTuple):
    """One input-irrep -> output-irrep block: ``basis`` is ``(n_basis, kx, ky, kz, d_in, d_out)``
    (float64 numpy, fan-in normalised); the block's weights are ``(n_basis, mul_in, mul_out)``."""

    i_in: int
    i_out: int
    mul_in: int
    mul_out: int
    basis: np.ndarray
    offset: int  # first index of this path's weights in the flat weight vector

    @property
    def n_weights(self) -> int:
        return self.basis.shape[0] * self.mul_in * self.mul_out


def _radial_basis(r: np.ndarray, radial: str, num_radial: int | None) -> np.ndarray:
    """Radial functions ``(n_radial, *r.shape)``; function 0 is the centre indicator, the others
    vanish at ``r = 0``."""
    centre = np.isclose(r, 0.0, atol=1e-9)
    rmax = float(r.max())
    if radial == "shells":
        # One function per distinct lattice radius (shell): no cutoff problem, every tap used.
        radii = np.unique(np.round(r[~centre], 6))
        funcs = [np.isclose(np.round(r, 6), rad) for rad in radii]
    else:  # "gaussian": e3nn's smooth Gaussian basis, centres spanning (0, rmax]
        n = int(num_radial)
        values = np.asarray(
            e3nn.soft_one_hot_linspace(
                jnp.asarray(r.ravel()), start=0.0, end=rmax, number=n, basis="gaussian", cutoff=False
            )
        ).reshape(r.shape + (n,))
        funcs = [np.where(centre, 0.0, values[..., i]) for i in range(n)]
    return np.stack([centre.astype(np.float64)] + [np.asarray(f, np.float64) for f in funcs])


@functools.lru_cache(maxsize=None)
def _conv_basis(
    irreps_in: str,
    irreps_out: str,
    kernel_size: tuple[int, int, int],
    steps: tuple[float, float, float],
    lmax: int,
    radial: str,
    num_radial: int | None,
) -> tuple[tuple[_Path, ...], int]:
    """The kernel basis of an equivariant convolution: its paths and total weight count.

    Built in float64 (numpy, under ``jax.enable_x64``), cached on the static configuration.
    """
    ir_in, ir_out = e3nn.Irreps(irreps_in), e3nn.Irreps(irreps_out)
    axes = [(np.arange(k) - (k - 1) / 2) * s for k, s in zip(kernel_size, steps)]
    pos = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (kx, ky, kz, 3) mm
    r = np.linalg.norm(pos, axis=-1)
    with jax.ensure_compile_time_eval(), jax.enable_x64(True):
        radial_f = _radial_basis(r, radial, num_radial)  # (nr, kx, ky, kz)
        centre = np.isclose(r, 0.0, atol=1e-9)
        safe = np.where(centre[..., None], np.array([0.0, 0.0, 1.0]), pos)
        sh = {}
        for l in range(lmax + 1):
            y = np.asarray(
                e3nn.spherical_harmonics([l], e3nn.IrrepsArray("1o", jnp.asarray(safe, jnp.float64)), normalize=True,
                                         normalization="component").array,
                np.float64,
            )
            # Y_l is undefined at the centre: keep only Y_0 there (the self-connection).
            sh[l] = np.where(centre[..., None], 1.0 if l == 0 else 0.0, y)
    raw = {}  # (i_in, i_out) -> list of basis arrays (kx, ky, kz, d_in, d_out)
    for i_out, (_, b) in enumerate(ir_out):
        for i_in, (_, a) in enumerate(ir_in):
            blocks = []
            for l in range(lmax + 1):
                if b.p != a.p * (-1) ** l or not abs(a.l - l) <= b.l <= a.l + l:
                    continue
                cg = e3nn.clebsch_gordan(a.l, l, b.l)  # (d_a, 2l+1, d_b)
                angular = np.einsum("xyzm,imo->xyzio", sh[l], cg)
                for rk in radial_f:
                    block = rk[..., None, None] * angular
                    norm2 = float(np.sum(block**2))
                    if norm2 < 1e-12:
                        continue  # e.g. l > 0 at the centre, or a Y_l that vanishes on the taps
                    blocks.append(block * math.sqrt(b.dim / norm2))  # unit power per output comp.
            if blocks:
                raw[(i_in, i_out)] = blocks
    paths, offset = [], 0
    for i_out, (mul_b, _) in enumerate(ir_out):
        fan_in = sum(ir_in[i].mul * len(bl) for (i, o), bl in raw.items() if o == i_out)
        for (i_in, o), blocks in raw.items():
            if o != i_out:
                continue
            basis = np.stack(blocks) / math.sqrt(fan_in)
            basis.setflags(write=False)
            path = _Path(i_in, i_out, ir_in[i_in].mul, mul_b, basis, offset)
            offset += path.n_weights
            paths.append(path)
    return tuple(paths), offset


# --------------------------------------------------------------------------------------------
# Convolutions
# --------------------------------------------------------------------------------------------


def _conv_taps(x: Array, kernel: Array, precision) -> Array:
    """Channels-last "same" cross-correlation as matrix products: the taps of the last
    spatial axis become extra input channels (``k * cin + c``), then one product per tap of the
    other axes. ``x (*spatial, cin)``, ``kernel (*k, cin, cout)`` with odd ``k``."""
    n = x.ndim - 1
    ks, cin, cout = kernel.shape[:n], kernel.shape[n], kernel.shape[n + 1]
    shape = x.shape[:n]
    xp = jnp.pad(x, [(k // 2, k // 2) for k in ks] + [(0, 0)])
    last = ks[-1]
    idx = lambda k: (slice(None),) * (n - 1) + (slice(k, k + shape[-1]),)
    planes = jnp.concatenate([xp[idx(k)] for k in range(last)], axis=-1)  # (*padded[:-1], Z, last*cin)
    kk = kernel.reshape(ks[:-1] + (last * cin, cout))
    out = None
    for taps in np.ndindex(*ks[:-1]):
        window = planes[tuple(slice(t, t + s) for t, s in zip(taps, shape[:-1]))]
        term = jnp.tensordot(window, kk[taps], axes=1, precision=precision)
        out = term if out is None else out + term
    return out


class EquivariantConv3d(eqx.Module):
    """O(3)-steerable voxel convolution ``IrrepsArray (nx, ny, nz, irreps_in.dim) ->
    (nx, ny, nz, irreps_out.dim)``, "same" zero padding (see ``method`` for how it is computed).

    Arguments:
        irreps_in, irreps_out: e3nn irreps strings (e.g. ``"1x0e"``, ``"8x0e+4x1o+2x2e"``).
        kernel_size: odd int or ``(kx, ky, kz)`` taps.
        voxel_size: voxel steps ``(dx, dy, dz)`` in mm (or a scalar); anisotropic steps give a
            geometrically correct kernel (exact symmetry only for lattice-preserving operations).
        lmax: highest spherical-harmonic degree of the kernel (filter) basis.
        radial: ``"shells"`` (one radial function per distinct lattice radius; default) or
            ``"gaussian"`` (``num_radial`` smooth Gaussians from ``e3nn.soft_one_hot_linspace``
            spanning the kernel, no cutoff before the corners). Both add the centre tap.
        use_bias: a bias on every ``0e`` output (the only irrep that may carry one).
        precision: ``lax.Precision`` of the convolution (``"highest"`` avoids TF32 on GPUs).
        method: ``"taps"`` (a sum of one matrix product per in-plane tap, the last axis's taps
            folded into the channels), ``"conv"`` (``lax.conv_general_dilated``; in 3-D
            :func:`jaxspect.nn.conv3d`) or ``"auto"`` (``"taps"`` on CPU, else ``"conv"``).
            On XLA:CPU (jax 0.10.2) convolutions with tens of channels run about 25x slower
            inside ``lax.scan``/``while`` loops (as in :class:`jaxspect.recon.UnrolledEM`) than
            outside; the matrix products do not (measured: 3 layers 30 -> 30 channels on
            32x32x20, value and gradient, 0.6 s in or out of a scan vs 0.33 s outside and 8.1 s
            inside for ``"conv"``).
        dtype: parameter dtype (default: JAX's default float, float32 unless x64 is enabled).
        key: PRNG key.

    Weights are one flat N(0, 1) vector (the basis carries the fan-in scaling); the bias starts at 0.
    """

    weight: Array
    bias: Array | None
    irreps_in: str = eqx.field(static=True)
    irreps_out: str = eqx.field(static=True)
    kernel_size: tuple = eqx.field(static=True)
    voxel_size: tuple = eqx.field(static=True)
    lmax: int = eqx.field(static=True)
    radial: str = eqx.field(static=True)
    num_radial: int | None = eqx.field(static=True)
    precision: object = eqx.field(static=True)
    method: str = eqx.field(static=True)

    _spatial = 3

    def __init__(
        self,
        irreps_in,
        irreps_out,
        kernel_size: int | Sequence[int] = 3,
        *,
        voxel_size: float | Sequence[float] = 1.0,
        lmax: int = 2,
        radial: str = "shells",
        num_radial: int | None = None,
        use_bias: bool = True,
        precision=None,
        method: str = "auto",
        dtype=None,
        key: PRNGKeyArray,
    ):
        n = self._spatial
        if method not in ("auto", "taps", "conv"):
            raise ValueError(f"method must be 'auto', 'taps' or 'conv', got {method!r}")
        self.method = method
        ir_in, ir_out = _irreps(irreps_in, "irreps_in"), _irreps(irreps_out, "irreps_out")
        ks = _kernel_size(kernel_size, n)
        vs = _steps(voxel_size, n, "voxel_size" if n == 3 else "pixel_size")
        if int(lmax) != lmax or lmax < 0:
            raise ValueError(f"lmax must be a non-negative integer, got {lmax!r}")
        if radial not in ("shells", "gaussian"):
            raise ValueError(f"radial must be 'shells' or 'gaussian', got {radial!r}")
        if radial == "gaussian":
            if num_radial is None or int(num_radial) != num_radial or num_radial < 1:
                raise ValueError(f"num_radial must be a positive integer with radial='gaussian', got {num_radial!r}")
            num_radial = int(num_radial)
        else:
            num_radial = None
        self.irreps_in, self.irreps_out = str(ir_in), str(ir_out)
        self.kernel_size, self.voxel_size = ks, vs
        self.lmax, self.radial, self.num_radial = int(lmax), radial, num_radial
        self.precision = precision
        paths, n_weights = self._basis()
        covered = {p.i_out for p in paths}
        missing = [str(ir_out[i]) for i in range(len(ir_out)) if i not in covered]
        if missing:
            raise ValueError(
                f"irreps_out {ir_out}: no kernel of degree <= lmax={lmax} maps irreps_in {ir_in} to "
                f"{', '.join(missing)} (raise lmax or the kernel size)"
            )
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.weight = jax.random.normal(key, (n_weights,), dtype)  # one flat draw (fast init)
        n_scalar = ir_out.count("0e")
        self.bias = jnp.zeros((n_scalar,), dtype) if (use_bias and n_scalar) else None

    def _basis(self):
        ks = tuple(self.kernel_size) + (1,) * (3 - self._spatial)
        vs = tuple(self.voxel_size) + (1.0,) * (3 - self._spatial)
        return _conv_basis(self.irreps_in, self.irreps_out, ks, vs, self.lmax, self.radial, self.num_radial)

    @property
    def n_basis(self) -> int:
        """Number of learned kernel weights (``weight.size``)."""
        return self._basis()[1]

    def kernel(self) -> Array:
        """The dense kernel ``(kx, ky, kz, dim_in, dim_out)`` (``(kx, ky, dim_in, dim_out)`` in 2-D)
        in the weights' dtype; cache it for repeated inference."""
        paths, _ = self._basis()
        ir_in, ir_out = e3nn.Irreps(self.irreps_in), e3nn.Irreps(self.irreps_out)
        dtype = self.weight.dtype
        ks = paths[0].basis.shape[1:4]
        columns = []  # one (kx, ky, kz, dim_in, mul_out * d_out) block column per output irrep
        for i_out, mul_ir_out in enumerate(ir_out):
            rows = []
            for i_in, mul_ir_in in enumerate(ir_in):
                shape = ks + (mul_ir_in.dim, mul_ir_out.dim)
                block = None
                for p in paths:
                    if p.i_in == i_in and p.i_out == i_out:
                        w = self.weight[p.offset : p.offset + p.n_weights].reshape(p.basis.shape[0], p.mul_in, p.mul_out)
                        block = jnp.einsum("bxyzio,buw->xyzuiwo", jnp.asarray(p.basis, dtype), w).reshape(shape)
                rows.append(jnp.zeros(shape, dtype) if block is None else block)
            columns.append(jnp.concatenate(rows, axis=3))
        kernel = jnp.concatenate(columns, axis=4)
        if self._spatial == 2:
            kernel = kernel[:, :, 0]
        return kernel

    def _bias_vector(self, dtype):
        ir_out = e3nn.Irreps(self.irreps_out)
        pieces, j = [], 0
        for mul, ir in ir_out:
            if ir == e3nn.Irrep("0e"):
                pieces.append(self.bias[j : j + mul].astype(dtype))
                j += mul
            else:
                pieces.append(jnp.zeros((mul * ir.dim,), dtype))
        return jnp.concatenate(pieces)

    def __call__(self, x) -> e3nn.IrrepsArray:
        n = self._spatial
        x = _as_irreps_array(x, e3nn.Irreps(self.irreps_in), n)
        dtype = jnp.result_type(x.array.dtype, self.weight.dtype)
        kernel = self.kernel().astype(dtype)
        method = self.method
        if method == "auto":
            method = "taps" if jax.default_backend() == "cpu" else "conv"
        if method == "taps":
            y = _conv_taps(x.array.astype(dtype), kernel, self.precision)
        elif n == 3:
            # jaxspect's CPU-fast 3-D convolution (z shifts as channels of a 2-D one), channels-first
            y = conv3d(jnp.moveaxis(x.array.astype(dtype), -1, 0), jnp.transpose(kernel, (4, 3, 0, 1, 2)),
                       precision=self.precision)
            y = jnp.moveaxis(y, 0, -1)
        else:
            y = lax.conv_general_dilated(
                x.array.astype(dtype)[None], kernel, window_strides=(1, 1), padding="SAME",
                dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision,
            )[0]
        if self.bias is not None:
            y = y + self._bias_vector(dtype)
        return e3nn.IrrepsArray(self.irreps_out, y)


class EquivariantConv2d(EquivariantConv3d):
    """In-plane rotation-equivariant pixel convolution ``IrrepsArray (nx, ny, irreps_in.dim) ->
    (nx, ny, irreps_out.dim)``.

    The image is treated as a one-voxel-thick volume: the kernel is the ``z = 0`` slice of the
    O(3)-steerable kernel of :class:`EquivariantConv3d` with ``kernel_size=(kx, ky, 1)``, applied
    as a 2-D convolution (identical to the 3-D convolution of an ``(nx, ny, 1)`` volume).
    It is exactly equivariant under the dihedral group D4 (90-degree rotations and flips of the
    pixel grid) and approximately under other in-plane rotations. Because the plane ``z = 0`` is
    mirror-symmetric, some components of non-scalar features are identically zero (the ``z``
    component of ``1o``, two of the five of ``2e``); the kernel basis drops the weights that
    could only feed them. ``pixel_size`` is ``(dx, dy)`` in mm; other arguments as in 3-D.
    """

    _spatial = 2

    def __init__(self, irreps_in, irreps_out, kernel_size: int | Sequence[int] = 3, *,
                 pixel_size: float | Sequence[float] = 1.0, **kwargs):
        super().__init__(irreps_in, irreps_out, kernel_size, voxel_size=pixel_size, **kwargs)

    @property
    def pixel_size(self) -> tuple:
        return self.voxel_size


# --------------------------------------------------------------------------------------------
# Nonlinearities and normalisation
# --------------------------------------------------------------------------------------------


def gate_irreps(irreps) -> e3nn.Irreps:
    """The irreps a convolution must produce to feed :class:`Gate` and give ``irreps``: the
    scalars of ``irreps``, then one ``0e`` gate per non-scalar copy, then the non-scalars.

    >>> gate_irreps("8x0e+4x1o+2x2e")
    8x0e+6x0e+4x1o+2x2e
    """
    irreps = _irreps(irreps, "irreps")
    scalars = e3nn.Irreps([(m, ir) for m, ir in irreps if ir.l == 0])
    others = e3nn.Irreps([(m, ir) for m, ir in irreps if ir.l > 0])
    n_gates = sum(m for m, _ in others)
    gates = e3nn.Irreps(f"{n_gates}x0e") if n_gates else e3nn.Irreps("")
    return scalars + gates + others


class Gate(eqx.Module):
    """e3nn's gate nonlinearity (``e3nn.gate``): scalars through ``act``, every non-scalar copy
    multiplied by ``sigmoid`` of its own gate scalar. Input irreps ``gate_irreps(irreps)``,
    output ``irreps``. No parameters. Works on any leading (spatial) shape."""

    irreps: str = eqx.field(static=True)
    act: Callable = eqx.field(static=True)

    def __init__(self, irreps, act: Callable = jax.nn.gelu):
        self.irreps = str(_irreps(irreps, "irreps"))
        self.act = act

    @property
    def irreps_in(self) -> str:
        return str(gate_irreps(self.irreps))

    def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        if not isinstance(x, e3nn.IrrepsArray) or x.irreps.simplify() != gate_irreps(self.irreps).simplify():
            got = x.irreps if isinstance(x, e3nn.IrrepsArray) else type(x).__name__
            raise ValueError(f"Gate({self.irreps}) needs an IrrepsArray with irreps {self.irreps_in}, got {got}")
        # Re-split so that the gates are exactly the scalars after the irreps' own scalars.
        x = e3nn.IrrepsArray(gate_irreps(self.irreps), x.array)
        y = e3nn.gate(x, even_act=self.act, even_gate_act=jax.nn.sigmoid)
        return e3nn.IrrepsArray(self.irreps, y.array)


class NormActivation(eqx.Module):
    """Norm nonlinearity (escnn's NormReLU): ``0e`` scalars through ``act`` (ReLU), odd scalars
    through ``tanh``, every non-scalar copy ``v`` scaled to ``v relu(|v| + b) / |v|`` with a
    learned bias ``b`` per copy (``|v|`` the component-normalised norm). Irreps in = out."""

    bias: Array | None
    irreps: str = eqx.field(static=True)
    act: Callable = eqx.field(static=True)

    def __init__(self, irreps, act: Callable = jax.nn.relu, *, dtype=None):
        irreps = _irreps(irreps, "irreps")
        self.irreps, self.act = str(irreps), act
        n = sum(m for m, ir in irreps if ir.l > 0)
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.bias = jnp.zeros((n,), dtype) if n else None

    def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        irreps = e3nn.Irreps(self.irreps)
        x = _as_irreps_array(x, irreps, x.ndim - 1 if hasattr(x, "ndim") else 0)
        chunks, j = [], 0
        for (mul, ir), c in zip(irreps, x.chunks):  # c: (..., mul, d)
            if ir.l == 0:
                chunks.append(self.act(c) if ir.p == 1 else jnp.tanh(c))
                continue
            b = self.bias[j : j + mul].astype(c.dtype)[:, None]
            j += mul
            n2 = jnp.mean(c**2, axis=-1, keepdims=True)
            pos = n2 > 0
            n = jnp.sqrt(jnp.where(pos, n2, 1.0))
            chunks.append(jnp.where(pos, c * jax.nn.relu(n + b) / n, 0.0))
        return e3nn.from_chunks(irreps, chunks, x.shape[:-1], x.dtype)


class EquivariantInstanceNorm(eqx.Module):
    """Stateless equivariant instance normalisation over the spatial axes of one feature map.

    Scalars (``0e``, ``0o``) are centred and divided by their standard deviation; non-scalar
    copies cannot be centred or shifted, so they are divided by the root-mean-square of their
    (component-normalised) norm. A learned scale per copy (init 1) and a shift on ``0e`` only
    (init 0) follow. Statistics are per feature map (no running state), so it fits the
    stateless ``image -> image`` regulariser signature; equivariant under any rotation or
    reflection that permutes voxels."""

    scale: Array
    shift: Array | None
    irreps: str = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(self, irreps, *, eps: float = 1e-5, dtype=None):
        irreps = _irreps(irreps, "irreps")
        self.irreps, self.eps = str(irreps), float(eps)
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.scale = jnp.ones((irreps.num_irreps,), dtype)
        n0 = irreps.count("0e")
        self.shift = jnp.zeros((n0,), dtype) if n0 else None

    def __call__(self, x: e3nn.IrrepsArray) -> e3nn.IrrepsArray:
        irreps = e3nn.Irreps(self.irreps)
        x = _as_irreps_array(x, irreps, x.ndim - 1 if hasattr(x, "ndim") else 0)
        space = tuple(range(x.ndim - 1))
        chunks, j, k = [], 0, 0
        for (mul, ir), c in zip(irreps, x.chunks):  # c: (..., mul, d)
            g = self.scale[j : j + mul].astype(c.dtype)[:, None]
            j += mul
            if ir.l == 0:
                c = c - jnp.mean(c, axis=space, keepdims=True)
            ms = jnp.mean(c**2, axis=space + (c.ndim - 1,), keepdims=True)
            c = c * lax.rsqrt(ms + self.eps) * g
            if ir == e3nn.Irrep("0e"):
                c = c + self.shift[k : k + mul].astype(c.dtype)[:, None]
                k += mul
            chunks.append(c)
        return e3nn.from_chunks(irreps, chunks, x.shape[:-1], x.dtype)
