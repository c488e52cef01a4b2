"""SPECTnet: brain phantoms, simulated data, networks, training stages, save/load.

Everything trains at a tiny size (32 x 32 images of 8 mm, 30 views, the reduced 3-layer
encoder layout); the paper's 128 x 128 architecture is checked by shape only
(``eqx.filter_eval_shape`` / ``jax.eval_shape``: nothing is allocated or run).
"""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspect.spectnet._networks import (
    ACTIVITY_SCALE,
    Autoencoder,
    BatchNorm,
    SPECTnet,
    SPECTnetEncoder,
    build,
    count_network_parameters,
    pad_sinogram,
    reconstruct,
    update_batch_statistics,
    views_to_sinogram,
)
from jaxspect.spectnet._networks import weight_mask
from jaxspect.spectnet import (
    PhantomSet,
    TrainingConfig,
    add_poisson_noise,
    bin_sinogram,
    downsample_phantoms,
    oversampled_geometry,
    lehr_psf,
    lehr_system_fwhm,
    project_phantoms,
    spectnet_geometry,
    split_keys,
    train_autoencoder,
    train_two_stage,
)
from jaxspect import load_model, save_model
from jaxspect.phantoms import linear_attenuation
from jaxspect.phantoms._brain import UPTAKE_RANGE, brain_phantom_2d, brain_phantoms_2d, draw_uptake, phantom_keys

SMALL = dict(image_size=32, pixel_size=8.0, nview=30)
MU_WATER = linear_attenuation("water", 140.5)
MU_BONE = linear_attenuation("bone", 140.5)


@pytest.fixture(scope="module")
def phantoms128():
    return brain_phantoms_2d(phantom_keys(jax.random.key(7), jnp.arange(6)))


@pytest.fixture(scope="module")
def small_geometry():
    return spectnet_geometry(**SMALL)


# --- phantoms ----------------------------------------------------------------------------------


def test_phantom_values_and_masks(phantoms128):
    p = jax.tree_util.tree_map(np.asarray, phantoms128)
    assert p.activity.shape == (6, 128, 128) and p.mumap.shape == (6, 128, 128)
    for i in range(6):
        act, high, bg = p.activity[i], p.high_uptake[i], p.background[i]
        assert high.sum() > 0 and bg.sum() > 1000
        assert not np.any(high & bg)
        assert UPTAKE_RANGE[0] <= p.uptake[i] <= UPTAKE_RANGE[1]
        np.testing.assert_allclose(act[high], p.uptake[i])  # high uptake: one value in 3..9
        np.testing.assert_array_equal(act[bg], 1.0)  # background 1
        np.testing.assert_array_equal(act[~(high | bg)], 0.0)  # zero outside
        # Each high-uptake pixel is surrounded by background (4 mm margin, 2 mm pixels).
        inside = high | bg
        assert np.all(inside[1:-1, 1:-1][high[1:-1, 1:-1]] & inside[:-2, 1:-1][high[1:-1, 1:-1]])
        # Attenuation: water deep inside the head, bone only near its edge, nothing else.
        mu = p.mumap[i]
        assert mu.min() == 0 and mu.max() <= MU_BONE * (1 + 1e-6)
        deep = bg & np.roll(bg, 1, 0) & np.roll(bg, -1, 0) & np.roll(bg, 1, 1) & np.roll(bg, -1, 1)
        np.testing.assert_allclose(mu[deep], MU_WATER, rtol=1e-6)
        assert np.all(mu[act > 0] > 0)
        assert p.bone_fraction[i].max() == 1.0 or p.skull_thickness[i] < 4  # a full bone pixel needs >= 2 mm
        assert np.all(p.bone_fraction[i][deep] == 0)
    # The mumap's maximum is bone (full-bone pixels exist for the thicker skulls).
    assert p.mumap.max() > 1.5 * MU_WATER


