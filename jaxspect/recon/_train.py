"""Training the unrolled EM: end-to-end, with gradient truncation, or sequentially.

AdamW (optax; learning rate 0.002 as in the paper), the relative squared error against the
true activity, batches of patients via ``vmap``, a validation loss (and per-VOI MAE) per epoch,
the best model kept, seeded shuffling, learning-rate schedules, gradient clipping and
checkpoint/resume, all through :func:`jaxspect.training.train`. Trained models are saved and
loaded with :func:`jaxspect.save_model` / :func:`jaxspect.load_model`.
"""

from __future__ import annotations

import os
from typing import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .. import metrics
from .._operator import AbstractProjector
from ..training import make_optimizer, train as train_loop
from ._unrolled import AbstractGradient, EndToEnd, Sequential, UnrolledEM


class TrainingData(eqx.Module):
    """A set of patients, batched along axis 0.

    Attributes:
        projectors: a batched :class:`jaxspect.SPECTProjector` (one per patient, e.g. built
            with ``eqx.filter_vmap``), or a single one shared by all patients.
        y: counts ``(P, nx, nz, nview)``.
        background: mean background ``(P, nx, nz, nview)`` (or ``(P,)`` scalars).
        x0: warm starts ``(P, nx, ny, nz)`` (e.g. OSEM 16x4).
        target: true activities ``(P, nx, ny, nz)``.
        weights: optional voxel weights ``(P, nx, ny, nz)`` (dimensionless, >= 0) of the
            training loss (see :func:`relative_squared_error`), e.g. to make small lesions
            count; ``None``: every voxel weighs the same.
        shared_projector: ``projectors`` is one operator for every patient (static).
    """

    projectors: AbstractProjector
    y: Float[Array, "p nx nz nview"]
    background: Float[Array, "p ..."]
    x0: Float[Array, "p nx ny nz"]
    target: Float[Array, "p nx ny nz"]
    weights: Float[Array, "p nx ny nz"] | None = None
    shared_projector: bool = eqx.field(static=True, default=False)

    @property
    def n_patients(self) -> int:
        return self.y.shape[0]

    def take(self, indices) -> "TrainingData":
        """The patients ``indices``."""
        pick = lambda a: a[indices]
        projectors = self.projectors if self.shared_projector else _take_module(self.projectors, indices)
        weights = None if self.weights is None else pick(self.weights)
        return TrainingData(projectors, pick(self.y), pick(self.background), pick(self.x0), pick(self.target),
                            weights, shared_projector=self.shared_projector)


def _take_module(module, indices):
    arrays, static = eqx.partition(module, eqx.is_array)
    return eqx.combine(jax.tree_util.tree_map(lambda a: a[indices], arrays), static)


def _patient_axes(data: TrainingData):
    return None if data.shared_projector else eqx.if_array(0)


def reconstruct_batch(model: UnrolledEM, data: TrainingData, gradient: AbstractGradient = EndToEnd()):
    """``model`` applied to every patient of ``data`` (vmapped): ``(P, nx, ny, nz)``."""
    run = lambda a, y, r, x0: model(x0, a, y, r, gradient=gradient)
    return eqx.filter_vmap(run, in_axes=(_patient_axes(data), 0, 0, 0))(data.projectors, data.y, data.background, data.x0)


def relative_squared_error(x: Float[Array, "p ..."], target: Float[Array, "p ..."],
                           weights: Float[Array, "p ..."] | None = None) -> Float[Array, ""]:
    """Mean over patients (axis 0) of ``||x - t||^2 / ||t||^2``: the squared whole-image NRMSE,
    dimensionless, so every patient weighs the same at any count level. With ``weights`` ``w``
    (same shape, >= 0): ``sum(w (x - t)^2) / sum(w t^2)``, still dimensionless."""
    axes = tuple(range(1, x.ndim))
    w = jnp.ones_like(target) if weights is None else weights
    return jnp.mean(jnp.sum(w * (x - target) ** 2, axis=axes) / jnp.sum(w * target**2, axis=axes))


def training_loss(model: UnrolledEM, data: TrainingData, gradient: AbstractGradient = EndToEnd()) -> Float[Array, ""]:
    """The training loss: :func:`relative_squared_error` of the unrolled reconstruction (with
    ``data.weights``)."""
    return relative_squared_error(reconstruct_batch(model, data, gradient), data.target, data.weights)


