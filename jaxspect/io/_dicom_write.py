"""Reconstructed volumes as DICOM: one multi-frame NM image (RECON TOMO) in scanner coordinates.

:func:`write_dicom_volume` writes ``folder/<name>.dcm``, an NM Image Storage object
(1.2.840.10008.5.1.4.1.1.20) with one frame per slice ``k`` (Frame Increment Pointer -> Slice
Vector (0054,0080)), and:

- Image Orientation (Patient) (0020,0037): the grid's ``i`` and ``j`` directions (for
  jaxspect's grids ``[1, 0, 0, 0, 1, 0]``): frame pixel ``(row j, column i)`` is voxel
  ``(i, j, k)``; Image Position (Patient) (0020,0032): voxel ``(0, 0, 0)``; frame ``k`` lies
  at ``IPP + k * dz * (row_dir x col_dir)``;
- Pixel Spacing (0028,0030) ``[dy, dx]``, Slice Thickness (0018,0050) and Spacing Between
  Slices (0018,0088) ``dz``, mm;
- unsigned 16-bit pixels with Rescale Slope (0028,1053) ``max / 65535`` (signed 16-bit
  when the volume has negative values), Rescale Intercept 0, Units (0054,1001) and Rescale
  Type (0028,1054) the unit (``"BQML"`` for Bq/mL, ``"CNTS"`` for counts);
- the input's StudyInstanceUID, FrameOfReferenceUID and patient/study identifiers
  (``reference`` metadata, e.g. :attr:`jaxspect.io.ProjectionData.metadata`), new Series and
  SOP Instance UIDs (new Study/Frame of Reference UIDs only when the input has none).

Read it back with :func:`jaxspect.io.read_dicom_volume` (or any DICOM viewer).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from ._dicom_meta import COPIED_KEYWORDS

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"


def write_dicom_volume(folder, volume, affine, *, units: str = "CNTS", reference: dict | None = None,
                       series_description: str = "jaxspect reconstruction", name: str = "recon",
                       corrections: tuple[str, ...] = ()) -> Path:
    """Write ``volume`` ``(nx, ny, nz)`` with its 4x4 voxel -> patient LPS mm ``affine`` as a
    multi-frame DICOM NM file in ``folder``; returns the file's path (see the module docstring).

    ``corrections``: Corrected Image (0028,0051) values, e.g. ``("ATTN", "SCAT", "DECY")``.
    """
    pydicom = _import_pydicom()
    volume = np.asarray(volume, np.float64)
    if volume.ndim != 3:
        raise ValueError(f"volume must have shape (nx, ny, nz), got {volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise ValueError("volume has NaN or Inf values")
    affine = np.asarray(affine, np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise ValueError("affine has a zero voxel size")
    row_dir, col_dir, normal = (affine[:3, a] / spacing[a] for a in range(3))
    if not np.allclose(np.cross(row_dir, col_dir), normal, atol=1e-6) or abs(row_dir @ col_dir) > 1e-6:
        raise ValueError("affine must have orthogonal axes with k along i x j (a right-handed grid)")
    reference = dict(reference or {})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.dcm"

    low, high = float(volume.min()), float(volume.max())
    if low >= 0:
        slope = high / 65535.0 if high > 0 else 1.0
        pixels = np.round(volume / slope).astype("<u2")
        representation = 0
    else:
        slope = max(abs(low), abs(high)) / 32767.0
        pixels = np.round(volume / slope).astype("<i2")
        representation = 1
    frames = np.ascontiguousarray(np.transpose(pixels, (2, 1, 0)))  # (k, j, i): frame k, row j, column i

    now = datetime.datetime.now()
    ds = _dataset(NM_IMAGE_STORAGE, "NM", reference)
    ds.SeriesDescription = series_description
    ds.SeriesNumber = 1001
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.ImageType = ["DERIVED", "PRIMARY", "RECON TOMO", "EMISSION"]
    if corrections:
        ds.CorrectedImage = list(corrections)
    ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[0])
    ds.NumberOfFrames = int(volume.shape[2])
    ds.NumberOfSlices = int(volume.shape[2])
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0054, 0x0080)
    ds.SliceVector = list(range(1, volume.shape[2] + 1))
    ds.ImagePositionPatient = [float(v) for v in affine[:3, 3]]
    ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
    ds.SliceThickness = float(spacing[2])
    ds.SpacingBetweenSlices = float(spacing[2])
    ds.PixelRepresentation = representation
    ds.RescaleSlope, ds.RescaleIntercept = float(slope), 0.0
    ds.RescaleType = units
    ds.Units = units
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _import_pydicom():
    try:
        import pydicom
    except ImportError:
        raise ImportError('writing DICOM needs pydicom: pip install "jaxspect[io]"') from None
    return pydicom


def _dataset(sop_class, modality, reference):
    _import_pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    for keyword in COPIED_KEYWORDS:
        if keyword in reference and keyword != "SeriesInstanceUID":
            setattr(ds, keyword, reference[keyword])
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID"):
        if keyword not in ds:
            setattr(ds, keyword, generate_uid())
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def write_dicom_ct(folder, hu, affine, *, kvp: float = 120.0, reference: dict | None = None) -> list[Path]:
    """Write a CT series, one file per slice: ``hu[a, b, c]`` (Hounsfield units) is pixel
    ``(row b, column a)`` of slice ``c``, and ``affine`` maps ``(a, b, c)`` to patient LPS mm
    (orthogonal axes). Stored as ``HU + 1024`` in unsigned 16 bits (Rescale Intercept -1024).
    ``reference``: Study/Frame of Reference UIDs and patient identifiers to share with a SPECT
    series. Returns the files written."""
    hu = np.asarray(hu, np.float64)
    affine = np.asarray(affine, np.float64)
    if hu.ndim != 3 or affine.shape != (4, 4):
        raise ValueError(f"hu must be 3-D and affine 4x4, got {hu.shape} and {affine.shape}")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    row_dir, col_dir = affine[:3, 0] / spacing[0], affine[:3, 1] / spacing[1]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    reference = dict(reference or {})
    series = None
    paths = []
    for c in range(hu.shape[2]):
        ds = _dataset("1.2.840.10008.5.1.4.1.1.2", "CT", reference)
        series = series or ds.SeriesInstanceUID
        ds.SeriesInstanceUID = series
        reference.setdefault("StudyInstanceUID", ds.StudyInstanceUID)
        reference.setdefault("FrameOfReferenceUID", ds.FrameOfReferenceUID)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP, ds.InstanceNumber = float(kvp), c + 1
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.ImagePositionPatient = [float(v) for v in affine[:3, :] @ np.array([0.0, 0.0, c, 1.0])]
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1.0, -1024.0, "HU"
        ds.PixelData = np.clip(np.round(hu[:, :, c].T + 1024), 0, 65535).astype("<u2").tobytes()
        path = folder / f"ct_{c + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_dicom_projections(path, data, *, centre_mm=(0.0, 0.0, 0.0), frame_duration_s: float | None = None,
                            reference: dict | None = None, energy_window_kev=None, half_life_s: float | None = None,
                            injection_datetime=None, acquisition_datetime=None,
                            collimator_name: str | None = None) -> Path:
    """Write projections (a :class:`jaxspect.io.ProjectionData`, equally spaced angles) as a
    one-head DICOM NM TOMO file that :func:`jaxspect.io.read_dicom_projections` reads back:
    Rotation Information (start angle, step, direction, radial position per view, Actual Frame
    Duration), the first frame's ImagePositionPatient/Orientation placing the grid centre at
    ``centre_mm`` (:mod:`jaxspect.io._affine`), the energy window (``energy_window_kev =
    (lower, upper)``), the radiopharmaceutical's half-life and injection time, and the
    collimator's name (Collimator/Grid Name (0018,1180)) when given.
    Counts are stored as unsigned 16 bits with a Rescale Slope."""
    _import_pydicom()
    from pydicom.dataset import Dataset

    from ._interfile import _uniform_angles
    from ._projections import views_to_frames

    reference = dict(reference or {})
    counts = np.asarray(data.counts, np.float64)
    nx, nz, nview = counts.shape
    start, step, direction = _uniform_angles(np.rad2deg(data.angles))
    ds = _dataset(NM_IMAGE_STORAGE, "NM", reference)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    frames = views_to_frames(counts)
    slope = float(frames.max()) / 65535.0 if frames.max() > 0 else 1.0
    ds.Rows, ds.Columns, ds.NumberOfFrames = nz, nx, nview
    dx, dz = data.pixel_size_mm
    ds.PixelSpacing = [float(dz), float(dx)]
    ds.RescaleSlope, ds.RescaleIntercept = slope, 0.0
    ds.PixelData = np.round(frames / slope).astype("<u2").tobytes()
    if energy_window_kev is None and data.photopeak in data.window_ranges_kev:
        energy_window_kev = data.window_ranges_kev[data.photopeak]
    if energy_window_kev is not None:
        window, limits = Dataset(), Dataset()
        limits.EnergyWindowLowerLimit, limits.EnergyWindowUpperLimit = (float(v) for v in energy_window_kev)
        window.EnergyWindowRangeSequence, window.EnergyWindowName = [limits], "PEAK"
        ds.EnergyWindowInformationSequence = [window]
        ds.NumberOfEnergyWindows = 1
    theta = np.deg2rad(start)
    row_dir = np.array([np.cos(theta), -np.sin(theta), 0.0])  # bins along (cos, -sin) of (x, y)
    col_dir = np.array([0.0, 0.0, -1.0])  # row 0 at the head
    centre = np.asarray(centre_mm, np.float64)
    detector = Dataset()
    detector.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
    detector.ImagePositionPatient = [float(v) for v in centre - (nx - 1) / 2 * dx * row_dir - (nz - 1) / 2 * dz * col_dir]
    detector.StartAngle = float(start)
    if collimator_name is not None:
        detector.CollimatorGridName = str(collimator_name)
    if data.radii is not None:
        detector.RadialPosition = [float(r) for r in data.radii]
    ds.DetectorInformationSequence = [detector]
    ds.NumberOfDetectors, ds.NumberOfRotations = 1, 1
    rotation = Dataset()
    rotation.StartAngle, rotation.AngularStep = float(start), float(step)
    rotation.RotationDirection = "CC" if direction == "CCW" else "CW"
    rotation.NumberOfFramesInRotation, rotation.ScanArc = nview, float(step * nview)
    if frame_duration_s is not None:
        rotation.ActualFrameDuration = int(round(float(frame_duration_s) * 1000))
    ds.RotationInformationSequence = [rotation]
    if acquisition_datetime is not None:
        ds.AcquisitionDate = acquisition_datetime.strftime("%Y%m%d")
        ds.AcquisitionTime = acquisition_datetime.strftime("%H%M%S")
    if half_life_s is not None or injection_datetime is not None:
        item = Dataset()
        if half_life_s is not None:
            item.RadionuclideHalfLife = float(half_life_s)
        if injection_datetime is not None:
            item.RadiopharmaceuticalStartDateTime = injection_datetime.strftime("%Y%m%d%H%M%S")
        ds.RadiopharmaceuticalInformationSequence = [item]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
