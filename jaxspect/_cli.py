"""The ``jaxspect`` command line: ``demo``, ``simulate``, ``reconstruct``.

Each command runs parse -> validate -> load -> run -> write. Errors a user can fix (missing,
refused or unreadable files, unknown formats, out-of-range numbers, inconsistent shapes or
units, outputs that exist or equal an input) are found before any computation where possible
and print one ``jaxspect: error: ...`` line naming the file or argument on stderr, exit status
2, without a traceback. File-level checks live in :mod:`jaxspect.io` (shared with the API);
only :class:`UsageError` and :class:`jaxspect.io.FileCheckError` (and a missing optional
dependency) are turned into that exit, so a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

from .io._safety import FileCheckError

# `simulate`'s default collimator response: a medium-energy parallel-hole collimator for Lu-177
# (208 keV), as in the demo; written into the simulated file's header, which `reconstruct` reads.
DEFAULT_FWHM0_MM, DEFAULT_SLOPE = 2.5, 0.1
# Interfile keys that carry a Gaussian PSF (jaxspect's own keys, written by `simulate`).
PSF_FWHM0_KEY, PSF_SLOPE_KEY = "gaussian psf fwhm0 (mm)", "gaussian psf slope"
# Sizes of the simulated phantom (simulate, demo) and count levels the Poisson sampler can draw.
MAX_SIZE, MAX_SLICES, MAX_VIEWS, MAX_COUNTS = 512, 512, 1024, 1e9


class UsageError(Exception):
    """A problem with the user's input: reported on stderr, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxspect", description="SPECT reconstruction in JAX")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="torso phantom -> projections -> back projection -> OSEM, with figures")
    demo.add_argument("--size", type=int, default=64, help="in-plane voxels (default 64, 9.6 mm each)")
    demo.add_argument("--slices", type=int, default=40, help="axial slices (default 40)")
    demo.add_argument("--views", type=int, default=64, help="number of views (default 64)")
    demo.add_argument("--rotation", choices=("bilinear", "three_pass"), default="bilinear")
    demo.add_argument("--output", default="jaxspect-demo-output",
                      help="folder for the PNG figures and NIfTI volumes (default ./jaxspect-demo-output)")
    demo.add_argument("--model", help="also run a trained unrolled EM (jaxspect.save_model file) from the OSEM image")
    demo.add_argument("--overwrite", action="store_true", help="replace the demo's files in --output if they exist")

    sim = sub.add_parser("simulate", help="torso phantom -> noisy projections (Interfile or DICOM NM) + truth volumes "
                         "(NIfTI) [+ a CT series]")
    sim.add_argument("--output", required=True, help="Interfile header to write, e.g. sim.h00 (data: sim.a00), or a "
                     "DICOM NM file sim.dcm (Lu-177, in scanner coordinates, with timing and radiopharmaceutical)")
    sim.add_argument("--size", type=int, default=64, help="in-plane voxels (default 64)")
    sim.add_argument("--slices", type=int, default=40, help="axial slices (default 40)")
    sim.add_argument("--views", type=int, default=64, help="number of views over 360 degrees (default 64)")
    sim.add_argument("--voxel-mm", type=float, default=None, help="voxel size, mm (default 614.4 / size)")
    sim.add_argument("--counts", type=float, default=2e6, help="expected primary counts in all views (default 2e6)")
    sim.add_argument("--scatter-fraction", type=float, default=0.1, help="uniform scatter / primary (default 0.1)")
    sim.add_argument("--seed", type=int, default=0, help="phantom and noise seed (default 0)")
    sim.add_argument("--fwhm0", type=float, default=DEFAULT_FWHM0_MM, help="PSF FWHM at the detector, mm")
    sim.add_argument("--slope", type=float, default=DEFAULT_SLOPE, help="PSF FWHM growth per mm of distance")
    sim.add_argument("--overwrite", action="store_true", help="replace existing output files")

    rec = sub.add_parser("reconstruct", help="OSEM/ML-EM of Interfile (.h00), STIR (.hs) or DICOM NM (.dcm) "
                         "projections")
    rec.add_argument("projections", help="Interfile header (.h00/.hdr; SIMIND's read with all its windows), STIR "
                     "projection data (.hs) or DICOM NM file (.dcm)")
    rec.add_argument("--output", required=True, help="reconstructed image: NIfTI (.nii or .nii.gz), or a folder "
                     "with --format dicom")
    rec.add_argument("--mumap", help="attenuation map on the reconstruction grid (nx, nx, nz): NIfTI, STIR image "
                     "(.hv, 1/cm unless --mumap-units) or SIMIND density map (.hct, converted at the photopeak energy)")
    rec.add_argument("--mumap-units", choices=("per_mm", "per_cm"), default=None,
                     help="units of --mumap values: 1/mm or 1/cm; if not given, NIfTI maps are read as 1/mm and "
                          "refused if they look like 1/cm or HU, STIR .hv maps as 1/cm (STIR's unit)")
    rec.add_argument("--algorithm", choices=("osem", "mlem", "osl", "bsrem"), default="osem",
                     help="osl (one-step-late EM) and bsrem are regularised: give --beta (default osem)")
    rec.add_argument("--iterations", type=int, default=8, help="full iterations (default 8)")
    rec.add_argument("--subsets", type=int, default=4, help="OSEM subsets (default 4)")
    rec.add_argument("--psf", choices=("gaussian", "none"), default="gaussian", help="collimator response model")
    rec.add_argument("--fwhm0", type=float, help="Gaussian PSF FWHM at the detector, mm (with --slope, instead of --collimator)")
    rec.add_argument("--slope", type=float, help="FWHM growth per mm of distance (with --fwhm0)")
    rec.add_argument("--scatter", choices=("none", "tew", "dew"), default="none",
                     help="scatter estimate from the DICOM energy windows (default none)")
    rec.add_argument("--background", help="mean scatter counts, an Interfile/DICOM file shaped like the projections")
    rec.add_argument("--window", help="DICOM photopeak energy window: name or 1-based number")
    rec.add_argument("--radius", type=float, help="orbit radius, mm, when the file lacks it (overrides the file)")
    rec.add_argument("--cor", help="SIMIND orbit file (.cor, one radius per view, cm) for Interfile projections")
    rec.add_argument("--model", help="trained unrolled EM (jaxspect.save_model file), run from the OSEM/ML-EM image "
                     "(its warm start: use --iterations 16 --subsets 4 as in training)")
    rec.add_argument("--no-progress", action="store_true", help="do not print the iteration progress")
    rec.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    _add_map_arguments(rec)
    from . import _cli_clinical as clinical

    clinical.add_simulate_arguments(sim)
    clinical.add_reconstruct_arguments(rec)
    clinical.add_subcommands(sub)
    return parser


