"""The shared training loop: schedules, clipping, checkpoint/resume, records, compile reuse."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspect.nn import PaperCNN
from jaxspect.recon import EndToEnd, Sequential, UnrolledEM, fit
from jaxspect.training import make_optimizer, train

from .conftest import small_training_set



def _regression(key):
    """A linear model and a noisy linear data set, 4 minibatches per epoch."""
    kx, kw, kn = jax.random.split(key, 3)
    x = jax.random.normal(kx, (32, 3))
    y = x @ jnp.asarray([1.0, -2.0, 0.5]) + 0.3 + 0.01 * jax.random.normal(kn, (32,))

    def batches(k):
        order = np.asarray(jax.random.permutation(k, 32))
        for b in range(0, 32, 8):
            yield x[order[b : b + 8]], y[order[b : b + 8]]

    return eqx.nn.Linear(3, "scalar", key=kw), batches, (x, y)


def squared_error(model, x, y):
    return jnp.mean((jax.vmap(model)(x) - y) ** 2)


def test_train_converges_and_records():
    model, batches, (x, y) = _regression(jax.random.key(0))
    opt = make_optimizer(0.05, algorithm="adam")
    result = train(model, squared_error, batches, epochs=60, optimizer=opt, key=jax.random.key(1),
                   validate=lambda m: {"val_loss": float(squared_error(m, x, y)), "bias": float(m.bias[0])})
    h = result.history
    assert set(h) == {"train_loss", "seconds", "val_loss", "bias"} and all(len(v) == 60 for v in h.values())
    assert h["val_loss"][-1] < 1e-2 * h["val_loss"][0]
    assert abs(h["bias"][-1] - 0.3) < 0.05
    assert result.best_epoch == int(np.argmin(h["val_loss"]))


def test_make_optimizer_is_cached_and_checks():
    assert make_optimizer(0.01, clip_norm=1.0) is make_optimizer(0.01, clip_norm=1.0)
    assert make_optimizer(0.01) is not make_optimizer(0.02)
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer(-1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        make_optimizer(0.01, clip_norm=0.0)
    with pytest.raises(ValueError, match="algorithm"):
        make_optimizer(0.01, algorithm="sgd")


def test_clipping_and_schedule_take_effect():
    model, batches, _ = _regression(jax.random.key(0))
    one_batch = lambda k: [next(iter(batches(k)))]
    run = lambda opt: train(model, squared_error, one_batch, epochs=1, optimizer=opt, key=jax.random.key(1)).last_model
    # Adam's first step moves each parameter by about the learning rate, whatever the clipping;
    # a zero learning rate at step 0 (schedule) moves nothing.
    moved = run(make_optimizer(0.1, algorithm="adam"))
    assert float(jnp.max(jnp.abs(moved.weight - model.weight))) == pytest.approx(0.1, rel=1e-3)
    still = run(make_optimizer(optax.linear_schedule(0.0, 0.1, 10), algorithm="adam"))
    np.testing.assert_array_equal(still.weight, model.weight)
    # plain SGD through the chain: clipping bounds the update's norm
    sgd = optax.chain(optax.clip_by_global_norm(1e-3), optax.sgd(1.0))
    clipped = train(model, squared_error, one_batch, epochs=1, optimizer=sgd, key=jax.random.key(1)).last_model
    step = jnp.sqrt(jnp.sum((clipped.weight - model.weight) ** 2) + jnp.sum((clipped.bias - model.bias) ** 2))
    assert float(step) == pytest.approx(1e-3, rel=1e-4)


def test_early_stopping_on_a_plateau(tmp_path):
    model, batches, (x, y) = _regression(jax.random.key(0))
    opt = make_optimizer(0.05, algorithm="adam")
    # A validation metric that improves for 5 epochs and then stays flat: with patience 3 the
    # run stops 3 epochs after the last improvement, well before the cap of 50.
    values = iter([5.0, 4.0, 3.0, 2.0, 1.0] + [1.0] * 100)
    run = lambda **kw: train(model, squared_error, batches, epochs=50, optimizer=opt, key=jax.random.key(1),
                             patience=3, **kw)
    result = run(validate=lambda m: next(values))
    assert result.stopped and len(result.history["val_loss"]) == 8 and result.best_epoch == 4
    # min_improvement: steps of 1% do not count as progress when 5% is required
    slow = iter(list(10.0 * 0.99 ** np.arange(100)))
    result = run(validate=lambda m: next(slow), min_improvement=0.05)
    assert result.stopped and len(result.history["train_loss"]) == 4
    # a stopped run's checkpoint stays stopped when resumed with a higher cap
    ckpt = tmp_path / "stop.ckpt"
    values = iter([3.0, 2.0] + [2.0] * 100)
    first = run(validate=lambda m: next(values), checkpoint=ckpt)
    again = train(model, squared_error, batches, epochs=80, optimizer=opt, key=jax.random.key(1), patience=3,
                  validate=lambda m: 0.0, checkpoint=ckpt)
    assert first.stopped and again.stopped and len(again.history["val_loss"]) == len(first.history["val_loss"]) == 5
    with pytest.raises(ValueError, match="patience"):
        train(model, squared_error, batches, epochs=5, optimizer=opt, key=jax.random.key(1), patience=0)
    # a checkpoint of the previous format (no plateau state) is refused by its format
    header, rest = ckpt.read_bytes().split(b"\n", 1)
    ckpt.write_bytes(header.replace(b'"format": 2', b'"format": 1') + b"\n" + rest)
    with pytest.raises(ValueError, match="has format 1"):
        run(validate=lambda m: 0.0, checkpoint=ckpt)


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path):
    model, batches, (x, y) = _regression(jax.random.key(3))
    opt = make_optimizer(0.05, algorithm="adamw", weight_decay=1e-3)
    kwargs = dict(optimizer=opt, key=jax.random.key(7), validate=lambda m: float(squared_error(m, x, y)))
    full = train(model, squared_error, batches, epochs=6, **kwargs)
    path = tmp_path / "run.ckpt"
    train(model, squared_error, batches, epochs=4, checkpoint=path, checkpoint_every=2, **kwargs)  # "interrupted"
    resumed = train(model, squared_error, batches, epochs=6, checkpoint=path, **kwargs)
    for a, b in zip(jax.tree_util.tree_leaves(full.last_model), jax.tree_util.tree_leaves(resumed.last_model)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.history["val_loss"], resumed.history["val_loss"])
    assert resumed.best_epoch == full.best_epoch
    # a checkpoint of another model is refused by name; a damaged one too
    other = eqx.nn.Linear(4, "scalar", key=jax.random.key(0))
    with pytest.raises(ValueError, match="different model"):
        train(other, squared_error, batches, epochs=6, checkpoint=path, **kwargs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(ValueError, match="damaged"):
        train(model, squared_error, batches, epochs=6, checkpoint=path, **kwargs)
    assert not list(tmp_path.glob("*.tmp-*"))  # atomic writes leave no temporary files


def test_fit_records_vois_resumes_and_reuses_the_compiled_step(rng, tmp_path, monkeypatch):
    import jaxspect.recon._train as train_module

    traces = []
    original = train_module.training_loss
    monkeypatch.setattr(train_module, "training_loss", lambda *a: traces.append(1) or original(*a))
    train_set, val = small_training_set(rng, 2), small_training_set(rng, 2)
    masks = {"hot": val.target > 5, "cold": val.target < 5}
    model = UnrolledEM(PaperCNN, jax.random.key(5), n_outer=2)
    kwargs = dict(epochs=3, gradient=EndToEnd(), key=jax.random.key(0), batch_size=1, voi_masks=masks,
                  learning_rate=optax.cosine_decay_schedule(0.01, 6), clip_norm=1.0)
    full = fit(model, train_set, val, **kwargs)
    assert set(full.history) == {"train_loss", "seconds", "val_loss", "val_MAE/hot", "val_MAE/cold"}
    assert all(np.all(np.isfinite(v)) and len(v) == 3 for v in full.history.values())
    n_traces = len(traces)
    path = tmp_path / "fit.ckpt"
    fit(model, train_set, val, **{**kwargs, "epochs": 2}, checkpoint=path)
    resumed = fit(model, train_set, val, **kwargs, checkpoint=path)
    assert len(traces) == n_traces  # the same settings reuse the compiled step: no new trace
    np.testing.assert_allclose(resumed.history["val_loss"], full.history["val_loss"], rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(full.model), jax.tree_util.tree_leaves(resumed.model)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # sequential training, on the lesion-style weighted loss (the hot region counts 4x)
    weigh = lambda d: eqx.tree_at(lambda d: d.weights, d, 1 + 3.0 * (d.target > 5), is_leaf=lambda v: v is None)
    seq = fit(model, weigh(train_set), weigh(val), epochs=2, gradient=Sequential(), key=jax.random.key(0),
              voi_masks=masks)
    assert len(seq.history["val_MAE/hot"]) == 2 * 2  # two networks, one after the other
    assert np.all(np.isfinite(seq.history["val_loss"]))
    with pytest.raises(ValueError, match="voi_masks"):
        fit(model, train_set, val, epochs=1, key=jax.random.key(0), voi_masks={"bad": masks["hot"][:1]})


def test_weighted_loss_and_its_checks(rng):
    from jaxspect.recon import relative_squared_error

    x = jnp.asarray(rng.random((2, 4, 4, 3)), jnp.float32)
    t = jnp.asarray(rng.random((2, 4, 4, 3)) + 0.5, jnp.float32)
    w = jnp.asarray(rng.random((2, 4, 4, 3)), jnp.float32)
    expected = np.mean([np.sum(w[p] * (x[p] - t[p]) ** 2) / np.sum(w[p] * t[p] ** 2) for p in range(2)])
    assert float(relative_squared_error(x, t, w)) == pytest.approx(expected, rel=1e-5)
    assert float(relative_squared_error(x, t, 3 * jnp.ones_like(t))) == pytest.approx(float(relative_squared_error(x, t)))
    # zero weight where the image is wrong: the error there does not count
    wrong = t.at[:, 0].add(10.0)
    mask = jnp.ones_like(t).at[:, 0].set(0.0)
    assert float(relative_squared_error(wrong, t, mask)) == 0.0
    from jaxspect.recon import TrainingData

    images = jnp.ones((3, 4, 4, 3))
    weighted = TrainingData(None, jnp.ones((3, 4, 3, 5)), jnp.zeros(3), images, images, 2 * images,
                            shared_projector=True)
    assert weighted.take(np.array([2, 0])).weights.shape == (2, 4, 4, 3)
    bad = eqx.tree_at(lambda d: d.weights, weighted, -weighted.weights)
    with pytest.raises(ValueError, match="train.weights must be finite and >= 0"):
        fit(None, bad, epochs=1, key=jax.random.key(0))  # the data are checked before the model is used
    with pytest.raises(ValueError, match="val.weights must be shaped like"):
        fit(None, weighted, eqx.tree_at(lambda d: d.weights, weighted, images[:, :2]), epochs=1, key=jax.random.key(0))
