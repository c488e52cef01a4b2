"""Rotations: convention, exactness at quarter turns, exact adjoints, VJPs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxspect as js
from jaxspect._rotate import _rotate_adjoint_impl, _rotate_impl

METHODS = ["bilinear", "three_pass"]
# Jitted once per (shape, method): eager dispatch of every gather would dominate the suite.
rotate = jax.jit(js.rotate, static_argnames="method")
rotate_adjoint = jax.jit(js.rotate_adjoint, static_argnames="method")


def dense(fn, shape, dtype=np.float32):
    n = int(np.prod(shape))
    basis = jnp.eye(n, dtype=dtype).reshape(n, *shape)
    return np.asarray(jax.vmap(fn)(basis).reshape(n, -1).T)


@pytest.mark.parametrize("method", METHODS)
def test_dense_adjoint(method):
    # SPECTrecon.jl: theta in (0:6)/7 * 2pi (0 included), 16x16, both methods.
    for angle in np.arange(7) / 7 * 2 * np.pi:
        a = dense(lambda v: rotate(v, angle, method), (16, 16, 1))
        at = dense(lambda v: rotate_adjoint(v, angle, method), (16, 16, 1))
        np.testing.assert_allclose(at, a.T, rtol=0, atol=1e-5)  # weights <= 1, float32


@pytest.mark.parametrize("method", METHODS)
def test_depth_major_layout_is_a_transpose(rng, method):
    x = jnp.asarray(rng.random((10, 10, 3)), jnp.float32)
    out = _rotate_impl(x, 0.4, method, False)
    np.testing.assert_array_equal(_rotate_impl(x, 0.4, method, True), jnp.swapaxes(out, 0, 1))
    y = jnp.asarray(rng.random((10, 10, 3)), jnp.float32)
    lhs = jnp.vdot(_rotate_impl(x, 0.4, method, True), y)
    rhs = jnp.vdot(x, _rotate_adjoint_impl(y, 0.4, method, True))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_vjp_is_adjoint_and_angle_gradient_matches_autodiff(rng, method):
    x = jnp.asarray(rng.random((12, 12, 2)), jnp.float32)
    ct = jnp.asarray(rng.random((12, 12, 2)), jnp.float32)
    custom = jax.jit(lambda v, a, c: jax.vjp(lambda v, a: js.rotate(v, a, method), v, a)[1](c))
    x_ct, a_ct = custom(x, 0.37, ct)
    np.testing.assert_allclose(x_ct, rotate_adjoint(ct, 0.37, method), atol=1e-6)
    # Plain autodiff of the same gathers (scatter-add transposes, no custom rule).
    plain = jax.jit(lambda v, a, c: jax.vjp(lambda v, a: _rotate_impl(v, a, method), v, a)[1](c))
    x_ct_plain, a_ct_plain = plain(x, 0.37, ct)
    np.testing.assert_allclose(x_ct, x_ct_plain, atol=1e-5)
    np.testing.assert_allclose(a_ct, a_ct_plain, rtol=1e-4)


def test_convention_point_moves_from_i_toward_j():
    # out(q) = in(c + R(-t)(q - c)): a pixel on the +i axis goes to the +j axis at t = +90 deg.
    n = 9
    x = np.zeros((n, n, 1), np.float32)
    x[8, 4, 0] = 1.0  # c = 4: offset (+4, 0)
    for method in METHODS:
        out = np.asarray(rotate(jnp.asarray(x), np.pi / 2, method))
        assert np.unravel_index(np.argmax(out), out.shape) == (4, 8, 0)
        # and a small positive angle moves it a little toward +j
        out = np.asarray(rotate(jnp.asarray(x), 0.2, method))[:, :, 0]
        i, j = np.unravel_index(np.argmax(out), out.shape)
        assert j > 4 and i >= 7


@pytest.mark.parametrize("method", METHODS)
def test_quarter_turns_are_exact(rng, method):
    for n in (8, 9):
        x = rng.random((n, n, 3)).astype(np.float32)
        for m in range(4):
            # float32 angles like 2*pi*32/128 are not exact multiples of pi/2: snapping handles it
            angle = np.float32(2 * np.pi * (32 * m) / 128)
            out = np.asarray(rotate(jnp.asarray(x), angle, method))
            np.testing.assert_array_equal(out, np.rot90(x, m, axes=(0, 1)))
            back = np.asarray(rotate_adjoint(jnp.asarray(x), angle, method))
            np.testing.assert_array_equal(back, np.rot90(x, -m, axes=(0, 1)))


def smooth_blob(n, nz=2):
    c = (n - 1) / 2
    i, j = np.meshgrid(np.arange(n) - c, np.arange(n) - c, indexing="ij")
    img = np.exp(-((i - n / 8) ** 2 / (2 * (n / 7) ** 2) + (j + n / 10) ** 2 / (2 * (n / 9) ** 2)))
    img *= np.hypot(i, j) < n / 2 - 2
    return np.repeat(img[:, :, None], nz, axis=2).astype(np.float32)


@pytest.mark.parametrize("method", METHODS)
def test_rotation_preserves_mass_inside_circle_and_round_trips(method):
    x = smooth_blob(48)
    for angle in (0.3, 1.0, 2.5, 4.0):
        out = rotate(jnp.asarray(x), angle, method)
        np.testing.assert_allclose(out.sum(), x.sum(), rtol=2e-3)
        # rotating back by -angle restores a smooth image closely (interpolation blur only)
        back = np.asarray(rotate(out, -angle, method))
        assert np.linalg.norm(back - x) / np.linalg.norm(x) < 0.03


def test_methods_agree_on_smooth_image():
    x = smooth_blob(64)
    for angle in (0.2, 0.7, 2.0, 3.9):
        a = np.asarray(rotate(jnp.asarray(x), angle, "bilinear"))
        b = np.asarray(rotate(jnp.asarray(x), angle, "three_pass"))
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.01


def test_bad_inputs():
    with pytest.raises(ValueError, match="rotation must be one of"):
        js.rotate(jnp.ones((4, 4, 1)), 0.1, "nearest")
    with pytest.raises(ValueError, match=r"\(n, n, nz\)"):
        js.rotate(jnp.ones((4, 5, 1)), 0.1)
    with pytest.raises(ValueError, match=r"\(n, n, nz\)"):
        js.rotate_adjoint(jnp.ones((4, 4)), 0.1)
