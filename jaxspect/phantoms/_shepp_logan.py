"""Modified Shepp-Logan head phantoms, 2-D (Toft) and 3-D (Kak & Slaney's extension as tabulated
by Schabel's ``phantom3d``), sampled at pixel/voxel centres (no partial volume).

Coordinates are normalised to ``[-1, 1]`` along every axis: index ``i`` of an axis of length
``n`` sits at ``(i - (n-1)/2) / ((n-1)/2)`` (MATLAB ``phantom``'s grid), ``x`` along array axis 0,
``y`` along axis 1 and (3-D) ``z`` along axis 2. Display a 2-D phantom upright with
``imshow(img.T, origin="lower")`` (``y`` up).

Intensities are Toft's "modified" ones (skull 1.0, brain 0.2, ventricles 0.0, small features
0.3-0.4): the sum of the additive values of every ellipse containing a point. Sums such as
``1 - 0.8 - 0.2`` that are zero up to round-off are clipped to 0, so the result is non-negative
with range ``[0, 1]``.

References: P. A. Toft, "The Radon Transform: Theory and Implementation", PhD thesis, DTU, 1996,
pp. 199-200; A. C. Kak and M. Slaney, "Principles of Computerized Tomographic Imaging", IEEE
Press, 1988 (3-D head phantom); M. Schabel, ``phantom3d.m`` (MATLAB File Exchange, 2006).
"""

from __future__ import annotations

import numpy as np

__all__ = ["shepp_logan_2d", "shepp_logan_3d", "SHEPP_LOGAN_2D_ELLIPSES", "SHEPP_LOGAN_3D_ELLIPSOIDS"]

#: Toft's modified Shepp-Logan ellipses: ``(A, a, b, x0, y0, phi_deg)`` (additive intensity,
#: semi-axes, centre, counter-clockwise rotation of the ``a`` axis from ``x``).
SHEPP_LOGAN_2D_ELLIPSES: tuple[tuple[float, ...], ...] = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.8740, 0.0, -0.0184, 0.0),
    (-0.2, 0.1100, 0.3100, 0.22, 0.0, -18.0),
    (-0.2, 0.1600, 0.4100, -0.22, 0.0, 18.0),
    (0.1, 0.2100, 0.2500, 0.0, 0.35, 0.0),
    (0.1, 0.0460, 0.0460, 0.0, 0.1, 0.0),
    (0.1, 0.0460, 0.0460, 0.0, -0.1, 0.0),
    (0.1, 0.0460, 0.0230, -0.08, -0.605, 0.0),
    (0.1, 0.0230, 0.0230, 0.0, -0.606, 0.0),
    (0.1, 0.0230, 0.0460, 0.06, -0.605, 0.0),
)

#: The modified 3-D phantom of Schabel's ``phantom3d``:
#: ``(A, a, b, c, x0, y0, z0, phi, theta, psi)`` with z-x-z Euler angles in degrees.
SHEPP_LOGAN_3D_ELLIPSOIDS: tuple[tuple[float, ...], ...] = (
    (1.0, 0.6900, 0.920, 0.810, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.780, 0.0, -0.0184, 0.0, 0.0, 0.0, 0.0),
    (-0.2, 0.1100, 0.310, 0.220, 0.22, 0.0, 0.0, -18.0, 0.0, 10.0),
    (-0.2, 0.1600, 0.410, 0.280, -0.22, 0.0, 0.0, 18.0, 0.0, 10.0),
    (0.1, 0.2100, 0.250, 0.410, 0.0, 0.35, -0.15, 0.0, 0.0, 0.0),
    (0.1, 0.0460, 0.046, 0.050, 0.0, 0.1, 0.25, 0.0, 0.0, 0.0),
    (0.1, 0.0460, 0.046, 0.050, 0.0, -0.1, 0.25, 0.0, 0.0, 0.0),
    (0.1, 0.0460, 0.023, 0.050, -0.08, -0.605, 0.0, 0.0, 0.0, 0.0),
    (0.1, 0.0230, 0.023, 0.020, 0.0, -0.606, 0.0, 0.0, 0.0, 0.0),
    (0.1, 0.0230, 0.046, 0.020, 0.06, -0.605, 0.0, 0.0, 0.0, 0.0),
)


