"""SPECTnet's data pipeline: sets of random 2-D brain phantoms generated on the fly from PRNG
keys, their (cached) sinograms and minibatches.

With ``oversample = k`` a set simulates its data with a model the reconstruction does not
share: each phantom is generated ``k`` times finer from the same key (its geometry is in mm, so
it is the same head and regions, sampled finer), projected with
:func:`~jaxspect.spectnet.oversampled_geometry`, and its detector bins merged ``k`` at a time
(:func:`~jaxspect.spectnet.bin_sinogram`); the ground truth on the reconstruction grid is the
``k x k`` block mean of activity, attenuation map and bone fraction, and the region masks are
the blocks' majority (more than half the fine pixels; mixed blocks belong to neither region)
(:func:`downsample_phantoms`).
"""

from __future__ import annotations

import time
from typing import Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._geometry import SPECTGeometry
from ..phantoms._brain import BrainPhantom2D, brain_phantoms_2d, phantom_keys
from ._acquisition import add_poisson_noise, bin_sinogram, oversampled_geometry, project_phantoms
from ._networks import pad_sinogram

__all__ = ["SPECTnetBatch", "PhantomSet", "split_keys", "downsample_phantoms"]


def _block_mean(x, k):
    *batch, m, _ = x.shape
    return x.reshape(*batch, m // k, k, m // k, k).mean(axis=(-3, -1))


@eqx.filter_jit
def _downsample(phantoms: BrainPhantom2D, k: int) -> BrainPhantom2D:
    dtype = phantoms.activity.dtype
    majority = lambda mask: _block_mean(mask.astype(dtype), k) > 0.5
    return eqx.tree_at(
        lambda p: (p.activity, p.mumap, p.high_uptake, p.background, p.bone_fraction), phantoms,
        (_block_mean(phantoms.activity, k), _block_mean(phantoms.mumap, k), majority(phantoms.high_uptake),
         majority(phantoms.background), _block_mean(phantoms.bone_fraction, k)))


def downsample_phantoms(phantoms: BrainPhantom2D, factor: int) -> BrainPhantom2D:
    """Phantoms ``(..., k n, k n)`` on the grid ``k`` times coarser: activity, attenuation map
    and bone fraction are ``k x k`` block means; ``high_uptake`` and ``background`` are the
    blocks' majority (more than half of the ``k^2`` fine pixels), so a block split between the
    regions belongs to neither. Scalar fields are unchanged."""
    if not isinstance(factor, (int, np.integer)) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    m = phantoms.activity.shape[-1]
    if m % factor:
        raise ValueError(f"phantoms of {m} pixels cannot be downsampled by factor={factor}")
    return phantoms if factor == 1 else _downsample(phantoms, int(factor))

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
    noise realisation is fixed by its key and ``realisation``: realisation ``r`` of phantom
    ``i`` draws from ``fold_in(phantom_key_i, 1 + r)``.

    Arguments:
        key: PRNG key of the set (see :func:`split_keys`).
        size: number of phantoms.
        geometry: from :func:`spectnet_geometry` (its image must be ``(n, n, 1)``).
        count_level: expected counts per sinogram for Poisson noise, or ``None`` (noise-free).
        oversample: simulate on a grid this many times finer than ``geometry`` and bin down
            (see the module docstring); 1: the reconstruction's own model (the inverse crime).
        realisation: index of the noise realisation (with ``count_level``).
        cache: keep computed sinograms.
        uptake: fix every phantom's high-uptake activity (scalar or ``(size,)``), or ``None``.
        projection_batch: phantoms projected per call when filling the cache.
    """

    def __init__(self, key: PRNGKeyArray, size: int, geometry: SPECTGeometry, *, count_level: float | None = None,
                 oversample: int = 1, realisation: int = 0, cache: bool = True, uptake=None,
                 projection_batch: int = 32):
        if not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        n, n2, nz = geometry.image_shape
        if nz != 1:
            raise ValueError(f"geometry must be 2-D, image_shape (n, n, 1); got {geometry.image_shape}")
        if count_level is not None and not count_level > 0:
            raise ValueError(f"count_level must be a positive number of counts or None, got {count_level!r}")
        if not isinstance(realisation, (int, np.integer)) or realisation < 0:
            raise ValueError(f"realisation must be a non-negative integer, got {realisation!r}")
        self.key = key
        self.size = int(size)
        self.geometry = geometry
        self.oversample = int(oversample) if isinstance(oversample, (int, np.integer)) else oversample
        self.simulation_geometry = oversampled_geometry(geometry, oversample)
        self.realisation = int(realisation)
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

    def with_count_level(self, count_level: float | None, realisation: int | None = None) -> "PhantomSet":
        """The same phantoms (sharing the noise-free sinogram cache) at another count level and
        (optionally) noise realisation."""
        if count_level is not None and not count_level > 0:
            raise ValueError(f"count_level must be positive or None, got {count_level!r}")
        if realisation is not None and (not isinstance(realisation, (int, np.integer)) or realisation < 0):
            raise ValueError(f"realisation must be a non-negative integer, got {realisation!r}")
        other = PhantomSet.__new__(PhantomSet)
        other.__dict__.update(self.__dict__)
        other.count_level = None if count_level is None else float(count_level)
        if realisation is not None:
            other.realisation = int(realisation)
        return other

    def _check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} of shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise ValueError(f"indices must lie in [0, {self.size}), got range [{idx.min()}, {idx.max()}]")
        return idx

    def simulation_phantoms(self, indices) -> BrainPhantom2D:
        """Phantoms ``indices`` on the simulation grid (``oversample`` times finer)."""
        idx = self._check_indices(indices)
        k = self.oversample
        options = dict(size=k * self.image_size, pixel_size=self.pixel_size / k)
        if self.uptake is not None:
            options["uptake"] = jnp.asarray(self.uptake[idx], jnp.result_type(float))
        return brain_phantoms_2d(phantom_keys(self.key, jnp.asarray(idx)), **options)

    def phantoms(self, indices) -> BrainPhantom2D:
        """Phantoms ``indices`` as a batched :class:`BrainPhantom2D` on the reconstruction grid
        (the ground truth)."""
        return downsample_phantoms(self.simulation_phantoms(indices), self.oversample)

    def _project(self, idx, phantoms: BrainPhantom2D | None = None):
        if self.oversample == 1:
            p = self.phantoms(idx) if phantoms is None else phantoms
            return project_phantoms(self.geometry, p.activity, p.mumap)
        p = self.simulation_phantoms(idx)
        return bin_sinogram(project_phantoms(self.simulation_geometry, p.activity, p.mumap), self.oversample)

    def noise_free_sinograms(self, indices, phantoms: BrainPhantom2D | None = None) -> Float[Array, "b nview n"]:
        """Noise-free sinograms ``(B, nview, n)`` of phantoms ``indices`` (``phantoms``: the
        same phantoms already generated, used only without oversampling and cache)."""
        idx = self._check_indices(indices)
        if not self.cache:
            return self._project(idx, phantoms)
        if self._sinograms is None:
            nview = self.geometry.nview
            self._sinograms = np.zeros((self.size, nview, self.image_size), np.dtype(jnp.result_type(float)))
        missing = np.unique(idx[~self._have[idx]])
        for b in range(0, missing.size, self.projection_batch):
            chunk = missing[b : b + self.projection_batch]
            # Always project full chunks (padded with a repeat) so one compilation serves all.
            padded = np.concatenate([chunk, np.full(self.projection_batch - chunk.size, chunk[0])])
            sino = np.asarray(self._project(padded))
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
        r = 1 + self.realisation
        keys = jax.vmap(lambda k: jax.random.fold_in(k, r))(phantom_keys(self.key, jnp.asarray(idx)))
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