class _UnrolledLoss(eqx.Module):
    """``training_loss`` with the gradient strategy bound (a hashable callable: the compiled step is reused)."""

    gradient: AbstractGradient

    def __call__(self, model, batch):
        return training_loss(model, batch, self.gradient)


def _network_outputs(network, x: Float[Array, "p nx ny nz"]) -> Float[Array, "p nx ny nz"]:
    """One outer iteration's regulariser ``s g(x / s)`` on every patient's input."""
    return jax.vmap(lambda xi: UnrolledEM.regularizer(network, xi))(x)


class _NetworkLoss(eqx.Module):
    """Sequential training: the loss of one outer iteration's network alone on its inputs."""

    def __call__(self, network, batch):
        return relative_squared_error(_network_outputs(network, batch.x0), batch.target, batch.weights)


class FitResult(eqx.Module):
    """Output of :func:`fit`.

    Attributes:
        model: the best model (lowest validation loss; lowest training loss without validation).
        history: per-epoch arrays: ``"train_loss"``, ``"seconds"``, and with validation data
            ``"val_loss"`` and, when ``voi_masks`` were given, ``"val_MAE/<voi>"`` (eq. 9, %).
            Sequential training concatenates its networks' epochs.
        best_epoch: epoch of the kept model (of the last network for sequential training).
        seconds_per_epoch: median over epochs after the first (which compiles).
    """

    model: UnrolledEM
    history: dict
    best_epoch: int
    seconds_per_epoch: float

    @property
    def train_loss(self) -> np.ndarray:
        return self.history["train_loss"]

    @property
    def val_loss(self) -> np.ndarray | None:
        return self.history.get("val_loss")


def _trainable(model: UnrolledEM):
    """Filter spec: the networks' inexact arrays, and ``beta`` only if it is trainable."""
    spec = jax.tree_util.tree_map(lambda _: False, model)
    spec = eqx.tree_at(lambda m: m.network, spec, jax.tree_util.tree_map(eqx.is_inexact_array, model.network))
    return eqx.tree_at(lambda m: m.beta, spec, model.train_beta)


_reconstruct = eqx.filter_jit(reconstruct_batch)
_apply_network = eqx.filter_jit(_network_outputs)


def _validator(val: TrainingData | None, voi_masks, predict):
    """``model -> {"val_loss", "val_MAE/<voi>"}`` on ``val`` with ``predict(model, val)``."""
    if val is None:
        return None
    masks = {name: np.asarray(m, bool) for name, m in (voi_masks or {}).items()}
    for name, m in masks.items():
        if m.shape != tuple(val.target.shape):
            raise ValueError(f"voi_masks[{name!r}] must have the validation targets' shape {tuple(val.target.shape)}, "
                             f"got {m.shape}")
    target = np.asarray(val.target)

    def validate(model):
        x = predict(model, val)
        record = {"val_loss": float(relative_squared_error(x, val.target, val.weights))}
        x = np.asarray(x)
        for name, m in masks.items():
            present = [p for p in range(len(x)) if m[p].any()]
            record[f"val_MAE/{name}"] = float(np.mean(
                [metrics.mae(metrics.normalize_total(x[p]), metrics.normalize_total(target[p]), m[p]) for p in present]))
        return record

    return validate


def _batches(data: TrainingData, batch_size: int | None):
    n = data.n_patients
    size = n if batch_size is None else min(int(batch_size), n)

    def batches(key):
        order = np.asarray(jax.random.permutation(key, n))
        for b in range(0, n, size):
            yield (data.take(order[b : b + size]),)

    return batches


