"""SPECTGeometry validation, conventions and orbit checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxspect as js
from jaxspect.phantoms import elliptic_cylinder

PSF = js.GaussianPSF(2.0, 0.03)


def test_defaults_and_derived_quantities():
    g = js.SPECTGeometry((16, 16, 4), (4.0, 4.0, 2.0), PSF, nview=8, radii=100.0)
    np.testing.assert_allclose(g.angles, 2 * np.pi * np.arange(8) / 8, rtol=1e-6)
    assert g.nview == 8 and g.views_shape == (16, 4, 8)
    assert g.radii.shape == (8,)
    np.testing.assert_allclose(g.detector_directions()[0], [0.0, -1.0], atol=1e-7)  # faces j = 0
    np.testing.assert_allclose(g.detector_directions()[2], [-1.0, 0.0], atol=1e-7)  # faces i = 0
    assert float(js.per_cm_to_per_mm(jnp.asarray(0.15))) == pytest.approx(0.015)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(image_shape=(16, 12, 4)), ValueError, "nx == ny"),
        (dict(image_shape=(16, 16)), ValueError, "3 integers"),
        (dict(image_shape=(16, 16, 0)), ValueError, "positive"),
        (dict(image_shape=(16.0, 16, 4)), ValueError, "integers"),
        (dict(voxel_size=(4.0, 4.0, 0.0)), ValueError, "positive"),
        (dict(voxel_size=(4.0, 4.0, -1.0)), ValueError, "positive"),
        (dict(voxel_size=(4.0, 4.0, np.nan)), ValueError, "finite"),
        (dict(voxel_size=(4.0, 4.5, 4.0)), ValueError, "dx == dy"),
        (dict(voxel_size=(4.0, 4.0)), ValueError, r"\(dx, dy, dz\)"),
        (dict(nview=None), ValueError, "nview= .* or angles="),
        (dict(nview=0), ValueError, "nview must be a positive integer"),
        (dict(nview=None, angles=np.zeros((2, 3))), ValueError, r"angles must have shape \(nview,\)"),
        (dict(nview=3, angles=np.zeros(4)), ValueError, "does not match"),
        (dict(nview=None, angles=np.array([0.0, np.nan])), ValueError, "angles contains NaN"),
        (dict(radii=np.array([100.0, np.inf, 100.0, 100.0])), ValueError, "radii contains NaN"),
        (dict(radii=np.array([100.0, 100.0])), ValueError, r"radii must be a scalar or have shape"),
        (dict(radii=-5.0), ValueError, "radii must be positive"),
        (dict(psf="gauss"), TypeError, "psf must be"),
    ],
)
def test_bad_geometry_raises(kwargs, exc, match):
    args = dict(image_shape=(16, 16, 4), voxel_size=(4.0, 4.0, 4.0), psf=PSF, nview=4, radii=100.0)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        js.SPECTGeometry(
            args["image_shape"], args["voxel_size"], args["psf"],
            nview=args["nview"], angles=args.get("angles"), radii=args["radii"],
        )


def test_orbit_check_is_per_view_for_body_contouring_orbits():
    shape, vs = (32, 32, 2), (4.0, 4.0, 4.0)
    body = elliptic_cylinder(shape, vs, (50.0, 30.0)) * 0.015  # wide in i (x), thin in j (y)
    angles = np.array([0.0, np.pi / 2])
    # View 0 faces the j side (body reaches 30 mm + half voxel), view 1 the i side (50 mm).
    ok = js.SPECTGeometry(shape, vs, PSF, angles=angles, radii=np.array([40.0, 60.0]))
    assert ok.check_orbit(body, name="mumap") is body  # radius 40 < bounding circle 50: fine
    np.testing.assert_allclose(ok.object_extent(body), [30.0 + 2.0, 50.0 + 2.0], atol=4.0)
    bad = js.SPECTGeometry(shape, vs, PSF, angles=angles, radii=np.array([40.0, 45.0]))
    with pytest.raises(ValueError, match=r"radii\[1\] = 45 mm .* inside the object"):
        bad.check_orbit(body, name="mumap")
    with pytest.raises(ValueError, match="inside the object"):
        js.forward_project(jnp.zeros(shape, jnp.float32), jnp.asarray(body, jnp.float32), bad)
    # under jit the same check is a runtime error
    f = jax.jit(lambda mu: js.forward_project(jnp.zeros(shape, jnp.float32), mu, bad))
    with pytest.raises(Exception, match="inside the object"):
        jax.block_until_ready(f(jnp.asarray(body, jnp.float32)))


def test_geometry_is_a_pytree_that_jits():
    g = js.SPECTGeometry((8, 8, 2), (4.0, 4.0, 4.0), PSF, nview=4, radii=60.0)
    leaves = jax.tree_util.tree_leaves(g)
    assert all(isinstance(x, jax.Array) for x in leaves)
    out = jax.jit(lambda g: g.plane_distances())(g)
    np.testing.assert_allclose(out[:, 0], 60.0 - 3.5 * 4.0)
