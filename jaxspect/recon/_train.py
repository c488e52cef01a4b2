"""Training the unrolled EM: end-to-end, with gradient truncation, or sequentially.

AdamW (optax; learning rate 0.002 as in the paper), mean squared error against the true
activity, batches of patients via ``vmap``, a validation loss per epoch, the best model kept,
seeded shuffling. Trained models are saved and loaded with :func:`jaxspect.save_model` /
:func:`jaxspect.load_model`.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._operator import AbstractProjector
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
        shared_projector: ``projectors`` is one operator for every patient (static).
    """

    projectors: AbstractProjector
    y: Float[Array, "p nx nz nview"]
    background: Float[Array, "p ..."]
    x0: Float[Array, "p nx ny nz"]
    target: Float[Array, "p nx ny nz"]
    shared_projector: bool = eqx.field(static=True, default=False)

    @property
    def n_patients(self) -> int:
        return self.y.shape[0]

    def take(self, indices) -> "TrainingData":
        """The patients ``indices``."""
        pick = lambda a: a[indices]
        projectors = self.projectors if self.shared_projector else _take_module(self.projectors, indices)
        return TrainingData(projectors, pick(self.y), pick(self.background), pick(self.x0), pick(self.target),
                            self.shared_projector)


def _take_module(module, indices):
    arrays, static = eqx.partition(module, eqx.is_array)
    return eqx.combine(jax.tree_util.tree_map(lambda a: a[indices], arrays), static)


def _patient_axes(data: TrainingData):
    return None if data.shared_projector else eqx.if_array(0)


def reconstruct_batch(model: UnrolledEM, data: TrainingData, gradient: AbstractGradient = EndToEnd()):
    """``model`` applied to every patient of ``data`` (vmapped): ``(P, nx, ny, nz)``."""
    run = lambda a, y, r, x0: model(x0, a, y, r, gradient=gradient)
    return eqx.filter_vmap(run, in_axes=(_patient_axes(data), 0, 0, 0))(data.projectors, data.y, data.background, data.x0)


def mse_loss(model: UnrolledEM, data: TrainingData, gradient: AbstractGradient = EndToEnd()):
    """Mean squared error of the unrolled reconstruction against the targets."""
    return jnp.mean((reconstruct_batch(model, data, gradient) - data.target) ** 2)


class FitResult(eqx.Module):
    """Output of :func:`fit`: the best model (lowest validation loss, or training loss without
    validation data) and the per-epoch losses and times."""

    model: UnrolledEM
    train_loss: np.ndarray
    val_loss: np.ndarray | None
    best_epoch: int
    seconds_per_epoch: float


def _trainable(model: UnrolledEM):
    """Filter spec: the networks' inexact arrays, and ``beta`` only if it is trainable."""
    spec = jax.tree_util.tree_map(lambda _: False, model)
    spec = eqx.tree_at(lambda m: m.network, spec, jax.tree_util.tree_map(eqx.is_inexact_array, model.network))
    return eqx.tree_at(lambda m: m.beta, spec, model.train_beta)


def _run_epochs(params, static, loss_fn, train, val, *, epochs, batch_size, learning_rate, weight_decay, key, log):
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)
    state = optimizer.init(params)

    @eqx.filter_jit
    def step(params, state, batch):
        loss, grads = eqx.filter_value_and_grad(lambda p: loss_fn(eqx.combine(p, static), batch))(params)
        updates, state = optimizer.update(grads, state, params)
        return eqx.apply_updates(params, updates), state, loss

    evaluate = eqx.filter_jit(lambda p, batch: loss_fn(eqx.combine(p, static), batch))
    n = train.n_patients
    batch_size = n if batch_size is None else min(batch_size, n)
    best, best_loss, best_epoch = params, np.inf, -1
    train_losses, val_losses, times = [], [], []
    for epoch in range(epochs):
        key, sub = jax.random.split(key)
        order = np.asarray(jax.random.permutation(sub, n))
        start = time.perf_counter()
        losses = []
        for b in range(0, n, batch_size):
            params, state, loss = step(params, state, train.take(order[b : b + batch_size]))
            losses.append(float(loss))
        times.append(time.perf_counter() - start)
        train_losses.append(float(np.mean(losses)))
        monitored = train_losses[-1]
        if val is not None:
            val_losses.append(float(evaluate(params, val)))
            monitored = val_losses[-1]
        if monitored < best_loss:
            best, best_loss, best_epoch = params, monitored, epoch
        if log:
            extra = f", validation {val_losses[-1]:.4g}" if val is not None else ""
            print(f"epoch {epoch + 1}/{epochs}: training {train_losses[-1]:.4g}{extra} ({times[-1]:.2f} s)", flush=True)
    # The first epoch includes compilation: report the median of the rest when there is one.
    seconds = float(np.median(times[1:] if len(times) > 1 else times))
    return best, np.asarray(train_losses), (np.asarray(val_losses) if val is not None else None), best_epoch, seconds


