"""SPECT acquisition geometry: image grid, views, orbit and collimator response.

Conventions (written once here and in the README; every module uses them)
-------------------------------------------------------------------------
- Image ``x``: shape ``(nx, ny, nz)``, index ``x[i, j, k]``; voxel size ``(dx, dy, dz)`` in mm,
  ``dx == dy``, ``nx == ny``. ``z`` (axis 2) is the axis of rotation. The rotation centre is
  the grid centre ``((nx - 1)/2, (ny - 1)/2)`` (between voxels for even sizes).
- Attenuation map ``mumap``: same grid as the image, linear attenuation coefficients in 1/mm
  (``per_cm_to_per_mm`` converts maps in 1/cm).
- Projections ``views``: shape ``(nx, nz, nview)``: detector bin ``i`` (along the detector),
  axial row ``k`` (same as the image's ``k``), view ``l``.
- View ``l`` at angle ``theta_l`` (radians, default ``2*pi*l/nview``) sees the image rotated
  by ``theta_l``: ``r(q) = x(c + R(-theta_l) (q - c))`` per z-slice; in the rotated frame the
  detector is on the low-``j`` side (``j = 0`` is the plane nearest the detector) and bin ``i``
  runs along ``+i``. In the unrotated image frame, view ``l``'s detector lies in direction
  ``(-sin theta_l, -cos theta_l)`` in (i, j) index coordinates and its bins run along
  ``(cos theta_l, -sin theta_l)``: at ``theta = 0`` the camera faces the ``j = 0`` side, at
  ``theta = pi/2`` the ``i = 0`` side. With ``i`` to the right and ``j`` up, the camera
  turns clockwise as ``theta`` grows. These match SPECTrecon.jl.
- ``radii[l]``: distance in mm from the rotation axis to the detector face at view ``l``
  (non-circular, body-contouring orbits: one radius per view).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._psf import AbstractPSF, ExplicitPSF, _is_concrete


def per_cm_to_per_mm(mumap_per_cm):
    """Convert attenuation coefficients from 1/cm to the 1/mm jaxspect uses (divide by 10)."""
    return jnp.asarray(mumap_per_cm) / 10


def _check_positive_int_tuple(name, value, length):
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of {length} integers, got {value!r}") from None
    if len(value) != length or not all(isinstance(v, (int, np.integer)) for v in value):
        raise ValueError(f"{name} must be a tuple of {length} integers, got {value!r}")
    if any(v <= 0 for v in value):
        raise ValueError(f"{name} entries must be positive, got {value!r}")
    return tuple(int(v) for v in value)


def _check_vector(name, value, nview, dtype):
    """Broadcast a scalar or (nview,) array; reject NaN/Inf at trace time when concrete."""
    arr = jnp.asarray(value, dtype=dtype)
    if arr.ndim == 0:
        arr = jnp.broadcast_to(arr, (nview,))
    if arr.shape != (nview,):
        raise ValueError(f"{name} must be a scalar or have shape (nview,) = ({nview},), got {arr.shape}")
    if _is_concrete(value) and not np.all(np.isfinite(np.asarray(arr))):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


class SPECTGeometry(eqx.Module):
    """Everything about a SPECT acquisition except the activity and attenuation values.

    Arguments:
        image_shape: ``(nx, ny, nz)`` voxels, ``nx == ny``.
        voxel_size: ``(dx, dy, dz)`` in mm, ``dx == dy``.
        psf: the collimator response, a :class:`GaussianPSF` or :class:`ExplicitPSF`
            (``ExplicitPSF(array)`` of shape ``(px, pz, ny, nview)``; a bare array is accepted
            and wrapped).
        nview: number of views; with ``angles=None`` the views are ``2*pi*l/nview``.
        angles: view angles in radians, shape ``(nview,)`` (any values; see the module
            docstring for their direction).
        radii: orbit radius per view in mm (rotation axis to detector face), scalar or
            ``(nview,)``. Required by :class:`GaussianPSF`; optional with an explicit PSF.

    See the module docstring for the axis and rotation conventions.
    """

    image_shape: tuple[int, int, int] = eqx.field(static=True)
    voxel_size: tuple[float, float, float] = eqx.field(static=True)
    angles: Float[Array, " nview"]
    radii: Float[Array, " nview"] | None
    psf: AbstractPSF

    def __init__(self, image_shape, voxel_size, psf, *, nview=None, angles=None, radii=None):
        image_shape = _check_positive_int_tuple("image_shape", image_shape, 3)
        nx, ny, _ = image_shape
        if nx != ny:
            raise ValueError(f"image_shape must have nx == ny (square slices), got {image_shape}")
        try:
            voxel_size = tuple(float(v) for v in voxel_size)
        except (TypeError, ValueError):
            raise TypeError(f"voxel_size must be 3 numbers (mm), got {voxel_size!r}") from None
        if len(voxel_size) != 3:
            raise ValueError(f"voxel_size must be (dx, dy, dz) in mm, got {voxel_size!r}")
        if not all(np.isfinite(v) and v > 0 for v in voxel_size):
            raise ValueError(f"voxel_size entries must be finite and positive (mm), got {voxel_size!r}")
        if not np.isclose(voxel_size[0], voxel_size[1], rtol=1e-6, atol=0):
            raise ValueError(f"voxel_size must have dx == dy, got {voxel_size!r}")

        if angles is None:
            if nview is None:
                raise ValueError("give nview= (equally spaced views) or angles= (radians)")
            if int(nview) != nview or nview <= 0:
                raise ValueError(f"nview must be a positive integer, got {nview!r}")
            nview = int(nview)
            angles = 2 * np.pi * np.arange(nview) / nview
        else:
            if jnp.ndim(angles) != 1:
                raise ValueError(f"angles must have shape (nview,), got shape {jnp.shape(angles)}")
            if nview is not None and nview != jnp.shape(angles)[0]:
                raise ValueError(f"nview={nview} does not match angles of length {jnp.shape(angles)[0]}")
            nview = jnp.shape(angles)[0]
            if nview == 0:
                raise ValueError("angles must not be empty")
        dtype = jnp.result_type(float)
        angles = _check_vector("angles", angles, nview, dtype)
        if radii is not None:
            radii_in = radii
            radii = _check_vector("radii", radii, nview, dtype)
            if _is_concrete(radii_in) and np.any(np.asarray(radii) <= 0):
                raise ValueError(f"radii must be positive (mm), got minimum {float(np.min(radii))}")

        if not isinstance(psf, AbstractPSF):
            if isinstance(psf, (np.ndarray, jax.Array)):
                psf = ExplicitPSF(psf)
            else:
                raise TypeError(f"psf must be a GaussianPSF, an ExplicitPSF or an array, got {type(psf)}")
        self.image_shape = image_shape
        self.voxel_size = voxel_size
        self.angles = angles
        self.radii = radii
        self.psf = psf._check(image_shape, voxel_size, nview, radii)

    @property
    def nview(self) -> int:
        return self.angles.shape[0]

    @property
    def views_shape(self) -> tuple[int, int, int]:
        """Shape of the projections: ``(nx, nz, nview)``."""
        nx, _, nz = self.image_shape
        return (nx, nz, self.nview)

    def view_subset(self, indices) -> "SPECTGeometry":
        """The same acquisition restricted to the views ``indices`` (1-D integers, e.g. one
        ordered subset), keeping their angles, radii and PSFs."""
        indices = jnp.asarray(indices)
        if indices.ndim != 1 or not jnp.issubdtype(indices.dtype, jnp.integer):
            raise ValueError(f"indices must be a 1-D integer array, got {indices.dtype} of shape {indices.shape}")
        radii = None if self.radii is None else self.radii[indices]
        return eqx.tree_at(
            lambda g: (g.angles, g.radii, g.psf),
            self,
            (self.angles[indices], radii, self.psf.view_subset(indices)),
            is_leaf=lambda x: x is None,
        )

    def plane_distances(self) -> Float[Array, "nview ny"]:
        """Distance (mm) from view ``l``'s detector face to depth plane ``j``'s centre."""
        if self.radii is None:
            raise ValueError("this geometry has no orbit radii (radii=None)")
        ny = self.image_shape[1]
        dy = self.voxel_size[1]
        offsets = (jnp.arange(ny, dtype=self.radii.dtype) - (ny - 1) / 2) * dy
        return self.radii[:, None] + offsets[None, :]

    def detector_directions(self) -> Float[Array, "nview 2"]:
        """Unit vector from the rotation axis toward view ``l``'s detector, in (i, j) index axes."""
        return jnp.stack([-jnp.sin(self.angles), -jnp.cos(self.angles)], axis=-1)

    def object_extent(self, volume, threshold: float = 0.0) -> Float[Array, " nview"]:
        """How far (mm) the support ``volume > threshold`` reaches from the axis toward each
        view's detector: ``max over support voxels of (p - c) . n_l``, plus half a voxel."""
        nx, ny, _ = self.image_shape
        dx = self.voxel_size[0]
        support = jnp.any(jnp.asarray(volume) > threshold, axis=2)  # (nx, ny)
        c = (nx - 1) / 2
        pi = (jnp.arange(nx) - c)[:, None] * dx
        pj = (jnp.arange(ny) - c)[None, :] * dx
        n = self.detector_directions()
        reach = n[:, 0, None, None] * pi + n[:, 1, None, None] * pj  # (nview, nx, ny)
        reach = jnp.where(support[None], reach, -jnp.inf)
        return jnp.max(reach, axis=(1, 2)) + dx / 2

    def check_orbit(self, volume, threshold: float = 0.0, *, name: str = "volume"):
        """Raise if a detector face cuts into the support of ``volume`` (e.g. the body outline
        ``mumap > 0`` or an activity image). Checks per view, so elliptical body-contouring
        orbits that pass inside the object's bounding circle but outside the body are fine.

        Raises ``ValueError`` at trace time when ``volume`` is concrete; under ``jit`` the
        check is an ``eqx.error_if`` on the returned ``volume`` (use the returned value).
        """
        if self.radii is None:
            return volume
        extent = self.object_extent(volume, threshold)
        # Under jit even concrete inputs give a traced extent: then the check is an error_if.
        if _is_concrete(extent) and _is_concrete(self.radii):
            bad = np.nonzero(np.asarray(self.radii) < np.asarray(extent))[0]
            if bad.size:
                l = int(bad[0])
                raise ValueError(
                    f"radii[{l}] = {float(self.radii[l]):.4g} mm puts the detector inside the "
                    f"object: {name} reaches {float(extent[l]):.4g} mm from the rotation axis "
                    f"toward view {l}'s detector ({bad.size} view(s) affected)"
                )
            return volume
        return eqx.error_if(
            volume,
            jnp.any(self.radii < extent),
            f"radii: a detector face is inside the object ({name} reaches past the orbit)",
        )