def test_skull_thickness_measured_along_rays(phantoms128):
    """Integrate the skull's area fraction along rays from the head centre: 2-4 mm, and the
    phantom's own thickness within 0.6 mm (the pixelisation of 2-mm pixels)."""
    from scipy.ndimage import map_coordinates

    p = jax.tree_util.tree_map(np.asarray, phantoms128)
    step = 0.05  # mm
    r = np.arange(0, 120, step)
    for i in range(6):
        c = p.centre[i] / 2.0 + 63.5  # pixel coordinates of the head centre
        for phi in np.linspace(0, 2 * np.pi, 12, endpoint=False):
            coords = np.stack([c[0] + r / 2.0 * np.cos(phi), c[1] + r / 2.0 * np.sin(phi)])
            bone = map_coordinates(p.bone_fraction[i], coords, order=1)
            measured = bone.sum() * step
            assert 2.0 - 0.6 <= measured <= 4.0 + 0.6
            assert abs(measured - p.skull_thickness[i]) < 0.6, (i, phi, measured, p.skull_thickness[i])


def test_phantoms_deterministic_per_key_and_distinct():
    a = brain_phantom_2d(jax.random.key(3), size=32, pixel_size=8.0)
    b = brain_phantom_2d(jax.random.key(3), size=32, pixel_size=8.0)
    c = brain_phantom_2d(jax.random.key(4), size=32, pixel_size=8.0)
    np.testing.assert_array_equal(a.activity, b.activity)
    np.testing.assert_array_equal(a.mumap, b.mumap)
    assert not np.array_equal(a.mumap, c.mumap) and float(a.uptake) != float(c.uptake)
    # Phantom i is the same whichever batch it is generated in.
    key = jax.random.key(5)
    batch = brain_phantoms_2d(phantom_keys(key, jnp.arange(4)), size=32, pixel_size=8.0)
    other = brain_phantoms_2d(phantom_keys(key, jnp.array([2, 9, 10, 11])), size=32, pixel_size=8.0)
    np.testing.assert_array_equal(batch.activity[2], other.activity[0])
    assert not np.array_equal(batch.activity[0], batch.activity[1])


def test_uptake_distribution_and_fixed_uptake(phantoms128):
    u = np.asarray(jax.vmap(draw_uptake)(jax.random.split(jax.random.key(11), 4000)))
    assert u.min() >= 3 and u.max() <= 9
    assert abs(u.mean() - 6) < 0.1
    assert abs(u.std() - 1.32) < 0.06  # 1.5 * 0.880 (a standard normal truncated to +-2)
    assert abs(np.mean(np.abs(u - 6) < 1.5) - 0.7165) < 0.03  # P(|z| < 1 | |z| < 2) = 0.6827 / 0.9545
    t = np.asarray(phantoms128.skull_thickness)
    assert t.min() >= 2 and t.max() <= 4 and t.std() > 0.1
    assert len(np.unique(np.asarray(phantoms128.high_uptake).sum(axis=(1, 2)))) == 6
    fixed = brain_phantoms_2d(phantom_keys(jax.random.key(1), jnp.arange(4)), size=32, pixel_size=8.0,
                              uptake=[4.0, 5.0, 9.0, 3.0])
    np.testing.assert_allclose(fixed.uptake, [4, 5, 9, 3])
    assert float(fixed.activity[2].max()) == 9.0


def test_phantom_bad_input():
    with pytest.raises(ValueError, match="size \\* pixel_size"):
        brain_phantom_2d(jax.random.key(0), size=64, pixel_size=2.0)
    with pytest.raises(ValueError, match="uptake"):
        brain_phantom_2d(jax.random.key(0), uptake=10.0)
    with pytest.raises(ValueError, match="uptake"):
        brain_phantoms_2d(phantom_keys(jax.random.key(0), jnp.arange(2)), uptake=[4.0, 2.0])
    with pytest.raises(ValueError, match="indices"):
        phantom_keys(jax.random.key(0), jnp.ones((2, 2), int))


