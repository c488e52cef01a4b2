"""Unrolled CNN-regularised EM trained three ways vs OSEM (the paper's Section III-B, Table I).

Prints tables and writes a figure of validation loss and small-lesion MAE against epoch;
asserts nothing. The problem is ``benchmarks/problems.py``'s (no inverse crime: data simulated on a
grid twice as fine and binned). The model: K = 3 outer iterations of one inner regularised-EM
step with the **dimensionless** ``--beta`` (jaxspect's definition: the prior's share of the
update is beta / (1 + beta) in a voxel of typical activity and sensitivity), the paper's
657-parameter 3-layer residual CNN per iteration (``--network scnn``: the 3-D SCNN instead; ``paper,scnn``: both),
all methods from the same initial weights. Training: AdamW, learning rate 0.002 (the paper's;
``--cosine`` decays it to 0), one patient per step, relative squared error to the true
activity, the model with the lowest validation loss kept. Sequential training runs ``--epochs``
for each of its 3 networks, as in the paper. With ``--patience N`` the epochs are a cap and each
run (each network, for sequential) stops once its validation loss has not fallen
``--min-improvement`` (relative) below its best for N epochs: "trained until the validation
loss flattened".

Baselines, on the same test data:
- ``OSEM 16x4``: the warm start, the paper's baseline;
- ``OSEM+3EM``: the warm start followed by 3 plain EM iterations, i.e. the unrolled EM with
  ``beta = 0``: what the learned methods gain beyond their 3 extra EM steps;
- ``OSEM val-it``: OSEM with 4 subsets and the iteration count (1-40) that minimises the
  validation patients' mean NRMSE (chosen on validation, never on the test truth).

Evaluation: every test patient and noise realisation; MAE (eq. 9) and NRMSE (eq. 10) per VOI
after normalising images to 1 MBq per field of view; mean over test patients, then mean +- std
over noise realisations. Each method is trained once, on realisation 0 of the training and
validation patients (``--retrain``: once per realisation, the paper's protocol).

Usage::

    python -m benchmarks.training_methods                  # default size, ~1 h on 2 cores
    python -m benchmarks.training_methods --quick          # smoke run (~2 min)
    python -m benchmarks.training_methods --epochs 600 --patience 40 --min-improvement 0.005  # to a plateau
    python -m benchmarks.training_methods --size fine      # 4.8 mm voxels, liver field of view
    python -m benchmarks.training_methods --size full      # the paper's size (GPU)
"""

from __future__ import annotations

import argparse
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxspect as js
from jaxspect.nn import SCNN3d, PaperCNN, count_parameters
from jaxspect.recon import EndToEnd, Sequential, Truncated, UnrolledEM, fit, reconstruct_batch

from benchmarks.problems import SIZES, SMALL_LESIONS, evaluate, make_patient, print_table, training_data, voi_masks

METHODS = {"sequential": Sequential(), "truncated": Truncated(), "end-to-end": EndToEnd()}
_reconstruct = eqx.filter_jit(reconstruct_batch)
_identity = lambda key: eqx.nn.Identity()


def osem_iterations_on_validation(data, max_iter: int = 40) -> int:
    """OSEM (4 subsets) iteration count minimising the mean whole-image NRMSE of ``data``."""
    run = eqx.filter_jit(eqx.filter_vmap(lambda a, y, r, t: js.osem(
        a, y, jnp.ones(a.in_shape), n_iter=max_iter, n_subsets=4, background=r, history=True, reference=t).nrmse))
    nrmse = np.asarray(run(data.projectors, data.y, data.background, data.target))  # (P, max_iter + 1)
    return int(np.argmin(nrmse.mean(axis=0)[1:])) + 1


def baselines(tests, val, test_p) -> dict:
    """OSEM 16x4, OSEM 16x4 + 3 EM, and OSEM at the validation-chosen iteration."""
    results = {"OSEM 16x4": [evaluate(t.x0, test_p) for t in tests]}
    plus = UnrolledEM(_identity, jax.random.key(0), n_outer=3, beta=0.0)
    results["OSEM+3EM"] = [evaluate(_reconstruct(plus, t), test_p) for t in tests]
    k = osem_iterations_on_validation(val)
    osem = eqx.filter_jit(eqx.filter_vmap(lambda a, y, r: js.osem(
        a, y, jnp.ones(a.in_shape), n_iter=k, n_subsets=4, background=r).image))
    results[f"OSEM {k}x4 (val)"] = [evaluate(osem(t.projectors, t.y, t.background), test_p) for t in tests]
    return results