def fit(
    model: UnrolledEM,
    train: TrainingData,
    val: TrainingData | None = None,
    *,
    epochs: int,
    gradient: AbstractGradient = EndToEnd(),
    learning_rate: float | optax.Schedule = 0.002,
    weight_decay: float = 1e-4,
    clip_norm: float | None = None,
    batch_size: int | None = None,
    key: PRNGKeyArray,
    voi_masks: Mapping[str, Bool[Array, "p nx ny nz"]] | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    patience: int | None = None,
    min_improvement: float = 0.0,
    log: bool = False,
) -> FitResult:
    """Train ``model`` with AdamW on :func:`training_loss` (relative squared error to ``train.target``).

    ``gradient`` selects the training method: :class:`EndToEnd` (optionally checkpointed),
    :class:`Truncated`, or :class:`Sequential` (each outer iteration's network trained for
    ``epochs`` epochs on its own output ``s g_k(x_k / s)`` against the target, with the earlier
    ones frozen, then one regularised EM outer step produces the next inputs; needs
    ``shared=False``).

    ``learning_rate`` is a float or an optax schedule (per optimiser step), ``clip_norm`` clips
    the gradient's global norm. ``voi_masks`` (boolean ``(P, nx, ny, nz)`` per VOI, for the
    validation patients) adds the per-VOI MAE of every epoch to the history. ``checkpoint``
    names a file that is written every ``checkpoint_every`` epochs and resumed from when it
    exists (sequential training uses one file per network, ``<checkpoint>.k<k>``). Shuffling
    uses ``key``; results are reproducible for a given key, resumed or not.

    ``patience`` stops training (each network, for sequential training) once the validation
    loss (the training loss without ``val``) has not fallen by the fraction ``min_improvement``
    below its best for that many epochs; ``epochs`` is then a cap (see
    :func:`jaxspect.training.train`).
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(gradient, AbstractGradient):
        raise TypeError(f"gradient must be EndToEnd(), Truncated() or Sequential(), got {gradient!r}")
    for name, data in (("train", train), ("val", val)):
        if data is not None and data.weights is not None:
            w = np.asarray(data.weights)
            if w.shape != tuple(data.target.shape):
                raise ValueError(f"{name}.weights must be shaped like {name}.target {tuple(data.target.shape)}, "
                                 f"got {w.shape}")
            if not np.all(np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"{name}.weights must be finite and >= 0, got minimum {np.nanmin(w):.3g}")
    optimizer = make_optimizer(learning_rate, algorithm="adamw", weight_decay=float(weight_decay),
                               clip_norm=None if clip_norm is None else float(clip_norm))
    common = dict(epochs=int(epochs), optimizer=optimizer, log=log, checkpoint_every=checkpoint_every,
                  patience=patience, min_improvement=min_improvement)
    if isinstance(gradient, Sequential):
        return _fit_sequential(model, train, val, batch_size=batch_size, key=key, voi_masks=voi_masks,
                               checkpoint=checkpoint, **common)
    validate = _validator(val, voi_masks, lambda m, d: _reconstruct(m, d, gradient))
    result = train_loop(model, _UnrolledLoss(gradient), _batches(train, batch_size), key=key,
                        trainable=_trainable(model), validate=validate, checkpoint=checkpoint, **common)
    return FitResult(result.model, result.history, result.best_epoch, result.seconds_per_epoch)


def _advance(model: UnrolledEM, k: int, data: TrainingData) -> TrainingData:
    """Inputs of outer iteration ``k + 1``: one (frozen) outer step of network ``k``."""
    network = model.network_at(k)
    sens = lambda a, y: a.back(jnp.ones_like(y))

    def one(a, y, r, x):
        return model.outer_step(network, x, a, y, r, sens(a, y), Sequential())

    x1 = eqx.filter_jit(eqx.filter_vmap(one, in_axes=(_patient_axes(data), 0, 0, 0)))(
        data.projectors, data.y, data.background, data.x0)
    return eqx.tree_at(lambda d: d.x0, data, jax.lax.stop_gradient(x1))


def _fit_sequential(model, train, val, *, batch_size, key, voi_masks, checkpoint, **common):
    if model.shared:
        raise ValueError("sequential training needs per-iteration networks (UnrolledEM(shared=False))")
    arrays, static = eqx.partition(model.network, eqx.is_array)
    histories, seconds, best_epoch = [], [], -1
    for k in range(model.n_outer):
        key, sub = jax.random.split(key)
        result = train_loop(model.network_at(k), _NetworkLoss(), _batches(train, batch_size), key=sub,
                            validate=_validator(val, voi_masks, _apply_network_to), label=f"network {k + 1}: ",
                            checkpoint=None if checkpoint is None else f"{checkpoint}.k{k}", **common)
        new_arrays = eqx.filter(result.model, eqx.is_array)
        arrays = jax.tree_util.tree_map(lambda stacked, a: stacked.at[k].set(a), arrays, new_arrays)
        model = eqx.tree_at(lambda m: m.network, model, eqx.combine(arrays, static))
        train = _advance(model, k, train)
        if val is not None:
            val = _advance(model, k, val)
        histories.append(result.history)
        seconds.append(result.seconds_per_epoch)
        best_epoch = result.best_epoch
    history = {name: np.concatenate([h[name] for h in histories]) for name in histories[0]}
    return FitResult(model, history, best_epoch, float(np.mean(seconds)))


def _apply_network_to(network, data: TrainingData):
    return _apply_network(network, data.x0)
