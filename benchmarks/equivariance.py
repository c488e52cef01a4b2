"""Rotation-equivariant SCNNs (e3nn-jax) vs conventional CNNs: the SCNN papers' experiments at
sizes a 2-core CPU runs in about 25 minutes (``--quick``: about 3 minutes).

    python -m benchmarks.equivariance                 # all six experiments
    python -m benchmarks.equivariance --only 1,4      # a selection
    python -m benchmarks.equivariance --quick         # tiny sizes, proves it runs
    python -m benchmarks.equivariance --figures out/  # also save PNG figures

1. 2-D denoising of a Poisson-noisy brain-like slice (Shepp-Logan; papers' Fig. 2).
2. 2-D reconstruction with the projector in the loss (papers' Fig. 3).
3. SCNN-assisted reconstruction of a hot-rod phantom from 2 MLEM iterations (papers' Fig. 5).
4. Data efficiency: train on one orientation, test on rotated held-out images.
5. 3-D denoising of a noisy torso phantom.
6. Unrolled EM (``UnrolledEM`` + ``fit``) with the 3-D SCNN vs the paper's PaperCNN.

"Epochs" are optimiser steps on the (single-image or full-batch) training set, as in the papers.
Models: the e3nn SCNN (gate nonlinearity, hidden 8x0e+4x1o+2x2e), the papers' 5-layer 64-channel
ReLU CNN (112k parameters) and a 3-layer ReLU CNN of the SCNN's size. Adam; learning rates per
model family (equivariant nets want larger ones, see ``LR``). Last layers start at zero, so every
residual network starts as the identity.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

import jaxspect as js
from jaxspect.nn import SCNN, PaperCNN, PlainCNN, SCNN2d, SCNN3d, baseline_cnn, count_parameters, small_cnn
from jaxspect.recon import EndToEnd, TrainingData, UnrolledEM, fit, reconstruct_batch
from jaxspect.training import make_optimizer, train as train_loop

LR = {"SCNN": 2e-2, "CNN 5x64": 1e-3, "CNN small": 1e-2, "PaperCNN": 2e-3}

FULL = dict(
    n1=64, epochs1=(500, 2000), counts1=20.0,
    n2=64, views2=64, epochs2=(200, 800),
    n3=64, views3=64, epochs3=600,
    n4=48, train4=4, test4=4, epochs4=400, angles4=(0, 15, 30, 45, 60, 75, 90),
    shape5=(32, 32, 20), epochs5=300,
    shape6=(32, 32, 20), views6=32, patients6=(4, 2), epochs6=40, beta6=0.3,
)
QUICK = dict(
    n1=24, epochs1=(20, 60), counts1=20.0,
    n2=24, views2=24, epochs2=(10, 30),
    n3=32, views3=32, epochs3=30,
    n4=24, train4=2, test4=2, epochs4=30, angles4=(0, 45, 90),
    shape5=(12, 12, 10), epochs5=15,
    shape6=(16, 16, 10), views6=12, patients6=(2, 1), epochs6=2, beta6=0.3,
)


# ---------------------------------------------------------------------------------- utilities


def zero_last(model):
    """The last layer's weights set to zero: a residual network starts as the identity."""
    if isinstance(model, SCNN):
        return eqx.tree_at(lambda m: m.convs[-1].weight, model, jnp.zeros_like(model.convs[-1].weight))
    if isinstance(model, PlainCNN):
        return eqx.tree_at(lambda m: m.weights[-1], model, jnp.zeros_like(model.weights[-1]))
    if isinstance(model, PaperCNN):
        return eqx.tree_at(lambda m: m.layers[-1].weight, model, jnp.zeros_like(model.layers[-1].weight))
    return model


def models_2d(key, pixel_mm, which=("SCNN", "CNN 5x64", "CNN small")):
    k = jax.random.split(key, 3)
    make = {
        "SCNN": lambda: SCNN2d(k[0], pixel_size=pixel_mm, method="conv"),
        "CNN 5x64": lambda: baseline_cnn(k[1], ndim=2),
        "CNN small": lambda: small_cnn(k[2], ndim=2),
    }
    return {name: zero_last(make[name]()) for name in which}


