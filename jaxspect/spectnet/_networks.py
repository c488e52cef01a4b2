"""SPECTnet (Shao, Rowe & Du, Ann Transl Med 2021;9:819): an autoencoder whose decoder turns a
256-vector into a 128 x 128 activity image, and a projection network that maps a padded
sinogram and an attenuation map to that vector (the paper's Figure 4).

Architecture (the paper's; choices where it leaves a detail open are marked *)
-------------------------------------------------------------------------------
Encoder (Figure 4A) and projection network (Figure 4B), :class:`SPECTnetEncoder`: five
convolutions without padding, kernels 6, 6, 5, 5, 5, strides 2, 2, 2, 2, 1, each followed by a
ReLU and then a batch normalisation: 128 -> 62 -> 29 -> 13 -> 5 -> 1 pixels, so the last
feature map is 1 x 1 with 256 channels, the 256-vector. Filter counts* (the paper states only
the first layer's 64): ``PAPER_CHANNELS = (64, 64, 128, 128, 256)``, doubling every second
layer; the projection network uses the same layers with two input channels (sinogram,
attenuation map).

Decoder, :class:`SPECTnetDecoder`: fully connected 256 -> 2,048 -> 16,384, each followed by a
sigmoid; reshape to 128 x 128; two 3 x 3 convolutions ("same" zero padding*, 16 filters*, ReLU*);
a final 3 x 3 transposed convolution (stride 1, "same" size*) to one channel, linear*.
No batch normalisation in the decoder (the paper names it for the encoder only).

Units and normalisation*: the networks work on activity divided by ``activity_scale = 10``,
so the largest activity of the training phantoms (9) is 0.9 and the decoder's sigmoid layer
works inside (0, 1) rather than saturating; :class:`Autoencoder` and :class:`SPECTnet` take and
return activity in the phantom's units (background 1). Sinograms (in the same activity units,
i.e. the projector's counts per unit activity) are divided by ``sinogram_scale = 100`` (about
the largest noise-free bin of a 2-mm phantom with uptake 9) and attenuation maps (1/mm) by
``mumap_scale = 0.01536`` (water at 140.5 keV), so both input channels are O(1).

Batch norm (:class:`BatchNorm`): in training, each layer normalises with the mean and (biased)
variance of the current batch over (batch, height, width) and returns them, and
:func:`update_batch_statistics` folds them into running averages (momentum 0.9; the first
batch sets them). In inference (``training=False``, what :func:`reconstruct` uses) the running
averages are used, so a single image gives the same output alone or in any batch. The running
statistics are arrays of the module (saved with it) but are not trained: see
:func:`trainable_filter`.

All networks take batches: images ``(B, n, n)``, padded sinograms ``(B, n, n)``; ``n`` is
``image_size`` (128 for the paper's architecture; smaller layouts from
:func:`encoder_layout` are for tests).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._serialization import register_model

__all__ = [
    "PAPER_CHANNELS",
    "PAPER_KERNELS",
    "PAPER_STRIDES",
    "ACTIVITY_SCALE",
    "SINOGRAM_SCALE",
    "MUMAP_SCALE",
    "BatchNorm",
    "SPECTnetEncoder",
    "SPECTnetDecoder",
    "Autoencoder",
    "SPECTnet",
    "encoder_layout",
    "pad_sinogram",
    "views_to_sinogram",
    "update_batch_statistics",
    "trainable_filter",
    "weight_mask",
    "reconstruct",
    "build",
    "count_network_parameters",
]

PAPER_KERNELS = (6, 6, 5, 5, 5)
PAPER_STRIDES = (2, 2, 2, 2, 1)
PAPER_CHANNELS = (64, 64, 128, 128, 256)
PAPER_HIDDEN = 2048
PAPER_DECODER_CHANNELS = 16
ACTIVITY_SCALE = 10.0
SINOGRAM_SCALE = 100.0
MUMAP_SCALE = 0.01536  # water at 140.5 keV, 1/mm


def _output_size(n: int, kernel: int, stride: int) -> int:
    return (n - kernel) // stride + 1


def feature_map_sizes(image_size: int, kernels, strides) -> tuple[int, ...]:
    """Spatial size after every layer of an unpadded encoder (the paper's: 62, 29, 13, 5, 1)."""
    sizes, n = [], image_size
    for k, s in zip(kernels, strides):
        n = _output_size(n, k, s)
        if n < 1:
            raise ValueError(f"encoder kernels {tuple(kernels)} / strides {tuple(strides)} do not fit "
                             f"an image of {image_size} pixels")
        sizes.append(n)
    return tuple(sizes)


def encoder_layout(image_size: int) -> dict:
    """Kernels, strides and channels of the encoder for ``image_size``.

    128: the paper's five layers (6, 6, 5, 5, 5; strides 2, 2, 2, 2, 1; channels
    ``PAPER_CHANNELS``). 64 (four layers, 6, 6, 5, 5 / 2, 2, 2, 1) and 32 (three layers, 6, 6, 5
    / 2, 2, 1) are reduced variants with the same kinds of layers, for tests and quick runs;
    every layout ends in a 1 x 1 map.
    """
    layouts = {
        128: dict(kernels=PAPER_KERNELS, strides=PAPER_STRIDES, channels=PAPER_CHANNELS),
        64: dict(kernels=(6, 6, 5, 5), strides=(2, 2, 2, 1), channels=(16, 32, 32, 64)),
        32: dict(kernels=(6, 6, 5), strides=(2, 2, 1), channels=(8, 16, 32)),
    }
    if image_size not in layouts:
        raise ValueError(f"image_size must be one of {sorted(layouts)} (or give the encoder's kernels, strides "
                         f"and channels), got {image_size!r}")
    return layouts[image_size]


class BatchNorm(eqx.Module):
    """Batch normalisation over (batch, spatial axes) per channel, with running statistics.

    ``__call__(x, training)``, ``x`` of shape ``(B, C, ...)``: in training normalises with the
    batch statistics and returns them, ``(y, (mean, var))``; in inference uses the running
    ones, ``(y, None)``. ``y = weight * (x - mean) / sqrt(var + eps) + bias``.
    """

    weight: Float[Array, " c"]
    bias: Float[Array, " c"]
    running_mean: Float[Array, " c"]
    running_var: Float[Array, " c"]
    count: Array
    momentum: float = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    def __init__(self, channels: int, *, momentum: float = 0.9, eps: float = 1e-5, dtype=None):
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.weight = jnp.ones((channels,), dtype)
        self.bias = jnp.zeros((channels,), dtype)
        self.running_mean = jnp.zeros((channels,), dtype)
        self.running_var = jnp.ones((channels,), dtype)
        self.count = jnp.zeros((), jnp.int32)
        self.momentum = float(momentum)
        self.eps = float(eps)

    def __call__(self, x, training: bool):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if training:
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean((x - mean.reshape(shape)) ** 2, axis=axes)
            stats = (jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var))
        else:
            mean, var, stats = self.running_mean, self.running_var, None
        y = (x - mean.reshape(shape)) * jax.lax.rsqrt(var.reshape(shape) + self.eps)
        return y * self.weight.reshape(shape) + self.bias.reshape(shape), stats

    def updated(self, stats) -> "BatchNorm":
        """This layer with ``stats = (mean, var)`` of a batch folded into the running averages."""
        mean, var = stats
        first = self.count == 0
        m = self.momentum
        new_mean = jnp.where(first, mean, m * self.running_mean + (1 - m) * mean)
        new_var = jnp.where(first, var, m * self.running_var + (1 - m) * var)
        return eqx.tree_at(lambda b: (b.running_mean, b.running_var, b.count), self,
                           (new_mean.astype(self.running_mean.dtype), new_var.astype(self.running_var.dtype),
                            self.count + 1))


