"""Equivariant (e3nn-jax steerable) convolutions, SCNN denoisers and CNN baselines."""

import e3nn_jax as e3nn
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from scipy import ndimage

import jaxspect as js
from jaxspect.nn import count_parameters
from jaxspect.nn._denoisers import PlainCNN, SCNN2d, SCNN3d, baseline_cnn, describe_parameters, small_cnn
from jaxspect.nn._equivariant import (
    EquivariantConv2d, EquivariantConv3d, EquivariantInstanceNorm, Gate, NormActivation, _conv_basis, gate_irreps,
)
from jaxspect.recon import UnrolledEM

HI = lax.Precision.HIGHEST
HIDDEN = "8x0e+4x1o+2x2e"
apply = eqx.filter_jit(lambda m, x: m(x))


def rel(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@pytest.fixture(scope="module")
def vol():
    return jnp.asarray(np.random.default_rng(1).normal(size=(10, 10, 10)), jnp.float32)


@pytest.fixture(scope="module")
def net3():
    return SCNN3d(jax.random.key(3), residual=False, precision=HI)


@pytest.fixture(scope="module")
def net2():
    return SCNN2d(jax.random.key(2), residual=False, precision=HI)


# ----------------------------------------------------------------------------- parameter counts


def _n_params(make):
    """Trainable scalars of ``make()``, traced abstractly (no arrays are built)."""
    tree = eqx.filter_eval_shape(make)
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact))


def test_parameter_counts():
    k = jax.random.key(0)
    assert _n_params(lambda: SCNN2d(k)) == 823
    assert _n_params(lambda: SCNN2d(k, nonlinearity="norm")) == 589
    assert _n_params(lambda: SCNN3d(k, nonlinearity="norm")) == 819
    assert _n_params(lambda: baseline_cnn(k)) == 112001
    assert _n_params(lambda: baseline_cnn(k, ndim=3)) == 335489
    assert _n_params(lambda: small_cnn(k)) == 737
    assert _n_params(lambda: small_cnn(k, ndim=3)) == 1309
    model = SCNN3d(k)
    assert count_parameters(model) == 1143
    text = describe_parameters(model)
    assert text.splitlines()[0] == "SCNN3d: 1,143 parameters" and ".convs[1].weight" in text


def test_basis_is_cached_and_not_a_leaf():
    k = jax.random.key(0)
    conv = EquivariantConv3d("0e", gate_irreps(HIDDEN), 3, key=k)
    before = _conv_basis.cache_info().hits
    EquivariantConv3d("0e", gate_irreps(HIDDEN), 3, key=jax.random.key(1))
    assert _conv_basis.cache_info().hits > before
    leaves = jax.tree_util.tree_leaves(conv)
    assert [leaf.shape for leaf in leaves] == [(74,), (14,)]  # flat weights + bias on the 14 0e outputs
    assert gate_irreps(HIDDEN) == e3nn.Irreps("8x0e+6x0e+4x1o+2x2e")


def test_unit_variance_at_init(vol):
    conv = EquivariantConv3d(HIDDEN, HIDDEN, 3, key=jax.random.key(4), use_bias=False, precision=HI)
    x = jax.random.normal(jax.random.key(5), (12, 12, 12, e3nn.Irreps(HIDDEN).dim))
    y = apply(conv, x).array[1:-1, 1:-1, 1:-1]
    assert 0.8 < float(jnp.std(y)) < 1.25


# ----------------------------------------------------------------------------- exact equivariance


@pytest.mark.parametrize("axes", [(0, 1), (1, 2), (0, 2)])
def test_scnn3d_exact_rotations(net3, vol, axes):
    y = apply(net3, vol)
    for k in (1, 2):
        assert rel(apply(net3, jnp.rot90(vol, k, axes=axes)), jnp.rot90(y, k, axes=axes)) < 1e-5


def test_scnn3d_exact_flips(net3, vol):
    y = apply(net3, vol)
    for a in range(3):
        assert rel(apply(net3, jnp.flip(vol, a)), jnp.flip(y, a)) < 1e-5
    # a plain CNN of similar size is not equivariant at all (sanity check of the test)
    cnn = small_cnn(jax.random.key(3), ndim=3, residual=False)
    yc = apply(cnn, vol)
    assert rel(apply(cnn, jnp.rot90(vol, axes=(0, 1))), jnp.rot90(yc, axes=(0, 1))) > 0.1


