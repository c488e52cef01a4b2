"""One projector interface: every algorithm and learned method runs on a user's own system
model. An explicit-matrix projector is checked against the SPECT projector it was built from,
and against a numpy ML-EM on a random (non-SPECT) matrix."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxspect as js
from jaxspect.nn import PaperCNN
from jaxspect.recon import UnrolledEM

TOL = dict(rtol=1e-9, atol=1e-12)


@pytest.fixture
def pair(rng, x64):
    shape, nview = (8, 8, 4), 6
    geometry = js.SPECTGeometry(shape, (4.0,) * 3, js.GaussianPSF(5.0, 0.05), nview=nview, radii=40.0)
    mumap = jnp.asarray(0.01 * rng.random(shape))
    a = js.SPECTProjector(geometry, mumap)
    m = js.MatrixProjector(a.as_matrix(), a.in_shape, a.out_shape)
    x = jnp.asarray(rng.random(shape))
    y = jnp.asarray(rng.poisson(5 * np.asarray(a(x))), jnp.float64)
    return a, m, x, y


def test_matrix_projector_is_a_projector(pair):
    a, m, x, y = pair
    assert isinstance(a, js.AbstractProjector) and isinstance(m, js.AbstractProjector)
    np.testing.assert_allclose(m(x), a(x), **TOL)
    np.testing.assert_allclose(m.T(y), a.T(y), **TOL)
    np.testing.assert_allclose(m.T.as_matrix(), m.as_matrix().T)
    idx = jnp.array([4, 1])
    np.testing.assert_allclose(m.view_subset(idx)(x), a.view_subset(idx)(x), **TOL)
    with pytest.raises(ValueError, match="matrix must have shape"):
        js.MatrixProjector(np.ones((3, 4)), a.in_shape, a.out_shape)


def test_algorithms_run_through_the_interface(pair):
    a, m, x, y = pair
    x0 = jnp.ones(a.in_shape)
    np.testing.assert_allclose(js.mlem(m, y, x0, n_iter=3, background=0.5).image,
                               js.mlem(a, y, x0, n_iter=3, background=0.5).image, **TOL)
    np.testing.assert_allclose(js.osem(m, y, x0, n_iter=2, n_subsets=4).image,
                               js.osem(a, y, x0, n_iter=2, n_subsets=4).image, **TOL)
    sim_m = js.simulate(jax.random.key(0), x, m, total_counts=1e4)
    sim_a = js.simulate(jax.random.key(0), x, a, total_counts=1e4)
    np.testing.assert_allclose(sim_m.primary, sim_a.primary, **TOL)
    np.testing.assert_allclose(sim_m.background, sim_a.background, **TOL)
    stacked = js.recon.stack_projectors([m, m])
    batch = js.recon.batch_osem(stacked, jnp.stack([y, 2 * y]), n_iter=2, n_subsets=2)
    np.testing.assert_allclose(batch[1], js.osem(m, 2 * y, x0, n_iter=2, n_subsets=2).image, **TOL)


def test_unrolled_em_and_its_gradient_through_the_interface(pair):
    a, m, x, y = pair
    model = UnrolledEM(PaperCNN, jax.random.key(0), n_outer=2, n_inner=1, beta=0.5)
    model = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64) if eqx.is_inexact_array(p) else p, model)
    x0 = js.mlem(a, y, jnp.ones(a.in_shape), n_iter=2).image

    def loss(model, op):
        return jnp.mean((model(x0, op, y, 0.5) - x) ** 2)

    # the same value from either projector, and through the matrix one a gradient that
    # matches central finite differences along a random direction of the parameters
    assert float(eqx.filter_jit(loss)(model, m)) == pytest.approx(float(eqx.filter_jit(loss)(model, a)), rel=1e-9)
    grad = eqx.filter_jit(eqx.filter_grad(loss))(model, m)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree_util.tree_leaves(params))))
    direction = jax.tree_util.tree_map(lambda p: jax.random.normal(next(keys), p.shape, p.dtype), params)
    direction = eqx.tree_at(lambda d: d.beta, direction, jnp.zeros_like(model.beta))  # beta is not trained
    shifted = eqx.filter_jit(lambda e: loss(eqx.combine(jax.tree_util.tree_map(lambda p, d: p + e * d, params,
                                                                                direction), static), m))
    fd = (shifted(1e-6) - shifted(-1e-6)) / 2e-6
    directional = sum(jnp.vdot(g, d) for g, d in zip(jax.tree_util.tree_leaves(eqx.filter(grad, eqx.is_inexact_array)),
                                                      jax.tree_util.tree_leaves(direction)))
    assert float(directional) == pytest.approx(float(fd), rel=1e-6)


def test_random_matrix_mlem_matches_numpy(rng, x64):
    matrix = rng.random((5 * 3 * 4, 5 * 2))  # views (5, 3, 4): 4 views; image (5, 2)
    op = js.MatrixProjector(matrix, (5, 2), (5, 3, 4))
    y = rng.poisson(matrix @ rng.random(10) * 20).astype(np.float64)
    x = np.ones(10)
    for _ in range(4):  # the textbook update, independently
        x = x * (matrix.T @ (y / (matrix @ x))) / matrix.sum(axis=0)
    out = js.mlem(op, jnp.asarray(y.reshape(5, 3, 4)), jnp.ones((5, 2)), n_iter=4).image
    np.testing.assert_allclose(np.ravel(out), x, rtol=1e-12)


def test_duck_typed_projectors_are_rejected_with_a_clear_error():
    class NotAProjector:
        in_shape, out_shape = (2,), (2, 1)

        def __call__(self, x):
            return x[:, None]

        def back(self, v):
            return v[:, 0]

    with pytest.raises(TypeError, match="AbstractProjector"):
        js.mlem(NotAProjector(), jnp.ones((2, 1)), jnp.ones(2), n_iter=1)
    with pytest.raises(TypeError, match="AbstractProjector"):
        js.simulate(jax.random.key(0), jnp.ones(2), NotAProjector())
