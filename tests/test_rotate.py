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


def three_pass_numpy(x, angle):
    """Independent three-pass rotation (SPECTrecon.jl's algorithm, written plainly): pad,
    ``numpy.rot90`` by the nearest quarter turns, three 1-D linear shears (x by
    ``tan(phi/2)``, y by ``-sin(phi)``, x again) with zero outside, crop."""
    n = x.shape[0]
    pad = js._rotate.three_pass_padding(n)
    p = n + 2 * pad
    turns = np.floor(angle / (np.pi / 2) + 0.5)
    phi = angle - turns * np.pi / 2
    v = np.rot90(np.pad(x, ((pad, pad), (pad, pad), (0, 0))), int(turns) % 4, axes=(0, 1))
    offsets = np.arange(p) - (p - 1) / 2

    def shift_rows(v, shifts):  # out[a, b] = v[a + shifts[b], b], linear, zero outside
        out = np.zeros_like(v)
        for b, s in enumerate(shifts):
            base, frac = int(np.floor(s)), s - np.floor(s)
            for a in range(p):
                for k, w in ((0, 1 - frac), (1, frac)):
                    if 0 <= a + base + k < p:
                        out[a, b] += w * v[a + base + k, b]
        return out

    t, s = offsets * np.tan(phi / 2), offsets * -np.sin(phi)
    v = shift_rows(v, t)
    v = np.swapaxes(shift_rows(np.swapaxes(v, 0, 1), s), 0, 1)
    v = shift_rows(v, t)
    return v[pad : pad + n, pad : pad + n]


def test_three_pass_matches_an_independent_implementation(rng, x64):
    for n in (7, 10):
        x = rng.random((n, n, 2))
        y = rng.random((n, n, 2))
        for angle in (0.3, -0.7, 1.2, 2.0, 3.5, 5.0, np.pi / 4):
            out = np.asarray(_rotate_impl(jnp.asarray(x), angle, "three_pass"))
            np.testing.assert_allclose(out, three_pass_numpy(x, angle), rtol=0, atol=1e-12)
            # the adjoint, against the same reference through <A x, y> = <x, A' y>
            back = np.asarray(_rotate_adjoint_impl(jnp.asarray(y), angle, "three_pass"))
            np.testing.assert_allclose(np.vdot(back, x), np.vdot(y, three_pass_numpy(x, angle)), rtol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_volumes_rotated_together_equal_each_rotated_alone(rng, method):
    # The projector rotates the image and the attenuation map as one call (the three-pass taps
    # are computed once); the result, its transpose and its VJP are those of separate calls.
    a = jnp.asarray(rng.random((9, 9, 3)), jnp.float32)
    b = jnp.asarray(rng.random((9, 9, 2)), jnp.float32)
    for depth_major in (False, True):
        ra, rb = _rotate_impl((a, b), 0.6, method, depth_major)
        np.testing.assert_array_equal(ra, _rotate_impl(a, 0.6, method, depth_major))
        np.testing.assert_array_equal(rb, _rotate_impl(b, 0.6, method, depth_major))
        ta, tb = _rotate_adjoint_impl((a, b), 0.6, method, depth_major)
        np.testing.assert_array_equal(tb, _rotate_adjoint_impl(b, 0.6, method, depth_major))
    f = jax.jit(lambda a, b: jax.vjp(lambda a, b: js._rotate._rotate((a, b), 0.6, method), a, b)[1]((a, b)))
    ga, gb = f(a, b)
    np.testing.assert_allclose(ga, rotate_adjoint(a, 0.6, method), atol=1e-6)
    np.testing.assert_allclose(gb, rotate_adjoint(b, 0.6, method), atol=1e-6)
    with pytest.raises(ValueError, match="one n"):
        _rotate_impl((a, jnp.ones((8, 8, 1))), 0.6, method)


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
