"""The SPECTnet notebook runs top to bottom at a tiny size (32 x 32, a few phantoms)."""

import os
import runpy
from pathlib import Path

import numpy as np
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_spectnet_notebook_runs(monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(os.environ, "MPLBACKEND", "Agg")
    monkeypatch.setitem(os.environ, "SPECTNET_SIZE", "32")
    monkeypatch.setitem(os.environ, "SPECTNET_TRAIN", "16")
    monkeypatch.setitem(os.environ, "SPECTNET_EPOCHS", "2")
    monkeypatch.setitem(os.environ, "SPECTNET_OSEM_ITERATIONS", "2")
    ns = runpy.run_path(str(NOTEBOOKS / "spectnet.py"))
    assert ns["padding_matches"] is True
    assert ns["shown"].sinogram.shape == (4, 32, 32)
    assert np.all((ns["uptakes"] >= 3) & (ns["uptakes"] <= 9))
    assert all(v.size == 1 for v in ns["hot_values"])  # one high-uptake value per phantom
    # Training ran and the autoencoder improved on the validation set.
    assert ns["ae_curve"].shape == (2,) and ns["ae_curve"][-1] < ns["ae_curve"][0]
    assert np.all(np.isfinite(ns["ft_curve"]))
    # Reconstructions are finite, OSEM's best iterate beats a uniform image of the mean.
    assert ns["net_images"].shape == (4, 32, 32) and np.all(np.isfinite(ns["net_images"]))
    truth = np.asarray(ns["batch"].activity)
    flat = ((truth - truth.mean(axis=(1, 2), keepdims=True)) ** 2).mean(axis=(1, 2))
    assert np.all(ns["best_mse"] < flat)
    assert ns["noisy_mse"].shape == (4,) and np.all(np.isfinite(ns["noisy_mse"]))
    np.testing.assert_array_equal(ns["padded_noisy"][:, 30:], ns["padded_noisy"][:, :2])