def test_layer_with_vector_outputs_transforms_with_wigner_d(vol):
    """A 0e -> 0e+1o+2e layer: out(g x)(p) = D(g) out(x)(g^-1 p) for generators of O_h."""
    irreps = e3nn.Irreps("2x0e+2x1o+2x2e")
    conv = EquivariantConv3d("0e", irreps, 3, key=jax.random.key(6), precision=HI)
    y = apply(conv, vol[..., None]).array
    ops = [  # (array transform, 3x3 matrix acting on positions)
        (lambda a: jnp.flip(a, 0), np.diag([-1.0, 1.0, 1.0])),
        (lambda a: jnp.swapaxes(a, 0, 1), np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])),
        (lambda a: jnp.swapaxes(a, 1, 2), np.array([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]])),
    ]
    d_of = jax.jit(irreps.D_from_matrix)
    for op, R in ops:
        D = np.asarray(d_of(jnp.asarray(R)))
        expected = jnp.einsum("ij,xyzj->xyzi", D, op(y))
        got = apply(conv, op(vol)[..., None]).array
        assert rel(got, expected) < 1e-5
    assert float(jnp.max(jnp.abs(y[..., 2:]))) > 0.1  # the vector parts are not trivially zero


def test_anisotropic_voxels_keep_lattice_symmetries(vol):
    net = SCNN3d(jax.random.key(7), voxel_size=(2.0, 2.0, 3.5), residual=False, precision=HI)
    y = apply(net, vol)
    assert rel(apply(net, jnp.rot90(vol, axes=(0, 1))), jnp.rot90(y, axes=(0, 1))) < 1e-5
    assert rel(apply(net, jnp.flip(vol, 2)), jnp.flip(y, 2)) < 1e-5
    # a quarter turn about x maps 2 mm steps onto 3.5 mm ones: not a symmetry of this lattice
    assert rel(apply(net, jnp.rot90(vol, axes=(1, 2))), jnp.rot90(y, axes=(1, 2))) > 1e-3


def test_scnn2d_exact_d4(net2, vol):
    x = vol[:, :, 0]
    y = apply(net2, x)
    for k in (1, 2, 3):
        assert rel(apply(net2, jnp.rot90(x, k)), jnp.rot90(y, k)) < 1e-5
    assert rel(apply(net2, jnp.flip(x, 0)), jnp.flip(y, 0)) < 1e-5
    assert rel(apply(net2, x.T), y.T) < 1e-5


def test_2d_fast_path_equals_3d_conv_of_a_thin_volume(vol):
    key = jax.random.key(8)
    c2 = EquivariantConv2d("0e", gate_irreps(HIDDEN), 3, pixel_size=(1.5, 2.0), key=key, precision=HI)
    c3 = EquivariantConv3d("0e", gate_irreps(HIDDEN), (3, 3, 1), voxel_size=(1.5, 2.0, 1.0), key=key, precision=HI)
    assert c2.weight.shape == c3.weight.shape
    x = vol[:, :, :1, None]
    np.testing.assert_allclose(apply(c2, x[:, :, 0]).array, apply(c3, x).array[:, :, 0], atol=1e-5)
    # the two ways of computing a convolution agree ("taps": matrix products; "conv": XLA conv)
    c2c = EquivariantConv2d("0e", gate_irreps(HIDDEN), 3, pixel_size=(1.5, 2.0), key=key, precision=HI, method="conv")
    np.testing.assert_allclose(apply(c2c, x[:, :, 0]).array, apply(c2, x[:, :, 0]).array, atol=1e-5)
    c3 = EquivariantConv3d("0e", gate_irreps(HIDDEN), 3, voxel_size=(1.5, 2.0, 1.0), key=key, precision=HI)
    c3c = EquivariantConv3d("0e", gate_irreps(HIDDEN), 3, voxel_size=(1.5, 2.0, 1.0), key=key, precision=HI,
                            method="conv")
    np.testing.assert_allclose(apply(c3c, vol[..., None]).array, apply(c3, vol[..., None]).array, atol=1e-5)


