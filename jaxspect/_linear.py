"""Linear maps with a hand-written transpose, as one JAX primitive that every transformation knows.

jaxspect's rotations and projectors are linear in their image argument, and their transposes are
hand-written gathers (exact, and several times faster on CPU than the scatter-adds JAX's automatic
transpose of a gather would produce). To make them first-class JAX linear operators, each is
applied through :func:`linear_apply`, which binds one primitive, ``jaxspect_linear_map``, with
rules for every transformation:

- evaluation / ``jit``: the map's ``apply`` (lowered inline, so the compiled program is the one
  the plain function would give);
- ``jax.jvp`` / ``linearize`` / ``jacfwd``: the tangent in the linear argument is the same map
  applied to the tangent; the tangent in the residuals (attenuation map, geometry, angle) is the
  map's ``residual_jvp``, by default ``jax.jvp`` of ``apply``;
- transposition (``grad``, ``vjp``, ``jax.linear_transpose``, lineax's ``.transpose()``): the
  map's own ``transpose()``, another map of this kind, so the transpose of the transpose is the
  original and transposes compose with everything above;
- ``vmap``: the vmapped map (:class:`_VmappedMap`), whose transpose is the vmapped transpose.

Why not the alternatives in JAX 0.10.2 (measured; see the README):

- ``jax.custom_vjp`` (what the projector used before): reverse mode only; ``jax.jvp`` and
  ``jax.linear_transpose`` raise.
- ``jax.custom_derivatives.linear_call``: has jvp and transpose rules but no batching rule (so
  no ``vmap``/``jacfwd``), and its jvp rule asserts that the residual inputs have zero tangents,
  so forward-over-reverse derivatives in the attenuation map (a Hessian-vector product in
  ``mumap``) fail. ``jax.custom_batching.custom_vmap`` around it cannot be differentiated.
- ``jax.experimental.hijax.VJPHiPrimitive``: experimental, with the same hooks; a plain
  primitive built from the documented ``jax.extend.core.Primitive`` and ``jax.interpreters``
  registries has been stable across JAX releases for years.

A map is a hashable :class:`AbstractLinearMap` (static configuration only), so that jitted
programs are cached per map; arrays always travel as the primitive's operands.
"""

from __future__ import annotations

import abc
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

_tree = jax.tree_util


class AbstractLinearMap(eqx.Module):
    """``apply(residuals, x)``, linear in the pytree ``x``, with a hand-written transpose.

    Subclasses hold static configuration only (they are hashed into the primitive's parameters).
    """

    @abc.abstractmethod
    def apply(self, residuals, x):
        """The map; linear in ``x``, any function of ``residuals``."""

    @abc.abstractmethod
    def transpose(self) -> "AbstractLinearMap":
        """The map ``T`` with ``T.apply(residuals, ct)`` the transpose in ``x`` (and whose own
        ``transpose()`` equals ``self``)."""

    def residual_jvp(self, residuals, x, tangents):
        """Directional derivative of ``apply(residuals, x)`` in the residuals.

        ``tangents`` has the structure of ``residuals`` with ``None`` for zero tangents. The
        default differentiates ``apply`` with ``jax.jvp``; override it to give the derivative
        a hand-written transpose (e.g. to recompute per-view intermediates instead of storing
        them in reverse mode).
        """
        leaves, tree = _tree.tree_flatten(residuals)
        t_leaves = tree.flatten_up_to(tangents)
        which = [i for i, t in enumerate(t_leaves) if t is not None]

        def f(nonzero):
            full = list(leaves)
            for i, v in zip(which, nonzero):
                full[i] = v
            return self.apply(_tree.tree_unflatten(tree, full), x)

        return jax.jvp(f, ([leaves[i] for i in which],), ([t_leaves[i] for i in which],))[1]


linear_map_p = Primitive("jaxspect_linear_map")
linear_map_p.multiple_results = True


def linear_apply(lmap: AbstractLinearMap, residuals, x):
    """``lmap.apply(residuals, x)`` as a primitive with ``lmap``'s transpose (see the module
    docstring). ``residuals`` and ``x`` are pytrees of arrays (``None`` allowed)."""
    res_flat, res_tree = _tree.tree_flatten(residuals)
    x_flat, x_tree = _tree.tree_flatten(x)
    res_flat = [jnp.asarray(r) for r in res_flat]
    x_flat = [jnp.asarray(v) for v in x_flat]
    out_flat = linear_map_p.bind(*res_flat, *x_flat, lmap=lmap, res_tree=res_tree, x_tree=x_tree)
    out_tree, _ = _out_info(lmap, res_tree, x_tree, _avals(res_flat + x_flat))
    return _tree.tree_unflatten(out_tree, out_flat)


def _avals(values):
    return tuple(jax.core.ShapedArray(jnp.shape(v), jnp.result_type(v)) for v in values)


def _split(flat, res_tree, x_tree):
    n = res_tree.num_leaves
    return _tree.tree_unflatten(res_tree, flat[:n]), _tree.tree_unflatten(x_tree, flat[n:])


@functools.lru_cache(maxsize=1024)
def _out_info(lmap, res_tree, x_tree, in_avals):
    """Output treedef and avals of ``lmap.apply`` for these input avals (cached)."""
    structs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in in_avals]
    out = jax.eval_shape(lambda *flat: lmap.apply(*_split(list(flat), res_tree, x_tree)), *structs)
    leaves, out_tree = _tree.tree_flatten(out)
    return out_tree, tuple(jax.core.ShapedArray(o.shape, o.dtype) for o in leaves)


