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
    sim.add_argument("--ct", help="with a DICOM --output: also write the phantom's CT series into this folder")
    sim.add_argument("--collimator", help="collimator by name (`jaxspect collimators`) instead of --fwhm0/--slope; "
                     "recorded in the file")
    sim.add_argument("--activity-mbq", type=float, default=1000.0,
                     help="activity in the phantom, MBq (DICOM output: sets the calibration factor; default 1000)")
    sim.add_argument("--time-per-view", type=float, default=20.0, help="seconds per view (DICOM output; default 20)")
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
    rec.add_argument("--format", choices=("nifti", "dicom"), default="nifti",
                     help="output format: NIfTI file (default) or a DICOM NM volume in the --output folder; both "
                     "in the scanner coordinates of the projections")
    rec.add_argument("--mumap", help="attenuation map, NIfTI on the reconstruction grid (nx, nx, nz)")
    rec.add_argument("--ct", help="DICOM CT series folder: converted to an attenuation map at the photopeak energy "
                     "(bilinear HU model) and resampled onto the SPECT grid in patient coordinates")
    rec.add_argument("--kvp", type=float, help="CT tube voltage, kVp, when the CT series lacks KVP (0018,0060)")
    rec.add_argument("--mumap-units", choices=("per_mm", "per_cm"), default="per_mm",
                     help="units of --mumap values: 1/mm (default) or 1/cm")
    rec.add_argument("--algorithm", choices=("osem", "mlem"), default="osem")
    rec.add_argument("--iterations", type=int, default=8, help="full iterations (default 8)")
    rec.add_argument("--subsets", type=int, default=4, help="OSEM subsets (default 4)")
    rec.add_argument("--psf", choices=("gaussian", "none"), default="gaussian", help="collimator response model")
    rec.add_argument("--collimator", help="parallel-hole collimator by name (`jaxspect collimators` lists them): "
                     "its Gaussian PSF at the photopeak energy")
    rec.add_argument("--energy", type=float, help="photopeak energy, keV (default: centre of the file's photopeak window)")
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
    quant = rec.add_argument_group("quantification (images in Bq/mL)")
    quant.add_argument("--sensitivity", type=float, help="calibration factor: planar sensitivity, counts/s per MBq")
    quant.add_argument("--calibration", help="calibration acquisition instead of --sensitivity: projections of a "
                       "point source in air (Interfile/DICOM) of --calibration-activity MBq")
    quant.add_argument("--calibration-activity", type=float, help="activity of the --calibration source, MBq")
    quant.add_argument("--calibration-time-per-view", type=float, help="seconds per view of --calibration when its "
                       "file does not record it")
    quant.add_argument("--time-per-view", type=float, help="acquisition time per view, s (default: from the file)")
    quant.add_argument("--decay-to", help="decay-correct to this time: 'injection' (from the DICOM file) or "
                       "YYYY-MM-DDTHH:MM:SS")
    quant.add_argument("--half-life-h", type=float, help="radionuclide half-life, hours (default: from the DICOM file)")

    beds = sub.add_parser("stitch", help="stitch per-bed reconstructions (scanner coordinates) along z, "
                          "overlaps blended by linear weights")
    beds.add_argument("beds", nargs="+", help="reconstructed beds: NIfTI files or DICOM volumes (.dcm or the "
                      "folder --format dicom wrote)")
    beds.add_argument("--output", required=True, help="stitched volume: NIfTI (.nii/.nii.gz) or a folder with --format dicom")
    beds.add_argument("--format", choices=("nifti", "dicom"), default="nifti")

    col = sub.add_parser("collimators", help="list the parallel-hole collimators --collimator knows")
    col.add_argument("--energy", type=float, default=140.5, help="photon energy for the FWHM column, keV (default 140.5)")
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


def _photopeak_kev(args, data) -> float:
    """--energy, else the centre of the file's photopeak window; a UsageError when neither."""
    if args.energy is not None:
        _positive("--energy", args.energy)
        return float(args.energy)
    energy = data.metadata.get("photon_energy_kev", data.photopeak_kev)
    if energy is None:
        raise UsageError(f"the photopeak energy is not recorded in {args.projections} (no energy window limits): "
                         "pass --energy KEV")
    return energy