def _batch_norms(model) -> list[BatchNorm]:
    is_bn = lambda x: isinstance(x, BatchNorm)
    return [x for x in jax.tree_util.tree_leaves(model, is_leaf=is_bn) if is_bn(x)]


def update_batch_statistics(model, stats):
    """``model`` with every :class:`BatchNorm`'s running averages updated by ``stats``, the
    list of per-layer batch statistics a training forward pass returned (same order as the
    layers appear in the pytree)."""
    layers = _batch_norms(model)
    if len(layers) != len(stats):
        raise ValueError(f"got statistics of {len(stats)} batch-norm layers for a model with {len(layers)}")
    if not layers:
        return model
    return eqx.tree_at(lambda m: _batch_norms(m), model, [bn.updated(s) for bn, s in zip(layers, stats)])


def trainable_filter(model):
    """Filter spec for ``eqx.partition``: the inexact arrays except batch-norm running statistics."""
    spec = jax.tree_util.tree_map(eqx.is_inexact_array, model)
    layers = _batch_norms(model)
    if not layers:
        return spec
    return eqx.tree_at(
        lambda m: [leaf for bn in _batch_norms(m) for leaf in (bn.running_mean, bn.running_var)],
        spec, [False] * (2 * len(layers)),
    )


def weight_mask(params):
    """Filter spec (same structure as ``params``): ``True`` at the weights (not biases, not
    batch-norm parameters) of every convolution, transposed convolution and linear layer, the
    leaves the L2 penalty ``l2 / 2 * sum(w^2)`` applies to (``optax.add_decayed_weights``' mask)."""
    kinds = (eqx.nn.Conv, eqx.nn.ConvTranspose, eqx.nn.Linear)
    is_layer = lambda x: isinstance(x, kinds)
    weights = lambda m: [x.weight for x in jax.tree_util.tree_leaves(m, is_leaf=is_layer) if is_layer(x)]
    mask = jax.tree_util.tree_map(lambda _: False, params)
    return eqx.tree_at(weights, mask, replace_fn=lambda _: True)


