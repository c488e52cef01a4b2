"""SPECTnet data, training and use: simulated 2-D brain data generated on the fly, the paper's
two-stage training (autoencoder, then projection network on the encoder's codes, then
end-to-end fine-tuning), the one-step end-to-end training it compares against (Figure 12),
:func:`reconstruct` and save/load.

Simulated acquisition (the paper: analytic projection with attenuation and a depth-dependent
Gaussian collimator response "based on LEHR collimators"; 120 views over 360 degrees, 128 bins)
------------------------------------------------------------------------------------------------
- Image ``(128, 128, 1)`` of 2-mm pixels, projected by :func:`jaxspect.forward_project` (one
  2-D slice: views ``(128, 1, 120)``, turned into a ``(120, 128)`` sinogram, rows = views).
- Circular orbit of radius ``RADIUS_MM = 130`` mm (rotation axis to collimator face), a typical
  brain-SPECT radius; the largest head reaches 105 mm from the axis.
- Collimator response :func:`lehr_psf`: ``GaussianPSF(fwhm0, slope)``, ``FWHM(d) =
  sqrt(fwhm0^2 + (slope d)^2)``, fitted (least squares in FWHM^2 over the distances
  ``d = 25..235`` mm the head can occupy) to the textbook system resolution of a parallel-hole
  collimator (Cherry, Sorenson & Phelps, *Physics in Nuclear Medicine*, 4th ed., ch. 14):
  ``R_sys(d) = sqrt(R_i^2 + (D (L_eff + d) / L_eff)^2)``, ``L_eff = L - 2 / mu_Pb``, with the
  Siemens LEHR collimator's hole diameter ``D = 1.11`` mm and length ``L = 24.05`` mm, lead
  ``mu_Pb = 2.7 /mm`` at 140 keV and intrinsic resolution ``R_i = 3.8`` mm (Symbia). This gives
  ``R_sys = 7.0`` mm at 100 mm (the data sheet quotes 7.5 mm); the fit is ``fwhm0 = 4.62``
  mm, ``slope = 0.0515`` (6.9 mm at 100 mm; within 8% of the formula over 25-235 mm).
- Attenuation from the phantom's map (water and cortical bone at 140.5 keV), no scatter.
- Sinograms are in activity units: the projector's output for the activity image (sum along
  the ray of activity times attenuation factor, blurred). Optional Poisson noise
  (:func:`add_poisson_noise`): each sinogram is scaled to ``count_level`` expected counts,
  drawn, and scaled back (a calibrated system). The clinical level used by default,
  ``CLINICAL_COUNTS_PER_SLICE = 1e5``, is an estimate: a Tc-99m HMPAO/ECD brain perfusion study
  collects about 5-10 million counts over ~70 two-millimetre transaxial rows of the brain,
  i.e. ~1e5 per 2-D sinogram.
- The sinogram is padded from 120 to 128 rows by repeating its first 8 rows after the last.

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
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Callable, Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._collimators import get_collimator
from .._geometry import SPECTGeometry
from .._projector import forward_project
from .._psf import GaussianPSF
from .._serialization import register_model
from ..phantoms._brain import BrainPhantom2D, brain_phantoms_2d, phantom_keys
from ._networks import (
    PAPER_DECODER_CHANNELS,
    Autoencoder,
    SPECTnet,
    build,
    SPECTnetDecoder,
    SPECTnetEncoder,
    pad_sinogram,
    trainable_filter,
    update_batch_statistics,
    views_to_sinogram,
    weight_penalty,
)

__all__ = [
    "RADIUS_MM",
    "NVIEW",
    "PIXEL_MM",
    "CLINICAL_COUNTS_PER_SLICE",
    "lehr_psf",
    "lehr_system_fwhm",
    "spectnet_geometry",
    "project_phantoms",
    "add_poisson_noise",
    "SPECTnetBatch",
    "PhantomSet",
    "split_keys",
    "TrainingConfig",
    "StageResult",
    "train_autoencoder",
    "encode_batches",
    "train_projection_network",
    "fine_tune",
    "train_end_to_end",
    "TwoStageResult",
    "train_two_stage",
]

RADIUS_MM = 130.0
NVIEW = 120
PIXEL_MM = 2.0
CLINICAL_COUNTS_PER_SLICE = 1e5

# Siemens Symbia LEHR collimator and detector (see the module docstring).
INTRINSIC_FWHM_MM = 3.8


def lehr_system_fwhm(distance_mm):
    """Textbook LEHR system resolution (FWHM, mm) at ``distance_mm`` from the collimator face:
    :mod:`jaxspect._collimators`' ``"sy-lehr"`` at 140 keV, with the image plane at the
    collimator's back face (``c = 0``, as in the paper's textbook formula)."""
    return get_collimator("sy-lehr").system_fwhm_mm(distance_mm, 140.0, intrinsic_fwhm_mm=INTRINSIC_FWHM_MM,
                                                    image_plane_mm=0.0)


def lehr_psf(distance_range_mm=(25.0, 235.0)) -> GaussianPSF:
    """``GaussianPSF(fwhm0, slope)`` fitted to :func:`lehr_system_fwhm` over ``distance_range_mm``
    (least squares in FWHM^2, which is linear in ``fwhm0^2`` and ``slope^2``)."""
    lo, hi = distance_range_mm
    if not 0 <= lo < hi:
        raise ValueError(f"distance_range_mm must be (lo, hi) with 0 <= lo < hi, got {distance_range_mm!r}")
    d = np.linspace(lo, hi, 211)
    design = np.stack([np.ones_like(d), d**2], axis=1)
    (c0, c1), *_ = np.linalg.lstsq(design, lehr_system_fwhm(d) ** 2, rcond=None)
    return GaussianPSF(math.sqrt(c0), math.sqrt(c1))


def spectnet_geometry(*, image_size: int = 128, pixel_size: float = PIXEL_MM, nview: int = NVIEW,
                      radius: float = RADIUS_MM, psf=None) -> SPECTGeometry:
    """The paper's acquisition: a 2-D slice ``(n, n, 1)`` of ``pixel_size`` mm, ``nview``
    views over 360 degrees, circular orbit of ``radius`` mm, LEHR response (:func:`lehr_psf`)."""
    if nview > image_size:
        raise ValueError(f"nview must be <= image_size (the sinogram is padded to a square), got {nview} > {image_size}")
    psf = lehr_psf() if psf is None else psf
    return SPECTGeometry((image_size, image_size, 1), (pixel_size,) * 3, psf, nview=nview, radii=radius)


@eqx.filter_jit
def project_phantoms(geometry: SPECTGeometry, activity: Float[Array, "b n n"],
                     mumap: Float[Array, "b n n"]) -> Float[Array, "b nview n"]:
    """Noise-free sinograms ``(B, nview, n)`` (rows = views) of 2-D activity images with their
    attenuation maps (1/mm), by :func:`jaxspect.forward_project` (8 views per loop step)."""
    one = lambda a, m: forward_project(a[..., None], m[..., None], geometry, views_per_batch=8)
    return views_to_sinogram(jax.vmap(one)(activity, mumap))


@eqx.filter_jit
def add_poisson_noise(keys: PRNGKeyArray, sinograms: Float[Array, "b nview n"],
                      count_level: float) -> Float[Array, "b nview n"]:
    """Poisson noise at ``count_level`` expected counts per sinogram: ``Poisson(s y) / s`` with
    ``s = count_level / sum(y)`` per sinogram (``keys``: one per sinogram)."""
    total = jnp.sum(sinograms, axis=(1, 2), keepdims=True)
    scale = count_level / jnp.where(total > 0, total, 1)
    draw = lambda k, lam: jax.random.poisson(k, lam).astype(sinograms.dtype)
    return jax.vmap(draw)(keys, sinograms * scale) / scale


class SPECTnetBatch(eqx.Module):
    """A batch of training/evaluation data.

    Attributes:
        activity: ``(B, n, n)`` true activity.
        mumap: ``(B, n, n)`` attenuation maps, 1/mm.
        sinogram: ``(B, n, n)`` padded sinograms (activity units; noisy if the set has a
            count level), or ``None`` when not asked for.
        high_uptake, background: ``(B, n, n)`` region masks for evaluation.
        indices: ``(B,)`` phantom indices within their set.
    """

    activity: Float[Array, "b n n"]
    mumap: Float[Array, "b n n"]
    sinogram: Float[Array, "b n n"] | None
    high_uptake: Array
    background: Array
    indices: Array


def split_keys(key: PRNGKeyArray) -> tuple[PRNGKeyArray, PRNGKeyArray, PRNGKeyArray]:
    """Keys of the training, validation and test sets (``fold_in(key, 0/1/2)``): the sets never
    share a phantom, whatever their sizes (the paper's split is 16,000 / 2,000 / 2,000)."""
    return tuple(jax.random.fold_in(key, i) for i in range(3))


class PhantomSet:
    """Phantoms ``0 .. size-1`` of a data set seeded by ``key`` and their sinograms.

    Phantom ``i`` is ``brain_phantom_2d(fold_in(key, i))``, generated when a batch needs it
    (a jitted, vmapped batch; nothing is stored). Sinograms are projected on first use and,
    with ``cache=True``, kept (noise-free) in host memory; with ``count_level`` each phantom's
    noise realisation is fixed by its key.

    Arguments:
        key: PRNG key of the set (see :func:`split_keys`).
        size: number of phantoms.
        geometry: from :func:`spectnet_geometry` (its image must be ``(n, n, 1)``).
        count_level: expected counts per sinogram for Poisson noise, or ``None`` (noise-free).
        cache: keep computed sinograms.
        uptake: fix every phantom's high-uptake activity (scalar or ``(size,)``), or ``None``.
        projection_batch: phantoms projected per call when filling the cache.
    """

    def __init__(self, key: PRNGKeyArray, size: int, geometry: SPECTGeometry, *, count_level: float | None = None,
                 cache: bool = True, uptake=None, projection_batch: int = 32):
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        n, n2, nz = geometry.image_shape
        if nz != 1:
            raise ValueError(f"geometry must be 2-D, image_shape (n, n, 1); got {geometry.image_shape}")
        if count_level is not None and not count_level > 0:
            raise ValueError(f"count_level must be a positive number of counts or None, got {count_level!r}")
        self.key = key
        self.size = int(size)
        self.geometry = geometry
        self.count_level = None if count_level is None else float(count_level)
        self.cache = cache
        self.projection_batch = int(projection_batch)
        self.image_size = n
        self.pixel_size = geometry.voxel_size[0]
        if uptake is not None:
            uptake = np.broadcast_to(np.asarray(uptake, np.float64), (self.size,))
        self.uptake = uptake
        self._sinograms = None
        self._have = np.zeros(self.size, bool)

    def __len__(self) -> int:
        return self.size

    def with_count_level(self, count_level: float | None) -> "PhantomSet":
        """The same phantoms (sharing the noise-free sinogram cache) at another count level."""
        other = PhantomSet.__new__(PhantomSet)
        other.__dict__.update(self.__dict__)
        other.count_level = None if count_level is None else float(count_level)
        if count_level is not None and not count_level > 0:
            raise ValueError(f"count_level must be positive or None, got {count_level!r}")
        return other

    def _check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} of shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise ValueError(f"indices must lie in [0, {self.size}), got range [{idx.min()}, {idx.max()}]")
        return idx

    def phantoms(self, indices) -> BrainPhantom2D:
        """Phantoms ``indices`` as a batched :class:`BrainPhantom2D`."""
        idx = self._check_indices(indices)
        options = dict(size=self.image_size, pixel_size=self.pixel_size)
        if self.uptake is not None:
            options["uptake"] = jnp.asarray(self.uptake[idx], jnp.result_type(float))
        return brain_phantoms_2d(phantom_keys(self.key, jnp.asarray(idx)), **options)

    def noise_free_sinograms(self, indices, phantoms: BrainPhantom2D | None = None) -> Float[Array, "b nview n"]:
        """Noise-free sinograms ``(B, nview, n)`` of phantoms ``indices``."""
        idx = self._check_indices(indices)
        if not self.cache:
            p = self.phantoms(idx) if phantoms is None else phantoms
            return project_phantoms(self.geometry, p.activity, p.mumap)
        if self._sinograms is None:
            nview = self.geometry.nview
            self._sinograms = np.zeros((self.size, nview, self.image_size), np.dtype(jnp.result_type(float)))
        missing = np.unique(idx[~self._have[idx]])
        for b in range(0, missing.size, self.projection_batch):
            chunk = missing[b : b + self.projection_batch]
            # Always project full chunks (padded with a repeat) so one compilation serves all.
            padded = np.concatenate([chunk, np.full(self.projection_batch - chunk.size, chunk[0])])
            p = self.phantoms(padded)
            sino = np.asarray(project_phantoms(self.geometry, p.activity, p.mumap))
            self._sinograms[chunk] = sino[: chunk.size]
            self._have[chunk] = True
        return jnp.asarray(self._sinograms[idx])

    def fill_cache(self, log: bool = False) -> float:
        """Project every phantom now (with ``cache=True``); returns the seconds it took."""
        start = time.perf_counter()
        self.noise_free_sinograms(np.arange(self.size))
        seconds = time.perf_counter() - start
        if log:
            print(f"projected {self.size} phantoms in {seconds:.1f} s", flush=True)
        return seconds

    def sinograms(self, indices, phantoms: BrainPhantom2D | None = None) -> Float[Array, "b nview n"]:
        """Sinograms ``(B, nview, n)`` (unpadded), noisy when the set has a count level."""
        idx = self._check_indices(indices)
        s = self.noise_free_sinograms(idx, phantoms)
        if self.count_level is None:
            return s
        keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(phantom_keys(self.key, jnp.asarray(idx)))
        return add_poisson_noise(keys, s, self.count_level)

    def batch(self, indices, *, sinograms: bool = True) -> SPECTnetBatch:
        """Phantoms ``indices`` with (``sinograms=True``) their padded sinograms."""
        idx = self._check_indices(indices)
        p = self.phantoms(idx)
        sino = pad_sinogram(self.sinograms(idx, p), self.image_size) if sinograms else None
        return SPECTnetBatch(p.activity, p.mumap, sino, p.high_uptake, p.background, jnp.asarray(idx))

    def batches(self, batch_size: int, *, key: PRNGKeyArray | None = None, sinograms: bool = True,
                drop_last: bool = False) -> Iterator[SPECTnetBatch]:
        """Batches over the set, in a random order when ``key`` is given."""
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        order = np.arange(self.size) if key is None else np.asarray(jax.random.permutation(key, self.size))
        stop = self.size - (self.size % batch_size if drop_last else 0)
        for b in range(0, stop, batch_size):
            yield self.batch(order[b : b + batch_size], sinograms=sinograms)