def _time_per_view(path, data, override, option) -> float:
    """Seconds per view: ``override``, else the file's (DICOM ActualFrameDuration, Interfile
    'time per projection (sec)' / 'image duration (sec)'); a UsageError naming ``option`` if none."""
    from . import io as jio

    if override is not None:
        _positive(option, override)
        return float(override)
    if "frame_duration_s" in data.metadata:
        return float(data.metadata["frame_duration_s"])
    if Path(path).suffix.lower() in jio.INTERFILE_SUFFIXES:
        header = jio.parse_interfile_header(path)
        for key in ("time per projection (sec)", "image duration (sec)"):
            if key in header:
                try:
                    return float(header[key])
                except ValueError:
                    raise UsageError(f"{path}: '{key} := {header[key]}' is not a number") from None
    raise UsageError(f"the time per view is not recorded in {path} (DICOM ActualFrameDuration (0018,1242), Interfile "
                     f"'time per projection (sec)'): pass {option} S")


def _quantify(args, data, image):
    """(image, DICOM unit, description): Bq/mL when calibrated, else counts."""
    import datetime

    import numpy as np

    from ._quantification import activity_concentration, decay_factor, sensitivity_from_point_source

    calibrated = args.sensitivity is not None or args.calibration is not None
    if not calibrated:
        if args.decay_to or args.time_per_view is not None or args.calibration_activity is not None:
            raise UsageError("--time-per-view, --decay-to and --calibration-activity need a calibration: "
                             "--sensitivity CPS_PER_MBQ or --calibration FILE")
        return image, "CNTS", "counts-domain activity (no calibration given)"
    if args.sensitivity is not None and args.calibration is not None:
        raise UsageError("give either --sensitivity or --calibration, not both")
    if args.sensitivity is not None:
        _positive("--sensitivity", args.sensitivity)
        sensitivity, source = float(args.sensitivity), "--sensitivity"
    else:
        if args.calibration_activity is None:
            raise UsageError("--calibration needs --calibration-activity MBQ (the source's activity)")
        _positive("--calibration-activity", args.calibration_activity)
        calibration = _read(args.calibration, "calibration")
        seconds = _time_per_view(args.calibration, calibration, args.calibration_time_per_view,
                                 "--calibration-time-per-view")
        sensitivity = sensitivity_from_point_source(calibration.counts, args.calibration_activity, seconds)
        source = f"point source {args.calibration} ({args.calibration_activity:g} MBq, {seconds:g} s per view)"
    seconds = _time_per_view(args.projections, data, args.time_per_view, "--time-per-view")
    decay, decay_text = 1.0, ""
    if args.decay_to:
        half_life = args.half_life_h * 3600.0 if args.half_life_h is not None else data.metadata.get("half_life_s")
        if half_life is None:
            raise UsageError(f"--decay-to needs the half-life, which {args.projections} does not give "
                             "(RadionuclideHalfLife (0018,1075)): pass --half-life-h H")
        _positive("--half-life-h", half_life)
        start = data.metadata.get("acquisition_datetime")
        if start is None:
            raise UsageError(f"--decay-to needs the acquisition start, which {args.projections} does not give "
                             "(AcquisitionDate/AcquisitionTime (0008,0022/0032))")
        if args.decay_to == "injection":
            reference = data.metadata.get("injection_datetime")
            if reference is None:
                raise UsageError(f"--decay-to injection: {args.projections} lacks RadiopharmaceuticalStartDateTime "
                                 "(0018,1078); pass the time as YYYY-MM-DDTHH:MM:SS")
        else:
            try:
                reference = datetime.datetime.fromisoformat(args.decay_to)
            except ValueError:
                raise UsageError(f"--decay-to must be 'injection' or YYYY-MM-DDTHH:MM:SS, got {args.decay_to!r}") from None
        duration = data.metadata.get("acquisition_duration_s", seconds * data.nview)
        decay = decay_factor(half_life, start, duration, reference)
        decay_text = f", decay-corrected to {reference.isoformat()} (x{decay:.4g})"
    print(f"jaxspect: calibration {sensitivity:.4g} cps/MBq from {source}; {seconds:g} s per view{decay_text}",
          flush=True)
    image = activity_concentration(image, data.voxel_size_mm, sensitivity, seconds, decay=decay).astype(np.float32)
    return image, "BQML", "activity concentration in Bq/mL"