def _conv_batch(conv, x):
    """Apply a per-sample Equinox convolution to a batch ``(B, C, H, W)``."""
    return jax.vmap(conv)(x)


class SPECTnetEncoder(eqx.Module):
    """Unpadded strided convolutions, each followed by ReLU and batch norm, mapping
    ``(B, in_channels, n, n)`` to the code ``(B, code_size)`` (the last map is 1 x 1).

    ``in_channels`` is 1 for the autoencoder's encoder (activity) and 2 for the projection
    network (padded sinogram, attenuation map).
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    norms: tuple[BatchNorm, ...]
    image_size: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, *, in_channels: int = 1, image_size: int = 128,
                 kernels=None, strides=None, channels=None, dtype=None):
        needs_layout = kernels is None or strides is None or channels is None
        layout = encoder_layout(image_size) if needs_layout else {}
        kernels = tuple(layout.get("kernels", ()) if kernels is None else kernels)
        strides = tuple(layout.get("strides", ()) if strides is None else strides)
        channels = tuple(layout.get("channels", ()) if channels is None else channels)
        if not (len(kernels) == len(strides) == len(channels) >= 1):
            raise ValueError(f"kernels, strides and channels must be equally long and non-empty, got "
                             f"{kernels}, {strides}, {channels}")
        if in_channels not in (1, 2):
            raise ValueError(f"in_channels must be 1 (activity) or 2 (sinogram, mumap), got {in_channels!r}")
        sizes = feature_map_sizes(image_size, kernels, strides)
        if sizes[-1] != 1:
            raise ValueError(f"the encoder must end in a 1 x 1 map for image_size={image_size}; its "
                             f"layers give maps of {sizes}")
        keys = jax.random.split(key, len(kernels))
        cin = (in_channels,) + channels[:-1]
        self.convs = tuple(
            eqx.nn.Conv2d(ci, co, k, stride=s, padding=0, key=kk, dtype=dtype)
            for ci, co, k, s, kk in zip(cin, channels, kernels, strides, keys)
        )
        self.norms = tuple(BatchNorm(co, dtype=dtype) for co in channels)
        self.image_size = image_size
        self.in_channels = in_channels

    @property
    def code_size(self) -> int:
        return self.convs[-1].out_channels

    def __call__(self, x: Float[Array, "b c n n"], *, training: bool):
        """``x`` ``(B, in_channels, n, n)`` -> ``(code (B, code_size), stats)``; ``stats`` is
        the list of batch statistics (training) or ``None`` (inference)."""
        n = self.image_size
        if x.ndim != 4 or x.shape[1:] != (self.in_channels, n, n):
            raise ValueError(f"x must have shape (B, {self.in_channels}, {n}, {n}), got {x.shape}")
        stats = []
        for conv, norm in zip(self.convs, self.norms):
            x, s = norm(jax.nn.relu(_conv_batch(conv, x)), training)
            stats.append(s)
        return x.reshape(x.shape[0], -1), (stats if training else None)

    def feature_maps(self, x, *, training: bool = False) -> list[Array]:
        """Every layer's output ``(B, C_l, n_l, n_l)`` (for inspection and tests)."""
        maps = []
        for conv, norm in zip(self.convs, self.norms):
            x, _ = norm(jax.nn.relu(_conv_batch(conv, x)), training)
            maps.append(x)
        return maps


