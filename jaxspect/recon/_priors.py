"""Priors (penalties) for regularised reconstruction: an energy ``U(x)`` and its gradient.

The regularised algorithms (:func:`jaxspect.osl_em`, :func:`jaxspect.bsrem`) maximise
``L(x) - beta * s * U(x)`` (see there for ``s``). A prior is an Equinox module: calling it gives
the scalar energy ``U(x)`` of an image ``(nx, ny, nz)``; ``prior.gradient(x)`` its gradient.

Neighbourhood priors sum a pair potential over the 3-D 26-neighbourhood, each unordered pair
of voxels ``{j, k}`` once::

    U(x) = sum_{pairs j~k} w_jk * phi(x_j, x_k),    w_jk = d_min / |r_j - r_k| * kappa_jk

with distance weights (``1``, ``1/sqrt 2``, ``1/sqrt 3`` for isotropic voxels; the physical
distance in mm for anisotropic ones, ``d_min`` the smallest voxel size) and optional
anatomical weights ``kappa_jk`` per pair (:func:`anatomical_weights`). Pairs are enumerated as
the 13 offsets ``o`` of :data:`NEIGHBOUR_OFFSETS` (half of the 26), pair ``(p, p + o)`` for every
voxel ``p`` whose neighbour ``p + o`` lies inside the grid (no wrap-around, nothing outside).
"""

from __future__ import annotations

import abc
import itertools
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

#: The 13 neighbour offsets ``(di, dj, dk)`` that are lexicographically positive: with their
#: negatives they make the 26-neighbourhood, and every unordered neighbour pair appears once.
NEIGHBOUR_OFFSETS: tuple[tuple[int, int, int], ...] = tuple(
    o for o in itertools.product((-1, 0, 1), repeat=3) if o > (0, 0, 0)
)


def _pair_slices(shape, offset):
    """Index tuples ``(first, second)`` so that ``x[first]`` and ``x[second]`` are the voxels
    ``p`` and ``p + offset`` of every pair inside a grid of ``shape``."""
    first = tuple(slice(max(0, -d), n - max(0, d)) for n, d in zip(shape, offset))
    second = tuple(slice(max(0, d), n - max(0, -d)) for n, d in zip(shape, offset))
    return first, second


def _embed(values, index, shape):
    """``zeros(shape).at[index].set(values)`` for a tuple of slices, as a pad (cheaper than a
    scatter for XLA)."""
    return jnp.pad(values, [(sl.start, n - sl.stop) for sl, n in zip(index, shape)])


def _distance_weights(voxel_size) -> np.ndarray:
    """``d_min / |o|_mm`` for the 13 offsets."""
    vs = np.asarray(voxel_size, np.float64)
    distances = np.array([np.linalg.norm(np.asarray(o) * vs) for o in NEIGHBOUR_OFFSETS])
    return vs.min() / distances


def _check_voxel_size(voxel_size):
    try:
        vs = tuple(float(v) for v in voxel_size)
    except TypeError:
        raise TypeError(f"voxel_size must be a tuple of 3 positive numbers (mm), got {voxel_size!r}") from None
    if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
        raise ValueError(f"voxel_size must be a tuple of 3 positive numbers (mm), got {voxel_size!r}")
    return vs


def _check_image(x, name="x"):
    if jnp.ndim(x) != 3:
        raise ValueError(f"{name} must be a 3-D image (nx, ny, nz), got shape {jnp.shape(x)}")


def anatomical_weights(anatomy: Float[Array, "nx ny nz"], *, sigma: float | None = None) -> Float[Array, "13 nx ny nz"]:
    """Per-pair weights ``kappa`` from an anatomical image on the reconstruction grid.

    Arguments:
        anatomy: a segmentation (integer labels, ``sigma=None``: ``kappa = 1`` between voxels
            of the same label, ``0`` across a boundary, so the prior does not smooth across
            organ edges) or a continuous image such as a CT or attenuation map (``sigma`` in
            its units: ``kappa = exp(-(a_j - a_k)^2 / (2 sigma^2))``).
        sigma: similarity scale for a continuous ``anatomy``; ``None`` for labels.

    Returns:
        ``(13, nx, ny, nz)`` array: entry ``[o, p]`` weights the pair ``(p, p + NEIGHBOUR_OFFSETS[o])``
        (entries whose neighbour falls outside the grid are 0 and unused). Pass it as
        ``weights=`` to :class:`QuadraticPrior` or :class:`RelativeDifferencePrior`.
    """
    anatomy = jnp.asarray(anatomy)
    _check_image(anatomy, "anatomy")
    if sigma is not None and not sigma > 0:
        raise ValueError(f"sigma must be positive (or None for a label image), got {sigma!r}")
    if sigma is None:
        if not jnp.issubdtype(anatomy.dtype, jnp.integer) and not jnp.issubdtype(anatomy.dtype, jnp.bool_):
            raise TypeError("anatomy must be an integer label image when sigma is None; pass sigma= for a "
                            f"continuous image (got dtype {anatomy.dtype})")
        similar = lambda a, b: (a == b).astype(jnp.result_type(float))
    else:
        similar = lambda a, b: jnp.exp(-((a - b) ** 2) / (2 * sigma**2))
    out = []
    for offset in NEIGHBOUR_OFFSETS:
        first, second = _pair_slices(anatomy.shape, offset)
        out.append(_embed(similar(anatomy[first], anatomy[second]), first, anatomy.shape))
    return jnp.stack(out)


