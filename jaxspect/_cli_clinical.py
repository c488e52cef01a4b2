"""The clinical parts of the command line: collimator response, CT attenuation, units, beds.

``reconstruct``'s PSF choice (never assumed: ``--collimator``, ``--fwhm0/--slope``, or what the
file names), ``--ct``, the calibration to Bq/mL, ``jaxspect stitch`` and ``simulate``'s DICOM
output. Kept apart from :mod:`jaxspect._cli` (parsing and the reconstruction loop); errors are
:class:`jaxspect._cli.UsageError` (exit status 2).
"""

from __future__ import annotations

from pathlib import Path

from ._cli import PSF_FWHM0_KEY, PSF_SLOPE_KEY, UsageError, _positive, _read


def add_simulate_arguments(sim):
    """simulate's DICOM/CT/collimator/calibration options."""
    sim.add_argument("--ct", help="with a DICOM --output: also write the phantom's CT series into this folder")
    sim.add_argument("--collimator", help="collimator by name (`jaxspect collimators`) instead of --fwhm0/--slope; "
                     "recorded in the file")
    sim.add_argument("--activity-mbq", type=float, default=1000.0,
                     help="activity in the phantom, MBq (DICOM output: sets the calibration factor; default 1000)")
    sim.add_argument("--time-per-view", type=float, default=20.0, help="seconds per view (DICOM output; default 20)")


def add_reconstruct_arguments(rec):
    """reconstruct's output format, CT, collimator and quantification options."""
    rec.add_argument("--format", choices=("nifti", "dicom"), default="nifti",
                     help="output format: NIfTI file (default) or a DICOM NM volume in the --output folder; both "
                     "in the scanner coordinates of the projections")
    rec.add_argument("--ct", help="DICOM CT series folder: converted to an attenuation map at the photopeak energy "
                     "(bilinear HU model) and resampled onto the SPECT grid in patient coordinates")
    rec.add_argument("--kvp", type=float, help="CT tube voltage, kVp, when the CT series lacks KVP (0018,0060)")
    rec.add_argument("--collimator", help="parallel-hole collimator by name (`jaxspect collimators` lists them): "
                     "its Gaussian PSF at the photopeak energy")
    rec.add_argument("--energy", type=float, help="photopeak energy, keV (default: centre of the file's photopeak window)")
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


def add_subcommands(sub):
    """``jaxspect stitch`` and ``jaxspect collimators``."""
    beds = sub.add_parser("stitch", help="stitch per-bed reconstructions (scanner coordinates) along z, "
                          "overlaps blended by linear weights")
    beds.add_argument("beds", nargs="+", help="reconstructed beds: NIfTI files or DICOM volumes (.dcm or the "
                      "folder --format dicom wrote)")
    beds.add_argument("--output", required=True, help="stitched volume: NIfTI (.nii/.nii.gz) or a folder with --format dicom")
    beds.add_argument("--format", choices=("nifti", "dicom"), default="nifti")

    col = sub.add_parser("collimators", help="list the parallel-hole collimators --collimator knows")
    col.add_argument("--energy", type=float, default=140.5, help="photon energy for the FWHM column, keV (default 140.5)")


def list_collimators(args):
    """``jaxspect collimators``: the table, with each collimator's system FWHM at 10 cm."""
    from ._collimators import format_collimator_table

    _positive("--energy", args.energy)
    print(f"parallel-hole collimators (system FWHM at 100 mm at {args.energy:g} keV; see jaxspect._collimators)")
    print(format_collimator_table(args.energy))


def photopeak_kev(args, data) -> float:
    """--energy, else the centre of the file's photopeak window; a UsageError when neither."""
    if args.energy is not None:
        _positive("--energy", args.energy)
        return float(args.energy)
    energy = data.metadata.get("photon_energy_kev", data.photopeak_kev)
    if energy is None:
        raise UsageError(f"the photopeak energy is not recorded in {args.projections} (no energy window limits): "
                         "pass --energy KEV")
    return energy


def time_per_view(path, data, override, option) -> float:
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