# --- data --------------------------------------------------------------------------------------


def test_lehr_psf_model():
    assert lehr_system_fwhm(100.0) == pytest.approx(6.99, abs=0.01)  # data sheet: 7.5 mm at 10 cm
    psf = lehr_psf()
    d = np.linspace(25, 235, 50)
    fit = np.sqrt(float(psf.fwhm0) ** 2 + (float(psf.slope) * d) ** 2)
    assert np.max(np.abs(fit / lehr_system_fwhm(d) - 1)) < 0.09
    geometry = spectnet_geometry()
    assert geometry.image_shape == (128, 128, 1) and geometry.nview == 120
    np.testing.assert_allclose(geometry.angles[jnp.array([0, 30])], [0, np.pi / 2], atol=1e-6)


def test_sinogram_layout_and_padding(small_geometry):
    data = PhantomSet(split_keys(jax.random.key(0))[0], 4, small_geometry, projection_batch=4)
    sino = data.sinograms(np.arange(4))
    assert sino.shape == (4, 30, 32)
    views = jnp.asarray(np.random.default_rng(0).random((32, 1, 30)))
    np.testing.assert_array_equal(views_to_sinogram(views)[7], views[:, 0, 7])  # row = view
    batch = data.batch(np.arange(4))
    assert batch.sinogram.shape == (4, 32, 32)
    np.testing.assert_array_equal(batch.sinogram[:, 30:], batch.sinogram[:, :2])
    # The paper's 120 -> 128 rows: the last 8 rows are the first 8.
    s = jnp.asarray(np.random.default_rng(0).random((2, 120, 128)), jnp.float32)
    padded = pad_sinogram(s)
    assert padded.shape == (2, 128, 128)
    np.testing.assert_array_equal(padded[:, 120:], padded[:, :8])
    np.testing.assert_array_equal(padded[:, :120], s)
    with pytest.raises(ValueError, match="rows"):
        pad_sinogram(s, 300)
    # Cached and freshly projected sinograms agree; sinograms are non-negative and not all zero.
    fresh = PhantomSet(data.key, 4, small_geometry, cache=False).sinograms(np.arange(4))
    np.testing.assert_allclose(fresh, sino, rtol=1e-6)
    assert float(sino.min()) >= 0 and float(sino.max()) > 1


def test_poisson_noise_count_level(small_geometry):
    data = PhantomSet(jax.random.key(1), 4, small_geometry, projection_batch=4)
    clean = data.sinograms(np.arange(4))
    noisy = data.with_count_level(1e4)
    a, b = noisy.sinograms(np.arange(4)), noisy.sinograms(np.arange(4))
    np.testing.assert_array_equal(a, b)  # one fixed realisation per phantom
    assert not np.allclose(a, clean)
    # Counts = noisy * count_level / sum(clean): integers totalling ~1e4 (Poisson sd 100).
    scale = 1e4 / np.asarray(clean.sum(axis=(1, 2)))
    counts = np.asarray(a) * scale[:, None, None]
    np.testing.assert_allclose(counts, np.round(counts), atol=2e-2)
    assert np.all(np.abs(counts.sum(axis=(1, 2)) - 1e4) < 500)
    other = add_poisson_noise(jax.random.split(jax.random.key(9), 4), clean, 1e4)
    assert not np.allclose(other, a)


# --- networks ----------------------------------------------------------------------------------


