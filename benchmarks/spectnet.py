"""SPECTnet (Shao, Rowe & Du 2021) against an honest OSEM baseline.

    python -m benchmarks.spectnet              # default: 128 x 128, ~1 h on 2 quiet CPU cores
    python -m benchmarks.spectnet --small      # 64 x 64, 256/48/24 phantoms, ~10 min
    python -m benchmarks.spectnet --quick      # tiny smoke run (64 x 64, a few phantoms), < 3 min
    python -m benchmarks.spectnet --full       # the paper's sizes (16,000/2,000/2,000 phantoms,
                                               # 50/20/19 epochs, batch 160): an accelerator job
    python -m benchmarks.spectnet --small --ablation --patience 3   # L2 x learning-rate grid, ~25 min
    python -m benchmarks.spectnet --autoencoder --oversample 1   # the paper's autoencoder
                                               # (128 x 128 layout) until its validation MSE
                                               # plateaus, next to the paper's 0.076

No inverse crime: every data set is simulated on a grid ``--oversample`` (2) times finer than
the reconstruction grid (phantoms generated at that resolution from the same keys, projected with
the finer geometry, detector bins merged), with Poisson noise at ``--count-level`` (1e5, a
clinical brain slice) expected counts per sinogram; the networks train on such data and OSEM
reconstructs with the coarse model (attenuation and the LEHR response modelled, 12 subsets). The
OSEM iteration (at most 15) is the one with the lowest mean MSE on the *validation* phantoms,
then applied to every test phantom; the per-case best iteration (the paper's protocol, which
picks against the test truth) is printed only as a labelled oracle bound. Test errors are the
eq. (3) mean absolute errors in the high-uptake and background regions (and the image MSE),
averaged over the test phantoms, reported as mean +- std over ``--realisations`` (3) independent
noise realisations of the test set; every table says where SPECTnet beats OSEM (the paired
difference more than 2 std below zero), where it loses (more than 2 std above) and where the two
are within noise.

Everything is seeded (``--seed``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxspect as js
from jaxspect.spectnet import (
    CLINICAL_COUNTS_PER_SLICE,
    Autoencoder,
    PhantomSet,
    SPECTnet,
    TrainingConfig,
    build,
    count_network_parameters,
    reconstruct,
    spectnet_geometry,
    split_keys,
    train_autoencoder,
    train_end_to_end,
    train_two_stage,
)

TABLE_UPTAKES = (4.0, 5.0, 6.0, 7.0, 9.0)
PAPER_AE_MSE = (0.076, 0.025)  # the paper's autoencoder: validation MSE, mean (SD) over 2,000 images
OSEM_SUBSETS = 12
OSEM_CAP = 15  # the paper's OSEM used 5-15 iterations
ABLATION_L2 = (0.0, 1e-3, 0.08)
ABLATION_LR = (1e-4, 1e-3)

SIZES = {
    # image, pixel mm, views, phantoms train/val/test, learning rate, epochs (AE, proj, FT, E2E), batch
    "quick": dict(image=64, pixel=4.0, nview=60, train=48, val=16, test=4, lr=1e-3, epochs=(2, 2, 2, 3),
                  batch=16, channels=None, decoder_channels=8, projection_batch=16),
    "small": dict(image=64, pixel=4.0, nview=60, train=256, val=48, test=24, lr=1e-3, epochs=(20, 8, 6, 10),
                  batch=16, channels=None, decoder_channels=8, projection_batch=32),
    "default": dict(image=128, pixel=2.0, nview=120, train=1024, val=128, test=32, lr=1e-3,
                    epochs=(12, 8, 6, 14), batch=32, channels=(16, 32, 64, 128, 256), decoder_channels=8,
                    projection_batch=32),
    "full": dict(image=128, pixel=2.0, nview=120, train=16000, val=2000, test=2000, lr=1e-4,
                 epochs=(50, 20, 19, 300), batch=160, channels=None, decoder_channels=16, projection_batch=32),
}


# --- OSEM --------------------------------------------------------------------------------------


@eqx.filter_jit
def _osem_iteration(geometry, mumaps, views, images, n_subsets):
    def one(mu, y, x):
        projector = js.SPECTProjector(geometry, mu[..., None])
        return js.osem(projector, y, x[..., None], n_iter=1, n_subsets=n_subsets).image[..., 0]

    return jax.vmap(one)(mumaps, views, images)


def osem_path(geometry, sinograms, mumaps, truth, *, max_iter, keep=None, n_subsets=OSEM_SUBSETS, chunk=16):
    """OSEM from a uniform image for ``max_iter`` iterations.

    Returns ``(mse, kept, oracle)``: the per-case MSE to ``truth`` after every iteration
    ``(max_iter, B)``, the images after iteration ``keep`` (or ``None``) and the per-case
    lowest-MSE iterates (an oracle: it picks with the test truth).
    """
    mses, kept, oracle = [], [], []
    total = sinograms.shape[0]
    for b in range(0, total, chunk):
        # Full chunks only (the last one padded with repeats), so one compilation serves all.
        take = np.minimum(np.arange(b, b + chunk), total - 1)
        s, mu, t = sinograms[take], mumaps[take], truth[take]
        views = jnp.swapaxes(s, 1, 2)[:, :, None, :]  # (B, n, 1, nview)
        x = jnp.ones_like(t)
        best, best_mse, curve, at_keep = x, jnp.full(t.shape[0], jnp.inf), [], None
        for k in range(1, max_iter + 1):
            x = _osem_iteration(geometry, mu, views, x, n_subsets)
            mse = jnp.mean((x - t) ** 2, axis=(1, 2))
            better = mse < best_mse
            best = jnp.where(better[:, None, None], x, best)
            best_mse = jnp.where(better, mse, best_mse)
            curve.append(np.asarray(mse))
            if k == keep:
                at_keep = x
        mses.append(np.stack(curve))
        oracle.append(best)
        kept.append(at_keep)
    return (np.concatenate(mses, axis=1)[:, :total], None if keep is None else jnp.concatenate(kept)[:total],
            jnp.concatenate(oracle)[:total])


def choose_osem_iteration(geometry, val: PhantomSet, *, cap=OSEM_CAP, chunk=16):
    """The OSEM iteration (1..cap) with the lowest mean MSE over the validation phantoms."""
    idx = np.arange(val.size)
    batch = val.batch(idx, sinograms=False)
    mse, _, _ = osem_path(geometry, val.sinograms(idx), batch.mumap, batch.activity, max_iter=cap, chunk=chunk)
    curve = mse.mean(axis=1)
    return int(np.argmin(curve)) + 1, curve


# --- metrics -----------------------------------------------------------------------------------


def region_errors(images, truth, high, background):
    """Eq. (3) per case: mean |true - rec| over the high-uptake and background regions."""
    err = np.abs(np.asarray(images) - np.asarray(truth))
    high, background = np.asarray(high), np.asarray(background)
    e_high = np.array([e[m].mean() for e, m in zip(err, high)])
    e_bg = np.array([e[m].mean() for e, m in zip(err, background)])
    return e_high, e_bg


METRICS = ("high-uptake MAE", "background MAE", "image MSE")


def evaluate_test(test: PhantomSet, networks: dict, geometry, *, osem_iteration=None, realisations, chunk=16):
    """Per method an array ``(realisations, 3)``: eq. (3) MAE high-uptake, background and image
    MSE, each averaged over the test phantoms, one row per noise realisation of the test set.
    Methods: the networks and, with ``osem_iteration``, OSEM at that iteration and the per-case
    oracle OSEM."""
    idx = np.arange(test.size)
    osem_names = () if osem_iteration is None else (f"OSEM ({osem_iteration} it., val-chosen)",
                                                    "OSEM oracle (test truth)")
    out = {k: [] for k in (*networks, *osem_names)}
    for r in range(realisations):
        data = test.with_count_level(test.count_level, realisation=r)
        batch = data.batch(idx, sinograms=False)
        sino = data.sinograms(idx)
        recs = {k: reconstruct(m, sino, batch.mumap) for k, m in networks.items()}
        if osem_iteration is not None:
            _, at_k, oracle = osem_path(geometry, sino, batch.mumap, batch.activity, max_iter=OSEM_CAP,
                                        keep=osem_iteration, chunk=chunk)
            recs.update(zip(osem_names, (at_k, oracle)))
        for k, img in recs.items():
            e_high, e_bg = region_errors(img, batch.activity, batch.high_uptake, batch.background)
            mse = float(jnp.mean((img - batch.activity) ** 2))
            out[k].append((e_high.mean(), e_bg.mean(), mse))
    return {k: np.asarray(v) for k, v in out.items()}


def pm(values) -> str:
    values = np.asarray(values)
    return f"{values.mean():.3f} +- {values.std(ddof=1) if values.size > 1 else 0.0:.3f}"


def verdict(net, osem) -> str:
    """Paired over realisations: 'beats' / 'loses' / 'within noise' (difference vs 2 std)."""
    d = np.asarray(net) - np.asarray(osem)
    sd = d.std(ddof=1) if d.size > 1 else 0.0
    word = "beats" if d.mean() < -2 * sd else "loses" if d.mean() > 2 * sd else "within noise"
    return f"{word} ({d.mean():+.3f} +- {sd:.3f})"


def print_test_table(results: dict, osem_key: str, networks: list, realisations: int, n_test: int):
    print(f"Test errors over {n_test} phantoms, mean +- std over {realisations} noise realisations:")
    print(f"{'method':<34}" + "".join(f"{m:>20}" for m in METRICS))
    for k, v in results.items():
        print(f"{k:<34}" + "".join(f"{pm(v[:, i]):>20}" for i in range(3)))
    print(f"Against {osem_key} (network - OSEM, paired over realisations; 'beats' = more than 2 std better):")
    for k in networks:
        print(f"  {k:<32}" + "".join(f"  {m}: {verdict(results[k][:, i], results[osem_key][:, i])}"
                                     for i, m in enumerate(METRICS)))


def image_mse_spread(model: Autoencoder, data: PhantomSet, batch_size: int):
    """Per-image MSE of the autoencoder over ``data``: (mean, SD) over images, as the paper reports."""
    values = []
    for b in data.batches(batch_size, sinograms=False):
        rec = model(b.activity, training=False)[0]
        values.append(np.asarray(jnp.mean((rec - b.activity) ** 2, axis=(1, 2))))
    values = np.concatenate(values)
    return values.mean(), values.std()


# --- modes -------------------------------------------------------------------------------------


def make_data(key, s, geometry, args, *, table=False):
    k_train, k_val, k_test = split_keys(key)
    common = dict(oversample=args.oversample, count_level=args.count_level, projection_batch=s["projection_batch"])
    sets = dict(train=PhantomSet(k_train, s["train"], geometry, **common),
                val=PhantomSet(k_val, s["val"], geometry, **common),
                test=PhantomSet(k_test, s["test"], geometry, **common))
    if table:
        sets["table"] = PhantomSet(jax.random.fold_in(key, 3), len(TABLE_UPTAKES), geometry, uptake=TABLE_UPTAKES,
                                   **common)
    return sets


def run_autoencoder(args, s, config):
    """The paper's autoencoder layout (128 x 128, 2-mm pixels) until its validation MSE plateaus."""
    geometry = spectnet_geometry(image_size=128, pixel_size=2.0, nview=120)
    key = jax.random.key(args.seed)
    data = make_data(key, s, geometry, args)
    model = build(Autoencoder, jax.random.fold_in(key, 10), image_size=128)
    print(f"autoencoder at the paper's layout (encoder channels 64, 64, 128, 128, 256; hidden 2048; decoder "
          f"16 filters), {count_network_parameters(model):,} parameters; train/val "
          f"{s['train']}/{s['val']} phantoms, {'paper phantoms (3 values)' if args.oversample == 1 else f'truth = {args.oversample}x{args.oversample} block means'}")
    r = train_autoencoder(model, data["train"], data["val"], config=config, key=jax.random.fold_in(key, 11), log=True)
    mean, sd = image_mse_spread(r.model, data["val"], config.batch_size)
    print(f"\nautoencoder: {len(r.val_metric)} epochs (cap {config.epochs_autoencoder}, patience "
          f"{config.patience}), {r.steps} steps, {r.seconds:.0f} s; best epoch {r.best_epoch + 1}")
    print("validation MSE curve: " + " ".join(f"{v:.4g}" for v in r.val_metric))
    print(f"validation MSE per image (activity units^2, background 1, uptake 3-9): {mean:.4f} (SD {sd:.4f}) over "
          f"{s['val']} images; the paper: {PAPER_AE_MSE[0]} (SD {PAPER_AE_MSE[1]}) over 2,000")