def train(model, loss_fn, data, epochs, lr, *, snapshots=()):
    """Adam on ``loss_fn(model, data)``, one full-batch step per epoch (the shared training loop);
    returns the last model, the loss per epoch, the median seconds per epoch (compilation
    excluded) and models at the ``snapshots`` epochs."""
    snaps = {}

    def snapshot(m):
        epoch = len(snaps_seen) + 1
        snaps_seen.append(epoch)
        if epoch in snapshots:
            snaps[epoch] = m
        return {}

    snaps_seen = []
    result = train_loop(model, loss_fn, lambda key: [(data,)], epochs=epochs, key=jax.random.key(0),
                        optimizer=make_optimizer(lr, algorithm="adam"), validate=snapshot if snapshots else None)
    return result.last_model, result.history["train_loss"], result.seconds_per_epoch, snaps


apply = eqx.filter_jit(lambda m, x: m(x))


def first_epoch_below(losses, level):
    hits = np.nonzero(losses <= level)[0]
    return int(hits[0]) + 1 if hits.size else None


def table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda r: "| " + " | ".join(str(c).rjust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([fmt(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows])


def poisson(rng, image, counts):
    return (rng.poisson(np.asarray(image, np.float64) * counts) / counts).astype(np.float32)


def projector_2d(n, pixel_mm, nview, fwhm0=1.0, slope=0.02):
    geometry = js.SPECTGeometry((n, n, 1), (pixel_mm,) * 3, js.GaussianPSF(fwhm0, slope), nview=nview,
                                radii=0.6 * n * pixel_mm + 10.0)
    return js.SPECTProjector(geometry, None)


def savefig(fig, args, name):
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(args.figures) / name, dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---------------------------------------------------------------------------------- experiments


def exp1_denoising(cfg, args):
    """Fig. 2: supervised denoising of one noisy slice; MSE to the truth at two epoch counts."""
    n, (e_mid, e_end), counts = cfg["n1"], cfg["epochs1"], cfg["counts1"]
    rng = np.random.default_rng(args.seed)
    truth = js.phantoms.shepp_logan_2d(n)
    noisy = poisson(rng, truth, counts)
    fresh = poisson(rng, truth, counts)  # a second noise draw: is the denoiser fitting the noise?
    data = (jnp.asarray(noisy), jnp.asarray(truth))
    loss_fn = lambda m, d: jnp.mean((m(d[0]) - d[1]) ** 2)
    rows, results = [], {}
    for name, model in models_2d(jax.random.key(args.seed), 220.0 / n).items():
        trained, losses, sec, snaps = train(model, loss_fn, data, e_end, LR[name], snapshots=(e_mid,))
        mse = lambda m, x: float(jnp.mean((apply(m, jnp.asarray(x)) - truth) ** 2))
        results[name] = (trained, losses)
        rows.append([name, f"{count_parameters(model):,}", f"{mse(snaps[e_mid], noisy):.3e}",
                     f"{mse(trained, noisy):.3e}", f"{mse(trained, fresh):.3e}", f"{sec * 1e3:.1f}"])
    cnn_final = results["CNN 5x64"][1][-1]
    for r, name in zip(rows, results):
        r.append(str(first_epoch_below(results[name][1], cnn_final) or f"> {e_end}"))
    print(f"\n## 1. 2-D denoising, Shepp-Logan {n}x{n}, Poisson {counts:g} counts at intensity 1 "
          f"(noisy input MSE {np.mean((noisy - truth) ** 2):.3e})")
    print(table(["model", "params", f"MSE @{e_mid}", f"MSE @{e_end}", f"MSE new noise @{e_end}", "ms/epoch",
                 "epochs to CNN 5x64 final loss"], rows))
    if args.figures:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2 + len(results), figsize=(4 * (2 + len(results)), 4))
        ax[0].imshow(truth.T, cmap="gray"); ax[0].set_title("truth")
        ax[1].imshow(noisy.T, cmap="gray"); ax[1].set_title("noisy")
        for a, (name, (m, _)) in zip(ax[2:], results.items()):
            a.imshow(np.asarray(apply(m, jnp.asarray(noisy))).T, cmap="gray"); a.set_title(name)
        savefig(fig, args, "exp1_denoising.png")
        fig, a = plt.subplots(figsize=(6, 4))
        for name, (_, losses) in results.items():
            a.semilogy(losses, label=name)
        a.set_xlabel("epoch"); a.set_ylabel("training MSE"); a.legend()
        savefig(fig, args, "exp1_loss.png")
    return results


def exp2_reconstruction(cfg, args):
    """Fig. 3: the projector in the loss; the networks map the normalised back projection to an
    image whose projections must match the measured sinogram."""
    n, views, (e_mid, e_end) = cfg["n2"], cfg["views2"], cfg["epochs2"]
    pixel = 220.0 / n
    truth = js.phantoms.shepp_logan_2d(n)
    A = projector_2d(n, pixel, views)
    rng = np.random.default_rng(args.seed + 2)
    y_mean = np.asarray(eqx.filter_jit(A)(jnp.asarray(truth)[..., None]))
    scale = 2e5 / y_mean.sum()  # 200k counts in the slice
    y = jnp.asarray(rng.poisson(y_mean * scale) / scale, jnp.float32)  # back in image units
    sens = eqx.filter_jit(A.back)(jnp.ones_like(y))
    x_bp = eqx.filter_jit(A.back)(y) / jnp.maximum(sens, 1e-6)
    x_bp = (x_bp * (jnp.sum(y) / jnp.sum(eqx.filter_jit(A)(x_bp))))[..., 0]  # projections match in total
    norm = float(jnp.mean(y**2))
    loss_fn = lambda m, d: jnp.mean((d[0](m(d[1])[..., None]) - d[2]) ** 2) / norm
    data = (A, x_bp, y)
    mlem = js.mlem(A, y, jnp.ones((n, n, 1)), n_iter=30).image[..., 0]
    nr = lambda x: float(js.metrics.nrmse(jnp.asarray(x), jnp.asarray(truth), jnp.asarray(truth > 0)))
    rows = [["back projection / A'1", "-", "-", "-", f"{nr(x_bp):.1f}", "-"],
            ["MLEM 30 it.", "-", "-", "-", f"{nr(mlem):.1f}", "-"]]
    results = {}
    for name, model in models_2d(jax.random.key(args.seed + 2), pixel).items():
        trained, losses, sec, snaps = train(model, loss_fn, data, e_end, LR[name], snapshots=(e_mid,))
        results[name] = (trained, losses)
        rows.append([name, f"{losses[e_mid - 1]:.4f}", f"{losses[-1]:.4f}",
                     f"{nr(apply(snaps[e_mid], x_bp)):.1f}", f"{nr(apply(trained, x_bp)):.1f}", f"{sec * 1e3:.1f}"])
    print(f"\n## 2. 2-D reconstruction with the projector in the loss, Shepp-Logan {n}x{n}, {views} views, "
          f"200k counts; loss = ||A g(x_bp) - y||^2 / ||y||^2")
    print(table(["model", f"loss @{e_mid}", f"loss @{e_end}", f"NRMSE % @{e_mid}", f"NRMSE % @{e_end}", "ms/epoch"], rows))
    print("(NRMSE inside the head, % of its mean activity)")
    if args.figures:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3 + len(results), figsize=(4 * (3 + len(results)), 4))
        for a, (t, img) in zip(ax, [("truth", truth), ("A'y / A'1", x_bp), ("MLEM 30", mlem)]
                               + [(k, apply(m, x_bp)) for k, (m, _) in results.items()]):
            a.imshow(np.asarray(img).T, cmap="gray"); a.set_title(t)
        savefig(fig, args, "exp2_reconstruction.png")
    return results


