"""SPECTnet's training: the paper's two-stage training (autoencoder, then projection network on
the encoder's codes, then end-to-end fine-tuning) and the one-step end-to-end training it
compares against (Figure 12), every stage through :func:`jaxspect.training.train`.

Training (the paper's "Network training" section)
-------------------------------------------------
Adam (optax), learning rate 1e-4, minibatches of 160, L2 regularisation 0.08, all configurable
in :class:`TrainingConfig`. The loss follows MATLAB's ``regressionLayer`` convention that the
paper's L2 factor refers to: half the *sum* of squared errors over the output's pixels (or code
entries), averaged over the minibatch, in activity units, plus ``l2/2 * sum(w^2)`` over
convolution and linear weights. Reported metrics are per-pixel MSE (the paper's AE validation
MSE 0.076) and per-entry RMSE of codes (Figure 7). Phantoms are regenerated from their keys for
every batch; their sinograms are computed on first use and (by default) cached in host memory
(``4 * 120 * 128`` bytes each, 1.2 GB for the paper's 20,000), or recomputed every time with
``cache=False``. The model with the lowest validation loss over the epochs is kept.

Stopping on a plateau (``TrainingConfig.patience``): a stage's epochs are then a cap, and the
stage stops once its best validation metric has not improved by more than
``min_improvement`` (relative, default 1%) for ``patience`` epochs in a row.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ..training import make_optimizer, train
from ._data import PhantomSet
from ._networks import (
    PAPER_DECODER_CHANNELS,
    Autoencoder,
    SPECTnet,
    SPECTnetEncoder,
    build,
    trainable_filter,
    update_batch_statistics,
    weight_mask,
)

__all__ = ["TrainingConfig", "StageResult", "train_autoencoder", "encode_batches", "train_projection_network",
           "fine_tune", "train_end_to_end", "TwoStageResult", "train_two_stage"]

@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Optimiser settings and epochs per stage (defaults: the paper's).

    Attributes:
        batch_size: minibatch size (160).
        learning_rate: Adam learning rate (1e-4).
        l2: L2 regularisation factor (0.08, MATLAB convention; see the module docstring).
        epochs_autoencoder: 50. epochs_projection: 20. epochs_fine_tune: 19.
        epochs_end_to_end: epochs of the one-step comparison (300 in Figure 12).
        patience: stop a stage when its best validation metric has not improved by more than
            ``min_improvement`` (relative) for this many epochs; the epochs above are then caps.
            ``None`` (default): always run every epoch.
        min_improvement: the relative improvement that resets the patience count (0.01).
    """

    batch_size: int = 160
    learning_rate: float = 1e-4
    l2: float = 0.08
    epochs_autoencoder: int = 50
    epochs_projection: int = 20
    epochs_fine_tune: int = 19
    epochs_end_to_end: int = 300
    patience: int | None = None
    min_improvement: float = 0.01

    def __post_init__(self):
        if self.patience is not None and (not isinstance(self.patience, (int, np.integer)) or self.patience < 1):
            raise ValueError(f"patience must be a positive integer or None, got {self.patience!r}")
        if not 0 <= self.min_improvement < 1:
            raise ValueError(f"min_improvement must lie in [0, 1), got {self.min_improvement!r}")
        for name in ("batch_size", "epochs_autoencoder", "epochs_projection", "epochs_fine_tune", "epochs_end_to_end"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < (1 if name == "batch_size" else 0):
                raise ValueError(f"{name} must be a {'positive' if name == 'batch_size' else 'non-negative'} integer, got {v!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if not self.l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2!r}")


@dataclasses.dataclass
class StageResult:
    """One training stage: the kept model (lowest validation metric), per-epoch training loss
    (mean over the epoch's steps), validation metric (``metric_name``), steps and seconds
    (the epochs actually run: fewer than the cap when the plateau rule stopped the stage)."""

    model: eqx.Module
    train_loss: np.ndarray
    val_metric: np.ndarray
    metric_name: str
    best_epoch: int
    steps: int
    seconds: float


def _half_sse(pred, target):
    """MATLAB regression loss: half the sum of squared errors per sample, mean over the batch."""
    axes = tuple(range(1, pred.ndim))
    return 0.5 * jnp.mean(jnp.sum((pred - target) ** 2, axis=axes))


def _fit(model, loss_fn, train_data, validate, *, epochs, config: TrainingConfig, key, log, name, metric_name):
    """One stage through :func:`jaxspect.training.train`: Adam with the L2 penalty on the
    convolution and linear weights, batch-norm statistics updated after each step, the model
    with the lowest validation metric kept (and the plateau rule with ``config.patience``)."""
    optimizer = make_optimizer(float(config.learning_rate), algorithm="adam", l2=float(config.l2), l2_mask=weight_mask)
    if epochs == 0:
        return StageResult(model, np.zeros(0), np.zeros(0), metric_name, -1, 0, 0.0)
    step_losses = []

    def batches(k):
        for data in train_data(k):
            step_losses.append(None)
            yield data

    result = train(model, loss_fn, batches, epochs=epochs, optimizer=optimizer, key=key,
                   trainable=trainable_filter(model), validate=validate, after_step=update_batch_statistics,
                   patience=config.patience, min_improvement=config.min_improvement, log=log, label=f"{name} ")
    h = result.history
    return StageResult(result.model, h["train_loss"], h["val_loss"], metric_name, result.best_epoch,
                       len(step_losses), float(np.sum(h["seconds"])))


@eqx.filter_jit
def _image_sse(model, activity):
    return jnp.sum((model(activity, training=False)[0] - activity) ** 2)


@eqx.filter_jit
def _spectnet_sse(model, sinogram, mumap, activity):
    return jnp.sum((model(sinogram, mumap, training=False)[0] - activity) ** 2)


def _mean_over(data: "PhantomSet", batch_size, fn, *, sinograms):
    total, count = 0.0, 0
    for batch in data.batches(batch_size, sinograms=sinograms):
        total += float(fn(batch))
        count += batch.activity.size
    return total / count


def _ae_loss(model, activity):
    pred, stats = model(activity, training=True)
    return _half_sse(pred, activity), stats


def train_autoencoder(model: Autoencoder, train: PhantomSet, val: PhantomSet, *, config: TrainingConfig,
                      key: PRNGKeyArray, epochs: int | None = None, log: bool = False) -> StageResult:
    """Stage 1: the autoencoder on activity images (no projections needed). Validation metric:
    per-pixel MSE (activity units^2)."""
    epochs = config.epochs_autoencoder if epochs is None else epochs
    bs = config.batch_size
    batches = lambda k: ((b.activity,) for b in train.batches(bs, key=k, sinograms=False))
    validate = lambda m: _mean_over(val, bs, lambda b: _image_sse(m, b.activity), sinograms=False)
    return _fit(model, _ae_loss, batches, validate, epochs=epochs, config=config, key=key, log=log,
                name="autoencoder", metric_name="MSE")


@eqx.filter_jit
def _encode(encoder_model: Autoencoder, activity):
    return encoder_model.encode(activity, training=False)[0]


def encode_batches(autoencoder: Autoencoder, activity: Float[Array, "b n n"]) -> Float[Array, "b k"]:
    """The trained encoder's codes (inference-mode batch norm): the projection network's labels."""
    return _encode(autoencoder, activity)


def _projection_loss(model, inputs, codes):
    pred, stats = model(inputs, training=True)
    return _half_sse(pred, codes), stats


@eqx.filter_jit
def _code_sse(projection_network, inputs, codes):
    return jnp.sum((projection_network(inputs, training=False)[0] - codes) ** 2)


def train_projection_network(network: SPECTnetEncoder, autoencoder: Autoencoder, train: PhantomSet,
                             val: PhantomSet, *, config: TrainingConfig, key: PRNGKeyArray,
                             scales: SPECTnet, epochs: int | None = None, log: bool = False) -> StageResult:
    """Stage 2: the projection network (2 input channels) on the frozen encoder's codes of the
    same phantoms. ``scales`` is a :class:`SPECTnet` whose input normalisation is used.
    Validation metric: RMSE per code entry (the paper's Figure 7)."""
    epochs = config.epochs_projection if epochs is None else epochs
    bs = config.batch_size
    inputs = lambda b: scales.inputs(b.sinogram, b.mumap)

    def batches(k):
        for b in train.batches(bs, key=k):
            yield inputs(b), encode_batches(autoencoder, b.activity)

    def validate(m):
        total, count = 0.0, 0
        for b in val.batches(bs):
            codes = encode_batches(autoencoder, b.activity)
            total += float(_code_sse(m, inputs(b), codes))
            count += codes.size
        return math.sqrt(total / count)

    return _fit(network, _projection_loss, batches, validate, epochs=epochs, config=config, key=key, log=log,
                name="projection network", metric_name="code RMSE")


def _spectnet_loss(model, sinogram, mumap, activity):
    pred, stats = model(sinogram, mumap, training=True)
    return _half_sse(pred, activity), stats


def fine_tune(model: SPECTnet, train: PhantomSet, val: PhantomSet, *, config: TrainingConfig, key: PRNGKeyArray,
              epochs: int | None = None, log: bool = False, name: str = "fine-tune") -> StageResult:
    """Stage 3: the joined SPECTnet trained end to end on (sinogram, mumap) -> activity.
    Validation metric: per-pixel MSE."""
    epochs = config.epochs_fine_tune if epochs is None else epochs
    bs = config.batch_size
    batches = lambda k: ((b.sinogram, b.mumap, b.activity) for b in train.batches(bs, key=k))
    validate = lambda m: _mean_over(val, bs, lambda b: _spectnet_sse(m, b.sinogram, b.mumap, b.activity),
                                    sinograms=True)
    return _fit(model, _spectnet_loss, batches, validate, epochs=epochs, config=config, key=key, log=log,
                name=name, metric_name="MSE")


def train_end_to_end(model: SPECTnet, train: PhantomSet, val: PhantomSet, *, config: TrainingConfig,
                     key: PRNGKeyArray, epochs: int | None = None, log: bool = False) -> StageResult:
    """The one-step training the paper compares against (Figure 12): the whole SPECTnet from
    its initialisation, directly on (sinogram, mumap) -> activity."""
    epochs = config.epochs_end_to_end if epochs is None else epochs
    return fine_tune(model, train, val, config=config, key=key, epochs=epochs, log=log, name="end-to-end")


@dataclasses.dataclass
class TwoStageResult:
    """The paper's training: ``autoencoder``, ``projection`` and ``fine_tune`` stages; ``joined``
    is SPECTnet right after joining (before fine-tuning), ``model`` the final one."""

    autoencoder: StageResult
    projection: StageResult
    joined: SPECTnet
    fine_tune: StageResult

    @property
    def model(self) -> SPECTnet:
        return self.fine_tune.model


def train_two_stage(key: PRNGKeyArray, train: PhantomSet, val: PhantomSet, *, config: TrainingConfig = TrainingConfig(),
                    image_size: int | None = None, encoder_channels=None,
                    decoder_channels: int = PAPER_DECODER_CHANNELS, log: bool = False) -> TwoStageResult:
    """Autoencoder -> projection network on its codes -> join with the decoder -> fine-tune.

    ``key`` seeds the initialisations and the shuffling; the result is reproducible.
    ``encoder_channels`` overrides the filter counts of both encoders (default: the layout of
    ``image_size``, which defaults to the data's); ``decoder_channels`` the filters of the
    decoder's two 3 x 3 convolutions.
    """
    n = train.image_size if image_size is None else image_size
    if val.image_size != n or train.image_size != n:
        raise ValueError(f"train and val images must be {n} pixels, got {train.image_size}, {val.image_size}")
    k_ae, k_proj, k_s1, k_s2, k_s3 = jax.random.split(key, 5)
    ae = build(Autoencoder, k_ae, image_size=n, encoder_channels=encoder_channels, decoder_channels=decoder_channels)
    ae_result = train_autoencoder(ae, train, val, config=config, key=k_s1, log=log)
    projection_network = build(SPECTnetEncoder, k_proj, in_channels=2, image_size=n, channels=encoder_channels)
    scales = SPECTnet(projection_network=projection_network, decoder=ae_result.model.decoder)
    proj_result = train_projection_network(scales.projection_network, ae_result.model, train, val, config=config,
                                           key=k_s2, scales=scales, log=log)
    joined = SPECTnet(projection_network=proj_result.model, decoder=ae_result.model.decoder)
    ft_result = fine_tune(joined, train, val, config=config, key=k_s3, log=log)
    return TwoStageResult(ae_result, proj_result, joined, ft_result)