def _apply_flat(*flat, lmap, res_tree, x_tree):
    return _tree.tree_leaves(lmap.apply(*_split(list(flat), res_tree, x_tree)))


@functools.lru_cache(maxsize=256)
def _jitted(lmap, res_tree, x_tree):
    return jax.jit(functools.partial(_apply_flat, lmap=lmap, res_tree=res_tree, x_tree=x_tree))


def _impl(*flat, lmap, res_tree, x_tree):
    return _jitted(lmap, res_tree, x_tree)(*flat)


def _abstract_eval(*avals, lmap, res_tree, x_tree):
    return list(_out_info(lmap, res_tree, x_tree, _avals_of(avals))[1])


def _avals_of(avals):
    return tuple(jax.core.ShapedArray(a.shape, a.dtype) for a in avals)


def _is_zero(t) -> bool:
    return type(t) is ad.Zero or jnp.result_type(t) == jax.dtypes.float0


def _jvp(primals, tangents, *, lmap, res_tree, x_tree):
    params = dict(lmap=lmap, res_tree=res_tree, x_tree=x_tree)
    out = linear_map_p.bind(*primals, **params)
    n = res_tree.num_leaves
    t_res, t_x = tangents[:n], tangents[n:]
    t_out = None
    if not all(_is_zero(t) for t in t_x):
        t_x = [ad.instantiate_zeros(t) for t in t_x]
        t_out = linear_map_p.bind(*primals[:n], *t_x, **params)
    if not all(_is_zero(t) for t in t_res):
        residuals, x = _split(list(primals), res_tree, x_tree)
        t_tree = _tree.tree_unflatten(res_tree, [None if _is_zero(t) else t for t in t_res])
        extra = _tree.tree_leaves(lmap.residual_jvp(residuals, x, t_tree))
        t_out = extra if t_out is None else [a + b for a, b in zip(t_out, extra)]
    if t_out is None:
        t_out = [ad.Zero(jax.core.ShapedArray(o.shape, o.dtype)) for o in out]
    return out, t_out


def _transpose(cts, *args, lmap, res_tree, x_tree):
    n = res_tree.num_leaves
    res_flat, x_flat = args[:n], args[n:]
    if any(ad.is_undefined_primal(r) for r in res_flat):
        raise NotImplementedError(f"{type(lmap).__name__} is not linear in its residual inputs")
    x_avals = [a.aval if ad.is_undefined_primal(a) else jax.core.ShapedArray(jnp.shape(a), jnp.result_type(a))
               for a in x_flat]
    if all(type(ct) is ad.Zero for ct in cts):
        return [None] * n + [ad.Zero(a) if ad.is_undefined_primal(x) else None for a, x in zip(x_avals, x_flat)]
    out_tree, out_avals = _out_info(lmap, res_tree, x_tree, _avals_of([*(_aval(r) for r in res_flat), *x_avals]))
    cts = [ad.instantiate_zeros(ct) if type(ct) is ad.Zero else ct for ct in cts]
    x_cts = linear_map_p.bind(*res_flat, *cts, lmap=lmap.transpose(), res_tree=res_tree, x_tree=out_tree)
    return [None] * n + [ct if ad.is_undefined_primal(x) else None for ct, x in zip(x_cts, x_flat)]


def _aval(value):
    return jax.core.ShapedArray(jnp.shape(value), jnp.result_type(value))


class _VmappedMap(AbstractLinearMap):
    """``lmap`` vmapped over a leading axis of ``x`` and of the residuals marked in ``axes``."""

    lmap: AbstractLinearMap = eqx.field(static=True)
    res_tree: object = eqx.field(static=True)
    axes: tuple = eqx.field(static=True)  # 0 or None per residual leaf

    def _in_axes(self):
        return _tree.tree_unflatten(self.res_tree, list(self.axes))

    def apply(self, residuals, x):
        return jax.vmap(self.lmap.apply, in_axes=(self._in_axes(), 0))(residuals, x)

    def transpose(self):
        return _VmappedMap(self.lmap.transpose(), self.res_tree, self.axes)

    def residual_jvp(self, residuals, x, tangents):
        axes = self._in_axes()
        return jax.vmap(self.lmap.residual_jvp, in_axes=(axes, 0, axes))(residuals, x, tangents)


def _batch(args, dims, *, lmap, res_tree, x_tree):
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    moved = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    n = res_tree.num_leaves
    res_flat, x_flat = moved[:n], moved[n:]
    # Unbatched linear inputs are broadcast: the map is then applied per batch element.
    x_flat = [x if d is not None else jnp.broadcast_to(x, (size, *jnp.shape(x))) for x, d in zip(x_flat, dims[n:])]
    axes = tuple(None if d is None else 0 for d in dims[:n])
    out = linear_map_p.bind(*res_flat, *x_flat, lmap=_VmappedMap(lmap, res_tree, axes), res_tree=res_tree,
                            x_tree=x_tree)
    return out, [0] * len(out)


linear_map_p.def_impl(_impl)
linear_map_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(linear_map_p, mlir.lower_fun(_apply_flat, multiple_results=True))
ad.primitive_jvps[linear_map_p] = _jvp
ad.primitive_transposes[linear_map_p] = _transpose
batching.primitive_batchers[linear_map_p] = _batch