# --- training ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Optimiser settings and epochs per stage (defaults: the paper's).

    Attributes:
        batch_size: minibatch size (160).
        learning_rate: Adam learning rate (1e-4).
        l2: L2 regularisation factor (0.08, MATLAB convention; see the module docstring).
        epochs_autoencoder: 50. epochs_projection: 20. epochs_fine_tune: 19.
        epochs_end_to_end: epochs of the one-step comparison (300 in Figure 12).
    """

    batch_size: int = 160
    learning_rate: float = 1e-4
    l2: float = 0.08
    epochs_autoencoder: int = 50
    epochs_projection: int = 20
    epochs_fine_tune: int = 19
    epochs_end_to_end: int = 300

    def __post_init__(self):
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
    (mean over the epoch's steps), validation metric (``metric_name``), steps and seconds."""

    model: eqx.Module
    train_loss: np.ndarray
    val_metric: np.ndarray
    metric_name: str
    best_epoch: int
    steps: int
    seconds: float
    step_losses: np.ndarray


def _half_sse(pred, target):
    """MATLAB regression loss: half the sum of squared errors per sample, mean over the batch."""
    axes = tuple(range(1, pred.ndim))
    return 0.5 * jnp.mean(jnp.sum((pred - target) ** 2, axis=axes))


