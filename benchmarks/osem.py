"""OSEM 16 iterations x 4 subsets (the paper's warm start) on the paper's problem size.

Prints figures, asserts nothing. Run from the repository root::

    python -m benchmarks.osem              # the paper's size (~3-5 min on 2 cores)
    python -m benchmarks.osem --small      # 64 x 64 x 40, 64 views: a quick look

The problem (:func:`benchmarks.problems.osem_problem`): a torso phantom (Lu-177 at 208 keV,
128 x 128 x 80 voxels of 4.8 mm, four liver lesions of 67/10/9/5 mL), 128 views over 360
degrees on a body-contouring orbit (10 mm clearance), a medium-energy collimator response
FWHM(d) = sqrt(2.5^2 + (0.1 d)^2) mm, 2e6 primary counts with 10% uniform scatter and Poisson
noise.

For jaxspect's ``osem`` (jit-compiled ``lax`` loops), with and without the per-view
attenuation cache (``SPECTProjector(..., cache_attenuation=True)``), it reports the compile
time, the run time (median of ``--repeats`` runs), XLA's compiled memory (arguments + outputs +
temporaries) and the increase of the process's peak RSS over one run (peak reset first, Linux).
Then the cost of the cache: its size, the peak growth it causes (the cache itself plus the
extra temporaries of the cached run, by XLA's analysis and by RSS) and their ratio (at most
1.5 is the target), and the time it saves. Last, the per-VOI MAE / NRMSE table of the
reconstruction (images normalised to 1 MBq per field of view).

Where ``torch`` and ``pytomography`` are installed, the same reconstruction with PyTomography is
run side by side (``benchmarks/_pytomography_peer.py``): time ratio and the NRMSE between the
two reconstructions.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jaxspect as js
from benchmarks import _pytomography_peer
from benchmarks._harness import MIB, fmt_mib, rss_of_one_call, time_jitted
from benchmarks.problems import osem_problem
from jaxspect.metrics import format_table, voi_table


def run_jaxspect(geometry, mumap, counts, background, n_iter, n_subsets, repeats, cache):
    projector = js.SPECTProjector(geometry, mumap, cache_attenuation=cache)
    x0 = jnp.ones(geometry.image_shape, jnp.float32)
    recon = lambda a, y, r: js.osem(a, y, x0, n_iter=n_iter, n_subsets=n_subsets, background=r).image
    args = (projector, counts, background)
    res = time_jitted(recon, args, repeats)
    compiled = res.pop("compiled")
    res.update(rss_of_one_call(lambda: jax.block_until_ready(compiled(*args))))
    res["image"] = np.asarray(res.pop("out"))
    res["cache_bytes"] = 0 if projector.attenuation is None else projector.attenuation.nbytes
    return res


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="64x64x40, 64 views instead of the paper's size")
    parser.add_argument("--iterations", type=int, default=16)
    parser.add_argument("--subsets", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--counts", type=float, default=2e6, help="total primary counts")
    parser.add_argument("--no-peer", action="store_true", help="skip PyTomography even if installed")
    args = parser.parse_args(argv)

    n, nz, nview = (64, 40, 64) if args.small else (128, 80, 128)
    voxel_mm = 9.6 if args.small else 4.8
    print(f"jax {jax.__version__} on {jax.devices()[0].platform.upper()}, {jax.device_count()} device(s)")
    phantom, geometry = osem_problem(n, nz, nview, voxel_mm)
    mumap = jnp.asarray(phantom.mumap, jnp.float32)
    projector = js.SPECTProjector(geometry, mumap)
    data = js.simulate(jax.random.key(1), jnp.asarray(phantom.activity, jnp.float32), projector,
                       total_counts=args.counts, scatter_fraction=0.1)
    psf_taps = geometry.psf.as_array(geometry.view_subset(np.arange(1))).shape[:2]
    print(
        f"problem: {n}x{n}x{nz} voxels of {voxel_mm} mm, {nview} views, orbit "
        f"{float(geometry.radii.min()):.0f}-{float(geometry.radii.max()):.0f} mm, PSF {psf_taps[0]}x{psf_taps[1]} taps, "
        f"{float(data.counts.sum()):.3g} counts (10% scatter)"
    )
    print(f"OSEM {args.iterations} iterations x {args.subsets} subsets, float32\n")

    results = {}
    for cache in (False, True):
        results[cache] = run_jaxspect(geometry, mumap, data.counts, data.background,
                                      args.iterations, args.subsets, args.repeats, cache)

    header = f"{'implementation':32s}{'run s':>10s}{'compile s':>11s}{'XLA MiB':>10s}{'temp MiB':>10s}{'RSS+ MiB':>10s}"
    print(header)
    print("-" * len(header))
    for cache, r in results.items():
        label = "jaxspect (attenuation cached)" if cache else "jaxspect"
        mem = r["xla_memory"]
        print(f"{label:32s}{r['median_s']:10.2f}{r['trace_lower_s'] + r['compile_s']:11.1f}"
              f"{fmt_mib(mem.get('total_bytes')):>10s}{fmt_mib(mem.get('temp_size_in_bytes')):>10s}"
              f"{fmt_mib(r['rss_increase_bytes']):>10s}")
    plain, cached = results[False], results[True]
    cache_bytes = cached["cache_bytes"]
    if cache_bytes:
        extra_temp = cached["xla_memory"].get("temp_size_in_bytes", 0) - plain["xla_memory"].get("temp_size_in_bytes", 0)
        extra_rss = cached["rss_increase_bytes"] - plain["rss_increase_bytes"]
        saved = plain["median_s"] - cached["median_s"]
        per_iteration = saved / max(args.iterations, 1)
        print(f"\nattenuation cache: {cache_bytes / MIB:.0f} MiB ({nview} views x {n}x{n}x{nz} float32)")
        print(f"  peak growth = cache + extra temporaries of the cached run: by XLA "
              f"{(cache_bytes + extra_temp) / MIB:.0f} MiB ({(cache_bytes + extra_temp) / cache_bytes:.2f}x the cache), "
              f"by RSS {(cache_bytes + extra_rss) / MIB:.0f} MiB ({(cache_bytes + extra_rss) / cache_bytes:.2f}x); "
              "target <= 1.5x")
        print(f"  time saved: {saved:.2f} s per reconstruction ({per_iteration:.3f} s per iteration, "
              f"{100 * saved / plain['median_s']:.0f}%)")
    if not np.allclose(cached["image"], plain["image"], rtol=1e-3, atol=1e-4 * plain["image"].max()):
        print("WARNING: the cached and uncached reconstructions differ")

    truth = phantom.activity
    reference = plain["image"] / float(data.scale)
    masks = {name: m for name, m in phantom.masks.items() if name != "body"}
    print("\nOSEM vs truth (both normalised to 1 MBq per field of view):")
    print(format_table(voi_table(jnp.asarray(reference), jnp.asarray(truth), masks)))

    if args.no_peer:
        return
    peer = _pytomography_peer.pytomography_osem(phantom, geometry, np.asarray(data.counts),
                                                np.asarray(data.background), args.iterations, args.subsets)
    if peer is None:
        print("\nPyTomography peer skipped: torch/pytomography not importable "
              "(pip install torch==2.13.0 pytomography)")
        return
    diff = np.linalg.norm(peer["image"] / float(data.scale) - reference) / np.linalg.norm(reference)
    print(f"\nPyTomography OSEM: {peer['median_s']:.2f} s; jaxspect/PyTomography time ratio "
          f"{plain['median_s'] / peer['median_s']:.2f}; NRMSE between the reconstructions {100 * diff:.1f}%")


if __name__ == "__main__":
    main()
