"""Quantitative SPECT: counts-domain images -> activity concentration (Bq/mL).

jaxspect's projector sums activity along rays with attenuation factors and a PSF that sums to 1
(no voxel-length factor), so a voxel value ``x`` unattenuated contributes ``x`` counts to every
view. A camera of planar sensitivity ``S`` (counts per second per MBq, the calibration factor)
acquiring ``t`` seconds per view records ``S t A`` counts per view from ``A`` MBq in air; so a
reconstructed voxel holds ``x / (S t)`` MBq and

    C = x / (S t) * 1e6 / (dx dy dz / 1000)     Bq/mL     (voxel sizes in mm)

(:func:`activity_concentration`). ``S`` is given (the site's calibration) or measured from a
calibration acquisition of known activity: a point source in air
(:func:`sensitivity_from_point_source`: mean counts per view / (t A)), or a phantom (e.g. a
uniform cylinder) reconstructed with its attenuation map (:func:`sensitivity_from_reconstruction`:
image total / (t A)) — the latter calibrates the whole chain, attenuation and PSF modelling
included.

Decay (:func:`decay_factor`): the counts of an acquisition starting at ``t0`` and lasting ``T``
seconds come from the mean activity over it, ``A(t0) (1 - exp(-lam T)) / (lam T)``; the factor
returned turns that mean into the activity at a reference time (e.g. injection),
``A(t_ref) = A(t0) exp(lam (t0 - t_ref))``, ``lam = ln 2 / half-life``.
"""

from __future__ import annotations

import datetime
import math

import numpy as np

__all__ = [
    "activity_concentration",
    "sensitivity_from_point_source",
    "sensitivity_from_reconstruction",
    "decay_factor",
]


def _positive(name, value):
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def activity_concentration(image, voxel_size_mm, sensitivity_cps_per_mbq: float, time_per_view_s: float,
                           *, decay: float = 1.0) -> np.ndarray:
    """Counts-domain image ``(nx, ny, nz)`` -> activity concentration in Bq/mL (see the module
    docstring), times ``decay`` (:func:`decay_factor`)."""
    s = _positive("sensitivity_cps_per_mbq", sensitivity_cps_per_mbq)
    t = _positive("time_per_view_s", time_per_view_s)
    decay = _positive("decay", decay)
    voxel_ml = float(np.prod([_positive("voxel_size_mm", v) for v in voxel_size_mm])) / 1000.0
    return np.asarray(image, np.float64) / (s * t) * 1e6 / voxel_ml * decay


def sensitivity_from_point_source(counts, activity_mbq: float, time_per_view_s: float) -> float:
    """Planar sensitivity (cps/MBq) from projections ``(nx, nz, nview)`` of a point source of
    ``activity_mbq`` in air: mean counts per view / (``time_per_view_s`` * activity)."""
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 3:
        raise ValueError(f"counts must be projections (nx, nz, nview), got shape {counts.shape}")
    per_view = counts.sum(axis=(0, 1)).mean()
    return float(per_view / (_positive("time_per_view_s", time_per_view_s) * _positive("activity_mbq", activity_mbq)))


def sensitivity_from_reconstruction(image, activity_mbq: float, time_per_view_s: float) -> float:
    """Sensitivity (cps/MBq) from a counts-domain reconstruction of a phantom of known total
    ``activity_mbq`` (reconstructed as the patient will be): image total / (t * activity)."""
    total = float(np.asarray(image, np.float64).sum())
    return total / (_positive("time_per_view_s", time_per_view_s) * _positive("activity_mbq", activity_mbq))


def decay_factor(half_life_s: float, acquisition_start: datetime.datetime, acquisition_duration_s: float,
                 reference: datetime.datetime) -> float:
    """Factor turning the mean activity during an acquisition into the activity at
    ``reference`` (see the module docstring)."""
    lam = math.log(2) / _positive("half_life_s", half_life_s)
    duration = float(acquisition_duration_s)
    if not (math.isfinite(duration) and duration >= 0):
        raise ValueError(f"acquisition_duration_s must be >= 0, got {acquisition_duration_s!r}")
    x = lam * duration
    during = 1.0 if x == 0 else x / -math.expm1(-x)
    elapsed = (acquisition_start - reference).total_seconds()
    return during * math.exp(lam * elapsed)
