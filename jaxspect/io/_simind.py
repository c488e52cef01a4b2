"""SIMIND output as SIMIND writes it: one Interfile header per energy window, facts in comments.

SIMIND (M. Ljungberg, Lund University) writes, for a run ``NAME`` with scoring routine
``scattwin``, one header/data pair per energy window and photon kind: ``NAME_tot_w1.h00`` /
``.a00`` (total), ``NAME_sca_w1`` (scatter), ``NAME_air_w1`` (primary in air), ...,
``_w2``, ``_w3`` for further windows. Keys as SIMIND V7.0.3 writes them (from a header it
wrote, not from jaxspect's writer):

- ``!name of data file := C:\\...\\NAME_tot_w1.a00``: the path on the simulating machine, often
  Windows; when it does not exist here the file name is looked up beside the header.
- ``;energy window lower level := 147.07`` / ``;energy window upper level := 170.93``: the
  window limits (keV) as *comment* lines without an index.
- ``;#Radius := 25.000``: orbit radius in **cm**, a comment (``orbit := circular``); a
  non-circular orbit is a ``.cor`` file (one radius per view, cm) named in a ``;#`` comment
  (any comment whose value ends in ``.cor``) or given with ``cor=``.
- ``;# Collimator := sy-lehr``, ``;# Collimator hole diameter := 0.111``, ``;# Collimator
  hole septa := 0.016``, ``;# Collimator thickness := 2.405`` (cm), ``;# Intrinsic FWHM for the
  camera := 0.380`` (cm, at 140 keV), ``;# SIMIND: Photon Energy := 159.000`` (keV): kept in
  :attr:`ProjectionData.metadata` (lengths converted to mm) for the collimator response.
- ``!time per projection (sec)``, ``start angle``, ``!direction of rotation``, ``!extent of
  rotation``, matrix and ``scaling factor (mm/pixel)`` keys: standard Interfile, read by
  :func:`jaxspect.io.read_interfile` (angles in DICOM's gantry convention, see
  :mod:`jaxspect.io._projections`).

:func:`read_simind` reads every window of the run next to the given header, picks the photopeak
(the window holding the photon energy, or ``window=``) and estimates TEW/DEW scatter from the
others.
"""

from __future__ import annotations

import re
from pathlib import Path

from ._interfile import _normalise_key, parse_interfile_header, read_interfile
from ._projections import ProjectionData
from ._scatter import dew_scatter, pick_windows, tew_scatter

_RUN_FILE = re.compile(r"^(?P<stem>.*)_(?P<kind>[a-z]+)_w(?P<window>\d+)$", re.IGNORECASE)


def parse_simind_comments(path) -> dict[str, str]:
    """``key := value`` pairs of a header's comment lines (``;`` and ``;#``), keys normalised."""
    comments = {}
    for line in Path(path).read_text(encoding="latin-1").splitlines():
        line = line.strip()
        if not line.startswith(";") or ":=" not in line:
            continue
        key, value = line.lstrip(";").lstrip("#").split(":=", 1)
        comments[_normalise_key(key)] = value.strip()
    return comments


def is_simind_header(path) -> bool:
    """Whether an Interfile header was written by SIMIND (``originating system := simind``)."""
    try:
        header = parse_interfile_header(path)
    except (ValueError, FileNotFoundError):
        return False
    return header.get("originating system", "").strip().lower() == "simind"


def _number(comments, key, path):
    if key not in comments:
        return None
    try:
        return float(comments[key])
    except ValueError:
        raise ValueError(f"SIMIND header {path}: ';{key} := {comments[key]}' is not a number") from None


def _window_files(path: Path) -> dict[str, Path]:
    """``{"w1": header, ...}`` of the run ``path`` belongs to (same stem and kind)."""
    match = _RUN_FILE.match(path.stem)
    if match is None:
        return {"w1": path}
    pattern = re.compile(rf"^{re.escape(match['stem'])}_{re.escape(match['kind'])}_w(\d+)$", re.IGNORECASE)
    files = {}
    for candidate in path.parent.iterdir():
        m = pattern.match(candidate.stem)
        if m and candidate.suffix.lower() == path.suffix.lower():
            files[int(m.group(1))] = candidate
    return {f"w{n}": files[n] for n in sorted(files)}


