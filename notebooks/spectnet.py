# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # SPECTnet: two-stage training of a projection-to-image network
#
# Shao, Rowe & Du (2021): random 2-D brain phantoms, simulated LEHR SPECT data, an autoencoder
# whose 256-vector codes become the labels of a projection network, the two joined and
# fine-tuned, compared with OSEM. Runs top to bottom as a script
# (`python notebooks/spectnet.py`) or, with jupytext, as a notebook.
#
# Environment variables: `SPECTNET_SIZE` (image pixels: 128 = the paper's architecture and
# 2-mm pixels, 64, or 32 for a smoke run), `SPECTNET_TRAIN` (training phantoms),
# `SPECTNET_EPOCHS` (epochs per stage), `SPECTNET_OSEM_ITERATIONS`.

# %%
import os
import time

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxspect.spectnet import (
    pad_sinogram,
    reconstruct,
    CLINICAL_COUNTS_PER_SLICE,
    PhantomSet,
    TrainingConfig,
    spectnet_geometry,
    split_keys,
    train_two_stage,
)

n = int(os.environ.get("SPECTNET_SIZE", 64))
n_train = int(os.environ.get("SPECTNET_TRAIN", 256))
epochs = int(os.environ.get("SPECTNET_EPOCHS", 4))
osem_iterations = int(os.environ.get("SPECTNET_OSEM_ITERATIONS", 8))
pixel = 256.0 / n  # a 256-mm field of view (2-mm pixels at 128)
nview = {128: 120, 64: 60, 32: 30}[n]
geometry = spectnet_geometry(image_size=n, pixel_size=pixel, nview=nview)
print(f"{n} x {n} pixels of {pixel:g} mm, {nview} views, LEHR PSF fwhm0 {float(geometry.psf.fwhm0):.2f} mm, "
      f"slope {float(geometry.psf.slope):.4f}")

# %% [markdown]
# ## Phantoms: an ellipse of background 1, hot regions of 3..9, a 2-4 mm skull

# %%
k_train, k_val, k_test = split_keys(jax.random.key(0))
train = PhantomSet(k_train, n_train, geometry, projection_batch=16)
val = PhantomSet(k_val, 16, geometry, projection_batch=16)
test = PhantomSet(k_test, 4, geometry, projection_batch=16)
shown = train.batch(np.arange(4))
phantom = train.phantoms(np.arange(4))
uptakes = np.asarray(phantom.uptake)
hot_values = [np.unique(np.asarray(a)[np.asarray(m)]) for a, m in zip(phantom.activity, phantom.high_uptake)]
print("uptakes", np.round(uptakes, 2), "skull mm", np.round(np.asarray(phantom.skull_thickness), 2))

fig, axes = plt.subplots(3, 4, figsize=(10, 7.5))
for i in range(4):
    axes[0, i].imshow(np.asarray(shown.activity[i]).T, origin="lower", cmap="hot", vmin=0, vmax=9)
    axes[1, i].imshow(np.asarray(shown.mumap[i]).T, origin="lower", cmap="gray")
    axes[2, i].imshow(np.asarray(shown.sinogram[i]), cmap="gray", aspect="auto")
axes[0, 0].set_ylabel("activity")
axes[1, 0].set_ylabel("mumap (1/mm)")
axes[2, 0].set_ylabel("padded sinogram\n(rows = views)")
plt.tight_layout()
plt.show()

# %% [markdown]
# The sinogram is padded to a square by repeating its first rows after the last (120 + 8 = 128
# in the paper): the rows after the last view continue the circle.

# %%
pad_rows = n - nview
padding_matches = bool(np.array_equal(shown.sinogram[:, nview:], shown.sinogram[:, :pad_rows]))
print("padded rows equal the first rows:", padding_matches)

# %% [markdown]
# ## Two-stage training: autoencoder, projection network on its codes, fine-tuning

# %%
config = TrainingConfig(batch_size=16, learning_rate=1e-3, epochs_autoencoder=epochs,
                        epochs_projection=epochs, epochs_fine_tune=epochs)
