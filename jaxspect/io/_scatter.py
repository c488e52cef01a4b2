"""Scatter estimates from energy windows: triple (TEW) and dual (DEW) energy window methods.

The estimates are mean scatter counts in the photopeak window, per projection bin, to be passed
to :func:`jaxspect.osem` / :func:`jaxspect.mlem` as ``background=`` (never subtracted from the
data). They are not smoothed: smooth them first if the scatter windows are noisy.
"""

from __future__ import annotations

import numpy as np


def _positive_width(name, value):
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive energy window width (keV), got {value!r}")
    return value


def tew_scatter(lower, upper, *, lower_width_kev, upper_width_kev, peak_width_kev) -> np.ndarray:
    """Triple-energy-window scatter estimate (Ogawa et al. 1991), in counts per bin:

    ``(C_lower / W_lower + C_upper / W_upper) * W_peak / 2``

    Arguments:
        lower, upper: counts in the narrow windows just below and above the photopeak,
            ``(nx, nz, nview)``.
        lower_width_kev, upper_width_kev, peak_width_kev: window widths ``W`` in keV.

    Returns:
        ``(nx, nz, nview)`` float32 mean scatter counts in the photopeak window, ``>= 0``.
    """
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    if lower.shape != upper.shape:
        raise ValueError(f"lower and upper windows must have the same shape, got {lower.shape} and {upper.shape}")
    w_l = _positive_width("lower_width_kev", lower_width_kev)
    w_u = _positive_width("upper_width_kev", upper_width_kev)
    w_p = _positive_width("peak_width_kev", peak_width_kev)
    estimate = (lower / w_l + upper / w_u) * w_p / 2
    return np.maximum(estimate, 0).astype(np.float32)


def dew_scatter(lower, *, k: float = 0.5) -> np.ndarray:
    """Dual-energy-window scatter estimate (Jaszczak et al. 1984): ``k * C_lower`` counts per
    bin, with ``C_lower`` the counts ``(nx, nz, nview)`` of the lower (Compton) window and ``k``
    the scatter multiplier (0.5 by default)."""
    k = float(k)
    if not (np.isfinite(k) and k >= 0):
        raise ValueError(f"k must be a finite non-negative multiplier, got {k!r}")
    return np.maximum(k * np.asarray(lower, np.float64), 0).astype(np.float32)


def _centre(rng):
    return 0.5 * (rng[0] + rng[1])


def pick_windows(ranges: dict, photopeak=None) -> tuple[str, str | None, str | None]:
    """Choose the photopeak and the adjacent lower and upper scatter windows.

    ``ranges``: ``name -> (lower_kev, upper_kev)``. ``photopeak``: a window name, a 1-based
    window number (the order of ``ranges``, as DICOM's Energy Window Vector counts), or ``None``:
    the only window; of two, the higher-energy one (DEW's lower window is the other); of three,
    the middle one (TEW). More windows need an explicit ``photopeak``.

    Returns ``(peak, lower, upper)`` names; ``lower``/``upper`` are the windows with the nearest
    centre energy below/above the photopeak's, or ``None``.
    """
    names = list(ranges)
    if not names:
        raise ValueError("no energy windows to choose from")
    if photopeak is None:
        by_energy = sorted(names, key=lambda n: _centre(ranges[n]))
        if len(names) == 1:
            peak = names[0]
        elif len(names) == 2:
            peak = by_energy[1]
        elif len(names) == 3:
            peak = by_energy[1]
        else:
            raise ValueError(f"{len(names)} energy windows {names}: say which is the photopeak (window=)")
    elif isinstance(photopeak, (int, np.integer)) and not isinstance(photopeak, bool):
        if not 1 <= photopeak <= len(names):
            raise ValueError(f"window must be a window number in 1..{len(names)} or a name in {names}, got {photopeak}")
        peak = names[photopeak - 1]
    else:
        if photopeak not in ranges:
            raise ValueError(f"window {photopeak!r} not found; energy windows are {names}")
        peak = photopeak
    c = _centre(ranges[peak])
    below = [n for n in names if n != peak and _centre(ranges[n]) < c]
    above = [n for n in names if n != peak and _centre(ranges[n]) > c]
    lower = max(below, key=lambda n: _centre(ranges[n])) if below else None
    upper = min(above, key=lambda n: _centre(ranges[n])) if above else None
    return peak, lower, upper
