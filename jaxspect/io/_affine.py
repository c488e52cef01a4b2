"""Patient coordinates of jaxspect's reconstruction grid (DICOM's LPS frame, mm).

DICOM patient coordinates are LPS: ``+x`` towards the patient's left, ``+y`` posterior, ``+z``
superior (head). jaxspect's image axes ``(i, j, k)`` are these same directions, so a
reconstruction grid is placed in the patient by its voxel size and the patient position of its
centre: voxel ``(i, j, k)`` lies at

    centre + ((i, j, k) - (n - 1) / 2) * (dx, dy, dz)

i.e. the 4x4 affine ``diag(dx, dy, dz, 1)`` with the translation
``centre - (n - 1) / 2 * voxel`` (:func:`grid_affine`). The grid centre is the point on the
rotation axis midway along the axial field of view.

Where the grid centre comes from (:func:`nm_grid_centre`): a DICOM NM projection file gives, in
its Detector Information Sequence (0054,0022), the Image Position (Patient) (0020,0032) of the
first pixel and the Image Orientation (Patient) (0020,0037) of head 1's first frame. jaxspect
takes the projection plane to contain the rotation axis (the convention of planar projection
images: a projection has no depth), so the centre is that frame's centre pixel,
``IPP + (cols - 1) / 2 * dx * row_dir + (rows - 1) / 2 * dz * col_dir``. The frame's column
direction must be the patient's feet direction (row 0 at the head, as
:mod:`jaxspect.io._projections` reads frames); a file that says otherwise is refused. Files
without these fields (Interfile) give no centre: the grid is then centred at the patient origin
``(0, 0, 0)``, as :func:`jaxspect.io.write_nifti` always placed it.
"""

from __future__ import annotations

import numpy as np


def grid_affine(shape, voxel_size_mm, centre_mm=(0.0, 0.0, 0.0)) -> np.ndarray:
    """The 4x4 affine ``(i, j, k, 1) -> (x, y, z, 1)`` patient LPS mm of a grid ``shape`` with
    voxels ``voxel_size_mm`` whose centre ``(n - 1) / 2`` lies at ``centre_mm``."""
    voxel = np.asarray(voxel_size_mm, np.float64).reshape(3)
    centre = np.asarray(centre_mm, np.float64).reshape(3)
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = centre - (np.asarray(shape, np.float64) - 1) / 2 * voxel
    return affine


def nm_grid_centre(ds, path, pixel_spacing_mm) -> np.ndarray | None:
    """Patient position (mm, LPS) of the reconstruction grid's centre from a DICOM NM projection
    dataset (see the module docstring), or ``None`` when the file lacks ImagePositionPatient /
    ImageOrientationPatient in its Detector Information Sequence."""
    detectors = list(getattr(ds, "DetectorInformationSequence", []) or [])
    item = detectors[0] if detectors else ds
    position = getattr(item, "ImagePositionPatient", None)
    orientation = getattr(item, "ImageOrientationPatient", None)
    if position is None or orientation is None or len(position) != 3 or len(orientation) != 6:
        return None
    position = np.asarray([float(v) for v in position])
    orientation = np.asarray([float(v) for v in orientation])
    row_dir, col_dir = orientation[:3], orientation[3:]
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(orientation))):
        raise ValueError(f"DICOM file {path}: ImagePositionPatient/ImageOrientationPatient (0020,0032/0037) "
                         "in the Detector Information Sequence are not finite")
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 or abs(row_dir[2]) > 1e-3:
        raise ValueError(f"DICOM file {path}: ImageOrientationPatient (0020,0037) {list(orientation)} of the projection "
                         "frames must have unit row/column directions with the rows transaxial")
    if col_dir[2] > -0.999:
        raise ValueError(f"DICOM file {path}: ImageOrientationPatient (0020,0037) {list(orientation)} says the frame's "
                         "rows do not run from head to feet; jaxspect reads row 0 as the head end")
    dx, dz = pixel_spacing_mm
    rows = int(ds.Rows)
    cols = int(ds.Columns)
    return position + (cols - 1) / 2 * dx * row_dir + (rows - 1) / 2 * dz * col_dir


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """An LPS affine as NIfTI's RAS world: negate the x and y rows."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, np.float64)
