"""Count-scale equivariance and the dimensionless beta of the unrolled EM; model-file format."""

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxspect as js
from jaxspect.nn import SCNN3d, PaperCNN
from jaxspect.phantoms import ellipsoid
from jaxspect.recon import UnrolledEM, image_scale, load_model, save_model, sensitivity_scale

from .conftest import random_symmetric_psf

SHAPE, VS = (8, 8, 4), (4.0, 4.0, 4.0)


class BiasedNet(eqx.Module):
    """A user network that is far from scale-equivariant on its own (biases, a saturating
    non-linearity): ``x + tanh(w x + b1) * c + b2``."""

    w: jax.Array
    b1: jax.Array
    c: jax.Array
    b2: jax.Array

    def __init__(self, key):
        k = jax.random.split(key, 4)
        self.w, self.b1, self.c, self.b2 = (jax.random.normal(ki, (), jnp.float64) for ki in k)

    def __call__(self, x):
        return x + self.c * jnp.tanh(self.w * x + self.b1) + self.b2


def _perturbed(model, key, scale=0.3):
    """Non-trivial weights: every inexact leaf plus Gaussian noise (not the initialisation)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)


def _problem(rng, nview=6, repeat=1):
    psf = random_symmetric_psf(rng, 3, 3, SHAPE[1], nview, np.float64)
    angles = np.tile(2 * np.pi * np.arange(nview) / nview, repeat)
    geometry = js.SPECTGeometry(SHAPE, VS, js.ExplicitPSF(np.tile(psf, (1, 1, 1, repeat))), angles=angles)
    a = js.SPECTProjector(geometry, jnp.asarray(0.02 * rng.random(SHAPE)))
    truth = jnp.asarray(10 * ellipsoid(SHAPE, VS, (2.0, -1.0, 0.0), (10.0, 8.0, 6.0)) + 1)
    y = jnp.asarray(rng.poisson(np.asarray(a(truth)) * 5) / 5.0)
    x0 = js.mlem(a, y, jnp.ones(SHAPE), n_iter=3).image
    return a, y, x0


NETWORKS = {
    "PaperCNN": lambda k: PaperCNN(k, dtype=jnp.float64),
    "SCNN3d": lambda k: SCNN3d(k, voxel_size=4.0, dtype=jnp.float64),
    "user": BiasedNet,
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_count_scale_equivariance(rng, x64, name):
    a, y, x0 = _problem(rng)
    r = 0.1 * jnp.mean(y) * jnp.ones_like(y)
    model = UnrolledEM(NETWORKS[name], jax.random.key(3), n_outer=2, n_inner=2, beta=0.7)
    model = _perturbed(model, jax.random.key(4))
    run = eqx.filter_jit(lambda m, x0, y, r: m(x0, a, y, r, return_iterates=True))
    ref = run(model, x0, y, r)
    assert float(jnp.max(jnp.abs(ref[-1] - x0))) > 1e-3 * float(jnp.max(x0))  # the networks do something
    for c in (1e-3, 7.3, 2.5e4):
        out = run(model, c * x0, c * y, c * r)
        np.testing.assert_allclose(out, c * ref, rtol=1e-5, atol=1e-9 * c * float(jnp.max(ref)))
    # Without the normalisation the same network is not scale-equivariant: the test can fail.
    raw = jax.jit(lambda x: model.network_at(0)(x))
    assert float(jnp.max(jnp.abs(raw(100 * x0) - 100 * raw(x0)))) > 1e-3 * float(jnp.max(100 * x0))


def test_scale_statistics(rng):
    x = jnp.asarray(rng.random((6, 5, 4)))
    sens = jnp.asarray(1 + rng.random((6, 5, 4)))
    assert float(image_scale(3.5 * x)) == pytest.approx(3.5 * float(image_scale(x)), rel=1e-6)
    padded = jnp.pad(x, 7)  # empty voxels around the object change neither statistic
    assert float(image_scale(padded)) == pytest.approx(float(image_scale(x)), rel=1e-6)
    assert float(sensitivity_scale(x, sens)) == pytest.approx(float(jnp.sum(x * sens) / jnp.sum(x)), rel=1e-6)
    assert float(sensitivity_scale(4 * x, sens)) == pytest.approx(float(sensitivity_scale(x, sens)), rel=1e-6)
    assert float(image_scale(jnp.zeros(3))) == 1.0


def test_beta_is_dimensionless(rng, x64):
    """The same beta means the same algorithm with twice the views (every view acquired twice:
    A'1 and A'(y / ybar) double) and at any count level; paper_beta carries the units."""
    a, y, x0 = _problem(rng)
    a2, _, _ = _problem(np.random.default_rng(20261121), repeat=2)  # same PSF and mumap draws
    assert a2.out_shape[-1] == 2 * a.out_shape[-1]
    y2 = jnp.concatenate([y, y], axis=-1)
    model = UnrolledEM(NETWORKS["PaperCNN"], jax.random.key(5), n_outer=2, beta=1.3)
    model = eqx.tree_at(lambda m: m.network, model, _perturbed(model.network, jax.random.key(6)))
    np.testing.assert_allclose(model(x0, a2, y2), model(x0, a, y), rtol=1e-10)
    sens = a.back(jnp.ones_like(y))
    b = model.paper_beta(x0, sens)
    assert float(b) == pytest.approx(1.3 * float(sensitivity_scale(x0, sens) / image_scale(x0)), rel=1e-12)
    # the prior's share of the update, b x / (A'1 + b x), is beta / (1 + beta) at x = s, A'1 = S
    s, big_s = image_scale(x0), sensitivity_scale(x0, sens)
    assert float(b * s / (big_s + b * s)) == pytest.approx(1.3 / 2.3, rel=1e-12)
    assert float(model.paper_beta(10 * x0, sens)) == pytest.approx(float(b) / 10, rel=1e-12)


def test_model_file_records_normalisation_and_refuses_old_format(tmp_path):
    model = UnrolledEM(PaperCNN, jax.random.key(1), n_outer=2, beta=0.3)
    path = tmp_path / "m.eqx"
    save_model(path, model)
    header = json.loads(path.read_bytes().split(b"\n", 1)[0])
    assert (header["format"], header["beta_unit"], header["normalization"]) == (2, "dimensionless", "image_scale")
    assert float(load_model(path).beta) == pytest.approx(0.3)
    # A jaxspect 0.1 file: same layout, no "format" key, beta in count units.
    old = {k: v for k, v in header.items() if k not in ("format", "beta_unit", "normalization")}
    data = path.read_bytes().split(b"\n", 1)[1]
    (tmp_path / "old.eqx").write_bytes(json.dumps(old).encode() + b"\n" + data)
    with pytest.raises(ValueError, match="format 1.*retrain"):
        load_model(tmp_path / "old.eqx")
