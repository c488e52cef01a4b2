"""A 2-D hot-rod (Derenzo-type) resolution phantom.

Six 60-degree sectors, each holding rods of one diameter ``d`` in triangular (hexagonal) packing
with centre-to-centre spacing ``2 d``, around a central cold disc, inside a uniform disc. The
default rod sizes (6.5, 5.5, 4.5, 3.5, 2.2, 1.6 mm), the 30 mm cold centre and the 0.8 mm pixels
follow the hot-rod phantom of the SCNN paper (GATE simulation, rods 10:1 over a warm background
there; here the background defaults to 0 and can be set).

Coordinates are in mm from the grid centre, ``x`` along array axis 0 and ``y`` along axis 1 (as
:func:`voxel_centres`). Sector ``k`` spans polar angles ``[60 k, 60 (k + 1))`` degrees, measured
from ``+x`` towards ``+y``, and holds ``rod_diameters_mm[k]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

__all__ = ["HotRodPhantom", "hot_rod_phantom"]


class HotRodPhantom(NamedTuple):
    """Result of :func:`hot_rod_phantom`; every dict is keyed by rod diameter (mm), in sector
    order.

    Attributes
    ----------
    image : np.ndarray
        float32 ``(n, n)``: ``rod_value`` in rods, ``background`` in the rest of the phantom disc,
        0 in the cold centre and outside; edge pixels hold area-weighted averages
        (``supersample``).
    rod_masks : dict[float, np.ndarray]
        bool ``(n, n)``: pixels whose centre lies in a rod of that sector.
    sector_masks : dict[float, np.ndarray]
        bool ``(n, n)``: pixels whose centre lies in that sector of the disc, outside the cold
        centre (rods and the background between them).
    rod_centres_mm : dict[float, np.ndarray]
        float ``(k, 2)``: rod centres ``(x, y)`` in mm.
    phantom_mask : np.ndarray
        bool ``(n, n)``: pixel centres inside the phantom disc.
    cold_mask : np.ndarray
        bool ``(n, n)``: pixel centres inside the central cold disc.
    pixel_mm : float
        Pixel size, mm.
    """

    image: np.ndarray
    rod_masks: dict
    sector_masks: dict
    rod_centres_mm: dict
    phantom_mask: np.ndarray
    cold_mask: np.ndarray
    pixel_mm: float


def _sector_rods(d: float, bisector: float, cold_r: float, radius: float) -> np.ndarray:
    """Centres (k, 2) of the rods of diameter ``d`` in the 60-degree wedge around ``bisector``.

    Rows of the triangular lattice are perpendicular to the bisector; row ``i`` has ``i + 1``
    rods at ``u = u0 + i * s * sqrt(3)/2``, ``v = (j - i/2) * s`` (``s = 2 d``), so the outer rods
    of every row lie on two lines at +-30 degrees, parallel to the wedge edges at distance
    ``u0 / 2``. ``u0 = max(cold_r + d, 2 d)`` leaves a gap of at least ``d/2`` to the cold disc
    and to the wedge edges; rods must lie fully inside the phantom disc.
    """
    s = 2.0 * d
    h = s * math.sqrt(3.0) / 2.0
    u0 = max(cold_r + d, 2.0 * d)
    nrow = int(max(0.0, (radius - d / 2 - u0) / h)) + 1
    i, j = np.meshgrid(np.arange(nrow), np.arange(nrow), indexing="ij")
    keep = j <= i
    u = (u0 + i * h)[keep]
    v = ((j - i / 2.0) * s)[keep]
    ok = np.hypot(u, v) + d / 2 <= radius
    u, v = u[ok], v[ok]
    c, sn = math.cos(bisector), math.sin(bisector)
    return np.stack([u * c - v * sn, u * sn + v * c], axis=1)


def hot_rod_phantom(
    n: int = 128,
    pixel_mm: float = 0.8,
    *,
    rod_diameters_mm: Sequence[float] = (6.5, 5.5, 4.5, 3.5, 2.2, 1.6),
    phantom_radius_mm: float | None = None,
    cold_radius_mm: float = 15.0,
    rod_value: float = 1.0,
    background: float = 0.0,
    supersample: int = 8,
) -> HotRodPhantom:
    """2-D Derenzo-type hot-rod phantom with per-sector masks for contrast recovery.

    Parameters
    ----------
    n : int
        Image size, pixels; the image is ``(n, n)`` (a single slice: add an axis for a
        ``(n, n, 1)`` volume).
    pixel_mm : float
        Pixel size in mm (default 0.8 mm, the paper's reconstruction voxel).
    rod_diameters_mm : sequence of 6 floats
        Distinct rod diameters (mm) of sectors 0..5; spacing is twice the diameter.
    phantom_radius_mm : float, optional
        Radius of the phantom disc; default ``0.48 * n * pixel_mm`` (49 mm for the defaults).
    cold_radius_mm : float
        Radius of the central cold disc (default 15 mm: the paper's 3 cm cold region).
    rod_value, background : float
        Values in the rods and in the rest of the phantom disc (defaults 1 and 0; the paper's
        10:1 is ``background=0.1``). The cold centre and the outside are 0.
    supersample : int
        ``image`` averages ``supersample**2`` samples per pixel (partial-volume edges);
        1 samples pixel centres only. The masks always use pixel centres.

    Returns
    -------
    HotRodPhantom
        ``image`` float32 ``(n, n)``; ``rod_masks``, ``sector_masks`` bool ``(n, n)`` and
        ``rod_centres_mm`` ``(k, 2)`` per diameter; ``phantom_mask``, ``cold_mask``.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    if not (math.isfinite(pixel_mm) and pixel_mm > 0):
        raise ValueError(f"pixel_mm must be a positive length, got {pixel_mm!r}")
    diameters = tuple(float(d) for d in rod_diameters_mm)
    if len(diameters) != 6 or len(set(diameters)) != 6 or min(diameters) <= 0:
        raise ValueError(f"rod_diameters_mm must be 6 distinct positive diameters, got {rod_diameters_mm!r}")
    radius = 0.48 * n * pixel_mm if phantom_radius_mm is None else float(phantom_radius_mm)
    if not (0 <= cold_radius_mm < radius):
        raise ValueError(
            f"need 0 <= cold_radius_mm < phantom_radius_mm, got {cold_radius_mm!r} and {radius!r}"
        )
    ss = int(supersample)
    if ss < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample!r}")

    ax = (np.arange(n) - (n - 1) / 2) * pixel_mm
    x, y = ax[:, None], ax[None, :]
    r = np.hypot(x, y)
    phantom_mask = r <= radius
    cold_mask = r <= cold_radius_mm
    angle = np.mod(np.arctan2(y, x), 2 * np.pi)
    sector_index = np.minimum((angle // (np.pi / 3)).astype(int), 5)

    # Sub-pixel sample offsets (mm) for area fractions.
    off = ((np.arange(ss) + 0.5) / ss - 0.5) * pixel_mm
    ox, oy = np.meshgrid(off, off, indexing="ij")
    ox, oy = ox.ravel(), oy.ravel()

    def disc_fraction(cx, cy, rad, lo_i, hi_i, lo_j, hi_j):
        px = ax[lo_i:hi_i, None, None] + ox[None, None, :] - cx
        py = ax[None, lo_j:hi_j, None] + oy[None, None, :] - cy
        return np.mean(px**2 + py**2 <= rad**2, axis=-1)

    full = (0, n, 0, n)
    image = background * (disc_fraction(0.0, 0.0, radius, *full) - disc_fraction(0.0, 0.0, cold_radius_mm, *full))
    rod_frac = np.zeros((n, n))
    rod_masks, sector_masks, centres = {}, {}, {}
    for k, d in enumerate(diameters):
        cs = _sector_rods(d, (k + 0.5) * np.pi / 3, cold_radius_mm, radius)
        centres[d] = cs
        rmask = np.zeros((n, n), bool)
        reach = d / 2 + pixel_mm
        for cx, cy in cs:
            lo_i = max(int(np.searchsorted(ax, cx - reach)), 0)
            hi_i = min(int(np.searchsorted(ax, cx + reach)) + 1, n)
            lo_j = max(int(np.searchsorted(ax, cy - reach)), 0)
            hi_j = min(int(np.searchsorted(ax, cy + reach)) + 1, n)
            if lo_i >= hi_i or lo_j >= hi_j:
                continue
            rod_frac[lo_i:hi_i, lo_j:hi_j] += disc_fraction(cx, cy, d / 2, lo_i, hi_i, lo_j, hi_j)
            rmask[lo_i:hi_i, lo_j:hi_j] |= (
                (ax[lo_i:hi_i, None] - cx) ** 2 + (ax[None, lo_j:hi_j] - cy) ** 2 <= (d / 2) ** 2
            )
        rod_masks[d] = rmask
        sector_masks[d] = (sector_index == k) & phantom_mask & ~cold_mask
    image = image + (rod_value - background) * rod_frac
    return HotRodPhantom(
        image=image.astype(np.float32),
        rod_masks=rod_masks,
        sector_masks=sector_masks,
        rod_centres_mm=centres,
        phantom_mask=phantom_mask,
        cold_mask=cold_mask,
        pixel_mm=float(pixel_mm),
    )
