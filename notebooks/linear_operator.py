# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # The projector as a JAX linear operator: lineax, optimistix, Hessian-vector products
#
# jaxspect's projector is linear in the image with a hand-written exact transpose, and every JAX
# transformation knows it (`jax.jvp`, `jax.linear_transpose`, `vmap`, `grad`, and their
# compositions). So it drops into the JAX solver libraries unchanged:
#
# 1. least squares by conjugate gradients on the normal equations with **lineax**;
# 2. Gauss-Newton calibration of the collimator response (PSF `fwhm0` and `slope`) from a
#    point-source acquisition with **optimistix**, with Cramer-Rao error bars from `jax.hessian`;
# 3. an uncertainty estimate for a region's mean activity from forward-over-reverse
#    Hessian-vector products and CG.
#
# Runs top to bottom as a script (`python notebooks/linear_operator.py`) or, with jupytext, as a
# notebook. `LINOP_SIZE` sets the in-plane grid (the test suite uses a small one).

# %%
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

import jaxspect as js
from jaxspect.phantoms import ellipsoid, elliptic_cylinder

n = int(os.environ.get("LINOP_SIZE", 32))
nz, nview, voxel = 4, 2 * n, 4.8
shape, vs = (n, n, nz), (voxel,) * 3

# %% [markdown]
# ## A small problem
# A water cylinder with a hot ellipsoid, a LEHR-like depth-dependent Gaussian PSF, and data with
# Gaussian noise of standard deviation `sigma` (so that least squares is the right model).

# %%
body = elliptic_cylinder(shape, vs, (0.4 * n * voxel, 0.35 * n * voxel))
hot = ellipsoid(shape, vs, (0.1 * n * voxel, -0.1 * n * voxel, 0.0), (0.12 * n * voxel,) * 2 + (20.0,))
truth = jnp.asarray(body + 4 * hot, jnp.float32)
mumap = jnp.asarray(0.0153 * body, jnp.float32)  # water at 140 keV, 1/mm
true_psf = (1.7, 0.072)  # FWHM(d) = sqrt(fwhm0^2 + (slope d)^2), mm
geometry = js.SPECTGeometry(shape, vs, js.GaussianPSF(*true_psf), nview=nview, radii=0.6 * n * voxel + 20)
A = js.SPECTProjector(geometry, mumap)
sigma = 0.02 * float(jnp.max(A(truth)))
y = A(truth) + sigma * jax.random.normal(jax.random.key(0), A.out_shape)
print(f"{n}x{n}x{nz} voxels, {nview} views, noise sigma = {sigma:.3g}")

# %% [markdown]
# ## 1. Least squares with lineax
# `A.as_linear_operator()` is a `lineax.FunctionLinearOperator`; its transpose is the exact
# back projector (through `jax.linear_transpose`). CG on the normal equations, stopped early
# (early stopping regularises the noisy problem). `jit`, `vmap` over right-hand sides and `grad`
# through the solve work as for any lineax operator.

# %%
op = A.as_linear_operator()
cgls = lx.Normal(lx.CG(rtol=1e-6, atol=1e-6, max_steps=12))


@eqx.filter_jit
def least_squares(y):
    return lx.linear_solve(op, y, cgls, throw=False).value  # throw=False: early stopping is intended


x_ls = least_squares(y)
nrmse = lambda x: float(jnp.linalg.norm(x - truth) / jnp.linalg.norm(truth))
print(f"CG least squares, 12 iterations: NRMSE {nrmse(x_ls):.3f}, "
      f"data residual {float(jnp.linalg.norm(A(x_ls) - y) / jnp.linalg.norm(y)):.3g}")

