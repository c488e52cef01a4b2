"""Regularised (maximum a posteriori) reconstruction: one-step-late EM and BSREM.

Both maximise the penalised Poisson log-likelihood

    Phi(x) = L(x) - beta * s * U(x),    L(x) = sum_i y_i log(A x + r)_i - (A x + r)_i,

over ``x >= 0``, with ``U`` the energy of a prior (:mod:`jaxspect.recon._priors`) and ``s`` the
**mean sensitivity** ``mean_j (A'1)_j`` over all voxels of the image (counts per unit of ``x``,
summed over views). ``L``'s curvature scales with ``A'1``, so writing the penalty weight as
``beta * s`` keeps a given ``beta`` smoothing about as much when the number of views, the
acquisition time or the collimator efficiency change (and it is independent of the number of
subsets). Units: ``beta * s * U`` is in counts (as ``L``), so ``beta`` has units of
``1 / (units of x)`` for the quadratic prior (whose ``U`` is quadratic in ``x``: its ``beta``
must scale inversely with the count level) and is dimensionless for the relative difference
prior (whose ``U`` scales like ``x``, so its ``beta`` carries over between count levels).
Neither is independent of the grid: the data term's curvature per voxel is about
``(A'1)_j / (n x_j)`` with ``n`` the number of voxels along a ray (projections sum over
depth), so for a finer grid ``beta`` must shrink about as ``1 / n`` (useful RDP values:
``1e-4 .. 3e-3`` at 32 to 64 voxels across, see ``benchmarks/map.py``).

With ``S`` ordered subsets the objective is split as ``Phi = sum_s Phi_s`` with
``Phi_s(x) = L_s(x) - beta * s_s * U(x)``, ``s_s = mean(A_s'1)`` (so ``sum_s s_s = s``).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._em import EMResult, _check_inputs, _check_iterations, _em_update, _history, _subset_iterations
from ._priors import AbstractPrior

#: OSL: denominators ``A_s'1 + beta s_s dU/dx`` are kept ``>=`` this fraction of ``A_s'1``.
OSL_MIN_DENOMINATOR = 0.01
#: BSREM: an update may shrink a voxel at most to this fraction of its value (instead of
#: truncating it at 0, where the multiplicative preconditioner ``x / A'1`` would freeze it).
BSREM_FLOOR = 1e-3


def _check_nonnegative(name, value, *, positive=False, at_most=None):
    """A scalar hyper-parameter as an array (so changing it does not recompile)."""
    if not isinstance(value, jax.core.Tracer):
        if jnp.ndim(value) != 0:
            raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")
        v = float(value)
        if not (v > 0 if positive else v >= 0) or v == float("inf") or (at_most is not None and v > at_most):
            bound = f"in (0, {at_most}]" if at_most is not None else ("> 0" if positive else ">= 0")
            raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return jnp.asarray(value, jnp.result_type(float))


def _check_prior(prior):
    if not isinstance(prior, AbstractPrior):
        raise TypeError(f"prior must be a jaxspect prior (QuadraticPrior, RelativeDifferencePrior, FunctionPrior, "
                        f"or another AbstractPrior), got {type(prior).__name__}")


def _setup(projector, y, x0, background, prior, beta, n_iter, history, reference, with_sensitivity):
    """Checks shared by :func:`osl_em` and :func:`bsrem`; returns the checked arrays, the full
    sensitivity ``A'1`` (or None) and the diagnostics."""
    _check_iterations(n_iter)
    _check_prior(prior)
    y, x0, background = _check_inputs(projector, y, x0, background)
    beta = eqx.error_if(beta.astype(y.dtype), ~(beta >= 0) | ~jnp.isfinite(beta), "beta must be finite and >= 0")
    sensitivity = projector.back(jnp.ones_like(y)) if (with_sensitivity or history) else None
    penalty = None if sensitivity is None else (lambda x: beta * jnp.mean(sensitivity) * prior(x))
    diagnostics = _history(history, y, background, reference, projector.in_shape, penalty)
    return y, x0, background, beta, sensitivity, diagnostics


def osl_em(
    projector,
    y: Float[Array, "nx nz nview"],
    x0: Float[Array, "nx ny nz"],
    *,
    prior: AbstractPrior,
    beta,
    n_iter: int,
    n_subsets: int,
    background=None,
    history: bool = False,
    reference=None,
    progress: bool = False,
) -> EMResult:
    """One-step-late EM (Green 1990) with ordered subsets: per subset ``s``,

    ``x <- x * A_s'(y_s / (A_s x + r_s)) / (A_s'1 + beta * s_s * dU/dx(x))``

    (the prior's gradient evaluated at the current iterate, "one step late"). With
    ``beta = 0`` it is exactly :func:`jaxspect.osem` (and with one subset, ML-EM). Each
    denominator is kept at least ``OSL_MIN_DENOMINATOR`` (1 %) of ``A_s'1`` so iterates stay
    non-negative and finite; OSL has no convergence guarantee and oscillates for large
    ``beta`` (use :func:`bsrem` there).

    Arguments:
        projector, y, x0, n_iter, n_subsets, background, history, reference, progress: as in
            :func:`jaxspect.osem`.
        prior: an :class:`AbstractPrior` (e.g. :class:`QuadraticPrior`,
            :class:`RelativeDifferencePrior`, :class:`FunctionPrior`).
        beta: penalty strength ``>= 0``, relative to the mean sensitivity (module docstring:
            the objective is ``L(x) - beta * mean(A'1) * U(x)``).

    Returns:
        An :class:`EMResult`; with ``history=True`` also ``objective``, the penalised
        log-likelihood of every iterate.
    """
    return _osl_em(projector, y, x0, prior, _check_nonnegative("beta", beta), n_iter=n_iter, n_subsets=n_subsets,
                   background=background, history=history, reference=reference, progress=progress)