# --- regularised reconstruction and post-filter (reconstruct) ---------------------------------


def _add_map_arguments(rec):
    rec.add_argument("--prior", choices=("quadratic", "rdp"), default="rdp",
                     help="prior of --algorithm osl/bsrem: quadratic or relative difference (default rdp)")
    rec.add_argument("--beta", type=float, help="prior strength of osl/bsrem, relative to the mean sensitivity "
                     "(see jaxspect.bsrem); required for them")
    rec.add_argument("--gamma", type=float, default=2.0, help="edge preservation of the rdp prior (default 2)")
    rec.add_argument("--postfilter", metavar="MM", help="Gaussian post-filter FWHM in mm, one number or x,y,z")


def _check_map_arguments(args):
    """Validate the regularisation and post-filter options; returns the post-filter FWHM (or None)."""
    if args.algorithm in ("osl", "bsrem"):
        if args.beta is None:
            raise UsageError(f"--algorithm {args.algorithm} needs --beta (e.g. 3e-4 for rdp; see jaxspect.bsrem)")
        if not args.beta >= 0 or args.beta == float("inf"):
            raise UsageError(f"--beta must be a finite number >= 0, got {args.beta}")
        if not args.gamma >= 0 or args.gamma == float("inf"):
            raise UsageError(f"--gamma must be a finite number >= 0, got {args.gamma}")
    elif args.beta is not None:
        raise UsageError(f"--beta applies to --algorithm osl or bsrem, not {args.algorithm}")
    if args.postfilter is None:
        return None
    try:
        fwhm = [float(v) for v in args.postfilter.split(",")]
    except ValueError:
        fwhm = []
    if len(fwhm) not in (1, 3) or not all(0 <= f < float("inf") for f in fwhm):
        raise UsageError(f"--postfilter must be a FWHM in mm >= 0, or three as x,y,z, got {args.postfilter!r}")
    return fwhm[0] if len(fwhm) == 1 else tuple(fwhm)