def test_paper_architecture_shapes():
    """The 128 x 128 networks, abstractly: 128 -> 62 -> 29 -> 13 -> 5 -> 1 x 1 x 256, decoder
    256 -> 2048 -> 16384 -> 128 x 128."""
    ae = eqx.filter_eval_shape(Autoencoder, jax.random.key(0))
    net = eqx.filter_eval_shape(SPECTnet, jax.random.key(0))
    x = jax.ShapeDtypeStruct((4, 128, 128), jnp.float32)
    maps = eqx.filter_eval_shape(lambda m, a: m.encoder.feature_maps(a[:, None], training=True), ae, x)
    assert [tuple(m.shape) for m in maps] == [(4, 64, 62, 62), (4, 64, 29, 29), (4, 128, 13, 13),
                                              (4, 128, 5, 5), (4, 256, 1, 1)]
    code, _ = eqx.filter_eval_shape(lambda m, a: m.encode(a, training=False), ae, x)
    assert code.shape == (4, 256)
    out, stats = eqx.filter_eval_shape(lambda m, a: m(a, training=True), ae, x)
    assert out.shape == (4, 128, 128) and len(stats) == 5
    assert (ae.decoder.fc1.in_features, ae.decoder.fc1.out_features, ae.decoder.fc2.out_features) == (256, 2048, 16384)
    assert [c.kernel_size for c in ae.encoder.convs] == [(6, 6), (6, 6), (5, 5), (5, 5), (5, 5)]
    assert [c.stride for c in ae.encoder.convs] == [(2, 2)] * 4 + [(1, 1)]
    sig = eqx.filter_eval_shape(lambda m, c: m.decoder.sigmoid_image(c), ae, code)
    assert sig.shape == (4, 128, 128)
    # Projection network: two input channels, same layers, 256-vector; SPECTnet -> image.
    assert net.projection_network.convs[0].in_channels == 2
    pcode, _ = eqx.filter_eval_shape(lambda m, s, mu: m.code(s, mu, training=False), net, x, x)
    assert pcode.shape == (4, 256)
    img, _ = eqx.filter_eval_shape(lambda m, s, mu: m(s, mu, training=False), net, x, x)
    assert img.shape == (4, 128, 128)
    # Parameter counts: encoder 1,584,000 (+ batch norm 1,280), decoder 34,099,777.
    n_enc = sum(c.weight.size + c.bias.size for c in ae.encoder.convs)
    n_dec = sum(l.weight.size + l.bias.size for l in (ae.decoder.fc1, ae.decoder.fc2, ae.decoder.conv1,
                                                        ae.decoder.conv2, ae.decoder.deconv))
    assert n_enc == 1_584_000 and n_dec == 34_099_777


def test_network_bad_input():
    net = build(SPECTnet, jax.random.key(0), image_size=32)
    with pytest.raises(ValueError, match="sinogram must have shape"):
        net(jnp.zeros((2, 30, 32)), jnp.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="sinograms must have shape"):
        reconstruct(net, jnp.zeros((2, 40, 32)), jnp.zeros((2, 32, 32)))
    with pytest.raises(ValueError, match="1 x 1"):
        SPECTnetEncoder(jax.random.key(0), image_size=64, kernels=(6, 6), strides=(2, 2), channels=(4, 4))
    with pytest.raises(ValueError, match="image_size"):
        Autoencoder(jax.random.key(0), image_size=100)


def test_batch_norm_training_and_inference():
    bn = BatchNorm(3)
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, (8, 3, 5, 5)), jnp.float32)
    y, (mean, var) = bn(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-3)
    bn1 = update_batch_statistics(bn, [(mean, var)])
    np.testing.assert_allclose(bn1.running_mean, mean)  # the first batch sets the statistics
    bn2 = update_batch_statistics(bn1, [(mean + 1, var)])
    np.testing.assert_allclose(bn2.running_mean, mean + 0.1, rtol=1e-6)  # momentum 0.9
    y_inf, none = bn2(x[:1], training=False)
    assert none is None
    expected = (x[:1] - bn2.running_mean[None, :, None, None]) / jnp.sqrt(bn2.running_var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y_inf, expected, rtol=1e-5, atol=1e-5)