def run_ablation(args, s, config, geometry, data):
    """The L2 x learning-rate grid for the two-stage training."""
    osem_k, curve = choose_osem_iteration(geometry, data["val"])
    print(f"OSEM iteration chosen on {data['val'].size} validation phantoms: {osem_k} "
          f"(mean MSE per iteration: {' '.join(f'{v:.3f}' for v in curve)})", flush=True)
    osem = evaluate_test(data["test"], {}, geometry, osem_iteration=osem_k, realisations=args.realisations)
    osem_key = next(k for k in osem if k.startswith("OSEM ("))
    print(f"{osem_key}: test MAE high {pm(osem[osem_key][:, 0])}, background {pm(osem[osem_key][:, 1])}", flush=True)
    rows = []
    for l2 in args.ablation_l2:
        for lr in args.ablation_lr:
            cell = dataclasses.replace(config, l2=l2, learning_rate=lr)
            t0 = time.perf_counter()
            r = train_two_stage(jax.random.fold_in(jax.random.key(args.seed), 10), data["train"], data["val"],
                                config=cell, encoder_channels=s["channels"], decoder_channels=s["decoder_channels"])
            res = evaluate_test(data["test"], {"SPECTnet": r.model}, geometry, realisations=args.realisations)
            rows.append((l2, lr, r, res, time.perf_counter() - t0))
            ep = "/".join(str(len(x.val_metric)) for x in (r.autoencoder, r.projection, r.fine_tune))
            print(f"cell l2={l2:g} lr={lr:g}: epochs {ep}, {time.perf_counter() - t0:.0f} s; AE val MSE "
                  f"{r.autoencoder.val_metric.min():.4f}, fine-tune val MSE {r.fine_tune.val_metric.min():.4f}; "
                  f"test MAE high {pm(res['SPECTnet'][:, 0])}, background {pm(res['SPECTnet'][:, 1])}", flush=True)
    n = args.realisations
    print(f"\n=== L2 x learning-rate ablation (two-stage training; test: {data['test'].size} phantoms x {n} noise "
          f"realisations, mean +- std over realisations) ===")
    print(f"{'L2':>7}{'lr':>8}{'AE val MSE':>12}{'FT val MSE':>12}{'high-uptake MAE':>18}{'background MAE':>18}"
          f"{'image MSE':>18}   vs OSEM: high / background")
    for l2, lr, r, res, _ in rows:
        v = res["SPECTnet"]
        print(f"{l2:>7g}{lr:>8g}{r.autoencoder.val_metric.min():>12.4f}{r.fine_tune.val_metric.min():>12.4f}"
              + "".join(f"{pm(v[:, i]):>18}" for i in range(3))
              + f"   {verdict(v[:, 0], osem[osem_key][:, 0])} / {verdict(v[:, 1], osem[osem_key][:, 1])}")
    for k in (osem_key, "OSEM oracle (test truth)"):
        v = osem[k]
        print(f"{k:>39}" + "".join(f"{pm(v[:, i]):>18}" for i in range(3)))