def _map_reconstruct(args, projector, y, x0, background, voxel_size, progress):
    from .recon import QuadraticPrior, RelativeDifferencePrior, bsrem, osl_em

    if args.prior == "quadratic":
        prior = QuadraticPrior(voxel_size)
    else:
        prior = RelativeDifferencePrior(gamma=args.gamma, voxel_size=voxel_size)
    algorithm = osl_em if args.algorithm == "osl" else bsrem
    if args.subsets > y.shape[-1]:
        raise UsageError(f"--subsets {args.subsets} exceeds the number of views ({y.shape[-1]})")
    return algorithm(projector, y, x0, prior=prior, beta=args.beta, n_iter=args.iterations, n_subsets=args.subsets,
                     background=background, progress=progress).image


def _positive(name, value, kind=float, maximum=math.inf):
    """``value`` must be finite, > 0 (an integer for ``kind=int``) and <= ``maximum``."""
    if value is None or not 0 < value < math.inf or (kind is int and int(value) != value):
        raise UsageError(f"{name} must be a {'positive integer' if kind is int else 'finite positive number'}, got {value}")
    if value > maximum:
        raise UsageError(f"{name} must be at most {maximum:g}, got {value}")


def _non_negative(name, value, maximum=math.inf):
    if not 0 <= value <= maximum:
        raise UsageError(f"{name} must be a finite number in [0, {maximum:g}], got {value}")


def _input_file(path, what) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} file not found: {path}" if not path.exists() else f"{what} {path} is not a file")
    return path


def _read(path, what, **kwargs):
    from . import io as jio

    path = _input_file(path, what)
    try:
        return jio.read_projections(path, **kwargs)
    except (ValueError, FileNotFoundError, ImportError, TypeError) as e:
        raise UsageError(f"{what} {path}: {e}") from None


def _load_unrolled(path):
    from ._serialization import load_model
    from .recon import UnrolledEM

    path = _input_file(path, "--model")
    try:
        model = load_model(path)
    except (ValueError, TypeError, OSError) as e:
        raise UsageError(f"--model {path}: {e}") from None
    if not isinstance(model, UnrolledEM):
        raise UsageError(f"--model {path} holds a {type(model).__name__}, expected a trained UnrolledEM "
                         "(saved with jaxspect.save_model)")
    return model


def _check_outputs(paths, args, inputs) -> None:
    """Every output: not existing (unless --overwrite), not an input, its folder writable."""
    from . import io as jio

    for path in paths:
        jio.check_output(path, overwrite=args.overwrite, inputs=[p for p in inputs if p], what="output")


