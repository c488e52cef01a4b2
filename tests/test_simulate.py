"""Simulated projections with scatter and Poisson noise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxspect as js
from jaxspect.phantoms import ellipsoid

SHAPE, VS = (16, 16, 4), (4.0, 4.0, 4.0)


@pytest.fixture(scope="module")
def setup():
    geometry = js.SPECTGeometry(SHAPE, VS, js.GaussianPSF(3.0, 0.03), nview=8, radii=50.0)
    activity = jnp.asarray(ellipsoid(SHAPE, VS, (0.0, 0.0, 0.0), (20.0, 16.0, 8.0)), jnp.float32)
    return js.SPECTProjector(geometry, None), activity


def test_count_level_scatter_fraction_and_noise_statistics(setup):
    a, activity = setup
    data = js.simulate(jax.random.key(0), activity, a, total_counts=2e5, scatter_fraction=0.1, n_realizations=400)
    assert data.counts.shape == (400, *a.out_shape)
    assert float(data.primary.sum()) == pytest.approx(2e5, rel=1e-5)
    assert float(data.background.sum()) == pytest.approx(2e4, rel=1e-5)
    np.testing.assert_allclose(data.background, data.background[0, 0, 0])  # uniform
    np.testing.assert_allclose(data.primary, a(activity) * data.scale, rtol=1e-5)
    counts = np.asarray(data.counts)
    assert np.all(counts == np.round(counts)) and counts.min() >= 0
    mean = np.asarray(data.primary + data.background)
    busy = mean > 20
    # Poisson: sample mean ~ mean (SE = sqrt(m/400)), sample variance ~ mean
    z = (counts.mean(0) - mean) / np.sqrt(mean / 400)
    assert np.abs(z[busy]).max() < 5.5
    np.testing.assert_allclose(counts.var(0)[busy].mean() / mean[busy].mean(), 1.0, rtol=0.05)


def test_keys_determinism_and_smooth_scatter(setup):
    a, activity = setup
    one = js.simulate(jax.random.key(1), activity, a, total_counts=1e4)
    again = js.simulate(jax.random.key(1), activity, a, total_counts=1e4)
    other = js.simulate(jax.random.key(2), activity, a, total_counts=1e4)
    assert one.counts.shape == a.out_shape
    np.testing.assert_array_equal(one.counts, again.counts)
    assert np.any(np.asarray(one.counts) != np.asarray(other.counts))
    smooth = js.simulate(jax.random.key(1), activity, a, total_counts=1e4, scatter="smooth", scatter_fraction=0.3, scatter_fwhm_bins=4.0)
    bg = np.asarray(smooth.background)
    assert bg.sum() == pytest.approx(3e3, rel=1e-4) and bg.min() > 0
    assert bg.max() > 1.5 * bg.min()  # follows the primary distribution, not flat
    with pytest.raises(ValueError, match="scatter must be"):
        js.simulate(jax.random.key(1), activity, a, scatter="compton")
    with pytest.raises(ValueError, match="total_counts"):
        js.simulate(jax.random.key(1), activity, a, total_counts=0)
    with pytest.raises(ValueError, match="n_realizations"):
        js.simulate(jax.random.key(1), activity, a, n_realizations=0)