class SPECTnetDecoder(eqx.Module):
    """Code ``(B, code_size)`` -> image ``(B, n, n)`` in normalised activity units:
    linear -> sigmoid -> linear (``n*n``) -> sigmoid -> reshape -> conv 3x3 -> ReLU -> conv 3x3
    -> ReLU -> transposed conv 3x3 (one channel, linear)."""

    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    deconv: eqx.nn.ConvTranspose2d
    image_size: int = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, *, code_size: int = 256, image_size: int = 128,
                 hidden: int = PAPER_HIDDEN, channels: int = PAPER_DECODER_CHANNELS, dtype=None):
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        self.fc1 = eqx.nn.Linear(code_size, hidden, key=k1, dtype=dtype)
        self.fc2 = eqx.nn.Linear(hidden, image_size * image_size, key=k2, dtype=dtype)
        self.conv1 = eqx.nn.Conv2d(1, channels, 3, padding=1, key=k3, dtype=dtype)
        self.conv2 = eqx.nn.Conv2d(channels, channels, 3, padding=1, key=k4, dtype=dtype)
        self.deconv = eqx.nn.ConvTranspose2d(channels, 1, 3, padding=1, key=k5, dtype=dtype)
        self.image_size = image_size

    def sigmoid_image(self, code: Float[Array, "b k"]) -> Float[Array, "b n n"]:
        """The reshaped output of the second sigmoid layer, in (0, 1)."""
        h = jax.nn.sigmoid(jax.vmap(self.fc1)(code))
        h = jax.nn.sigmoid(jax.vmap(self.fc2)(h))
        return h.reshape(-1, self.image_size, self.image_size)

    def __call__(self, code: Float[Array, "b k"]) -> Float[Array, "b n n"]:
        if code.ndim != 2 or code.shape[1] != self.fc1.in_features:
            raise ValueError(f"code must have shape (B, {self.fc1.in_features}), got {code.shape}")
        h = self.sigmoid_image(code)[:, None]
        h = jax.nn.relu(_conv_batch(self.conv1, h))
        h = jax.nn.relu(_conv_batch(self.conv2, h))
        return _conv_batch(self.deconv, h)[:, 0]


def _check_images(name, x, n):
    if x.ndim != 3 or x.shape[1:] != (n, n):
        raise ValueError(f"{name} must have shape (B, {n}, {n}), got {tuple(x.shape)}")