def read_simind(path, *, window=None, scatter: str = "none", dew_k: float = 0.5, cor=None, cor_units: str = "cm",
                radius_mm=None) -> ProjectionData:
    """Read SIMIND projections with all the energy windows of their run.

    Arguments:
        path: one window's header, e.g. ``NAME_tot_w1.h00``.
        window: the photopeak, ``"w2"`` or a 1-based window number; default: the window whose
            limits hold the photon energy (``;# SIMIND: Photon Energy``), else as
            :func:`jaxspect.io.pick_windows`.
        scatter: ``"none"``, ``"tew"`` or ``"dew"`` from the other windows (see
            :func:`jaxspect.io.read_dicom_projections`).
        cor, cor_units: orbit file overriding the header's (cm unless ``cor_units="mm"``).
        radius_mm: circular orbit radius (mm) overriding ``;#Radius``.

    Returns a :class:`ProjectionData` with ``windows``, ``window_ranges_kev``, the photopeak's
    counts, ``background`` for TEW/DEW, and ``metadata`` (``collimator``,
    ``photon_energy_kev``, ``intrinsic_fwhm_mm``, ``collimator_hole_diameter_mm``,
    ``collimator_septa_mm``, ``collimator_length_mm``, ``frame_duration_s``).
    """
    path = Path(path)
    if scatter not in ("none", "tew", "dew"):
        raise ValueError(f"scatter must be 'none', 'tew' or 'dew', got {scatter!r}")
    comments = parse_simind_comments(path)
    if cor is None:
        named = [v for v in comments.values() if v.lower().endswith(".cor")]
        if named:
            cor = path.parent / re.split(r"[\\/]", named[0])[-1]
            if not cor.is_file():
                raise FileNotFoundError(f"orbit file {cor} named in SIMIND header {path} not found; pass cor=")
    files = _window_files(path)
    counts, ranges, first = {}, {}, None
    for name, file in files.items():
        data = read_interfile(file, cor=cor, cor_units=cor_units)
        first = first or data
        if data.counts.shape != first.counts.shape:
            raise ValueError(f"SIMIND window {file} has shape {data.counts.shape}, {files['w1']} {first.counts.shape}")
        counts[name] = data.counts
        c = parse_simind_comments(file)
        lo, hi = _number(c, "energy window lower level", file), _number(c, "energy window upper level", file)
        if lo is not None and hi is not None:
            ranges[name] = (lo, hi)
    radii = first.radii
    if radius_mm is not None:
        radii = radius_mm
    elif cor is None and radii is None:
        radius_cm = _number(comments, "radius", path)
        if radius_cm is not None:
            radii = 10.0 * radius_cm
    energy = _number(comments, "simind: photon energy", path)
    if window is None and energy is not None and ranges:
        holding = [n for n, (lo, hi) in ranges.items() if lo <= energy <= hi]
        window = holding[0] if len(holding) == 1 else None
    if isinstance(window, str) and window.isdigit():
        window = int(window)
    if len(ranges) == len(counts):
        peak, lower, upper = pick_windows(ranges, window)
    elif len(counts) == 1:
        peak, lower, upper = next(iter(counts)), None, None
    else:
        missing = [files[n].name for n in counts if n not in ranges]
        raise ValueError(f"SIMIND headers {missing} lack ';energy window lower/upper level' comments")
    background = None
    if scatter == "tew":
        if lower is None or upper is None:
            raise ValueError(f"scatter='tew' needs SIMIND windows just below and above the photopeak {peak!r}; "
                             f"the run of {path} has {sorted(ranges.items())}")
        width = {n: hi - lo for n, (lo, hi) in ranges.items()}
        background = tew_scatter(counts[lower], counts[upper], lower_width_kev=width[lower],
                                 upper_width_kev=width[upper], peak_width_kev=width[peak])
    elif scatter == "dew":
        if lower is None:
            raise ValueError(f"scatter='dew' needs a SIMIND window below the photopeak {peak!r} next to {path}")
        background = dew_scatter(counts[lower], k=dew_k)
    metadata = {}
    if "collimator" in comments:
        metadata["collimator"] = comments["collimator"].strip().lower()
    for key, meta, scale in (("collimator hole diameter", "collimator_hole_diameter_mm", 10.0),
                             ("collimator hole septa", "collimator_septa_mm", 10.0),
                             ("collimator thickness", "collimator_length_mm", 10.0),
                             ("intrinsic fwhm for the camera", "intrinsic_fwhm_mm", 10.0),
                             ("simind: photon energy", "photon_energy_kev", 1.0)):
        value = _number(comments, key, path)
        if value is not None:
            metadata[meta] = value * scale
    header = parse_interfile_header(files[peak])
    if "time per projection (sec)" in header:
        metadata["frame_duration_s"] = float(header["time per projection (sec)"])
    return ProjectionData(counts[peak], first.angles, radii, first.pixel_size_mm, background=background,
                          windows=counts, window_ranges_kev=ranges, photopeak=peak, metadata=metadata)


def simind_collimator(metadata: dict):
    """The :class:`jaxspect.Collimator` a SIMIND header names (the table's, or one built from
    the header's hole diameter/septa/length), or ``None``."""
    from .._collimators import COLLIMATORS, Collimator

    name = metadata.get("collimator")
    if name is None:
        return None
    if name in COLLIMATORS:
        return COLLIMATORS[name]
    keys = ("collimator_hole_diameter_mm", "collimator_septa_mm", "collimator_length_mm")
    if all(k in metadata for k in keys):
        return Collimator(name, f"{name} (from the SIMIND header)", *(float(metadata[k]) for k in keys))
    return None
