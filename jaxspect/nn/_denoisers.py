"""Denoisers / regularisers: the SCNN papers' 3-layer equivariant networks (2-D and 3-D), the
conventional 5-layer 64-channel ReLU CNN baseline, small plain CNNs, and a parameter report.

Every network maps an image to an image of the same shape and is a valid ``g_theta`` for
:class:`jaxspect.recon.UnrolledEM`:

- 3-D networks (``ndim=3``): ``(nx, ny, nz) -> (nx, ny, nz)``, the call signature of
  :class:`jaxspect.nn.PaperCNN`.
- 2-D networks (``ndim=2``): ``(nx, ny) -> (nx, ny)``; given a volume ``(nx, ny, nz)`` they are
  applied to every slice ``[:, :, k]`` independently (so a 2-D problem stored as ``(n, n, 1)``
  plugs into the unrolled EM unchanged).

Images are in whatever units the caller uses (the networks are not scale invariant: normalise
inputs to order 1 for training). Spatial steps (``voxel_size`` / ``pixel_size``) are in mm.
"""

from __future__ import annotations

from typing import Sequence

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._conv import conv3d
from ._equivariant import (
    EquivariantConv2d,
    EquivariantConv3d,
    EquivariantInstanceNorm,
    Gate,
    NormActivation,
    _irreps,
    gate_irreps,
)

__all__ = ["SCNN", "PlainCNN", "SCNN2d", "SCNN3d", "baseline_cnn", "describe_parameters", "small_cnn"]


def _check_image(x, ndim: int, name: str):
    if x.ndim not in ((2, 3) if ndim == 2 else (3,)):
        want = "(nx, ny) or (nx, ny, nz) (slice by slice)" if ndim == 2 else "(nx, ny, nz)"
        raise ValueError(f"{name} maps an image {want}; got shape {tuple(x.shape)} (vmap for batches)")