def _ct_mumap(args, data):
    """--ct: the CT series as mu (1/mm) on the projections' grid, in patient coordinates."""
    from . import io as jio

    if data.centre_mm is None:
        raise UsageError(f"--ct needs the patient position of the SPECT grid, which {args.projections} does not give "
                         "(DICOM NM: ImagePositionPatient/ImageOrientationPatient (0020,0032/0037) in the Detector "
                         "Information Sequence); pass an attenuation map on the SPECT grid with --mumap instead")
    energy = _photopeak_kev(args, data)
    if args.kvp is not None:
        _positive("--kvp", args.kvp)
    if not Path(args.ct).exists():
        raise UsageError(f"--ct folder not found: {args.ct}")
    try:
        mumap = jio.ct_to_mumap(args.ct, energy, data.image_shape, data.image_affine, kvp=args.kvp)
    except (ValueError, FileNotFoundError, ImportError) as e:
        message = str(e).replace("pass kvp= (--kvp)", "pass --kvp")
        raise UsageError(f"--ct {args.ct}: {message}") from None
    print(f"jaxspect: attenuation map from CT {args.ct} at {energy:.4g} keV: mu up to {float(mumap.max()):.4g} /mm "
          f"on the SPECT grid {data.image_shape}", flush=True)
    return mumap


def _gaussian_psf(args, data):
    """The Gaussian PSF from --collimator, --fwhm0/--slope, or the projection file; never assumed."""
    from . import io as jio
    from ._collimators import get_collimator, psf_distance_range
    from ._psf import GaussianPSF

    if data.radii is None:
        raise UsageError(f"--psf gaussian needs the orbit radius, which {args.projections} lacks: "
                         "pass --radius MM (or --cor for SIMIND, or --psf none)")
    given = args.fwhm0 is not None or args.slope is not None
    if args.collimator and given:
        raise UsageError("give either --collimator NAME or --fwhm0 MM --slope S, not both")
    if args.collimator:
        try:
            collimator = get_collimator(args.collimator)
        except ValueError as e:
            raise UsageError(f"--collimator: {e}") from None
        energy = _photopeak_kev(args, data)
        distances = psf_distance_range(data.radii, data.image_shape, data.voxel_size_mm)
        try:
            psf = collimator.psf(energy, distance_range_mm=distances)
        except ValueError as e:
            raise UsageError(f"--collimator {args.collimator}: {e}") from None
        print(f"jaxspect: collimator {collimator.name} ({collimator.description}) at {energy:.4g} keV: "
              f"system FWHM {float(collimator.system_fwhm_mm(100.0, energy)):.2f} mm at 100 mm; "
              f"Gaussian PSF fwhm0 {float(psf.fwhm0):.3g} mm, slope {float(psf.slope):.4g}", flush=True)
        return psf
    fwhm0, slope, source = args.fwhm0, args.slope, "--fwhm0/--slope"
    named = jio.simind_collimator(data.metadata) if not given else None
    if not given and named is None and "collimator_name" in data.metadata:
        from ._collimators import collimator_from_file

        named = collimator_from_file(data.metadata["collimator_name"], data.metadata.get("Manufacturer"))
        if named is None:
            raise UsageError(f"{args.projections} names the collimator {data.metadata['collimator_name']!r} "
                             f"(Manufacturer {data.metadata.get('Manufacturer', 'not given')!r}), which is not in "
                             "jaxspect's table: pass --collimator NAME (`jaxspect collimators`) or --fwhm0/--slope")
    if named is not None:
        energy = _photopeak_kev(args, data)
        intrinsic = data.metadata.get("intrinsic_fwhm_mm")
        intrinsic = None if intrinsic is None else intrinsic * (140.0 / energy) ** 0.5
        try:
            psf = named.psf(energy, intrinsic_fwhm_mm=intrinsic,
                            distance_range_mm=psf_distance_range(data.radii, data.image_shape, data.voxel_size_mm))
        except ValueError as e:
            raise UsageError(f"{args.projections}: collimator {named.name}: {e}") from None
        print(f"jaxspect: collimator {named.name} at {energy:.4g} keV, intrinsic FWHM "
              f"{'default' if intrinsic is None else f'{intrinsic:.3g} mm'}, as named in {args.projections}: "
              f"Gaussian PSF fwhm0 {float(psf.fwhm0):.3g} mm, slope {float(psf.slope):.4g}", flush=True)
        return psf
    if not given and Path(args.projections).suffix.lower() in jio.INTERFILE_SUFFIXES:
        header = jio.parse_interfile_header(args.projections)
        if PSF_FWHM0_KEY in header and PSF_SLOPE_KEY in header:
            try:
                fwhm0, slope = float(header[PSF_FWHM0_KEY]), float(header[PSF_SLOPE_KEY])
            except ValueError:
                raise UsageError(f"{args.projections}: '{PSF_FWHM0_KEY}' and '{PSF_SLOPE_KEY}' must be numbers") from None
            source = f"the header of {args.projections}"
    if fwhm0 is None or slope is None:
        if given:
            raise UsageError("--fwhm0 and --slope go together: give both (or --collimator NAME)")
        raise UsageError(f"no collimator response given and {args.projections} names none: pass --collimator NAME "
                         "(`jaxspect collimators` lists them), --fwhm0 MM --slope S, or --psf none")
    _positive("--fwhm0", fwhm0)
    if not slope >= 0:
        raise UsageError(f"--slope must be >= 0, got {slope}")
    print(f"jaxspect: Gaussian PSF fwhm0 {fwhm0:g} mm, slope {slope:g} (from {source})", flush=True)
    return GaussianPSF(fwhm0, slope)


