"""SIMIND / Interfile 3.3 SPECT projections: a text header (``.h00``) and raw data (``.a00``).

Header keys used (case, spaces and a leading ``!`` are ignored; ``;`` starts a comment line):

========================================  ===============================================
``name of data file``                     raw data, in the header's folder (absolute names
                                          and names leading out of it are refused)
``matrix size [1]`` / ``[2]``             columns (bins along the detector, ``nx``) / rows
                                          (axial, ``nz``)
``scaling factor (mm/pixel) [1]`` / [2]   bin size ``dx`` / row height ``dz``, mm
``number of projections``                 ``nview``
``total number of images``                must equal ``number of projections`` (if given)
``extent of rotation``                    degrees covered, in (0, 360]; step = extent / nview
                                          (default 360)
``start angle``                           gantry angle of view 0, degrees (default 0)
``direction of rotation``                 ``CW`` (decreasing angle) or ``CCW`` (default CW)
``Radius``                                circular orbit radius, **mm**
``radii``                                 ``{r0, r1, ...}`` one radius per view, mm (STIR's
                                          non-circular orbit key)
``number format``                         ``float``, ``short float``, ``long float``,
                                          ``unsigned integer``, ``signed integer``
``number of bytes per pixel``             1, 2, 4 or 8
``imagedata byte order``                  ``LITTLEENDIAN`` or ``BIGENDIAN`` (Interfile's
                                          default, used when absent)
``data offset in bytes``                  bytes to skip (default 0); the data file must hold
                                          exactly offset + nx * nz * nview values
``energy window lower/upper level [1]``   window limits, keV (optional)
========================================  ===============================================

Angles follow the gantry convention of :mod:`jaxspect.io._projections` (DICOM's: 0 degrees =
detector anterior, counter-clockwise viewed from the feet = increasing angle); view ``l`` is at
``start -+ l * extent / nview`` degrees (``CW``: minus) and jaxspect's ``theta = radians``.
SIMIND's orbit file (``.cor``, given with ``cor=``) has one radius per line (the first number
on each line), in **cm** as SIMIND writes it unless ``cor_units="mm"``; it overrides
``Radius``. Each image is stored row by row with row 0 at the head end.

Hostile or clumsy headers are refused before anything is read: the data file's size is compared
with the header's arithmetic (``os.stat``), non-finite or out-of-range numbers are errors, keys
after ``!END OF INTERFILE`` are ignored (a UTF-8 byte-order mark is skipped), and data whose
values are implausible for the declared byte order (e.g. little-endian data read with the
big-endian default: denormal floats, or integers whose swapped values are far smaller) raise a
``ValueError`` naming ``imagedata byte order``; negative or non-finite counts are refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ._projections import ProjectionData, check_counts, frames_to_views, gantry_angles_deg, views_to_frames
from ._safety import FileCheckError, atomic_write_group, check_file_size, resolve_data_file

_FORMATS = {
    ("float", 4): "f4", ("float", 8): "f8", ("short float", 4): "f4", ("long float", 8): "f8",
    ("unsigned integer", 1): "u1", ("unsigned integer", 2): "u2", ("unsigned integer", 4): "u4",
    ("unsigned integer", 8): "u8", ("signed integer", 1): "i1", ("signed integer", 2): "i2",
    ("signed integer", 4): "i4", ("signed integer", 8): "i8",
}


def _normalise_key(key: str) -> str:
    key = key.strip().lstrip("!").strip().lower()
    key = re.sub(r"\s*\[\s*(\d+)\s*\]", r" [\1]", key)
    return re.sub(r"\s+", " ", key)


def parse_interfile_header(path) -> dict[str, str]:
    """The ``key := value`` pairs of an Interfile header, keys normalised (lower case, single
    spaces, no ``!``, ``"matrix size[1]"`` -> ``"matrix size [1]"``). Later keys win; keys after
    ``!END OF INTERFILE`` are ignored."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Interfile header not found: {path}")
    if path.stat().st_size > _MAX_HEADER_BYTES:
        raise FileCheckError(f"{path} is not an Interfile header ({path.stat().st_size} bytes; "
                             f"headers are text under {_MAX_HEADER_BYTES} bytes)")
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise FileNotFoundError(f"cannot read Interfile header {path}: {e}") from None
    header = {}
    for line in text.removeprefix("\xef\xbb\xbf").splitlines():  # a UTF-8 byte-order mark, read as latin-1
        line = line.strip()
        if not line or line.startswith(";") or ":=" not in line:
            continue
        key, value = line.split(":=", 1)
        key = _normalise_key(key)
        if key == "end of interfile":
            break
        header[key] = value.strip()
    if not header:
        raise ValueError(f"{path} is not an Interfile header (no 'key := value' lines)")
    return header


