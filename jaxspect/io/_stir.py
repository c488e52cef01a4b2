"""STIR's Interfile for SPECT: projection data (``.hs``) and images (``.hv``), as STIR writes them.

STIR (Software for Tomographic Image Reconstruction, UCL) writes its own dialect of Interfile.
Key spellings, defaults and conventions below are taken from STIR's source (github.com/UCL/STIR):

- ``src/IO/interfile.cxx``: how STIR *writes* a SPECT ``.hs`` (``write_basic_interfile_PDFS_header``)
  and an image ``.hv`` (``write_basic_interfile_image_header``);
- ``src/IO/InterfilePDFSHeaderSPECT.cxx``: what STIR *reads* for SPECT projection data, and its
  defaults and checks;
- ``src/IO/InterfileHeader.cxx``: the shared keys (``imaging modality``, ``matrix size [n]``,
  ``scaling factor (mm/pixel) [n]``, ``first pixel offset (mm) [n]``, ``image scaling factor [n]``,
  ``data offset in bytes``, ``number of time frames``, ``image duration (sec) [n]``);
- ``src/utilities/SPECT_dicom_to_interfile.cxx``: how STIR turns a DICOM NM file into a ``.hs``;
- ``src/recon_buildblock/SPECTUB_Tools.cxx`` (``fill_ang``) and ``SPECTUB_Weight3d.cxx``: the
  geometry of STIR's SPECT projector (SPECTUB), which fixes how STIR's image axes sit relative to
  its projection data;
- ``examples/samples/SPECT_Interfile_header.hs`` and ``recon_test_pack/SPECT/SPECTUB/``: sample files;
- ``documentation/STIR-UsersGuide.tex`` (SPECTUB section): attenuation maps are in **1/cm**.

Projection data (``.hs``, :func:`read_stir_projections`)
---------------------------------------------------------
SPECT data are recognised by ``!imaging modality := nucmed`` (as STIR does; PET ``.hs`` files are
refused). Keys: ``!matrix size [1]`` (bins, ``nx``) / ``[2]`` (axial positions, ``nz``) and their
``!scaling factor (mm/pixel) [1]`` / ``[2]``; ``!number of projections``; ``!extent of rotation``
(degrees; STIR refuses a header without it, so does jaxspect); ``start angle`` (degrees, STIR's
default 0) and ``!direction of rotation`` (``CW``/``CCW``, STIR's default ``CW``); ``orbit :=
circular`` with ``Radius`` (mm) or ``orbit := non-circular`` with ``Radii := {r0, r1, ...}`` (mm,
one per view; STIR's default orbit is circular); ``!number format``, ``!number of bytes per
pixel``, ``imagedata byte order``, ``data offset in bytes``; optional ``matrix axis label [1] :=
bin coordinate`` / ``[2] := axial coordinate`` (checked as STIR does), ``energy window lower/upper
level [1]`` (keV), ``number of time frames`` (one) and ``!image duration (sec) [1]`` (the whole
acquisition, as STIR's DICOM converter writes it: divided by the number of views for the time per
view).

View ``l`` is at ``start angle -+ l * extent / nview`` degrees (``CW``: minus), as STIR computes it
(``InterfilePDFSHeaderSPECT.cxx``: negative angle sampling for ``cw``). STIR's DICOM converter
copies DICOM's Start Angle (0054,0200) into ``start angle``, Rotation Direction (0018,1140) into
``direction of rotation`` (``CC`` -> ``CCW``), Radial Position (0018,1142) into ``radius``/
``radii`` and the frames unchanged into the data file (view by view, row by row). So a STIR
angle *is* a DICOM gantry angle and the frames are laid out as DICOM's: jaxspect reads them with
the convention of :mod:`jaxspect.io._projections` (``theta = radians(angle)``, frame column = bin
``i``, first row at the head end). The data file may hold more than one data set (the converter
writes every energy window into one file, each header pointing at its own ``data offset in
bytes``): it must hold at least offset + the data set.

Images (``.hv``, :func:`read_stir_image`)
-----------------------------------------
Keys: ``!matrix size [1..3]`` (x, y, z), ``scaling factor (mm/pixel) [1..3]``, ``first pixel offset
(mm) [1..3]`` (optional, kept), ``!number format``, ``!number of bytes per pixel``, ``imagedata byte
order``, ``data offset in bytes [1]`` (or without index), ``image scaling factor [1]`` (the values
are multiplied by it), ``number of time frames`` (one), ``matrix axis label [n]`` (``x``, ``y``,
``z`` if given). The data are stored x fastest, then y, then z.

Axes. STIR's SPECT projector puts view ``l``'s detector at ``(-R sin phi, R cos phi)`` in its own
frame and runs the bins along ``(cos phi, sin phi)`` (``fill_ang``, ``SPECTUB_Weight3d.cxx``), where
that frame's first axis is STIR's ``x`` *reversed* (``InvertAxis::invert_axis_index`` when it
fills the matrix) and its second is STIR's ``y``; slice ``z`` is the projections' axial position
``z``. Against jaxspect's geometry (:mod:`jaxspect._geometry`: detector at ``(-sin theta, -cos
theta)`` in ``(i, j)``, bins along ``(cos theta, -sin theta)``, frame row 0 at ``k = nz - 1``) with
``theta = phi``, a STIR SPECT image is jaxspect's with **every axis reversed**:
``volume[i, j, k] = stir[x = nx - 1 - i, y = ny - 1 - j, z = nz - 1 - k]``. This is what
:func:`read_stir_image` returns, so a STIR attenuation map lines up with the ``.hs`` data it belongs
to (the test projects a point with these SPECTUB formulas, independently of jaxspect's projector,
and finds it where :func:`read_stir_image` puts it). STIR warns that its patient (LPS)
information is not correct for SPECT images (``documentation/STIR-developers-overview.tex``), so
``first pixel offset (mm)`` is kept as written, not turned into patient coordinates; STIR's SPECT
projector centres the grid on the rotation axis, as jaxspect does.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from ._interfile import (_get, _int, _number, _parse_radii, parse_interfile_header, read_projection_header,
                         read_raw_values, volume_grid)
from ._mumap import check_mumap_units
from ._projections import ProjectionData
from ._safety import FileCheckError

STIR_PROJECTION_SUFFIX = ".hs"
STIR_IMAGE_SUFFIX = ".hv"


def _standardise(value: str) -> str:
    """STIR's ``standardise_keyword``: lower case, single spaces, ``_`` as a space."""
    return re.sub(r"\s+", " ", value.replace("_", " ")).strip().lower()


