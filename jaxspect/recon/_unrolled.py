"""CNN-regularised EM (Algorithm 3 of the paper) unrolled for K outer iterations.

Outer iteration ``k``: ``u = g_k(x_k)``; then ``n_inner`` EM steps of eqs. (7)-(8) for
``min_{x >= 0} f(x) + b/2 ||x - u||^2``::

    x+ = (-d + sqrt(d^2 + 4 b x e(x))) / (2 b),   d = A'1 - b u,   e(x) = A'(y / (A x + r))

with ``b`` the paper's regularisation parameter (unit: counts per activity unit squared).
jaxspect makes the model **count-scale equivariant** and its strength **dimensionless**:

- the network sees a normalised image and is rescaled back, ``u = s g(x / s)``, with
  ``s = image_scale(x_k)`` (the activity-weighted mean activity, :func:`image_scale`);
- ``beta`` is dimensionless: ``b = beta * S / s`` with ``S = sensitivity_scale(x_k, A'1)``, the
  expected counts per unit of activity of the current image (``sum(x A'1) / sum(x)``).

In a voxel with typical activity (``x = s``) and typical sensitivity (``A'1 = S``) the prior's
share of the update, ``b x / (A'1 + b x)``, is ``beta / (1 + beta)``: ``beta = 1`` weighs data and
prior equally, at any voxel size, number of views, acquisition time or injected activity.
``model(c x0, A, c y, c r) = c model(x0, A, y, r)`` for every ``c > 0``, whatever the network.
The paper's ``beta = 1`` corresponds to ``beta = s / S`` here (printed by
:meth:`UnrolledEM.paper_beta` for a given problem).

How gradients flow through the unroll is a strategy object, in the spirit of diffrax's
``adjoint=``: :class:`EndToEnd` (exact gradients through ``A`` and ``A'`` via the registered
VJPs, optionally ``jax.checkpoint``-ed per outer iteration) or :class:`Truncated` (the ``e``
term, the only one involving ``A``/``A'`` and the data, under ``lax.stop_gradient``: the
paper's gradient truncation). Sequential training trains each iteration's network alone; see
``jaxspect.recon.fit``.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from .._operator import AbstractProjector
from .._serialization import build_model, model_config, register_model
from ._em import _ratio


class AbstractGradient(eqx.Module):
    """How gradients flow through the unrolled iterations."""


class EndToEnd(AbstractGradient):
    """Exact gradients through every iteration, including ``A`` and ``A'``.

    ``checkpoint=True`` wraps each outer iteration in ``jax.checkpoint``: the backward pass
    stores one image per outer iteration and recomputes the rest (memory-bounded training).
    """

    checkpoint: bool = eqx.field(static=True, default=False)


class Truncated(AbstractGradient):
    """Gradient truncation: ``e(x) = A'(y / (A x + r))`` is treated as a constant."""


class Sequential(AbstractGradient):
    """Sequential (layer-by-layer) training: each outer iteration's network is trained alone on
    ``MSE(g_k(x_k), x_true)`` with the earlier iterations frozen. Needs non-shared weights.
    In a forward pass it behaves like :class:`Truncated` with gradients stopped between outer
    iterations; use it with ``jaxspect.recon.fit``."""


def regularized_em_step(x, u, e, sensitivity, beta):
    """One inner iteration of eq. (7): the non-negative root of
    ``beta x^2 + d x - x_k e = 0`` with ``d = A'1 - beta u``.

    Written in the two algebraically equal forms that avoid cancellation: ``2 x e / (d + s)``
    for ``d >= 0`` (which is the plain EM update ``x e / A'1`` at ``beta = 0``, with no division
    by ``beta``) and ``(s - d) / (2 beta)`` for ``d < 0``, where ``s = sqrt(d^2 + 4 beta x e)``.
    Voxels with ``A'1 = 0`` and ``beta u <= 0`` give 0.
    """
    d = sensitivity - beta * u
    xe = jnp.maximum(x * e, 0)
    s = jnp.sqrt(d * d + 4 * beta * xe)
    positive = d >= 0
    den_pos = d + s
    num_pos = 2 * xe
    safe_pos = jnp.where(positive & (den_pos > 0), num_pos / jnp.where(den_pos > 0, den_pos, 1), 0)
    safe_beta = jnp.where(beta > 0, beta, 1)
    neg = (s - d) / (2 * safe_beta)
    return jnp.where(positive, safe_pos, jnp.where(beta > 0, neg, 0))


