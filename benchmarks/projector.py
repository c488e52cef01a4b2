"""Speed and memory of jaxspect's SPECT projector against the machine's floor (prints figures;
never asserts on them).

Run from the repository root (or anywhere, with jaxspect installed)::

    python -m benchmarks.projector                      # cases a and b (10-15 min on 2 cores)
    python -m benchmarks.projector --quick              # case a, full configuration only (~2 min)
    python -m benchmarks.projector --cases b --rotation bilinear --no-peer
    python -m benchmarks.projector --json results.json  # also write every figure as JSON

What it measures
----------------
The problems are :data:`benchmarks.problems.PROJECTOR_CASES` (an elliptical water torso, 4.8 mm
voxels, circular orbit, LEHR Gaussian PSF):

- case ``a``: 64x64x40 image, 60 views, 19x19 PSF: the timing setup of SPECTrecon.jl (290 ms
  forward / 208 ms back published on a multi-core workstation);
- case ``b``: 128x128x80 image, 128 views, 19x19 PSF: the paper's size.

For each case and rotation (``bilinear``, ``three_pass``) with attenuation and the case's PSF
(configuration ``full``) it runs four ``jax.jit``-compiled functions: forward ``A x``, back
``A^T v``, ``jax.grad`` of ``0.5 ||A x - y||^2`` in ``x`` (one forward and one back
projection) and ``jax.jvp`` of the projection; the attenuation map and geometry are jit
arguments, as in a reconstruction loop. Other configurations (forward and back, bilinear):
``no-attenuation``, ``narrow-psf`` (3 taps), ``rotate-sum`` (3 taps, no attenuation),
``explicit-psf`` (the same Gaussian as an ``ExplicitPSF`` array); none, nor the full one with
the three-pass rotation (``three-pass``), should be slower than ``full``. Each figure of the
full configuration: compile time (trace + lower + XLA compile, cold), the median wall time of
a few calls after a warm-up (``jax.block_until_ready``), XLA's compiled memory (argument +
output + temp - alias) and the peak-RSS increase over one call (``ru_maxrss``, in a fresh
process whose compiler memory is returned to the OS and whose peak is reset first). Each of
these measurements runs in its own subprocess (``benchmarks/_projector_work.py``), so caches,
allocator state and peak RSS do not leak between them. The configurations are timed against
the full one in one subprocess per case, in rounds that call each once (the order shifted
every round), and each ratio is taken per round: timed minutes apart in separate processes,
the explicit PSF (the same work as the full one) came out at up to 1.12x. A configuration
passes when its median ratio is at most ``1 + NOISE`` (1.05); the table prints the range over
the rounds too.

Targets (printed with PASS/MISS): (a) forward and back <= 300 ms; (b) forward <= 0.7 s, back
<= 0.9 s; grad <= 2.3x forward; (b)'s grad peak memory < 1 GiB.

The floor
---------
Per view, with ``N = nx ny nz`` voxels (``ny`` the depth axis), ``p = 2h + 1`` PSF taps per
axis, float32 (4 bytes), bytes counted as read + written once from memory per stage:

============================  =====================================  ================================
stage                         FLOPs                                  bytes
============================  =====================================  ================================
rotate image (bilinear)       ``8 N`` (4 taps x multiply-add)        ``4 (N + N)`` (neighbouring
                                                                     outputs share taps)
rotate mu (uncached)          ``8 N``                                ``4 (N + N)``
attenuation factors           ``4 N`` (running sum, half-voxel       ``4 (N + N)``
                              term, scale, exp counted as 1)
attenuation multiply          ``N``                                  ``4 (2 N + N)``
PSF matrices (z)              0                                      ``4 ny nz^2`` (dense per-plane
                                                                     z blur matrices)
blur z (GEMM)                 ``2 nx ny nz^2``                       ``4 (N + ny nz^2 + N)``
blur x + depth sum (taps)     ``2 p N + p nx nz`` (GEMM ``(p, ny)    ``4 (N + 2 p nx nz + nx nz)``
                              @ (ny, nx nz)``, then the taps'
                              shifts summed)
depth sum (no PSF)            ``N``                                  ``4 (N + nx nz)``
============================  =====================================  ================================

The back projection does the transposed stages (same counts). The direct-convolution count of
the blurs, ``2 p N`` per axis, is printed next to the projector's count: the z GEMM does
``nz / p`` times more arithmetic (dense band matrices) in exchange for running at GEMM speed;
the x blur is applied tap by tap already. The same run
measures the machine: memory bandwidth (a jitted in-place ``a + 1`` over 64 MiB, read + write) and FMA
throughput (a jitted 1024^3 float32 GEMM); the floor of a stage is
``max(FLOPs / FLOP/s, bytes / bandwidth)``, summed over stages and views (the grad: forward +
back), and the report prints the fraction of it achieved (floor time / measured time; 1 is the
limit). It also times each stage of one view jitted alone (public ``jaxspect`` functions:
``js.rotate``, ``js.rotate_adjoint``, ``js.attenuation_factors``; ``jnp`` GEMMs of the
projector's shapes) and one whole view, and it profiles a whole forward and back projection
(``jax.profiler``: the XLA operations that take the most time, per view, each with the JAX
operation it came from), so that the stage that dominates is visible.

Peer comparison: when ``torch`` and ``pytomography`` are importable, PyTomography's
``SPECTSystemMatrix`` (built by ``benchmarks._pytomography_peer.build_system_matrix``) projects
the same phantom, timed in one process with jaxspect's calls interleaved (with
``OMP_WAIT_POLICY=PASSIVE`` unless set). Install with ``pip install torch==2.13.0 pytomography``.

Timings depend on the machine and on whatever else runs on it; they are printed, not checked.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

# The driver imports neither JAX nor numpy (a child inherits its parent's peak RSS at exec).
from benchmarks import _floor
from benchmarks._harness import GIB, fmt_mib, fmt_s, load_average, run_worker, table

WORKER = "benchmarks._projector_work"
ROTATIONS = ("bilinear", "three_pass")
OPS = ("forward", "back", "grad", "jvp")
OTHER_CONFIGS = ("no-attenuation", "narrow-psf", "rotate-sum", "explicit-psf")
# per case (benchmarks.problems.PROJECTOR_CASES): time targets (forward, back), repeats (ours,
# PyTomography's), rounds of the paired configuration timings
CASES = {
    "a": dict(target=(0.3, 0.3), repeats=5, peer_repeats=3, rounds=11),
    "b": dict(target=(0.7, 0.9), repeats=3, peer_repeats=1, rounds=7),
    "tiny": dict(target=(None, None), repeats=2, peer_repeats=1, rounds=3),  # a smoke test of this script
}
NOISE = 0.05  # a configuration passes when its median paired ratio to full is at most 1 + NOISE
GRAD_RATIO_TARGET = 2.3
GRAD_MEMORY_TARGET_BYTES = GIB  # case b's grad
PEER_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def measure(specs, start, timeout_s=900):
    """Run the ``time`` and ``rss`` workers of each spec; print progress."""
    results = {}
    for spec in specs:
        res = run_worker(WORKER, dict(spec, kind="time"), timeout_s)
        if "error" not in res:
            res.update(run_worker(WORKER, dict(spec, kind="rss"), timeout_s))
        key = (spec["case"], spec["config"], spec["rotation"], spec["op"])
        results[key] = res
        status = res.get("error") or f"median {fmt_s(res['median_s'])}"
        print(f"  [{time.perf_counter() - start:5.0f} s] {' '.join(key)}: {status}", flush=True)
    return results


def main_table(results, names, rotations):
    rows = []
    for name in names:
        fwd_target, back_target = CASES[name]["target"]
        for rotation in rotations:
            fwd = results[(name, "full", rotation, "forward")].get("median_s")
            for op in OPS:
                r = results[(name, "full", rotation, op)]
                if "error" in r:
                    rows.append([name, rotation, op, "ERROR: " + r["error"]])
                    continue
                t = r["median_s"]
                ratio = t / fwd if (op in ("grad", "jvp") and fwd) else None
                if op in ("grad", "jvp"):
                    target, ok = f"<= {GRAD_RATIO_TARGET}x fwd", ratio is not None and ratio <= GRAD_RATIO_TARGET
                else:
                    limit = fwd_target if op == "forward" else back_target
                    target, ok = f"<= {fmt_s(limit)}", limit is None or t <= limit
                xla, rss = r["xla_memory"].get("total_bytes"), r.get("rss_increase_bytes")
                mem_target = mem_ok = "-"
                if op == "grad" and name == "b":
                    mem_target = "< 1024 MiB"
                    mem_ok = "PASS" if (xla is not None and rss is not None
                                        and max(xla, rss) < GRAD_MEMORY_TARGET_BYTES) else "MISS"
                rows.append([name, rotation, op, f"{r['trace_lower_s'] + r['compile_s']:.1f} s", fmt_s(t),
                             f"{fmt_s(min(r['times_s']))}..{fmt_s(max(r['times_s']))}",
                             "-" if ratio is None else f"{ratio:.2f}", target, "PASS" if ok else "MISS",
                             fmt_mib(xla), fmt_mib(rss), mem_target, mem_ok])
    header = ["case", "rotation", "op", "compile", "median", "min..max", "grad/fwd", "time target", "time",
              "XLA MiB", "RSS+ MiB", "mem target", "mem"]
    return table(rows, header, left=3)


def config_table(paired, names):
    """Each configuration against the full bilinear one, from the paired rounds of
    ``_projector_work._configs``: its median time, the median and range of its per-round
    ratio to the full one, and the verdict."""
    rows = []
    for name in names:
        res = paired.get(name, {})
        if "error" in res:
            rows.append([name, "-", "-", "ERROR: " + res["error"]])
            continue
        for op in ("forward", "back"):
            for e in (e for e in res.get("entries", []) if e["op"] == op):
                label = "three-pass" if e["rotation"] == "three_pass" else e["config"]
                full = e["config"] == "full" and e["rotation"] == "bilinear"
                verdict = "-" if full else ("PASS" if e["median_ratio"] <= 1 + NOISE else "SLOWER THAN FULL")
                rows.append([name, op, label, fmt_s(e["median_s"]), f"{e['median_ratio']:.2f}",
                             "-" if full else f"{min(e['ratios']):.2f}..{max(e['ratios']):.2f}", verdict])
    header = ["case", "op", "configuration", "median", "/ full", "per round", f"<= full ({NOISE:.0%} noise)"]
    return table(rows, header, left=3)


def floor_report(name, case, floor, results):
    """Per-stage floor of one view and the measured stage times, and the fraction achieved;
    ``case``: the case's ``shape``, ``taps`` and ``nview`` (from the ``machine`` worker)."""
    c = case
    bw, gf = floor["bandwidth_gb_s"], floor["gemm_gflop_s"]
    lines = [f"case {name}: memory bandwidth {bw:.1f} GB/s (a + 1 over {floor['stream_mib']:.0f} MiB), "
             f"FMA throughput {gf:.1f} GFLOP/s ({floor['gemm_n']}^3 float32 GEMM)"]
    stage_times = floor["stage_times_s"]
    rows, total, total_taps = [], 0.0, 0.0
    for s in _floor.stages(c["shape"], c["taps"]):
        t_floor = _floor.floor_seconds(s, gf, bw)
        total += t_floor
        total_taps += _floor.floor_seconds(s, gf, bw, taps=True)
        measured = stage_times.get("rotate image" if s["stage"] == "rotate mu" else s["stage"])
        rows.append([s["stage"], f"{s['flops'] / 1e6:.1f}", f"{s['flops_taps'] / 1e6:.1f}",
                     f"{s['bytes'] / 2**20:.1f}", fmt_s(t_floor), fmt_s(measured),
                     "-" if not measured else f"{t_floor / measured:.2f}"])
    rows.append(["total per view", "", "", "", fmt_s(total), "", ""])
    lines.append(table(rows, ["stage (one view)", "MFLOP", "MFLOP (taps)", "MiB", "floor", "alone", "floor/alone"]))
    nview = c["nview"]
    per_view = {op: results.get((name, "full", "bilinear", op), {}).get("median_s") for op in ("forward", "back")}
    lines.append(f"per view in a whole projection: forward {fmt_s(per_view['forward'] and per_view['forward'] / nview)}, "
                 f"back {fmt_s(per_view['back'] and per_view['back'] / nview)}; one view alone (with the per-call "
                 f"input checks): forward {fmt_s(stage_times.get('one view, forward'))}, back "
                 f"{fmt_s(stage_times.get('one view, back'))}; rotate adjoint alone "
                 f"{fmt_s(stage_times.get('rotate adjoint'))}")
    for op, factor in (("forward", 1), ("back", 1), ("grad", 2)):
        r = results.get((name, "full", "bilinear", op), {})
        if "median_s" in r:
            floor_s = factor * nview * total
            lines.append(f"  {op:8s} floor {fmt_s(floor_s)} (direct-convolution blur: "
                         f"{fmt_s(factor * nview * total_taps)}), measured {fmt_s(r['median_s'])}: "
                         f"{100 * floor_s / r['median_s']:.0f}% of the floor's speed (floor / measured)")
    for op, ops in floor.get("profile", {}).items():
        lines.append(f"where a whole {op} projection spends its time (jax.profiler; per view; a loop includes "
                     "the ops inside it):")
        rows = [[o["op"], o["what"], str(o["calls"]), fmt_s(o["seconds"])] for o in ops]
        lines.append(table(rows, ["XLA op", "from", "calls", "per view"], left=2))
    return "\n".join(lines)