def test_activity_normalisation():
    """Activity is divided by 10 for the network, so 9 (the largest) sits inside the sigmoid's
    (0, 1); the autoencoder takes and returns activity units."""
    assert UPTAKE_RANGE[1] / ACTIVITY_SCALE < 1
    ae = build(Autoencoder, jax.random.key(0), image_size=32)
    x = 9.0 * jnp.asarray(np.random.default_rng(1).random((2, 32, 32)), jnp.float32)

    @eqx.filter_jit
    def parts(ae, x):
        out, _ = ae(x, training=False)
        code, _ = ae.encoder((x / ACTIVITY_SCALE)[:, None], training=False)
        return out, ae.decoder(code), ae.decoder.sigmoid_image(code)

    out, decoded, sig = parts(ae, x)
    np.testing.assert_allclose(out, ACTIVITY_SCALE * decoded, rtol=1e-5, atol=1e-6)
    assert float(sig.min()) > 0 and float(sig.max()) < 1


# --- training ----------------------------------------------------------------------------------


def _small_sets(small_geometry, n_train=16, n_val=8):
    k_train, k_val, _ = split_keys(jax.random.key(2))
    return (PhantomSet(k_train, n_train, small_geometry, projection_batch=4),
            PhantomSet(k_val, n_val, small_geometry, projection_batch=4))


def test_training_reduces_loss_and_is_reproducible(small_geometry):
    train, val = _small_sets(small_geometry)
    config = TrainingConfig(batch_size=8, learning_rate=1e-3, epochs_autoencoder=5)
    init = build(Autoencoder, jax.random.key(1), image_size=32)
    a = train_autoencoder(init, train, val, config=config, key=jax.random.key(3))
    b = train_autoencoder(init, train, val, config=config, key=jax.random.key(3), epochs=2)
    assert a.steps == 10 and b.steps == 4
    np.testing.assert_array_equal(a.train_loss[:2], b.train_loss)  # seeded: the same run again
    assert a.train_loss[-1] < 0.8 * a.train_loss[0]
    assert a.val_metric[-1] < a.val_metric[0]
    # Plateau rule: demanding a 99% improvement, training stops `patience` epochs after the first
    # (the cap of 5 is not reached) and keeps the better of the two epochs' models.
    stopped = train_autoencoder(init, train, val, config=dataclasses.replace(config, patience=1, min_improvement=0.99),
                                key=jax.random.key(3))
    assert stopped.steps == 4 and stopped.val_metric.shape == stopped.train_loss.shape == (2,)
    np.testing.assert_allclose(stopped.val_metric, a.val_metric[:2], rtol=1e-5)
    assert stopped.best_epoch == int(np.argmin(a.val_metric[:2]))
    with pytest.raises(ValueError, match="patience"):
        TrainingConfig(patience=0)


def test_two_stage_pipeline_save_load_reconstruct(small_geometry, tmp_path):
    train, val = _small_sets(small_geometry)
    config = TrainingConfig(batch_size=8, learning_rate=1e-3, epochs_autoencoder=1, epochs_projection=1,
                            epochs_fine_tune=1)
    result = train_two_stage(jax.random.key(4), train, val, config=config)
    assert result.autoencoder.steps == result.projection.steps == result.fine_tune.steps == 2
    assert result.projection.metric_name == "code RMSE" and np.all(np.isfinite(result.projection.val_metric))
    # The joined network reuses the autoencoder's decoder exactly.
    dec_ae = result.autoencoder.model.decoder
    assert np.array_equal(result.joined.decoder.fc2.weight, dec_ae.fc2.weight)
    model = result.model
    assert count_network_parameters(model) > 0
    batch = val.batch(np.arange(4))
    raw = val.sinograms(np.arange(4))
    images = reconstruct(model, raw, batch.mumap)
    assert images.shape == (4, 32, 32) and np.all(np.isfinite(images))
    np.testing.assert_allclose(images, reconstruct(model, batch.sinogram, batch.mumap), rtol=1e-6)
    # Inference batch norm: a case alone gives the same image as inside a batch.
    np.testing.assert_allclose(reconstruct(model, raw[1:2], batch.mumap[1:2])[0], images[1], rtol=1e-4, atol=1e-5)
    path = tmp_path / "spectnet.eqx"
    save_model(path, model)
    loaded = load_model(path)
    np.testing.assert_array_equal(reconstruct(loaded, raw, batch.mumap), images)
    assert loaded.projection_network.norms[0].count == model.projection_network.norms[0].count > 0
    with pytest.raises(TypeError, match="Equinox module"):
        save_model(path, object())


