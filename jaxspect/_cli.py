"""The ``jaxspect`` command line: ``demo``, ``simulate``, ``reconstruct``.

Errors a user can fix (missing or unreadable files, unknown formats, inconsistent shapes or
units) print ``jaxspect: error: ...`` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

# `simulate`'s default collimator response: a medium-energy parallel-hole collimator for Lu-177
# (208 keV), as in the demo; written into the simulated file's header, which `reconstruct` reads.
DEFAULT_FWHM0_MM, DEFAULT_SLOPE = 2.5, 0.1
# Interfile keys that carry a Gaussian PSF (jaxspect's own keys, written by `simulate`).
PSF_FWHM0_KEY, PSF_SLOPE_KEY = "gaussian psf fwhm0 (mm)", "gaussian psf slope"


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

    rec = sub.add_parser("reconstruct", help="OSEM/ML-EM of Interfile (.h00) or DICOM NM (.dcm) projections")
    rec.add_argument("projections", help="Interfile header (.h00/.hdr) or DICOM NM file (.dcm)")
    rec.add_argument("--output", required=True, help="reconstructed image: NIfTI (.nii or .nii.gz), or a folder "
                     "with --format dicom")
    rec.add_argument("--mumap", help="attenuation map, NIfTI on the reconstruction grid (nx, nx, nz)")
    rec.add_argument("--mumap-units", choices=("per_mm", "per_cm"), default="per_mm",
                     help="units of --mumap values: 1/mm (default) or 1/cm")
    rec.add_argument("--algorithm", choices=("osem", "mlem"), default="osem")
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
    from . import _cli_clinical as clinical

    clinical.add_simulate_arguments(sim)
    clinical.add_reconstruct_arguments(rec)
    clinical.add_subcommands(sub)
    return parser


def _positive(name, value, kind=float):
    if value is None or not value > 0 or (kind is int and int(value) != value):
        raise UsageError(f"{name} must be a positive {'integer' if kind is int else 'number'}, got {value}")


def _read(path, what, **kwargs):
    from . import io as jio

    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} file not found: {path}")
    try:
        return jio.read_projections(path, **kwargs)
    except (ValueError, FileNotFoundError, ImportError, TypeError) as e:
        raise UsageError(f"{what} {path}: {e}") from None


def _load_unrolled(path):
    from ._serialization import load_model
    from .recon import UnrolledEM

    if not Path(path).exists():
        raise UsageError(f"--model file not found: {path}")
    try:
        model = load_model(path)
    except (ValueError, TypeError, OSError) as e:
        raise UsageError(f"--model {path}: {e}") from None
    if not isinstance(model, UnrolledEM):
        raise UsageError(f"--model {path} holds a {type(model).__name__}, expected a trained UnrolledEM "
                         "(saved with jaxspect.save_model)")
    return model


def reconstruct(args) -> Path:
    import jax.numpy as jnp
    import numpy as np

    from . import _cli_clinical as clinical
    from . import io as jio
    from ._projector import SPECTProjector
    from ._psf import ExplicitPSF
    from .recon import mlem, osem

    model = _load_unrolled(args.model) if args.model else None
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
    if args.algorithm == "osem":
        _positive("--subsets", args.subsets, int)

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
            kwargs["cor"] = args.cor
    data = _read(args.projections, "projections", **kwargs)
    if suffix in jio.INTERFILE_SUFFIXES and args.radius is not None:
        _positive("--radius", args.radius)
        data = dataclasses.replace(data, radii=args.radius)
    if not np.all(np.isfinite(data.counts)) or np.any(data.counts < 0):
        raise UsageError(f"projections {args.projections}: counts must be finite and non-negative")

    background = data.background
    if args.background:
        extra = _read(args.background, "background")
        if extra.counts.shape != data.counts.shape:
            raise UsageError(f"--background {args.background} has shape {extra.counts.shape}, "
                             f"the projections {data.counts.shape}")
        background = extra.counts if background is None else background + extra.counts

    image_shape, voxel_size = data.image_shape, data.voxel_size_mm
    mumap = None
    if args.mumap:
        try:
            mumap, mumap_voxel = jio.read_nifti(args.mumap)
        except (ValueError, FileNotFoundError, ImportError) as e:
            raise UsageError(f"--mumap: {e}") from None
        if mumap.shape != image_shape:
            raise UsageError(f"--mumap {args.mumap} has shape {mumap.shape}, but projections {data.counts.shape} "
                             f"(nx, nz, nview) need an image of shape (nx, nx, nz) = {image_shape}")
        if not np.allclose(mumap_voxel, voxel_size, rtol=1e-3):
            raise UsageError(f"--mumap {args.mumap} has voxels {mumap_voxel} mm, but the projections' pixels "
                             f"give {voxel_size} mm")
        if args.mumap_units == "per_cm":
            mumap = mumap / 10
        if not np.all(np.isfinite(mumap)) or mumap.min() < 0:
            raise UsageError(f"--mumap {args.mumap} must be finite and non-negative")
        if mumap.max() > 1.0:
            raise UsageError(f"--mumap {args.mumap} reaches {mumap.max():.3g} per mm, beyond any body tissue "
                             "(bone at 70 keV is about 0.05/mm): wrong --mumap-units, or a CT in HU?")

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
        if args.subsets > data.nview:
            raise UsageError(f"--subsets {args.subsets} exceeds the number of views ({data.nview})")
        image = osem(projector, y, x0, n_iter=args.iterations, n_subsets=args.subsets, background=r, progress=progress).image
    else:
        image = mlem(projector, y, x0, n_iter=args.iterations, background=r, progress=progress).image
    if model is not None:
        print(f"jaxspect: unrolled model {args.model} ({model.n_outer} outer x {model.n_inner} inner iterations) "
              f"from the {args.algorithm} image", flush=True)
        image = model(image, projector, y, r)
    image = np.asarray(image)
    image, units, description = clinical.quantify(args, data, image)
    if args.format == "dicom":
        corrections = ("ATTN",) if mumap is not None else ()
        corrections += ("DECY",) if args.decay_to else ()
        output = jio.write_dicom_volume(output, image, data.image_affine, units=units, reference=data.metadata,
                                        corrections=corrections)
    else:
        jio.write_nifti(output, image, voxel_size, affine=data.image_affine,
                        description=f"jaxspect {'Bq/mL' if units == 'BQML' else 'counts'} ({units})")
    where = "the patient origin" if data.centre_mm is None else f"patient ({', '.join(f'{v:.1f}' for v in data.centre_mm)}) mm"
    print(f"jaxspect: wrote {output} ({image_shape}, voxels {voxel_size} mm, {description}, grid centre at {where})")
    return output


def simulate_files(args) -> list[Path]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from . import io as jio
    from ._geometry import SPECTGeometry
    from ._projector import SPECTProjector
    from ._psf import GaussianPSF
    from ._simulate import simulate
    from .phantoms import LU177_KEV, torso_phantom

    output = Path(args.output)
    dicom = output.suffix.lower() in jio.DICOM_SUFFIXES
    if output.suffix.lower() not in jio.INTERFILE_SUFFIXES and not dicom:
        raise UsageError(f"--output must be an Interfile header ({', '.join(jio.INTERFILE_SUFFIXES)}) or a DICOM file "
                         f"({', '.join(jio.DICOM_SUFFIXES)}), got {output}")
    if args.ct and not dicom:
        raise UsageError("--ct needs a DICOM --output (Interfile has no patient coordinates)")
    _positive("--activity-mbq", args.activity_mbq)
    _positive("--time-per-view", args.time_per_view)
    for name in ("size", "slices", "views"):
        _positive(f"--{name}", getattr(args, name), int)
    _positive("--counts", args.counts)
    voxel = args.voxel_mm if args.voxel_mm is not None else 614.4 / args.size
    _positive("--voxel-mm", voxel)
    shape, vs = (args.size, args.size, args.slices), (voxel,) * 3
    try:
        phantom = torso_phantom(jax.random.key(args.seed), shape=shape, voxel_size=vs)
    except ValueError as e:
        raise UsageError(f"phantom: {e}") from None
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
    stem = output.with_suffix("")
    if dicom:
        from . import _cli_clinical as clinical

        return clinical.simulate_dicom(args, output, phantom, data, angles, radii, voxel, psf)
    written = [output, output.with_suffix(".a00")]
    psf_keys = {PSF_FWHM0_KEY: f"{float(psf.fwhm0):.6g}", PSF_SLOPE_KEY: f"{float(psf.slope):.6g}"}
    jio.write_interfile(output, jio.ProjectionData(np.asarray(data.counts), angles, radii, (voxel, voxel)),
                        extra_keys=psf_keys)
    scatter_path = Path(f"{stem}_scatter.h00")
    jio.write_interfile(scatter_path, jio.ProjectionData(np.asarray(data.background), angles, radii, (voxel, voxel)))
    written += [scatter_path, scatter_path.with_suffix(".a00")]
    for name, volume in (("activity", phantom.activity), ("mumap", phantom.mumap)):
        written.append(jio.write_nifti(Path(f"{stem}_{name}.nii.gz"), volume, vs))
    print(f"jaxspect: torso phantom {shape} of {voxel:.3g} mm, {args.views} views, "
          f"{float(np.asarray(data.counts).sum()):.4g} counts (scatter fraction {args.scatter_fraction})")
    print("  mumap in 1/mm; activity in relative concentration units; scatter mean as Interfile")
    for path in written:
        print(f"  wrote {path}")
    return written


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from ._demo import run_demo

            if args.model:
                _load_unrolled(args.model)  # clear error before the demo runs
            run_demo(n=args.size, nz=args.slices, nview=args.views, rotation=args.rotation, output_dir=args.output,
                     model_path=args.model)
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
    except UsageError as e:
        parser.exit(2, f"jaxspect: error: {e}\n")
    except ImportError as e:
        parser.exit(2, f"jaxspect: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