def reconstruct(args) -> Path:
    import jax.numpy as jnp
    import numpy as np

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
        mumap = _ct_mumap(args, data)

    if args.psf == "gaussian":
        psf = _gaussian_psf(args, data)
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
    image, units, description = _quantify(args, data, image)
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


def _read_bed(path):
    """(volume, LPS affine, unit, DICOM metadata) of one reconstructed bed."""
    import numpy as np

    from . import io as jio

    path = Path(path)
    if path.is_dir() and (path / "recon.dcm").is_file():
        path = path / "recon.dcm"
    if not path.exists():
        raise UsageError(f"bed file not found: {path}")
    try:
        if path.name.endswith(".nii") or path.name.endswith(".nii.gz"):
            import nibabel

            image = nibabel.load(str(path))
            lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
            descrip = image.header["descrip"].tobytes().decode("ascii", "replace")
            unit = "BQML" if "BQML" in descrip else "CNTS" if "CNTS" in descrip else None
            return np.asarray(image.dataobj, np.float32), lps, unit, {}
        volume = jio.read_dicom_volume(path)
        return volume.array, volume.affine, volume.metadata.get("Units"), volume.metadata
    except (ValueError, OSError, ImportError) as e:
        raise UsageError(f"bed {path}: {e}") from None


def stitch(args) -> Path:
    from . import io as jio
    from ._beds import stitch_beds

    beds = [_read_bed(p) for p in args.beds]
    units = {b[2] for b in beds}
    if len(units) > 1:
        raise UsageError(f"the beds are in different units {sorted(map(str, units))}: reconstruct them alike")
    try:
        volume, affine = stitch_beds([b[0] for b in beds], [b[1] for b in beds])
    except ValueError as e:
        raise UsageError(str(e)) from None
    unit = units.pop() or "CNTS"
    output = Path(args.output)
    voxel = tuple(float(v) for v in abs(affine[[0, 1, 2], [0, 1, 2]]))
    if args.format == "dicom":
        output = jio.write_dicom_volume(output, volume, affine, units=unit, reference=beds[0][3],
                                        series_description="jaxspect stitched beds")
    else:
        if not (output.name.endswith(".nii") or output.name.endswith(".nii.gz")):
            raise UsageError(f"--output must be a NIfTI file (.nii or .nii.gz), got {output} (or pass --format dicom)")
        jio.write_nifti(output, volume, voxel, affine=affine, description=f"jaxspect stitched ({unit})")
    print(f"jaxspect: stitched {len(beds)} beds into {output} ({volume.shape}, {unit})")
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
        return _simulate_dicom(args, output, phantom, data, angles, radii, voxel, psf)
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


