# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Training the unrolled CNN-regularised EM
#
# The paper's learned reconstruction (Algorithm 3): from an OSEM warm start, K = 3 outer
# iterations, each `u = g_k(x_k)` (a 657-parameter 3-D CNN) followed by one regularised EM step.
# jaxspect's unrolled EM is count-scale equivariant: the network sees `x / s` (`s` the
# activity-weighted mean activity) and `beta` is dimensionless (the prior's share of the update
# is `beta / (1 + beta)` in a typical voxel), so the same model works at any count level. The
# networks are trained end-to-end (exact gradients through the projector
# and its adjoint), with gradient truncation, and sequentially, on a few simulated torso
# patients, and compared with OSEM on a held-out patient. Runs top to bottom as a script
# (`python notebooks/unrolled_em.py`) or, with jupytext, as a notebook. `UNROLLED_SIZE` sets the
# in-plane grid and `UNROLLED_EPOCHS` the epochs (the test suite uses tiny values;
# `benchmarks/training_methods.py` is the full experiment).

# %%
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxspect as js
from jaxspect.nn import PaperCNN
from jaxspect.recon import EndToEnd, Sequential, Truncated, UnrolledEM, fit, reconstruct_batch, stack_projectors

n = int(os.environ.get("UNROLLED_SIZE", 32))
epochs = int(os.environ.get("UNROLLED_EPOCHS", 30))
nz, nview, voxel = max(n * 5 // 8, 4), max(n, 8), 614.4 / n
shape, vs = (n, n, nz), (voxel,) * 3

# %% [markdown]
# ## Patients: torso phantoms, their projectors and noisy data
# Each patient has its own anatomy, attenuation map and body-contouring orbit. The targets are
# the true activities in the data's units (`scale` maps activity to expected counts).

# %%
psf = js.GaussianPSF(2.5, 0.1)  # medium-energy collimator for Lu-177
angles = 2 * np.pi * np.arange(nview) / nview


def patient(seed):
    phantom = js.phantoms.torso_phantom(jax.random.key(seed), shape=shape, voxel_size=vs)
    probe = js.SPECTGeometry(shape, vs, psf, angles=angles, radii=n * voxel)
    radii = np.asarray(probe.object_extent(phantom.masks["body"])) + 10.0
    A = js.SPECTProjector(js.SPECTGeometry(shape, vs, psf, angles=angles, radii=radii), jnp.asarray(phantom.mumap))
    data = js.simulate(jax.random.key(100 + seed), jnp.asarray(phantom.activity), A, total_counts=1e6,
                       scatter_fraction=0.1)
    return phantom, A, data


def dataset(seeds):
    phantoms, projectors, sims = zip(*(patient(s) for s in seeds))
    A = stack_projectors(projectors)
    y = jnp.stack([d.counts for d in sims])
    r = jnp.stack([d.background for d in sims])
    x0 = js.recon.batch_osem(A, y, n_iter=16, n_subsets=4, background=r)  # the warm start
    target = jnp.stack([jnp.asarray(p.activity) * d.scale for p, d in zip(phantoms, sims)])
    return js.recon.TrainingData(A, y, r, x0, target), phantoms


train, _ = dataset([0, 1])
val, _ = dataset([2])
test, test_phantoms = dataset([3])
print(f"{n}x{n}x{nz} voxels of {voxel:.1f} mm, {nview} views; 2 training, 1 validation, 1 test patient")

# %% [markdown]
# ## Train the three ways from the same initial weights

# %%
init = UnrolledEM(PaperCNN, jax.random.key(0), n_outer=3, n_inner=1, beta=0.3)
methods = {"sequential": Sequential(), "truncated": Truncated(), "end-to-end": EndToEnd(checkpoint=True)}
fits = {name: fit(init, train, val, epochs=epochs, gradient=g, batch_size=1, key=jax.random.key(1))
        for name, g in methods.items()}
for name, f in fits.items():
    print(f"{name:11s} best validation loss {f.val_loss.min():.4g} (epoch {f.best_epoch + 1}), "
          f"{f.seconds_per_epoch:.2f} s/epoch")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, f in fits.items():
    ax.plot(f.val_loss, label=name)
ax.set_xlabel("epoch (sequential: 3 networks one after the other)")
ax.set_ylabel("validation loss (relative squared error)")
ax.set_yscale("log")
ax.legend()
plt.show()

# %% [markdown]
# ## Test patient: OSEM vs the learned reconstructions
# Both images normalised to 1 MBq in the field of view before comparison (the paper's eqs. 9-10).

# %%
images = {"OSEM": test.x0[0]}
images.update({name: reconstruct_batch(f.model, test)[0] for name, f in fits.items()})
truth = test.target[0]
masks = {k: m for k, m in test_phantoms[0].masks.items() if k != "body" and m.any()}
tables = {name: js.metrics.voi_table(img, truth, masks) for name, img in images.items()}
print(f"{'NRMSE %':12s}" + "".join(f"{name:>12s}" for name in tables))
for voi in list(masks) + ["image"]:
    print(f"{voi:12s}" + "".join(f"{tables[name][voi]['NRMSE %']:12.1f}" for name in tables))

# %%
k = int(np.argwhere(masks["lesion_1"]).mean(axis=0)[2])
fig, axes = plt.subplots(1, len(images) + 1, figsize=(3 * (len(images) + 1), 3))
vmax = float(truth.max())
for ax, (label, img) in zip(axes, [("truth", truth), *images.items()]):
    ax.imshow(np.asarray(img)[:, :, k].T, origin="lower", cmap="inferno", vmin=0, vmax=vmax)
    ax.set_title(label)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## Save and load the end-to-end model

# %%
path = Path(tempfile.mkdtemp()) / "unrolled_end_to_end.eqx"
js.recon.save_model(path, fits["end-to-end"].model)
loaded = js.recon.load_model(path, init)
reload_error = float(jnp.max(jnp.abs(reconstruct_batch(loaded, test)[0] - images["end-to-end"])))
print(f"saved to {path}; reloaded model reproduces the reconstruction (max difference {reload_error:.2g})")

# %% [markdown]
# ## The same model at another count level
# Ten times the acquisition time: counts, background and warm start scale by 10, and so does the
# reconstruction, exactly (up to float32 rounding), although the model was trained at one level.

# %%
model = fits["end-to-end"].model
x_once = reconstruct_batch(model, test)[0]
longer = js.recon.TrainingData(test.projectors, 10 * test.y, 10 * test.background, 10 * test.x0, 10 * test.target)
scale_error = float(jnp.max(jnp.abs(reconstruct_batch(model, longer)[0] - 10 * x_once)) / jnp.max(10 * x_once))
print(f"relative difference between model(10 y) and 10 model(y): {scale_error:.1e}")