def _check_nucmed(header, path):
    modality = _standardise(header.get("imaging modality", ""))
    if modality != "nucmed":
        got = f"'!imaging modality := {header['imaging modality']}'" if "imaging modality" in header else "no '!imaging modality'"
        raise ValueError(f"STIR header {path} has {got}: jaxspect reads STIR's SPECT files, which say "
                         "'!imaging modality := nucmed' (PET data are not SPECT projections)")


def _one_time_frame(header, path):
    frames = _get(header, "number of time frames", path, _int, 1)
    if frames != 1:
        raise ValueError(f"STIR header {path}: 'number of time frames := {frames}'; one frame is supported "
                         "(split dynamic data into one file per frame)")


def read_stir_projections(path, *, data_file=None) -> ProjectionData:
    """Read SPECT projection data as STIR writes them (``.hs`` header + raw data).

    Arguments:
        path: the ``.hs`` header.
        data_file: the raw data file instead of the header's ``name of data file`` (which must lie
            in the header's folder; this argument may point anywhere).

    Returns:
        A :class:`ProjectionData`: counts ``(nx, nz, nview)``, angles in radians in jaxspect's
        convention (equal to STIR's angles, which are DICOM's; see the module docstring), radii
        in mm, pixel size in mm, the energy window and ``metadata["frame_duration_s"]`` where the
        header gives them.

    Errors (``ValueError`` naming the file and the key): not SPECT, no ``extent of rotation``,
    an orbit without its radius/radii, an unknown orbit, axis labels other than STIR's, several
    time frames, a data file smaller than the header says.
    """
    path = Path(path)
    header = parse_interfile_header(path)
    _check_nucmed(header, path)
    for index, label in (("1", "bin coordinate"), ("2", "axial coordinate")):
        key = f"matrix axis label [{index}]"
        if key in header and _standardise(header[key]) != label:
            raise ValueError(f"STIR header {path}: '{key} := {header[key]}', expected '{label}' (STIR's SPECT layout)")
    if "extent of rotation" not in header:
        raise ValueError(f"STIR header {path} lacks the key '!extent of rotation' (degrees), which STIR requires too")
    nview = _get(header, "number of projections", path, _int, required=True)
    orbit = _standardise(header.get("orbit", "circular"))
    if orbit == "circular":
        if "radius" not in header:
            raise ValueError(f"STIR header {path}: 'orbit := circular' needs 'Radius := R' (mm), which it lacks")
        header = {k: v for k, v in header.items() if k != "radii"}
    elif orbit == "non-circular":
        if "radii" not in header:
            raise ValueError(f"STIR header {path}: 'orbit := non-circular' needs 'Radii := {{r0, r1, ...}}' (mm, one per "
                             "view), which it lacks")
        _parse_radii(header["radii"], nview, path)
    else:
        raise ValueError(f"STIR header {path}: 'orbit := {header['orbit']}'; STIR knows 'circular' and 'non-circular'")
    _one_time_frame(header, path)
    data = read_projection_header(path, header, data_file=data_file, exact_size=False)
    metadata = {"originating_system": header["originating system"]} if "originating system" in header else {}
    duration = _get(header, "image duration (sec) [1]", path, _number)
    if duration is not None and duration > 0:
        metadata["frame_duration_s"] = duration / data.nview
    return dataclasses.replace(data, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class StirImage:
    """A STIR image on jaxspect's axes.

    Attributes:
        array: ``(nx, ny, nz)`` float32 values (times ``image scaling factor``), STIR's axes all
            reversed (see :mod:`jaxspect.io._stir`).
        voxel_size_mm: ``(dx, dy, dz)`` in mm.
        first_pixel_offset_mm: STIR's ``first pixel offset (mm) [1..3]`` as written (STIR's own
            x, y, z of its first voxel), or ``None``.
    """

    array: np.ndarray
    voxel_size_mm: tuple[float, float, float]
    first_pixel_offset_mm: tuple[float, float, float] | None = None


def read_stir_image(path, *, data_file=None) -> StirImage:
    """Read an image as STIR writes it (``.hv`` header + raw data) onto jaxspect's axes.

    ``data_file`` replaces the header's ``name of data file`` (which must lie in the header's
    folder). Returns a :class:`StirImage`; errors name the file and the key.
    """
    path = Path(path)
    header = parse_interfile_header(path)
    dims = _get(header, "number of dimensions", path, _int, 3)
    if dims != 3:
        raise ValueError(f"STIR image header {path}: 'number of dimensions := {dims}', expected 3")
    for index, label in ((1, "x"), (2, "y"), (3, "z")):
        key = f"matrix axis label [{index}]"
        if key in header and _standardise(header[key]) != label:
            raise ValueError(f"STIR image header {path}: '{key} := {header[key]}', expected '{label}'")
    shape, voxel = volume_grid(header, path, "STIR image")
    _one_time_frame(header, path)
    scale = _get(header, "image scaling factor [1]", path, _number, 1.0)
    if scale == 0:
        raise ValueError(f"STIR image header {path}: 'image scaling factor [1] := 0' would zero the image")
    raw = read_raw_values(path, header, int(np.prod(shape)), data_file=data_file,
                          what=f"matrix size {shape[0]} x {shape[1]} x {shape[2]} voxels",
                          offset_keys=("data offset in bytes [1]", "data offset in bytes"))
    values = raw.astype(np.float32) * np.float32(scale)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"the data of STIR image header {path} hold NaN or Inf")
    # stored z, y, x (x fastest) -> (x, y, z), then every axis reversed onto jaxspect's (i, j, k)
    array = np.ascontiguousarray(values.reshape(shape[::-1]).transpose(2, 1, 0)[::-1, ::-1, ::-1])
    offsets = [_get(header, f"first pixel offset (mm) [{n}]", path, _number) for n in (1, 2, 3)]
    return StirImage(array, voxel, None if None in offsets else tuple(offsets))