def exp3_hot_rod(cfg, args):
    """Fig. 5: a single central slice of a 2-iteration MLEM and its sinogram as the whole
    training set (self-supervised: the loss is the sinogram misfit); contrast recovery per rod
    size."""
    n, views, epochs = cfg["n3"], cfg["views3"], cfg["epochs3"]
    pixel = 0.8 * 128 / n  # the same 102 mm field of view as the paper's 128 x 0.8 mm
    ph = js.phantoms.hot_rod_phantom(n, pixel, background=0.1)  # rods 10:1 over the background
    truth = ph.image
    A = projector_2d(n, pixel, views, fwhm0=1.5, slope=0.01)
    rng = np.random.default_rng(args.seed + 3)
    y_mean = np.asarray(eqx.filter_jit(A)(jnp.asarray(truth)[..., None]))
    scale = 3e5 / y_mean.sum()
    y = jnp.asarray(rng.poisson(y_mean * scale) / scale, jnp.float32)
    ones = jnp.ones((n, n, 1))
    x2 = js.mlem(A, y, ones, n_iter=2).image[..., 0]
    x50 = js.mlem(A, y, ones, n_iter=50).image[..., 0]
    norm = float(jnp.mean(y**2))
    loss_fn = lambda m, d: jnp.mean((d[0](m(d[1])[..., None]) - d[2]) ** 2) / norm
    images = {"MLEM 2 it. (input)": x2, "MLEM 50 it.": x50}
    losses_by = {}
    for name, model in models_2d(jax.random.key(args.seed + 3), pixel).items():
        trained, losses, sec, _ = train(model, loss_fn, (A, x2, y), epochs, LR[name])
        images[f"{name}-assisted"] = apply(trained, x2)
        losses_by[name] = (losses, sec)
    bg = {d: ph.sector_masks[d] & ~ndimage.binary_dilation(ph.rod_masks[d], iterations=1) for d in ph.rod_masks}
    header = ["image"] + [f"{d:g} mm" for d in ph.rod_masks] + ["NRMSE %"]
    rows = []
    for name, img in images.items():
        cr = [float(js.metrics.contrast_recovery(jnp.asarray(img), jnp.asarray(truth), jnp.asarray(ph.rod_masks[d]),
                                                 jnp.asarray(bg[d]))) for d in ph.rod_masks]
        nr = float(js.metrics.nrmse(jnp.asarray(img), jnp.asarray(truth), jnp.asarray(ph.phantom_mask)))
        rows.append([name] + [f"{c:.2f}" for c in cr] + [f"{nr:.0f}"])
    print(f"\n## 3. SCNN-assisted reconstruction, hot-rod {n}x{n} ({pixel:.2f} mm pixels), {views} views, 300k counts, "
          f"{epochs} epochs on the one slice")
    print("Contrast recovery per rod diameter (1 = perfect; rods 10:1 over the background)")
    print(table(header, rows))
    print(table(["model", "final sinogram loss", "ms/epoch"],
                [[k, f"{v[0][-1]:.4f}", f"{v[1] * 1e3:.1f}"] for k, v in losses_by.items()]))
    if args.figures:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 1 + len(images), figsize=(4 * (1 + len(images)), 4))
        for a, (t, img) in zip(ax, [("truth", truth)] + list(images.items())):
            a.imshow(np.asarray(img).T, cmap="gray"); a.set_title(t)
        savefig(fig, args, "exp3_hot_rod.png")
    return images


