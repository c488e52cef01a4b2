"""OSEM 16 iterations x 4 subsets (the paper's warm start) on the paper's problem size.

Prints figures, asserts nothing. The problem: a torso phantom (``jaxspect.phantoms.torso_phantom``,
Lu-177 at 208 keV, 128 x 128 x 80 voxels of 4.8 mm, four liver lesions of 67/10/9/5 mL),
128 views over 360 degrees on a body-contouring orbit (10 mm clearance, as in the paper), a
depth-dependent Gaussian collimator response for a medium-energy collimator
(FWHM(d) = sqrt(2.5^2 + (0.1 d)^2) mm: ~10 mm at 100 mm), 2e6 primary counts with 10% uniform
scatter and Poisson noise.

For jaxspect's ``osem`` (jit-compiled ``lax`` loops) it reports the compile time, the run time
(median of ``--repeats`` runs), the peak memory (XLA's compiled memory analysis and the growth of
the process's peak RSS over one run), with and without the per-view attenuation cache, and the
per-VOI MAE / NRMSE table of the reconstruction (images normalised to 1 MBq per field of view).

Where ``torch`` and ``pytomography`` are installed, the same reconstruction with PyTomography is
run side by side (see ``benchmarks/_pytomography_peer.py``): time ratio and the NRMSE between the
two reconstructions.

Usage::

    python benchmarks/osem.py              # the paper's size (~2-4 min on 2 cores)
    python benchmarks/osem.py --small      # 64 x 64 x 40, 64 views: a quick look
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jaxspect as js  # noqa: E402
from jaxspect.metrics import format_table, voi_table  # noqa: E402
from jaxspect.phantoms import torso_phantom  # noqa: E402

FWHM0_MM, SLOPE = 2.5, 0.1  # medium-energy parallel-hole collimator (Lu-177)


def make_problem(n: int, nz: int, nview: int, voxel_mm: float, seed: int = 0):
    shape, vs = (n, n, nz), (voxel_mm,) * 3
    phantom = torso_phantom(jax.random.key(seed), shape=shape, voxel_size=vs, energy_kev=208.0)
    angles = 2 * np.pi * np.arange(nview) / nview
    psf = js.GaussianPSF(FWHM0_MM, SLOPE)
    probe = js.SPECTGeometry(shape, vs, psf, angles=angles, radii=n * voxel_mm)
    radii = np.asarray(probe.object_extent(phantom.masks["body"])) + 10.0
    geometry = js.SPECTGeometry(shape, vs, psf, angles=angles, radii=radii)
    return phantom, geometry


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_jaxspect(geometry, mumap, counts, background, n_iter, n_subsets, repeats, cache):
    projector = js.SPECTProjector(geometry, mumap, cache_attenuation=cache)
    x0 = jnp.ones(geometry.image_shape, jnp.float32)
    recon = jax.jit(
        lambda a, y, r: js.osem(a, y, x0, n_iter=n_iter, n_subsets=n_subsets, background=r).image
    )
    start = time.perf_counter()
    compiled = recon.lower(projector, counts, background).compile()
    compile_s = time.perf_counter() - start
    memory = compiled.memory_analysis()
    xla_bytes = None
    if memory is not None:
        xla_bytes = (
            memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )
    rss_before = peak_rss_mb()
    times = []
    image = None
    for _ in range(repeats):
        start = time.perf_counter()
        image = jax.block_until_ready(compiled(projector, counts, background))
        times.append(time.perf_counter() - start)
    return {
        "image": np.asarray(image),
        "compile_s": compile_s,
        "median_s": statistics.median(times),
        "times": times,
        "xla_mb": None if xla_bytes is None else xla_bytes / 2**20,
        "rss_growth_mb": peak_rss_mb() - rss_before,
    }


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
    phantom, geometry = make_problem(n, nz, nview, voxel_mm)
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
        label = "jaxspect (attenuation cached)" if cache else "jaxspect"
        results[label] = run_jaxspect(geometry, mumap, data.counts, data.background,
                                      args.iterations, args.subsets, args.repeats, cache)

    header = f"{'implementation':32s}{'run s':>10s}{'compile s':>11s}{'XLA MB':>10s}{'RSS +MB':>10s}"
    print(header)
    print("-" * len(header))
    for label, r in results.items():
        xla = "n/a" if r["xla_mb"] is None else f"{r['xla_mb']:.0f}"
        print(f"{label:32s}{r['median_s']:10.2f}{r['compile_s']:11.1f}{xla:>10s}{r['rss_growth_mb']:10.0f}")

    truth = phantom.activity
    reference = results["jaxspect"]["image"] / float(data.scale)
    masks = {name: m for name, m in phantom.masks.items() if name != "body"}
    print("\nOSEM vs truth (both normalised to 1 MBq per field of view):")
    print(format_table(voi_table(jnp.asarray(reference), jnp.asarray(truth), masks)))

    if args.no_peer:
        return
    try:
        from _pytomography_peer import pytomography_osem  # noqa: PLC0415
    except ImportError as err:
        print(f"\nPyTomography peer skipped ({err}); install with: pip install torch==2.13.0 pytomography")
        return
    peer = pytomography_osem(phantom, geometry, np.asarray(data.counts), np.asarray(data.background),
                             args.iterations, args.subsets)
    if peer is None:
        print("\nPyTomography peer skipped: torch/pytomography not importable "
              "(pip install torch==2.13.0 pytomography)")
        return
    ours = results["jaxspect"]
    diff = np.linalg.norm(peer["image"] / float(data.scale) - reference) / np.linalg.norm(reference)
    print(f"\nPyTomography OSEM: {peer['median_s']:.2f} s; jaxspect/PyTomography time ratio "
          f"{ours['median_s'] / peer['median_s']:.2f}; NRMSE between the reconstructions {100 * diff:.1f}%")


if __name__ == "__main__":
    main()