def run_main(args, s, config, geometry, data):
    key = jax.random.key(args.seed)
    k_model, k_e2e, k_e2e_train = jax.random.split(jax.random.fold_in(key, 10), 3)
    result = train_two_stage(k_model, data["train"], data["val"], config=config, encoder_channels=s["channels"],
                             decoder_channels=s["decoder_channels"], log=True)
    stages = {"autoencoder": result.autoencoder, "projection network": result.projection,
              "fine-tune": result.fine_tune}
    networks = {"SPECTnet (joined)": result.joined, "SPECTnet (fine-tuned)": result.model}
    if not args.no_end_to_end:
        e2e_model = build(SPECTnet, k_e2e, image_size=s["image"], encoder_channels=s["channels"],
                          decoder_channels=s["decoder_channels"])
        e2e = train_end_to_end(e2e_model, data["train"], data["val"], config=config, key=k_e2e_train, log=True)
        stages["end-to-end (one step)"] = e2e
        networks["end-to-end"] = e2e.model
    print("\n=== training summary ===")
    print(f"{'stage':<24}{'epochs':>7}{'steps':>7}{'seconds':>9}{'best epoch':>11}  validation curve")
    for k, r in stages.items():
        curve = " ".join(f"{v:.4g}" for v in r.val_metric)
        print(f"{k:<24}{len(r.val_metric):>7}{r.steps:>7}{r.seconds:>9.1f}{r.best_epoch + 1:>11}  {r.metric_name}: {curve}")
    ae_mean, ae_sd = image_mse_spread(result.autoencoder.model, data["val"], config.batch_size)
    print(f"autoencoder validation MSE per image {ae_mean:.4f} (SD {ae_sd:.4f}) (activity units^2; the paper's, "
          f"at its layout and 128 x 128: {PAPER_AE_MSE[0]} (SD {PAPER_AE_MSE[1]}))")
    if args.save:
        js.save_model(args.save, result.model)
        print(f"saved the fine-tuned SPECTnet to {args.save}")

    t0 = time.perf_counter()
    osem_k, curve = choose_osem_iteration(geometry, data["val"])
    print(f"\nOSEM iteration chosen on {data['val'].size} validation phantoms: {osem_k} "
          f"(mean MSE per iteration 1..{OSEM_CAP}: {' '.join(f'{v:.3f}' for v in curve)})")
    results = evaluate_test(data["test"], networks, geometry, osem_iteration=osem_k, realisations=args.realisations)
    osem_key = next(k for k in results if k.startswith("OSEM ("))
    print_test_table(results, osem_key, list(networks), args.realisations, data["test"].size)

    table = data["table"]
    batch = table.batch(np.arange(table.size), sinograms=False)
    sino = table.sinograms(np.arange(table.size))
    recs = {k: reconstruct(m, sino, batch.mumap) for k, m in networks.items()}
    _, recs[f"OSEM ({osem_k} it.)"], _ = osem_path(geometry, sino, batch.mumap, batch.activity, max_iter=osem_k,
                                                   keep=osem_k)
    print("\nTable-1-style region means (SD), one phantom per uptake value (noise realisation 0):")
    stats = lambda img, m: "%.2f (%.2f)" % (np.asarray(img)[np.asarray(m)].mean(), np.asarray(img)[np.asarray(m)].std())
    head = "".join(f"{m[:14]:>16}" for m in recs)
    print(f"{'case':<6}{'true':>6}  high-uptake:{head}  |  background:{head}")
    for i in range(table.size):
        true = float(np.asarray(batch.activity[i])[np.asarray(batch.high_uptake[i])].mean())
        hi = "".join("%16s" % stats(recs[m][i], batch.high_uptake[i]) for m in recs)
        bg = "".join("%16s" % stats(recs[m][i], batch.background[i]) for m in recs)
        print(f"{i + 1:<6}{true:>6.2f}  {'':12}{hi}  |  {'':11}{bg}")
    print(f"(OSEM evaluation {time.perf_counter() - t0:.1f} s)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny smoke run (< 3 min)")
    mode.add_argument("--small", action="store_true", help="64 x 64 images, a few hundred phantoms")
    mode.add_argument("--full", action="store_true", help="the paper's sizes (accelerator)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--ablation", action="store_true",
                      help="L2 {0, 1e-3, 0.08} x learning rate {1e-4, 1e-3} grid of the two-stage training")
    what.add_argument("--autoencoder", action="store_true",
                      help="only the autoencoder, at the paper's 128 x 128 layout, until its validation MSE plateaus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam learning rate (default: 1e-4, the paper's, with --full; 1e-3 otherwise, "
                             "because the CPU-sized runs take ~30x fewer steps per stage)")
    parser.add_argument("--l2", type=float, default=0.08, help="L2 regularisation factor (the paper's 0.08)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, nargs=4, default=None, metavar=("AE", "PROJ", "FT", "E2E"),
                        help="epochs (caps with --patience) of the autoencoder, projection network, fine-tuning "
                             "and end-to-end training")
    parser.add_argument("--patience", type=int, default=None,
                        help="stop a stage when its best validation metric has not improved by >1%% in this "
                             "many epochs (default: 5 with --autoencoder, else off)")
    parser.add_argument("--train", type=int, default=None, help="training phantoms (default: the size's)")
    parser.add_argument("--val", type=int, default=None, help="validation phantoms")
    parser.add_argument("--test", type=int, default=None, help="test phantoms")
    parser.add_argument("--oversample", type=int, default=2,
                        help="simulate on a grid this many times finer and bin down (1: the inverse crime)")
    parser.add_argument("--count-level", type=float, default=CLINICAL_COUNTS_PER_SLICE,
                        help="expected counts per sinogram (Poisson noise)")
    parser.add_argument("--realisations", type=int, default=3, help="noise realisations of the test set")
    parser.add_argument("--ablation-l2", type=float, nargs="+", default=ABLATION_L2)
    parser.add_argument("--ablation-lr", type=float, nargs="+", default=ABLATION_LR)
    parser.add_argument("--no-end-to-end", action="store_true", help="skip the one-step comparison")
    parser.add_argument("--save", default=None, help="write the trained SPECTnet here")
    args = parser.parse_args(argv)
    if args.oversample < 1 or args.realisations < 1 or not args.count_level > 0:
        parser.error("--oversample and --realisations must be >= 1 and --count-level > 0")
    size_name = "quick" if args.quick else "small" if args.small else "full" if args.full else "default"
    s = dict(SIZES[size_name])
    for name in ("train", "val", "test"):
        if getattr(args, name):
            s[name] = getattr(args, name)
    e_ae, e_proj, e_ft, e_e2e = args.epochs or s["epochs"]
    patience = args.patience if args.patience is not None else (5 if args.autoencoder else None)
    config = TrainingConfig(batch_size=args.batch_size or s["batch"], learning_rate=args.learning_rate or s["lr"],
                            l2=args.l2, epochs_autoencoder=e_ae, epochs_projection=e_proj, epochs_fine_tune=e_ft,
                            epochs_end_to_end=e_e2e, patience=patience)
    t_start = time.perf_counter()
    geometry = spectnet_geometry(image_size=s["image"], pixel_size=s["pixel"], nview=s["nview"])
    print(f"SPECTnet benchmark, size '{size_name}', seed {args.seed}, jax {jax.__version__} on "
          f"{jax.devices()[0].platform}, {os.cpu_count()} CPU cores")
    if args.autoencoder:
        print(f"training: {dataclasses.asdict(config)}", flush=True)
        run_autoencoder(args, s, config)
        print(f"\nwhole benchmark {time.perf_counter() - t_start:.1f} s")
        return
    simulation = (f"simulated {args.oversample}x finer ({s['pixel'] / args.oversample:g}-mm pixels and bins, binned "
                  f"down)" if args.oversample > 1 else "simulated with the reconstruction's own model (inverse crime)")
    print(f"reconstruction grid: {s['image']}x{s['image']} pixels of {s['pixel']} mm, {s['nview']} views over 360 deg "
          f"padded to {s['image']} rows, orbit radius {float(geometry.radii[0]):.0f} mm, LEHR Gaussian PSF "
          f"fwhm0 {float(geometry.psf.fwhm0):.2f} mm slope {float(geometry.psf.slope):.4f}")
    print(f"data: {simulation}, Poisson noise at {args.count_level:.0e} counts per sinogram; phantoms train/val/test "
          f"{s['train']}/{s['val']}/{s['test']}; OSEM {OSEM_SUBSETS} subsets, iteration chosen on validation "
          f"(cap {OSEM_CAP})")
    print(f"training{' (l2 and learning_rate per ablation cell)' if args.ablation else ''}: "
          f"{dataclasses.asdict(config)}; encoder channels {s['channels'] or 'layout of the image size'}, "
          f"decoder channels {s['decoder_channels']}", flush=True)
    data = make_data(jax.random.key(args.seed), s, geometry, args, table=not args.ablation)
    t0 = time.perf_counter()
    for d in data.values():
        d.fill_cache()
    print(f"simulation of {sum(d.size for d in data.values())} phantoms: {time.perf_counter() - t0:.1f} s", flush=True)
    (run_ablation if args.ablation else run_main)(args, s, config, geometry, data)
    print(f"\nwhole benchmark {time.perf_counter() - t_start:.1f} s")


if __name__ == "__main__":
    main()