def _ellipse_image(rng, n, max_tilt_deg):
    """Random piecewise-constant ellipses; elongated, with major axes within ``max_tilt_deg`` of
    the x axis (a training set with one dominant orientation)."""
    i = (np.arange(n) - (n - 1) / 2) / (n / 2)
    X, Y = np.meshgrid(i, i, indexing="ij")
    img = 0.3 * ((X / 0.85) ** 2 + (Y / 0.7) ** 2 <= 1)
    for _ in range(7):
        cx, cy = rng.uniform(-0.45, 0.45, 2)
        a, b = rng.uniform(0.15, 0.4), rng.uniform(0.03, 0.08)
        t = np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg))
        u = (X - cx) * np.cos(t) + (Y - cy) * np.sin(t)
        v = -(X - cx) * np.sin(t) + (Y - cy) * np.cos(t)
        img = img + rng.uniform(0.3, 0.7) * ((u / a) ** 2 + (v / b) ** 2 <= 1)
    return img.astype(np.float32)


def exp4_data_efficiency(cfg, args):
    """The papers' central claim: train on one orientation of a few images, test on rotated
    copies of held-out images (rotated clean, then noised)."""
    n, n_train, n_test, epochs, angles = cfg["n4"], cfg["train4"], cfg["test4"], cfg["epochs4"], cfg["angles4"]
    rng = np.random.default_rng(args.seed + 4)
    counts = 20.0
    clean = np.stack([_ellipse_image(rng, n, 10) for _ in range(n_train)])
    noisy = np.stack([poisson(rng, c, counts) for c in clean])
    held = [_ellipse_image(rng, n, 10) for _ in range(n_test)]
    tests = {}
    for deg in angles:
        rc = [np.clip(ndimage.rotate(h, deg, reshape=False, order=1), 0, None).astype(np.float32) for h in held]
        tests[deg] = (np.stack([poisson(rng, c, counts) for c in rc]), np.stack(rc))
    loss_fn = lambda m, d: jnp.mean((jax.vmap(m)(d[0]) - d[1]) ** 2)
    rows, curves = [], {}
    for name, model in models_2d(jax.random.key(args.seed + 4), 220.0 / n).items():
        trained, _, _, _ = train(model, loss_fn, (jnp.asarray(noisy), jnp.asarray(clean)), epochs, LR[name])
        batched = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
        mse = [float(jnp.mean((batched(trained, jnp.asarray(x)) - t) ** 2)) for x, t in tests.values()]
        curves[name] = mse
        rows.append([name] + [f"{m * 1e3:.3f}" for m in mse] + [f"{max(mse) / mse[0]:.2f}"])
    noisy_row = ["noisy input"] + [f"{np.mean((x - t) ** 2) * 1e3:.3f}" for x, t in tests.values()] + ["-"]
    print(f"\n## 4. Data efficiency: {n_train} training images {n}x{n} (ellipses within 10 deg of one orientation), "
          f"{n_test} held-out images rotated; test MSE x 1e-3, {epochs} epochs")
    print(table(["model"] + [f"{a} deg" for a in angles] + ["worst / 0 deg"], [noisy_row] + rows))
    if args.figures:
        import matplotlib.pyplot as plt

        fig, a = plt.subplots(figsize=(6, 4))
        for name, mse in curves.items():
            a.plot(angles, np.asarray(mse) * 1e3, "o-", label=name)
        a.set_xlabel("rotation of the test images (deg)"); a.set_ylabel("test MSE x 1e-3"); a.legend()
        savefig(fig, args, "exp4_rotation.png")
    return curves