class AbstractPrior(eqx.Module):
    """A penalty: ``prior(x)`` is the scalar energy ``U(x)`` (lower = more plausible) of an
    image ``(nx, ny, nz)``, ``prior.gradient(x)`` its gradient ``dU/dx`` (same shape)."""

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "nx ny nz"]) -> Float[Array, ""]:
        raise NotImplementedError

    @abc.abstractmethod
    def gradient(self, x: Float[Array, "nx ny nz"]) -> Float[Array, "nx ny nz"]:
        raise NotImplementedError

    @abc.abstractmethod
    def curvature(self, x: Float[Array, "nx ny nz"]) -> Float[Array, "nx ny nz"]:
        """A non-negative estimate of the Hessian's diagonal ``d^2 U / dx_j^2`` (used by
        :func:`jaxspect.bsrem`'s preconditioner; zeros are allowed)."""
        raise NotImplementedError


class AbstractNeighbourPrior(AbstractPrior):
    """A pair potential ``phi(a, b)`` summed over the 26-neighbourhood with distance and
    (optional) anatomical weights (see the module docstring). Subclasses give ``phi`` and its
    partial derivatives; energy and gradient are computed here (the gradient analytically, one
    pass over the 13 offsets, no autodiff)."""

    voxel_size: eqx.AbstractVar[tuple[float, float, float]]
    weights: eqx.AbstractVar[Array | None]

    @abc.abstractmethod
    def potential(self, a, b):
        """``phi(a, b)`` elementwise."""

    @abc.abstractmethod
    def potential_gradient(self, a, b):
        """``(dphi/da, dphi/db)`` elementwise."""

    @abc.abstractmethod
    def potential_curvature(self, a, b):
        """``(d^2 phi/da^2, d^2 phi/db^2)`` elementwise, ``>= 0``."""

    def _pairs(self, x):
        _check_image(x)
        if self.weights is not None and self.weights.shape != (len(NEIGHBOUR_OFFSETS), *x.shape):
            raise ValueError(f"weights have shape {self.weights.shape}, the image needs "
                             f"{(len(NEIGHBOUR_OFFSETS), *x.shape)}")
        distance = _distance_weights(self.voxel_size)
        for o, offset in enumerate(NEIGHBOUR_OFFSETS):
            first, second = _pair_slices(x.shape, offset)
            w = jnp.asarray(distance[o], x.dtype)
            if self.weights is not None:
                w = w * self.weights[o][first].astype(x.dtype)
            yield first, second, w

    def __call__(self, x):
        return sum(jnp.sum(w * self.potential(x[first], x[second])) for first, second, w in self._pairs(x))

    def _scatter_pairs(self, x, pair_terms):
        """``sum_pairs w * (t_a at p, t_b at p + o)`` for ``(t_a, t_b) = pair_terms(x_p, x_{p+o})``."""
        out = jnp.zeros_like(x)
        for first, second, w in self._pairs(x):
            ta, tb = pair_terms(x[first], x[second])
            out = out + _embed(w * ta, first, x.shape) + _embed(w * tb, second, x.shape)
        return out

    def gradient(self, x):
        return self._scatter_pairs(x, self.potential_gradient)

    def curvature(self, x):
        """The exact Hessian diagonal, ``sum_k w_jk d^2 phi / dx_j^2``."""
        return self._scatter_pairs(x, self.potential_curvature)


class QuadraticPrior(AbstractNeighbourPrior):
    """Quadratic (Gaussian Markov random field) prior, ``phi(a, b) = (a - b)^2 / 2``.

    ``U(x) = 1/2 sum_{pairs j~k} w_jk (x_j - x_k)^2`` over the 26-neighbourhood (module
    docstring). ``U`` has the units of ``x`` squared.

    Arguments:
        voxel_size: ``(dx, dy, dz)`` mm, for the distance weights (default isotropic).
        weights: optional anatomical weights ``(13, nx, ny, nz)`` (:func:`anatomical_weights`).
    """

    voxel_size: tuple[float, float, float] = eqx.field(static=True)
    weights: Array | None

    def __init__(self, voxel_size=(1.0, 1.0, 1.0), weights=None):
        self.voxel_size = _check_voxel_size(voxel_size)
        self.weights = None if weights is None else jnp.asarray(weights)

    def potential(self, a, b):
        return (a - b) ** 2 / 2

    def potential_gradient(self, a, b):
        return a - b, b - a

    def potential_curvature(self, a, b):
        return jnp.ones_like(a), jnp.ones_like(b)