@functools.lru_cache(maxsize=None)
def _optimizer_and_step(loss_fn, learning_rate, l2):
    """Adam and a jitted training step for ``loss_fn(model, *data) -> (data loss, batch-norm
    stats)``; cached so that repeated stages reuse the compiled step."""
    optimizer = optax.adam(learning_rate)

    @eqx.filter_jit
    def step(model, opt_state, *data):
        params, rest = eqx.partition(model, trainable_filter(model))

        def objective(p):
            m = eqx.combine(p, rest)
            loss, stats = loss_fn(m, *data)
            return loss + 0.5 * l2 * weight_penalty(m), (loss, stats)

        (_, (loss, stats)), grads = eqx.filter_value_and_grad(objective, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        model = eqx.combine(eqx.apply_updates(params, updates), rest)
        return update_batch_statistics(model, stats), opt_state, loss

    return optimizer, step


def _fit(model, loss_fn, train_data: Callable, validate: Callable, *, epochs, config: TrainingConfig, key,
         log, name, metric_name):
    """Generic loop: ``train_data(epoch_key)`` yields tuples of step arguments; ``validate(model)``
    returns the validation metric (lower is better)."""
    optimizer, step = _optimizer_and_step(loss_fn, float(config.learning_rate), float(config.l2))
    opt_state = optimizer.init(eqx.filter(model, trainable_filter(model)))
    best, best_metric, best_epoch = model, validate(model) if epochs == 0 else np.inf, -1
    train_loss, val_metric, step_losses = [], [], []
    start = time.perf_counter()
    for epoch in range(epochs):
        key, sub = jax.random.split(key)
        losses = []
        for data in train_data(sub):
            model, opt_state, loss = step(model, opt_state, *data)
            losses.append(float(loss))
        step_losses.extend(losses)
        train_loss.append(float(np.mean(losses)))
        val_metric.append(float(validate(model)))
        if val_metric[-1] < best_metric:
            best, best_metric, best_epoch = model, val_metric[-1], epoch
        if log:
            print(f"{name} epoch {epoch + 1}/{epochs}: training loss {train_loss[-1]:.4g}, "
                  f"validation {metric_name} {val_metric[-1]:.4g} ({time.perf_counter() - start:.0f} s)", flush=True)
    return StageResult(best, np.asarray(train_loss), np.asarray(val_metric), metric_name, best_epoch,
                       len(step_losses), time.perf_counter() - start, np.asarray(step_losses))


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