start = time.perf_counter()
train.fill_cache()
val.fill_cache()
result = train_two_stage(jax.random.key(1), train, val, config=config, decoder_channels=8, log=True)
print(f"training took {time.perf_counter() - start:.0f} s")
ae_curve = result.autoencoder.val_metric
ft_curve = result.fine_tune.val_metric

fig, axes = plt.subplots(1, 3, figsize=(11, 3))
for ax, stage in zip(axes, (result.autoencoder, result.projection, result.fine_tune)):
    ax.plot(np.arange(1, len(stage.val_metric) + 1), stage.val_metric, "o-")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation " + stage.metric_name)
axes[0].set_title("autoencoder")
axes[1].set_title("projection network")
axes[2].set_title("fine-tuned SPECTnet")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Reconstruct held-out phantoms: SPECTnet against OSEM (12 subsets, best iteration)
#
# The OSEM iterate kept here is each case's lowest-MSE one, picked *with the truth*: an oracle
# upper bound on OSEM, for illustration only; and these data come from the reconstruction's own
# model. `benchmarks/spectnet.py` does the fair comparison: data simulated on a 2x finer grid
# (`PhantomSet(..., oversample=2)`) with Poisson noise, and the OSEM iteration chosen on the
# validation phantoms.

# %%
import equinox as eqx  # noqa: E402

import jaxspect as js  # noqa: E402

batch = test.batch(np.arange(4))
sinograms = test.sinograms(np.arange(4))
net_images = reconstruct(result.model, sinograms, batch.mumap)


@eqx.filter_jit
def osem_step(mumaps, sinograms, images):
    def one(mu, s, x):
        projector = js.SPECTProjector(geometry, mu[..., None])
        return js.osem(projector, s.T[:, None, :], x[..., None], n_iter=1, n_subsets=12 if nview % 12 == 0 else 6).image[..., 0]

    return jax.vmap(one)(mumaps, sinograms, images)


x = jnp.ones_like(batch.activity)
best, best_mse = x, np.full(4, np.inf)
for k in range(osem_iterations):
    x = osem_step(batch.mumap, sinograms, x)
    mse = np.asarray(jnp.mean((x - batch.activity) ** 2, axis=(1, 2)))
    best = jnp.where(jnp.asarray(mse < best_mse)[:, None, None], x, best)
    best_mse = np.minimum(mse, best_mse)
net_mse = np.asarray(jnp.mean((net_images - batch.activity) ** 2, axis=(1, 2)))


def region_error(images, mask):
    err = np.abs(np.asarray(images) - np.asarray(batch.activity))
    return np.array([e[m].mean() for e, m in zip(err, np.asarray(mask))])


print(f"{'case':<6}{'uptake':>8}{'SPECTnet MSE':>14}{'OSEM MSE':>10}{'SPECTnet |err| hot':>20}{'OSEM |err| hot':>16}")
hot_net, hot_osem = region_error(net_images, batch.high_uptake), region_error(best, batch.high_uptake)
for i in range(4):
    u = float(np.asarray(batch.activity[i])[np.asarray(batch.high_uptake[i])].mean())
    print(f"{i:<6}{u:>8.2f}{net_mse[i]:>14.3f}{best_mse[i]:>10.3f}{hot_net[i]:>20.3f}{hot_osem[i]:>16.3f}")

fig, axes = plt.subplots(3, 4, figsize=(10, 7.5))
for i in range(4):
    for row, img in enumerate((batch.activity, best, net_images)):
        axes[row, i].imshow(np.asarray(img[i]).T, origin="lower", cmap="hot", vmin=0, vmax=9)
for row, name in enumerate(("truth", "OSEM (oracle iteration)", "SPECTnet")):
    axes[row, 0].set_ylabel(name)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Noisy data (clinical count level) through the same networks

# %%
noisy = test.with_count_level(CLINICAL_COUNTS_PER_SLICE)
noisy_sinograms = noisy.sinograms(np.arange(4))
noisy_images = reconstruct(result.model, noisy_sinograms, batch.mumap)
noisy_mse = np.asarray(jnp.mean((noisy_images - batch.activity) ** 2, axis=(1, 2)))
print("SPECTnet MSE, noise-free vs noisy sinograms:", np.round(net_mse, 3), np.round(noisy_mse, 3))
padded_noisy = pad_sinogram(noisy_sinograms, n)
