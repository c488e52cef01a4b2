"""Noise vs lesion contrast recovery: OSEM, OSL-quadratic, BSREM-RDP and (optionally) a trained
unrolled EM on the torso phantom.

Prints figures and writes a PNG; asserts nothing. The patient is ``benchmarks.problems.make_patient``
(the problem of ``training_methods.py``: same phantom family, orbit, collimator, count level and
scatter, data simulated on a 2x finer grid and binned, so a model trained there is a fair point
on the same plot): torso phantom with liver lesions of 67/10/9/5 mL, Poisson noise,
``--realisations`` independent realisations (default 5).

Figures, per method and setting, over the realisations:

- noise: the voxel-wise standard deviation across realisations, averaged over the liver
  (lesions excluded), relative to the mean liver value (%);
- contrast recovery (CR) of each lesion against the liver, ``js.metrics.contrast_recovery``,
  averaged over the realisations; "CR" is the mean over the four lesions.

Curves: OSEM (4 subsets) over iterations 1..16, OSEM 16 x 4 with Gaussian post-filters
(FWHM 0.5..3 voxels), OSL-EM with the quadratic prior (16 x 4) and BSREM with the relative
difference prior (gamma 2, 20 iterations x 4 subsets, relaxation 1 / (1 + 0.1 k)) over a range
of beta (see ``jaxspect.bsrem`` for what beta means). The quadratic prior's beta has units
1 / image value, so it is given as ``c / m`` with ``m`` the mean liver value of OSEM 16 x 4
and ``c`` on the RDP's beta grid (the RDP's curvature at ``x_j = x_k = m`` is ``1 / m`` times the
quadratic's, so equal ``c`` means about equal smoothing in the liver). ``--model FILE`` adds a
trained unrolled EM (``jaxspect.load_model``), run as in training from the OSEM 16 x 4 image.

Usage::

    python -m benchmarks.map                    # problems.py's default size (~10 min on 2 busy cores)
    python -m benchmarks.map --quick            # its quick size: a smoke run (~3 min)
    python -m benchmarks.map --model model.eqx  # + the unrolled EM saved by training_methods.py --save-model
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxspect as js

from benchmarks.problems import SIZES, make_patient  # the unrolled EM's training set-up

LESIONS = ("lesion_1", "lesion_2", "lesion_3", "lesion_4")


def figures(images, patient):
    """Noise (%) in the liver and lesion CRs of ``images`` ``(R, nx, ny, nz)``."""
    images = np.asarray(images)
    masks, target = patient["masks"], np.asarray(patient["target"])
    liver = masks["liver"] & ~np.any([masks[name] for name in LESIONS], axis=0)
    noise = 100 * np.mean(np.std(images, axis=0)[liver]) / np.mean(images[:, liver])
    crs = [np.mean([float(js.metrics.contrast_recovery(x, target, masks[name], liver)) for x in images])
           for name in LESIONS]
    return {"noise %": noise, "CR": float(np.mean(crs)), **{f"CR {name[-1]}": cr for name, cr in zip(LESIONS, crs)}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="32x32x20, 32 views, fewer settings")
    parser.add_argument("--realisations", type=int, default=5, help="noise realisations (>= 2; default 5)")
    parser.add_argument("--size", choices=list(SIZES), default="default", help="benchmarks.problems size")
    parser.add_argument("--counts", type=float, default=None, help="total primary counts (default: the size's)")
    parser.add_argument("--seed", type=int, default=100, help="phantom seed (default 100: not a training patient)")
    parser.add_argument("--model", help="a trained unrolled EM (jaxspect.save_model file) to add as one point")
    parser.add_argument("--output", default="map_noise_contrast.png", help="PNG plot to write")
    args = parser.parse_args(argv)
    if args.realisations < 2:
        parser.error("--realisations must be at least 2 (noise is a standard deviation across them)")
    model = None
    if args.model:
        if not Path(args.model).is_file():
            parser.error(f"--model file not found: {args.model}")
        model = js.load_model(args.model)

    size = SIZES["quick" if args.quick else args.size]
    if args.counts is not None:
        size = dataclasses.replace(size, counts=args.counts)
    voxel = size.voxel_mm
    if args.quick:
        osem_iters, fwhms_vox = (1, 2, 4, 8, 16), (1.0, 2.0)
        betas = (1e-4, 1e-3)
    else:
        osem_iters, fwhms_vox = (1, 2, 3, 4, 6, 8, 12, 16), (0.5, 1.0, 1.5, 2.0, 3.0)
        betas = (1e-4, 3e-4, 1e-3, 3e-3)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform.upper()} ({os.cpu_count()} CPUs, load {load:.1f})")
    print(f"problem: {size.describe()}; {args.realisations} noise realisations")

    start = time.perf_counter()
    patient = make_patient(args.seed, size, args.realisations)
    a, ys, r = patient["projector"], patient["counts"], patient["background"]
    x0 = jnp.ones(a.in_shape, jnp.float32)
    vs = a.geometry.voxel_size

    @eqx.filter_jit
    def each(method, starts=None, **options):
        starts = jnp.broadcast_to(x0, (len(ys), *x0.shape)) if starts is None else starts
        return jax.vmap(lambda y, start: method(a, y, start, background=r, **options).image)(ys, starts)

    rows = []  # (family, setting, figures)

    def add(family, setting, images):
        rows.append((family, setting, figures(images, patient)))
        f = rows[-1][2]
        print(f"  {family:14s} {setting:>16s}  noise {f['noise %']:6.2f} %   CR {f['CR']:.3f}   "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

    images = None
    for k in range(1, max(osem_iters) + 1):  # OSEM is Markov: one iteration at a time gives every iterate
        images = each(js.osem, images, n_iter=1, n_subsets=4)
        if k in osem_iters:
            add("OSEM", f"{k} it x 4", images)
    for fwhm in fwhms_vox:
        filtered = jnp.stack([js.gaussian_filter(x, fwhm * voxel, vs) for x in images])
        add("OSEM+filter", f"16x4, {fwhm * voxel:.1f} mm", filtered)
    osem16 = images
    quadratic = js.QuadraticPrior(vs)
    liver = patient["masks"]["liver"]
    m = float(np.mean(np.asarray(osem16)[:, liver]))
    for c in betas:
        add("OSL-quadratic", f"beta {c:g}/{m:.3g}", each(js.osl_em, prior=quadratic, beta=jnp.float32(c / m),
                                                         n_iter=16, n_subsets=4))
    rdp = js.RelativeDifferencePrior(gamma=2.0, voxel_size=vs)
    for beta in betas:
        add("BSREM-RDP", f"beta {beta:g}", each(js.bsrem, prior=rdp, beta=jnp.float32(beta), n_iter=20,
                                                n_subsets=4))
    if model is not None:
        warm = osem16
        run = eqx.filter_jit(lambda x, y: model(x, a, y, r))
        add("unrolled EM", Path(args.model).name, jnp.stack([run(x, y) for x, y in zip(warm, ys)]))

    print(f"\n| method | setting | liver noise % | CR (mean) | CR 67 mL | CR 10 mL | CR 9 mL | CR 5 mL |")
    print("|---|---|---|---|---|---|---|---|")
    for family, setting, f in rows:
        print(f"| {family} | {setting} | {f['noise %']:.2f} | {f['CR']:.3f} | {f['CR 1']:.3f} | {f['CR 2']:.3f} | "
              f"{f['CR 3']:.3f} | {f['CR 4']:.3f} |")
    print(f"total {time.perf_counter() - start:.0f} s")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    styles = {"OSEM": "o-", "OSEM+filter": "s--", "OSL-quadratic": "^-", "BSREM-RDP": "D-", "unrolled EM": "*"}
    for family, style in styles.items():
        points = [(f["noise %"], f["CR"]) for fam, _, f in rows if fam == family]
        if points:
            ax.plot(*zip(*points), style, label=family, markersize=14 if family == "unrolled EM" else 5)
    ax.set_xlabel(f"liver noise (std over {args.realisations} realisations), %")
    ax.set_ylabel("lesion contrast recovery (mean of 4)")
    ax.set_title(f"torso {size.n}x{size.n}x{size.nz}, {size.nview} views, {size.counts:.2g} counts")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(args.output, dpi=120, bbox_inches="tight")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
