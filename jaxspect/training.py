"""One training loop for every learned model in jaxspect.

:func:`train` runs epochs of optimiser steps over minibatches, validates after every epoch,
keeps the best model, records a per-epoch history, and can checkpoint and resume, so that a
600-epoch run survives an interruption. The unrolled EM (:func:`jaxspect.recon.fit`), SPECTnet's
stages and the benchmarks all train through it.

- The optimiser is any ``optax.GradientTransformation``; :func:`make_optimizer` builds the usual
  one (Adam/AdamW, optional L2 penalty, gradient clipping, a learning-rate schedule) and returns
  the *same object* for the same settings, so that the jitted step below is compiled once per
  model structure and loss and reused by later calls (tests, sweeps, resumed runs).
- ``loss(model, *batch)`` returns a scalar, or ``(scalar, aux)`` when ``after_step`` is given:
  ``after_step(model, aux)`` then updates non-trained state after each step (batch-norm running
  statistics). Pass a module-level function or an Equinox module, not a fresh ``lambda``, to
  reuse the compiled step across calls.
- Checkpoint files (``checkpoint=path``) hold the model, the optimiser state, the best model,
  the PRNG key and the history, written atomically (temporary file, then rename) every
  ``checkpoint_every`` epochs. Calling :func:`train` again with the same path resumes from the
  last completed epoch; the result is the same as an uninterrupted run with the same key.
- Early stopping (``patience=N``): once the best ``monitor`` value has not improved by more than
  the fraction ``min_improvement`` for ``N`` epochs, training stops; ``epochs`` is then a cap.
  The history ends at the stopping epoch and ``TrainingResult.stopped`` says so.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Iterable, Mapping

import equinox as eqx
import jax
import numpy as np
import optax
from jaxtyping import PRNGKeyArray

__all__ = ["TrainingResult", "make_optimizer", "train"]

_CHECKPOINT_FORMAT = 2


@functools.lru_cache(maxsize=64)
def make_optimizer(
    learning_rate: float | optax.Schedule = 0.002,
    *,
    algorithm: str = "adamw",
    weight_decay: float = 1e-4,
    l2: float = 0.0,
    l2_mask: Callable | None = None,
    clip_norm: float | None = None,
) -> optax.GradientTransformation:
    """Adam or AdamW with the options long runs need (cached: equal settings, same object).

    Arguments:
        learning_rate: a float or an optax schedule (``step -> rate``, e.g.
            ``optax.cosine_decay_schedule(2e-3, 1200)``).
        algorithm: ``"adamw"`` (decoupled ``weight_decay``) or ``"adam"``.
        weight_decay: AdamW's decoupled weight decay (ignored by ``"adam"``).
        l2: coefficient of an L2 penalty ``l2 / 2 * sum(w^2)`` added to the loss (its gradient
            ``l2 * w`` is added before the Adam scaling); ``l2_mask(params)`` selects the
            penalised leaves (default: all).
        clip_norm: clip the gradient's global norm to this value first (``None``: no clipping).
    """
    if algorithm not in ("adam", "adamw"):
        raise ValueError(f"algorithm must be 'adam' or 'adamw', got {algorithm!r}")
    if not callable(learning_rate) and not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be positive or an optax schedule, got {learning_rate!r}")
    if clip_norm is not None and not float(clip_norm) > 0:
        raise ValueError(f"clip_norm must be positive or None, got {clip_norm!r}")
    if not float(l2) >= 0 or not float(weight_decay) >= 0:
        raise ValueError(f"l2 and weight_decay must be >= 0, got {l2!r} and {weight_decay!r}")
    chain = []
    if clip_norm is not None:
        chain.append(optax.clip_by_global_norm(float(clip_norm)))
    if l2 > 0:
        chain.append(optax.add_decayed_weights(float(l2), mask=l2_mask))
    if algorithm == "adamw":
        chain.append(optax.adamw(learning_rate, weight_decay=float(weight_decay)))
    else:
        chain.append(optax.adam(learning_rate))
    return chain[0] if len(chain) == 1 else optax.chain(*chain)


class TrainingResult(eqx.Module):
    """Output of :func:`train`.

    Attributes:
        model: the model of the best epoch (lowest ``monitor``; the last one without validation).
        last_model: the model after the last epoch.
        history: per-epoch records, each an array of length ``epochs``: ``"train_loss"`` (mean
            over the epoch's steps), ``"seconds"`` and every entry ``validate`` returned.
        best_epoch: 0-based index of the kept epoch.
        seconds_per_epoch: median epoch time, the first (compiling) epoch excluded when there is
            more than one.
        stopped: whether the plateau rule (``patience``) ended training before ``epochs``.
    """

    model: Any
    last_model: Any
    history: dict
    best_epoch: int
    seconds_per_epoch: float
    stopped: bool = False


@eqx.filter_jit
def _step(model, opt_state, batch, loss, optimizer, trainable, after_step):
    params, rest = eqx.partition(model, trainable)

    def objective(p):
        out = loss(eqx.combine(p, rest), *batch)
        return out if after_step is not None else (out, None)

    (value, aux), grads = eqx.filter_value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    model = eqx.combine(eqx.apply_updates(params, updates), rest)
    if after_step is not None:
        model = after_step(model, aux)
    return model, opt_state, value


def _key_data(key):
    return jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key


def _restore_key(data, like):
    return jax.random.wrap_key_data(data) if jax.dtypes.issubdtype(like.dtype, jax.dtypes.prng_key) else data


def _structure(tree) -> str:
    """A fingerprint of a pytree's structure, shapes and dtypes."""
    leaves, treedef = jax.tree_util.tree_flatten(eqx.filter(tree, eqx.is_array))
    return json.dumps([str(treedef), [[list(x.shape), str(x.dtype)] for x in leaves]])


def _write_checkpoint(path, meta: dict, arrays) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write((json.dumps(meta) + "\n").encode())
            eqx.tree_serialise_leaves(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _read_checkpoint(path, like, fingerprint: str):
    with open(path, "rb") as f:
        try:
            meta = json.loads(f.readline().decode())
        except (UnicodeDecodeError, json.JSONDecodeError):
            meta = None
        if not isinstance(meta, dict) or "fingerprint" not in meta:
            raise ValueError(f"checkpoint {path} is not a jaxspect training checkpoint (format {_CHECKPOINT_FORMAT})")
        if meta.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint {path} has format {meta.get('format')}, this jaxspect reads format "
                             f"{_CHECKPOINT_FORMAT}: delete it or use another checkpoint path")
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(f"checkpoint {path} was written for a different model, optimiser or loop "
                             "(structure, shapes or dtypes differ): use another checkpoint path or delete it")
        try:
            arrays = eqx.tree_deserialise_leaves(f, like)
        except Exception as err:  # truncated or foreign data after a valid header
            raise ValueError(f"checkpoint {path} is damaged ({type(err).__name__}: {err})") from None
    return meta, arrays


def train(
    model,
    loss: Callable,
    batches: Callable[[PRNGKeyArray], Iterable[tuple]],
    *,
    epochs: int,
    optimizer: optax.GradientTransformation,
    key: PRNGKeyArray,
    trainable: Callable = eqx.is_inexact_array,
    validate: Callable[[Any], float | Mapping[str, float]] | None = None,
    monitor: str = "val_loss",
    after_step: Callable | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    patience: int | None = None,
    min_improvement: float = 0.0,
    log: bool = False,
    label: str = "",
) -> TrainingResult:
    """Train ``model`` for ``epochs`` epochs (see the module docstring).

    Arguments:
        model: an Equinox module (any pytree).
        loss: ``loss(model, *batch) -> scalar`` (or ``(scalar, aux)`` with ``after_step``).
        batches: ``batches(epoch_key)`` yields the epoch's minibatches as tuples of arguments.
        epochs: total epochs (a resumed run continues up to this number).
        optimizer: an ``optax.GradientTransformation`` (see :func:`make_optimizer`).
        key: PRNG key; one subkey per epoch goes to ``batches``.
        trainable: an ``eqx.partition`` filter spec: a function applied to every leaf, or a
            pytree of bools like ``model``; the rest of the model is held fixed.
        validate: ``model -> float`` (recorded as ``"val_loss"``) or ``-> {name: float}``; run
            after every epoch. The model with the lowest ``monitor`` entry is kept.
        after_step: ``(model, aux) -> model`` after each step (e.g. batch-norm statistics).
        checkpoint: file to checkpoint to and resume from; ``checkpoint_every`` epochs apart
            (and after the last one).
        patience: stop once the best ``monitor`` value (validation, else training loss) has not
            fallen below ``(1 - min_improvement)`` times the last such improvement for this many
            epochs (``None``: run all ``epochs``).
        min_improvement: the relative improvement (a fraction, e.g. ``0.01``) that resets the
            patience counter.
        log: print one line per epoch, prefixed with ``label``.
    """
    if int(epochs) != epochs or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if int(checkpoint_every) != checkpoint_every or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    if patience is not None and (int(patience) != patience or patience < 1):
        raise ValueError(f"patience must be a positive integer or None, got {patience!r}")
    if not 0 <= float(min_improvement) < 1:
        raise ValueError(f"min_improvement must be a fraction in [0, 1), got {min_improvement!r}")
    opt_state = optimizer.init(eqx.filter(model, trainable))
    best, best_value, best_epoch, start_epoch = model, np.inf, -1, 0
    reference, reference_epoch, stopped = np.inf, 0, False  # the plateau rule's state
    history: dict[str, list] = {"train_loss": [], "seconds": []}
    fingerprint = _structure((model, opt_state)) + f"|{label}|{monitor}"
    if checkpoint is not None and os.path.exists(checkpoint):
        meta, (model, opt_state, best, key_data) = _read_checkpoint(
            checkpoint, (model, opt_state, best, _key_data(key)), fingerprint)
        key = _restore_key(key_data, key)
        history = {k: list(v) for k, v in meta["history"].items()}
        start_epoch, best_epoch = meta["epoch"], meta["best_epoch"]
        best_value = np.inf if meta["best_value"] is None else meta["best_value"]
        reference = np.inf if meta["reference"] is None else meta["reference"]
        reference_epoch, stopped = meta["reference_epoch"], meta["stopped"]
        if log:
            print(f"{label}resumed from {checkpoint} after epoch {start_epoch}", flush=True)
    for epoch in range(start_epoch, int(epochs)):
        if stopped:
            break
        key, sub = jax.random.split(key)
        start = time.perf_counter()
        losses = []
        for batch in batches(sub):
            model, opt_state, value = _step(model, opt_state, tuple(batch), loss, optimizer, trainable, after_step)
            losses.append(float(value))
        history["train_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        history["seconds"].append(time.perf_counter() - start)
        record = {}
        if validate is not None:
            out = validate(model)
            record = dict(out) if isinstance(out, Mapping) else {"val_loss": out}
            for name, value in record.items():
                history.setdefault(name, []).append(float(value))
        current = record.get(monitor, history["train_loss"][-1])
        if current < best_value:
            best, best_value, best_epoch = model, float(current), epoch
        if current < reference * (1 - float(min_improvement)):
            reference, reference_epoch = float(current), epoch + 1
        stopped = patience is not None and epoch + 1 - reference_epoch >= patience and epoch + 1 < epochs
        if log:
            extra = "".join(f", {k} {v:.4g}" for k, v in record.items())
            stop = (f"; {monitor} not {100 * float(min_improvement):g}% below its best for {patience} epochs: "
                    "stopping" if stopped else "")
            print(f"{label}epoch {epoch + 1}/{epochs}: train_loss {history['train_loss'][-1]:.4g}{extra} "
                  f"({history['seconds'][-1]:.2f} s){stop}", flush=True)
        if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs or stopped):
            finite = lambda v: None if not np.isfinite(v) else v
            meta = {"format": _CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epoch": epoch + 1,
                    "best_epoch": best_epoch, "best_value": finite(best_value), "reference": finite(reference),
                    "reference_epoch": reference_epoch, "stopped": stopped, "history": history}
            _write_checkpoint(checkpoint, meta, (model, opt_state, best, _key_data(key)))
    times = history["seconds"]
    seconds = float(np.median(times[1:] if len(times) > 1 else times)) if times else float("nan")
    return TrainingResult(best, model, {k: np.asarray(v) for k, v in history.items()}, best_epoch, seconds,
                          stopped)