# %% [markdown]
# ## 2. PSF calibration with optimistix
# Two point sources at known positions, acquired without attenuation with Poisson noise. Fit
# `fwhm0` and `slope` of the Gaussian model by Gauss-Newton on the Poisson-weighted residuals,
# differentiating the projector in the geometry (forward mode: optimistix builds Jacobian-vector
# products with `jax.jvp`). The Cramer-Rao bound comes from the Fisher information
# `J' diag(1 / ybar) J`, with the Jacobian `J` of the mean counts from `jax.jacfwd`.

# %%
c = (n - 1) / 2
sources = jnp.zeros(shape).at[int(c) + n // 4, int(c), 1].set(1.0).at[int(c) - n // 5, int(c) + n // 4, 2].set(0.6)
counts_per_source = 2e5


def point_views(params):
    g = eqx.tree_at(lambda g: (g.psf.fwhm0, g.psf.slope), geometry, (params[0], params[1]))
    return counts_per_source * js.forward_project(sources, None, g)


counts = jax.random.poisson(jax.random.key(1), point_views(jnp.array(true_psf))).astype(jnp.float32)
weights = 1 / jnp.sqrt(jnp.maximum(counts, 1.0))
fit = optx.least_squares(lambda p, _: weights * (point_views(p) - counts), optx.GaussNewton(rtol=1e-4, atol=1e-4),
                         jnp.array([4.0, 0.04]), max_steps=50)
fitted_psf = np.asarray(fit.value)
jac = np.asarray(jax.jacfwd(point_views)(fit.value), np.float64).reshape(-1, 2)  # (bins, 2)
ybar = np.asarray(point_views(fit.value), np.float64).ravel()
seen = ybar > 1e-6 * ybar.max()
fisher = jac[seen].T @ (jac[seen] / ybar[seen, None])
psf_std = np.sqrt(np.diag(np.linalg.inv(fisher)))
print(f"fwhm0: true {true_psf[0]:.3f}, fitted {fitted_psf[0]:.3f} +- {psf_std[0]:.3f} mm")
print(f"slope: true {true_psf[1]:.4f}, fitted {fitted_psf[1]:.4f} +- {psf_std[1]:.4f}")

# %% [markdown]
# ## 3. Uncertainty of a region's mean from Hessian-vector products
# With Gaussian noise and a Gaussian prior of precision `lam` on the image, the negative log
# posterior `phi(x) = |A x - y|^2 / (2 sigma^2) + lam |x|^2 / 2` is quadratic, its Hessian `H` is
# the posterior precision, and the variance of the region's mean `c'x` is `c' H^-1 c`. `H` is
# never formed: CG only needs `H v`, a forward-over-reverse Hessian-vector product through the
# projector (`jax.jvp` of `jax.grad`), wrapped as a lineax operator.

# %%
lam = 0.05 / sigma**2


def phi(x):
    return 0.5 * jnp.sum((A(x) - y) ** 2) / sigma**2 + 0.5 * lam * jnp.sum(x**2)


def hvp(v):
    return jax.jvp(jax.grad(phi), (x_ls,), (v,))[1]  # exact for any linearisation point


hessian = lx.FunctionLinearOperator(hvp, jax.ShapeDtypeStruct(shape, jnp.float32), lx.positive_semidefinite_tag)


@eqx.filter_jit
def solve(b):  # lineax's CG tolerance is per element: atol relative to b's scale
    cg = lx.CG(rtol=1e-5, atol=1e-5 * jnp.max(jnp.abs(b)), max_steps=1000)
    return lx.linear_solve(hessian, b, cg).value


roi = jnp.asarray(hot > 0.5, jnp.float32)
roi = roi / jnp.sum(roi)  # c: the mean over the hot region
x_map = solve(A.T(y) / sigma**2)  # the posterior mean: H x = A'y / sigma^2
roi_std = float(jnp.sqrt(jnp.vdot(roi, solve(roi))))
print(f"hot region mean: truth {float(jnp.vdot(roi, truth)):.3f}, posterior mean "
      f"{float(jnp.vdot(roi, x_map)):.3f} +- {roi_std:.3f}")
