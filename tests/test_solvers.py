"""lineax and optimistix on the projector, out of the box: least squares by CG on the normal
equations and by LSMR (checked against a dense numpy solve), jit/vmap over right-hand sides,
gradients through the solve, Gauss-Newton / Levenberg-Marquardt fits of an image and of the
PSF parameters."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
import pytest

import jaxspect as js


@pytest.fixture
def problem(rng, x64):
    shape, nview = (8, 8, 2), 10  # 160 measurements, 128 unknowns: full column rank
    psf = js.GaussianPSF(5.0, 0.05, half_width_x=2, half_width_z=1)
    geometry = js.SPECTGeometry(shape, (4.0,) * 3, psf, nview=nview, radii=40.0)
    a = js.SPECTProjector(geometry, jnp.asarray(0.01 * rng.random(shape)))
    return a, np.asarray(a.as_matrix())


def test_lineax_least_squares_jit_vmap_and_grad(problem, rng):
    a, m = problem
    op = a.as_linear_operator()
    ys = jnp.asarray(rng.random((2, *a.out_shape)))
    normal_cg = lx.Normal(lx.CG(rtol=1e-10, atol=1e-10, max_steps=2000))
    lsmr = lx.LSMR(rtol=1e-12, atol=1e-12)

    @eqx.filter_jit
    def solve(ys):
        cg = jax.vmap(lambda y: lx.linear_solve(op, y, normal_cg).value)(ys)  # vmap over right-hand sides
        return cg, lx.linear_solve(op, ys[1], lsmr).value

    cg, ls = solve(ys)
    reference = np.linalg.lstsq(m, np.asarray(ys).reshape(2, -1).T, rcond=None)[0].T.reshape(cg.shape)
    np.testing.assert_allclose(cg, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ls, reference[1], rtol=1e-5, atol=1e-6)
    # The operator's transpose (jax.linear_transpose inside lineax) is the back projector.
    np.testing.assert_allclose(op.transpose().mv(ys[0]), a.back(ys[0]), rtol=1e-12, atol=1e-14)
    # grad of ||x(y)||^2 through the solve, x(y) = (M'M)^-1 M' y: 2 M (M'M)^-1 x
    g = eqx.filter_jit(jax.grad(lambda y: jnp.sum(lx.linear_solve(op, y, lsmr).value ** 2)))(ys[0])
    x = reference[0].ravel()
    expected = 2 * m @ np.linalg.solve(m.T @ m, x)
    assert np.linalg.norm(np.ravel(g) - expected) < 1e-7 * np.linalg.norm(expected)


def test_optimistix_fits_an_image_and_the_psf(problem, rng):
    a, _ = problem
    x_true = jnp.asarray(rng.random(a.in_shape))
    y = a(x_true)
    fit = optx.least_squares(lambda x, _: a(x) - y, optx.GaussNewton(rtol=1e-10, atol=1e-10),
                             jnp.zeros(a.in_shape), max_steps=10)
    np.testing.assert_allclose(fit.value, x_true, rtol=1e-6, atol=1e-7)

    # PSF calibration from a two-point-source acquisition (no attenuation)
    geometry = a.geometry
    sources = jnp.zeros(a.in_shape).at[5, 2, 0].set(100.0).at[2, 5, 1].set(60.0)

    def views(params):
        g = eqx.tree_at(lambda g: (g.psf.fwhm0, g.psf.slope), geometry, (params[0], params[1]))
        return js.forward_project(sources, None, g)

    data = views(jnp.array([6.0, 0.08]))
    residual = lambda p, _: views(p) - data
    # (Gauss-Newton on the same calibration runs in notebooks/linear_operator.py)
    fit = optx.least_squares(residual, optx.LevenbergMarquardt(rtol=1e-10, atol=1e-10), jnp.array([4.5, 0.05]),
                             max_steps=60)
    np.testing.assert_allclose(fit.value, [6.0, 0.08], rtol=1e-6)
