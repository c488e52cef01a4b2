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
