"""DICOM NM (nuclear medicine) TOMO projection series: one multi-frame file.

Fields read (PS3.3 C.8.4.8-C.8.4.12):

- frames ``(Number of Frames, Rows, Columns)`` from Pixel Data, times Rescale Slope (0028,1053)
  plus Rescale Intercept (0028,1052) when present;
- Energy Window Information Sequence (0054,0012): per window its name (Energy Window Name
  (0054,0018), else ``window_<n>``) and limits (Energy Window Range Sequence (0054,0013): Energy
  Window Lower/Upper Limit (0054,0014/0015), keV; several ranges: their total width);
- Energy Window Vector (0054,0010), Detector Vector (0054,0020), Rotation Vector (0054,0050),
  Angular View Vector (0054,0090): per frame, 1-based; a vector may be absent when there is
  only one window/detector/rotation (Angular View Vector: frames are then in view order);
- Rotation Information Sequence (0054,0052), its single item: Start Angle (0054,0200), Angular
  Step (0018,1144), Rotation Direction (0018,1140), Number of Frames in Rotation (0054,0053),
  Radial Position (0018,1142);
- Detector Information Sequence (0054,0022), one item per head: Start Angle and Radial Position
  (per view or one value), which win over the rotation's for that head;
- Pixel Spacing (0028,0030): ``(row spacing, column spacing)`` = ``(dz, dx)`` in mm.

Every head's views get gantry angles ``start_head -+ l * step`` (``CW``: minus; DICOM's angle
convention, see :mod:`jaxspect.io._projections`: jaxspect's ``theta`` is the angle in radians)
and the heads' views are merged into one set sorted by angle in ``[0, 2 pi)``. A field a vendor
omits raises a ``ValueError`` naming it unless its override keyword is given; an override, when
given, always wins over the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._affine import nm_grid_centre
from ._dicom_meta import dicom_metadata
from ._safety import FileCheckError
from ._projections import ProjectionData, check_counts, frames_to_views, gantry_angles_deg
from ._scatter import dew_scatter, pick_windows, tew_scatter


def _import_pydicom():
    try:
        import pydicom
    except ImportError:
        raise ImportError('reading DICOM needs pydicom: pip install "jaxspect[io]"') from None
    return pydicom


class _Fields:
    """Attribute access that names the missing DICOM field (and the override) in its error."""

    def __init__(self, ds, path):
        self.ds, self.path = ds, path

    def get(self, item, keyword, tag, *, where="", override=None):
        value = getattr(item, keyword, None)
        if value is None or (hasattr(value, "__len__") and not isinstance(value, str) and len(value) == 0) or value == "":
            hint = f" or pass {override}=" if override else ""
            raise ValueError(f"DICOM file {self.path} lacks {keyword} {tag}{where}; the file must give it{hint}")
        return value


def _vector(ds, keyword, tag, nframes, count, path):
    """A per-frame 1-based vector as 0-based ints, or zeros when absent and ``count == 1``."""
    value = getattr(ds, keyword, None)
    if value is None:
        if count > 1:
            raise ValueError(f"DICOM file {path} has {count} items for {keyword} {tag} to index but lacks it")
        return np.zeros(nframes, np.int64)
    vec = np.atleast_1d(np.asarray(value, np.int64)) - 1
    if vec.shape != (nframes,):
        raise ValueError(f"DICOM file {path}: {keyword} {tag} has {vec.size} values for {nframes} frames")
    if vec.min() < 0 or vec.max() >= count:
        raise ValueError(f"DICOM file {path}: {keyword} {tag} values must lie in 1..{count}")
    return vec


def _per_view(value, nview, what, path):
    arr = np.atleast_1d(np.asarray(value, np.float64))
    if arr.size == 1:
        return np.full(nview, float(arr[0]))
    if arr.size != nview:
        raise ValueError(f"DICOM file {path}: {what} has {arr.size} values, expected 1 or one per view ({nview})")
    return arr


def _windows(ds, path):
    """``[(name, (lower, upper, width))]`` per Energy Window Information Sequence item."""
    sequence = getattr(ds, "EnergyWindowInformationSequence", None)
    if not sequence:
        n = int(getattr(ds, "NumberOfEnergyWindows", 1) or 1)
        return [(f"window_{w + 1}", None) for w in range(n)]
    windows, seen = [], set()
    for w, item in enumerate(sequence):
        name = str(getattr(item, "EnergyWindowName", "") or "").strip() or f"window_{w + 1}"
        if name in seen:
            name = f"{name}_{w + 1}"
        seen.add(name)
        limits = None
        ranges = getattr(item, "EnergyWindowRangeSequence", None)
        if ranges:
            lows, highs = [], []
            for r in ranges:
                lo, hi = getattr(r, "EnergyWindowLowerLimit", None), getattr(r, "EnergyWindowUpperLimit", None)
                if lo is None or hi is None:
                    continue
                lows.append(float(lo))
                highs.append(float(hi))
            if lows:
                width = float(sum(h - l for l, h in zip(lows, highs)))
                limits = (min(lows), max(highs), width)
        windows.append((name, limits))
    return windows


def _decode_frames(ds, f: _Fields, path) -> np.ndarray:
    """Pixel Data as float64 frames, after checking that the file holds what Rows x Columns x
    Number of Frames x Bits Allocated promise (nothing is decoded before)."""
    if "PixelData" not in ds or not ds.PixelData:
        raise ValueError(f"DICOM file {path} lacks PixelData (7FE0,0010) or it is empty")
    sizes = {}
    for keyword, tag in (("Rows", "(0028,0010)"), ("Columns", "(0028,0011)"), ("BitsAllocated", "(0028,0100)")):
        sizes[keyword] = int(f.get(ds, keyword, tag))
        if sizes[keyword] <= 0:
            raise ValueError(f"DICOM file {path}: {keyword} {tag} must be positive, got {sizes[keyword]}")
    nframes = int(getattr(ds, "NumberOfFrames", 1) or 0)
    if nframes <= 0:
        raise ValueError(f"DICOM file {path}: NumberOfFrames (0028,0008) must be positive, got {nframes}")
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise ValueError(f"DICOM file {path}: SamplesPerPixel (0028,0002) = {samples}; NM projections are greyscale (1)")
    needed = nframes * sizes["Rows"] * sizes["Columns"] * sizes["BitsAllocated"] // 8
    transfer = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if (transfer is None or not transfer.is_compressed) and len(ds.PixelData) < needed:
        raise ValueError(f"DICOM file {path}: PixelData holds {len(ds.PixelData)} bytes, but {nframes} frames of "
                         f"{sizes['Rows']} x {sizes['Columns']} x {sizes['BitsAllocated']} bits need {needed}")
    try:
        return np.asarray(ds.pixel_array, np.float64)
    except Exception as e:  # pydicom: missing decoder plugins (compressed data), corrupt data, ...
        name = getattr(transfer, "name", transfer)
        reason = " ".join(str(e).split())
        raise ValueError(f"DICOM file {path}: cannot decode PixelData (transfer syntax {name}): {reason}") from None


def read_dicom_dataset(path):
    """``pydicom.dcmread(path)`` with a bounded memory use: a deflate-compressed file (transfer
    syntax 1.2.840.10008.1.2.1.99, whose inflated size nothing in the file bounds before it is
    inflated) is refused before its data set is read. ``ValueError`` naming the file otherwise."""
    pydicom = _import_pydicom()
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        syntax = getattr(read_file_meta_info(path), "TransferSyntaxUID", None)
    except Exception:  # no file meta (raw data set) or not DICOM: dcmread below says which
        syntax = None
    if syntax == DeflatedExplicitVRLittleEndian:
        raise FileCheckError(f"DICOM file {path} is deflate-compressed (transfer syntax {syntax}); its inflated size is "
                         "not bounded before reading: inflate it first (e.g. dcmconv +te) and read the result")
    try:
        return pydicom.dcmread(path)
    except Exception as e:  # pydicom raises InvalidDicomError and others
        raise ValueError(f"{path} is not a readable DICOM file: {e}") from None


def read_dicom_projections(
    path,
    *,
    window=None,
    scatter: str = "none",
    dew_k: float = 0.5,
    radius_mm=None,
    pixel_spacing_mm=None,
    start_angle_deg=None,
    angular_step_deg=None,
    rotation_direction=None,
) -> ProjectionData:
    """Read a DICOM NM TOMO projection series (one multi-frame file).

    Arguments:
        path: the ``.dcm`` file.
        window: the photopeak window, by name (Energy Window Name) or 1-based number; default:
            the only window, the higher of two, the middle of three (see
            :func:`jaxspect.io.pick_windows`).
        scatter: ``"none"``, ``"tew"`` (needs windows just below and above the photopeak) or
            ``"dew"`` (needs a window below it): the estimate is returned as ``background``.
        dew_k: DEW multiplier ``k`` (scatter = ``k * C_lower``).
        radius_mm: orbit radius (scalar or one per merged view, mm) instead of Radial Position.
        pixel_spacing_mm: ``(dx, dz)`` or one number, mm, instead of Pixel Spacing.
        start_angle_deg: gantry start angle of head 1 (degrees; other heads keep their offset
            from it when the file gives their start angles, else are spread evenly over 360).
        angular_step_deg, rotation_direction (``"CW"``/``"CC"``): instead of the file's.

    Returns:
        A :class:`ProjectionData` with the photopeak's counts ``(nx, nz, nview)`` (``nview`` =
        views per head x heads), angles in radians (jaxspect's convention), radii in mm, every
        window in ``windows`` and the scatter estimate in ``background``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DICOM file not found: {path}")
    if scatter not in ("none", "tew", "dew"):
        raise ValueError(f"scatter must be 'none', 'tew' or 'dew', got {scatter!r}")
    ds = read_dicom_dataset(path)
    f = _Fields(ds, path)
    modality = getattr(ds, "Modality", None)
    if modality is not None and modality != "NM":
        raise ValueError(f"DICOM file {path} has Modality {modality!r}; expected 'NM' (nuclear medicine projections)")
    frames = _decode_frames(ds, f, path)
    nframes = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.shape[0] != nframes:
        raise ValueError(f"DICOM file {path}: NumberOfFrames (0028,0008) = {nframes} but PixelData holds {frames.shape[0]}")
    slope = getattr(ds, "RescaleSlope", None)
    intercept = getattr(ds, "RescaleIntercept", None)
    for keyword, tag, value in (("RescaleSlope", "(0028,1053)", slope), ("RescaleIntercept", "(0028,1052)", intercept)):
        if value is not None and not np.isfinite(float(value)):
            raise ValueError(f"DICOM file {path}: {keyword} {tag} must be finite, got {value}")
    if slope is not None:
        frames = frames * float(slope)
    if intercept is not None:
        frames = frames + float(intercept)
    check_counts(frames, f"the frames of DICOM file {path} (after Rescale Slope/Intercept)")

    windows = _windows(ds, path)
    n_windows = len(windows)
    detectors = list(getattr(ds, "DetectorInformationSequence", []) or [])
    n_detectors = max(len(detectors), int(getattr(ds, "NumberOfDetectors", 1) or 1))
    rotations = list(getattr(ds, "RotationInformationSequence", []) or [])
    n_rotations = max(len(rotations), int(getattr(ds, "NumberOfRotations", 1) or 1))
    if n_rotations != 1:
        raise ValueError(f"DICOM file {path} has {n_rotations} rotations; only single-rotation series are supported")
    window_of = _vector(ds, "EnergyWindowVector", "(0054,0010)", nframes, n_windows, path)
    detector_of = _vector(ds, "DetectorVector", "(0054,0020)", nframes, n_detectors, path)
    _vector(ds, "RotationVector", "(0054,0050)", nframes, 1, path)

    rotation = rotations[0] if rotations else None
    where = " in the Rotation Information Sequence (0054,0052)"
    if rotation is None and None in (angular_step_deg, rotation_direction):
        raise ValueError(f"DICOM file {path} lacks the Rotation Information Sequence (0054,0052); "
                         "pass angular_step_deg=, rotation_direction= (and start_angle_deg=)")
    nview = int(getattr(rotation, "NumberOfFramesInRotation", 0) or 0) if rotation is not None else 0
    if nview <= 0:
        nview = nframes // (n_windows * n_detectors)
    if nview * n_windows * n_detectors != nframes:
        raise ValueError(
            f"DICOM file {path}: {nframes} frames do not split into {n_windows} energy window(s) x "
            f"{n_detectors} detector(s) x {nview} views (Number of Frames in Rotation (0054,0053))"
        )
    view_of = getattr(ds, "AngularViewVector", None)
    if view_of is None:
        view_of = np.zeros(nframes, np.int64)
        for w in range(n_windows):
            for d in range(n_detectors):
                group = (window_of == w) & (detector_of == d)
                view_of[group] = np.arange(int(group.sum()))
    else:
        view_of = _vector(ds, "AngularViewVector", "(0054,0090)", nframes, nview, path)

    step = float(angular_step_deg) if angular_step_deg is not None else float(
        f.get(rotation, "AngularStep", "(0018,1144)", where=where, override="angular_step_deg"))
    if nview > 1 and not (np.isfinite(step) and 0 < abs(step) <= 360):
        raise ValueError(f"DICOM file {path}: AngularStep (0018,1144) must be a non-zero angle of at most 360 "
                         f"degrees, got {step:g} (0 would put every view at one angle); pass angular_step_deg=")
    direction = rotation_direction if rotation_direction is not None else str(
        f.get(rotation, "RotationDirection", "(0018,1140)", where=where, override="rotation_direction"))
    rotation_start = None
    if rotation is not None and getattr(rotation, "StartAngle", None) is not None:
        rotation_start = float(rotation.StartAngle)
    head_starts = [getattr(d, "StartAngle", None) for d in detectors] + [None] * (n_detectors - len(detectors))
    if start_angle_deg is not None:
        base = float(start_angle_deg)
        if all(s is not None for s in head_starts):
            starts = [base + float(s) - float(head_starts[0]) for s in head_starts]
        else:
            starts = [base + 360.0 * d / n_detectors for d in range(n_detectors)]
    else:
        starts = []
        for d, s in enumerate(head_starts):
            if s is None and (n_detectors > 1 or rotation_start is None):
                raise ValueError(
                    f"DICOM file {path} lacks StartAngle (0054,0200) in Detector Information Sequence (0054,0022) "
                    f"item {d + 1}" + ("" if n_detectors > 1 else " and in the Rotation Information Sequence")
                    + "; pass start_angle_deg="
                )
            starts.append(float(s) if s is not None else rotation_start)

    if pixel_spacing_mm is not None:
        spacing = np.broadcast_to(np.asarray(pixel_spacing_mm, np.float64).reshape(-1), (2,))
        dx, dz = float(spacing[0]), float(spacing[1])
    else:
        row_spacing, col_spacing = (float(v) for v in f.get(ds, "PixelSpacing", "(0028,0030)", override="pixel_spacing_mm"))
        dx, dz = col_spacing, row_spacing

    angles_deg, radii = [], []
    for d in range(n_detectors):
        angles_deg.append(gantry_angles_deg(starts[d], step, nview, direction, what=f"RotationDirection (0018,1140) of {path}"))
        if radius_mm is None:
            value = getattr(detectors[d], "RadialPosition", None) if d < len(detectors) else None
            if value is None and rotation is not None:
                value = getattr(rotation, "RadialPosition", None)
            if value is None:
                raise ValueError(
                    f"DICOM file {path} lacks RadialPosition (0018,1142) (Detector Information Sequence item {d + 1} "
                    "or Rotation Information Sequence); pass radius_mm="
                )
            radii.append(_per_view(value, nview, "RadialPosition (0018,1142)", path))
    angles = np.deg2rad(np.concatenate(angles_deg))
    order = np.argsort(np.mod(angles, 2 * np.pi), kind="stable")
    angles = np.mod(angles, 2 * np.pi)[order]
    if radius_mm is None:
        radii = np.concatenate(radii)[order]
    else:
        radii = np.broadcast_to(np.asarray(radius_mm, np.float64), (nview * n_detectors,)).copy()

    counts, ranges = {}, {}
    for w, (name, limits) in enumerate(windows):
        stack = np.zeros((n_detectors, nview) + frames.shape[1:], np.float64)
        for d in range(n_detectors):
            sel = np.nonzero((window_of == w) & (detector_of == d))[0]
            if np.unique(view_of[sel]).size != nview:
                raise ValueError(f"DICOM file {path}: window {name}, detector {d + 1} does not have one frame per view")
            stack[d, view_of[sel]] = frames[sel]
        counts[name] = frames_to_views(stack.reshape(n_detectors * nview, *frames.shape[1:])[order]).astype(np.float32)
        if limits is not None:
            ranges[name] = limits[:2]

    if len(ranges) == len(windows):
        peak, lower, upper = pick_windows(ranges, window)
    else:
        names = [n for n, _ in windows]
        if window is None and len(names) > 1:
            raise ValueError(f"DICOM file {path} lacks EnergyWindowRangeSequence (0054,0013) limits; pass window=")
        peak, lower, upper = pick_windows({n: (i, i + 1) for i, n in enumerate(names)}, window)
    widths = {name: limits[2] for name, limits in windows if limits is not None}
    background = None
    if scatter == "tew":
        if lower is None or upper is None or peak not in widths:
            raise ValueError(
                f"scatter='tew' needs energy windows with limits just below and above the photopeak {peak!r}; "
                f"{path} has {sorted(ranges.items())}"
            )
        background = tew_scatter(counts[lower], counts[upper], lower_width_kev=widths[lower],
                                 upper_width_kev=widths[upper], peak_width_kev=widths[peak])
    elif scatter == "dew":
        if lower is None:
            raise ValueError(f"scatter='dew' needs an energy window below the photopeak {peak!r}; {path} has {sorted(ranges.items())}")
        background = dew_scatter(counts[lower], k=dew_k)
    centre = nm_grid_centre(ds, path, (dx, dz))
    return ProjectionData(counts[peak], angles, radii, (dx, dz), background=background, windows=counts,
                          window_ranges_kev=ranges, photopeak=peak, centre_mm=centre, metadata=dicom_metadata(ds))
