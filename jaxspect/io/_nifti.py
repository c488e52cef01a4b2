"""NIfTI-1 volumes (activity, attenuation maps, VOI masks) with voxel sizes in mm.

Axis mapping: a jaxspect volume ``x[i, j, k]`` of shape ``(nx, ny, nz)`` is in patient LPS
order (as the torso phantom's): ``i`` towards the patient's left, ``j`` towards the back, ``k``
towards the head. NIfTI's world frame is RAS (+x right, +y anterior, +z superior), so the
written affine is ``diag(-dx, -dy, dz)`` with the grid centre ``((n - 1) / 2)`` at world
``(0, 0, 0)`` (the rotation axis through the origin), sform and qform code 1 (scanner), units
mm. The data array is stored as ``(nx, ny, nz)`` unchanged. On reading, any orientation is
brought back to this LPS axis order (axes permuted/flipped by the affine, via nibabel's
orientation tools), so files written by other tools (e.g. RAS-ordered) land on jaxspect's axes.
Oblique affines (axes rotated away from the world axes, which that snapping would misplace) are
refused. Before any voxel is read, the file must hold the bytes its header promises (``os.stat``
for ``.nii``, a capped decompression for ``.nii.gz``), so a lying header allocates nothing.
Volumes are written to a temporary file in the same folder and renamed into place.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from ._safety import FileCheckError, atomic_write

# Snapping an oblique affine to the nearest axes may move no voxel centre by more than this.
_OBLIQUE_TOLERANCE_VOXELS = 0.1


def _import_nibabel():
    try:
        import nibabel
    except ImportError:
        raise ImportError('reading/writing NIfTI needs nibabel: pip install "jaxspect[io]"') from None
    return nibabel


def _lps_affine(shape, voxel_size_mm):
    dx, dy, dz = voxel_size_mm
    affine = np.diag([-dx, -dy, dz, 1.0])
    centre = (np.asarray(shape, np.float64) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def write_nifti(path, volume, voxel_size_mm, *, affine=None, description: str | None = None) -> Path:
    """Write a volume ``(nx, ny, nz)`` with voxel size ``(dx, dy, dz)`` mm to ``path`` (``.nii``
    or ``.nii.gz``). Floats are stored as float32, booleans (masks) as uint8, integers as is.

    ``affine``: the grid's 4x4 voxel -> patient LPS mm affine (scanner coordinates, e.g.
    :attr:`jaxspect.io.ProjectionData.image_affine`); written as NIfTI's RAS world. Default: the
    grid centred at the origin. ``description``: NIfTI ``descrip`` (80 bytes), e.g. the unit.
    The file appears complete or not at all (temporary file + rename).
    """
    nib = _import_nibabel()
    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise ValueError(f"NIfTI path must end in .nii or .nii.gz, got {path}")
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must have shape (nx, ny, nz), got {volume.shape}")
    try:
        voxel_size_mm = tuple(float(v) for v in voxel_size_mm)
    except TypeError:
        voxel_size_mm = (float(voxel_size_mm),) * 3
    if len(voxel_size_mm) != 3 or not all(np.isfinite(v) and v > 0 for v in voxel_size_mm):
        raise ValueError(f"voxel_size_mm must be 3 positive lengths (mm), got {voxel_size_mm!r}")
    if volume.dtype == bool:
        volume = volume.astype(np.uint8)
    elif np.issubdtype(volume.dtype, np.floating):
        volume = volume.astype(np.float32)
    if affine is None:
        world = _lps_affine(volume.shape, voxel_size_mm)
    else:
        affine = np.asarray(affine, np.float64)
        if affine.shape != (4, 4) or not np.allclose(np.linalg.norm(affine[:3, :3], axis=0), voxel_size_mm, rtol=1e-4):
            raise ValueError(f"affine must be a 4x4 voxel -> LPS mm matrix with column lengths voxel_size_mm "
                             f"{voxel_size_mm}, got {affine.tolist()}")
        world = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    image = nib.Nifti1Image(volume, world)
    if description is not None:
        image.header["descrip"] = description.encode("ascii", "replace")[:79]
    image.header.set_xyzt_units("mm")
    image.set_sform(image.affine, code=1)
    image.set_qform(image.affine, code=1)
    with atomic_write(path) as tmp:
        nib.save(image, str(tmp))
    return path


def read_nifti(path, *, dtype=np.float32) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a 3-D NIfTI volume into jaxspect's LPS axis order.

    Returns ``(volume, voxel_size_mm)``: ``volume`` ``(nx, ny, nz)`` of ``dtype`` (scaling
    ``scl_slope``/``scl_inter`` applied), ``voxel_size_mm`` ``(dx, dy, dz)`` (from the affine's
    column lengths, rounded to the float32 the file holds). A trailing axis
    of length 1 is dropped; other 4-D volumes are refused.
    """
    nib = _import_nibabel()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIfTI file not found: {path}")
    try:
        image = nib.load(str(path))  # the header only: voxels are read below, after the checks
        shape, itemsize = image.header.get_data_shape(), image.header.get_data_dtype().itemsize
        offset = int(image.dataobj.offset)
    except Exception as e:  # nibabel raises ImageFileError and others
        raise ValueError(f"{path} is not a readable NIfTI file: {e}") from None
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)):
        raise ValueError(f"NIfTI file {path} must hold a 3-D volume, got shape {tuple(shape)}")
    _check_stored_bytes(path, offset + math.prod(shape) * itemsize, shape)
    _check_not_oblique(path, image.affine, shape[:3])
    try:
        data = np.asarray(image.dataobj, dtype=np.float64)
    except Exception as e:  # truncated or corrupt despite the checks
        raise ValueError(f"{path} is not a readable NIfTI file: {e}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"NIfTI file {path} must hold a 3-D volume, got shape {data.shape}")
    units = image.header.get_xyzt_units()[0]
    scale = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}.get(units, 1.0)
    orientations = nib.orientations
    current = orientations.io_orientation(image.affine)
    target = orientations.axcodes2ornt(("L", "P", "S"))
    transform = orientations.ornt_transform(current, target)
    data = orientations.apply_orientation(data, transform)
    zooms = np.sqrt(np.sum(image.affine[:3, :3] ** 2, axis=0)) * scale
    # NIfTI stores float32: give back the shortest decimal that float32 holds (4.8, not 4.8000002)
    voxel_size = tuple(float(str(np.float32(zooms[int(a)]))) for a in np.argsort(transform[:, 0]))
    return np.ascontiguousarray(data.astype(dtype)), voxel_size