class SCNN(eqx.Module):
    """Rotation-equivariant residual denoiser in the style of the SCNN papers: scalar image in,
    ``n_layers - 1`` steerable convolutions (kernel ``kernel_size``) to hidden equivariant
    features ``hidden`` with a gate (or norm) nonlinearity, a final 1x1 convolution back to a
    scalar, and ``g(x) = x + net(x)`` when ``residual``.

    Use :class:`SCNN2d` / :class:`SCNN3d` (which fix ``ndim``). Arguments:
        key: PRNG key.
        ndim: 2 (pixel images, in-plane rotations) or 3 (volumes, O(3) lattice symmetries).
        hidden: irreps of the hidden features (default ``"8x0e+4x1o+2x2e"``).
        n_layers: number of convolutions (>= 2; the papers' SCNN has 3).
        kernel_size: odd kernel size of all but the last layer (the last is 1).
        voxel_size: grid steps in mm (``(dx, dy, dz)`` for 3-D, ``(dx, dy)`` for 2-D, or a scalar).
        nonlinearity: ``"gate"`` (e3nn gate, GELU scalars) or ``"norm"`` (NormReLU).
        normalization: ``None`` or ``"instance"`` (:class:`EquivariantInstanceNorm` after each
            hidden nonlinearity). Off by default: instance statistics make the output depend
            on the image's global scale and mean, which a quantitative regulariser should not.
        residual: add the input to the output.
        lmax, radial, num_radial: kernel basis, see :class:`EquivariantConv3d`.
        precision: ``lax.Precision`` of the convolutions.
        method: how the convolutions are computed (see :class:`EquivariantConv3d`; the default
            is fast on CPU inside the unrolled EM's ``lax.scan`` too).
        dtype: parameter dtype.
    """

    convs: tuple
    acts: tuple
    norms: tuple
    ndim: int = eqx.field(static=True)
    residual: bool = eqx.field(static=True)
    hidden: str = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        *,
        ndim: int,
        hidden: str = "8x0e+4x1o+2x2e",
        n_layers: int = 3,
        kernel_size: int | Sequence[int] = 3,
        voxel_size: float | Sequence[float] = 1.0,
        nonlinearity: str = "gate",
        normalization: str | None = None,
        residual: bool = True,
        lmax: int = 2,
        radial: str = "shells",
        num_radial: int | None = None,
        precision=None,
        method: str = "auto",
        dtype=None,
    ):
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        if int(n_layers) != n_layers or n_layers < 2:
            raise ValueError(f"n_layers must be an integer >= 2, got {n_layers!r}")
        if nonlinearity not in ("gate", "norm"):
            raise ValueError(f"nonlinearity must be 'gate' or 'norm', got {nonlinearity!r}")
        if normalization not in (None, "instance"):
            raise ValueError(f"normalization must be None or 'instance', got {normalization!r}")
        hid = _irreps(hidden, "hidden")
        if hid.count("0e") == 0:
            raise ValueError(f"hidden must contain 0e scalars (the output is read from them), got {hidden!r}")
        conv_cls = EquivariantConv3d if ndim == 3 else EquivariantConv2d
        step = {"voxel_size": voxel_size} if ndim == 3 else {"pixel_size": voxel_size}
        common = dict(lmax=lmax, radial=radial, num_radial=num_radial, precision=precision, method=method, dtype=dtype, **step)
        pre = gate_irreps(hid) if nonlinearity == "gate" else hid
        keys = jax.random.split(key, int(n_layers))
        convs, acts, norms = [], [], []
        irreps_in = "1x0e"
        for i in range(int(n_layers) - 1):
            convs.append(conv_cls(irreps_in, pre, kernel_size, key=keys[i], **common))
            acts.append(Gate(hid) if nonlinearity == "gate" else NormActivation(hid, dtype=dtype))
            norms.append(EquivariantInstanceNorm(hid, dtype=dtype) if normalization else None)
            irreps_in = hid
        convs.append(conv_cls(hid, "1x0e", 1, key=keys[-1], **common))
        self.convs, self.acts, self.norms = tuple(convs), tuple(acts), tuple(norms)
        self.ndim, self.residual, self.hidden = int(ndim), bool(residual), str(hid)

    def features(self, x: Float[Array, "..."]) -> e3nn.IrrepsArray:
        """The last hidden feature map, an ``IrrepsArray (*x.shape, hidden.dim)`` (one image)."""
        h = e3nn.IrrepsArray("1x0e", x[..., None])
        for conv, act, norm in zip(self.convs[:-1], self.acts, self.norms):
            h = act(conv(h))
            if norm is not None:
                h = norm(h)
        return h

    def _single(self, x):
        out = self.convs[-1](self.features(x)).array[..., 0].astype(x.dtype)
        return x + out if self.residual else out

    def __call__(self, x: Float[Array, "nx ny *nz"]) -> Float[Array, "nx ny *nz"]:
        _check_image(x, self.ndim, type(self).__name__)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{type(self).__name__} needs a floating-point image, got dtype {x.dtype}")
        if self.ndim == 2 and x.ndim == 3:
            return jax.vmap(self._single, in_axes=2, out_axes=2)(x)
        return self._single(x)


class SCNN3d(SCNN):
    """3-D SCNN (see :class:`SCNN`): ``(nx, ny, nz) -> (nx, ny, nz)``, exactly equivariant under
    the 48 symmetries of the cubic voxel lattice (for isotropic ``voxel_size``), approximately
    under other rotations. Same call signature as :class:`jaxspect.nn.PaperCNN`."""

    def __init__(self, key: PRNGKeyArray, *, voxel_size: float | Sequence[float] = 1.0, **kwargs):
        super().__init__(key, ndim=3, voxel_size=voxel_size, **kwargs)


class SCNN2d(SCNN):
    """2-D SCNN (see :class:`SCNN`): ``(nx, ny) -> (nx, ny)`` (or slice-wise on ``(nx, ny, nz)``),
    exactly equivariant under the 8 symmetries of the square pixel grid (D4), approximately under
    other in-plane rotations. ``pixel_size`` ``(dx, dy)`` in mm."""

    def __init__(self, key: PRNGKeyArray, *, pixel_size: float | Sequence[float] = 1.0, **kwargs):
        super().__init__(key, ndim=2, voxel_size=pixel_size, **kwargs)