def reconstruct(args) -> Path:
    import jax.numpy as jnp
    import numpy as np

    from . import _cli_clinical as clinical
    from . import io as jio
    from ._projector import SPECTProjector
    from ._psf import ExplicitPSF
    from .recon import mlem, osem

    # validate the arguments and the output before reading anything big
    output = Path(args.output)
    is_nifti = output.name.endswith(".nii") or output.name.endswith(".nii.gz")
    if args.format == "nifti" and not is_nifti:
        raise UsageError(f"--output must be a NIfTI file (.nii or .nii.gz), got {output} (or pass --format dicom "
                         "and a folder)")
    if args.format == "dicom" and (is_nifti or output.is_file()):
        raise UsageError(f"--format dicom writes into a folder; --output {output} is a file name")
    if args.ct and args.mumap:
        raise UsageError("give either --ct (a CT series) or --mumap (an attenuation map), not both")
    _positive("--iterations", args.iterations, int)
    if args.algorithm != "mlem":
        _positive("--subsets", args.subsets, int)
    if args.radius is not None:
        _positive("--radius", args.radius)
    if args.psf == "gaussian":
        if args.fwhm0 is not None:
            _positive("--fwhm0", args.fwhm0)
        if args.slope is not None:
            _non_negative("--slope", args.slope)
    postfilter = _check_map_arguments(args)
    suffix = Path(args.projections).suffix.lower()
    kwargs = {}
    if suffix in jio.DICOM_SUFFIXES:
        kwargs["scatter"] = args.scatter
        if args.window is not None:
            kwargs["window"] = int(args.window) if args.window.isdigit() else args.window
        if args.radius is not None:
            kwargs["radius_mm"] = args.radius
        if args.cor:
            raise UsageError("--cor applies to Interfile projections only")
    elif suffix in jio.INTERFILE_SUFFIXES:
        simind = Path(args.projections).is_file() and jio.is_simind_header(args.projections)
        if simind:
            kwargs["scatter"] = args.scatter
            if args.window is not None:
                kwargs["window"] = args.window
        elif args.scatter != "none" or args.window is not None:
            option = f"--scatter {args.scatter}" if args.scatter != "none" else "--window"
            raise UsageError(f"{option} needs the energy windows of a DICOM file or of SIMIND's _w1/_w2/_w3 files; "
                             f"{args.projections} has one: pass the scatter estimate with --background")
        if args.cor:
            kwargs["cor"] = str(_input_file(args.cor, "--cor"))
    elif suffix == jio.STIR_PROJECTION_SUFFIX:
        if args.scatter != "none" or args.window is not None:
            option = f"--scatter {args.scatter}" if args.scatter != "none" else "--window"
            raise UsageError(f"{option} needs several energy windows; a STIR .hs file holds one: pass the scatter "
                             "estimate (another .hs) with --background")
        if args.cor:
            raise UsageError("--cor applies to SIMIND Interfile projections; STIR's .hs gives its orbit with 'Radii'")
    _input_file(args.projections, "projections")
    # --format dicom writes recon.dcm into the --output folder: that file is the output to check
    _check_outputs([output / "recon.dcm" if args.format == "dicom" else output], args,
                   [args.projections, args.mumap, args.background, args.cor, args.model])

    model = _load_unrolled(args.model) if args.model else None
    data = _read(args.projections, "projections", **kwargs)
    if (suffix in jio.INTERFILE_SUFFIXES or suffix == jio.STIR_PROJECTION_SUFFIX) and args.radius is not None:
        data = dataclasses.replace(data, radii=args.radius)
    if args.algorithm != "mlem" and args.subsets > data.nview:
        raise UsageError(f"--subsets {args.subsets} exceeds the number of views ({data.nview})")

    background = data.background
    if args.background:
        extra = _read(args.background, "--background")
        if extra.counts.shape != data.counts.shape:
            raise UsageError(f"--background {args.background} has shape {extra.counts.shape}, "
                             f"the projections {data.counts.shape}")
        background = extra.counts if background is None else background + extra.counts

    image_shape, voxel_size = data.image_shape, data.voxel_size_mm
    mumap = None
    if args.mumap and Path(args.mumap).suffix.lower() == jio.SIMIND_DENSITY_MAP_SUFFIX:
        mumap = clinical.simind_mumap(args, data)
    elif args.mumap:
        try:
            mumap = jio.read_mumap(_input_file(args.mumap, "--mumap"), args.mumap_units, image_shape=image_shape,
                                   voxel_size_mm=voxel_size)
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise UsageError(f"--mumap: {e}") from None

    if args.ct:
        mumap = clinical.ct_mumap(args, data)

    if args.psf == "gaussian":
        psf = clinical.gaussian_psf(args, data)
    else:
        if args.collimator or args.fwhm0 is not None or args.slope is not None:
            raise UsageError("--psf none takes no --collimator, --fwhm0 or --slope")
        psf = ExplicitPSF(np.ones((1, 1, image_shape[1], data.nview), np.float32))
    try:
        geometry = data.spect_geometry(psf)
        projector = SPECTProjector(geometry, None if mumap is None else jnp.asarray(mumap, jnp.float32))
    except ValueError as e:
        raise UsageError(f"inconsistent geometry: {e}") from None

    y = jnp.asarray(data.counts)
    x0 = jnp.ones(image_shape, jnp.float32)
    r = None if background is None else jnp.asarray(background)
    progress = not args.no_progress
    print(f"jaxspect: {args.algorithm} of {args.projections}: projections {data.counts.shape}, image {image_shape} "
          f"of {voxel_size[0]:.3g} x {voxel_size[1]:.3g} x {voxel_size[2]:.3g} mm, "
          f"{'attenuation' if mumap is not None else 'no attenuation'}, "
          f"{'scatter background' if r is not None else 'no scatter'}", flush=True)
    if args.algorithm == "osem":
        image = osem(projector, y, x0, n_iter=args.iterations, n_subsets=args.subsets, background=r, progress=progress).image
    elif args.algorithm == "mlem":
        image = mlem(projector, y, x0, n_iter=args.iterations, background=r, progress=progress).image
    else:
        image = _map_reconstruct(args, projector, y, x0, r, voxel_size, progress)
    if model is not None:
        print(f"jaxspect: unrolled model {args.model} ({model.n_outer} outer x {model.n_inner} inner iterations) "
              f"from the {args.algorithm} image", flush=True)
        image = model(image, projector, y, r)
    if postfilter is not None:
        from ._filter import gaussian_filter

        image = gaussian_filter(image, postfilter, voxel_size)
    image = np.asarray(image)
    image, units, description = clinical.quantify(args, data, image)
    if args.format == "dicom":
        corrections = ("ATTN",) if mumap is not None else ()
        corrections += ("DECY",) if args.decay_to else ()
        output = _write(output, lambda: jio.write_dicom_volume(output, image, data.image_affine, units=units,
                                                              reference=data.metadata, corrections=corrections))
    else:
        _write(output, lambda: jio.write_nifti(output, image, voxel_size, affine=data.image_affine,
                                               description=f"jaxspect {'Bq/mL' if units == 'BQML' else 'counts'} ({units})"))
    where = "the patient origin" if data.centre_mm is None else f"patient ({', '.join(f'{v:.1f}' for v in data.centre_mm)}) mm"
    print(f"jaxspect: wrote {output} ({image_shape}, voxels {voxel_size} mm, {description}, grid centre at {where})")
    return output


