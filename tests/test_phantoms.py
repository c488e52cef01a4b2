"""Analytic phantom shapes."""

import numpy as np
import pytest

from jaxspect.phantoms import ellipsoid, elliptic_cylinder, voxel_centres


def test_voxel_centres_are_centred():
    x, y, z = voxel_centres((4, 4, 3), (2.0, 2.0, 5.0))
    np.testing.assert_allclose(x[:, 0, 0], [-3, -1, 1, 3])
    np.testing.assert_allclose(z[0, 0, :], [-5, 0, 5])


def test_ellipsoid_volume_matches_analytic():
    vs = (2.0, 2.0, 2.0)
    e = ellipsoid((40, 40, 40), vs, (3.0, -4.0, 1.0), (20.0, 14.0, 10.0), supersample=4)
    volume = e.sum() * np.prod(vs)
    assert volume == pytest.approx(4 / 3 * np.pi * 20 * 14 * 10, rel=0.01)
    assert e.min() == 0 and e.max() == 1


def test_elliptic_cylinder_extent_and_errors():
    c = elliptic_cylinder((21, 21, 5), (1.0, 1.0, 1.0), (10.0, 5.0), z_range_mm=(-1.0, 1.0))
    assert c[:, 10, 2].sum() == 21 and c[10, :, 2].sum() == 11
    assert c[:, :, 0].sum() == 0
    with pytest.raises(ValueError, match="semi_axes_mm"):
        ellipsoid((4, 4, 4), (1.0, 1.0, 1.0), (0, 0, 0), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="voxel_size"):
        elliptic_cylinder((4, 4, 4), (1.0, -1.0, 1.0), (1.0, 1.0))
