"""Attenuation maps from NIfTI files, with their units checked.

The projector wants μ in **1/mm**. Maps come in 1/mm, in 1/cm (ten times larger) or as CT
numbers (HU, -1000 for air), and a map in the wrong unit gives a plausible-looking but wrong
image, so :func:`read_mumap` refuses values that look like another unit unless the unit is
given explicitly:

- soft tissue has μ between about 0.0096/mm (511 keV) and 0.023/mm (50 keV), bone up to about
  0.08/mm; a map read as 1/mm whose median over the body (voxels > 0) exceeds 0.04/mm looks
  like 1/cm;
- negative values (air at -1000) or values above 1/mm look like HU.
"""

from __future__ import annotations

import numpy as np

from ._nifti import read_nifti
from ._safety import FileCheckError

UNITS = ("per_mm", "per_cm")
# Median over the body of a map in 1/mm above which it looks like 1/cm (water at 50 keV: 0.023).
_MAX_TISSUE_PER_MM = 0.04
# No tissue at SPECT energies reaches this (cortical bone at 50 keV: about 0.08/mm).
_MAX_MU_PER_MM = 1.0


def check_mumap_units(mumap, units: str | None, *, what: str = "mumap") -> np.ndarray:
    """``mumap`` converted to 1/mm (float32) from ``units`` (``"per_mm"``, ``"per_cm"``, or
    ``None``: 1/mm, refused if the values look like 1/cm or HU). ``FileCheckError`` naming
    ``what`` for non-finite, negative or implausible values."""
    if units not in (None, *UNITS):
        raise ValueError(f"units must be one of {UNITS} or None, got {units!r}")
    mumap = np.asarray(mumap, np.float64)
    if not np.all(np.isfinite(mumap)):
        raise FileCheckError(f"{what} contains NaN or Inf")
    if mumap.size and mumap.min() < 0:
        hint = " (a CT in HU? convert it to attenuation coefficients first)" if mumap.min() <= -100 else ""
        raise FileCheckError(f"{what} must be >= 0, got minimum {mumap.min():.4g}{hint}")
    if units == "per_cm":
        mumap = mumap / 10
    stated = "1/mm" if units is None else {"per_mm": "1/mm", "per_cm": "1/cm"}[units]
    if mumap.size and mumap.max() > _MAX_MU_PER_MM:
        raise FileCheckError(
            f"{what} reaches {mumap.max():.3g} per mm read as {stated}, beyond any body tissue (bone at 70 keV is "
            "about 0.05/mm): wrong units (--mumap-units), or a CT in HU?")
    if units is None:
        body = mumap[mumap > 0]
        tissue = float(np.median(body)) if body.size else 0.0
        if tissue > _MAX_TISSUE_PER_MM:
            raise FileCheckError(
                f"{what}: its median over the body is {tissue:.3g}, which as 1/mm would be {tissue / 0.0154:.1f}x "
                "water at 140 keV; it looks like a map in 1/cm: state the units (units='per_cm', on the command "
                "line --mumap-units per_cm; or 'per_mm' if these values really are per mm)")
    return mumap.astype(np.float32)


def read_mumap(path, units: str | None = None, *, image_shape=None, voxel_size_mm=None) -> np.ndarray:
    """Read an attenuation map from a NIfTI file (or a STIR ``.hv`` image, with
    :func:`jaxspect.io.read_stir_mumap`: STIR's axes and its unit, 1/cm, unless ``units`` says
    otherwise) and return it in 1/mm, ``(nx, ny, nz)`` float32 on jaxspect's axes.

    Arguments:
        path: the NIfTI file.
        units: ``"per_mm"`` or ``"per_cm"`` for the file's values; ``None`` (default) takes
            1/mm but refuses maps that look like 1/cm or HU (see the module docstring).
        image_shape: if given, the map must have this shape ``(nx, ny, nz)``.
        voxel_size_mm: if given, the map's voxels must match it (relative tolerance 1e-3).

    Raises a ``ValueError`` (:class:`jaxspect.io.FileCheckError`) naming the file.
    """
    if str(path).lower().endswith(".hv"):  # STIR's image header: its own reader and unit (1/cm)
        from ._stir import read_stir_mumap

        return read_stir_mumap(path, units, image_shape=image_shape, voxel_size_mm=voxel_size_mm)
    mumap, voxel = read_nifti(path)
    if image_shape is not None and mumap.shape != tuple(image_shape):
        raise FileCheckError(f"attenuation map {path} has shape {mumap.shape}, but the projections need an image "
                             f"of shape (nx, nx, nz) = {tuple(image_shape)}")
    if voxel_size_mm is not None and not np.allclose(voxel, voxel_size_mm, rtol=1e-3):
        raise FileCheckError(f"attenuation map {path} has voxels {voxel} mm, but the projections' pixels give "
                             f"{tuple(voxel_size_mm)} mm")
    return check_mumap_units(mumap, units, what=f"attenuation map {path}")
