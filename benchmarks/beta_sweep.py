"""The unrolled EM's regularisation strength: end-to-end training at several dimensionless betas.

For each ``beta`` (jaxspect's dimensionless definition: the prior's share of the update is
beta / (1 + beta) in a voxel of typical activity and sensitivity) and once with ``beta``
trainable (starting from 1), the unrolled EM (K = 3, PaperCNN per iteration) is trained end to
end on ``benchmarks/problems.py``'s patients and evaluated on the test patients over the noise
realisations: MAE of the 10, 9 and 5 mL lesions against OSEM 16x4 and OSEM 16x4 + 3 EM (the
``beta = 0`` model). The beta with the lowest mean small-lesion MAE **on the validation
patients** is reported as the one to use (``training_methods.py --beta``); the test figures play
no part in that choice. Writes a figure (test lesion MAE against beta).

Usage::

    python -m benchmarks.beta_sweep                 # default size, ~30 min on 2 cores
    python -m benchmarks.beta_sweep --quick         # smoke run
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import numpy as np

from jaxspect.recon import EndToEnd, UnrolledEM, fit, reconstruct_batch

from benchmarks.problems import SIZES, SMALL_LESIONS, evaluate, make_patient, print_table, training_data, voi_masks
from benchmarks.training_methods import baselines, network_factory

_reconstruct = eqx.filter_jit(reconstruct_batch)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="default")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--betas", default="0.03,0.1,0.3,1,3")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--train", type=int, default=4)
    parser.add_argument("--val", type=int, default=2)
    parser.add_argument("--test", type=int, default=3)
    parser.add_argument("--noise", type=int, default=3)
    parser.add_argument("--figure", default="beta_sweep.png")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.epochs, args.train, args.val, args.test, args.noise = "quick", 3, 2, 1, 1, 2
        args.betas = "0.1,1"
    size = SIZES[args.size]
    betas = [float(b) for b in args.betas.split(",")]
    print(f"problem: {size.describe()}; simulated on a 2x finer grid, binned")
    print(f"{args.train} training / {args.val} validation / {args.test} test patients, {args.noise} noise realisations; "
          f"end-to-end, {args.epochs} epochs, AdamW lr 0.002, PaperCNN x 3")
    t0 = time.perf_counter()
    patients = [make_patient(seed, size, args.noise) for seed in range(args.train + args.val + args.test)]
    train_p = patients[: args.train]
    val_p = patients[args.train : args.train + args.val]
    test_p = patients[args.train + args.val :]
    train, val = training_data(train_p, 0), training_data(val_p, 0)
    tests = [training_data(test_p, r) for r in range(args.noise)]
    results = baselines(tests, val, test_p)
    print(f"simulation, warm starts, baselines: {time.perf_counter() - t0:.0f} s", flush=True)

    net = network_factory("paper", size.voxel_mm, zero_init=False)
    runs = [(f"beta={b:g}", b, False) for b in betas] + [("beta trained", 1.0, True)]
    chosen, rows = None, []
    for label, beta, trainable in runs:
        t = time.perf_counter()
        model = UnrolledEM(net, jax.random.key(42), n_outer=3, beta=beta, train_beta=trainable)
        fitted = fit(model, train, val, epochs=args.epochs, gradient=EndToEnd(), batch_size=1,
                     key=jax.random.key(0), voi_masks=voi_masks(val_p))
        h = fitted.history
        val_mae = float(np.mean([h[f"val_MAE/{v}"][fitted.best_epoch] for v in SMALL_LESIONS]))
        results[label] = [evaluate(_reconstruct(fitted.model, tt), test_p) for tt in tests]
        rows.append((label, float(fitted.model.beta), val_mae, float(h["val_loss"][fitted.best_epoch])))
        if not trainable and (chosen is None or val_mae < chosen[1]):
            chosen = (beta, val_mae)
        print(f"{label}: {time.perf_counter() - t:.0f} s, final beta {float(fitted.model.beta):.3g}, "
              f"validation small-lesion MAE {val_mae:.2f} %, best epoch {fitted.best_epoch + 1}", flush=True)

    print_table(results, "MAE %")
    print_table(results, "NRMSE %")
    print("\nvalidation (kept epoch): beta, mean MAE of lesions 2-4, validation loss")
    for label, beta, val_mae, vloss in rows:
        print(f"  {label:14s} beta {beta:7.3g}  MAE {val_mae:6.2f} %  loss {vloss:.4g}")
    print(f"chosen on validation: beta = {chosen[0]:g}")
    test_mae = {k: [np.mean([r[v]['MAE %'] for v in SMALL_LESIONS]) for r in rs] for k, rs in results.items()}
    print("\ntest: mean MAE of lesions 2-4 (mean +- std over noise realisations)")
    for k, v in test_mae.items():
        print(f"  {k:16s} {np.mean(v):6.2f} +- {np.std(v):.2f}")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        means = [np.mean(test_mae[f"beta={b:g}"]) for b in betas]
        stds = [np.std(test_mae[f"beta={b:g}"]) for b in betas]
        ax.errorbar(betas, means, yerr=stds, marker="o", capsize=3, label="unrolled EM, end-to-end")
        for k, style in (("OSEM 16x4", "--"), ("OSEM+3EM", ":")):
            ax.axhline(np.mean(test_mae[k]), ls=style, color="gray", label=k)
        ax.set(xscale="log", xlabel="beta (dimensionless)", ylabel="test MAE %, mean of lesions 2-4",
               title="regularisation strength")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.figure, dpi=110)
        print(f"figure: {args.figure}")
    return chosen[0]


if __name__ == "__main__":
    main()