class Autoencoder(eqx.Module):
    """The paper's autoencoder (Figure 4A): ``activity (B, n, n) -> code (B, 256) -> activity``.

    Inputs and outputs are in activity units (background 1); internally divided/multiplied by
    ``activity_scale``.
    """

    encoder: SPECTnetEncoder
    decoder: SPECTnetDecoder
    activity_scale: float = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray, *, image_size: int = 128, activity_scale: float = ACTIVITY_SCALE,
                 hidden: int | None = None, decoder_channels: int = PAPER_DECODER_CHANNELS,
                 encoder_channels=None, dtype=None):
        ke, kd = jax.random.split(key)
        self.encoder = SPECTnetEncoder(ke, in_channels=1, image_size=image_size, channels=encoder_channels,
                                       dtype=dtype)
        hidden = (PAPER_HIDDEN if image_size == 128 else 4 * self.encoder.code_size) if hidden is None else hidden
        self.decoder = SPECTnetDecoder(kd, code_size=self.encoder.code_size, image_size=image_size,
                                       hidden=hidden, channels=decoder_channels, dtype=dtype)
        if not activity_scale > 0:
            raise ValueError(f"activity_scale must be positive, got {activity_scale!r}")
        self.activity_scale = float(activity_scale)

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    def encode(self, activity: Float[Array, "b n n"], *, training: bool = False):
        """``(code (B, 256), stats)``."""
        _check_images("activity", activity, self.image_size)
        return self.encoder((activity / self.activity_scale)[:, None], training=training)

    def __call__(self, activity: Float[Array, "b n n"], *, training: bool = False):
        """``(reconstructed activity (B, n, n), stats)``; ``stats`` is ``None`` in inference."""
        code, stats = self.encode(activity, training=training)
        return self.decoder(code) * self.activity_scale, stats


class SPECTnet(eqx.Module):
    """The full SPECTnet (Figure 3B): projection network (Figure 4B) followed by the decoder.

    ``(sinogram (B, n, n), mumap (B, n, n)) -> activity (B, n, n)``: the sinogram padded to
    ``n`` rows (:func:`pad_sinogram`) in activity units (the projector's output for an activity
    image), the attenuation map in 1/mm on the image grid, the output in activity units.
    """

    projection_network: SPECTnetEncoder
    decoder: SPECTnetDecoder
    activity_scale: float = eqx.field(static=True)
    sinogram_scale: float = eqx.field(static=True)
    mumap_scale: float = eqx.field(static=True)

    def __init__(self, key: PRNGKeyArray | None = None, *, image_size: int = 128, decoder=None,
                 projection_network=None, activity_scale: float = ACTIVITY_SCALE,
                 sinogram_scale: float = SINOGRAM_SCALE, mumap_scale: float = MUMAP_SCALE,
                 hidden: int | None = None, decoder_channels: int = PAPER_DECODER_CHANNELS,
                 encoder_channels=None, dtype=None):
        if key is None and (decoder is None or projection_network is None):
            raise ValueError("key is required unless both decoder and projection_network are given")
        kp, kd = jax.random.split(key) if key is not None else (None, None)
        if projection_network is None:
            projection_network = SPECTnetEncoder(kp, in_channels=2, image_size=image_size,
                                                 channels=encoder_channels, dtype=dtype)
        if decoder is None:
            code = projection_network.code_size
            hidden = (PAPER_HIDDEN if image_size == 128 else 4 * code) if hidden is None else hidden
            decoder = SPECTnetDecoder(kd, code_size=code, image_size=image_size, hidden=hidden,
                                      channels=decoder_channels, dtype=dtype)
        if projection_network.in_channels != 2:
            raise ValueError("projection_network must take 2 input channels (sinogram, mumap)")
        if decoder.image_size != projection_network.image_size:
            raise ValueError(f"decoder image_size {decoder.image_size} != projection_network image_size "
                             f"{projection_network.image_size}")
        if decoder.fc1.in_features != projection_network.code_size:
            raise ValueError(f"decoder takes codes of {decoder.fc1.in_features}, the projection network "
                             f"makes {projection_network.code_size}")
        for name, v in (("activity_scale", activity_scale), ("sinogram_scale", sinogram_scale),
                        ("mumap_scale", mumap_scale)):
            if not v > 0:
                raise ValueError(f"{name} must be positive, got {v!r}")
        self.projection_network = projection_network
        self.decoder = decoder
        self.activity_scale = float(activity_scale)
        self.sinogram_scale = float(sinogram_scale)
        self.mumap_scale = float(mumap_scale)

    @property
    def image_size(self) -> int:
        return self.projection_network.image_size

    def inputs(self, sinogram, mumap) -> Float[Array, "b 2 n n"]:
        """The normalised two-channel input ``(B, 2, n, n)``."""
        n = self.image_size
        _check_images("sinogram", sinogram, n)
        _check_images("mumap", mumap, n)
        if sinogram.shape[0] != mumap.shape[0]:
            raise ValueError(f"sinogram and mumap batches differ: {sinogram.shape[0]} vs {mumap.shape[0]}")
        return jnp.stack([sinogram / self.sinogram_scale, mumap / self.mumap_scale], axis=1)

    def code(self, sinogram, mumap, *, training: bool = False):
        """``(code (B, 256), stats)``: the projection network's output."""
        return self.projection_network(self.inputs(sinogram, mumap), training=training)

    def __call__(self, sinogram, mumap, *, training: bool = False):
        """``(activity (B, n, n), stats)``; ``stats`` is ``None`` in inference."""
        code, stats = self.code(sinogram, mumap, training=training)
        return self.decoder(code) * self.activity_scale, stats