class PlainCNN(eqx.Module):
    """Conventional ReLU CNN: ``n_layers`` convolutions ``1 -> channels -> ... -> 1``, "same" zero
    padding, ReLU between layers, and ``g(x) = x + cnn(x)`` when ``residual``.

    ``ndim=2``: ``(nx, ny) -> (nx, ny)`` (or slice-wise on ``(nx, ny, nz)``); ``ndim=3``:
    ``(nx, ny, nz) -> (nx, ny, nz)``. The SCNN papers' baseline is ``n_layers=5, channels=64``
    (:func:`baseline_cnn`); :func:`small_cnn` matches the SCNN's size.
    """

    weights: tuple
    biases: tuple
    ndim: int = eqx.field(static=True)
    residual: bool = eqx.field(static=True)
    precision: object = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, *, ndim: int = 2, channels: int = 64, n_layers: int = 5,
                 kernel_size: int = 3, residual: bool = True, precision=None, dtype=None):
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        if int(n_layers) != n_layers or n_layers < 1:
            raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
        if int(channels) != channels or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        widths = [1] + [int(channels)] * (int(n_layers) - 1) + [1]
        taps = int(kernel_size) ** ndim
        shapes = [((b, a) + (int(kernel_size),) * ndim, (b,) + (1,) * ndim) for a, b in zip(widths[:-1], widths[1:])]
        sizes = [int(np.prod(s)) for pair in shapes for s in pair]
        # One flat U(-1, 1) draw (eager per-shape draws are slow), scaled per layer like
        # PyTorch/Equinox's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
        flat = jax.random.uniform(key, (sum(sizes),), dtype, -1.0, 1.0)
        weights, biases, offset = [], [], 0
        for (a, _), (ws, bs) in zip(zip(widths[:-1], widths[1:]), shapes):
            scale = 1.0 / np.sqrt(a * taps)
            nw, nb = int(np.prod(ws)), int(np.prod(bs))
            weights.append(flat[offset : offset + nw].reshape(ws) * scale)
            biases.append(flat[offset + nw : offset + nw + nb].reshape(bs) * scale)
            offset += nw + nb
        self.weights, self.biases = tuple(weights), tuple(biases)
        self.ndim, self.residual, self.precision = int(ndim), bool(residual), precision

    def _single(self, x):
        h = x[None]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if self.ndim == 3:
                h = conv3d(h, w.astype(h.dtype), precision=self.precision)
            else:
                h = jax.lax.conv_general_dilated(h[None], w.astype(h.dtype), (1, 1), "SAME", precision=self.precision)[0]
            h = h + b.astype(h.dtype)
            if i < len(self.weights) - 1:
                h = jax.nn.relu(h)
        out = h[0].astype(x.dtype)
        return x + out if self.residual else out

    def __call__(self, x: Float[Array, "nx ny *nz"]) -> Float[Array, "nx ny *nz"]:
        _check_image(x, self.ndim, "PlainCNN")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"PlainCNN needs a floating-point image, got dtype {x.dtype}")
        if self.ndim == 2 and x.ndim == 3:
            return jax.vmap(self._single, in_axes=2, out_axes=2)(x)
        return self._single(x)


def baseline_cnn(key: PRNGKeyArray, *, ndim: int = 2, **kwargs) -> PlainCNN:
    """The papers' conventional baseline (Reader 2023): 5 layers, 64 channels, 3^ndim kernels,
    ReLU, residual. 112,001 parameters in 2-D, 335,489 in 3-D."""
    return PlainCNN(key, ndim=ndim, channels=64, n_layers=5, **kwargs)


def small_cnn(key: PRNGKeyArray, *, ndim: int = 2, channels: int | None = None, **kwargs) -> PlainCNN:
    """A 3-layer ReLU CNN of about the SCNN's size: 8 channels in 2-D (737 parameters), 6 in 3-D
    (1,309 parameters); ``channels`` overrides."""
    channels = (8 if ndim == 2 else 6) if channels is None else channels
    return PlainCNN(key, ndim=ndim, channels=channels, n_layers=3, **kwargs)


def describe_parameters(model, *, name: str | None = None) -> str:
    """A table of the trainable arrays of ``model`` (path, shape, count) and the total."""
    params = eqx.filter(model, eqx.is_inexact_array)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    rows = [(jax.tree_util.keystr(path), tuple(leaf.shape), int(leaf.size)) for path, leaf in leaves]
    width = max([len(r[0]) for r in rows] + [9])
    title = name or type(model).__name__
    lines = [f"{title}: {sum(r[2] for r in rows):,} parameters", f"{'parameter'.ljust(width)}  {'shape':>16}  {'count':>8}"]
    lines += [f"{p.ljust(width)}  {str(s):>16}  {c:>8,}" for p, s, c in rows]
    return "\n".join(lines)