def _check_stored_bytes(path: Path, needed: int, shape) -> None:
    """The file must hold the ``needed`` bytes its header promises: ``os.stat`` for ``.nii``; for
    ``.nii.gz`` a decompression that stops at ``needed`` bytes and keeps nothing."""
    claim = f"its header promises {needed} bytes (shape {tuple(shape)})"
    if not path.name.lower().endswith(".gz"):
        size = os.stat(path).st_size
        if size < needed:
            raise FileCheckError(f"NIfTI file {path} holds {size} bytes, but {claim}: truncated?")
        return
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while total < needed:
                chunk = f.read(min(1 << 20, needed - total))
                if not chunk:
                    break
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise FileCheckError(f"NIfTI file {path} is truncated or corrupt after {total} decompressed bytes "
                             f"({e}); {claim}") from None
    if total < needed:
        raise FileCheckError(f"NIfTI file {path} decompresses to {total} bytes, but {claim}: truncated?")


def _check_not_oblique(path: Path, affine, shape) -> None:
    """Refuse an affine whose snapping to the nearest axes would move voxels noticeably."""
    nib = _import_nibabel()
    affine = np.asarray(affine, np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) == 0:
        raise FileCheckError(f"NIfTI file {path} has a singular or non-finite affine")
    angles = nib.affines.obliquity(affine)
    shift = float(np.max(np.sin(np.abs(angles)) * np.asarray(shape, np.float64)))
    if shift > _OBLIQUE_TOLERANCE_VOXELS:
        raise FileCheckError(
            f"NIfTI file {path} has an oblique affine (axes up to {np.rad2deg(np.max(np.abs(angles))):.3g} degrees "
            f"from the world axes; snapping them would move voxels by up to {shift:.2g} voxels): "
            "resample it onto an axis-aligned grid first")
