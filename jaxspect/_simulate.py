"""Simulated SPECT data: scaled primary projections, scatter background, Poisson noise."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._operator import AbstractProjector, check_projector
from ._psf import blur_matrices, gaussian_taps


_MAX_POISSON_MEAN = 2.0**30


class SimulatedData(eqx.Module):
    """Output of :func:`simulate`.

    Attributes:
        counts: Poisson counts, ``(n_realizations, nx, nz, nview)`` (or ``(nx, nz, nview)``
            when ``n_realizations is None``).
        primary: mean primary (unscattered) counts ``A (scale * activity)``, ``(nx, nz, nview)``.
        background: mean scatter counts ``r`` (pass it to ``mlem``/``osem`` as
            ``background=``), ``(nx, nz, nview)``.
        scale: factor applied to the activity so that the primary counts total
            ``total_counts`` (1.0 when ``total_counts`` is None); reconstruct ``counts`` and
            divide by it to get back to the activity's units.
    """

    counts: Float[Array, "..."]
    primary: Float[Array, "nx nz nview"]
    background: Float[Array, "nx nz nview"]
    scale: Float[Array, ""]


def _smooth(views, fwhm_bins: float):
    """Blur every view with a wide Gaussian along both detector axes (replicate edges)."""
    nx, nz, _ = views.shape
    h = int(2 * fwhm_bins)
    taps = gaussian_taps(jnp.asarray(fwhm_bins, views.dtype), 1.0, h)
    bx, bz = blur_matrices(taps, nx), blur_matrices(taps, nz)
    return jnp.einsum("ai,ikl,bk->abl", bx, views, bz)


def simulate(
    key: PRNGKeyArray,
    activity: Float[Array, "nx ny nz"],
    projector: AbstractProjector,
    *,
    total_counts: float | None = None,
    scatter_fraction: float = 0.1,
    scatter: str = "uniform",
    scatter_fwhm_bins: float = 20.0,
    n_realizations: int | None = None,
) -> SimulatedData:
    """Project ``activity`` and draw Poisson counts ``y ~ Poisson(A x + r)``.

    Arguments:
        key: ``jax.random`` key; realisations use ``jax.random.split(key, n_realizations)``.
        activity: non-negative image on the projector's grid.
        projector: the system matrix, any :class:`jaxspect.AbstractProjector` (e.g. a
            :class:`jaxspect.SPECTProjector`).
        total_counts: expected total *primary* counts over all views (the count level); the
            activity is scaled to it (``scale`` in the result). ``None`` keeps its units.
            Means of 2^30 counts per bin or more are refused (``eqx.error_if``): the Poisson
            sampler saturates at the int32 maximum.
        scatter_fraction: mean scatter counts as a fraction of the primary counts (the paper
            uses 10%); finite.
        scatter: ``"uniform"`` (the same mean in every bin) or ``"smooth"`` (the primary
            projections blurred by a Gaussian of ``scatter_fwhm_bins`` bins, renormalised).
        n_realizations: number of independent noise realisations (vmapped), or ``None`` for a
            single one without the leading axis.
    """
    check_projector(projector)
    if scatter not in ("uniform", "smooth"):
        raise ValueError(f"scatter must be 'uniform' or 'smooth', got {scatter!r}")
    if not 0 <= scatter_fraction < math.inf:
        raise ValueError(f"scatter_fraction must be finite and >= 0, got {scatter_fraction!r}")
    if total_counts is not None and not 0 < total_counts < math.inf:
        raise ValueError(f"total_counts must be finite and positive, got {total_counts!r}")
    if n_realizations is not None and (int(n_realizations) != n_realizations or n_realizations < 1):
        raise ValueError(f"n_realizations must be a positive integer or None, got {n_realizations!r}")
    activity = eqx.error_if(activity, jnp.any(activity < 0), "activity must be non-negative")
    primary = projector(activity)
    total = jnp.sum(primary)
    scale = jnp.asarray(1.0, primary.dtype) if total_counts is None else total_counts / total
    primary = primary * scale
    if scatter == "uniform":
        background = jnp.full_like(primary, scatter_fraction * jnp.sum(primary) / primary.size)
    else:
        shape = _smooth(primary, scatter_fwhm_bins)
        background = scatter_fraction * jnp.sum(primary) * shape / jnp.sum(shape)
    mean = primary + background
    # jax.random.poisson saturates at the int32 maximum: refuse means it cannot draw from
    mean = eqx.error_if(mean, ~(jnp.max(mean) < _MAX_POISSON_MEAN),
                        "simulate: expected counts per bin must be finite and below 2^30 (lower total_counts)")

    def draw(k):
        return jax.random.poisson(k, mean).astype(mean.dtype)

    counts = draw(key) if n_realizations is None else jax.vmap(draw)(jax.random.split(key, n_realizations))
    return SimulatedData(counts, primary, background, scale)
