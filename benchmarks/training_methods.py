"""Unrolled CNN-regularised EM trained three ways vs OSEM (the paper's Section III-B, Table I).

Prints figures, asserts nothing. The problem follows the paper's Lu-177 XCAT experiment at a
size this machine can train in well under an hour:

- torso phantoms (``jaxspect.phantoms.torso_phantom``: Lu-177 at 208 keV, liver lesions of
  67/10/9/5 mL), each patient a different PRNG key (anatomy, concentrations, lesion positions);
  by default 64 x 64 x 40 voxels of 9.6 mm and 64 views (``--full``: 128 x 128 x 80 of 4.8 mm,
  128 views, the paper's size);
- a body-contouring orbit (10 mm clearance), a medium-energy collimator response
  FWHM(d) = sqrt(2.5^2 + (0.1 d)^2) mm, 2e6 primary counts (``--counts``) plus 10 % uniform
  scatter, Poisson noise, 3 noise realisations;
- warm start: OSEM 16 iterations x 4 subsets from a uniform image;
- the model: K = 3 outer iterations of one inner regularised-EM step, beta = 1, the paper's
  657-parameter 3-layer residual CNN per iteration (non-shared weights), all methods starting
  from the same initial weights;
- training: AdamW, learning rate 0.002, one patient per step (``--batch-size``), MSE to the true activity (in the data's count units),
  the model with the lowest validation loss kept; ``--epochs`` per method (sequential training
  runs that many epochs for each of its 3 networks, as in the paper);
- evaluation: every test patient and noise realisation, MAE (eq. 9) and NRMSE (eq. 10) per VOI
  after normalising images to 1 MBq per field of view; the table shows the mean over test
  patients, then mean +- std over the noise realisations (Table I's layout). Lungs and kidneys
  are pooled left + right as in the paper.

Protocol choice: the paper repeated *all* experiments for each noise realisation; by default
each method here is trained once, on realisation 0 of the training and validation patients, and
evaluated on all 3 realisations of the test patients (``--retrain`` trains a model per
realisation, 3x the time). Seconds per epoch (median over epochs after the first, which
includes compilation) and the compiled peak memory of one training step (XLA's memory
analysis: arguments + outputs + temporaries) are reported per method; for sequential training
the step of one network, as the paper reports.

Usage::

    python benchmarks/training_methods.py               # 64x64x40, ~30 min on 2 busy cores
    python benchmarks/training_methods.py --quick       # tiny smoke run (~2 min)
    python benchmarks/training_methods.py --full        # the paper's size (GPU recommended)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jaxspect as js  # noqa: E402
from jaxspect.metrics import voi_table  # noqa: E402
from jaxspect.nn import PaperCNN, count_parameters  # noqa: E402
from jaxspect.phantoms import torso_phantom  # noqa: E402
from jaxspect.recon import (  # noqa: E402
    EndToEnd, Sequential, TrainingData, Truncated, UnrolledEM, batch_osem, fit, mse_loss, reconstruct_batch,
    stack_projectors,
)
from jaxspect.recon._train import _trainable  # noqa: E402

FWHM0_MM, SLOPE = 2.5, 0.1  # medium-energy parallel-hole collimator (Lu-177)
METHODS = {"sequential": Sequential(), "truncated": Truncated(), "end-to-end": EndToEnd()}
ROWS = ("lesion_1", "lesion_2", "lesion_3", "lesion_4", "liver", "lung", "spleen", "kidney")


def make_patient(seed: int, n: int, nz: int, nview: int, voxel_mm: float, counts: float, n_noise: int):
    """One simulated patient: phantom, projector, noisy data (``n_noise`` realisations)."""
    shape, vs = (n, n, nz), (voxel_mm,) * 3
    phantom = torso_phantom(jax.random.key(seed), shape=shape, voxel_size=vs)
    angles = 2 * np.pi * np.arange(nview) / nview
    psf = js.GaussianPSF(FWHM0_MM, SLOPE)
    probe = js.SPECTGeometry(shape, vs, psf, angles=angles, radii=n * voxel_mm)
    radii = np.asarray(probe.object_extent(phantom.masks["body"])) + 10.0
    geometry = js.SPECTGeometry(shape, vs, psf, angles=angles, radii=radii)
    projector = js.SPECTProjector(geometry, jnp.asarray(phantom.mumap, jnp.float32))
    activity = jnp.asarray(phantom.activity, jnp.float32)
    data = js.simulate(jax.random.key(1000 + seed), activity, projector, total_counts=counts,
                       scatter_fraction=0.1, n_realizations=n_noise)
    masks = dict(phantom.masks)
    masks["lung"] = masks["lung_left"] | masks["lung_right"]
    masks["kidney"] = masks["kidney_left"] | masks["kidney_right"]
    return {
        "projector": projector,
        "counts": data.counts,
        "background": data.background,
        "target": activity * data.scale,
        "masks": {name: masks[name] for name in ROWS},
    }


_reconstruct = eqx.filter_jit(reconstruct_batch)


def training_data(patients, realisation: int) -> TrainingData:
    projectors = stack_projectors([p["projector"] for p in patients])
    y = jnp.stack([p["counts"][realisation] for p in patients])
    background = jnp.stack([p["background"] for p in patients])
    x0 = batch_osem(projectors, y, n_iter=16, n_subsets=4, background=background)  # the warm start
    return TrainingData(projectors, y, background, x0, jnp.stack([p["target"] for p in patients]))


def step_memory_mib(model: UnrolledEM, data: TrainingData, gradient) -> float | None:
    """Compiled peak memory of one training step (loss and gradient) on ``data``."""
    if isinstance(gradient, Sequential):
        net = model.network_at(0)
        params, static = eqx.partition(net, eqx.is_inexact_array)
        loss = lambda p, x, t: jnp.mean((jax.vmap(eqx.combine(p, static))(x) - t) ** 2)
        args = (params, data.x0, data.target)
    else:
        params, static = eqx.partition(model, _trainable(model))
        data_arrays, data_static = eqx.partition(data, eqx.is_array)
        loss = lambda p, d: mse_loss(eqx.combine(p, static), eqx.combine(d, data_static), gradient)
        args = (params, data_arrays)
    compiled = jax.jit(jax.value_and_grad(loss)).lower(*args).compile()
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    total = (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
             - stats.alias_size_in_bytes)
    return total / 2**20


def evaluate(images, patients, realisation):
    """Per-VOI figures of ``images`` (one per test patient), averaged over the patients."""
    tables = [voi_table(img, p["target"], p["masks"]) for img, p in zip(images, patients)]
    return {row: {m: float(np.mean([t[row][m] for t in tables])) for m in ("MAE %", "NRMSE %")} for row in ROWS}


def print_table(results: dict, metric: str) -> None:
    methods = list(results)
    print(f"\n{metric} (mean +- std over noise realisations)")
    print(f"{'VOI':12s}" + "".join(f"{m:>18s}" for m in methods))
    for row in ROWS:
        cells = []
        means = [np.mean([r[row][metric] for r in results[m]]) for m in methods]
        best = int(np.argmin(means))
        for i, m in enumerate(methods):
            values = [r[row][metric] for r in results[m]]
            mark = "*" if i == best else " "
            cells.append(f"{np.mean(values):10.1f} +- {np.std(values):4.1f}{mark}")
        print(f"{row:12s}" + "".join(f"{c:>18s}" for c in cells))
    print("(* lowest)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true", help="the paper's size: 128x128x80 of 4.8 mm, 128 views")
    size.add_argument("--quick", action="store_true", help="tiny smoke run: 32x32x20, 32 views, few epochs")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per method (per network for sequential)")
    parser.add_argument("--train", type=int, default=2, help="training patients (2 as in the paper's XCAT study)")
    parser.add_argument("--val", type=int, default=1, help="validation patients")
    parser.add_argument("--test", type=int, default=2, help="test patients")
    parser.add_argument("--noise", type=int, default=3, help="noise realisations")
    parser.add_argument("--batch-size", type=int, default=1, help="patients per optimiser step")
    parser.add_argument("--counts", type=float, default=2e6, help="total primary counts per patient")
    parser.add_argument("--retrain", action="store_true", help="train a model per noise realisation (paper protocol)")
    parser.add_argument("--methods", default="sequential,truncated,end-to-end")
    parser.add_argument("--log", action="store_true", help="print the losses of every epoch")
    parser.add_argument("--save-model", help="write the end-to-end model here (jaxspect.save_model; for `jaxspect demo --model`)")
    args = parser.parse_args(argv)

    if args.full:
        n, nz, nview, voxel, epochs = 128, 80, 128, 4.8, 600
    elif args.quick:
        n, nz, nview, voxel, epochs = 32, 20, 32, 19.2, 4
    else:
        n, nz, nview, voxel, epochs = 64, 40, 64, 9.6, 40
    epochs = args.epochs or epochs
    methods = [m.strip() for m in args.methods.split(",")]
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown method {m!r}; expected some of {', '.join(METHODS)}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform.upper()} ({os.cpu_count()} CPUs, load {load:.1f})")
    print(f"problem: {n}x{n}x{nz} voxels of {voxel} mm, {nview} views, ME PSF, {args.counts:.3g} counts + 10% scatter")
    print(f"patients: {args.train} training, {args.val} validation, {args.test} test; {args.noise} noise realisations")
    print(f"model: K=3 outer x 1 inner, beta=1, PaperCNN ({count_parameters(PaperCNN(jax.random.key(0)))} "
          f"parameters per iteration); AdamW lr 0.002; {epochs} epochs per method"
          f"{' per network' if 'sequential' in methods else ''}")

    start = time.perf_counter()
    n_patients = args.train + args.val + args.test
    patients = [make_patient(seed, n, nz, nview, voxel, args.counts, args.noise) for seed in range(n_patients)]
    train_p, val_p, test_p = (patients[: args.train], patients[args.train : args.train + args.val],
                              patients[args.train + args.val :])
    tests = [training_data(test_p, r) for r in range(args.noise)]
    print(f"simulation + OSEM warm starts: {time.perf_counter() - start:.0f} s")

    init = UnrolledEM(PaperCNN, jax.random.key(42), n_outer=3, n_inner=1, beta=1.0)
    results = {"OSEM": [evaluate(t.x0, test_p, r) for r, t in enumerate(tests)]}
    timing = {}
    for name in methods:
        gradient = METHODS[name]
        results[name] = []
        seconds, train_seconds = [], 0.0
        for r in range(args.noise if args.retrain else 1):
            train, val = training_data(train_p, r), training_data(val_p, r)
            start = time.perf_counter()
            fitted = fit(init, train, val, epochs=epochs, gradient=gradient, batch_size=args.batch_size,
                         key=jax.random.key(r), log=args.log)
            train_seconds += time.perf_counter() - start
            seconds.append(fitted.seconds_per_epoch)
            if args.save_model and name == "end-to-end" and r == 0:
                js.save_model(args.save_model, fitted.model)
            evaluated = range(args.noise) if not args.retrain else [r]
            for rr in evaluated:
                results[name].append(evaluate(_reconstruct(fitted.model, tests[rr]), test_p, rr))
            losses = fitted.val_loss
            print(f"{name}: trained {train_seconds:.0f} s, best validation loss {losses.min():.4g} "
                  f"at epoch {int(np.argmin(losses)) + 1}/{len(losses)}, final training loss {fitted.train_loss[-1]:.4g}",
                  flush=True)
        timing[name] = (float(np.median(seconds)), step_memory_mib(init, train, gradient), train_seconds)

    print_table(results, "MAE %")
    print_table(results, "NRMSE %")
    print(f"\n{'method':12s}{'s/epoch':>10s}{'step MiB':>10s}{'train s':>10s}")
    for name, (sec, mib, total) in timing.items():
        mib_s = "n/a" if mib is None else f"{mib:.0f}"
        print(f"{name:12s}{sec:10.2f}{mib_s:>10s}{total:10.0f}")
    print(f"(s/epoch: {args.train} training patients + validation; sequential: one network's epoch; "
          f"step MiB: one step on {args.train} patients)")


if __name__ == "__main__":
    main()