def image_scale(x: Float[Array, "..."]) -> Float[Array, ""]:
    """The activity-weighted mean activity ``sum(x^2) / sum(|x|)`` (same unit as ``x``).

    Positively homogeneous (``image_scale(c x) = c image_scale(x)`` for ``c > 0``), independent of
    how many empty voxels surround the object, and smooth. 1 for an all-zero image.
    """
    den = jnp.sum(jnp.abs(x))
    return jnp.where(den > 0, jnp.sum(x * x) / jnp.where(den > 0, den, 1), 1).astype(x.dtype)


def sensitivity_scale(x: Float[Array, "nx ny nz"], sensitivity: Float[Array, "nx ny nz"]) -> Float[Array, ""]:
    """Expected counts per unit of activity of the image ``x``: ``sum(|x| A'1) / sum(|x|)``
    (the activity-weighted mean sensitivity; the plain mean of ``A'1`` for an all-zero image).

    Scale-invariant in ``x``; proportional to the number of views and the acquisition time.
    """
    w = jnp.abs(x)
    den = jnp.sum(w)
    return jnp.where(den > 0, jnp.sum(w * sensitivity) / jnp.where(den > 0, den, 1), jnp.mean(sensitivity))


class UnrolledEM(eqx.Module):
    """CNN-regularised EM unrolled for ``n_outer`` outer iterations of ``n_inner`` EM steps,
    count-scale equivariant by construction (see the module docstring).

    Arguments:
        make_network: ``key -> eqx.Module`` mapping an image ``(nx, ny, nz)`` to an image of the
            same shape (e.g. ``jaxspect.nn.PaperCNN``; any module with that call signature). It
            is applied to normalised images (typical activity 1): ``u = s g(x / s)``.
        key: PRNG key for the networks' initialisation.
        n_outer: K, outer iterations (one network each unless ``shared``).
        n_inner: EM steps per outer iteration.
        beta: dimensionless regularisation strength (``>= 0``; ``0`` gives plain ML-EM): the
            prior's share of the update is ``beta / (1 + beta)`` in a voxel of typical activity
            and sensitivity. The paper's parameter is ``b = beta * S / s`` (module docstring).
        shared: one network for every outer iteration instead of one per iteration.
        train_beta: make ``beta`` trainable (it is then a leaf gradients reach).

    Call as ``model(x0, projector, y, background)`` with ``x0`` the warm start (e.g. OSEM),
    ``y`` the counts and ``background`` the mean background counts, in any consistent unit.
    """

    network: eqx.Module
    beta: Float[Array, ""]
    n_outer: int = eqx.field(static=True)
    n_inner: int = eqx.field(static=True)
    shared: bool = eqx.field(static=True)
    train_beta: bool = eqx.field(static=True)

    def __init__(
        self,
        make_network: Callable[[PRNGKeyArray], eqx.Module],
        key: PRNGKeyArray,
        *,
        n_outer: int = 3,
        n_inner: int = 1,
        beta: float = 1.0,
        shared: bool = False,
        train_beta: bool = False,
    ):
        for name, value in (("n_outer", n_outer), ("n_inner", n_inner)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        if shared:
            self.network = make_network(key)
        else:
            self.network = eqx.filter_vmap(make_network)(jax.random.split(key, n_outer))
        self.beta = jnp.asarray(beta, dtype=jnp.result_type(float))
        self.n_outer, self.n_inner = int(n_outer), int(n_inner)
        self.shared, self.train_beta = bool(shared), bool(train_beta)

    def network_at(self, k: int) -> eqx.Module:
        """The network of outer iteration ``k`` (the shared one if ``shared``)."""
        if self.shared:
            return self.network
        arrays, static = eqx.partition(self.network, eqx.is_array)
        return eqx.combine(jax.tree_util.tree_map(lambda a: a[k], arrays), static)

    @staticmethod
    def regularizer(network, x: Float[Array, "nx ny nz"]) -> Float[Array, "nx ny nz"]:
        """``u = s g(x / s)`` with ``s = image_scale(x)``: the network on a normalised image."""
        s = image_scale(x)
        return s * network(x / s)

    def paper_beta(self, x: Float[Array, "nx ny nz"], sensitivity: Float[Array, "nx ny nz"]) -> Float[Array, ""]:
        """The paper's regularisation parameter ``b = beta S / s`` for image ``x`` and
        sensitivity ``A'1`` (counts per activity unit squared)."""
        beta = self.beta if self.train_beta else lax.stop_gradient(self.beta)
        return beta.astype(x.dtype) * sensitivity_scale(x, sensitivity) / image_scale(x)

    def outer_step(self, network, x, projector, y, background, sensitivity, gradient=EndToEnd()):
        """One outer iteration: ``u = s g(x / s)``, then ``n_inner`` regularised EM steps with
        the paper's parameter ``b = beta S / s`` (``s``, ``S`` from this iteration's input)."""
        u = self.regularizer(network, x)
        b = self.paper_beta(x, sensitivity)

        def inner(x, _):
            e = projector.back(_ratio(y, projector(x) + background))
            if isinstance(gradient, (Truncated, Sequential)):
                e = lax.stop_gradient(e)
            return regularized_em_step(x, u, e, sensitivity, b), None

        x, _ = lax.scan(inner, x, None, length=self.n_inner)
        return x

    def __call__(
        self,
        x0: Float[Array, "nx ny nz"],
        projector: AbstractProjector,
        y: Float[Array, "nx nz nview"],
        background=None,
        *,
        gradient: AbstractGradient = EndToEnd(),
        return_iterates: bool = False,
    ):
        """Run the unrolled reconstruction from ``x0``; returns ``x_K`` (or all ``x_1..x_K``,
        stacked, with ``return_iterates=True``)."""
        if not isinstance(gradient, AbstractGradient):
            raise TypeError(f"gradient must be EndToEnd(), Truncated() or Sequential(), got {gradient!r}")
        background = jnp.zeros((), y.dtype) if background is None else background
        sensitivity = lax.stop_gradient(projector.back(jnp.ones_like(y)))
        arrays, static = eqx.partition(self.network, eqx.is_array)

        def outer(x, net_arrays):
            network = eqx.combine(net_arrays, static)
            x = self.outer_step(network, x, projector, y, background, sensitivity, gradient)
            if isinstance(gradient, Sequential):
                x = lax.stop_gradient(x)
            return x, x if return_iterates else None

        if isinstance(gradient, EndToEnd) and gradient.checkpoint:
            outer = jax.checkpoint(outer)
        if self.shared:
            x, iterates = lax.scan(lambda x, _: outer(x, arrays), x0, None, length=self.n_outer)
        else:
            x, iterates = lax.scan(outer, x0, arrays, length=self.n_outer)
        return iterates if return_iterates else x


#: Model-file format of the unrolled EM. 1 (jaxspect 0.1, no "format" key): beta in the paper's
#: count units and networks on raw activity values; 2: dimensionless beta, normalised networks.
MODEL_FORMAT = 2


def _config(m: UnrolledEM) -> dict:
    return {"format": MODEL_FORMAT, "network": model_config(m.network_at(0)), "n_outer": m.n_outer,
            "n_inner": m.n_inner, "beta": float(m.beta), "beta_unit": "dimensionless",
            "normalization": "image_scale", "shared": m.shared, "train_beta": m.train_beta}


def _build(c: dict) -> UnrolledEM:
    if c.get("format") != MODEL_FORMAT or c.get("normalization") != "image_scale":
        raise ValueError(
            f"this UnrolledEM model file has format {c.get('format', 1)!r}; jaxspect reads format {MODEL_FORMAT}. "
            "Format 1 (jaxspect 0.1) used beta in the paper's count units and networks on raw activity values, "
            "which cannot be converted to the count-scale-equivariant model (dimensionless beta, normalised "
            "networks): retrain the model with this version")
    return UnrolledEM(lambda key: build_model(c["network"]), jax.random.key(0), n_outer=c["n_outer"],
                      n_inner=c["n_inner"], beta=c["beta"], shared=c["shared"], train_beta=c["train_beta"])


register_model(UnrolledEM, _config, _build)
