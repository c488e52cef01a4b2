"""Analytic shapes sampled on the image grid ``(nx, ny, nz)`` with voxel size in mm.

Coordinates are in mm relative to the grid centre (the rotation axis passes through
``x = y = 0``); ``x`` runs along image axis 0, ``y`` along axis 1, ``z`` along axis 2.
"""

from __future__ import annotations

import numpy as np


def voxel_centres(shape, voxel_size):
    """Voxel-centre coordinates ``(x, y, z)`` in mm, each of shape ``shape``."""
    axes = [(np.arange(n) - (n - 1) / 2) * d for n, d in zip(shape, voxel_size)]
    return np.meshgrid(*axes, indexing="ij")


def _check(shape, voxel_size):
    if len(shape) != 3 or any(int(n) != n or n <= 0 for n in shape):
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}")
    if len(voxel_size) != 3 or any(not d > 0 for d in voxel_size):
        raise ValueError(f"voxel_size must be 3 positive lengths (mm), got {voxel_size!r}")


def ellipsoid(shape, voxel_size, centre_mm, semi_axes_mm, *, supersample: int = 1) -> np.ndarray:
    """Fraction of each voxel inside an axis-aligned ellipsoid (0/1 with ``supersample=1``).

    ``supersample > 1`` averages ``supersample**3`` sub-voxel samples for partial-volume edges.
    """
    _check(shape, voxel_size)
    if min(semi_axes_mm) <= 0:
        raise ValueError(f"semi_axes_mm must be positive, got {semi_axes_mm!r}")
    s = int(supersample)
    if s < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample!r}")
    out = np.zeros(shape, np.float64)
    offsets = (np.arange(s) + 0.5) / s - 0.5
    x, y, z = voxel_centres(shape, voxel_size)
    for ox in offsets:
        for oy in offsets:
            for oz in offsets:
                r = (
                    ((x + ox * voxel_size[0] - centre_mm[0]) / semi_axes_mm[0]) ** 2
                    + ((y + oy * voxel_size[1] - centre_mm[1]) / semi_axes_mm[1]) ** 2
                    + ((z + oz * voxel_size[2] - centre_mm[2]) / semi_axes_mm[2]) ** 2
                )
                out += r <= 1
    return out / s**3


def elliptic_cylinder(shape, voxel_size, semi_axes_mm, *, centre_mm=(0.0, 0.0), z_range_mm=None) -> np.ndarray:
    """0/1 mask of a cylinder along z with elliptical cross-section ``semi_axes_mm = (a, b)``
    centred at ``centre_mm = (x, y)``; ``z_range_mm = (z0, z1)`` limits it axially."""
    _check(shape, voxel_size)
    x, y, z = voxel_centres(shape, voxel_size)
    inside = ((x - centre_mm[0]) / semi_axes_mm[0]) ** 2 + ((y - centre_mm[1]) / semi_axes_mm[1]) ** 2 <= 1
    if z_range_mm is not None:
        inside &= (z >= z_range_mm[0]) & (z <= z_range_mm[1])
    return inside.astype(np.float64)