# median body mu (1/mm) below which a map read as 1/cm must really be in 1/mm (lung at 511 keV: ~0.0025)
_MIN_TISSUE_PER_MM = 0.002


def read_stir_mumap(path, units: str | None = None, *, image_shape=None, voxel_size_mm=None,
                    data_file=None) -> np.ndarray:
    """An attenuation map STIR reads (``.hv``), in 1/mm on jaxspect's axes ``(nx, ny, nz)``.

    ``units``: ``"per_cm"`` (STIR's unit, the default: ``documentation/STIR-UsersGuide.tex``,
    "attenuation map ... in cm^-1") or ``"per_mm"``. With the default, a map whose median over
    the body is below 0.002/mm once converted (it would be thinner than lung) is refused as
    probably in 1/mm already. ``image_shape`` / ``voxel_size_mm``: the grid the map must have.
    """
    path = Path(path)
    image = read_stir_image(path, data_file=data_file)
    if image_shape is not None and image.array.shape != tuple(image_shape):
        raise FileCheckError(f"attenuation map {path} has shape {image.array.shape}, but the projections need an image "
                             f"of shape (nx, nx, nz) = {tuple(image_shape)}")
    if voxel_size_mm is not None and not np.allclose(image.voxel_size_mm, voxel_size_mm, rtol=1e-3):
        raise FileCheckError(f"attenuation map {path} has voxels {image.voxel_size_mm} mm, but the projections' "
                             f"pixels give {tuple(voxel_size_mm)} mm")
    mumap = check_mumap_units(image.array, units or "per_cm", what=f"attenuation map {path}")
    if units is None:
        body = mumap[mumap > 0]
        if body.size and float(np.median(body)) < _MIN_TISSUE_PER_MM:
            raise FileCheckError(
                f"attenuation map {path}: read in STIR's 1/cm its median over the body is {float(np.median(body)):.3g} "
                "/mm, thinner than lung; it looks like a map in 1/mm: state the units (units='per_mm', on the "
                "command line --mumap-units per_mm)")
    return mumap