_MAX_HEADER_BYTES = 1 << 20


def _get(header, key, path, convert=str, default=None, required=False):
    if key not in header or header[key] == "":
        if required:
            raise ValueError(f"Interfile header {path} lacks the key '{key}'")
        return default
    try:
        return convert(header[key])
    except ValueError:
        expected = {_int: "an integer", _number: "a finite number"}.get(convert, convert.__name__)
        raise ValueError(f"Interfile header {path}: '{key} := {header[key]}' is not {expected}") from None


def volume_grid(header, path, dialect: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """``(shape, voxel size in mm)`` of a 3-D Interfile volume, from ``matrix size [1..3]`` and
    ``scaling factor (mm/pixel) [1..3]`` (both required and positive); ``dialect`` names the
    writer in the error messages."""
    shape = tuple(_get(header, f"matrix size [{n}]", path, _int, required=True) for n in (1, 2, 3))
    if min(shape) <= 0:
        raise ValueError(f"{dialect} header {path}: 'matrix size [1..3]' must be positive, got {shape}")
    voxel = tuple(_get(header, f"scaling factor (mm/pixel) [{n}]", path, _number, required=True) for n in (1, 2, 3))
    if min(voxel) <= 0:
        raise ValueError(f"{dialect} header {path}: 'scaling factor (mm/pixel) [1..3]' must be positive, got {voxel}")
    return shape, voxel


def _number(value: str) -> float:
    number = float(value)
    if not np.isfinite(number):
        raise ValueError(value)
    return number


def _int(value: str) -> int:
    number = _number(value)
    if number != int(number):
        raise ValueError(value)
    return int(number)


def read_cor(path, nview: int, *, units: str = "cm") -> np.ndarray:
    """Orbit radii from a SIMIND ``.cor`` file: the first number of each non-empty line, one
    line per view, in ``units`` (``"cm"``, SIMIND's, or ``"mm"``). Returns ``(nview,)`` mm."""
    if units not in ("cm", "mm"):
        raise ValueError(f"cor_units must be 'cm' or 'mm', got {units!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"orbit file (cor) not found: {path}")
    limit = 4096 + 256 * int(nview)  # a line per view: refuse a huge file before reading it
    if path.stat().st_size > limit:
        raise FileCheckError(f"orbit file {path} holds {path.stat().st_size} bytes, more than {limit} for {nview} "
                             "lines of radii: not a SIMIND .cor file?")
    radii = []
    for n, line in enumerate(path.read_text(encoding="latin-1").splitlines(), 1):
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            radii.append(float(fields[0]))
        except ValueError:
            raise ValueError(f"orbit file {path}, line {n}: expected a radius, got {line.strip()!r}") from None
    if len(radii) != nview:
        raise ValueError(f"orbit file {path} has {len(radii)} radii, expected one per view ({nview})")
    radii = np.asarray(radii, np.float64) * (10.0 if units == "cm" else 1.0)
    if not np.all(np.isfinite(radii)) or np.any(radii <= 0):
        raise ValueError(f"orbit file {path}: radii must be finite and positive, got minimum {radii.min():.6g} mm")
    return radii


def _parse_radii(value: str, nview: int, path) -> np.ndarray:
    numbers = [s for s in re.split(r"[{},\s]+", value) if s]
    try:
        radii = np.asarray([_number(s) for s in numbers], np.float64)
    except ValueError:
        raise ValueError(f"Interfile header {path}: 'radii := {value}' is not a list of numbers") from None
    if radii.size != nview:
        raise ValueError(f"Interfile header {path}: 'radii' has {radii.size} values, expected one per view ({nview})")
    return radii


def read_interfile(path, *, cor=None, cor_units: str = "cm", pixel_size_mm=None, data_file=None) -> ProjectionData:
    """Read SIMIND/Interfile SPECT projections (``.h00`` header + raw data).

    Arguments:
        path: the header file.
        cor: optional SIMIND orbit file (one radius per view); overrides ``Radius``/``radii``.
        cor_units: units of ``cor``: ``"cm"`` (SIMIND's default) or ``"mm"``.
        pixel_size_mm: ``(dx, dz)`` (or one number) to use when the header has no
            ``scaling factor (mm/pixel)``; the header wins otherwise.
        data_file: the raw data file, instead of the header's ``name of data file`` (which must
            lie in the header's folder; this argument may point anywhere).

    Returns:
        A :class:`ProjectionData`: counts ``(nx, nz, nview)``, angles in radians (jaxspect's
        convention, see the module docstring), radii in mm (or ``None``), pixel size in mm.
    """
    path = Path(path)
    return read_projection_header(path, parse_interfile_header(path), cor=cor, cor_units=cor_units,
                                  pixel_size_mm=pixel_size_mm, data_file=data_file)


def read_projection_header(path, header: dict, *, cor=None, cor_units: str = "cm", pixel_size_mm=None,
                           data_file=None, exact_size: bool = True) -> ProjectionData:
    """:func:`read_interfile` from an already parsed ``header`` (shared with the STIR reader;
    ``exact_size=False`` lets the data file hold more than this data set)."""
    nx = _get(header, "matrix size [1]", path, _int, required=True)
    nz = _get(header, "matrix size [2]", path, _int, required=True)
    nview = _get(header, "number of projections", path, _int, required=True)
    for name, value in (("matrix size [1]", nx), ("matrix size [2]", nz), ("number of projections", nview)):
        if value <= 0:
            raise ValueError(f"Interfile header {path}: '{name}' must be positive, got {value}")
    total = _get(header, "total number of images", path, _int)
    if total is not None and total != nview:
        raise ValueError(
            f"Interfile header {path}: 'total number of images' ({total}) differs from 'number of projections' "
            f"({nview}); one energy window per file is supported"
        )

    dx = _get(header, "scaling factor (mm/pixel) [1]", path, _number)
    dz = _get(header, "scaling factor (mm/pixel) [2]", path, _number)
    if dx is None or dz is None:
        if pixel_size_mm is None:
            missing = "scaling factor (mm/pixel) [1]" if dx is None else "scaling factor (mm/pixel) [2]"
            raise ValueError(f"Interfile header {path} lacks the key '{missing}'; pass pixel_size_mm=(dx, dz)")
        override = np.broadcast_to(np.asarray(pixel_size_mm, np.float64).reshape(-1), (2,))
        dx = float(override[0]) if dx is None else dx
        dz = float(override[1]) if dz is None else dz
    if not (dx > 0 and dz > 0):
        raise ValueError(f"Interfile header {path}: 'scaling factor (mm/pixel)' must be positive, got {dx:g} x {dz:g} mm")

    extent = _get(header, "extent of rotation", path, _number, 360.0)
    if not 0 < extent <= 360:
        raise ValueError(f"Interfile header {path}: 'extent of rotation' must be in (0, 360] degrees, got {extent:g} "
                         "(0 would put every view at one angle)")
    start = _get(header, "start angle", path, _number, 0.0)
    direction = _get(header, "direction of rotation", path, str, "CW")
    angles = np.deg2rad(gantry_angles_deg(start, extent / nview, nview, direction,
                                          what=f"'direction of rotation' in {path}"))

    radii = None
    if cor is not None:
        radii = read_cor(cor, nview, units=cor_units)
    elif "radii" in header:
        radii = _parse_radii(header["radii"], nview, path)
    elif "radius" in header:
        radii = np.full(nview, _get(header, "radius", path, _number))
    if radii is not None and cor is None and np.any(radii <= 0):
        raise ValueError(f"Interfile header {path}: orbit radii must be positive (mm), got {radii.min():g}")

    raw = read_raw_values(path, header, nx * nz * nview, data_file=data_file, exact_size=exact_size,
                          what=f"matrix size {nx} x {nz} x {nview} projections")
    counts = check_counts(frames_to_views(raw.reshape(nview, nz, nx).astype(np.float32)),
                          f"the data of Interfile header {path} (as float32)")

    ranges = {}
    lo = _get(header, "energy window lower level [1]", path, _number)
    hi = _get(header, "energy window upper level [1]", path, _number)
    name = "window_1"
    if lo is not None and hi is not None:
        ranges[name] = (lo, hi)
    return ProjectionData(counts, angles, radii, (dx, dz), windows={name: counts}, window_ranges_kev=ranges,
                          photopeak=name)


def read_raw_values(path, header: dict, count: int, *, data_file=None, what: str, exact_size: bool = True,
                    offset_keys=("data offset in bytes",)) -> np.ndarray:
    """The ``count`` raw values an Interfile header ``path`` (parsed: ``header``) describes,
    as stored (dtype from ``number format``, ``number of bytes per pixel`` and ``imagedata byte
    order``), checked before reading: the data file (``data_file``, else ``name of data file``,
    confined to the header's folder) must hold exactly offset + ``count`` values, or at least
    that many with ``exact_size=False`` (a file that holds several data sets, as STIR's
    converter writes one per energy window); the byte order must be plausible. ``what``
    describes the data in errors; the offset is the first of ``offset_keys`` present."""
    number_format = _get(header, "number format", path, str, "unsigned integer").lower()
    nbytes = _get(header, "number of bytes per pixel", path, _int,
                  required=number_format not in ("float", "short float", "long float"))
    if nbytes is None:
        nbytes = 8 if number_format == "long float" else 4
    if (number_format, nbytes) not in _FORMATS:
        raise ValueError(
            f"Interfile header {path}: unsupported 'number format := {number_format}' with "
            f"'number of bytes per pixel := {nbytes}'"
        )
    order = _get(header, "imagedata byte order", path, str, "BIGENDIAN").upper().replace(" ", "")
    if order not in ("LITTLEENDIAN", "BIGENDIAN"):
        raise ValueError(f"Interfile header {path}: 'imagedata byte order' must be LITTLEENDIAN or BIGENDIAN, got {order}")
    dtype = np.dtype(("<" if order == "LITTLEENDIAN" else ">") + _FORMATS[(number_format, nbytes)])
    offset_key = next((k for k in offset_keys if k in header), offset_keys[0])
    offset = _get(header, offset_key, path, _int, 0)
    if offset < 0:
        raise ValueError(f"Interfile header {path}: '{offset_key}' must be >= 0, got {offset}")

    if data_file is not None:
        data_path = Path(data_file)
    else:
        data_name = _get(header, "name of data file", path, str, required=True)
        if re.match(r"^[A-Za-z]:[\\/]", data_name) or "\\" in data_name:
            # a path on the (Windows) machine that wrote it, as SIMIND writes: the file of that name beside the header
            data_name = re.split(r"[\\/]", data_name)[-1]
        data_path = resolve_data_file(path, data_name, key="name of data file")
    if not data_path.is_file():
        raise FileNotFoundError(f"data file {data_path} named in Interfile header {path} not found")
    needed = offset + count * dtype.itemsize
    claim = f"the header {path} says {offset} bytes of offset + {what} of {dtype.name}"
    if exact_size:
        check_file_size(data_path, needed, what=claim)
    elif os.stat(data_path).st_size < needed:
        raise FileCheckError(f"data file {data_path} holds {os.stat(data_path).st_size} bytes, fewer than {claim} "
                             f"= {needed} bytes")
    raw = np.fromfile(data_path, dtype=dtype, count=count, offset=offset)
    _check_byte_order(raw, dtype, path, "imagedata byte order" in header)
    return raw


def _implausible_floats(values: np.ndarray) -> bool:
    magnitude = np.abs(values[values != 0]).astype(np.float64)
    return magnitude.size > 0 and (magnitude.min() < 1e-30 or magnitude.max() > 1e30)


def _check_byte_order(raw: np.ndarray, dtype: np.dtype, path, declared: bool) -> None:
    """Refuse data whose values say the byte order is wrong, or that are not finite."""
    where = f"Interfile header {path}: 'imagedata byte order' " + ("says" if declared else "is absent, so")
    order = "BIGENDIAN" if dtype.byteorder == ">" else "LITTLEENDIAN"
    other = "LITTLEENDIAN" if order == "BIGENDIAN" else "BIGENDIAN"
    swapped = raw.view(dtype.newbyteorder())  # the same bytes in the other order
    if dtype.kind == "f":
        if not np.all(np.isfinite(raw)):
            if np.all(np.isfinite(swapped)) and not _implausible_floats(swapped):
                raise ValueError(f"{where} {order}, but the data hold NaN/Inf read that way and none as {other}: "
                                 f"set 'imagedata byte order := {other}'")
            return  # not a byte-order problem: check_counts reports it
        if _implausible_floats(raw) and not _implausible_floats(swapped):
            raise ValueError(f"{where} {order}, but the values read that way are denormal or huge "
                             f"(|x| from {np.abs(raw[raw != 0]).min():.3g} to {np.abs(raw).max():.3g}) and plausible "
                             f"as {other}: set 'imagedata byte order := {other}'")
    elif dtype.itemsize > 1:
        declared_max = int(np.abs(raw.astype(np.int64)).max(initial=0))
        swapped_max = int(np.abs(swapped.astype(np.int64)).max(initial=0))
        if 16 * swapped_max < declared_max:
            raise ValueError(f"{where} {order}, but the values read that way reach {declared_max} and only "
                             f"{swapped_max} as {other} (counts fill the low-order bytes): "
                             f"set 'imagedata byte order := {other}'")


def _uniform_angles(angles_deg: np.ndarray) -> tuple[float, float, str]:
    """``(start, |step|, direction)`` of equally spaced gantry angles, or ValueError."""
    n = angles_deg.size
    if n == 1:
        return float(angles_deg[0]) % 360.0, 360.0, "CCW"
    steps = np.diff(angles_deg)
    step = float(np.mean(steps))
    if step == 0 or not np.allclose(steps, step, rtol=0, atol=1e-6):
        raise ValueError("Interfile needs equally spaced angles (start angle + constant step); got uneven angles")
    return float(angles_deg[0]) % 360.0, abs(step), ("CCW" if step > 0 else "CW")


def _fmt(x: float) -> str:
    return repr(float(x))


HEADER_SUFFIXES = (".h00", ".hdr", ".h33")


def interfile_data_path(path) -> Path:
    """The data file (``.a00``) :func:`write_interfile` writes beside the header ``path``;
    ``ValueError`` unless ``path`` ends in a header suffix (``.h00``, ``.hdr``, ``.h33``) and
    its name can be written in a latin-1 Interfile header. Check outputs with it before
    computing them."""
    path = Path(path)
    if path.suffix.lower() not in HEADER_SUFFIXES:
        raise FileCheckError(f"Interfile header path must end in {', '.join(HEADER_SUFFIXES)}, got {path}")
    data_path = path.with_suffix(".a00")
    try:
        data_path.name.encode("latin-1")
    except UnicodeEncodeError:
        raise FileCheckError(f"Interfile headers are latin-1 text: the data file name {data_path.name!r} cannot be "
                             "written in one; choose a name with latin-1 characters") from None
    return data_path


def write_interfile(path, data: ProjectionData, *, cor: bool = False, extra_keys: dict | None = None) -> Path:
    """Write ``data`` as SIMIND/Interfile: a header ``path`` (``.h00``) and float32
    little-endian raw data beside it (same stem, ``.a00``).

    The files are written under temporary names in the same folder and renamed into place,
    data first and header last, so an interrupted write never leaves a truncated file or a
    header without its data. Angles must be equally spaced. Radii go into the header (``Radius := r`` for a circular
    orbit, ``radii := {...}`` otherwise, mm); with ``cor=True`` a SIMIND ``.cor`` file (cm, one
    per line) is written as well. The photopeak window's limits are written if known;
    ``extra_keys`` (``{key: value}``) are written as further ``key := value`` lines.

    Returns the path of the data file.
    """
    if not isinstance(data, ProjectionData):
        raise TypeError(f"data must be a jaxspect.io.ProjectionData, got {type(data).__name__}")
    path = Path(path)
    data_path = interfile_data_path(path)
    nx, nz, nview = data.counts.shape
    start, step, direction = _uniform_angles(np.rad2deg(data.angles))
    dx, dz = data.pixel_size_mm
    lines = [
        "!INTERFILE :=",
        "!imaging modality := nucmed",
        "!version of keys := 3.3",
        "program := jaxspect",
        f"!name of data file := {data_path.name}",
        "data offset in bytes := 0",
        "!GENERAL IMAGE DATA :=",
        "!type of data := Tomographic",
        "imagedata byte order := LITTLEENDIAN",
        "!number format := float",
        "!number of bytes per pixel := 4",
        f"!total number of images := {nview}",
        "!SPECT STUDY (General) :=",
        f"!matrix size [1] := {nx}",
        f"!matrix size [2] := {nz}",
        f"scaling factor (mm/pixel) [1] := {_fmt(dx)}",
        f"scaling factor (mm/pixel) [2] := {_fmt(dz)}",
        f"!number of projections := {nview}",
        f"!extent of rotation := {_fmt(step * nview)}",
        "!process status := acquired",
        "!SPECT STUDY (acquired data) :=",
        f"!direction of rotation := {direction}",
        f"start angle := {_fmt(start)}",
    ]
    if data.photopeak in data.window_ranges_kev:
        lo, hi = data.window_ranges_kev[data.photopeak]
        lines += ["number of energy windows := 1", f"energy window lower level [1] := {_fmt(lo)}",
                  f"energy window upper level [1] := {_fmt(hi)}"]
    if data.radii is not None:
        if np.all(data.radii == data.radii[0]):
            lines += ["orbit := circular", f"Radius := {_fmt(data.radii[0])}"]
        else:
            lines += ["orbit := non-circular", "radii := {" + ", ".join(_fmt(r) for r in data.radii) + "}"]
    for key, value in (extra_keys or {}).items():
        lines.append(f"{key} := {value}")
    lines.append("!END OF INTERFILE :=")
    text = ("\n".join(lines) + "\n").encode("latin-1")
    if cor and data.radii is None:
        raise ValueError("cor=True needs data.radii")
    # data first, header last, each renamed into place once complete
    files = [data_path, path] + ([path.with_suffix(".cor")] if cor else [])
    with atomic_write_group(files) as tmp:
        views_to_frames(data.counts).astype("<f4").tofile(tmp[0])
        tmp[1].write_bytes(text)
        if cor:
            tmp[2].write_text("".join(f"{r / 10:.10g}\n" for r in data.radii))
    return data_path