def test_oversampled_simulation(small_geometry):
    """Data simulated on a 2x finer grid and binned down: counts conserved, same phantoms,
    a model mismatch of the expected size (not zero) against the reconstruction's own model."""
    g, k = small_geometry, 2
    fine_geometry = oversampled_geometry(g, k)
    assert fine_geometry.image_shape == (64, 64, 1) and fine_geometry.voxel_size[:2] == (4.0, 4.0)
    np.testing.assert_array_equal(fine_geometry.angles, g.angles)
    np.testing.assert_array_equal(fine_geometry.radii, g.radii)
    assert fine_geometry.psf.half_width_x > g.psf.half_width_x  # taps re-sampled on the finer bins
    # Binning: (sum of k bins) / k^2, so that value x pixel area is conserved.
    fine = jnp.asarray(np.random.default_rng(0).random((2, 30, 64)), jnp.float32)
    binned = bin_sinogram(fine, k)
    assert binned.shape == (2, 30, 32)
    np.testing.assert_allclose(binned[..., 3], (fine[..., 6] + fine[..., 7]) / 4, rtol=1e-6)
    np.testing.assert_allclose(float(binned.sum()) * k**2, float(fine.sum()), rtol=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        bin_sinogram(fine[..., :63], k)

    coarse_set = PhantomSet(jax.random.key(3), 4, g, projection_batch=4)
    data = PhantomSet(jax.random.key(3), 4, g, oversample=k, projection_batch=4)
    idx = np.arange(4)
    fine_p, p, p1 = data.simulation_phantoms(idx), data.phantoms(idx), coarse_set.phantoms(idx)
    assert fine_p.activity.shape == (4, 64, 64) and p.activity.shape == (4, 32, 32)
    # The same heads and regions (geometry in mm, same keys), sampled finer.
    np.testing.assert_array_equal(p.uptake, p1.uptake)
    assert float(jnp.mean(p.high_uptake == p1.high_uptake)) > 0.98
    # Ground truth = 2x2 block means; masks = majority (>= 3 of 4 fine pixels).
    np.testing.assert_allclose(p.activity[:, 5, 7], fine_p.activity[:, 10:12, 14:16].mean(axis=(1, 2)), rtol=1e-6)
    v = np.asarray(p.uptake)[:, None, None]
    act = np.asarray(p.activity)
    assert np.all(act[p.high_uptake] >= np.broadcast_to(0.75 * v + 0.25, act.shape)[p.high_uptake] - 1e-5)
    assert np.all((act[p.background] >= 0.75 - 1e-6)
                  & (act[p.background] <= np.broadcast_to(0.25 * v + 0.75, act.shape)[p.background] + 1e-5))
    assert np.array_equal(downsample_phantoms(fine_p, k).high_uptake, p.high_uptake)
    # The set's sinograms are the fine projections binned down.
    sino = data.sinograms(idx)
    np.testing.assert_allclose(sino, bin_sinogram(project_phantoms(fine_geometry, fine_p.activity, fine_p.mumap), k),
                               rtol=1e-5, atol=1e-5)
    # Without attenuation each view sees the whole activity (value x pixel area): the binned
    # fine sinogram's per-view totals equal the coarse truth's sum (rotation loses < 1%).
    no_mu = bin_sinogram(project_phantoms(fine_geometry, fine_p.activity, jnp.zeros_like(fine_p.mumap)), k)
    np.testing.assert_allclose(no_mu.sum(axis=2), np.broadcast_to(p.activity.sum(axis=(1, 2))[:, None], (4, 30)),
                               rtol=1e-2)
    # A phantom that is piecewise constant on the coarse grid: the fine model agrees with the
    # coarse one to within the model mismatch (finer rotation and PSF sampling), ~1-2%, not exactly.
    up = lambda x: jnp.repeat(jnp.repeat(x, k, -1), k, -2)
    coarse = project_phantoms(g, p1.activity, p1.mumap)
    via_fine = bin_sinogram(project_phantoms(fine_geometry, up(p1.activity), up(p1.mumap)), k)
    rel = np.asarray(jnp.linalg.norm(via_fine - coarse, axis=(1, 2)) / jnp.linalg.norm(coarse, axis=(1, 2)))
    assert np.all((rel > 5e-3) & (rel < 0.04)), rel
    np.testing.assert_allclose(via_fine.sum(axis=(1, 2)), coarse.sum(axis=(1, 2)), rtol=5e-3)
    with pytest.raises(ValueError, match="oversample"):
        PhantomSet(jax.random.key(0), 2, g, oversample=0)


def test_noise_realisations(small_geometry):
    data = PhantomSet(jax.random.key(1), 2, small_geometry, count_level=1e4, projection_batch=4)
    idx = np.arange(2)
    r0, r1 = data.sinograms(idx), data.with_count_level(1e4, realisation=1).sinograms(idx)
    np.testing.assert_array_equal(r1, PhantomSet(data.key, 2, small_geometry, count_level=1e4, realisation=1,
                                                 projection_batch=4).sinograms(idx))
    assert not np.allclose(r0, r1)
    # Independent draws: the two realisations' differences from the mean are uncorrelated.
    clean = np.asarray(data.with_count_level(None).sinograms(idx))
    d0, d1 = (np.asarray(r0) - clean).ravel(), (np.asarray(r1) - clean).ravel()
    assert abs(np.corrcoef(d0, d1)[0, 1]) < 0.1
    with pytest.raises(ValueError, match="realisation"):
        data.with_count_level(1e4, realisation=-1)


def test_project_phantoms_matches_set(small_geometry):
    data = PhantomSet(jax.random.key(8), 4, small_geometry, projection_batch=4)
    p = data.phantoms(np.arange(4))
    np.testing.assert_allclose(project_phantoms(small_geometry, p.activity, p.mumap), data.sinograms(np.arange(4)),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="size"):
        PhantomSet(jax.random.key(0), 0, small_geometry)
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig(batch_size=0)
    assert math.isfinite(float(p.mumap.sum()))


def test_l2_penalty_is_the_papers_on_weights_only():
    """Adam with ``l2`` and ``weight_mask`` steps as Adam on ``loss + l2/2 sum(w^2)`` over the
    convolution and linear weights (biases free)."""
    from jaxspect.training import make_optimizer

    k1, k2 = jax.random.split(jax.random.key(0))
    model = (eqx.nn.Conv2d(1, 2, 3, key=k1), eqx.nn.Linear(4, 3, key=k2))
    params = eqx.filter(model, eqx.is_inexact_array)
    mask = weight_mask(params)
    assert [bool(m) for m in jax.tree_util.tree_leaves(mask)] == [True, False, True, False]
    data_loss = lambda p: sum(jnp.sum(jnp.sin(x)) for x in jax.tree_util.tree_leaves(p))
    penalised = lambda p: data_loss(p) + 0.5 * 0.08 * (jnp.sum(p[0].weight ** 2) + jnp.sum(p[1].weight ** 2))
    ours = make_optimizer(0.01, algorithm="adam", l2=0.08, l2_mask=weight_mask)
    updates, _ = ours.update(jax.grad(data_loss)(params), ours.init(params), params)
    import optax

    ref_opt = optax.adam(0.01)
    reference, _ = ref_opt.update(jax.grad(penalised)(params), ref_opt.init(params), params)
    for a, b in zip(jax.tree_util.tree_leaves(updates), jax.tree_util.tree_leaves(reference)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
