"""SIMIND / Interfile 3.3 SPECT projections: a text header (``.h00``) and raw data (``.a00``).

Header keys used (case, spaces and a leading ``!`` are ignored; ``;`` starts a comment line):

========================================  ===============================================
``name of data file``                     raw data, relative to the header's folder
``matrix size [1]`` / ``[2]``             columns (bins along the detector, ``nx``) / rows
                                          (axial, ``nz``)
``scaling factor (mm/pixel) [1]`` / [2]   bin size ``dx`` / row height ``dz``, mm
``number of projections``                 ``nview``
``total number of images``                must equal ``number of projections`` (if given)
``extent of rotation``                    degrees covered; step = extent / nview (default 360)
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
``data offset in bytes``                  bytes to skip (default 0)
``energy window lower/upper level [1]``   window limits, keV (optional)
========================================  ===============================================

Angles follow the gantry convention of :mod:`jaxspect.io._projections` (DICOM's: 0 degrees =
detector anterior, counter-clockwise viewed from the feet = increasing angle); view ``l`` is at
``start -+ l * extent / nview`` degrees (``CW``: minus) and jaxspect's ``theta = radians``.
SIMIND's orbit file (``.cor``, given with ``cor=``) has one radius per line (the first number
on each line), in **cm** as SIMIND writes it unless ``cor_units="mm"``; it overrides
``Radius``. Each image is stored row by row with row 0 at the head end.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ._projections import ProjectionData, frames_to_views, gantry_angles_deg, views_to_frames

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
    spaces, no ``!``, ``"matrix size[1]"`` -> ``"matrix size [1]"``). Later keys win."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Interfile header not found: {path}")
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise FileNotFoundError(f"cannot read Interfile header {path}: {e}") from None
    header = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";") or ":=" not in line:
            continue
        key, value = line.split(":=", 1)
        header[_normalise_key(key)] = value.strip()
    if not header:
        raise ValueError(f"{path} is not an Interfile header (no 'key := value' lines)")
    return header


def _get(header, key, path, convert=str, default=None, required=False):
    if key not in header or header[key] == "":
        if required:
            raise ValueError(f"Interfile header {path} lacks the key '{key}'")
        return default
    try:
        return convert(header[key])
    except ValueError:
        raise ValueError(f"Interfile header {path}: '{key} := {header[key]}' is not a valid {convert.__name__}") from None


def _int(value: str) -> int:
    number = float(value)
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
        raise ValueError(f"orbit file {path}: radii must be positive, got minimum {radii.min()} {units}")
    return radii


def _parse_radii(value: str, nview: int, path) -> np.ndarray:
    numbers = [s for s in re.split(r"[{},\s]+", value) if s]
    try:
        radii = np.asarray([float(s) for s in numbers], np.float64)
    except ValueError:
        raise ValueError(f"Interfile header {path}: 'radii := {value}' is not a list of numbers") from None
    if radii.size != nview:
        raise ValueError(f"Interfile header {path}: 'radii' has {radii.size} values, expected one per view ({nview})")
    return radii


def read_interfile(path, *, cor=None, cor_units: str = "cm", pixel_size_mm=None) -> ProjectionData:
    """Read SIMIND/Interfile SPECT projections (``.h00`` header + raw data).

    Arguments:
        path: the header file.
        cor: optional SIMIND orbit file (one radius per view); overrides ``Radius``/``radii``.
        cor_units: units of ``cor``: ``"cm"`` (SIMIND's default) or ``"mm"``.
        pixel_size_mm: ``(dx, dz)`` (or one number) to use when the header has no
            ``scaling factor (mm/pixel)``; the header wins otherwise.

    Returns:
        A :class:`ProjectionData`: counts ``(nx, nz, nview)``, angles in radians (jaxspect's
        convention, see the module docstring), radii in mm (or ``None``), pixel size in mm.
    """
    path = Path(path)
    header = parse_interfile_header(path)
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

    dx = _get(header, "scaling factor (mm/pixel) [1]", path, float)
    dz = _get(header, "scaling factor (mm/pixel) [2]", path, float)
    if dx is None or dz is None:
        if pixel_size_mm is None:
            missing = "scaling factor (mm/pixel) [1]" if dx is None else "scaling factor (mm/pixel) [2]"
            raise ValueError(f"Interfile header {path} lacks the key '{missing}'; pass pixel_size_mm=(dx, dz)")
        override = np.broadcast_to(np.asarray(pixel_size_mm, np.float64).reshape(-1), (2,))
        dx = float(override[0]) if dx is None else dx
        dz = float(override[1]) if dz is None else dz

    extent = _get(header, "extent of rotation", path, float, 360.0)
    start = _get(header, "start angle", path, float, 0.0)
    direction = _get(header, "direction of rotation", path, str, "CW")
    angles = np.deg2rad(gantry_angles_deg(start, extent / nview, nview, direction,
                                          what=f"'direction of rotation' in {path}"))

    radii = None
    if cor is not None:
        radii = read_cor(cor, nview, units=cor_units)
    elif "radii" in header:
        radii = _parse_radii(header["radii"], nview, path)
    elif "radius" in header:
        radii = np.full(nview, _get(header, "radius", path, float))

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
    offset = _get(header, "data offset in bytes", path, _int, 0)

    data_name = _get(header, "name of data file", path, str, required=True)
    data_path = Path(data_name) if os.path.isabs(data_name) else path.parent / data_name
    if not data_path.is_file():  # a path on the machine that wrote it (SIMIND: C:\...\x.a00): look beside the header
        beside = path.parent / re.split(r"[\\/]", data_name)[-1]
        data_path = beside if beside.is_file() else data_path
    if not data_path.is_file():
        raise FileNotFoundError(f"data file {data_path} named in Interfile header {path} not found")
    expected = nx * nz * nview
    raw = np.fromfile(data_path, dtype=dtype, offset=offset)
    if raw.size != expected:
        raise ValueError(
            f"data file {data_path} holds {raw.size} values of {dtype.name} after {offset} bytes, but the header "
            f"{path} says matrix size {nx} x {nz} x {nview} projections = {expected}"
        )
    counts = frames_to_views(raw.reshape(nview, nz, nx).astype(np.float32))

    ranges = {}
    lo = _get(header, "energy window lower level [1]", path, float)
    hi = _get(header, "energy window upper level [1]", path, float)
    name = "window_1"
    if lo is not None and hi is not None:
        ranges[name] = (lo, hi)
    return ProjectionData(counts, angles, radii, (dx, dz), windows={name: counts}, window_ranges_kev=ranges,
                          photopeak=name)


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


def write_interfile(path, data: ProjectionData, *, cor: bool = False, extra_keys: dict | None = None) -> Path:
    """Write ``data`` as SIMIND/Interfile: a header ``path`` (``.h00``) and float32
    little-endian raw data beside it (same stem, ``.a00``).

    Angles must be equally spaced. Radii go into the header (``Radius := r`` for a circular
    orbit, ``radii := {...}`` otherwise, mm); with ``cor=True`` a SIMIND ``.cor`` file (cm, one
    per line) is written as well. The photopeak window's limits are written if known;
    ``extra_keys`` (``{key: value}``) are written as further ``key := value`` lines.

    Returns the path of the data file.
    """
    if not isinstance(data, ProjectionData):
        raise TypeError(f"data must be a jaxspect.io.ProjectionData, got {type(data).__name__}")
    path = Path(path)
    if path.suffix.lower() in (".a00", ".img"):
        raise ValueError(f"path must be the header file (e.g. .h00), got {path}")
    data_path = path.with_suffix(".a00")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    views_to_frames(data.counts).astype("<f4").tofile(data_path)
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    if cor:
        if data.radii is None:
            raise ValueError("cor=True needs data.radii")
        path.with_suffix(".cor").write_text("".join(f"{r / 10:.10g}\n" for r in data.radii))
    return data_path
