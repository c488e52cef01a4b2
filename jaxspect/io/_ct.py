"""CT-based attenuation maps: a DICOM CT series -> HU -> mu at the photopeak -> the SPECT grid.

Reading (:func:`read_dicom_volume`)
-----------------------------------
A folder of single-frame DICOM images (a CT series; every readable file, any name) or one
multi-frame file (an NM reconstruction, as :func:`jaxspect.io.write_dicom_volume` writes).
Slices are grouped by Series Instance UID (several series in the folder: pass ``series_uid``),
sorted along the slice normal ``row_dir x col_dir`` and checked for equal Rows/Columns, Pixel
Spacing (0028,0030), Image Orientation (Patient) (0020,0037) and even spacing of Image Position
(Patient) (0020,0032). Values are ``stored * RescaleSlope + RescaleIntercept`` (HU for CT).
The volume ``array[a, b, c]`` is pixel ``(row b, column a)`` of slice ``c``; its ``affine``
maps ``(a, b, c, 1)`` to patient LPS mm:
``IPP_0 + a * dc * row_dir + b * dr * col_dir + c * ds * normal``.

HU -> mu (:func:`hu_to_mu`): bilinear water/bone model
-------------------------------------------------------
Below the break point ``BP`` voxels are air-water mixtures, above it water-bone mixtures
(Blankespoor et al., IEEE Trans Nucl Sci 43:2263, 1996; Kinahan et al., Med Phys 25:2046,
1998):

    mu(HU) = mu_w(E) (1 + HU / 1000)                                     HU <= BP
    mu(HU) = mu_w(E) (1 + BP / 1000) + (HU - BP) (mu_b(E) - mu_w(E) (1 + BP / 1000)) / (HU_b - BP)
                                                                         HU >  BP

with ``mu_w``, ``mu_b`` water and cortical bone (ICRU-44, 1.92 g/cm^3) at the photopeak energy
``E`` (NIST, :func:`jaxspect.phantoms.linear_attenuation`). The CT's tube voltage enters
through ``BP`` and ``HU_b``, the CT number of cortical bone, which falls with kVp (the CT beam
hardens and bone's photoelectric excess shrinks). Both come from Carney, Townsend, Rappoport &
Bendriem, "Method for transforming CT images for attenuation correction in PET/CT imaging",
Med Phys 33:976 (2006), whose published coefficients for 511 keV, ``mu = a (HU + 1000) + b``
(1/cm) above ``BP``, are

    kVp   a (1/cm)   b (1/cm)   BP (HU)        HU_b = (mu_b(511) - b) / a - 1000
    80    3.64e-5    6.26e-2    50             1994
    100   4.43e-5    5.44e-2    52             1646
    110   4.92e-5    4.88e-2    43             1496
    120   5.10e-5    4.71e-2    47             1441
    130   5.51e-5    4.24e-2    37             1345
    140   5.64e-5    4.08e-2    30             1319

with ``mu_b(511 keV) = 0.1716 /cm`` (cortical bone, NIST, log-log between 500 and 600 keV);
so at 511 keV the model above reproduces Carney's lines exactly, and at SPECT energies it keeps
their kVp dependence. kVp between tabulated values is interpolated linearly; outside 80-140 kVp
it is refused. The kVp is the CT's KVP (0018,0060) unless given.

Resampling (:func:`resample_to_grid`)
-------------------------------------
mu (not HU: attenuation is linear in mu) is averaged over each SPECT voxel, the CT being
piecewise constant over its voxels. When the two grids' axes are parallel (axial CT, any
flips), this overlap-weighted mean is computed exactly, axis by axis (1-D overlap fractions,
three matrix products). Otherwise every SPECT voxel is sampled on an ``m_x x m_y x m_z``
sub-grid (``m`` = twice the number of CT voxels the SPECT voxel spans along that axis, between 2
and 12), each sub-point takes the value of the CT voxel it falls in (located from both series'
patient geometry), and the samples are averaged: the overlap-weighted mean of the CT voxels
(exact when the grids' voxel boundaries coincide). Nothing leaks beyond a SPECT voxel's own
footprint, so the map's support is that of the CT body. Points outside the CT are air (0).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from .._attenuation_coefficients import linear_attenuation
from ._dicom import read_dicom_dataset
from ._dicom_meta import dicom_metadata
from ._safety import FileCheckError

# Carney et al. 2006, 511 keV: kVp -> (a 1/cm, b 1/cm, break point HU)
CARNEY_511KEV = {80: (3.64e-5, 6.26e-2, 50.0), 100: (4.43e-5, 5.44e-2, 52.0), 110: (4.92e-5, 4.88e-2, 43.0),
                 120: (5.10e-5, 4.71e-2, 47.0), 130: (5.51e-5, 4.24e-2, 37.0), 140: (5.64e-5, 4.08e-2, 30.0)}
#: Cortical bone (ICRU-44, 1.92 g/cm^3) at 511 keV, 1/cm (NIST, log-log between 500 and 600 keV).
BONE_511KEV_PER_CM = 0.1716


def bone_ct_number(kvp: float) -> tuple[float, float]:
    """``(HU_b, BP)``: CT number of cortical bone and the bilinear break point at ``kvp``."""
    kvp = float(kvp)
    grid = sorted(CARNEY_511KEV)
    if not (math.isfinite(kvp) and grid[0] <= kvp <= grid[-1]):
        raise ValueError(f"CT tube voltage {kvp!r} kVp is outside the bilinear model's 80-140 kVp")
    hu_b = [(BONE_511KEV_PER_CM - b) / a - 1000.0 for a, b, _ in (CARNEY_511KEV[k] for k in grid)]
    bp = [CARNEY_511KEV[k][2] for k in grid]
    return float(np.interp(kvp, grid, hu_b)), float(np.interp(kvp, grid, bp))


def bilinear_mu(hu, mu_water: float, mu_bone: float, kvp: float) -> np.ndarray:
    """The bilinear model (module docstring) with given water and bone coefficients (any unit)."""
    hu = np.asarray(hu, np.float64)
    hu_b, bp = bone_ct_number(kvp)
    at_break = mu_water * (1 + bp / 1000.0)
    low = mu_water * (1 + hu / 1000.0)
    high = at_break + (hu - bp) * (mu_bone - at_break) / (hu_b - bp)
    return np.maximum(np.where(hu <= bp, low, high), 0.0)


def hu_to_mu(hu, energy_kev: float, kvp: float) -> np.ndarray:
    """CT numbers (HU) -> linear attenuation coefficients (1/mm) at ``energy_kev`` for a CT at
    ``kvp`` (bilinear water/bone model; see the module docstring). Values below -1000 HU give 0."""
    mu_w = linear_attenuation("water", energy_kev)
    mu_b = linear_attenuation("bone", energy_kev)
    return bilinear_mu(hu, mu_w, mu_b, kvp).astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class DicomVolume:
    """A 3-D DICOM image and its patient geometry.

    Attributes:
        array: ``(n_cols, n_rows, n_slices)`` float32 values (rescaled: HU for CT).
        affine: 4x4, ``(a, b, c, 1)`` -> patient LPS mm (see the module docstring).
        kvp: KVP (0018,0060) or ``None``.
        metadata: :func:`jaxspect.io._dicom_meta.dicom_metadata` of the first slice, plus
            ``Modality`` and ``Units`` (0054,1001) where present.
    """

    array: np.ndarray
    affine: np.ndarray
    kvp: float | None = None
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def _require(ds, keyword, tag, path):
    value = getattr(ds, keyword, None)
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        raise ValueError(f"DICOM file {path} lacks {keyword} {tag}")
    return value


def _orientation(ds, path):
    orientation = np.asarray([float(v) for v in _require(ds, "ImageOrientationPatient", "(0020,0037)", path)])
    if orientation.shape != (6,) or not np.all(np.isfinite(orientation)):
        raise ValueError(f"DICOM file {path}: ImageOrientationPatient (0020,0037) must be 6 finite numbers")
    row_dir, col_dir = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 or abs(row_dir @ col_dir) > 1e-3:
        raise ValueError(f"DICOM file {path}: ImageOrientationPatient (0020,0037) {list(orientation)} is not two "
                         "orthogonal unit vectors")
    return row_dir, col_dir


def _pixels(ds, path):
    if "PixelData" not in ds:
        raise ValueError(f"DICOM file {path} lacks PixelData (7FE0,0010)")
    values = np.asarray(ds.pixel_array, np.float64)
    slope, intercept = getattr(ds, "RescaleSlope", None), getattr(ds, "RescaleIntercept", None)
    return values * (1.0 if slope is None else float(slope)) + (0.0 if intercept is None else float(intercept))


def _metadata(ds):
    meta = dicom_metadata(ds)
    for keyword in ("Modality", "Units"):
        value = getattr(ds, keyword, None)
        if value not in (None, ""):
            meta[keyword] = str(value)
    return meta


def _multiframe(ds, path) -> DicomVolume:
    frames = _pixels(ds, path)  # (frames, rows, cols)
    row_dir, col_dir = _orientation(ds, path)
    dr, dc = (float(v) for v in _require(ds, "PixelSpacing", "(0028,0030)", path))
    origin = np.asarray([float(v) for v in _require(ds, "ImagePositionPatient", "(0020,0032)", path)])
    spacing = getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None)
    if spacing is None:
        raise ValueError(f"DICOM file {path} lacks SpacingBetweenSlices (0018,0088) and SliceThickness (0018,0050)")
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1] = dc * row_dir, dr * col_dir
    affine[:3, 2] = float(spacing) * np.cross(row_dir, col_dir)
    affine[:3, 3] = origin
    kvp = getattr(ds, "KVP", None)
    return DicomVolume(np.ascontiguousarray(np.transpose(frames, (2, 1, 0))).astype(np.float32), affine,
                       None if kvp in (None, "") else float(kvp), _metadata(ds))


def read_dicom_volume(path, *, series_uid: str | None = None) -> DicomVolume:
    """Read a DICOM image volume: a folder of single-frame slices (a CT series) or one
    multi-frame file. See the module docstring for the layout and the checks."""
    path = Path(path)
    if path.is_file():
        ds = read_dicom_dataset(path)
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            return _multiframe(ds, path)
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    else:
        raise FileNotFoundError(f"DICOM series folder or file not found: {path}")
    slices = []
    for file in files:
        try:
            ds = read_dicom_dataset(file)
        except FileCheckError:
            raise
        except ValueError:
            continue  # DICOMDIR, notes, thumbnails: not slices
        if "PixelData" not in ds or not hasattr(ds, "ImagePositionPatient"):
            continue
        slices.append((file, ds))
    if not slices:
        raise ValueError(f"{path} holds no DICOM image slices (files with PixelData and ImagePositionPatient)")
    series = {}
    for file, ds in slices:
        series.setdefault(str(getattr(ds, "SeriesInstanceUID", "")), []).append((file, ds))
    if series_uid is not None:
        if series_uid not in series:
            raise ValueError(f"{path} has no series {series_uid!r}; it holds {sorted(series)}")
        chosen = series[series_uid]
    elif len(series) > 1:
        raise ValueError(f"{path} holds {len(series)} series {sorted(series)}; pass series_uid= (the CT's "
                         "SeriesInstanceUID (0020,000E))")
    else:
        chosen = next(iter(series.values()))
    first_file, first = chosen[0]
    row_dir, col_dir = _orientation(first, first_file)
    normal = np.cross(row_dir, col_dir)
    spacing = np.asarray([float(v) for v in _require(first, "PixelSpacing", "(0028,0030)", first_file)])
    shape = (int(first.Rows), int(first.Columns))
    positions = []
    for file, ds in chosen:
        r, c = _orientation(ds, file)
        if not (np.allclose(r, row_dir, atol=1e-4) and np.allclose(c, col_dir, atol=1e-4)):
            raise ValueError(f"DICOM file {file}: ImageOrientationPatient (0020,0037) differs from {first_file}'s")
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise ValueError(f"DICOM file {file}: Rows x Columns {ds.Rows} x {ds.Columns} differ from {shape}")
        if not np.allclose([float(v) for v in _require(ds, "PixelSpacing", "(0028,0030)", file)], spacing, rtol=1e-4):
            raise ValueError(f"DICOM file {file}: PixelSpacing (0028,0030) differs from {first_file}'s")
        positions.append(np.asarray([float(v) for v in _require(ds, "ImagePositionPatient", "(0020,0032)", file)]))
    distance = np.asarray([p @ normal for p in positions])
    order = np.argsort(distance)
    distance = distance[order]
    if len(order) > 1:
        steps = np.diff(distance)
        if np.any(steps <= 1e-6):
            raise ValueError(f"{path}: two slices share one ImagePositionPatient (0020,0032); several acquisitions mixed?")
        if not np.allclose(steps, steps.mean(), rtol=1e-3, atol=1e-3):
            raise ValueError(f"{path}: slices are unevenly spaced (ImagePositionPatient (0020,0032) steps "
                             f"{steps.min():.4g}-{steps.max():.4g} mm)")
        step = float(steps.mean())
        offsets = np.asarray([positions[i] - positions[order[0]] for i in order])
        off_normal = offsets - np.outer(offsets @ normal, normal)
        if np.abs(off_normal).max() > 1e-2:
            raise ValueError(f"{path}: slices are displaced across the slice normal (a tilted gantry, "
                             f"GantryDetectorTilt (0018,1120)); resample the CT to untilted slices first")
    else:
        step = float(getattr(first, "SliceThickness", 1.0) or 1.0)
    volume = np.stack([_pixels(chosen[i][1], chosen[i][0]) for i in order], axis=0)  # (slices, rows, cols)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = spacing[1] * row_dir, spacing[0] * col_dir, step * normal
    affine[:3, 3] = positions[order[0]]
    kvp = getattr(first, "KVP", None)
    return DicomVolume(np.ascontiguousarray(np.transpose(volume, (2, 1, 0))).astype(np.float32), affine,
                       None if kvp in (None, "") else float(kvp), _metadata(first))


def _piecewise_constant(volume, points):
    """``volume`` (n0, n1, n2) at fractional indices ``points`` (..., 3): the value of the voxel
    each point falls in; outside: 0."""
    shape = np.asarray(volume.shape)
    index = np.floor(points + 0.5).astype(np.int64)
    inside = np.all((index >= 0) & (index < shape), axis=-1)
    clipped = np.clip(index, 0, shape - 1)
    return np.where(inside, volume[clipped[..., 0], clipped[..., 1], clipped[..., 2]], 0.0)


def _overlap_weights(n_out, scale, offset, n_source):
    """``(n_out, n_source)``: fraction of output voxel ``i`` (source-index interval
    ``offset + scale * i -+ |scale| / 2``) covered by source voxel ``p`` (``p -+ 1/2``)."""
    centre = offset + scale * np.arange(n_out)[:, None]
    half = abs(scale) / 2
    p = np.arange(n_source)[None, :]
    overlap = np.minimum(centre + half, p + 0.5) - np.maximum(centre - half, p - 0.5)
    # touching voxels overlap by rounding error: exactly 0, so that the map's support stays the CT's
    return np.where(overlap > 1e-9 * max(1.0, 2 * half), overlap, 0.0) / (2 * half)


def resample_to_grid(volume, affine, shape, grid_affine, *, max_samples: int = 12) -> np.ndarray:
    """Overlap-weighted average of ``volume`` (piecewise constant over its voxels, with
    ``affine``) over each voxel of the grid ``shape`` with ``grid_affine`` (both affines map
    indices to the same patient mm); see the module docstring. Returns ``shape`` float32;
    outside ``volume``: 0.

    When the two grids' axes are parallel (the usual axial CT and SPECT), the overlaps are
    computed exactly, one axis at a time (three matrix products); otherwise each grid voxel is
    sub-sampled (``max_samples`` per axis at most).
    """
    volume = np.asarray(volume, np.float32)
    to_source = np.linalg.inv(np.asarray(affine, np.float64)) @ np.asarray(grid_affine, np.float64)
    rotation = to_source[:3, :3]
    if np.allclose(rotation, np.diag(np.diag(rotation)), atol=1e-9 * np.abs(rotation).max()):
        out = volume
        for axis in range(3):
            weights = _overlap_weights(shape[axis], rotation[axis, axis], to_source[axis, 3], volume.shape[axis])
            out = np.moveaxis(np.tensordot(weights.astype(np.float32), out, axes=([1], [axis])), 0, axis)
        return np.ascontiguousarray(out, np.float32)
    return _resample_supersampled(volume, to_source, shape, max_samples)


def _resample_supersampled(volume, to_source, shape, max_samples):
    # CT voxels spanned by one grid voxel along each grid axis -> sub-samples per axis
    span = np.abs(to_source[:3, :3]).sum(axis=0)
    m = np.clip(np.ceil(2 * span - 1e-9).astype(int), 2, max_samples)
    subs = [(np.arange(n) + 0.5) / n - 0.5 for n in m]
    sub = np.stack(np.meshgrid(*subs, indexing="ij"), axis=-1).reshape(-1, 3)  # (S, 3) in grid voxels
    nx, ny, nz = shape
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    out = np.zeros(shape, np.float32)
    for k in range(nz):
        centres = np.stack([i, j, np.full_like(i, k)], axis=-1).astype(np.float64)  # (nx, ny, 3)
        points = centres[:, :, None, :] + sub[None, None]  # (nx, ny, S, 3)
        source = points @ to_source[:3, :3].T + to_source[:3, 3]
        out[:, :, k] = _piecewise_constant(volume, source).mean(axis=-1)
    return out


def ct_to_mumap(path, energy_kev: float, shape, grid_affine, *, kvp: float | None = None,
                series_uid: str | None = None) -> np.ndarray:
    """An attenuation map (1/mm) on a SPECT grid from a DICOM CT series.

    Arguments:
        path: the CT series folder (or one multi-frame file).
        energy_kev: photopeak energy (keV).
        shape, grid_affine: the SPECT grid ``(nx, ny, nz)`` and its affine (voxel -> patient
            LPS mm; :attr:`jaxspect.io.ProjectionData.image_affine`).
        kvp: the CT's tube voltage; default its KVP (0018,0060).
        series_uid: which series when the folder holds several.

    Returns ``(nx, ny, nz)`` float32 mu in 1/mm, averaged over each SPECT voxel.
    """
    ct = read_dicom_volume(path, series_uid=series_uid)
    modality = ct.metadata.get("Modality")
    if modality not in (None, "CT"):
        raise ValueError(f"{path} is a {modality} series, expected CT")
    if kvp is None:
        if ct.kvp is None:
            raise ValueError(f"CT series {path} lacks KVP (0018,0060); pass kvp= (--kvp)")
        kvp = ct.kvp
    mu = hu_to_mu(ct.array, energy_kev, kvp)
    return resample_to_grid(mu, ct.affine, shape, grid_affine)
