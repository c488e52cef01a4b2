"""The projector as a JAX linear operator: forward mode, transposition, vmap of jvp and
second-order derivatives, all checked against the dense matrix or against plain autodiff of
the same gathers (no custom rule)."""

from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxspect as js
from jaxspect._projector import _forward_project_autodiff
from jaxspect._rotate import _rotate_impl

from .conftest import small_problem

METHODS = ["bilinear", "three_pass"]
TOL = dict(rtol=1e-10, atol=1e-12)  # float64 rounding


def problem(rng, method, mu_scale=0.1):
    geometry, mumap = small_problem(rng, nx=8, nz=4, nview=5, dtype=np.float64, mu_scale=mu_scale)
    a = js.SPECTProjector(geometry, jnp.asarray(mumap), rotation=method)
    return a, np.asarray(a.as_matrix())


def test_forward_mode_and_transpose_match_dense_matrix(rng, x64):
    # One rotation method here: the projector's rules do not depend on it (both rotations are
    # checked in test_rotation_forward_mode_and_transpose and the mumap Hessian test).
    method = "bilinear"
    a, m = problem(rng, method)
    x = jnp.asarray(rng.random(a.in_shape))
    v = jnp.asarray(rng.random(a.out_shape))
    t = jnp.asarray(rng.standard_normal(a.in_shape))
    s = jnp.asarray(rng.standard_normal(a.out_shape))
    fp = lambda x: js.forward_project(x, a.mumap, a.geometry, rotation=method)
    bp = lambda v: js.back_project(v, a.mumap, a.geometry, rotation=method)

    @jax.jit
    def everything(x, v, t, s):
        out = {}
        for name, forward, back in (("functions", fp, bp), ("module", a, a.back), ("T", a.T.T, a.T)):
            out[name + ":primal"], out[name + ":jvp"] = jax.jvp(forward, (x,), (t,))
            out[name + ":transpose"] = jax.linear_transpose(forward, x)(s)[0]
            if name == "functions":
                out[name + ":jvp_back"] = jax.jvp(back, (v,), (s,))[1]
                out[name + ":transpose_back"] = jax.linear_transpose(back, v)(t)[0]
        out["linearize"] = jax.linearize(fp, x)[1](t)
        out["linearize_back"] = jax.linearize(bp, v)[1](s)
        out["jacfwd"] = jax.jacfwd(fp)(x).reshape(m.shape)
        out["jacfwd_back"] = jax.jacfwd(bp)(v).reshape(m.T.shape)
        out["vmap_jvp"] = jax.vmap(lambda t: jax.jvp(a, (x,), (t,))[1])(jnp.stack([t, 2 * t + 1]))
        out["vmap_jvp_back"] = jax.vmap(lambda s: jax.jvp(a.T, (v,), (s,))[1])(jnp.stack([s, 3 * s]))
        return out

    out = everything(x, v, t, s)
    mx = lambda vec: (m @ np.ravel(vec)).reshape(a.out_shape)
    mtx = lambda vec: (m.T @ np.ravel(vec)).reshape(a.in_shape)
    for name in ("functions", "module", "T"):
        np.testing.assert_allclose(out[name + ":primal"], mx(x), **TOL)
        np.testing.assert_allclose(out[name + ":jvp"], mx(t), **TOL)
        np.testing.assert_allclose(out[name + ":transpose"], mtx(s), **TOL)
    np.testing.assert_allclose(out["functions:jvp_back"], mtx(s), **TOL)
    np.testing.assert_allclose(out["functions:transpose_back"], mx(t), **TOL)
    np.testing.assert_allclose(out["linearize"], mx(t), **TOL)
    np.testing.assert_allclose(out["linearize_back"], mtx(s), **TOL)
    np.testing.assert_allclose(out["jacfwd"], m, **TOL)
    np.testing.assert_allclose(out["jacfwd_back"], m.T, **TOL)
    np.testing.assert_allclose(out["vmap_jvp"], np.stack([mx(t), mx(2 * t + 1)]), **TOL)
    np.testing.assert_allclose(out["vmap_jvp_back"], np.stack([mtx(s), mtx(3 * s)]), **TOL)