def _torso(key, shape, lesions=(60.0, 20.0)):
    voxel = 380.0 / shape[0]
    return js.phantoms.torso_phantom(key, shape, (voxel,) * 3, lesion_volumes_ml=lesions), voxel


def exp5_denoising_3d(cfg, args):
    """3-D denoising: train on one noisy torso (noisy -> clean), test on two other patients."""
    shape, epochs = cfg["shape5"], cfg["epochs5"]
    rng = np.random.default_rng(args.seed + 5)
    vols = []
    for p in range(3):
        ph, voxel = _torso(args.seed * 100 + p, shape, lesions=(60.0,))
        clean = ph.activity / ph.activity[ph.masks["body"]].mean()  # body mean 1
        vols.append((poisson(rng, clean, 10.0), clean.astype(np.float32)))
    data = tuple(jnp.asarray(a) for a in vols[0])
    loss_fn = lambda m, d: jnp.mean((m(d[0]) - d[1]) ** 2)
    k = jax.random.split(jax.random.key(args.seed + 5), 3)
    models = {"SCNN": zero_last(SCNN3d(k[0], voxel_size=voxel, method="conv")), "PaperCNN": zero_last(PaperCNN(k[1])),
              "CNN small": zero_last(small_cnn(k[2], ndim=3))}
    test_mse = lambda m: np.mean([float(jnp.mean((apply(m, jnp.asarray(x)) - t) ** 2)) for x, t in vols[1:]])
    rows = [["noisy input", "-", "-", f"{np.mean([np.mean((x - t) ** 2) for x, t in vols[1:]]):.4f}", "-"]]
    for name, model in models.items():
        trained, losses, sec, _ = train(model, loss_fn, data, epochs, LR[name])
        rows.append([name, f"{count_parameters(model):,}", f"{losses[-1]:.4f}", f"{test_mse(trained):.4f}", f"{sec * 1e3:.0f}"])
    print(f"\n## 5. 3-D denoising, torso {shape} ({voxel:.1f} mm voxels), Poisson 10 counts at the body mean; "
          f"train on 1 patient, test on 2, {epochs} epochs")
    print(table(["model", "params", "train MSE", "test MSE", "ms/epoch"], rows))


