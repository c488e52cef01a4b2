"""Unrolled CNN-regularised EM: the update, the unroll, gradient strategies, training."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxspect as js
from jaxspect.nn import PaperCNN, conv3d, count_parameters
from jaxspect.phantoms import ellipsoid
from jaxspect.recon import (
    EndToEnd, Sequential, Truncated, UnrolledEM, fit, load_model, mlem, regularized_em_step, save_model,
    training_loss,
)

from .conftest import random_symmetric_psf, small_training_set

SHAPE, VS = (8, 8, 4), (4.0, 4.0, 4.0)
identity = lambda key: eqx.nn.Identity()


def tiny_problem(rng, dtype):
    psf = random_symmetric_psf(rng, 3, 3, SHAPE[1], 6, dtype)
    geometry = js.SPECTGeometry(SHAPE, VS, psf, nview=6)
    a = js.SPECTProjector(geometry, jnp.asarray(0.02 * rng.random(SHAPE), dtype))
    truth = jnp.asarray(10 * ellipsoid(SHAPE, VS, (2.0, -1.0, 0.0), (10.0, 8.0, 6.0)) + 1, dtype)
    return a, truth, a(truth)


def test_paper_cnn_has_657_parameters():
    assert count_parameters(PaperCNN(jax.random.key(0))) == 657
    model = UnrolledEM(PaperCNN, jax.random.key(0), n_outer=3)
    assert count_parameters(model.network) == 3 * 657  # one network per outer iteration
    assert count_parameters(UnrolledEM(PaperCNN, jax.random.key(0), n_outer=3, shared=True).network) == 657


@pytest.mark.parametrize("kernel_size", [(3, 3, 3), (5, 3, 1), (1, 1, 3)])
def test_conv3d_planes_equals_native(rng, kernel_size):
    x = jnp.asarray(rng.standard_normal((3, 7, 6, 5)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((2, 3, *kernel_size)), jnp.float32)
    hi = jax.lax.Precision.HIGHEST
    planes = conv3d(x, w, method="planes", precision=hi)
    native = conv3d(x, w, method="native", precision=hi)
    reference = jax.lax.conv_general_dilated(x[None], w, (1, 1, 1), "SAME", precision=hi)[0]
    np.testing.assert_allclose(planes, reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(native, reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="odd"):
        conv3d(x, jnp.ones((2, 3, 2, 3, 3)))


def test_paper_cnn_equals_equinox_layers(rng):
    net = PaperCNN(jax.random.key(1))
    x = jnp.asarray(rng.random((9, 8, 7)), jnp.float32)
    h = jax.nn.relu(net.layers[0](x[None]))
    h = jax.nn.relu(net.layers[1](h))
    np.testing.assert_allclose(net(x), x + net.layers[2](h)[0], rtol=1e-5, atol=1e-5)


def test_update_limits_and_safety():
    x = jnp.asarray([0.0, 1.0, 2.0, 3.0, 1.0])
    e = jnp.asarray([1.0, 2.0, 0.5, 0.0, 0.0])  # e = A'(...) vanishes where A'1 does
    sens = jnp.asarray([1.0, 1.0, 2.0, 1.0, 0.0])
    u = jnp.asarray([1.0, 3.0, 1.0, 1.0, 0.0])
    # beta = 0: the EM update x e / A'1, zero where A'1 = 0 (no NaN)
    np.testing.assert_allclose(regularized_em_step(x, u, e, sens, 0.0), [0.0, 2.0, 0.5, 0.0, 0.0])
    # tiny beta: continuous with beta = 0
    np.testing.assert_allclose(regularized_em_step(x, u, e, sens, 1e-7), [0.0, 2.0, 0.5, 0.0, 0.0], atol=1e-5)
    # beta > 0: the non-negative root of beta x^2 + (A'1 - beta u) x - x_k e = 0
    beta = 0.7
    out = np.asarray(regularized_em_step(x, u, e, sens, beta))
    d = np.asarray(sens - beta * u)
    np.testing.assert_allclose(beta * out**2 + d * out - np.asarray(x * e), 0, atol=1e-5)
    assert np.all(out >= 0) and np.all(np.isfinite(out))


def test_identity_regulariser_fixed_point_and_beta_zero_is_mlem(rng, x64):
    a, truth, y = tiny_problem(rng, np.float64)
    model = UnrolledEM(identity, jax.random.key(0), n_outer=3, n_inner=2, beta=1.0)
    np.testing.assert_allclose(model(truth, a, y), truth, rtol=1e-12)
    x0 = jnp.ones(SHAPE)
    em = UnrolledEM(identity, jax.random.key(0), n_outer=2, n_inner=3, beta=0.0)
    np.testing.assert_allclose(em(x0, a, y), mlem(a, y, x0, n_iter=6).image, rtol=1e-12)


def test_scan_equals_python_loop_shared_and_per_iteration(rng):
    a, truth, y = tiny_problem(rng, np.float32)
    x0 = jnp.full(SHAPE, 2.0)
    for shared in (False, True):
        model = UnrolledEM(PaperCNN, jax.random.key(3), n_outer=3, n_inner=2, beta=0.5, shared=shared)

        @eqx.filter_jit
        def python_loop(model, x):
            sens = a.back(jnp.ones_like(y))
            for k in range(3):
                x = model.outer_step(model.network_at(k), x, a, y, 0.0, sens)
            return x

        x = python_loop(model, x0)
        np.testing.assert_allclose(eqx.filter_jit(model)(x0, a, y), x, rtol=1e-5, atol=1e-5)
        iterates = model(x0, a, y, return_iterates=True)
        assert iterates.shape == (3, *SHAPE)
        np.testing.assert_allclose(iterates[-1], x, rtol=1e-5, atol=1e-5)


def _grads(model, a, y, truth, gradient):
    loss = lambda m: jnp.mean((m(3 * jnp.ones(SHAPE, y.dtype), a, y, gradient=gradient) - truth) ** 2)
    return eqx.filter_jit(eqx.filter_value_and_grad(loss))(model)


def test_end_to_end_gradients_match_finite_differences(rng, x64):
    a, truth, y = tiny_problem(rng, np.float64)
    model = UnrolledEM(lambda k: PaperCNN(k, dtype=jnp.float64), jax.random.key(1), n_outer=2, beta=0.5, train_beta=True)
    _, grads = _grads(model, a, y, truth, EndToEnd())
    loss = eqx.filter_jit(lambda m: jnp.mean((m(3 * jnp.ones(SHAPE), a, y) - truth) ** 2))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    gflat, _ = jax.flatten_util.ravel_pytree(eqx.filter(grads, eqx.is_inexact_array))
    direction = jnp.asarray(rng.standard_normal(flat.shape))
    eps = 1e-6
    f = lambda v: loss(eqx.combine(unravel(v), static))
    fd = (f(flat + eps * direction) - f(flat - eps * direction)) / (2 * eps)
    assert float(gflat @ direction) == pytest.approx(float(fd), rel=1e-6)
    assert float(grads.beta) != 0.0  # beta is trainable here


def test_truncated_gradients_equal_frozen_projector_terms(rng, x64):
    a, truth, y = tiny_problem(rng, np.float64)
    model = UnrolledEM(lambda k: PaperCNN(k, dtype=jnp.float64), jax.random.key(2), n_outer=2, n_inner=2, beta=0.5)
    _, truncated = _grads(model, a, y, truth, Truncated())
    # Independent reference: record the e terms of a forward pass, then differentiate a
    # Python-loop unroll in which they are plain constants.
    sens = a.back(jnp.ones_like(y))

    @eqx.filter_jit
    def record_e_terms(model):
        x, es = 3 * jnp.ones(SHAPE), []
        for k in range(2):
            u, b = UnrolledEM.regularizer(model.network_at(k), x), model.paper_beta(x, sens)
            for _ in range(2):
                es.append(a.back(y / a(x)))
                x = regularized_em_step(x, u, es[-1], sens, b)
        return es

    es = record_e_terms(model)

    def frozen_loss(m):
        x, i = 3 * jnp.ones(SHAPE), 0
        for k in range(2):
            u, b = UnrolledEM.regularizer(m.network_at(k), x), m.paper_beta(x, sens)
            for _ in range(2):
                x = regularized_em_step(x, u, es[i], sens, b)
                i += 1
        return jnp.mean((x - truth) ** 2)

    reference = eqx.filter_jit(eqx.filter_grad(frozen_loss))(model)
    for g, r in zip(jax.tree_util.tree_leaves(truncated.network), jax.tree_util.tree_leaves(reference.network)):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12)
    _, exact = _grads(model, a, y, truth, EndToEnd())
    diff = max(float(jnp.abs(g - r).max()) for g, r in
               zip(jax.tree_util.tree_leaves(truncated.network), jax.tree_util.tree_leaves(exact.network)))
    assert diff > 1e-6  # truncation really changes the gradient


def test_checkpointed_and_plain_gradients_agree(rng):
    a, truth, y = tiny_problem(rng, np.float32)
    model = UnrolledEM(PaperCNN, jax.random.key(4), n_outer=3, beta=1.0)
    l1, g1 = _grads(model, a, y, truth, EndToEnd())
    l2, g2 = _grads(model, a, y, truth, EndToEnd(checkpoint=True))
    assert float(l1) == pytest.approx(float(l2), rel=1e-6)
    for x, z in zip(jax.tree_util.tree_leaves(g1.network), jax.tree_util.tree_leaves(g2.network)):
        np.testing.assert_allclose(x, z, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("gradient", [EndToEnd(), Truncated(), Sequential()], ids=["e2e", "truncated", "sequential"])
def test_training_reduces_loss_reproducibly_and_saves(rng, tmp_path, gradient):
    train, val = small_training_set(rng, 3), small_training_set(rng, 2)
    model = UnrolledEM(PaperCNN, jax.random.key(5), n_outer=2, beta=1.0)
    before = float(training_loss(model, train))
    result = fit(model, train, val, epochs=3, gradient=gradient, key=jax.random.key(0), learning_rate=0.01)
    assert float(training_loss(result.model, train)) < before
    assert result.val_loss is not None and np.all(np.isfinite(result.val_loss))
    if isinstance(gradient, EndToEnd):  # seeded: the same key gives the same run
        again = fit(model, train, val, epochs=3, gradient=gradient, key=jax.random.key(0), learning_rate=0.01)
        np.testing.assert_allclose(result.train_loss, again.train_loss, rtol=1e-5)
    assert float(result.model.beta) == 1.0  # beta not trainable by default
    path = tmp_path / "model.eqx"
    save_model(path, result.model)
    for loaded in (load_model(path, model), load_model(path)):  # with a template, and from the file alone
        assert (loaded.n_outer, loaded.n_inner, loaded.shared) == (2, 1, False)
        for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(result.model)):
            np.testing.assert_array_equal(a, b)


def test_model_files(tmp_path):
    path = tmp_path / "m.eqx"
    model = UnrolledEM(lambda k: PaperCNN(k, channels=2), jax.random.key(1), n_outer=2, n_inner=3, beta=0.5,
                       shared=True, train_beta=True)
    save_model(path, model)
    loaded = load_model(path)
    assert (loaded.n_inner, loaded.shared, loaded.train_beta, float(loaded.beta)) == (3, True, True, 0.5)
    assert loaded.network.layers[0].weight.shape == (2, 1, 3, 3, 3)
    unknown = eqx.nn.Linear(2, 3, key=jax.random.key(0))  # not a registered type: needs a template
    save_model(path, unknown)
    with pytest.raises(ValueError, match="like="):
        load_model(path)
    np.testing.assert_array_equal(load_model(path, eqx.nn.Linear(2, 3, key=jax.random.key(9))).weight, unknown.weight)
    (tmp_path / "junk.eqx").write_bytes(b"\x00\x01not a model")
    with pytest.raises(ValueError, match="not a jaxspect model file"):
        load_model(tmp_path / "junk.eqx")


def test_bad_options():
    with pytest.raises(ValueError, match="n_outer"):
        UnrolledEM(PaperCNN, jax.random.key(0), n_outer=0)
    with pytest.raises(ValueError, match="beta"):
        UnrolledEM(PaperCNN, jax.random.key(0), beta=-1.0)
    with pytest.raises(ValueError, match="PaperCNN maps an image"):
        PaperCNN(jax.random.key(0))(jnp.ones((2, 8, 8, 4)))
