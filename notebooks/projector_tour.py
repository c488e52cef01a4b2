# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # A tour of the jaxspect projector
#
# Geometry and conventions, the collimator response, a projection, the exact adjoint, and a
# gradient. Runs top to bottom as a script (`python notebooks/projector_tour.py`) or, with
# jupytext, as a notebook. `TOUR_SIZE` sets the grid (the test suite uses a small one).

# %%
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxspect as js
from jaxspect.phantoms import ellipsoid, elliptic_cylinder

n = int(os.environ.get("TOUR_SIZE", 48))
nz, voxel = n // 2, 4.8
shape, vs = (n, n, nz), (voxel,) * 3

# %% [markdown]
# ## Geometry: a body-contouring orbit
# An elliptical water body; the orbit keeps 10 mm between the body and each detector.

# %%
body = elliptic_cylinder(shape, vs, (0.4 * n * voxel, 0.28 * n * voxel))
mumap = jnp.asarray(0.0153 * body, jnp.float32)  # water at 140 keV, 1/mm
psf = js.GaussianPSF(1.7, 0.072)  # LEHR-like: ~7.4 mm FWHM at 100 mm
angles = 2 * np.pi * np.arange(64) / 64
probe = js.SPECTGeometry(shape, vs, psf, angles=angles, radii=n * voxel)
radii = np.asarray(probe.object_extent(body)) + 10.0
geometry = js.SPECTGeometry(shape, vs, psf, angles=angles, radii=radii)
print("orbit radius, mm: min %.0f  max %.0f" % (radii.min(), radii.max()))
print("detector direction of view 0 (i, j):", np.round(np.asarray(geometry.detector_directions()[0]), 3))

# %% [markdown]
# ## The collimator response grows with distance from the detector

# %%
fwhm = np.asarray(psf.fwhm(geometry))
print("FWHM (mm) at the nearest / farthest plane of view 0: %.2f / %.2f" % (fwhm[0, 0], fwhm[0, -1]))

# %% [markdown]
# ## Project an off-centre hot sphere

# %%
activity = jnp.asarray(body + 5 * ellipsoid(shape, vs, (30.0, -20.0, 0.0), (15.0,) * 3), jnp.float32)
A = js.SPECTProjector(geometry, mumap)
views = eqx.filter_jit(A)(activity)  # an Equinox module: filter_jit, or pass A as an argument
print("views", views.shape, "total counts %.0f" % float(views.sum()))

# %% [markdown]
# ## The back projector is the exact adjoint

# %%
rng = np.random.default_rng(0)
u = jnp.asarray(rng.random(shape), jnp.float32)
w = jnp.asarray(rng.random(views.shape), jnp.float32)
lhs, rhs = float(jnp.vdot(w, A(u))), float(jnp.vdot(A.T(w), u))
dot_error = abs(lhs - rhs) / abs(lhs)
print("<w, A u> = %.6e   <A' w, u> = %.6e   relative difference %.1e" % (lhs, rhs, dot_error))

# %% [markdown]
# ## Gradients: least squares in the activity, and in the attenuation map

# %%
loss = lambda x, mu: 0.5 * jnp.sum((js.forward_project(x, mu, geometry) - views) ** 2)
gx, gmu = jax.jit(jax.grad(loss, argnums=(0, 1)))(0.5 * activity, mumap)
print("|grad wrt activity| = %.3e, |grad wrt mumap| = %.3e" % (jnp.linalg.norm(gx), jnp.linalg.norm(gmu)))
