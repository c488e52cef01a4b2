"""The projector interface: what every reconstruction and learned method needs from a system model.

:func:`jaxspect.mlem`, :func:`jaxspect.osem`, :func:`jaxspect.simulate`, the batch functions of
:mod:`jaxspect.recon` and :class:`jaxspect.recon.UnrolledEM` / ``fit`` are written against
:class:`AbstractProjector` only, so a system model of your own (a pinhole model, a Monte-Carlo
system matrix, a wrapped external projector) works with all of them: subclass it, or use
:class:`MatrixProjector` for an explicit matrix. :class:`jaxspect.SPECTProjector` is the
built-in implementation.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Float


class AbstractProjector(eqx.Module):
    """A linear system model ``A``: images of shape ``in_shape`` to projections of shape
    ``out_shape``, whose last axis is the view (projection angle) axis.

    The contract every algorithm relies on:

    - ``in_shape`` / ``out_shape``: static tuples of ints.
    - ``__call__(x)``: ``A @ x`` for an image ``x`` of shape ``in_shape``; linear, JAX-traceable
      (``jit``, ``vmap``, ``grad``), with non-negative entries for the EM algorithms.
    - ``back(v)``: the exact adjoint ``A' @ v`` (``<A x, v> == <x, A' v>`` to rounding), and
      the VJP of ``__call__`` must agree with it (automatic when both are written in JAX).
    - ``view_subset(indices)``: the operator restricted to the views ``indices`` (a 1-D integer
      array indexing the last axis of ``out_shape``), for ordered subsets; it must work under
      ``eqx.filter_vmap`` over a stacked array of index sets.
    - The module is a pytree: arrays that differ between patients are fields (leaves), so a
      batch of projectors is one module with a leading axis on those leaves (see
      ``jaxspect.recon.stack_projectors``).

    ``T`` (the adjoint as an operator), ``as_matrix`` and ``as_linear_operator`` (lineax) come
    for free.
    """

    @property
    @abc.abstractmethod
    def in_shape(self) -> tuple[int, ...]:
        """Image shape."""

    @property
    @abc.abstractmethod
    def out_shape(self) -> tuple[int, ...]:
        """Projection shape; the last axis is the view axis."""

    @abc.abstractmethod
    def __call__(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """Forward projection ``A @ x``."""

    @abc.abstractmethod
    def back(self, v: Float[Array, "..."]) -> Float[Array, "..."]:
        """Back projection ``A' @ v`` (the exact adjoint)."""

    @abc.abstractmethod
    def view_subset(self, indices) -> "AbstractProjector":
        """The operator restricted to the views ``indices`` (last axis of ``out_shape``)."""

    @property
    def T(self) -> "TransposedProjector":
        """The adjoint operator: ``A.T(v) == A.back(v)``; ``A.T.T`` is ``A``."""
        return TransposedProjector(self)

    def as_linear_operator(self, dtype=None) -> lx.FunctionLinearOperator:
        """The operator as a lineax ``FunctionLinearOperator`` on images of ``dtype`` (default
        float32, or float64 under ``jax_enable_x64``): for ``lx.linear_solve`` with
        ``lx.Normal(lx.CG(...))``, ``lx.LSMR(...)``, etc. Its ``.transpose()`` is ``back``
        (through ``jax.linear_transpose``, exact for :class:`jaxspect.SPECTProjector`)."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        return lx.FunctionLinearOperator(self, jax.ShapeDtypeStruct(tuple(self.in_shape), dtype))

    def as_matrix(self) -> Float[Array, "m n"]:
        """Dense matrix ``(prod(out_shape), prod(in_shape))`` in C order. Small problems only."""
        n = int(np.prod(self.in_shape))
        basis = jnp.eye(n, dtype=jnp.result_type(float)).reshape(n, *self.in_shape)
        return jax.vmap(self)(basis).reshape(n, -1).T


def check_projector(projector, name: str = "projector") -> None:
    """Raise a ``TypeError`` unless ``projector`` implements :class:`AbstractProjector`."""
    if not isinstance(projector, AbstractProjector):
        raise TypeError(
            f"{name} must be a jaxspect.AbstractProjector (e.g. SPECTProjector or MatrixProjector; "
            f"subclass AbstractProjector for your own system model), got {type(projector).__name__}"
        )


class TransposedProjector(eqx.Module):
    """``A.T`` of an :class:`AbstractProjector`: ``A.T(v) == A.back(v)``; ``.T`` gives ``A``."""

    operator: AbstractProjector

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.operator.out_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.operator.in_shape

    def __call__(self, v):
        return self.operator.back(v)

    @property
    def T(self) -> AbstractProjector:
        return self.operator

    def as_matrix(self) -> Float[Array, "n m"]:
        """Dense matrix ``(prod(in_shape of A), prod(out_shape of A))``, i.e. ``A'``."""
        m = int(np.prod(self.operator.out_shape))
        basis = jnp.eye(m, dtype=jnp.result_type(float)).reshape(m, *self.operator.out_shape)
        return jax.vmap(self.operator.back)(basis).reshape(m, -1).T


class MatrixProjector(AbstractProjector):
    """An explicit system matrix as a projector (small problems, or matrices from Monte Carlo).

    Arguments:
        matrix: ``(prod(out_shape), prod(in_shape))``, rows and columns in C order of the
            projection and image arrays; non-negative for the EM algorithms.
        in_shape: image shape.
        out_shape: projection shape, views along the last axis.
    """

    matrix: Float[Array, "m n"]
    image_shape: tuple[int, ...] = eqx.field(static=True)
    views_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, matrix, in_shape, out_shape):
        in_shape, out_shape = tuple(int(s) for s in in_shape), tuple(int(s) for s in out_shape)
        shape = (int(np.prod(out_shape)), int(np.prod(in_shape)))
        if jnp.ndim(matrix) != 2 or tuple(jnp.shape(matrix)) != shape:
            raise ValueError(f"matrix must have shape {shape} (prod(out_shape), prod(in_shape)), "
                             f"got {tuple(jnp.shape(matrix))}")
        self.matrix = jnp.asarray(matrix)
        self.image_shape, self.views_shape = in_shape, out_shape

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.image_shape

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.views_shape

    def __call__(self, x):
        return (self.matrix @ x.reshape(-1)).reshape(self.out_shape)

    def back(self, v):
        return (self.matrix.T @ v.reshape(-1)).reshape(self.in_shape)

    def view_subset(self, indices) -> "MatrixProjector":
        indices = jnp.asarray(indices)
        rows = self.matrix.reshape(*self.out_shape, -1)[..., indices, :]
        out_shape = (*self.out_shape[:-1], indices.shape[-1])
        return MatrixProjector(rows.reshape(-1, self.matrix.shape[1]), self.in_shape, out_shape)