@eqx.filter_jit
def _osl_em(projector, y, x0, prior, beta, *, n_iter, n_subsets, background, history, reference, progress):
    y, x0, background, beta, _, diagnostics = _setup(projector, y, x0, background, prior, beta, n_iter, history,
                                                     reference, with_sensitivity=False)

    def update(x, back_ratio, sensitivity, k):
        denominator = sensitivity + beta * jnp.mean(sensitivity) * prior.gradient(x)
        return _em_update(x, back_ratio, jnp.maximum(denominator, OSL_MIN_DENOMINATOR * sensitivity))

    return _subset_iterations("osl_em", projector, y, x0, background, diagnostics, n_iter=n_iter,
                              n_subsets=n_subsets, update=update, progress=progress)


def bsrem(
    projector,
    y: Float[Array, "nx nz nview"],
    x0: Float[Array, "nx ny nz"],
    *,
    prior: AbstractPrior,
    beta,
    n_iter: int,
    n_subsets: int,
    relaxation=1.0,
    decay=0.1,
    background=None,
    history: bool = False,
    reference=None,
    progress: bool = False,
) -> EMResult:
    """Block sequential regularised EM (De Pierro & Yamagishi 2001; Ahn & Fessler 2003).

    A relaxed, preconditioned incremental gradient ascent on ``Phi = sum_s Phi_s`` (module
    docstring): per subset ``s`` of full iteration ``k = 0, 1, ...``,

    ``x <- max(x + alpha_k * D(x) * grad Phi_s(x),  BSREM_FLOOR * x)``,
    ``grad Phi_s(x) = A_s'(y_s / (A_s x + r_s)) - A_s'1 - beta * s_s * dU/dx(x)``,

    with the diagonal preconditioner ``D(x) = S x / (A'1 + beta * s * x * H(x))``, the same for
    every subset: the EM preconditioner ``x / A'1`` of De Pierro and Ahn & Fessler, with the
    prior's curvature ``H = prior.curvature(x)`` (Hessian diagonal) added as in Tsai et al.
    (2018) so that a strong prior does not make the step oscillate (voxels with ``A'1 = 0``
    are 0). The relaxation sequence is

    ``alpha_k = relaxation / (1 + decay * k)``.

    For ``decay > 0`` this meets the convergence conditions of BSREM (``alpha_k -> 0``,
    ``sum_k alpha_k = inf``, ``sum_k alpha_k^2 < inf``, ``D`` continuous, positive and
    bounded on bounded sets): for a convex prior (quadratic, RDP) the iterates converge to the
    maximiser of ``Phi`` over ``x >= 0``, whatever the number of subsets (OSEM and OSL only
    reach a limit cycle). ``decay = 0`` keeps the step constant (no convergence with subsets).
    With ``beta = 0``, ``relaxation = 1``, ``decay = 0`` and one subset it is ML-EM (up to
    rounding); with ``S`` subsets it differs from OSEM only by using ``A'1 / S`` instead of
    ``A_s'1`` in the step. The lower bound ``BSREM_FLOOR * x`` (0.1 %) replaces truncation at
    zero and is inactive near a positive solution once ``alpha_k`` is small.

    Arguments:
        projector, y, x0, n_iter, n_subsets, background, history, reference, progress: as in
            :func:`jaxspect.osem`.
        prior, beta: as in :func:`osl_em`.
        relaxation: ``alpha_0`` in ``(0, 1]``.
        decay: ``>= 0``, per full iteration.

    Returns:
        An :class:`EMResult`; with ``history=True`` also ``objective``, ``Phi`` of every
        iterate (non-decreasing without subsets for small enough ``alpha``).
    """
    return _bsrem(projector, y, x0, prior, _check_nonnegative("beta", beta),
                  _check_nonnegative("relaxation", relaxation, positive=True, at_most=1.0),
                  _check_nonnegative("decay", decay), n_iter=n_iter, n_subsets=n_subsets, background=background,
                  history=history, reference=reference, progress=progress)


@eqx.filter_jit
def _bsrem(projector, y, x0, prior, beta, relaxation, decay, *, n_iter, n_subsets, background, history, reference,
           progress):
    y, x0, background, beta, sensitivity, diagnostics = _setup(projector, y, x0, background, prior, beta, n_iter,
                                                               history, reference, with_sensitivity=True)
    positive = sensitivity > 0
    penalty_scale = beta * jnp.mean(sensitivity)
    relaxation, decay = relaxation.astype(y.dtype), decay.astype(y.dtype)

    def update(x, back_ratio, subset_sensitivity, k):
        gradient = back_ratio - subset_sensitivity - beta * jnp.mean(subset_sensitivity) * prior.gradient(x)
        curvature = sensitivity + penalty_scale * x * prior.curvature(x)
        preconditioner = jnp.where(positive, n_subsets * x / jnp.where(positive, curvature, 1), 0)
        alpha = relaxation / (1 + decay * k)
        step = x + alpha * preconditioner * gradient
        return jnp.where(positive, jnp.maximum(step, BSREM_FLOOR * x), 0)

    return _subset_iterations("bsrem", projector, y, x0, background, diagnostics, n_iter=n_iter,
                              n_subsets=n_subsets, update=update, progress=progress)
