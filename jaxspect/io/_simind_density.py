"""SIMIND's aligned density/attenuation maps (``.hct`` header + ``.ict`` data) as attenuation maps.

With its flag 15 ("Save aligned phantom images") and a voxel phantom, SIMIND writes the phantom's
attenuation image, aligned to the simulation, as an Interfile pair ``NAME.hct`` / ``NAME.ict``
(the SIMIND change program's help: "The image (*.ict) and header (*.hct) will be output"). SIMIND's
manual does not describe the header; the keys below are those of headers SIMIND V8.0 wrote
(``!study ID := Aligned CT Map``, ``exam type := CT DATA``; seen in files of the public
repository qurit/Theranostic-Virtual-Patient-Pipeline), not confirmed against a specification:

- ``!originating system := simind``; ``!name of data file := NAME.ict`` (in the header's folder);
  ``!data offset in bytes``; ``imagedata byte order``; ``!number format`` / ``!number of bytes
  per pixel`` (``short float`` x 4 for mu maps, ``signed integer`` x 2 for HU);
- ``!matrix size [1]`` / ``[2]`` / ``[3]`` (columns, rows, images) and ``scaling factor
  (mm/pixel) [1..3]``;
- ``;# Image Position First image := -320.0000 -320.0000 557.500000`` and ``;# Image Orientation
  := 1.0 0.0 0.0 0.0 1.0 0.0``: rows run along ``+x`` and columns along ``+y`` in DICOM's sense
  (patient left, posterior), and the first image is the one at ``+z`` (the position is the outer
  corner: for 128 x 128 x 223 voxels of 5 mm, -64 x 5 and +111.5 x 5 mm, a volume centred on
  the rotation axis);
- ``;# Units of data (ECT) := mu`` (linear attenuation coefficients in **1/cm** at the simulated
  photon energy) or ``HU`` with ``;# CT Rescale Slope``, ``;# CT Rescale Intercept`` (HU = slope
  x stored + intercept, as DICOM's keys of those names) and ``;# CT Voltage`` (kVp).

jaxspect also accepts ``density`` (g/cm^3; SIMIND's own density maps, ``.dmi``, hold density
x 1000 as integers: pass ``units="density_x1000"`` for those values).

Axes: column -> ``i`` (patient left), row -> ``j`` (posterior), image ``s`` -> ``k = nz - 1 - s``
(the first image is at the head end, like the first row of a projection frame), the volume
centred on the rotation axis, which is where jaxspect centres the grid of Interfile projections.
This follows the header's position/orientation comments and is *not* checked against SIMIND
itself (jaxspect cannot run SIMIND); the tests check it for consistency with jaxspect's reading
of SIMIND projections.

Conversion to mu (1/mm) at the photopeak ``energy_kev`` (:func:`read_simind_density_map`):

- ``mu``: / 10; when the simulated photon energy is known (``map_energy_kev``, the projections'
  ``;# SIMIND: Photon Energy``) and differs from ``energy_kev``, scaled by the ratio of water's
  coefficients at the two energies (NIST, :mod:`jaxspect._attenuation_coefficients`);
- ``HU``: the bilinear model of :func:`jaxspect.io.hu_to_mu` at the header's kVp;
- ``density``: density x water's mass attenuation coefficient at ``energy_kev`` (NIST).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from .._attenuation_coefficients import linear_attenuation
from ._affine import grid_affine
from ._ct import hu_to_mu, resample_to_grid
from ._interfile import _get, _int, parse_interfile_header, read_raw_values, volume_grid
from ._mumap import check_mumap_units
from ._simind import parse_simind_comments

DENSITY_MAP_SUFFIX = ".hct"
_UNITS = {"mu": "mu", "cm-1": "mu", "1/cm": "mu", "hu": "hu", "density": "density", "g/cm3": "density",
          "g/cc": "density", "density_x1000": "density_x1000"}


@dataclasses.dataclass(frozen=True)
class SimindDensityMap:
    """A SIMIND ``.hct`` map on jaxspect's axes.

    Attributes:
        values: ``(nx, ny, nz)`` float32 as stored (times the HU rescale for ``hu``).
        voxel_size_mm: ``(dx, dy, dz)`` mm.
        units: ``"mu"`` (1/cm), ``"hu"``, ``"density"`` or ``"density_x1000"`` (g/cm^3 x 1000).
        kvp: the CT voltage the header gives (``;# CT Voltage``), or ``None``.
    """

    values: np.ndarray
    voxel_size_mm: tuple[float, float, float]
    units: str
    kvp: float | None = None

    @property
    def affine(self) -> np.ndarray:
        """Voxel -> mm, centred on the rotation axis (the origin)."""
        return grid_affine(self.values.shape, self.voxel_size_mm)


def _comment_number(comments, key, path):
    if key not in comments:
        return None
    try:
        return float(comments[key])
    except ValueError:
        raise ValueError(f"SIMIND map header {path}: ';# {key} := {comments[key]}' is not a number") from None


def load_simind_density_map(path, *, units: str | None = None, data_file=None) -> SimindDensityMap:
    """Read a SIMIND ``.hct``/``.ict`` pair onto jaxspect's axes (see the module docstring).

    ``units`` overrides ``;# Units of data (ECT)`` (``"mu"``, ``"hu"``, ``"density"``,
    ``"density_x1000"``); without either, a ``ValueError`` names the key.
    """
    path = Path(path)
    header = parse_interfile_header(path)
    comments = parse_simind_comments(path)
    stated = comments.get("units of data (ect)")
    name = (units if units is not None else stated or "").strip().lower()
    if name not in _UNITS:
        where = f"units={units!r}" if units is not None else (
            f"';# Units of data (ECT) := {stated}'" if stated else "no ';# Units of data (ECT)' line")
        raise ValueError(f"SIMIND map header {path}: {where}; expected mu (1/cm), HU or density: pass "
                         "units='mu'|'hu'|'density'|'density_x1000'")
    kind = _UNITS[name]
    shape, voxel = volume_grid(header, path, "SIMIND map")
    images = _get(header, "total number of images", path, _int)
    if images is not None and images != shape[2]:
        raise ValueError(f"SIMIND map header {path}: '!total number of images := {images}' differs from "
                         f"'!matrix size [3] := {shape[2]}'")
    orientation = comments.get("image orientation")
    if orientation is not None:
        cosines = [float(v) for v in re.split(r"[\s,\\]+", orientation.strip()) if v]
        if not np.allclose(cosines, [1, 0, 0, 0, 1, 0]):
            raise ValueError(f"SIMIND map header {path}: ';# Image Orientation := {orientation}'; only 1 0 0 0 1 0 "
                             "(axial images, rows along x) is known")
    raw = read_raw_values(path, header, int(np.prod(shape)), data_file=data_file,
                          what=f"matrix size {shape[0]} x {shape[1]} x {shape[2]} voxels")
    values = raw.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the data of SIMIND map header {path} hold NaN or Inf")
    kvp = _comment_number(comments, "ct voltage", path)
    if kind == "hu":
        slope = _comment_number(comments, "ct rescale slope", path)
        intercept = _comment_number(comments, "ct rescale intercept", path)
        values = values * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    # stored image by image (row by row, column fastest) -> (column, row, image), first image at the head
    volume = values.reshape(shape[::-1]).transpose(2, 1, 0)[:, :, ::-1]
    return SimindDensityMap(np.ascontiguousarray(volume, np.float32), voxel, kind, kvp)


def read_simind_density_map(path, energy_kev: float, *, shape=None, grid_affine_mm=None, map_energy_kev=None,
                            kvp=None, units: str | None = None) -> np.ndarray:
    """A SIMIND ``.hct`` map as linear attenuation coefficients (1/mm) at ``energy_kev``.

    Arguments:
        path: the ``.hct`` header.
        energy_kev: the photopeak energy (keV).
        shape, grid_affine_mm: the SPECT grid ``(nx, ny, nz)`` and its affine (voxel -> mm,
            :attr:`jaxspect.io.ProjectionData.image_affine`, centred at the origin for Interfile);
            given, the map is averaged over each SPECT voxel (:func:`jaxspect.io.resample_to_grid`).
        map_energy_kev: the photon energy SIMIND simulated (a ``mu`` map's energy), if known.
        kvp: CT voltage for an ``HU`` map lacking ``;# CT Voltage``.
        units: override of ``;# Units of data (ECT)``.

    Returns ``(nx, ny, nz)`` float32 mu in 1/mm, checked by :func:`jaxspect.io.check_mumap_units`.
    """
    path = Path(path)
    density_map = load_simind_density_map(path, units=units)
    values = density_map.values.astype(np.float64)
    if density_map.units == "mu":
        mu = values / 10.0
        if map_energy_kev is not None and map_energy_kev != energy_kev:
            mu = mu * linear_attenuation("water", energy_kev) / linear_attenuation("water", map_energy_kev)
    elif density_map.units == "hu":
        kvp = kvp if kvp is not None else density_map.kvp
        if kvp is None:
            raise ValueError(f"SIMIND map header {path}: an HU map needs the CT voltage (';# CT Voltage'), which it lacks: "
                             "pass kvp= (--kvp)")
        mu = hu_to_mu(values, energy_kev, kvp)
    else:
        density = values / (1000.0 if density_map.units == "density_x1000" else 1.0)
        if density.size and density.max() > 25:  # denser than any element: density x 1000
            raise ValueError(f"SIMIND map header {path}: densities up to {density.max():.4g} g/cm^3; values of density "
                             "x 1000 (SIMIND's .dmi convention) need units='density_x1000'")
        mu = density * linear_attenuation("water", energy_kev, density=1.0)  # negative: refused below
    mu = mu.astype(np.float32)
    if (shape is None) != (grid_affine_mm is None):
        raise TypeError("pass both shape and grid_affine_mm (the SPECT grid), or neither")
    if shape is not None:
        mu = resample_to_grid(mu, density_map.affine, tuple(shape), grid_affine_mm)
    return check_mumap_units(mu, "per_mm", what=f"attenuation map from SIMIND map {path}")
