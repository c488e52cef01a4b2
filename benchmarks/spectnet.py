"""SPECTnet (Shao, Rowe & Du 2021) on this machine: two-stage training, the one-step end-to-end
comparison, and evaluation against OSEM on held-out phantoms (noise-free and noisy).

    python benchmarks/spectnet.py            # default: ~25 min on 2 quiet CPU cores
    python benchmarks/spectnet.py --quick    # tiny smoke run (64 x 64 images), < 3 min
    python benchmarks/spectnet.py --full     # the paper's sizes (16,000/2,000/2,000 phantoms,
                                             # 50/20/19 epochs, batch 160, 300 end-to-end
                                             # epochs): an accelerator job, days on a CPU

Everything is seeded (``--seed``). Prints the data/training sizes, training time and validation
curve of every stage, the eq. (3) mean absolute errors in the high-uptake and background regions
for SPECTnet (two-stage), the end-to-end-trained network and OSEM (12 subsets, the iteration with
the lowest MSE per case, attenuation and resolution modelled), and a Table-1-style table of
region means (SD) for phantoms with uptake 4, 5, 6, 7, 9.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jaxspect as js  # noqa: E402
from jaxspect.spectnet import (  # noqa: E402
    SPECTnet,
    build,
    reconstruct,
    CLINICAL_COUNTS_PER_SLICE,
    PhantomSet,
    TrainingConfig,
    spectnet_geometry,
    split_keys,
    train_end_to_end,
    train_two_stage,
)

TABLE_UPTAKES = (4.0, 5.0, 6.0, 7.0, 9.0)

SIZES = {
    # image, pixel mm, views, train, val, test (eq. 3), OSEM max iterations, epochs (AE, proj, FT, E2E), batch
    "quick": dict(image=64, pixel=4.0, nview=60, train=48, val=16, test=4, osem_iter=4, lr=1e-3,
                  epochs=(2, 2, 2, 3), batch=16, channels=None, decoder_channels=8, projection_batch=16),
    "default": dict(image=128, pixel=2.0, nview=120, train=1024, val=128, test=32, osem_iter=20, lr=1e-3,
                    epochs=(12, 8, 6, 14), batch=32, channels=(16, 32, 64, 128, 256), decoder_channels=8,
                    projection_batch=32),
    "full": dict(image=128, pixel=2.0, nview=120, train=16000, val=2000, test=2000, osem_iter=30, lr=1e-4,
                 epochs=(50, 20, 19, 300), batch=160, channels=None, decoder_channels=16, projection_batch=32),
}


@eqx.filter_jit
def _osem_iteration(geometry, mumaps, views, images, n_subsets):
    def one(mu, y, x):
        projector = js.SPECTProjector(geometry, mu[..., None])
        return js.osem(projector, y, x[..., None], n_iter=1, n_subsets=n_subsets).image[..., 0]

    return jax.vmap(one)(mumaps, views, images)


def osem_best(geometry, sinograms, mumaps, truth, *, max_iter, n_subsets=12, chunk=16):
    """OSEM from a uniform image, keeping per case the iterate with the lowest MSE to ``truth``
    (the paper's protocol). Returns images ``(B, n, n)`` and the chosen iteration numbers."""
    best_images, best_iters = [], []
    for b in range(0, sinograms.shape[0], chunk):
        s, mu, t = sinograms[b : b + chunk], mumaps[b : b + chunk], truth[b : b + chunk]
        views = jnp.swapaxes(s, 1, 2)[:, :, None, :]  # (B, n, 1, nview)
        x = jnp.ones_like(t)
        best = x
        best_mse = jnp.full(t.shape[0], jnp.inf)
        best_k = np.zeros(t.shape[0], int)
        for k in range(1, max_iter + 1):
            x = _osem_iteration(geometry, mu, views, x, n_subsets)
            mse = jnp.mean((x - t) ** 2, axis=(1, 2))
            better = mse < best_mse
            best = jnp.where(better[:, None, None], x, best)
            best_mse = jnp.where(better, mse, best_mse)
            best_k = np.where(np.asarray(better), k, best_k)
        best_images.append(best)
        best_iters.append(best_k)
    return jnp.concatenate(best_images), np.concatenate(best_iters)


def region_errors(images, truth, high, background):
    """Eq. (3) per case: mean |true - rec| over the high-uptake and background regions."""
    err = np.abs(np.asarray(images) - np.asarray(truth))
    high, background = np.asarray(high), np.asarray(background)
    e_high = np.array([e[m].mean() for e, m in zip(err, high)])
    e_bg = np.array([e[m].mean() for e, m in zip(err, background)])
    return e_high, e_bg


def region_stats(image, mask):
    v = np.asarray(image)[np.asarray(mask)]
    return v.mean(), v.std()


def evaluate(name, test: PhantomSet, table: PhantomSet, networks: dict, geometry, max_iter, chunk):
    """Eq. (3) errors on ``test`` and the Table-1 region means on ``table`` for every network
    and OSEM. Returns the OSEM time."""
    print(f"\n=== {name} data ({'no noise' if test.count_level is None else f'Poisson, {test.count_level:.0e} counts per sinogram'}) ===")
    results = {}
    for label, data in (("test", test), ("table", table)):
        idx = np.arange(data.size)
        batch = data.batch(idx)
        sino = data.sinograms(idx)
        recs = {k: reconstruct(m, sino, batch.mumap) for k, m in networks.items()}
        t0 = time.perf_counter()
        osem_images, iters = osem_best(geometry, sino, batch.mumap, batch.activity, max_iter=max_iter, chunk=chunk)
        osem_seconds = time.perf_counter() - t0
        recs["OSEM"] = osem_images
        results[label] = (batch, recs, iters, osem_seconds)

    batch, recs, iters, osem_seconds = results["test"]
    print(f"OSEM on {test.size} test cases: {osem_seconds:.1f} s; best iteration per case: "
          f"median {np.median(iters):.0f}, range {iters.min()}-{iters.max()} (cap {max_iter})")
    print(f"Eq. (3) mean absolute error over {test.size} test phantoms (mean +- SD over cases):")
    print(f"{'method':<22}{'high-uptake':>18}{'background':>18}{'image MSE':>12}")
    for k, img in recs.items():
        e_high, e_bg = region_errors(img, batch.activity, batch.high_uptake, batch.background)
        mse = float(jnp.mean((img - batch.activity) ** 2))
        print(f"{k:<22}{e_high.mean():>10.3f} +- {e_high.std():<5.3f}{e_bg.mean():>10.3f} +- {e_bg.std():<5.3f}{mse:>12.4f}")

    batch, recs, iters, _ = results["table"]
    methods = list(recs)
    print("\nTable-1-style region means (SD), one phantom per uptake value:")
    head = "".join(f"{m[:14]:>16}" for m in methods)
    print(f"{'case':<6}{'true':>6}  high-uptake:{head}  |  background:{head}")
    for i in range(batch.activity.shape[0]):
        true = float(np.asarray(batch.activity[i])[np.asarray(batch.high_uptake[i])].mean())
        hi = "".join("%16s" % ("%.2f (%.2f)" % region_stats(recs[m][i], batch.high_uptake[i])) for m in methods)
        bg = "".join("%16s" % ("%.2f (%.2f)" % region_stats(recs[m][i], batch.background[i])) for m in methods)
        print(f"{i + 1:<6}{true:>6.1f}  {'':12}{hi}  |  {'':11}{bg}")
    print(f"(OSEM iterations chosen: {[int(i) for i in iters]})")
    return osem_seconds + results["table"][3]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny smoke run (< 3 min)")
    mode.add_argument("--full", action="store_true", help="the paper's sizes (accelerator)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam learning rate (default: 1e-4, the paper's, with --full; 1e-3 otherwise, "
                             "because the CPU-sized runs take ~30x fewer steps per stage)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the one-step comparison")
    parser.add_argument("--save", default=None, help="write the trained SPECTnet here")
    args = parser.parse_args(argv)
    size_name = "quick" if args.quick else "full" if args.full else "default"
    s = dict(SIZES[size_name])
    e_ae, e_proj, e_ft, e_e2e = s["epochs"]
    config = TrainingConfig(batch_size=args.batch_size or s["batch"],
                            learning_rate=args.learning_rate or s["lr"],
                            epochs_autoencoder=e_ae, epochs_projection=e_proj, epochs_fine_tune=e_ft,
                            epochs_end_to_end=e_e2e)
    t_start = time.perf_counter()
    geometry = spectnet_geometry(image_size=s["image"], pixel_size=s["pixel"], nview=s["nview"])
    print(f"SPECTnet benchmark, size '{size_name}', seed {args.seed}, jax {jax.__version__} on "
          f"{jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
    print(f"data: {s['image']}x{s['image']} pixels of {s['pixel']} mm, {s['nview']} views over 360 deg padded to "
          f"{s['image']} rows, orbit radius {float(geometry.radii[0]):.0f} mm, LEHR Gaussian PSF "
          f"fwhm0 {float(geometry.psf.fwhm0):.2f} mm slope {float(geometry.psf.slope):.4f}; "
          f"phantoms train/val/test {s['train']}/{s['val']}/{s['test']} (+{len(TABLE_UPTAKES)} table cases)")
    print(f"training: {dataclasses.asdict(config)}; encoder channels "
          f"{s['channels'] or 'paper layout'}, decoder channels {s['decoder_channels']}")

    key = jax.random.key(args.seed)
    k_train, k_val, k_test = split_keys(key)
    pb = s["projection_batch"]
    train = PhantomSet(k_train, s["train"], geometry, projection_batch=pb)
    val = PhantomSet(k_val, s["val"], geometry, projection_batch=pb)
    test = PhantomSet(k_test, s["test"], geometry, projection_batch=pb)
    table = PhantomSet(jax.random.fold_in(key, 3), len(TABLE_UPTAKES), geometry, uptake=TABLE_UPTAKES,
                       projection_batch=pb)
    t0 = time.perf_counter()
    for d in (train, val, test, table):
        d.fill_cache()
    print(f"projection of {s['train'] + s['val'] + s['test'] + len(TABLE_UPTAKES)} phantoms: "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    k_model, k_e2e, k_e2e_train = jax.random.split(jax.random.fold_in(key, 10), 3)
    result = train_two_stage(k_model, train, val, config=config, encoder_channels=s["channels"],
                             decoder_channels=s["decoder_channels"], log=True)
    stages = {"autoencoder": result.autoencoder, "projection network": result.projection,
              "fine-tune": result.fine_tune}
    networks = {"SPECTnet (joined)": result.joined, "SPECTnet (fine-tuned)": result.model}
    if not args.no_end_to_end:
        e2e_model = build(SPECTnet, k_e2e, image_size=s["image"], encoder_channels=s["channels"],
                          decoder_channels=s["decoder_channels"])
        e2e = train_end_to_end(e2e_model, train, val, config=config, key=k_e2e_train, log=True)
        stages["end-to-end (one step)"] = e2e
        networks["end-to-end"] = e2e.model
    print("\n=== training summary ===")
    print(f"{'stage':<24}{'epochs':>7}{'steps':>7}{'seconds':>9}{'best epoch':>11}  validation curve")
    for k, r in stages.items():
        curve = " ".join(f"{v:.4g}" for v in r.val_metric)
        print(f"{k:<24}{len(r.val_metric):>7}{r.steps:>7}{r.seconds:>9.1f}{r.best_epoch + 1:>11}  {r.metric_name}: {curve}")
    two_stage_steps = sum(r.steps for k, r in stages.items() if k != "end-to-end (one step)")
    two_stage_seconds = sum(r.seconds for k, r in stages.items() if k != "end-to-end (one step)")
    print(f"two-stage total: {two_stage_steps} steps, {two_stage_seconds:.1f} s")
    if args.save:
        js.save_model(args.save, result.model)
        print(f"saved the fine-tuned SPECTnet to {args.save}")

    chunk = 16
    osem_seconds = evaluate("noise-free", test, table, networks, geometry, s["osem_iter"], chunk)
    osem_seconds += evaluate("noisy", test.with_count_level(CLINICAL_COUNTS_PER_SLICE),
                             table.with_count_level(CLINICAL_COUNTS_PER_SLICE), networks, geometry,
                             s["osem_iter"], chunk)
    print(f"\nOSEM total {osem_seconds:.1f} s; whole benchmark {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