def _write(path, write):
    """Run ``write()``; an OS error (disk full, folder removed meanwhile) becomes a user error."""
    try:
        return write()
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def _sizes(args) -> None:
    _positive("--size", args.size, int, MAX_SIZE)
    _positive("--slices", args.slices, int, MAX_SLICES)
    _positive("--views", args.views, int, MAX_VIEWS)


def _phantom(shape, voxel_size, seed=0):
    import jax

    from .phantoms import torso_phantom

    try:
        return torso_phantom(jax.random.key(seed), shape=shape, voxel_size=voxel_size)
    except ValueError as e:
        raise UsageError(f"--size/--slices/--voxel-mm: the torso phantom does not fit {shape} voxels of "
                         f"{voxel_size[0]:.3g} mm: {e}") from None


def simulate_files(args) -> list[Path]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from . import io as jio
    from ._geometry import SPECTGeometry
    from ._projector import SPECTProjector
    from ._psf import GaussianPSF
    from ._simulate import simulate
    from .phantoms import LU177_KEV

    output = Path(args.output)
    dicom = output.suffix.lower() in jio.DICOM_SUFFIXES
    if dicom:
        data_path = None
    else:
        try:
            data_path = jio.interfile_data_path(output)
        except ValueError as e:
            raise UsageError(f"--output must be an Interfile header or a DICOM file ({', '.join(jio.DICOM_SUFFIXES)}): "
                             f"{e}") from None
    if args.ct and not dicom:
        raise UsageError("--ct needs a DICOM --output (Interfile has no patient coordinates)")
    _positive("--activity-mbq", args.activity_mbq)
    _positive("--time-per-view", args.time_per_view)
    _sizes(args)
    _positive("--counts", args.counts, float, MAX_COUNTS)
    _non_negative("--scatter-fraction", args.scatter_fraction, 100.0)
    _positive("--fwhm0", args.fwhm0)
    _non_negative("--slope", args.slope)
    if not 0 <= args.seed < 2**31:
        raise UsageError(f"--seed must be in [0, 2^31), got {args.seed}")
    voxel = args.voxel_mm if args.voxel_mm is not None else 614.4 / args.size
    _positive("--voxel-mm", voxel)
    stem = output.with_suffix("")
    scatter_path = Path(f"{stem}_scatter.h00")
    volumes = [Path(f"{stem}_{name}.nii.gz") for name in ("activity", "mumap")]
    written = [output] if dicom else [output, data_path, scatter_path, jio.interfile_data_path(scatter_path), *volumes]
    _check_outputs(written, args, [args.ct])

    shape, vs = (args.size, args.size, args.slices), (voxel,) * 3
    phantom = _phantom(shape, vs, args.seed)
    if args.collimator:
        from ._collimators import get_collimator

        try:
            psf = get_collimator(args.collimator).psf(LU177_KEV)
        except ValueError as e:
            raise UsageError(f"--collimator: {e}") from None
    else:
        psf = GaussianPSF(args.fwhm0, args.slope)
    angles = 2 * np.pi * np.arange(args.views) / args.views
    probe = SPECTGeometry(shape, vs, psf, angles=angles, radii=args.size * voxel)
    radii = np.asarray(probe.object_extent(phantom.masks["body"])) + 10.0  # body-contouring, 10 mm clearance
    geometry = SPECTGeometry(shape, vs, psf, angles=angles, radii=radii)
    projector = SPECTProjector(geometry, jnp.asarray(phantom.mumap))
    data = simulate(jax.random.key(args.seed + 1), jnp.asarray(phantom.activity), projector,
                    total_counts=args.counts, scatter_fraction=args.scatter_fraction)
    if dicom:
        from . import _cli_clinical as clinical

        return clinical.simulate_dicom(args, output, phantom, data, angles, radii, voxel, psf)
    psf_keys = {PSF_FWHM0_KEY: f"{float(psf.fwhm0):.6g}", PSF_SLOPE_KEY: f"{float(psf.slope):.6g}"}
    for path, views, keys in ((output, data.counts, psf_keys), (scatter_path, data.background, None)):
        projections = jio.ProjectionData(np.asarray(views), angles, radii, (voxel, voxel))
        _write(path, lambda: jio.write_interfile(path, projections, extra_keys=keys))
    for path, volume in zip(volumes, (phantom.activity, phantom.mumap)):
        _write(path, lambda: jio.write_nifti(path, volume, vs))
    print(f"jaxspect: torso phantom {shape} of {voxel:.3g} mm, {args.views} views, "
          f"{float(np.asarray(data.counts).sum()):.4g} counts (scatter fraction {args.scatter_fraction})")
    print("  mumap in 1/mm; activity in relative concentration units; scatter mean as Interfile")
    for path in written:
        print(f"  wrote {path}")
    return written


