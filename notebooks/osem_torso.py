# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # OSEM on a torso phantom
#
# Simulate a Lu-177 SPECT study of an XCAT-like torso (liver lesions, body-contouring orbit,
# attenuation, collimator blur, 10 % scatter, Poisson noise), reconstruct it with OSEM, and
# look at the VOI figures, the convergence and the mid-slices. Runs top to bottom as a script
# (`python notebooks/osem_torso.py`) or, with jupytext, as a notebook. `OSEM_TORSO_SIZE` sets
# the in-plane grid (default 64 voxels of 614.4/64 = 9.6 mm; the test suite uses a small one).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxspect as js

n = int(os.environ.get("OSEM_TORSO_SIZE", 64))
nz, nview, voxel = max(n * 5 // 8, 4), max(n // 2, 8), 614.4 / n
shape, vs = (n, n, nz), (voxel,) * 3
n_iter, n_subsets = 8, 4

# %% [markdown]
# ## Phantom, orbit and projector
# The orbit keeps 10 mm between the body outline and the detector in every view.

# %%
phantom = js.phantoms.torso_phantom(jax.random.key(0), shape=shape, voxel_size=vs)
psf = js.GaussianPSF(2.5, 0.1)  # medium-energy collimator: ~10 mm FWHM at 100 mm
angles = 2 * np.pi * np.arange(nview) / nview
probe = js.SPECTGeometry(shape, vs, psf, angles=angles, radii=n * voxel)
radii = np.asarray(probe.object_extent(phantom.masks["body"])) + 10.0
geometry = js.SPECTGeometry(shape, vs, psf, angles=angles, radii=radii)
A = js.SPECTProjector(geometry, jnp.asarray(phantom.mumap))
truth = jnp.asarray(phantom.activity)
print(f"{n}x{n}x{nz} voxels of {voxel:.1f} mm, {nview} views, orbit {radii.min():.0f}-{radii.max():.0f} mm")

# %% [markdown]
# ## Simulated data: 2 million primary counts plus 10 % scatter

# %%
data = js.simulate(jax.random.key(1), truth, A, total_counts=2e6, scatter_fraction=0.1)
print(f"total counts {float(data.counts.sum()):.4g}")

# %% [markdown]
# ## OSEM, with the likelihood and the error of every iterate

# %%
result = js.osem(A, data.counts, jnp.ones(shape), n_iter=n_iter, n_subsets=n_subsets,
                 background=data.background, history=True, reference=truth * data.scale)
recon = np.asarray(result.image) / float(data.scale)  # back to the phantom's units
log_likelihood, nrmse = np.asarray(result.log_likelihood), np.asarray(result.nrmse)
print("log-likelihood per iteration:", np.round(log_likelihood, 0))
print("whole-image NRMSE %:", np.round(100 * nrmse, 1))

# %% [markdown]
# ## VOI table (both images normalised to 1 MBq in the field of view)

# %%
masks = {name: m for name, m in phantom.masks.items() if name != "body" and m.any()}  # coarse grids can miss the spine
table = js.metrics.voi_table(recon, phantom.activity, masks)
print(js.metrics.format_table(table))

# %% [markdown]
# ## Convergence

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot(log_likelihood, "o-")
ax1.set_xlabel("iteration")
ax1.set_ylabel("Poisson log-likelihood")
ax2.plot(100 * nrmse, "o-", color="C1")
ax2.set_xlabel("iteration")
ax2.set_ylabel("NRMSE %")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Mid-slices through the largest lesion: truth and OSEM

# %%
largest = int(np.argmax(phantom.lesion_volumes_ml)) + 1
ci, cj, ck = (int(round(c)) for c in np.argwhere(phantom.masks[f"lesion_{largest}"]).mean(axis=0))
cuts = {"transverse": lambda v: v[:, :, ck].T, "coronal": lambda v: v[:, cj, :].T, "sagittal": lambda v: v[ci, :, :].T}
vmax = float(max(phantom.activity.max(), recon.max()))
fig, axes = plt.subplots(2, 3, figsize=(11, 6))
for row, (label, volume) in enumerate((("truth", phantom.activity), ("OSEM", recon))):
    for col, (plane, cut) in enumerate(cuts.items()):
        axes[row, col].imshow(cut(volume), origin="lower", cmap="inferno", vmin=0, vmax=vmax)
        axes[row, col].set_title(f"{label}, {plane}")
        axes[row, col].axis("off")
plt.show()