def views_to_sinogram(views: Float[Array, "... n 1 nview"]) -> Float[Array, "... nview n"]:
    """jaxspect projections of a 2-D image, ``(..., n, 1, nview)``, as a sinogram
    ``(..., nview, n)``: one row per view, one column per detector bin."""
    if views.ndim < 3 or views.shape[-2] != 1:
        raise ValueError(f"views must have shape (..., n, 1, nview) (2-D projections), got {views.shape}")
    return jnp.swapaxes(views[..., 0, :], -1, -2)


def pad_sinogram(sinogram: Float[Array, "... nview n"], rows: int | None = None) -> Float[Array, "... rows n"]:
    """Pad a sinogram ``(..., nview, n)`` to ``rows`` rows (default ``n``, a square) by
    repeating its first ``rows - nview`` rows after the last, as the paper does (120 views
    + the first 8 again = 128 rows): views 0, 1, ... continue the circle after the last view."""
    if sinogram.ndim < 2:
        raise ValueError(f"sinogram must have shape (..., nview, n), got {sinogram.shape}")
    nview, n = sinogram.shape[-2:]
    rows = n if rows is None else rows
    if not nview <= rows <= 2 * nview:
        raise ValueError(f"rows must lie in [nview, 2 nview] = [{nview}, {2 * nview}], got {rows}")
    return jnp.concatenate([sinogram, sinogram[..., : rows - nview, :]], axis=-2)


@eqx.filter_jit
def _reconstruct(model, sinograms, mumaps):
    return model(sinograms, mumaps, training=False)[0]


def reconstruct(model: SPECTnet, sinograms, mumaps) -> Float[Array, "b n n"]:
    """Images ``(B, n, n)`` (activity units) from sinograms and attenuation maps (jit-compiled,
    inference-mode batch norm).

    Arguments:
        model: a trained :class:`SPECTnet`.
        sinograms: ``(B, nview, n)`` with ``nview <= n`` (padded here to ``n`` rows by
            repeating the first rows), in activity units (the projector's output for an
            activity image; divide measured counts by the count scale).
        mumaps: ``(B, n, n)`` attenuation maps in 1/mm.
    """
    if not isinstance(model, SPECTnet):
        raise TypeError(f"model must be a SPECTnet, got {type(model).__name__}")
    sinograms, mumaps = jnp.asarray(sinograms), jnp.asarray(mumaps)
    n = model.image_size
    if sinograms.ndim != 3 or sinograms.shape[2] != n or sinograms.shape[1] > n:
        raise ValueError(f"sinograms must have shape (B, nview, {n}) with nview <= {n}, got {sinograms.shape}")
    if sinograms.shape[1] < n:
        sinograms = pad_sinogram(sinograms, n)
    return _reconstruct(model, sinograms, mumaps)