def test_nonlinearities_and_norm_are_equivariant(vol):
    irreps = e3nn.Irreps(HIDDEN)
    x = jax.random.normal(jax.random.key(9), (6, 6, 6, irreps.dim))
    norm_act = NormActivation(irreps)
    norm_act = eqx.tree_at(lambda m: m.bias, norm_act, jnp.linspace(-0.5, 0.3, 6))
    inorm = EquivariantInstanceNorm(irreps)
    R = np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]])
    D = jnp.asarray(irreps.D_from_matrix(jnp.asarray(R)))
    for layer in (norm_act, inorm):
        y = apply(layer, e3nn.IrrepsArray(irreps, x)).array
        np.testing.assert_allclose(apply(layer, e3nn.IrrepsArray(irreps, x @ D.T)).array, y @ D.T, atol=1e-5)
    y = apply(inorm, e3nn.IrrepsArray(irreps, x + 3.0)).array
    np.testing.assert_allclose(jnp.mean(y[..., :8], axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(y[..., :8], axis=(0, 1, 2)), 1, atol=1e-3)
    gate = Gate(irreps)
    xg = jax.random.normal(jax.random.key(10), (6, gate_irreps(irreps).dim))
    Dg = jnp.asarray(gate_irreps(irreps).D_from_matrix(jnp.asarray(R)))
    np.testing.assert_allclose(apply(gate, e3nn.IrrepsArray(gate.irreps_in, xg @ Dg.T)).array,
                               apply(gate, e3nn.IrrepsArray(gate.irreps_in, xg)).array @ D.T, atol=1e-5)


# ----------------------------------------------------------------------------- off-lattice rotations


def _texture(n, seed, wavelength=8.0, waves=6):
    """Zero-mean band-limited texture: random plane waves under a Gaussian window."""
    rng = np.random.default_rng(seed)
    i = np.arange(n) - (n - 1) / 2
    X, Y = np.meshgrid(i, i, indexing="ij")
    img = sum(np.cos(2 * np.pi / wavelength * (np.cos(t) * X + np.sin(t) * Y) + p)
              for t, p in rng.uniform(0, 2 * np.pi, (waves, 2)))
    return (img * np.exp(-(X**2 + Y**2) / (2 * (0.3 * n) ** 2))).astype(np.float32)


def rotation_error(model, x, degrees):
    """Centred RMS of ``f(R x) - R f(x)`` over ``std(R f(x))`` in a disc of radius 0.4 n
    (cubic-spline rotation)."""
    n = x.shape[0]
    rot = lambda a: ndimage.rotate(np.asarray(a, np.float64), degrees, reshape=False, order=3)
    i = np.arange(n) - (n - 1) / 2
    disc = np.hypot(*np.meshgrid(i, i, indexing="ij")) < 0.4 * n
    ry = rot(apply(model, jnp.asarray(x)))[disc]
    d = np.asarray(apply(model, jnp.asarray(rot(x), jnp.float32)))[disc] - ry
    return float(np.sqrt(np.mean((d - d.mean()) ** 2)) / np.std(ry))


def test_45_degrees_equivariant_net_beats_plain_cnn_at_init():
    """Non-residual parts at initialisation, on zero-mean textured input (on smooth input a
    random CNN's low-pass response dominates and it looks falsely equivariant)."""
    e_scnn, e_cnn = [], []
    for seed in range(4):
        x = _texture(24, 100 + seed)
        e_scnn.append(rotation_error(SCNN2d(jax.random.key(seed), residual=False), x, 45))
        e_cnn.append(rotation_error(small_cnn(jax.random.key(seed), residual=False), x, 45))
    ratio = np.mean(e_cnn) / np.mean(e_scnn)
    assert ratio > 3.0, (e_scnn, e_cnn)  # measured: about 5.5 (0.16 vs 0.85)


# ----------------------------------------------------------------------------- transformations


def test_jit_vmap_grad(net2):
    xs = jax.random.uniform(jax.random.key(11), (3, 10, 10))
    # a volume (nx, ny, nz) is processed slice by slice (jax.vmap over z, under jit) ...
    slices = apply(net2, jnp.moveaxis(xs, 0, 2))
    assert slices.shape == (10, 10, 3)
    for i in range(3):  # ... and equals the per-image results
        np.testing.assert_allclose(slices[:, :, i], apply(net2, xs[i]), atol=1e-5)

    @eqx.filter_jit
    @eqx.filter_grad
    def grad(model, x):
        return jnp.mean((model(x) - 1.0) ** 2)

    g = grad(net2, xs[0])
    for leaf in jax.tree_util.tree_leaves(eqx.filter(g, eqx.is_inexact_array)):
        assert np.all(np.isfinite(leaf)) and float(jnp.max(jnp.abs(leaf))) > 0


def test_float64(x64):
    net = SCNN3d(jax.random.key(12), nonlinearity="norm", normalization="instance", residual=False,
                 dtype=jnp.float64, precision=HI)
    assert net.convs[0].weight.dtype == jnp.float64
    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 8, 8)))
    y = apply(net, x)
    assert y.dtype == jnp.float64
    assert rel(apply(net, jnp.rot90(x, axes=(0, 2))), jnp.rot90(y, axes=(0, 2))) < 1e-12
    assert rel(apply(net, jnp.flip(x, 1)), jnp.flip(y, 1)) < 1e-12