def demo(args) -> None:
    from ._demo import existing_outputs, run_demo

    _sizes(args)
    folder = Path(args.output)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output {folder} is a file; expected a folder for the demo's figures and volumes")
    if not args.overwrite and (existing := existing_outputs(folder)):
        raise UsageError(f"--output {folder} already holds demo output ({', '.join(p.name for p in existing[:3])}"
                         f"{', ...' if len(existing) > 3 else ''}); pass --overwrite to replace it")
    from . import io as jio

    jio.check_output_folder(folder, what="--output")
    if args.model:
        _load_unrolled(args.model)  # clear error before the demo runs
    _phantom((args.size, args.size, args.slices), (9.6,) * 3)  # the demo's phantom must fit
    run_demo(n=args.size, nz=args.slices, nview=args.views, rotation=args.rotation, output_dir=folder,
             model_path=args.model)


def main(argv=None) -> int:
    """Run the command line; returns 0, or exits with status 2 and one message on a user error."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            demo(args)
        elif args.command == "simulate":
            simulate_files(args)
        elif args.command == "reconstruct":
            reconstruct(args)
        elif args.command == "stitch":
            from ._cli_clinical import stitch

            stitch(args)
        elif args.command == "collimators":
            from ._cli_clinical import list_collimators

            list_collimators(args)
    except (UsageError, FileCheckError, ImportError) as e:
        parser.exit(2, f"jaxspect: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
