"""SPECT forward projector and its exact adjoint (Algorithms 1 and 2 of the paper).

For view ``l``: rotate the image and the attenuation map by ``theta_l``, multiply by the
attenuation factors of eq. (1), blur every depth plane by its PSF (replicate padding) and sum
over depth. The backprojector applies the exact transpose of each step in reverse order. Views
are processed in a ``lax.scan`` (``views_per_batch`` at a time), so no more than a few rotated
volumes exist at once.

The projector and the back projector are one linear map and its transpose
(:class:`_Projection`, applied through :func:`jaxspect._linear.linear_apply`), so every JAX
transformation sees the pair: the VJP and ``jax.linear_transpose`` of :func:`forward_project`
are :func:`back_project` (and vice versa), ``jax.jvp``/``jacfwd`` apply the projector to the
tangent, ``vmap`` vmaps it; autodiff stores no per-view intermediates. Derivatives with respect
to the attenuation map and to the geometry's arrays (angles, radii, PSF parameters) are exact
too, in forward and reverse mode (:class:`_ResidualDerivative`: a per-view JVP, whose transpose
is a per-view VJP recomputed in a scan); they are computed only when asked for. See
``jaxspect/_linear.py`` for why this mechanism rather than ``custom_vjp`` or ``linear_call``.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

from ._attenuation import attenuation_factors
from ._geometry import SPECTGeometry
from ._psf import _is_concrete, blur_and_sum, blur_and_sum_adjoint
from ._linear import AbstractLinearMap, linear_apply
from ._operator import AbstractProjector
from ._rotate import ROTATION_METHODS, _rotate, _rotate_impl


# --- one view ----------------------------------------------------------------------------------


def _materialize(x):
    """An optimisation barrier between the stages of a view. XLA's CPU pipeline removes it
    before fusion (the optimised HLO has none), yet a view measured 3-8 % slower without it
    (4.4 vs 4.6 ms per view at the paper's size, both rotations); a ``lax.cond`` in its place,
    which does stop fusion, made the bilinear view 2x slower."""
    return lax.optimization_barrier(x)


def _view_attenuation(mumap, atten_l, angle, dy, method, rotate_fn):
    """Attenuation factors of one view, depth-major ``(ny, nx, nz)``, or None."""
    if atten_l is not None:
        return atten_l
    if mumap is None:
        return None
    return attenuation_factors(_materialize(rotate_fn(mumap, angle, method, True)), dy, depth_axis=0)


def _forward_view(image, mumap, atten_l, angle, fx, fz, *, dy, method, plain=False):
    """Projection ``(nx, nz)`` of ``image`` for one view.

    Inside a view everything is depth-major, ``(ny, nx, nz)``: the rotation writes that layout
    directly, so the depth scan and the per-plane blur need no transposes.
    """
    rotate_fn = _rotate_impl if plain else _rotate
    dtype = image.dtype
    if mumap is not None and atten_l is None and mumap.dtype == dtype:
        # one rotation of both: the three-pass taps are computed once for the two
        weighted, mumap_rotated = rotate_fn((image, mumap), angle, method, True)
        atten = attenuation_factors(_materialize(mumap_rotated), dy, depth_axis=0)
    else:
        weighted = rotate_fn(image, angle, method, True)
        atten = _view_attenuation(mumap, atten_l, angle, dy, method, rotate_fn)
    weighted = _materialize(weighted)
    if atten is not None:
        weighted = _materialize(weighted * atten.astype(dtype))
    return blur_and_sum(weighted, fx.astype(dtype), fz.astype(dtype))


def _back_view(view, mumap, atten_l, angle, fx, fz, *, dy, method):
    """Exact adjoint of :func:`_forward_view` (in ``image``), applied to one view ``(nx, nz)``."""
    dtype = view.dtype
    spread = _materialize(blur_and_sum_adjoint(view, fx.astype(dtype), fz.astype(dtype)))
    atten = _view_attenuation(mumap, atten_l, angle, dy, method, _rotate)
    if atten is not None:
        spread = _materialize(spread * atten.astype(dtype))
    return _rotate(spread, angle, method, True, adjoint=True)


# --- loops over views --------------------------------------------------------------------------


def _per_view_inputs(geometry: SPECTGeometry, atten):
    """Per-view scanned inputs: (angle, fx, fz, cached attenuation or None)."""
    fx, fz = geometry.psf.factors(geometry)
    return (geometry.angles, fx, fz, atten)


def _map_views(fn, xs, views_per_batch):
    """``stack([fn(x) for x in xs])`` over the leading (view) axis, a few views at a time."""
    return lax.map(fn, xs, batch_size=None if views_per_batch == 1 else views_per_batch)


def _sum_views(fn, xs, init, views_per_batch):
    """``init + sum(fn(x) for x in xs)`` over the leading (view) axis, a few views at a time."""
    leaves = [x for x in jax.tree_util.tree_leaves(xs)]
    nview = leaves[0].shape[0]
    k = min(views_per_batch, nview)
    nfull = (nview // k) * k
    add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)

    def chunk_sum(chunk):
        if k == 1:
            return fn(jax.tree_util.tree_map(lambda x: x[0], chunk))
        return jax.tree_util.tree_map(lambda y: jnp.sum(y, axis=0), jax.vmap(fn)(chunk))

    chunks = jax.tree_util.tree_map(lambda x: x[:nfull].reshape(nview // k, k, *x.shape[1:]), xs)
    total, _ = lax.scan(lambda acc, chunk: (add(acc, chunk_sum(chunk)), None), init, chunks)
    if nfull < nview:
        rest = jax.tree_util.tree_map(lambda x: x[nfull:], xs)
        total = add(total, jax.tree_util.tree_map(lambda y: jnp.sum(y, axis=0), jax.vmap(fn)(rest)))
    return total


def _forward_views(image, mumap, atten, geometry, method, views_per_batch, plain=False):
    dy = geometry.voxel_size[1]

    def one(inputs):
        angle, fx, fz, atten_l = inputs
        return _forward_view(image, mumap, atten_l, angle, fx, fz, dy=dy, method=method, plain=plain)

    views = _map_views(one, _per_view_inputs(geometry, atten), views_per_batch)
    return jnp.moveaxis(views, 0, -1)


def _back_views(views, mumap, atten, geometry, method, views_per_batch):
    dy = geometry.voxel_size[1]

    def one(inputs):
        view, (angle, fx, fz, atten_l) = inputs
        return _back_view(view, mumap, atten_l, angle, fx, fz, dy=dy, method=method)

    xs = (jnp.moveaxis(views, -1, 0), _per_view_inputs(geometry, atten))
    init = jnp.zeros(geometry.image_shape, views.dtype)
    return _sum_views(one, xs, init, views_per_batch)


# --- the projector as a linear map with a hand-written transpose ---------------------------------


class _Projection(AbstractLinearMap):
    """``A(mumap) @ image`` (``adjoint=False``) or ``A(mumap)' @ views`` (``adjoint=True``); the
    residuals are ``(mumap, atten, geometry)``. The transpose of one is the other, so the VJP of
    the projector is the gather-based back projector (and vice versa); no per-view intermediate
    is stored by any transformation."""

    method: str = eqx.field(static=True)
    views_per_batch: int = eqx.field(static=True)
    adjoint: bool = eqx.field(static=True)

    def apply(self, residuals, x):
        mumap, atten, geometry = residuals
        views_fn = _back_views if self.adjoint else _forward_views
        return views_fn(x, mumap, atten, geometry, self.method, self.views_per_batch)

    def transpose(self):
        return _Projection(self.method, self.views_per_batch, not self.adjoint)

    def residual_jvp(self, residuals, x, tangents):
        mumap, atten, geometry = residuals
        t_mumap, t_atten, t_geometry = tangents
        t_leaves = jax.tree_util.tree_structure(geometry).flatten_up_to(t_geometry)
        derivative = _ResidualDerivative(
            self.method, self.views_per_batch, self.adjoint, False,
            t_mumap is not None, t_atten is not None, tuple(t is not None for t in t_leaves),
        )
        linear = (t_mumap, t_atten, [t for t in t_leaves if t is not None])
        return linear_apply(derivative, (x, mumap, atten, geometry), linear)


class _ResidualDerivative(AbstractLinearMap):
    """Derivative of :class:`_Projection` in its residuals (the inputs the projector is not
    linear in), linear in their tangents ``(t_mumap | None, t_atten | None, [tangents of the
    geometry's leaves marked in geometry_nz])``; residuals ``(x, mumap, atten, geometry)``.

    Forward (``transposed=False``): a per-view ``jax.jvp`` in a loop over views. Transposed: the
    cotangents by a per-view VJP recomputed inside a scan, so reverse mode in ``mumap`` or the
    geometry stores no per-view intermediates either.
    """

    method: str = eqx.field(static=True)
    views_per_batch: int = eqx.field(static=True)
    adjoint: bool = eqx.field(static=True)
    transposed: bool = eqx.field(static=True)
    want_mumap: bool = eqx.field(static=True)
    want_atten: bool = eqx.field(static=True)
    geometry_nz: tuple = eqx.field(static=True)

    def transpose(self):
        return dataclasses.replace(self, transposed=not self.transposed)

    def _view_fn(self, geometry):
        view_fn = _back_view if self.adjoint else _forward_view
        return partial(view_fn, dy=geometry.voxel_size[1], method=self.method)

    def _prep(self, geometry):
        """``values -> (angles, fx, fz)`` as a function of the marked geometry leaves."""
        leaves, tree = jax.tree_util.tree_flatten(geometry)
        which = [i for i, nz in enumerate(self.geometry_nz) if nz]

        def prep(values):
            full = list(leaves)
            for i, v in zip(which, values):
                full[i] = v
            return _per_view_inputs(jax.tree_util.tree_unflatten(tree, full), None)[:3]

        return prep, [leaves[i] for i in which]

    def _split_view(self, fixed, view_fn, mumap, atten_l, angle, fx, fz):
        """``(f, primals, names)``: one view as a function of the differentiated inputs only
        (``fixed`` is the image for ``A``, the view for ``A'``)."""
        names = ["mumap", "atten", "angle", "fx", "fz"]
        values = dict(zip(names, (mumap, atten_l, angle, fx, fz)))
        diff = [n for n, want in zip(names, (self.want_mumap, self.want_atten) + (any(self.geometry_nz),) * 3) if want]

        def f(*args):
            kw = dict(values, **dict(zip(diff, args)))
            return view_fn(fixed, kw["mumap"], kw["atten"], kw["angle"], kw["fx"], kw["fz"])

        return f, [values[n] for n in diff], diff

    def apply(self, residuals, linear):
        x, mumap, atten, geometry = residuals
        view_fn = self._view_fn(geometry)
        prep, values = self._prep(geometry)
        want_geom = any(self.geometry_nz)
        if self.transposed:
            return self._cotangents(x, mumap, atten, geometry, view_fn, prep, values, linear)
        t_mumap, t_atten, t_geom = linear
        if want_geom:
            (angles, fx, fz), (t_angles, t_fx, t_fz) = jax.jvp(prep, (values,), (list(t_geom),))
        else:
            (angles, fx, fz), (t_angles, t_fx, t_fz) = prep(values), (None, None, None)
        items = jnp.moveaxis(x, -1, 0) if self.adjoint else None

        def one(inputs):
            item, angle, fx_l, fz_l, atten_l, ta, tfx, tfz, tatt = inputs
            fixed = item if self.adjoint else x
            f, primals, diff = self._split_view(fixed, view_fn, mumap, atten_l, angle, fx_l, fz_l)
            tangents = dict(mumap=t_mumap, atten=tatt, angle=ta, fx=tfx, fz=tfz)
            return jax.jvp(f, primals, [tangents[n] for n in diff])[1]

        xs = (items, angles, fx, fz, atten, t_angles, t_fx, t_fz, t_atten)
        if self.adjoint:
            return _sum_views(one, xs, jnp.zeros(geometry.image_shape, x.dtype), self.views_per_batch)
        return jnp.moveaxis(_map_views(one, xs, self.views_per_batch), 0, -1)

    def _cotangents(self, x, mumap, atten, geometry, view_fn, prep, values, cotangent):
        want_geom = any(self.geometry_nz)
        if want_geom:
            (angles, fx, fz), prep_vjp = jax.vjp(prep, values)
        else:
            angles, fx, fz = prep(values)
        # Per view: the view's item (data for A', cotangent for A) against the whole other side.
        items = jnp.moveaxis(x if self.adjoint else cotangent, -1, 0)

        def body(mu_acc, inputs):
            item, angle, fx_l, fz_l, atten_l = inputs
            fixed, ct = (item, cotangent) if self.adjoint else (x, item)
            f, primals, diff = self._split_view(fixed, view_fn, mumap, atten_l, angle, fx_l, fz_l)
            cts = dict(zip(diff, jax.vjp(f, *primals)[1](ct)))
            if mu_acc is not None:
                mu_acc = mu_acc + cts["mumap"]
            geom_parts = (cts["angle"], cts["fx"], cts["fz"]) if want_geom else None
            return mu_acc, (cts.get("atten"), geom_parts)

        mu_init = jnp.zeros_like(mumap) if self.want_mumap else None
        mu_ct, (atten_ct, geom_parts) = lax.scan(body, mu_init, (items, angles, fx, fz, atten))
        geom_ct = list(prep_vjp(geom_parts)[0]) if want_geom else []
        return mu_ct, atten_ct, geom_ct


def _project(inputs, method, views_per_batch, adjoint=False):
    """``A @ image`` (or ``A' @ views`` with ``adjoint``) for ``inputs = (x, mumap, atten,
    geometry)``: linear in ``x`` with the exact transpose, differentiable in the rest."""
    x, mumap, atten, geometry = inputs
    return linear_apply(_Projection(method, views_per_batch, adjoint), (mumap, atten, geometry), x)


# --- input checks ------------------------------------------------------------------------------


def _check_array(name, value, shape, what):
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise TypeError(f"{name} must be an array of shape {shape} ({what}), got {type(value).__name__}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} ({what}), got {tuple(value.shape)}")
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {value.dtype}")
    return jnp.asarray(value)


def _check_options(geometry, rotation, views_per_batch):
    if not isinstance(geometry, SPECTGeometry):
        raise TypeError(f"geometry must be a jaxspect.SPECTGeometry, got {type(geometry).__name__}")
    if rotation not in ROTATION_METHODS:
        raise ValueError(f"rotation must be one of {ROTATION_METHODS}, got {rotation!r}")
    if not isinstance(views_per_batch, (int, np.integer)) or views_per_batch < 1:
        raise ValueError(f"views_per_batch must be a positive integer, got {views_per_batch!r}")


def _check_mumap(mumap, geometry):
    """Shape, dtype, finiteness, non-negativity and orbit clearance of an attenuation map."""
    if mumap is None:
        return None
    mumap = _check_array("mumap", mumap, geometry.image_shape, "attenuation map in 1/mm, image grid")
    if _is_concrete(mumap):
        m = np.asarray(mumap)
        if not np.all(np.isfinite(m)):
            raise ValueError("mumap contains NaN or Inf")
        if np.any(m < 0):
            raise ValueError(f"mumap must be >= 0 (1/mm), got minimum {m.min():.3g}")
    else:
        mumap = eqx.error_if(mumap, ~jnp.all(jnp.isfinite(mumap)), "mumap contains NaN or Inf")
        mumap = eqx.error_if(mumap, jnp.any(mumap < 0), "mumap must be >= 0 (1/mm)")
    return geometry.check_orbit(mumap, name="mumap")


# --- public API --------------------------------------------------------------------------------


def forward_project(
    image: Float[Array, "nx ny nz"],
    mumap: Float[Array, "nx ny nz"] | None,
    geometry: SPECTGeometry,
    *,
    rotation: str = "bilinear",
    views_per_batch: int = 1,
) -> Float[Array, "nx nz nview"]:
    """Project an activity image to SPECT views: ``views = A(mumap) @ image``.

    Arguments:
        image: activity per voxel, shape ``geometry.image_shape``.
        mumap: attenuation map in 1/mm on the image grid, or ``None`` for no attenuation.
        geometry: the :class:`SPECTGeometry`.
        rotation: ``"bilinear"`` (default) or ``"three_pass"``.
        views_per_batch: views processed together (vmapped) per loop step; more is faster on
            accelerators and costs that many rotated volumes of memory.

    Returns:
        Projections of shape ``(nx, nz, nview)`` in the image's units times voxel count (no
        voxel-length factor, as in SPECTrecon.jl). Linear in ``image`` with transpose (VJP,
        ``jax.linear_transpose``) :func:`back_project`; forward mode, ``vmap`` and higher
        derivatives work too, in ``image``, ``mumap`` and the geometry's arrays.
    """
    _check_options(geometry, rotation, views_per_batch)
    image = _check_array("image", image, geometry.image_shape, "geometry.image_shape")
    mumap = _check_mumap(mumap, geometry)
    return _project((image, mumap, None, geometry), rotation, int(views_per_batch))


def back_project(
    views: Float[Array, "nx nz nview"],
    mumap: Float[Array, "nx ny nz"] | None,
    geometry: SPECTGeometry,
    *,
    rotation: str = "bilinear",
    views_per_batch: int = 1,
) -> Float[Array, "nx ny nz"]:
    """Exact adjoint of :func:`forward_project`: ``image = A(mumap)^T @ views``.

    ``views`` has shape ``geometry.views_shape == (nx, nz, nview)``; the other arguments are as
    in :func:`forward_project`. Its transpose (VJP in ``views``) is :func:`forward_project`.
    """
    _check_options(geometry, rotation, views_per_batch)
    views = _check_array("views", views, geometry.views_shape, "(nx, nz, nview) of geometry")
    mumap = _check_mumap(mumap, geometry)
    return _project((views, mumap, None, geometry), rotation, int(views_per_batch), adjoint=True)


def _forward_project_autodiff(image, mumap, geometry, *, rotation="bilinear"):
    """The same forward model without any custom derivative rule (plain gathers), for tests
    that compare the registered VJP with JAX's own autodiff / ``jax.linear_transpose``."""
    return _forward_views(image, mumap, None, geometry, rotation, 1, plain=True)


class SPECTProjector(AbstractProjector):
    """The SPECT system matrix ``A`` for one patient, as an operator: ``A(x)``, ``A.T(v)``.

    Arguments:
        geometry: the :class:`SPECTGeometry`.
        mumap: attenuation map in 1/mm (image grid) or ``None``.
        rotation: ``"bilinear"`` or ``"three_pass"``.
        views_per_batch: views processed together per loop step.
        cache_attenuation: precompute the per-view attenuation factors once. Saves one
            volume rotation and an ``exp`` per view and call (~30% of a projection), at a cost
            of ``nview * nx * ny * nz`` floats of memory (e.g. 128 views of 128x128x80 in
            float32: 671 MB; :func:`jaxspect.osem` with ``S`` subsets holds ``1 + 1/S`` times
            that). Worth it when one patient is projected many times (EM). The cached
            operator is differentiable in the cached factors (``attenuation``, per view in the
            rotated frame, depth-major ``(nview, ny, nx, nz)``), not in ``mumap``.

    An Equinox module (a pytree): pass it through ``jit``/``vmap``/``grad`` like any array.
    The :class:`jaxspect.AbstractProjector` of the SPECT model; ``A.T`` and ``as_matrix`` come
    from there. A linear operator for every JAX transformation: ``jax.jvp``, ``jax.linearize``,
    ``jax.linear_transpose``, ``jacfwd``/``jacrev``, ``vmap``, ``grad`` (the transpose is the
    exact back projector), and derivatives in ``mumap`` and the geometry's arrays.
    """

    geometry: SPECTGeometry
    mumap: Float[Array, "nx ny nz"] | None
    attenuation: Float[Array, "nview ny nx nz"] | None
    rotation: str = eqx.field(static=True)
    views_per_batch: int = eqx.field(static=True)

    def __init__(self, geometry, mumap=None, *, rotation="bilinear", views_per_batch=1, cache_attenuation=False):
        _check_options(geometry, rotation, views_per_batch)
        mumap = _check_mumap(mumap, geometry)
        self.geometry = geometry
        self.rotation = rotation
        self.views_per_batch = int(views_per_batch)
        if cache_attenuation and mumap is not None:
            dy = geometry.voxel_size[1]
            one = lambda angle: _view_attenuation(mumap, None, angle, dy, rotation, _rotate)
            self.attenuation = _map_views(one, geometry.angles, self.views_per_batch)
            self.mumap = None
        else:
            self.attenuation = None
            self.mumap = mumap

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return self.geometry.image_shape

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.geometry.views_shape

    def __call__(self, image: Float[Array, "nx ny nz"]) -> Float[Array, "nx nz nview"]:
        """Forward projection ``A @ image``."""
        image = _check_array("image", image, self.in_shape, "geometry.image_shape")
        return _project((image, self.mumap, self.attenuation, self.geometry), self.rotation, self.views_per_batch)

    def back(self, views: Float[Array, "nx nz nview"]) -> Float[Array, "nx ny nz"]:
        """Back projection ``A.T @ views`` (the exact adjoint)."""
        views = _check_array("views", views, self.out_shape, "(nx, nz, nview) of geometry")
        return _project((views, self.mumap, self.attenuation, self.geometry), self.rotation, self.views_per_batch, True)

    def view_subset(self, indices) -> "SPECTProjector":
        """The operator restricted to the views ``indices`` (e.g. one ordered subset)."""
        indices = jnp.asarray(indices)
        attenuation = None if self.attenuation is None else self.attenuation[indices]
        return eqx.tree_at(
            lambda a: (a.geometry, a.attenuation),
            self,
            (self.geometry.view_subset(indices), attenuation),
            is_leaf=lambda x: x is None,
        )
