"""Collimator response: Gaussian model, explicit arrays, replicate-padded blur."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi
from scipy.special import erf

import jaxspect as js
from jaxspect._psf import blur_and_sum, blur_and_sum_adjoint, blur_matrices, gaussian_taps

from .conftest import random_symmetric_psf


def test_gaussian_taps_are_pixel_integrated_and_normalised(x64):
    fwhm, d, h = 7.3, 2.0, 6
    taps = np.asarray(gaussian_taps(jnp.asarray(fwhm), d, h))
    sigma = fwhm / np.sqrt(8 * np.log(2))
    o = np.arange(-h, h + 1) * d
    expected = 0.5 * (erf((o + d / 2) / (np.sqrt(2) * sigma)) - erf((o - d / 2) / (np.sqrt(2) * sigma)))
    np.testing.assert_allclose(taps, expected / expected.sum(), rtol=1e-12)
    assert taps.sum() == pytest.approx(1.0, abs=1e-14)
    # FWHM 0 is a Kronecker delta
    np.testing.assert_array_equal(np.asarray(gaussian_taps(jnp.asarray(0.0), d, 3)), [0, 0, 0, 1, 0, 0, 0])


@pytest.mark.parametrize("n,p", [(12, 5), (6, 13), (1, 3), (2, 5), (20, 1), (9, 37)])
def test_blur_matrices_match_scipy_nearest_convolution(rng, x64, n, p):
    taps = rng.random(p)
    m = np.asarray(blur_matrices(jnp.asarray(taps), n))
    u = rng.random(n)
    np.testing.assert_allclose(m @ u, ndi.convolve1d(u, taps, mode="nearest"), rtol=1e-12)


# kernels narrower and wider than the image (x taps beyond the edge are folded), single-pixel
# rows/slices
@pytest.mark.parametrize("ny,nx,nz,px,pz", [(4, 10, 7, 5, 3), (3, 3, 4, 9, 5), (2, 4, 3, 15, 3), (2, 1, 3, 5, 3),
                                            (3, 6, 1, 7, 1)])
def test_blur_and_sum_matches_scipy_for_rank_two_psf(rng, x64, ny, nx, nz, px, pz):
    # A point-symmetric but non-separable PSF (rank >= 2 after SVD), per plane.
    psf = random_symmetric_psf(rng, px, pz, ny, 1, np.float64)
    p = js.ExplicitPSF(psf)
    assert pz == 1 or p.factor_x.shape[1] >= 2  # really non-separable
    fx, fz = p.factor_x[0], p.factor_z[0]
    planes = rng.random((ny, nx, nz))
    expected = sum(ndi.convolve(planes[j], psf[:, :, j, 0], mode="nearest") for j in range(ny))
    np.testing.assert_allclose(blur_and_sum(jnp.asarray(planes), fx, fz), expected, rtol=1e-10)
    # adjoint identity
    v = rng.random((nx, nz))
    lhs = np.vdot(np.asarray(blur_and_sum(jnp.asarray(planes), fx, fz)), v)
    rhs = np.vdot(planes, np.asarray(blur_and_sum_adjoint(jnp.asarray(v), fx, fz)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_explicit_psf_factors_reproduce_the_array(rng, x64):
    psf = random_symmetric_psf(rng, 7, 5, 6, 3, np.float64)
    g = js.SPECTGeometry((6, 6, 4), (3.0, 3.0, 3.0), psf, nview=3)
    np.testing.assert_allclose(g.psf.as_array(g), psf, atol=1e-12)
    # a separable (Gaussian) array factorises with rank 1
    gauss = np.asarray(js.gaussian_psf_array(np.full((6, 3), 4.0), np.full((6, 3), 6.0), 3.0, 3.0, 7, 5))
    assert js.ExplicitPSF(gauss).factor_x.shape[1] == 1


def test_gaussian_psf_per_plane_and_per_view_from_radii(x64):
    ny, d = 16, 4.0
    radii = np.array([120.0, 200.0, 160.0])
    psf = js.GaussianPSF(3.0, 0.04)
    g = js.SPECTGeometry((ny, ny, 5), (d, d, 2.5), psf, angles=np.array([0.0, 1.0, 2.0]), radii=radii)
    dist = radii[:, None] + (np.arange(ny) - (ny - 1) / 2) * d  # plane 0 nearest the detector
    np.testing.assert_allclose(g.plane_distances(), dist)
    np.testing.assert_allclose(g.psf.fwhm(g), np.sqrt(3.0**2 + (0.04 * dist) ** 2))
    arr = np.asarray(g.psf.as_array(g))
    # sums to 1, centred, widest for the farthest plane of the widest orbit
    np.testing.assert_allclose(arr.sum(axis=(0, 1)), 1.0, atol=1e-12)
    assert arr.shape[0] % 2 == 1 and arr.shape[1] % 2 == 1
    widths = (arr.sum(axis=1) * (np.arange(arr.shape[0]) - arr.shape[0] // 2)[:, None, None] ** 2).sum(0)
    assert np.all(np.diff(widths, axis=0) > 0)  # grows with depth
    assert widths[-1, 1] > widths[-1, 2] > widths[-1, 0]  # grows with radius
    # default tap count covers +-3 sigma of the widest response
    sigma_max = np.sqrt(3.0**2 + (0.04 * dist.max()) ** 2) / np.sqrt(8 * np.log(2))
    assert arr.shape[0] // 2 == int(np.ceil(3 * sigma_max / d))
    # 2-D problems (nz == 1) get pz == 1
    g2 = js.SPECTGeometry((ny, ny, 1), (d, d, d), psf, nview=4, radii=150.0)
    assert g2.psf.as_array(g2).shape[1] == 1


def test_explicit_psf_bad_inputs(rng):
    good = random_symmetric_psf(rng, 5, 3, 8, 4)
    with pytest.raises(ValueError, match="odd"):
        js.ExplicitPSF(np.ones((4, 3, 8, 4), np.float32))
    with pytest.raises(ValueError, match="point-symmetric"):
        bad = good.copy()
        bad[0, 0] += 0.1
        js.ExplicitPSF(bad)
    with pytest.raises(ValueError, match=r"shape \(px, pz, ny, nview\)"):
        js.ExplicitPSF(good[..., 0])
    with pytest.raises(ValueError, match="NaN"):
        bad = good.copy()
        bad[2, 1, 0, 0] = np.nan
        js.ExplicitPSF(bad)
    with pytest.raises(TypeError, match="floating"):
        js.ExplicitPSF(np.ones((3, 3, 8, 4), np.int32))
    with pytest.raises(ValueError, match=r"\(px, pz, 8, 5\)"):
        js.SPECTGeometry((8, 8, 6), (4.0, 4.0, 4.0), good, nview=5)
    with pytest.raises(ValueError, match="fwhm0"):
        js.GaussianPSF(-1.0, 0.1)
    with pytest.raises(ValueError, match="slope"):
        js.GaussianPSF(1.0, np.nan)
    with pytest.raises(ValueError, match="half_width_x"):
        js.GaussianPSF(1.0, 0.1, half_width_x=1.5)
    with pytest.raises(ValueError, match="radii"):
        js.SPECTGeometry((8, 8, 6), (4.0, 4.0, 4.0), js.GaussianPSF(1.0, 0.1), nview=5)