def _simulate_dicom(args, output, phantom, data, angles, radii, voxel, psf) -> list[Path]:
    """simulate with a DICOM --output: NM file (+ CT series), truth volumes in Bq/mL and 1/mm."""
    import datetime

    import numpy as np
    from pydicom.uid import generate_uid

    from . import io as jio

    shape, vs = phantom.activity.shape, (voxel,) * 3
    centre = (0.0, 0.0, -400.0)  # the grid centre's patient position (table in, abdomen)
    affine = jio.grid_affine(shape, vs, centre)
    study = {"PatientID": "JAXSPECT-SIM", "PatientName": "Torso^Phantom", "StudyInstanceUID": generate_uid(),
             "FrameOfReferenceUID": generate_uid(), "Manufacturer": "jaxspect"}
    acquired = datetime.datetime(2026, 1, 2, 10, 0, 0)
    counts = np.asarray(data.counts)
    jio.write_dicom_projections(output, jio.ProjectionData(counts, angles, radii, (voxel, voxel)), centre_mm=centre,
                                frame_duration_s=args.time_per_view, reference=study, energy_window_kev=(187.6, 229.2),
                                half_life_s=6.647 * 86400, injection_datetime=acquired - datetime.timedelta(hours=24),
                                acquisition_datetime=acquired, collimator_name=args.collimator)
    written = [output]
    # in air every view sees the whole (scaled) activity image: counts per view per MBq per second
    sensitivity = float(data.scale) * float(phantom.activity.sum()) / (args.time_per_view * args.activity_mbq)
    voxel_ml = voxel**3 / 1000.0
    bq_per_ml = phantom.activity / float(phantom.activity.sum() * voxel_ml) * args.activity_mbq * 1e6
    for name, volume in (("activity_bqml", bq_per_ml), ("mumap", phantom.mumap)):
        written.append(jio.write_nifti(Path(f"{output.with_suffix('')}_{name}.nii.gz"), volume, vs, affine=affine))
    if args.ct:
        hu = np.where(phantom.masks["body"], 40.0, -1000.0)
        hu[phantom.masks["lung_left"] | phantom.masks["lung_right"]] = -780.0
        hu[phantom.masks["spine"]] = 1100.0
        written += jio.write_dicom_ct(args.ct, hu, affine, kvp=120.0, reference=study)[:1]
    collimator = f"collimator {args.collimator}" if args.collimator else f"PSF fwhm0 {args.fwhm0} mm, slope {args.slope}"
    print(f"jaxspect: torso phantom {shape} of {voxel:.3g} mm, {len(angles)} views of {args.time_per_view:g} s, "
          f"{counts.sum():.4g} counts, {args.activity_mbq:g} MBq Lu-177, {collimator}")
    print(f"  calibration factor {sensitivity:.4g} cps/MBq (pass --sensitivity {sensitivity:.4g} for Bq/mL); grid "
          f"centre at patient {centre} mm")
    for path in written:
        print(f"  wrote {path}" + (" (and the rest of the CT series)" if args.ct and path.parent == Path(args.ct) else ""))
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
            stitch(args)
        elif args.command == "collimators":
            from ._collimators import format_collimator_table

            _positive("--energy", args.energy)
            print(f"parallel-hole collimators (system FWHM at 100 mm at {args.energy:g} keV; see jaxspect._collimators)")
            print(format_collimator_table(args.energy))
    except UsageError as e:
        parser.exit(2, f"jaxspect: error: {e}\n")
    except ImportError as e:
        parser.exit(2, f"jaxspect: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
