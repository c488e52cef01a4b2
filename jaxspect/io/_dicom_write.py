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
    try:
        import pydicom
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError:
        raise ImportError('writing DICOM needs pydicom: pip install "jaxspect[io]"') from None
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
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = NM_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = NM_IMAGE_STORAGE
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for keyword in COPIED_KEYWORDS:
        if keyword in reference and keyword != "SeriesInstanceUID":
            setattr(ds, keyword, reference[keyword])
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = generate_uid()
    if "FrameOfReferenceUID" not in ds:
        ds.FrameOfReferenceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "NM"
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
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, representation
    ds.RescaleSlope, ds.RescaleIntercept = float(slope), 0.0
    ds.RescaleType = units
    ds.Units = units
    ds.PixelData = frames.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
