"""Forward/back projector: exact adjoint, registered VJPs, physics, transforms, bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import jaxspect as js
from jaxspect._projector import _forward_project_autodiff
from jaxspect.phantoms import ellipsoid, elliptic_cylinder

from .conftest import random_symmetric_psf, small_problem

METHODS = ["bilinear", "three_pass"]
project = jax.jit(js.forward_project, static_argnames=("rotation", "views_per_batch"))
backproject = jax.jit(js.back_project, static_argnames=("rotation", "views_per_batch"))


def rel_fro(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b))


# --- exact adjoint ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mu_scale", [1.0, 0.05])
def test_dense_adjoint_float32(rng, method, mu_scale):
    geometry, mumap = small_problem(rng, mu_scale=mu_scale)
    a = js.SPECTProjector(geometry, jnp.asarray(mumap), rotation=method)
    m, mt = np.asarray(a.as_matrix()), np.asarray(a.T.as_matrix())
    assert m.shape == (8 * 6 * 7, 8 * 8 * 6) and m.dtype == np.float32
    assert np.abs(m).max() > 0.05  # not trivially zero
    assert rel_fro(mt, m.T) < 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_dense_adjoint_float64(rng, x64, method):
    geometry, mumap = small_problem(rng, dtype=np.float64)
    a = js.SPECTProjector(geometry, jnp.asarray(mumap), rotation=method)
    m, mt = np.asarray(a.as_matrix()), np.asarray(a.T.as_matrix())
    assert m.dtype == np.float64
    assert rel_fro(mt, m.T) < 1e-10


@pytest.mark.parametrize("method", METHODS)
def test_dot_test_float64_32x32x20_30_views(rng, x64, method):
    nx, nz, nview = 32, 20, 30
    psf = random_symmetric_psf(rng, 5, 3, nx, nview, np.float64)
    geometry = js.SPECTGeometry((nx, nx, nz), (4.7952,) * 3, psf, nview=nview)
    mumap = jnp.asarray(0.02 * rng.random((nx, nx, nz)))
    x = jnp.asarray(rng.standard_normal((nx, nx, nz)))
    y = jnp.asarray(rng.standard_normal((nx, nz, nview)))
    aty = backproject(y, mumap, geometry, rotation=method)  # back first: no state can leak
    ax = project(x, mumap, geometry, rotation=method)
    assert float(jnp.vdot(y, ax)) == pytest.approx(float(jnp.vdot(x, aty)), rel=1e-10)


# --- registered VJPs -------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_registered_vjp_equals_plain_autodiff_and_linear_transpose(rng, method):
    geometry, mumap = small_problem(rng, mu_scale=0.1)
    mumap = jnp.asarray(mumap)
    x = jnp.asarray(rng.random(geometry.image_shape), jnp.float32)
    ct = jnp.asarray(rng.random(geometry.views_shape), jnp.float32)
    vjp = jax.jit(lambda x, c: jax.vjp(lambda x: js.forward_project(x, mumap, geometry, rotation=method), x)[1](c)[0])
    registered = vjp(x, ct)
    np.testing.assert_allclose(registered, backproject(ct, mumap, geometry, rotation=method), rtol=1e-6, atol=1e-6)
    plain_forward = lambda x: _forward_project_autodiff(x, mumap, geometry, rotation=method)
    plain = jax.jit(lambda x, c: jax.vjp(plain_forward, x)[1](c)[0])(x, ct)
    np.testing.assert_allclose(registered, plain, rtol=1e-5, atol=1e-5)
    transposed = jax.jit(lambda c: jax.linear_transpose(plain_forward, x)(c)[0])(ct)
    np.testing.assert_allclose(registered, transposed, rtol=1e-5, atol=1e-5)
    # and the VJP of the backprojector is the projector
    back = lambda v: js.back_project(v, mumap, geometry, rotation=method)
    back_vjp = jax.jit(lambda c, x: jax.vjp(back, c)[1](x)[0])(ct, x)
    np.testing.assert_allclose(back_vjp, project(x, mumap, geometry, rotation=method), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_mumap_gradient(rng, x64, method):
    geometry, mumap = small_problem(rng, dtype=np.float64, mu_scale=0.05)
    x = jnp.asarray(rng.random(geometry.image_shape))
    w = jnp.asarray(rng.random(geometry.views_shape))
    loss = jax.jit(lambda mu: jnp.sum(w * js.forward_project(x, mu, geometry, rotation=method) ** 2))
    plain = jax.jit(lambda mu: jnp.sum(w * _forward_project_autodiff(x, mu, geometry, rotation=method) ** 2))
    mumap = jnp.asarray(mumap)
    g = jax.grad(loss)(mumap)
    np.testing.assert_allclose(g, jax.grad(plain)(mumap), rtol=1e-9, atol=1e-12)
    direction = jnp.asarray(rng.standard_normal(mumap.shape))
    eps = 1e-6
    fd = (loss(mumap + eps * direction) - loss(mumap - eps * direction)) / (2 * eps)
    assert float(jnp.vdot(g, direction)) == pytest.approx(float(fd), rel=1e-6)
    # joint gradient (activity and attenuation) through the back projector as well
    back_loss = jax.jit(lambda x, mu: jnp.sum(js.back_project(w, mu, geometry, rotation=method) * x))
    gx, gmu = jax.jit(jax.grad(back_loss, (0, 1)))(x, mumap)
    np.testing.assert_allclose(gx, backproject(w, mumap, geometry, rotation=method), rtol=1e-12)
    fd = (back_loss(x, mumap + eps * direction) - back_loss(x, mumap - eps * direction)) / (2 * eps)
    assert float(jnp.vdot(gmu, direction)) == pytest.approx(float(fd), rel=1e-6)


def test_geometry_gradient_matches_finite_differences(x64, rng):
    shape = (12, 12, 4)
    psf = js.GaussianPSF(6.0, 0.05, half_width_x=4, half_width_z=3)
    geometry = js.SPECTGeometry(shape, (4.0, 4.0, 4.0), psf, nview=5, radii=np.linspace(40, 60, 5))
    x = jnp.asarray(ellipsoid(shape, (4.0,) * 3, (5.0, -3.0, 0.0), (12.0, 9.0, 8.0), supersample=2))
    w = jnp.asarray(rng.random(geometry.views_shape))

    @jax.jit
    def loss(g):
        return jnp.sum(w * js.forward_project(x, None, g) ** 2)

    grads = jax.jit(jax.grad(loss))(geometry)
    eps = 1e-6
    for name in ("fwhm0", "slope"):
        where = lambda g: getattr(g.psf, name)
        plus = eqx.tree_at(where, geometry, where(geometry) + eps)
        minus = eqx.tree_at(where, geometry, where(geometry) - eps)
        fd = (loss(plus) - loss(minus)) / (2 * eps)
        assert float(getattr(grads.psf, name)) == pytest.approx(float(fd), rel=1e-6)
    d = jnp.asarray(rng.standard_normal(5))
    radii = lambda g: g.radii
    fd = (loss(eqx.tree_at(radii, geometry, geometry.radii + eps * d))
          - loss(eqx.tree_at(radii, geometry, geometry.radii - eps * d))) / (2 * eps)
    assert float(jnp.vdot(grads.radii, d)) == pytest.approx(float(fd), rel=1e-6)


# --- physics ---------------------------------------------------------------------------------


def pixel_gaussian(fwhm, spacing, half_width):
    """Independent (scipy) pixel-integrated Gaussian taps, normalised."""
    sigma = fwhm / np.sqrt(8 * np.log(2))
    o = np.arange(-half_width, half_width + 1) * spacing
    t = erf((o + spacing / 2) / (np.sqrt(2) * sigma)) - erf((o - spacing / 2) / (np.sqrt(2) * sigma))
    return t / t.sum()


@pytest.mark.parametrize("method", METHODS)
def test_point_source_projects_to_its_depth_psf(x64, method):
    n, nz, d = 32, 16, 4.0
    fwhm0, slope, hx, hz = 3.0, 0.05, 6, 5
    radii = np.array([100.0, 150.0])
    geometry = js.SPECTGeometry(
        (n, n, nz), (d, d, d), js.GaussianPSF(fwhm0, slope, half_width_x=hx, half_width_z=hz),
        angles=np.array([0.0, np.pi / 2]), radii=radii,
    )
    i0, j0, k0 = 10, 21, 7
    x = np.zeros((n, n, nz))
    x[i0, j0, k0] = 1.0
    views = np.asarray(project(jnp.asarray(x), None, geometry, rotation=method))
    c = (n - 1) / 2
    # view 0 faces the j = 0 side: depth plane j0, bin i0; view 1 faces the i = 0 side:
    # depth plane i0, bin n - 1 - j0 (bins run along -j).
    for l, (depth_index, bin_index) in enumerate([(j0, i0), (i0, n - 1 - j0)]):
        dist = radii[l] + (depth_index - c) * d
        fwhm = np.sqrt(fwhm0**2 + (slope * dist) ** 2)
        expected = np.zeros((n, nz))
        expected[bin_index - hx : bin_index + hx + 1, k0 - hz : k0 + hz + 1] = np.outer(
            pixel_gaussian(fwhm, d, hx), pixel_gaussian(fwhm, d, hz)
        )
        np.testing.assert_allclose(views[:, :, l], expected, atol=1e-12)
        # position and width read off the projection
        profile = views[:, k0, l] / views[:, k0, l].sum()
        mean = (profile * np.arange(n)).sum()
        var = (profile * (np.arange(n) - mean) ** 2).sum() * d**2
        assert mean == pytest.approx(bin_index, abs=1e-9)
        sigma = fwhm / np.sqrt(8 * np.log(2))
        assert np.sqrt(var) == pytest.approx(np.sqrt(sigma**2 + d**2 / 12), rel=0.02)


@pytest.mark.parametrize("method", METHODS)
def test_uniform_attenuating_cylinder_point_source(x64, method):
    n, nz, d, mu0, radius = 33, 3, 4.0, 0.015, 40.0
    c = (n - 1) // 2
    body = elliptic_cylinder((n, n, nz), (d, d, d), (radius, radius))
    mumap = jnp.asarray(mu0 * body)
    x = np.zeros((n, n, nz))
    x[c, c, 1] = 1.0
    quarter = np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2])
    geometry = js.SPECTGeometry((n, n, nz), (d, d, d), js.GaussianPSF(3.0, 0.03), angles=quarter, radii=150.0)
    totals = np.asarray(project(jnp.asarray(x), mumap, geometry, rotation=method)).sum(axis=(0, 1))
    # Unattenuated totals are slightly below 1: PSF tails leave the 3-slice axial field of view.
    free = np.asarray(project(jnp.asarray(x), None, geometry, rotation=method)).sum(axis=(0, 1))
    # eq. (1) on the voxel path from the source toward each detector
    paths = [body[c, :c, 1], body[:c, c, 1], body[c, c + 1 :, 1], body[c + 1 :, c, 1]]
    expected = [np.exp(-mu0 * d * (p.sum() + 0.5)) for p in paths]
    np.testing.assert_allclose(totals / free, expected, rtol=1e-12)
    # oblique views: interpolated map, continuous path length radius + ~half voxel blur
    oblique = js.SPECTGeometry((n, n, nz), (d, d, d), js.GaussianPSF(3.0, 0.03), angles=np.array([0.4, 2.2, 5.0]), radii=150.0)
    totals = np.asarray(project(jnp.asarray(x), mumap, oblique, rotation=method)).sum(axis=(0, 1))
    free = np.asarray(project(jnp.asarray(x), None, oblique, rotation=method)).sum(axis=(0, 1))
    np.testing.assert_allclose(totals / free, np.exp(-mu0 * radius), rtol=0.03)


@pytest.mark.parametrize("method", METHODS)
def test_counts_conserved_without_attenuation(method):
    n, nz, d = 48, 8, 4.0
    vs = (d, d, d)
    x = (
        ellipsoid((n, n, nz), vs, (10.0, -20.0, 0.0), (40.0, 30.0, 20.0), supersample=2)
        + 2 * ellipsoid((n, n, nz), vs, (-25.0, 30.0, 4.0), (15.0, 15.0, 10.0), supersample=2)
    ).astype(np.float32)
    geometry = js.SPECTGeometry((n, n, nz), vs, js.GaussianPSF(4.0, 0.04), nview=24, radii=120.0)
    views = project(jnp.asarray(x), None, geometry, rotation=method)
    np.testing.assert_allclose(np.asarray(views).sum(axis=(0, 1)), x.sum(), rtol=0.01)


def test_rotation_methods_agree_on_smooth_phantom():
    n, nz, d = 48, 8, 4.0
    vs = (d, d, d)
    x = ellipsoid((n, n, nz), vs, (8.0, -5.0, 0.0), (50.0, 40.0, 30.0), supersample=2).astype(np.float32)
    mumap = (0.012 * elliptic_cylinder((n, n, nz), vs, (70.0, 60.0))).astype(np.float32)
    geometry = js.SPECTGeometry((n, n, nz), vs, js.GaussianPSF(4.0, 0.04), nview=16, radii=120.0)
    a = project(jnp.asarray(x), jnp.asarray(mumap), geometry, rotation="bilinear")
    b = project(jnp.asarray(x), jnp.asarray(mumap), geometry, rotation="three_pass")
    assert rel_fro(a, b) < 0.05


# --- transforms: jit, vmap, grad, options ----------------------------------------------------


def test_vmap_over_images_and_patients_equals_loop(rng):
    geometry, _ = small_problem(rng)
    xs = jnp.asarray(rng.random((3, *geometry.image_shape)), jnp.float32)
    mus = jnp.asarray(0.05 * rng.random((3, *geometry.image_shape)), jnp.float32)
    batched = jax.jit(jax.vmap(js.forward_project, in_axes=(0, None, None)))(xs, mus[0], geometry)
    loop = jnp.stack([project(x, mus[0], geometry) for x in xs])
    np.testing.assert_allclose(batched, loop, rtol=1e-5, atol=1e-6)
    patients = jax.jit(jax.vmap(js.forward_project, in_axes=(0, 0, None)))(xs, mus, geometry)
    loop = jnp.stack([project(x, m, geometry) for x, m in zip(xs, mus)])
    np.testing.assert_allclose(patients, loop, rtol=1e-5, atol=1e-6)
    views = jnp.asarray(rng.random((3, *geometry.views_shape)), jnp.float32)
    back = jax.jit(jax.vmap(js.back_project, in_axes=(0, 0, None)))(views, mus, geometry)
    loop = jnp.stack([backproject(v, m, geometry) for v, m in zip(views, mus)])
    np.testing.assert_allclose(back, loop, rtol=1e-5, atol=1e-6)
    # grad of a batched loss equals per-patient back projections
    batched_loss = lambda xs: 0.5 * jnp.sum(jax.vmap(js.forward_project, in_axes=(0, 0, None))(xs, mus, geometry) ** 2)
    g = jax.jit(jax.grad(batched_loss))(xs)
    loop = jnp.stack([backproject(project(x, m, geometry), m, geometry) for x, m in zip(xs, mus)])
    np.testing.assert_allclose(g, loop, rtol=1e-5, atol=1e-5)


def test_jit_and_eager_agree_and_options_are_equivalent(rng):
    geometry, mumap = small_problem(rng, mu_scale=0.1)
    mumap = jnp.asarray(mumap)
    x = jnp.asarray(rng.random(geometry.image_shape), jnp.float32)
    v = jnp.asarray(rng.random(geometry.views_shape), jnp.float32)
    eager = js.forward_project(x, mumap, geometry)
    assert eager.dtype == jnp.float32 and eager.shape == (8, 6, 7)
    np.testing.assert_allclose(project(x, mumap, geometry), eager, rtol=1e-6, atol=1e-7)
    # 7 views in batches of 3 (2 full batches + remainder)
    np.testing.assert_allclose(project(x, mumap, geometry, views_per_batch=3), eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        backproject(v, mumap, geometry, views_per_batch=3), backproject(v, mumap, geometry), rtol=1e-5, atol=1e-6
    )
    # the three-pass rotation computes its taps in a lax.cond (on CPU), which vmap turns into a select
    three = dict(rotation="three_pass")
    np.testing.assert_allclose(project(x, mumap, geometry, views_per_batch=3, **three),
                               project(x, mumap, geometry, **three), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(backproject(v, mumap, geometry, views_per_batch=3, **three),
                               backproject(v, mumap, geometry, **three), rtol=1e-5, atol=1e-6)
    a = js.SPECTProjector(geometry, mumap)
    cached = js.SPECTProjector(geometry, mumap, cache_attenuation=True)
    assert cached.attenuation.shape == (7, 8, 8, 6)
    apply = jax.jit(lambda op, u: op(u))
    np.testing.assert_allclose(apply(a, x), eager, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(apply(cached, x), eager, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(apply(cached.T, v), apply(a.T, v), rtol=1e-5, atol=1e-6)
    assert a.T.T is a
    # the operator is a pytree: jit it as an argument, differentiate through it
    f = jax.jit(jax.grad(lambda op, x: jnp.sum(op(x) ** 2), argnums=1))
    np.testing.assert_allclose(f(a, x), 2 * apply(a.T, apply(a, x)), rtol=1e-5, atol=1e-5)


def test_no_attenuation_is_mumap_zero(rng):
    geometry, _ = small_problem(rng)
    x = jnp.asarray(rng.random(geometry.image_shape), jnp.float32)
    np.testing.assert_allclose(
        project(x, None, geometry), project(x, jnp.zeros(geometry.image_shape), geometry), rtol=1e-6
    )


# --- bad input -------------------------------------------------------------------------------


def test_bad_inputs_raise(rng):
    geometry, mumap = small_problem(rng)
    x = np.zeros(geometry.image_shape, np.float32)
    v = np.zeros(geometry.views_shape, np.float32)
    with pytest.raises(ValueError, match=r"image must have shape \(8, 8, 6\)"):
        js.forward_project(np.zeros((8, 8, 5), np.float32), mumap, geometry)
    with pytest.raises(TypeError, match="image must be a floating-point array"):
        js.forward_project(np.zeros(geometry.image_shape, np.int32), mumap, geometry)
    with pytest.raises(TypeError, match="image must be an array"):
        js.forward_project([[1.0]], mumap, geometry)
    with pytest.raises(ValueError, match=r"mumap must have shape \(8, 8, 6\)"):
        js.forward_project(x, mumap[:, :, :3], geometry)
    with pytest.raises(ValueError, match=r"views must have shape \(8, 6, 7\)"):
        js.back_project(v[:, :, :6], mumap, geometry)
    with pytest.raises(ValueError, match="mumap must be >= 0"):
        js.forward_project(x, -mumap, geometry)
    bad = mumap.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match="mumap contains NaN"):
        js.back_project(v, bad, geometry)
    with pytest.raises(Exception, match="mumap contains NaN"):
        jax.block_until_ready(jax.jit(js.forward_project)(x, bad, geometry))
    with pytest.raises(TypeError, match="geometry must be a jaxspect.SPECTGeometry"):
        js.forward_project(x, mumap, {"shape": (8, 8, 6)})
    with pytest.raises(ValueError, match="rotation must be one of"):
        js.forward_project(x, mumap, geometry, rotation="cubic")
    with pytest.raises(ValueError, match="views_per_batch must be a positive integer"):
        js.forward_project(x, mumap, geometry, views_per_batch=0)
    with pytest.raises(ValueError, match=r"image must have shape"):
        js.SPECTProjector(geometry, mumap)(np.zeros((8, 8), np.float32))


def test_two_dimensional_problems(rng):
    # nz == 1 with a pz == 1 PSF is a 2-D problem; it matches every slice of a z-constant volume.
    n, nview = 16, 9
    psf2d = random_symmetric_psf(rng, 5, 1, n, nview)
    g2 = js.SPECTGeometry((n, n, 1), (4.0,) * 3, psf2d, nview=nview)
    g3 = js.SPECTGeometry((n, n, 4), (4.0,) * 3, psf2d, nview=nview)
    slice2d = ellipsoid((n, n, 1), (4.0,) * 3, (6.0, -4.0, 0.0), (20.0, 12.0, 10.0)).astype(np.float32)
    mu2d = (0.01 * elliptic_cylinder((n, n, 1), (4.0,) * 3, (28.0, 28.0))).astype(np.float32)
    v2 = project(jnp.asarray(slice2d), jnp.asarray(mu2d), g2)
    v3 = project(jnp.asarray(np.repeat(slice2d, 4, 2)), jnp.asarray(np.repeat(mu2d, 4, 2)), g3)
    assert v2.shape == (n, 1, nview)
    for k in range(4):
        np.testing.assert_allclose(v3[:, k], v2[:, 0], rtol=1e-5, atol=1e-6)
    # a Gaussian model on a 2-D grid gets pz == 1 automatically and conserves counts
    gg = js.SPECTGeometry((n, n, 1), (4.0,) * 3, js.GaussianPSF(3.0, 0.05), nview=nview, radii=60.0)
    v = project(jnp.asarray(slice2d), None, gg)
    np.testing.assert_allclose(np.asarray(v).sum(axis=(0, 1)), slice2d.sum(), rtol=0.01)