def exp6_unrolled(cfg, args):
    """UnrolledEM + fit, end to end: the 3-D SCNN vs PaperCNN as g_theta on the same data."""
    shape, views, (n_train, n_test), epochs = cfg["shape6"], cfg["views6"], cfg["patients6"], cfg["epochs6"]
    psf = js.GaussianPSF(1.7, 0.072)
    phantoms, mus, truths = [], [], []
    for p in range(n_train + n_test):
        ph, voxel = _torso(args.seed * 1000 + p, shape)
        phantoms.append(ph)
    # one orbit for everybody: 10 mm outside the largest body
    probe = js.SPECTGeometry(shape, (voxel,) * 3, psf, nview=views, radii=shape[0] * voxel)
    radii = np.max([np.asarray(probe.object_extent(ph.masks["body"])) for ph in phantoms], axis=0) + 10.0
    geometry = js.SPECTGeometry(shape, (voxel,) * 3, psf, nview=views, radii=radii)
    mus = jnp.asarray(np.stack([ph.mumap for ph in phantoms]))
    ops = eqx.filter_vmap(lambda mu: js.SPECTProjector(geometry, mu))(mus)
    truths = jnp.asarray(np.stack([ph.activity for ph in phantoms]))
    keys = jax.random.split(jax.random.key(args.seed + 6), len(phantoms))
    sim = eqx.filter_jit(eqx.filter_vmap(lambda k, x, a: js.simulate(k, x, a, total_counts=3e5, scatter_fraction=0.1)))
    t0 = time.perf_counter()
    data = sim(keys, truths, ops)
    y, r = data.counts, data.background  # count units: the unrolled EM is count-scale equivariant
    x0 = eqx.filter_jit(eqx.filter_vmap(
        lambda a, y, r: js.osem(a, y, jnp.ones(shape), n_iter=6, n_subsets=4, background=r).image))(ops, y, r)
    beta = cfg["beta6"]  # dimensionless (see jaxspect.recon.UnrolledEM)
    print(f"[6: data, OSEM warm starts: {time.perf_counter() - t0:.0f} s]", flush=True)
    all_data = TrainingData(ops, y, r, x0, truths * data.scale[:, None, None, None])
    train_set, test_set = all_data.take(np.arange(n_train)), all_data.take(np.arange(n_train, n_train + n_test))
    makers = {"PaperCNN": lambda k: PaperCNN(k), "SCNN": lambda k: SCNN3d(k, voxel_size=voxel)}
    outputs, rows = {"OSEM 6x4 (x0)": x0[n_train:]}, []
    for name, make in makers.items():
        model = UnrolledEM(lambda k, make=make: zero_last(make(k)), jax.random.key(args.seed + 60), n_outer=3, n_inner=1, beta=beta)
        t = time.perf_counter()
        result = fit(model, train_set, epochs=epochs, gradient=EndToEnd(), batch_size=1, learning_rate=LR[name] if name != "SCNN" else 5e-3,
                     key=jax.random.key(args.seed + 61), log=args.verbose)
        wall = time.perf_counter() - t
        outputs[f"unrolled {name}"] = eqx.filter_jit(reconstruct_batch)(result.model, test_set)
        rows.append([name, f"{count_parameters(result.model.network):,}", f"{result.train_loss[0]:.4g}",
                     f"{result.train_loss[-1]:.4g}", f"{result.seconds_per_epoch:.1f}", f"{wall:.0f}"])
    print(f"\n## 6. Unrolled EM (3 outer x 1 inner, beta={beta:.3g}), torso {shape} ({voxel:.1f} mm), {views} views, "
          f"300k counts, {n_train} training / {n_test} test patients, {epochs} epochs end to end")
    print(table(["g_theta", "params (3 nets)", "train loss ep. 1", "train loss final", "s/epoch", "wall s"], rows))
    names = ["liver", "lesion_1", "lesion_2", "kidney_left", "spleen", "lung_left"]
    vois = [v for v in names if all(np.any(phantoms[n_train + i].masks.get(v, False)) for i in range(n_test))]
    agg = {}
    for label, xs in outputs.items():
        tables = [js.metrics.voi_table(xs[i], truths[n_train + i],
                                       {v: phantoms[n_train + i].masks[v] for v in vois}) for i in range(n_test)]
        agg[label] = {v: {c: np.mean([t[v][c] for t in tables]) for c in tables[0][v]} for v in tables[0]}
    header = ["VOI"] + [f"{lab} {c}" for lab in agg for c in ("MAE %", "NRMSE %")]
    rows = [[v] + [f"{agg[lab][v][c]:.1f}" for lab in agg for c in ("MAE %", "NRMSE %")] for v in vois]
    rows.append(["image"] + [x for lab in agg for x in ("", f"{agg[lab]['image']['NRMSE %']:.1f}")])
    print(f"Per-VOI figures on the test patients (mean over {n_test}; images normalised to 1 MBq per FOV):")
    print(table(header, rows))
    first = {lab: js.metrics.voi_table(xs[0], truths[n_train], {v: phantoms[n_train].masks[v] for v in vois})
             for lab, xs in outputs.items()}
    print("\nFirst test patient, unrolled SCNN (jaxspect.metrics.format_table):")
    print(js.metrics.format_table(first["unrolled SCNN"]))
    return agg


EXPERIMENTS = {1: exp1_denoising, 2: exp2_reconstruction, 3: exp3_hot_rod, 4: exp4_data_efficiency,
               5: exp5_denoising_3d, 6: exp6_unrolled}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a few minutes)")
    parser.add_argument("--only", default="1,2,3,4,5,6", help="comma-separated experiment numbers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figures", default=None, help="directory for PNG figures (matplotlib)")
    parser.add_argument("--verbose", action="store_true", help="per-epoch log of the unrolled-EM training")
    args = parser.parse_args(argv)
    try:
        selected = [int(s) for s in args.only.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--only takes comma-separated numbers 1-6, got {args.only!r}")
    bad = [s for s in selected if s not in EXPERIMENTS]
    if bad:
        parser.error(f"--only: unknown experiment(s) {bad}; choose from 1-6")
    if args.figures:
        os.environ.setdefault("MPLBACKEND", "Agg")
    cfg = QUICK if args.quick else FULL
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {'quick' if args.quick else 'full'} sizes")
    total = time.perf_counter()
    for i in selected:
        t = time.perf_counter()
        EXPERIMENTS[i](cfg, args)
        print(f"[experiment {i}: {time.perf_counter() - t:.0f} s]", flush=True)
    print(f"\ntotal {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