def _axis(n: int) -> np.ndarray:
    if n == 1:
        return np.zeros(1)
    return (np.arange(n) - (n - 1) / 2) / ((n - 1) / 2)


def _size(n, name) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    return int(n)


def shepp_logan_2d(n: int) -> np.ndarray:
    """Toft's modified Shepp-Logan phantom on an ``n x n`` grid.

    Parameters
    ----------
    n : int
        Pixels per side; the grid spans ``[-1, 1]`` (pixel centres) along both axes.

    Returns
    -------
    np.ndarray
        float32 ``(n, n)``, ``img[i, j]`` the value at ``(x_i, y_j)`` (``x`` along axis 0), in
        ``[0, 1]``: 1.0 skull, 0.2 brain, 0.0 ventricles, 0.3 / 0.4 small ellipses.
    """
    n = _size(n, "n")
    x = _axis(n)[:, None]
    y = _axis(n)[None, :]
    img = np.zeros((n, n))
    for amp, a, b, x0, y0, phi in SHEPP_LOGAN_2D_ELLIPSES:
        c, s = np.cos(np.deg2rad(phi)), np.sin(np.deg2rad(phi))
        dx, dy = x - x0, y - y0
        inside = ((dx * c + dy * s) / a) ** 2 + ((dy * c - dx * s) / b) ** 2 <= 1.0
        img += amp * inside
    return np.clip(np.round(img, 12), 0.0, None).astype(np.float32)


def shepp_logan_3d(shape) -> np.ndarray:
    """Modified 3-D Shepp-Logan phantom (Kak & Slaney's ellipsoids with Toft's intensities, as in
    Schabel's ``phantom3d``).

    Parameters
    ----------
    shape : int or (nx, ny, nz)
        Grid shape (an int means a cube); each axis spans ``[-1, 1]`` (voxel centres), so a
        non-cubic shape stretches the head anisotropically.

    Returns
    -------
    np.ndarray
        float32 ``shape``, ``vol[i, j, k]`` the value at ``(x_i, y_j, z_k)``, in ``[0, 1]``. Each
        ellipsoid ``(A, a, b, c, x0, y0, z0, phi, theta, psi)`` contains the points ``p`` with
        ``R p - (x0, y0, z0)`` inside the axis-aligned ellipsoid of semi-axes ``(a, b, c)``,
        ``R`` Schabel's z-x-z Euler rotation. For odd ``nz`` the slice ``z = 0`` shows the same
        skull and brain outline as :func:`shepp_logan_2d`.
    """
    if np.ndim(shape) == 0:
        shape = (shape,) * 3
    if len(shape) != 3:
        raise ValueError(f"shape must be an int or 3 integers, got {shape!r}")
    shape = tuple(_size(n, "shape") for n in shape)
    x = _axis(shape[0])[:, None, None]
    y = _axis(shape[1])[None, :, None]
    z = _axis(shape[2])[None, None, :]
    vol = np.zeros(shape)
    for amp, a, b, c, x0, y0, z0, phi, theta, psi in SHEPP_LOGAN_3D_ELLIPSOIDS:
        cf, sf = np.cos(np.deg2rad(phi)), np.sin(np.deg2rad(phi))
        ct, st = np.cos(np.deg2rad(theta)), np.sin(np.deg2rad(theta))
        cp, sp = np.cos(np.deg2rad(psi)), np.sin(np.deg2rad(psi))
        rot = np.array(
            [
                [cp * cf - ct * sf * sp, cp * sf + ct * cf * sp, sp * st],
                [-sp * cf - ct * sf * cp, -sp * sf + ct * cf * cp, cp * st],
                [st * sf, -st * cf, ct],
            ]
        )
        r = 0.0
        for row, centre, semi in zip(rot, (x0, y0, z0), (a, b, c)):
            r = r + ((row[0] * x + row[1] * y + row[2] * z - centre) / semi) ** 2
        vol += amp * (r <= 1.0)
    return np.clip(np.round(vol, 12), 0.0, None).astype(np.float32)
