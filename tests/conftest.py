"""Shared fixtures: small geometries, PRNG, float64 switch."""

import jax
import numpy as np
import pytest

import jaxspect as js


@pytest.fixture
def rng():
    return np.random.default_rng(20261121)


@pytest.fixture
def x64():
    """Run the test body with float64 enabled (``jax.enable_x64`` context)."""
    with jax.enable_x64(True):
        yield


def random_symmetric_psf(rng, px, pz, ny, nview, dtype=np.float32):
    """Random point-symmetric PSF slices ``p + p[::-1, ::-1]``, each normalised to sum 1
    (the SPECTrecon.jl test recipe)."""
    p = rng.random((px, pz, ny, nview))
    p = p + p[::-1, ::-1]
    return (p / p.sum(axis=(0, 1), keepdims=True)).astype(dtype)


def small_problem(rng, *, nx=8, nz=6, nview=7, dtype=np.float32, mu_scale=1.0):
    """The paper's dense-adjoint setup: image 8x8x6 -> views 8x6x7, random mumap U[0,1)/mm
    scaled, random symmetric 5x3 PSFs, dy = 4.7952 mm."""
    psf = random_symmetric_psf(rng, 5, 3, nx, nview, dtype)
    geometry = js.SPECTGeometry((nx, nx, nz), (4.7952,) * 3, js.ExplicitPSF(psf), nview=nview)
    mumap = (mu_scale * rng.random((nx, nx, nz))).astype(dtype)
    return geometry, mumap


def small_training_set(rng, n_patients, shape=(8, 8, 4), voxel_size=(4.0, 4.0, 4.0), nview=6):
    """``n_patients`` tiny patients (an ellipsoid on a background, random mumaps, Poisson data
    at 20 counts per unit, 4-iteration MLEM warm starts) as a ``TrainingData``."""
    import equinox as eqx
    import jax.numpy as jnp

    from jaxspect.phantoms import ellipsoid
    from jaxspect.recon import TrainingData, mlem

    geometry = js.SPECTGeometry(shape, voxel_size, random_symmetric_psf(rng, 3, 3, shape[1], nview), nview=nview)
    truths = [10 * ellipsoid(shape, voxel_size, tuple(rng.uniform(-4, 4, 3)), (9.0, 7.0, 6.0)) + 1
              for _ in range(n_patients)]
    mus = jnp.asarray(0.02 * rng.random((n_patients, *shape)), jnp.float32)
    ops = eqx.filter_vmap(lambda mu: js.SPECTProjector(geometry, mu))(mus)
    truths = jnp.asarray(np.stack(truths), jnp.float32)
    y = eqx.filter_vmap(lambda a, x: a(x))(ops, truths)
    y = jnp.asarray(rng.poisson(np.asarray(y) * 20) / 20, jnp.float32)
    x0 = eqx.filter_vmap(lambda a, y: mlem(a, y, jnp.ones(shape), n_iter=4).image)(ops, y)
    return TrainingData(ops, y, jnp.zeros(n_patients), x0, truths)
