"""One table of accelerator figures at the paper's sizes, next to the GPU targets (prints figures;
asserts nothing). Runs on any JAX backend; nothing here requires a GPU.

Run from the repository root::

    python -m benchmarks.gpu            # the paper's sizes: <= 5 min on one H200-class GPU
    python -m benchmarks.gpu --quick    # tiny sizes: a smoke run on CPU (seconds; the test suite runs it)

Rows (float32; every function jit-compiled, or compiled by its own first call):

- ``forward``, ``back``, ``grad``: the projector at 128x128x80 voxels of 4.8 mm, 128 views,
  attenuation, depth-dependent Gaussian PSF of 19x19 taps (``benchmarks.problems`` case ``b``);
  ``grad`` is ``jax.grad`` of ``0.5 ||A x - y||^2`` in ``x``;
- ``OSEM 16x4``: ``jaxspect.osem``, 16 iterations x 4 subsets, on the paper's torso problem
  (``benchmarks.problems.osem_problem``, 128x128x80, 128 views), attenuation cached;
- ``unrolled EM step``: one end-to-end training step (loss, gradient through the 3 unrolled
  outer iterations, AdamW update; ``jaxspect.recon.training_loss`` with ``EndToEnd``,
  ``jaxspect.training.make_optimizer``) of ``UnrolledEM(PaperCNN, n_outer=3)`` on 1 patient:
  the OSEM problem's, with the OSEM 16x4 image as its warm start and the phantom as target;
- ``batch OSEM x1`` / ``x8``: ``jaxspect.recon.batch_osem`` 16x4 of 1 and of 8 patients (all
  devices); the throughput ratio ``8 t1 / t8`` (patients per second, 8 vs 1);
- ``SPECTnet step``: one training step (loss, gradient, Adam with the paper's L2) of the full
  SPECTnet at the paper's batch size (160 sinograms of 128x128).

For each: the median time of a few calls after a warm-up (``jax.block_until_ready``), the
compile time (trace + lower + compile; for ``batch_osem``, first call minus median), XLA's
compiled memory (arguments + outputs + temporaries, where the backend reports it) and the
device's peak bytes in use so far (``memory_stats``; accelerators only, a running maximum over
the process: rows run in the table's order). Targets (one H200-class GPU): forward <= 10 ms,
back <= 15 ms, OSEM 16x4 <= 1.5 s, end-to-end training step <= 0.5 s, 8-patient batch OSEM
throughput >= 5x one patient's. ``--quick`` shrinks every problem (the targets are then
meaningless and printed as such).
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxspect as js
from benchmarks import _harness
from benchmarks._harness import fmt_mib, fmt_s
from benchmarks.problems import PROJECTOR_CASES, osem_problem, projector_geometry, projector_phantom

TARGETS = {"forward": 0.010, "back": 0.015, "OSEM 16x4": 1.5, "unrolled EM step": 0.5}
BATCH_THROUGHPUT_TARGET = 5.0
# Models are initialised with XLA's RngBitGenerator: the initial weights do not matter for
# timing, and its initialisers compile several times faster than threefry's on CPU.
INIT_KEY = jax.random.key(0, impl="rbg")
FULL = dict(case="b", osem=(128, 80, 128, 4.8), osem_iter=(16, 4), patients=8, n_outer=3, spectnet=(128, 160),
            repeats=5)
QUICK = dict(case="tiny", osem=(24, 12, 16, 19.2), osem_iter=(2, 2), patients=3, n_outer=1, spectnet=(32, 4),
             repeats=2)


def _row(name, res, target=None):
    """A table row from :func:`benchmarks._harness.time_jitted` / ``time_call`` output."""
    t = res["median_s"]
    compile_s = res.get("trace_lower_s", 0.0) + res["compile_s"]
    return dict(name=name, median_s=t, compile_s=compile_s, xla_bytes=res.get("xla_memory", {}).get("total_bytes"),
                peak_bytes=_harness.device_peak_bytes(), target=target)


def _jitted(name, fn, args, repeats, target=None):
    res = _harness.time_jitted(fn, args, repeats)
    return _row(name, res, target), res["out"]


def projector_rows(s, views_per_batch):
    case = PROJECTOR_CASES[s["case"]]
    activity, mu = projector_phantom(case)
    a = js.SPECTProjector(projector_geometry(case), jnp.asarray(mu), views_per_batch=views_per_batch)
    x = jnp.asarray(activity)
    y = jnp.asarray(np.random.default_rng(0).uniform(0.0, 10.0, a.out_shape).astype(np.float32))

    def loss(x, a, y):
        r = a(x) - y
        return 0.5 * jnp.sum(r * r)

    return [
        _jitted("forward", lambda a, x: a(x), (a, x), s["repeats"], TARGETS["forward"])[0],
        _jitted("back", lambda a, v: a.back(v), (a, y), s["repeats"], TARGETS["back"])[0],
        _jitted("grad", jax.grad(loss), (x, a, y), s["repeats"])[0],
    ]


def osem_rows(s, views_per_batch):
    n, nz, nview, voxel_mm = s["osem"]
    n_iter, n_subsets = s["osem_iter"]
    phantom, geometry = osem_problem(n, nz, nview, voxel_mm)
    mumap = jnp.asarray(phantom.mumap, jnp.float32)
    a = js.SPECTProjector(geometry, mumap, views_per_batch=views_per_batch, cache_attenuation=True)
    data = js.simulate(jax.random.key(1), jnp.asarray(phantom.activity, jnp.float32), a, total_counts=2e6,
                       scatter_fraction=0.1)
    x0 = jnp.ones(geometry.image_shape, jnp.float32)
    recon = lambda a, y, r: js.osem(a, y, x0, n_iter=n_iter, n_subsets=n_subsets, background=r).image
    row, x_osem = _jitted(f"OSEM {n_iter}x{n_subsets}", recon, (a, data.counts, data.background), s["repeats"],
                          TARGETS["OSEM 16x4"])
    rows = [row]
    # the unrolled EM's training example: this patient, the OSEM image as its warm start
    example = js.recon.TrainingData(js.recon.stack_projectors([a]), data.counts[None], data.background[None],
                                    x_osem[None], (jnp.asarray(phantom.activity, jnp.float32) * data.scale)[None])

    # batch OSEM: the same patient's projector, P noise realisations
    p = s["patients"]
    keys = jax.random.split(jax.random.key(2), p)
    ybar = data.counts  # any counts will do for timing; draw P realisations around them
    counts = jax.vmap(lambda k: jax.random.poisson(k, ybar + 1.0).astype(jnp.float32))(keys)
    timings = {}
    for m in (1, p):
        projectors = js.recon.stack_projectors([a] * m)
        run = lambda: jax.block_until_ready(js.recon.batch_osem(
            projectors, counts[:m], n_iter=n_iter, n_subsets=n_subsets, background=data.background))
        timings[m] = _harness.time_call(run, max(1, s["repeats"] // 2))
        rows.append(_row(f"batch OSEM x{m}", timings[m]))
    ratio = p * timings[1]["median_s"] / timings[p]["median_s"]
    return rows, ratio, example


def _training_step(name, make, loss, optimizer, batch, repeats, target=None):
    """Time one training step of the model ``make()``: ``loss(model, *batch)``, its gradient in
    the model's floating-point arrays, an ``optimizer`` update. The model is built under ``jit``
    (one compilation instead of one per initialisation op) from :data:`INIT_KEY`."""
    params, static = eqx.partition(eqx.filter_jit(make)(), eqx.is_inexact_array)
    opt_state = jax.jit(optimizer.init)(params)

    def step(params, opt_state, *batch):
        value, grads = jax.value_and_grad(lambda p: loss(eqx.combine(p, static), *batch))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, value

    row, (_, _, value) = _jitted(name, step, (params, opt_state, *batch), repeats, target)
    if not np.isfinite(float(value)):
        raise FloatingPointError(f"{name}: the training loss is not finite")
    return row


def unrolled_row(s, data):
    make = lambda: js.recon.UnrolledEM(lambda k: js.nn.PaperCNN(k), INIT_KEY, n_outer=s["n_outer"])
    loss = lambda model, data: js.recon.training_loss(model, data, js.recon.EndToEnd())
    return _training_step("unrolled EM step", make, loss, js.training.make_optimizer(1e-3), (data,), s["repeats"],
                          TARGETS["unrolled EM step"])


def _spectnet_loss(model, sinogram, mumap, activity):
    pred, _ = model(sinogram, mumap, training=True)
    return 0.5 * jnp.sum((pred - activity) ** 2)


def spectnet_row(s):
    n, batch = s["spectnet"]
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    sinogram = jax.random.uniform(k1, (batch, n, n)) * 100.0
    mumap = jax.random.uniform(k2, (batch, n, n)) * 0.015
    activity = jax.random.uniform(k3, (batch, n, n))
    return _training_step(f"SPECTnet step (batch {batch})", lambda: js.spectnet.SPECTnet(INIT_KEY, image_size=n),
                          _spectnet_loss, js.training.make_optimizer(1e-4, algorithm="adam", l2=0.08),
                          (sinogram, mumap, activity), s["repeats"])


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke run)")
    parser.add_argument("--views-per-batch", type=int, default=None,
                        help="views per loop step of the projector (default 16 on accelerators, 1 on CPU)")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL
    accel = jax.devices()[0].platform != "cpu"
    vpb = args.views_per_batch or (16 if accel else 1)

    start = time.perf_counter()
    print(_harness.machine_line())
    print(f"{'quick (tiny sizes)' if args.quick else 'the paper sizes'}; projector views_per_batch={vpb}\n",
          flush=True)
    rows = projector_rows(s, vpb)
    osem, ratio, example = osem_rows(s, vpb)
    rows += osem
    rows.append(unrolled_row(s, example))
    rows.append(spectnet_row(s))

    table = []
    for r in rows:
        target, verdict = "-", "-"
        if r["target"] is not None:
            target = f"<= {fmt_s(r['target'])}"
            verdict = "(quick)" if args.quick else ("PASS" if r["median_s"] <= r["target"] else "MISS")
        table.append([r["name"], fmt_s(r["median_s"]), f"{r['compile_s']:.1f} s", fmt_mib(r["xla_bytes"]),
                      fmt_mib(r["peak_bytes"]), target, verdict])
    table.append([f"batch throughput x{s['patients']} / x1", f"{ratio:.2f}x", "", "", "",
                  f">= {BATCH_THROUGHPUT_TARGET:.0f}x",
                  "(quick)" if args.quick else ("PASS" if ratio >= BATCH_THROUGHPUT_TARGET else "MISS")])
    print(_harness.table(table, ["", "median", "compile", "XLA MiB", "device peak MiB", "target", ""]))
    print("XLA MiB = arguments + outputs + temporaries of the compiled function (memory_analysis); device "
          "peak = the allocator's peak so far in this process (accelerators only)")
    print(f"total time: {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
