# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # Rotation-equivariant denoising with e3nn-jax steerable convolutions
#
# The SCNN papers' claim in miniature: a small rotation-equivariant network (steerable kernels
# built from e3nn-jax's spherical harmonics and Clebsch-Gordan coefficients, gate
# nonlinearity) against a plain ReLU CNN of the same size, both trained to denoise one
# orientation of a Poisson-noisy Shepp-Logan slice and tested on rotated copies.
# Runs top to bottom as a script (`python notebooks/equivariant_denoising.py`) or, with
# jupytext, as a notebook. `EQ_SIZE` (image size, default 64) and `EQ_STEPS` (training steps,
# default 300) set the cost; the test suite uses tiny values. `EQ_FIGURES=dir` saves the figures.

# %%
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

import jaxspect as js
from jaxspect.nn import SCNN2d, baseline_cnn, describe_parameters, small_cnn
from jaxspect.training import make_optimizer, train

n = int(os.environ.get("EQ_SIZE", "64"))
steps = int(os.environ.get("EQ_STEPS", "300"))
figures = os.environ.get("EQ_FIGURES")
pixel_mm = 220.0 / n  # a 22 cm field of view

# %% [markdown]
# ## The networks
# The SCNN: scalar image -> `8x0e+4x1o+2x2e` features (3x3 steerable kernels, gate) -> same ->
# 1x1 back to a scalar, plus the input. Its baselines: a 3-layer, 8-channel ReLU CNN of about
# the same size, and the papers' 5-layer, 64-channel CNN.

# %%
key = jax.random.key(0)
models = {"SCNN": SCNN2d(key, pixel_size=pixel_mm), "CNN": small_cnn(key)}
print(describe_parameters(models["SCNN"]))
print(describe_parameters(models["CNN"]).splitlines()[0])
print(describe_parameters(baseline_cnn(key), name="CNN 5x64").splitlines()[0])

# %% [markdown]
# ## Exact equivariance on the pixel grid
# A quarter turn of the input turns the SCNN's output by a quarter turn (to rounding); a plain
# CNN's output changes. (Non-residual parts, so that the identity does not hide anything.)

# %%
apply = eqx.filter_jit(lambda m, x: m(x))
probe = jax.random.normal(jax.random.key(1), (n, n))
equivariance_error = {}
bare = {"SCNN": SCNN2d(key, pixel_size=pixel_mm, residual=False), "CNN": small_cnn(key, residual=False)}
for name, m in bare.items():  # the same weights as `models`, without the skip connection
    y = apply(m, probe)
    equivariance_error[name] = float(jnp.max(jnp.abs(apply(m, jnp.rot90(probe)) - jnp.rot90(y))) / jnp.max(jnp.abs(y)))
    print(f"{name}: max |f(rot x) - rot f(x)| / max |f(x)| = {equivariance_error[name]:.1e}")

# %% [markdown]
# ## Training on one orientation
# Poisson noise at 20 counts for intensity 1; supervised (noisy -> clean) on the upright slice
# only, Adam, last layers started at zero (identity networks).

# %%
rng = np.random.default_rng(0)
truth = js.phantoms.shepp_logan_2d(n)
noisy = (rng.poisson(truth * 20.0) / 20.0).astype(np.float32)
lr = {"SCNN": 2e-2, "CNN": 1e-2}
trained, losses, seconds = {}, {}, {}
for name, model in models.items():
    last = (lambda m: m.convs[-1].weight) if name == "SCNN" else (lambda m: m.weights[-1])
    model = eqx.tree_at(last, model, jnp.zeros_like(last(model)))
    data = (jnp.asarray(noisy), jnp.asarray(truth))
    loss = lambda m, x, t: jnp.mean((m(x) - t) ** 2)
    start = time.perf_counter()
    result = train(model, loss, lambda key: [data], epochs=steps, optimizer=make_optimizer(lr[name], algorithm="adam"),
                   key=jax.random.key(1))  # one full-batch step per epoch
    seconds[name] = time.perf_counter() - start
    trained[name], losses[name] = result.last_model, result.history["train_loss"]
    history = losses[name]
    print(f"{name}: loss {history[0]:.2e} -> {history[-1]:.2e} in {steps} steps ({seconds[name]:.1f} s with compilation)")

# %% [markdown]
# ## Testing on rotated copies
# The clean slice is rotated (cubic spline), then noised afresh; MSE against the rotated truth.

# %%
angles = (0, 30, 45, 90)
test_mse = {name: [] for name in trained}
noisy_mse = []
for deg in angles:
    clean = np.clip(ndimage.rotate(truth, deg, reshape=False, order=3), 0, None).astype(np.float32)
    x = (rng.poisson(clean * 20.0) / 20.0).astype(np.float32)
    noisy_mse.append(float(np.mean((x - clean) ** 2)))
    for name, m in trained.items():
        test_mse[name].append(float(jnp.mean((apply(m, jnp.asarray(x)) - clean) ** 2)))
print("angle (deg)  " + "".join(f"{a:>10}" for a in angles))
print("noisy        " + "".join(f"{v:10.2e}" for v in noisy_mse))
for name, v in test_mse.items():
    print(f"{name:<13}" + "".join(f"{e:10.2e}" for e in v))

# %% [markdown]
# ## Figures

# %%
fig, ax = plt.subplots(1, 4, figsize=(16, 4))
ax[0].imshow(truth.T, cmap="gray", origin="lower"); ax[0].set_title("truth")
ax[1].imshow(noisy.T, cmap="gray", origin="lower"); ax[1].set_title("noisy (20 counts)")
for a, name in zip(ax[2:], trained):
    a.imshow(np.asarray(apply(trained[name], jnp.asarray(noisy))).T, cmap="gray", origin="lower")
    a.set_title(f"{name} ({steps} steps)")
fig2, (b1, b2) = plt.subplots(1, 2, figsize=(11, 4))
for name in trained:
    b1.semilogy(losses[name], label=name)
    b2.plot(angles, test_mse[name], "o-", label=name)
b2.plot(angles, noisy_mse, "k--", label="noisy input")
b1.set_xlabel("step"); b1.set_ylabel("training MSE"); b1.legend()
b2.set_xlabel("rotation of the test slice (deg)"); b2.set_ylabel("test MSE"); b2.legend()
if figures:
    os.makedirs(figures, exist_ok=True)
    fig.savefig(os.path.join(figures, "equivariant_denoising.png"), dpi=90)
    fig2.savefig(os.path.join(figures, "equivariant_denoising_curves.png"), dpi=90)
plt.show()