def quantify(args, data, image):
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
        seconds = time_per_view(args.calibration, calibration, args.calibration_time_per_view,
                                 "--calibration-time-per-view")
        sensitivity = sensitivity_from_point_source(calibration.counts, args.calibration_activity, seconds)
        source = f"point source {args.calibration} ({args.calibration_activity:g} MBq, {seconds:g} s per view)"
    seconds = time_per_view(args.projections, data, args.time_per_view, "--time-per-view")
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


def ct_mumap(args, data):
    """--ct: the CT series as mu (1/mm) on the projections' grid, in patient coordinates."""
    from . import io as jio

    if data.centre_mm is None:
        raise UsageError(f"--ct needs the patient position of the SPECT grid, which {args.projections} does not give "
                         "(DICOM NM: ImagePositionPatient/ImageOrientationPatient (0020,0032/0037) in the Detector "
                         "Information Sequence); pass an attenuation map on the SPECT grid with --mumap instead")
    energy = photopeak_kev(args, data)
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


def simind_mumap(args, data):
    """--mumap NAME.hct: SIMIND's aligned map as mu (1/mm) at the photopeak, averaged onto the SPECT grid."""
    from . import io as jio

    path = args.mumap
    if not Path(path).is_file():
        raise UsageError(f"--mumap file not found: {path}")
    if args.mumap_units is not None:
        raise UsageError("--mumap-units applies to NIfTI and STIR maps; a SIMIND .hct states its unit "
                         "(';# Units of data (ECT)')")
    energy = photopeak_kev(args, data)
    if args.kvp is not None:
        _positive("--kvp", args.kvp)
    simulated = data.metadata.get("photon_energy_kev")
    try:
        mumap = jio.read_simind_density_map(path, energy, shape=data.image_shape, grid_affine_mm=data.image_affine,
                                            map_energy_kev=simulated, kvp=args.kvp)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(f"--mumap {path}: {str(e).replace('pass kvp= (--kvp)', 'pass --kvp')}") from None
    at = (f"a mu map is scaled from SIMIND's {simulated:g} keV" if simulated not in (None, energy) else
          "SIMIND's photon energy" if simulated is not None else "a mu map is taken to be at this energy: the "
          "projections do not give SIMIND's photon energy")
    print(f"jaxspect: attenuation map from SIMIND {path} at {energy:.4g} keV ({at}): mu up to {float(mumap.max()):.4g} "
          f"/mm on the SPECT grid {data.image_shape}", flush=True)
    return mumap


def _collimator_psf(collimator, args, data, where, intrinsic_140kev_mm=None):
    """``(energy keV, intrinsic FWHM mm or None, GaussianPSF)`` of ``collimator`` at the photopeak,
    fitted over the distances this orbit spans; an intrinsic FWHM recorded at 140 keV is scaled
    as ``1/sqrt(E)``. Errors name ``where``."""
    from ._collimators import psf_distance_range

    energy = photopeak_kev(args, data)
    intrinsic = None if intrinsic_140kev_mm is None else intrinsic_140kev_mm * (140.0 / energy) ** 0.5
    try:
        psf = collimator.psf(energy, intrinsic_fwhm_mm=intrinsic,
                             distance_range_mm=psf_distance_range(data.radii, data.image_shape, data.voxel_size_mm))
    except ValueError as e:
        raise UsageError(f"{where}: {e}") from None
    return energy, intrinsic, psf


def gaussian_psf(args, data):
    """The Gaussian PSF from --collimator, --fwhm0/--slope, or the projection file; never assumed."""
    from . import io as jio
    from ._collimators import get_collimator
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
        energy, _, psf = _collimator_psf(collimator, args, data, f"--collimator {args.collimator}")
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
        energy, intrinsic, psf = _collimator_psf(named, args, data, f"{args.projections}: collimator {named.name}",
                                                 intrinsic_140kev_mm=data.metadata.get("intrinsic_fwhm_mm"))
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


def read_bed(path):
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

    beds = [read_bed(p) for p in args.beds]
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


def simulate_dicom(args, output, phantom, data, angles, radii, voxel, psf) -> list[Path]:
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
