"""Multi-bed (whole-body) studies: per-bed reconstructions stitched along the patient axis.

Each bed position is reconstructed on its own grid in scanner coordinates (``jaxspect
reconstruct ... --output bedN``); :func:`stitch_beds` places the volumes on one grid spanning
all beds and blends the overlaps with linear weights: in a slice that ``m`` beds cover, bed
``b``'s weight grows linearly with the slice's distance from that bed's axial edge, and the
weights are normalised to sum to 1. Both beds estimate the same activity in the overlap, so a
weighted mean (not a sum) conserves it: the stitched overlap holds the beds' common activity,
neither doubled nor lost, and the edge slices, where a bed's axial sensitivity falls off, count
least.

The beds must share the transaxial grid (shape, voxel size, orientation and position) and lie
whole slices apart along z; anything else is refused with a message naming the bed.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stitch_beds"]


def stitch_beds(volumes, affines) -> tuple[np.ndarray, np.ndarray]:
    """Stitch per-bed volumes ``(nx, ny, nz_b)`` with 4x4 voxel -> patient LPS mm ``affines``
    (axis-aligned, ``k`` along +z) into one volume; returns ``(volume, affine)``.
    """
    volumes = [np.asarray(v, np.float64) for v in volumes]
    affines = [np.asarray(a, np.float64) for a in affines]
    if len(volumes) < 1 or len(volumes) != len(affines):
        raise ValueError(f"need one affine per volume, got {len(volumes)} volumes and {len(affines)} affines")
    first, reference = volumes[0], affines[0]
    dz = reference[2, 2]
    for b, (v, a) in enumerate(zip(volumes, affines)):
        if v.ndim != 3 or a.shape != (4, 4):
            raise ValueError(f"bed {b + 1}: expected a 3-D volume and a 4x4 affine, got {v.shape} and {a.shape}")
        if not np.allclose(a[:3, :3], np.diag(np.diag(a[:3, :3])), atol=1e-6) or a[2, 2] <= 0:
            raise ValueError(f"bed {b + 1}: the grid must be axis-aligned with k towards the head (affine {a.tolist()})")
        if v.shape[:2] != first.shape[:2] or not np.allclose(a[:2, :], reference[:2, :], atol=1e-3):
            raise ValueError(f"bed {b + 1}: transaxial grid {v.shape[:2]} at {a[:2, 3].tolist()} mm differs from "
                             f"bed 1's {first.shape[:2]} at {reference[:2, 3].tolist()} mm")
        if not np.isclose(a[2, 2], dz, rtol=1e-5):
            raise ValueError(f"bed {b + 1}: slice thickness {a[2, 2]} mm differs from bed 1's {dz} mm")
    offsets = [(a[2, 3] - reference[2, 3]) / dz for a in affines]
    for b, offset in enumerate(offsets):
        if abs(offset - round(offset)) > 1e-3:
            raise ValueError(f"bed {b + 1} starts {offset:.3f} slices from bed 1: beds must lie whole slices apart")
    offsets = [int(round(o)) for o in offsets]
    low = min(offsets)
    high = max(o + v.shape[2] for o, v in zip(offsets, volumes))
    total = np.zeros(first.shape[:2] + (high - low,))
    weight = np.zeros(high - low)
    for offset, v in zip(offsets, volumes):
        nz = v.shape[2]
        k = np.arange(nz)
        w = np.minimum(k + 1, nz - k).astype(np.float64)  # grows away from both axial edges
        start = offset - low
        total[:, :, start:start + nz] += v * w
        weight[start:start + nz] += w
    affine = reference.copy()
    affine[2, 3] = reference[2, 3] + low * dz
    return (total / weight).astype(np.float32), affine