def test_transpose_is_the_gather_back_projector(rng, x64):
    a, _ = problem(rng, "bilinear")
    x = jnp.asarray(rng.random(a.in_shape))
    v = jnp.asarray(rng.random(a.out_shape))
    transposed = jax.linear_transpose(a, x)
    np.testing.assert_allclose(jax.jit(lambda v: transposed(v)[0])(v), jax.jit(lambda v: a.back(v))(v), rtol=1e-13, atol=1e-14)
    # The same program as the back projector (gathers), not an automatic scatter-add transpose.
    jaxpr = str(jax.make_jaxpr(transposed)(v))
    assert "adjoint=True" in jaxpr and "scatter" not in jaxpr
    for grad_jaxpr in (jax.make_jaxpr(jax.grad(lambda x: 0.5 * jnp.sum((a(x) - v) ** 2)))(x),
                       jax.make_jaxpr(jax.grad(lambda mu: jnp.sum(js.forward_project(x, mu, a.geometry))))(a.mumap)):
        assert "scatter" not in str(grad_jaxpr)
    # the transpose of the transpose is the projector
    twice = jax.linear_transpose(lambda w: jax.linear_transpose(a, x)(w)[0], v)
    np.testing.assert_allclose(jax.jit(lambda x: twice(x)[0])(x), jax.jit(lambda x: a(x))(x), rtol=1e-13, atol=1e-14)


def test_reverse_mode_stores_no_per_view_intermediates(rng):
    shape, nview = (8, 8, 4), 12
    geometry = js.SPECTGeometry(shape, (4.0,) * 3, js.GaussianPSF(5.0, 0.05), nview=nview, radii=40.0)
    x = jnp.asarray(rng.random(shape), jnp.float32)
    mu = jnp.asarray(0.01 * rng.random(shape), jnp.float32)
    volume = x.size
    for argnums in ((0,), (1,), (0, 1)):  # image, mumap, both
        def f(*args):
            full = dict(zip(argnums, args))
            return js.forward_project(full.get(0, x), full.get(1, mu), geometry)

        _, pullback = jax.vjp(f, *[(x, mu)[i] for i in argnums])
        stored = sum(leaf.size for leaf in jax.tree_util.tree_leaves(pullback) if hasattr(leaf, "size"))
        assert 0 < stored < 4 * volume, (argnums, stored)  # one rotated volume per view would be 12


def test_hessian_vector_products_in_image_and_mumap(rng, x64):
    method = "bilinear"
    a, m = problem(rng, method, mu_scale=0.05)
    g = a.geometry
    x = jnp.asarray(rng.random(a.in_shape))
    y = jnp.asarray(rng.random(a.out_shape))
    w = jnp.asarray(rng.random(a.out_shape))
    d = jnp.asarray(rng.standard_normal(a.in_shape))

    def loss(x, mu, project):
        return 0.5 * jnp.sum(w * (project(x, mu, g, rotation=method) - y) ** 2)

    ours = partial(loss, project=js.forward_project)
    plain = partial(loss, project=_forward_project_autodiff)

    @jax.jit
    def hvps(x, mu, d):
        grad_x = lambda x: jax.grad(ours)(x, mu)
        grad_mu = lambda loss: lambda mu: jax.grad(loss, 1)(x, mu)
        return dict(
            image=jax.jvp(grad_x, (x,), (d,))[1],  # forward over reverse in the image
            mumap=jax.jvp(grad_mu(ours), (mu,), (d,))[1],  # ... in the mumap
            mumap_rev=jax.grad(lambda mu: jnp.vdot(grad_mu(ours)(mu), d))(mu),  # reverse over reverse
            mumap_plain=jax.jvp(grad_mu(plain), (mu,), (d,))[1],  # plain autodiff of the gathers
            mixed=jax.jvp(lambda mu: jax.grad(ours)(x, mu), (mu,), (d,))[1],  # d/dmu of the image gradient
            mixed_plain=jax.jvp(lambda mu: jax.grad(plain)(x, mu), (mu,), (d,))[1],
        )

    out = hvps(x, a.mumap, d)
    np.testing.assert_allclose(out["image"].ravel(), m.T @ (np.ravel(w) * (m @ np.ravel(d))), **TOL)
    assert np.abs(out["mumap_plain"]).max() > 1e-3
    np.testing.assert_allclose(out["mumap"], out["mumap_plain"], **TOL)
    np.testing.assert_allclose(out["mumap_rev"], out["mumap_plain"], **TOL)
    np.testing.assert_allclose(out["mixed"], out["mixed_plain"], **TOL)