def test_float32_default_and_input_dtype(net3):
    assert net3.convs[0].weight.dtype == jnp.float32
    assert apply(net3, jnp.ones((6, 6, 6), jnp.float32)).dtype == jnp.float32


# ----------------------------------------------------------------------------- unrolled EM


def test_plugs_into_unrolled_em():
    from .conftest import random_symmetric_psf

    rng = np.random.default_rng(0)
    shape = (8, 8, 4)
    geometry = js.SPECTGeometry(shape, (4.0,) * 3, random_symmetric_psf(rng, 3, 3, 8, 6), nview=6)
    a = js.SPECTProjector(geometry, jnp.asarray(0.02 * rng.random(shape), jnp.float32))
    truth = jnp.asarray(1 + rng.random(shape), jnp.float32)
    y = a(truth)
    model = UnrolledEM(lambda k: SCNN3d(k, voxel_size=4.0), jax.random.key(0), n_outer=2, beta=0.5)
    assert count_parameters(model.network) == 2 * 1143
    x0 = jnp.ones(shape)

    @eqx.filter_jit
    def loss(m):
        return jnp.mean((m(x0, a, y) - truth) ** 2)

    value, grads = eqx.filter_value_and_grad(loss)(model)
    assert np.isfinite(float(value))
    g = jax.tree_util.tree_leaves(eqx.filter(grads.network, eqx.is_inexact_array))
    assert all(np.all(np.isfinite(leaf)) for leaf in g) and max(float(jnp.max(jnp.abs(leaf))) for leaf in g) > 0
    # 2-D networks (slice by slice on (nx, ny, nz), see test_jit_vmap_grad) build the same way
    model2 = UnrolledEM(lambda k: SCNN2d(k, pixel_size=4.0), jax.random.key(1), n_outer=3)
    assert count_parameters(model2.network) == 3 * 823
    assert isinstance(model2.network_at(2), SCNN2d)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_rejected():
    k = jax.random.key(0)
    with pytest.raises(ValueError, match="irreps_in"):
        EquivariantConv3d("8x0q", "0e", key=k)
    with pytest.raises(ValueError, match="irreps_out"):
        EquivariantConv3d("0e", "", key=k)
    with pytest.raises(ValueError, match="kernel_size"):
        EquivariantConv3d("0e", "0e", 4, key=k)
    with pytest.raises(ValueError, match="kernel_size"):
        EquivariantConv2d("0e", "0e", (3, 3, 3), key=k)
    with pytest.raises(ValueError, match="voxel_size"):
        EquivariantConv3d("0e", "0e", voxel_size=(1.0, -1.0, 1.0), key=k)
    with pytest.raises(ValueError, match="pixel_size"):
        SCNN2d(k, pixel_size=0.0)
    with pytest.raises(ValueError, match="irreps_out.*lmax"):
        EquivariantConv3d("0e", "1o", 3, lmax=0, key=k)
    with pytest.raises(ValueError, match="hidden"):
        SCNN3d(k, hidden="4x1o")
    conv = EquivariantConv3d("2x0e", "0e", key=k)
    with pytest.raises(ValueError, match=r"x must be .*\(n, n, n, 2\)"):
        conv(jnp.ones((4, 4, 4, 3)))
    with pytest.raises(ValueError, match="SCNN3d maps an image"):
        SCNN3d(k)(jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="PlainCNN maps an image"):
        PlainCNN(k, ndim=2)(jnp.ones((2, 4, 4, 4)))
    with pytest.raises(ValueError, match="nonlinearity"):
        SCNN2d(k, nonlinearity="relu")
