"""Projection data read from files, in jaxspect's layout and units, and its geometry.

Angle convention shared by every reader and writer in :mod:`jaxspect.io`
-------------------------------------------------------------------------
Files give the *gantry angle* ``phi`` of the detector in degrees as DICOM defines it (PS3.3
C.8.4.12, Start Angle (0054,0200)): ``phi = 0`` puts the detector at the patient's anterior
(its normal pointing to the patient's back), and ``phi`` grows counter-clockwise viewed from the
patient's feet (detector moving from anterior towards the patient's right). ``CC``/``CCW`` means
increasing angle, ``CW`` decreasing.

jaxspect's image axes are patient LPS, as the torso phantom's: ``i`` (axis 0) towards the
patient's left, ``j`` (axis 1) towards the back, ``k`` (axis 2) towards the head. In
jaxspect's convention (``jaxspect._geometry``) view angle ``theta = 0`` puts the detector on the
``j = 0`` side (anterior) and ``theta = pi/2`` on the ``i = 0`` side (patient's right); so
``theta = radians(phi)`` exactly, with no offset or sign change. (jaxspect's "clockwise" in
the README is seen from the head with the back up; DICOM's "counter-clockwise" is seen from the
feet: the same motion.)

Detector pixels: a projection frame is stored row by row (``rows x columns``); the column index
is the bin along the detector (jaxspect's ``i``; at ``phi = 0`` it runs towards the patient's
left, as an anterior planar image is displayed) and row 0 is the head end (superior), so
``views[i, k, l] = frame_l[nz - 1 - k, i]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class ProjectionData:
    """SPECT projections and their acquisition geometry, in jaxspect's layout and units.

    Attributes:
        counts: ``(nx, nz, nview)`` float32 counts (bin along the detector, axial row with
            ``k = 0`` at the feet end, view).
        angles: ``(nview,)`` float64 view angles in radians, jaxspect's convention (see the
            module docstring: equal to the DICOM gantry angle in radians).
        radii: ``(nview,)`` float64 orbit radii in mm (rotation axis to detector face), or
            ``None`` when the file does not give them.
        pixel_size_mm: ``(dx, dz)``: bin size along the detector and axial row height, mm.
        background: ``(nx, nz, nview)`` float32 scatter estimate in counts (TEW/DEW), or
            ``None``. Pass it as ``background=`` to :func:`jaxspect.osem`.
        windows: every energy window read, ``name -> (nx, nz, nview)`` float32 counts (the
            photopeak's array is ``counts``).
        window_ranges_kev: ``name -> (lower, upper)`` energy window limits in keV, where known.
        photopeak: name of the window ``counts`` comes from, or ``None``.
        centre_mm: patient position (LPS, mm) of the reconstruction grid's centre, where the
            file gives it (DICOM; see :mod:`jaxspect.io._affine`), else ``None`` (the patient
            origin is used).
        metadata: identifiers and timing from the file (``StudyInstanceUID``,
            ``FrameOfReferenceUID``, ``PatientID``, ``PatientName``, ``frame_duration_s`` per
            view, ``acquisition_datetime``, ...), for outputs and quantification.
    """

    counts: np.ndarray
    angles: np.ndarray
    radii: np.ndarray | None
    pixel_size_mm: tuple[float, float]
    background: np.ndarray | None = None
    windows: dict = dataclasses.field(default_factory=dict)
    window_ranges_kev: dict = dataclasses.field(default_factory=dict)
    photopeak: str | None = None
    centre_mm: tuple | None = None
    metadata: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        counts = np.asarray(self.counts, np.float32)
        if counts.ndim != 3:
            raise ValueError(f"counts must have shape (nx, nz, nview), got {counts.shape}")
        nview = counts.shape[2]
        angles = np.asarray(self.angles, np.float64).reshape(-1)
        if angles.shape != (nview,):
            raise ValueError(f"angles must have shape (nview,) = ({nview},), got {angles.shape}")
        if not np.all(np.isfinite(angles)):
            raise ValueError("angles contain NaN or Inf")
        radii = self.radii
        if radii is not None:
            radii = np.broadcast_to(np.asarray(radii, np.float64), (nview,)).copy()
            if not np.all(np.isfinite(radii)) or np.any(radii <= 0):
                raise ValueError(f"radii must be finite and positive (mm), got minimum {radii.min()}")
        try:
            dx, dz = (float(v) for v in self.pixel_size_mm)
        except (TypeError, ValueError):
            raise ValueError(f"pixel_size_mm must be (dx, dz) in mm, got {self.pixel_size_mm!r}") from None
        if not (np.isfinite(dx) and np.isfinite(dz) and dx > 0 and dz > 0):
            raise ValueError(f"pixel_size_mm must be positive (mm), got {(dx, dz)}")
        background = self.background
        if background is not None:
            background = np.asarray(background, np.float32)
            if background.shape != counts.shape:
                raise ValueError(f"background must have the counts' shape {counts.shape}, got {background.shape}")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "angles", angles)
        object.__setattr__(self, "radii", radii)
        object.__setattr__(self, "pixel_size_mm", (dx, dz))
        object.__setattr__(self, "background", background)
        if self.centre_mm is not None:
            centre = tuple(float(v) for v in np.asarray(self.centre_mm, np.float64).reshape(-1))
            if len(centre) != 3 or not all(np.isfinite(centre)):
                raise ValueError(f"centre_mm must be 3 finite patient coordinates (mm), got {self.centre_mm!r}")
            object.__setattr__(self, "centre_mm", centre)

    @property
    def nview(self) -> int:
        return self.counts.shape[2]

    @property
    def photopeak_kev(self) -> float | None:
        """Centre of the photopeak window (keV) where the file gives its limits, else ``None``."""
        limits = self.window_ranges_kev.get(self.photopeak) if self.photopeak is not None else None
        return None if limits is None else 0.5 * (float(limits[0]) + float(limits[1]))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """The reconstruction grid these projections imply: ``(nx, nx, nz)``."""
        nx, nz, _ = self.counts.shape
        return (nx, nx, nz)

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """``(dx, dx, dz)`` in mm: bins give the in-plane voxel size, rows the slice height."""
        dx, dz = self.pixel_size_mm
        return (dx, dx, dz)

    @property
    def image_affine(self) -> np.ndarray:
        """4x4 affine of the reconstruction grid, voxel ``(i, j, k)`` -> patient LPS mm
        (:func:`jaxspect.io.grid_affine`; centred at :attr:`centre_mm` or the origin)."""
        from ._affine import grid_affine

        return grid_affine(self.image_shape, self.voxel_size_mm, (0.0, 0.0, 0.0) if self.centre_mm is None else self.centre_mm)

    def spect_geometry(self, psf):
        """A :class:`jaxspect.SPECTGeometry` for these projections on the grid
        :attr:`image_shape` with voxels :attr:`voxel_size_mm`, this file's angles and radii.

        ``psf``: a :class:`jaxspect.GaussianPSF` (needs :attr:`radii`) or an
        :class:`jaxspect.ExplicitPSF` of shape ``(px, pz, nx, nview)``.
        """
        from .._geometry import SPECTGeometry

        return SPECTGeometry(self.image_shape, self.voxel_size_mm, psf, angles=self.angles, radii=self.radii)


def gantry_angles_deg(start_deg: float, step_deg: float, nview: int, direction: str, *, what: str) -> np.ndarray:
    """Gantry angles ``start +- l * step`` in degrees (``CC``/``CCW``: +, ``CW``: -)."""
    direction = str(direction).strip().upper()
    if direction in ("CC", "CCW"):
        sign = 1.0
    elif direction == "CW":
        sign = -1.0
    else:
        raise ValueError(f"{what} must be CW or CCW (CC), got {direction!r}")
    return float(start_deg) + sign * float(step_deg) * np.arange(nview, dtype=np.float64)


def check_counts(counts: np.ndarray, what: str) -> np.ndarray:
    """``counts`` unchanged; ``ValueError`` naming ``what`` unless every value is finite and
    non-negative (as Poisson counts and their means must be)."""
    if not np.all(np.isfinite(counts)):
        raise ValueError(f"{what} hold NaN or Inf; counts must be finite")
    if counts.size and counts.min() < 0:
        raise ValueError(f"{what} hold negative values (minimum {counts.min():.4g}); counts must be >= 0")
    return counts


def frames_to_views(frames: np.ndarray) -> np.ndarray:
    """``(nview, rows, cols)`` frames (row 0 = head end) -> jaxspect views ``(cols, rows, nview)``."""
    return np.ascontiguousarray(np.transpose(frames[:, ::-1, :], (2, 1, 0)))


def views_to_frames(views: np.ndarray) -> np.ndarray:
    """Inverse of :func:`frames_to_views`."""
    return np.ascontiguousarray(np.transpose(views, (2, 1, 0))[:, ::-1, :])