def peer_section(names, rotations, repeats, start):
    prow, peer = [], {}
    rotation = "bilinear" if "bilinear" in rotations else rotations[0]
    for name in names:
        spec = dict(case=name, kind="peer", rotation=rotation, repeats=repeats or CASES[name]["peer_repeats"])
        res = run_worker(WORKER, spec, timeout_s=1200, env=PEER_ENV)
        peer[name] = res
        print(f"  [{time.perf_counter() - start:5.0f} s] {name} pytomography: {res.get('error') or 'done'}",
              flush=True)
        if "error" in res:
            prow.append([name, "ERROR: " + res["error"]])
            continue
        for op in ("forward", "back"):
            ratio = res[f"jaxspect_{op}_s"] / res[f"{op}_s"]
            prow.append([name, op, "x".join(map(str, res["kernel"] or ())), fmt_s(res[f"{op}_s"]),
                         fmt_s(res[f"jaxspect_{op}_s"]), f"{ratio:.2f}",
                         f"jaxspect {1 / ratio:.1f}x faster" if ratio < 1 else "PYTOMOGRAPHY FASTER"])
    ok = next((r for r in peer.values() if "error" not in r), None)
    if ok:
        print(f"peer: PyTomography {ok['pytomography']} (torch {ok['torch']}, {ok['threads']} threads), "
              "SPECTSystemMatrix with attenuation + PSF; both timed in one process, calls interleaved (medians)")
    print(table(prow, ["case", "op", "peer PSF", "pytomography", f"jaxspect ({rotation})", "jaxspect/pytomography",
                       ""], left=2))
    return peer


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="case a, full configuration only")
    parser.add_argument("--cases", default=None, help="comma-separated cases (a,b); default a,b")
    parser.add_argument("--rotation", default=None, choices=ROTATIONS, help="one rotation method only")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per measurement (default 5 for a, 3 for b; PyTomography 3 / 1)")
    parser.add_argument("--no-configs", action="store_true", help="only the full configuration")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor (micro-benchmarks, stage times)")
    parser.add_argument("--no-peer", action="store_true", help="skip the PyTomography comparison")
    parser.add_argument("--json", default=None, help="also write all figures to this JSON file")
    args = parser.parse_args(argv)

    names = ["a"] if args.quick else (args.cases or "a,b").split(",")
    bad = [n for n in names if n not in CASES]
    if bad:
        parser.error(f"unknown case(s) {bad}; choose from {sorted(CASES)}")
    rotations = [args.rotation] if args.rotation else list(ROTATIONS)
    configs = () if (args.quick or args.no_configs) else OTHER_CONFIGS

    start = time.perf_counter()
    print("jaxspect projector benchmark")
    info = run_worker(WORKER, {"kind": "machine"}, timeout_s=300)
    print(info.get("line") or f"machine: unknown ({info.get('error')})")
    print(f"load average at start: {load_average()} (figures are slower on a busy machine)")
    for name in names:
        print(info.get("cases", {}).get(name, {}).get("describe", f"case {name}"))
    print("attenuation: water 0.0153/mm in an elliptical torso; timings are medians after a warm-up call\n",
          flush=True)

    specs = []
    for name in names:
        repeats = args.repeats or CASES[name]["repeats"]
        specs += [dict(case=name, config="full", rotation=r, op=op, repeats=repeats) for r in rotations for op in OPS]
    results = measure(specs, start)
    paired = {}
    for name in names if configs else ():
        pairs = [("full", "bilinear"), *((c, "bilinear") for c in configs)]
        pairs += [("full", "three_pass")] if "three_pass" in rotations else []
        spec = dict(kind="configs", case=name, configs=pairs, ops=["forward", "back"],
                    rounds=args.repeats or CASES[name]["rounds"])
        paired[name] = run_worker(WORKER, spec, timeout_s=1800)
        status = paired[name].get("error") or f"{len(pairs)} configurations x 2 ops x {spec['rounds']} rounds"
        print(f"  [{time.perf_counter() - start:5.0f} s] {name} configurations, paired: {status}", flush=True)

    print()
    print(main_table(results, names, rotations))
    print("compile = trace + lower + XLA compile (cold); XLA MiB = arguments + outputs + temporaries "
          "(memory_analysis); RSS+ MiB = peak-RSS increase over one call in a fresh process, compiler "
          "memory excluded")
    if any(not r.get("rss_peak_reset", True) for r in results.values()):
        print("note: the peak RSS could not be reset here (/proc/self/clear_refs), so RSS+ includes the compiler's peak")
    if configs:
        print("\nconfigurations (bilinear unless named), against the full bilinear one, timed in rounds in one "
              "process (ratios per round):")
        print(config_table(paired, names))

    floors = {}
    if not args.no_floor:
        print("\nthe floor (see this script's docstring for the formulas):")
        for name in names:
            floors[name] = run_worker(WORKER, {"kind": "floor", "case": name}, timeout_s=900)
            if "error" in floors[name]:
                print(f"case {name}: floor ERROR: {floors[name]['error']}")
            else:
                print(floor_report(name, info["cases"][name], floors[name], results))

    peer = {}
    print()
    if args.no_peer:
        print("peer: PyTomography comparison skipped (--no-peer)")
    else:
        import importlib.util

        if not all(importlib.util.find_spec(m) for m in ("torch", "pytomography")):
            print("peer: PyTomography comparison skipped (torch/pytomography not importable); "
                  "install with: pip install torch==2.13.0 pytomography")
        else:
            peer = peer_section(names, rotations, args.repeats, start)

    elapsed = time.perf_counter() - start
    print(f"\ntotal benchmark time: {elapsed:.0f} s; load average at end: {load_average()}")
    if args.json:
        out = {"machine": info.get("line"), "cases": {n: info.get("cases", {}).get(n) for n in names},
               "results": [dict(case=k[0], config=k[1], rotation=k[2], op=k[3], **v) for k, v in results.items()],
               "configurations": paired, "floor": floors, "peer": peer, "elapsed_s": elapsed}
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