def test_forward_mode_in_mumap_and_psf_parameters(rng, x64):
    shape = (10, 10, 3)
    psf = js.GaussianPSF(6.0, 0.05, half_width_x=3, half_width_z=1)
    geometry = js.SPECTGeometry(shape, (4.0, 4.0, 4.0), psf, nview=4, radii=np.linspace(40, 55, 4))
    x = jnp.asarray(rng.random(shape))
    mu = jnp.asarray(0.02 * rng.random(shape))
    d = jnp.asarray(rng.standard_normal(shape))
    v = jnp.asarray(rng.random(geometry.views_shape))

    def with_psf(params, project):
        g = eqx.tree_at(lambda g: (g.psf.fwhm0, g.psf.slope), geometry, (params[0], params[1]))
        return project(x, mu, g)

    @jax.jit
    def derivatives(mu, d, params):
        ours = partial(with_psf, project=js.forward_project)
        plain = partial(with_psf, project=_forward_project_autodiff)
        back = lambda d: jax.jvp(lambda mu: js.back_project(v, mu, geometry), (mu,), (d,))[1]
        return dict(
            mumap=jax.jvp(lambda mu: js.forward_project(x, mu, geometry), (mu,), (d,))[1],
            mumap_plain=jax.jvp(lambda mu: _forward_project_autodiff(x, mu, geometry), (mu,), (d,))[1],
            back=back(d),
            back_vmap=jax.vmap(back)(jnp.stack([d, -2 * d])),  # vmap of jvp in the mumap
            back_vjp=jax.vjp(lambda mu: js.back_project(v, mu, geometry), mu)[1](x)[0],
            jacfwd=jax.jacfwd(ours)(params),
            jacfwd_plain=jax.jacfwd(plain)(params),
            jacrev=jax.jacrev(ours)(params),
            shifted=jax.vmap(ours)(params + jnp.array([[1e-6, 0.0], [-1e-6, 0.0]])),
        )

    params = jnp.array([6.0, 0.05])
    out = derivatives(mu, d, params)
    np.testing.assert_allclose(out["mumap"], out["mumap_plain"], **TOL)
    np.testing.assert_allclose(out["back_vmap"], np.stack([out["back"], -2 * out["back"]]), **TOL)
    # <x, d/dmu A'(mu) v . d> = <d, grad_mu <x, A'(mu) v>>: forward and reverse agree
    assert float(jnp.vdot(x, out["back"])) == pytest.approx(float(jnp.vdot(d, out["back_vjp"])), rel=1e-10)
    np.testing.assert_allclose(out["jacfwd"], out["jacfwd_plain"], **TOL)
    np.testing.assert_allclose(out["jacfwd"], out["jacrev"], **TOL)
    fd = (out["shifted"][0] - out["shifted"][1]) / 2e-6
    np.testing.assert_allclose(out["jacfwd"][..., 0], fd, rtol=1e-6, atol=1e-9)


def test_rotation_forward_mode_and_transpose(rng, x64):
    v = jnp.asarray(rng.random((9, 9, 2)))
    t = jnp.asarray(rng.standard_normal((9, 9, 2)))

    @jax.jit
    def derivatives(v, t):
        out = {}
        for method in METHODS:
            rot = lambda v: js.rotate(v, 0.37, method)
            out[method + ":jvp"] = jax.jvp(lambda v, a: js.rotate(v, a, method), (v, 0.37), (t, 0.2))[1]
            out[method + ":plain"] = jax.jvp(lambda v, a: _rotate_impl(v, a, method), (v, 0.37), (t, 0.2))[1]
            out[method + ":transpose"] = jax.linear_transpose(rot, v)(t)[0]
            out[method + ":adjoint"] = js.rotate_adjoint(t, 0.37, method)
            out[method + ":jac"] = jax.jacfwd(rot)(v).reshape(v.size, v.size)
            out[method + ":jac_adjoint"] = jax.jacfwd(lambda v: js.rotate_adjoint(v, 0.37, method))(v).reshape(
                v.size, v.size)
        return out

    out = derivatives(v, t)
    for method in METHODS:
        np.testing.assert_allclose(out[method + ":jvp"], out[method + ":plain"], **TOL)
        np.testing.assert_allclose(out[method + ":transpose"], out[method + ":adjoint"], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(out[method + ":jac_adjoint"], out[method + ":jac"].T, **TOL)