def zero_last(net):
    """Zero the last layer's weights: the residual network starts as the identity, so training
    starts from 'OSEM + 3 EM' for every method (the SCNN papers' initialisation)."""
    if isinstance(net, PaperCNN):
        last = net.layers[-1]
        return eqx.tree_at(lambda n: (n.layers[-1].weight, n.layers[-1].bias), net,
                           (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
    params = eqx.filter(net.convs[-1], eqx.is_inexact_array)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return eqx.tree_at(lambda n: n.convs[-1], net, eqx.combine(zeros, eqx.filter(net.convs[-1], lambda x: not eqx.is_inexact_array(x))))


def network_factory(name: str, voxel_mm: float, zero_init: bool):
    make = {"paper": PaperCNN, "scnn": lambda k: SCNN3d(k, voxel_size=voxel_mm)}[name]
    return (lambda k: zero_last(make(k))) if zero_init else make


def print_paired(results: dict, base: str, metric: str) -> None:
    """Per lesion, each learned method's ``metric`` minus ``base``'s on the same noise realisation:
    mean +- std of the paired differences (negative: the learned method is better)."""
    learned = [m for m in results if not m.startswith("OSEM")]
    if not learned:
        return
    print(f"\n{metric} paired difference against {base} (mean +- std over noise realisations; negative is better)")
    print(f"{'VOI':10s}" + "".join(f"{m:>22s}" for m in learned))
    for row in ("lesion_1",) + SMALL_LESIONS:
        cells = []
        for m in learned:
            d = [r[row][metric] - b[row][metric] for r, b in zip(results[m], results[base])]
            cells.append(f"{np.mean(d):+.1f} +- {np.std(d):.1f}")
        print(f"{row:10s}" + "".join(f"{c:>22s}" for c in cells))


def save_curves(path, histories: dict, epochs: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in histories.items():
        x = np.arange(1, len(h["val_loss"]) + 1)
        axes[0].plot(x, h["val_loss"], label=name)
        mae = np.mean([h[f"val_MAE/{v}"] for v in SMALL_LESIONS], axis=0)
        axes[1].plot(x, mae, label=name)
    axes[0].set(xlabel="epoch (sequential: 3 networks one after the other)", ylabel="validation loss (rel. sq. error)",
                yscale="log", title="validation loss")
    axes[1].set(xlabel="epoch", ylabel="MAE % (mean of lesions 2-4)", title="validation small-lesion MAE")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"figure: {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="default")
    parser.add_argument("--quick", action="store_true", help="--size quick with few epochs and patients")
    parser.add_argument("--epochs", type=int, default=150, help="epochs per method (per network for sequential)")
    parser.add_argument("--patience", type=int, default=None,
                        help="stop a run when its validation loss has not improved for this many epochs")
    parser.add_argument("--min-improvement", type=float, default=0.005,
                        help="relative improvement that resets --patience (default 0.005)")
    parser.add_argument("--lesion-weight", type=float, default=0.0,
                        help="train on the lesion-weighted loss (benchmarks/problems.py: lesion_weights) with this strength")
    parser.add_argument("--beta", type=float, default=0.3, help="dimensionless regularisation strength")
    parser.add_argument("--network", default="paper", help="paper, scnn, or both: paper,scnn")
    parser.add_argument("--zero-init", action="store_true", help="start every network as the identity")
    parser.add_argument("--train", type=int, default=4, help="training patients")
    parser.add_argument("--val", type=int, default=2, help="validation patients")
    parser.add_argument("--test", type=int, default=3, help="test patients")
    parser.add_argument("--noise", type=int, default=3, help="noise realisations")
    parser.add_argument("--cosine", action="store_true", help="cosine-decay the learning rate to 0")
    parser.add_argument("--clip-norm", type=float, default=None)
    parser.add_argument("--retrain", action="store_true", help="train a model per noise realisation (paper protocol)")
    parser.add_argument("--same-model", action="store_true", help="simulate with the reconstruction's own model (inverse crime)")
    parser.add_argument("--methods", default="sequential,truncated,end-to-end")
    parser.add_argument("--checkpoint-dir", help="checkpoint every 10 epochs here; a rerun resumes")
    parser.add_argument("--figure", default="training_methods.png", help="curves figure (PNG)")
    parser.add_argument("--log", action="store_true", help="print every epoch")
    parser.add_argument("--save-model", help="write the end-to-end model here (jaxspect.save_model)")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.epochs, args.train, args.val, args.test, args.noise = "quick", min(args.epochs, 4), 2, 1, 1, 2
    size = SIZES[args.size]
    methods = [m.strip() for m in args.methods.split(",")]
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown method {m!r}; expected some of {', '.join(METHODS)}")
    networks = [n.strip() for n in args.network.split(",")]
    for n in networks:
        if n not in ("paper", "scnn"):
            parser.error(f"--network: unknown network {n!r}; expected paper, scnn or paper,scnn")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform.upper()} ({os.cpu_count()} CPUs, load {load:.1f})")
    print(f"problem: {size.describe()}; simulated {'with the same model (inverse crime)' if args.same_model else 'on a 2x finer grid, binned'}")
    print(f"patients: {args.train} training, {args.val} validation, {args.test} test; {args.noise} noise realisations")
    sizes = ", ".join(f"{n} {count_parameters(network_factory(n, size.voxel_mm, False)(jax.random.key(0)))}"
                      for n in networks)
    print(f"model: K=3 outer x 1 inner, beta={args.beta} (dimensionless), parameters per iteration: {sizes}"
          f"{' (last layers zero: identity start)' if args.zero_init else ''}; AdamW lr 0.002"
          f"{' cosine-decayed' if args.cosine else ''}; {args.epochs} epochs per method"
          f"{f' at most (patience {args.patience}, {100 * args.min_improvement:g}%)' if args.patience else ''}"
          f"{f'; lesion-weighted loss, strength {args.lesion_weight:g}' if args.lesion_weight else ''}"
          f"{' (per network for sequential)' if 'sequential' in methods else ''}")

    start = time.perf_counter()
    n_patients = args.train + args.val + args.test
    patients = [make_patient(seed, size, args.noise, fine=not args.same_model) for seed in range(n_patients)]
    train_p, val_p, test_p = (patients[: args.train], patients[args.train : args.train + args.val],
                              patients[args.train + args.val :])
    tests = [training_data(test_p, r) for r in range(args.noise)]
    val0 = training_data(val_p, 0)
    results = baselines(tests, val0, test_p)
    print(f"simulation, warm starts, baselines: {time.perf_counter() - start:.0f} s", flush=True)

    steps = args.epochs * args.train
    lr = optax.cosine_decay_schedule(0.002, steps) if args.cosine else 0.002
    timing, histories = {}, {}
    runs = [(n, m, m if len(networks) == 1 else f"{m} ({n})") for n in networks for m in methods]
    for network, method, name in runs:
        init = UnrolledEM(network_factory(network, size.voxel_mm, args.zero_init), jax.random.key(42),
                          n_outer=3, n_inner=1, beta=args.beta)
        results[name] = []
        seconds, train_seconds = [], 0.0
        for r in range(args.noise if args.retrain else 1):
            train, val = training_data(train_p, r, args.lesion_weight), training_data(val_p, r, args.lesion_weight)
            ckpt = None if not args.checkpoint_dir else os.path.join(args.checkpoint_dir, f"{method}-{network}-r{r}.ckpt")
            if ckpt:
                os.makedirs(args.checkpoint_dir, exist_ok=True)
            t = time.perf_counter()
            fitted = fit(init, train, val, epochs=args.epochs, gradient=METHODS[method], batch_size=1,
                         learning_rate=lr, clip_norm=args.clip_norm, key=jax.random.key(r),
                         voi_masks=voi_masks(val_p), checkpoint=ckpt, log=args.log, patience=args.patience,
                         min_improvement=args.min_improvement)
            train_seconds += time.perf_counter() - t
            seconds.append(fitted.seconds_per_epoch)
            if r == 0:
                histories[name] = fitted.history
            if args.save_model and method == "end-to-end" and r == 0:
                js.save_model(args.save_model, fitted.model)
            for rr in (range(args.noise) if not args.retrain else [r]):
                results[name].append(evaluate(_reconstruct(fitted.model, tests[rr]), test_p))
            v = fitted.val_loss
            last = max(1, len(v) // 10)
            kept = evaluate(_reconstruct(fitted.model, val), val_p)
            small = [kept[les]["MAE %"] for les in SMALL_LESIONS]
            print(f"{name}: validation MAE of the kept model, lesions 2-4: {np.mean(small):.2f} % "
                  f"({' / '.join(f'{m:.1f}' for m in small)})", flush=True)
            print(f"{name}: trained {train_seconds:.0f} s; validation loss best {v.min():.4g} at epoch "
                  f"{int(np.argmin(v)) + 1}/{len(v)}, mean of the last 10% of epochs {v[-last:].mean():.4g} "
                  f"vs the 10% before {v[-2 * last:-last].mean() if len(v) >= 2 * last else float('nan'):.4g}", flush=True)
        timing[name] = (float(np.median(seconds)), train_seconds)

    print_table(results, "MAE %")
    print_table(results, "NRMSE %")
    print_paired(results, "OSEM+3EM", "MAE %")
    print(f"\n{'method':12s}{'s/epoch':>10s}{'train s':>10s}")
    for name, (sec, total) in timing.items():
        print(f"{name:12s}{sec:10.2f}{total:10.0f}")
    if histories and args.figure:
        save_curves(args.figure, histories, args.epochs)
    return results


if __name__ == "__main__":
    main()