def build(cls, key: PRNGKeyArray, **options):
    """``cls(key, **options)`` (an :class:`Autoencoder`, :class:`SPECTnet` or
    :class:`SPECTnetEncoder`) initialised in one compiled call: much faster on CPU than the
    eager layer-by-layer initialisation (one kernel compilation per weight shape)."""
    return eqx.filter_jit(lambda k: cls(k, **options))(key)


def count_network_parameters(model) -> int:
    """Trainable scalars (excluding batch-norm running statistics)."""
    params = eqx.filter(model, trainable_filter(model))
    return sum(x.size for x in jax.tree_util.tree_leaves(params))


# --- save / load -------------------------------------------------------------------------------


def _encoder_config(enc: SPECTnetEncoder) -> dict:
    return dict(
        in_channels=enc.in_channels,
        image_size=enc.image_size,
        kernels=[c.kernel_size[0] for c in enc.convs],
        strides=[c.stride[0] for c in enc.convs],
        channels=[c.out_channels for c in enc.convs],
    )


def _decoder_config(dec: SPECTnetDecoder) -> dict:
    return dict(code_size=dec.fc1.in_features, image_size=dec.image_size, hidden=dec.fc1.out_features,
                channels=dec.conv1.out_channels)


def _model_config(model) -> dict:
    if not isinstance(model, (SPECTnet, Autoencoder)):
        raise TypeError(f"model must be a SPECTnet or an Autoencoder, got {type(model).__name__}")
    dtype = str(jnp.result_type(model.decoder.fc1.weight))
    if isinstance(model, SPECTnet):
        return dict(kind="SPECTnet", dtype=dtype, encoder=_encoder_config(model.projection_network),
                    decoder=_decoder_config(model.decoder), activity_scale=model.activity_scale,
                    sinogram_scale=model.sinogram_scale, mumap_scale=model.mumap_scale)
    if isinstance(model, Autoencoder):
        return dict(kind="Autoencoder", dtype=dtype, encoder=_encoder_config(model.encoder),
                    decoder=_decoder_config(model.decoder), activity_scale=model.activity_scale)
    raise TypeError(f"model must be a SPECTnet or an Autoencoder, got {type(model).__name__}")


def _build(config: dict):
    key = jax.random.key(0)
    dtype = jnp.dtype(config["dtype"])
    enc_cfg = dict(config["encoder"])
    enc = eqx.filter_eval_shape(lambda k: SPECTnetEncoder(
        k, in_channels=enc_cfg.pop("in_channels"), image_size=enc_cfg.pop("image_size"), dtype=dtype,
        **{k2: tuple(v) for k2, v in enc_cfg.items()}), key)
    dec = eqx.filter_eval_shape(lambda k: SPECTnetDecoder(k, dtype=dtype, **config["decoder"]), key)
    if config["kind"] == "SPECTnet":
        return SPECTnet(projection_network=enc, decoder=dec, activity_scale=config["activity_scale"],
                        sinogram_scale=config["sinogram_scale"], mumap_scale=config["mumap_scale"])
    ae = eqx.filter_eval_shape(lambda k: Autoencoder(
        k, image_size=enc.image_size, activity_scale=config["activity_scale"],
        encoder_channels=tuple(config["encoder"]["channels"]), hidden=dec.fc1.out_features,
        decoder_channels=dec.conv1.out_channels, dtype=dtype), key)
    return eqx.tree_at(lambda a: (a.encoder, a.decoder), ae, (enc, dec))


def _register(cls):
    register_model(cls, lambda m: {k: v for k, v in _model_config(m).items() if k != "kind"},
                   lambda c: _build({"kind": cls.__name__, **c}))


# Saved with jaxspect.save_model (architecture as a JSON line, then the arrays, batch-norm
# running statistics included); jaxspect.load_model rebuilds them without a template.
_register(SPECTnet)
_register(Autoencoder)