def fit(
    model: UnrolledEM,
    train: TrainingData,
    val: TrainingData | None = None,
    *,
    epochs: int,
    gradient: AbstractGradient = EndToEnd(),
    learning_rate: float = 0.002,
    weight_decay: float = 1e-4,
    batch_size: int | None = None,
    key: PRNGKeyArray,
    log: bool = False,
) -> FitResult:
    """Train ``model`` with AdamW on the MSE to ``train.target``.

    ``gradient`` selects the training method: :class:`EndToEnd` (optionally checkpointed),
    :class:`Truncated`, or :class:`Sequential` (each outer iteration's network trained for
    ``epochs`` epochs on ``MSE(g_k(x_k), target)`` with the earlier ones frozen, then one
    regularised EM step produces the next inputs; needs ``shared=False``). Shuffling uses
    ``key``; results are reproducible for a given key.
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if not isinstance(gradient, AbstractGradient):
        raise TypeError(f"gradient must be EndToEnd(), Truncated() or Sequential(), got {gradient!r}")
    common = dict(epochs=int(epochs), batch_size=batch_size, learning_rate=learning_rate,
                  weight_decay=weight_decay, log=log)
    if not isinstance(gradient, Sequential):
        params, static = eqx.partition(model, _trainable(model))
        loss_fn = lambda m, batch: mse_loss(m, batch, gradient)
        params, train_loss, val_loss, best_epoch, seconds = _run_epochs(
            params, static, loss_fn, train, val, key=key, **common)
        return FitResult(eqx.combine(params, static), train_loss, val_loss, best_epoch, seconds)
    return _fit_sequential(model, train, val, key=key, **common)


def _advance(model: UnrolledEM, k: int, data: TrainingData) -> TrainingData:
    """Inputs of outer iteration ``k + 1``: one (frozen) outer step of network ``k``."""
    network = model.network_at(k)
    sens = lambda a, y: a.back(jnp.ones_like(y))

    def one(a, y, r, x):
        return model.outer_step(network, x, a, y, r, sens(a, y), Sequential())

    x1 = eqx.filter_jit(eqx.filter_vmap(one, in_axes=(_patient_axes(data), 0, 0, 0)))(
        data.projectors, data.y, data.background, data.x0)
    return eqx.tree_at(lambda d: d.x0, data, jax.lax.stop_gradient(x1))


def _fit_sequential(model, train, val, *, key, **common):
    if model.shared:
        raise ValueError("sequential training needs per-iteration networks (UnrolledEM(shared=False))")
    arrays, static = eqx.partition(model.network, eqx.is_array)
    train_losses, val_losses, seconds = [], [], []
    best_epoch = -1
    for k in range(model.n_outer):
        network = model.network_at(k)
        params, net_static = eqx.partition(network, eqx.is_inexact_array)

        def loss_fn(net, batch):
            return jnp.mean((jax.vmap(net)(batch.x0) - batch.target) ** 2)

        key, sub = jax.random.split(key)
        best, tl, vl, best_epoch, s = _run_epochs(params, net_static, loss_fn, train, val, key=sub, **common)
        trained = eqx.combine(best, net_static)
        new_arrays = eqx.filter(trained, eqx.is_array)
        arrays = jax.tree_util.tree_map(lambda stacked, a: stacked.at[k].set(a), arrays, new_arrays)
        model = eqx.tree_at(lambda m: m.network, model, eqx.combine(arrays, static))
        train = _advance(model, k, train)
        if val is not None:
            val = _advance(model, k, val)
        train_losses.append(tl)
        val_losses.append(vl)
        seconds.append(s)
    return FitResult(
        model,
        np.concatenate(train_losses),
        None if val is None else np.concatenate(val_losses),
        best_epoch,
        float(np.mean(seconds)),
    )