class RelativeDifferencePrior(AbstractNeighbourPrior):
    """Relative difference prior (Nuyts et al. 2002),
    ``phi(a, b) = (a - b)^2 / (a + b + gamma |a - b| + epsilon)``.

    Close to quadratic for small relative differences and close to ``|a - b| / gamma`` for
    large ones (edge preserving; larger ``gamma``, more so); ``U`` scales like ``x`` itself,
    so for a given ``beta`` it penalises hot and cold regions alike in relative terms.

    Arguments:
        gamma: edge-preservation parameter ``>= 0`` (dimensionless; 2 is common).
        epsilon: ``> 0``, in the units of ``x``: keeps ``phi`` smooth where ``a = b = 0``.
        voxel_size: ``(dx, dy, dz)`` mm, for the distance weights (default isotropic).
        weights: optional anatomical weights ``(13, nx, ny, nz)`` (:func:`anatomical_weights`).
    """

    gamma: Float[Array, ""]
    epsilon: Float[Array, ""]
    voxel_size: tuple[float, float, float] = eqx.field(static=True)
    weights: Array | None

    def __init__(self, gamma=2.0, epsilon=1e-6, voxel_size=(1.0, 1.0, 1.0), weights=None):
        for name, value, lowest in (("gamma", gamma, 0.0), ("epsilon", epsilon, None)):
            if isinstance(value, jax.core.Tracer):
                continue  # traced: not checked
            value = float(value)
            if not np.isfinite(value) or value < 0 or (lowest is None and value <= 0):
                raise ValueError(f"{name} must be {'>= 0' if lowest == 0 else '> 0'} and finite, got {value!r}")
        self.gamma = jnp.asarray(gamma, jnp.result_type(float))
        self.epsilon = jnp.asarray(epsilon, jnp.result_type(float))
        self.voxel_size = _check_voxel_size(voxel_size)
        self.weights = None if weights is None else jnp.asarray(weights)

    def _denominator(self, a, b):
        gamma, epsilon = self.gamma.astype(a.dtype), self.epsilon.astype(a.dtype)
        return a + b + gamma * jnp.abs(a - b) + epsilon

    def potential(self, a, b):
        return (a - b) ** 2 / self._denominator(a, b)

    def potential_gradient(self, a, b):
        d = a - b
        den = self._denominator(a, b)
        slope = self.gamma.astype(a.dtype) * jnp.sign(d)
        da = (2 * d * den - d**2 * (1 + slope)) / den**2
        db = (-2 * d * den - d**2 * (1 - slope)) / den**2
        return da, db

    def potential_curvature(self, a, b):
        # d^2 phi / da^2 = 2 (D - d dD/da)^2 / D^3 = 2 (2b + epsilon)^2 / D^3 (and a <-> b)
        den = self._denominator(a, b)
        epsilon = self.epsilon.astype(a.dtype)
        return 2 * (2 * b + epsilon) ** 2 / den**3, 2 * (2 * a + epsilon) ** 2 / den**3


class FunctionPrior(AbstractPrior):
    """Any differentiable JAX function as a prior: ``U(x) = energy(x)``, gradient by ``jax.grad``.

    ``energy`` maps an image ``(nx, ny, nz)`` to a scalar; a plain function or an Equinox module
    (e.g. a trained network, whose parameters are then leaves of this prior). Example, total
    variation smoothed by ``1e-3``::

        tv = js.FunctionPrior(lambda x: sum(jnp.sum(jnp.sqrt(jnp.diff(x, axis=a) ** 2 + 1e-6))
                                            for a in range(3)))
    """

    energy: Callable[[Array], Array]

    def __init__(self, energy):
        if not callable(energy):
            raise TypeError(f"energy must be a callable image -> scalar, got {type(energy).__name__}")
        self.energy = energy

    def __call__(self, x):
        _check_image(x)
        u = self.energy(x)
        if jnp.shape(u) != ():
            raise ValueError(f"the prior's energy must return a scalar, got shape {jnp.shape(u)}")
        return u

    def gradient(self, x):
        return jax.grad(self.__call__)(x)

    def curvature(self, x):
        """Zeros (a Hessian diagonal would cost one Hessian-vector product per voxel):
        :func:`jaxspect.bsrem` then uses the plain EM preconditioner."""
        return jnp.zeros_like(x)
