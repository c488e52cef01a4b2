"""The equivariant-denoising notebook runs top to bottom at a tiny size."""

import os
import runpy
from pathlib import Path

import numpy as np

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_equivariant_denoising_notebook_runs(monkeypatch, tmp_path):
    monkeypatch.setitem(os.environ, "MPLBACKEND", "Agg")
    monkeypatch.setitem(os.environ, "EQ_SIZE", "20")
    monkeypatch.setitem(os.environ, "EQ_STEPS", "25")
    monkeypatch.setitem(os.environ, "EQ_FIGURES", str(tmp_path))
    ns = runpy.run_path(str(NOTEBOOKS / "equivariant_denoising.py"))
    # exact quarter-turn equivariance of the SCNN; a plain CNN is far from it
    assert ns["equivariance_error"]["SCNN"] < 1e-5
    assert ns["equivariance_error"]["CNN"] > 0.05
    # both trained: the loss fell, and the SCNN denoises the upright test slice
    for name in ("SCNN", "CNN"):
        assert ns["losses"][name][-1] < 0.8 * ns["losses"][name][0]
    assert ns["test_mse"]["SCNN"][0] < ns["noisy_mse"][0]
    assert np.all(np.isfinite(ns["test_mse"]["CNN"]))
    assert (tmp_path / "equivariant_denoising.png").exists()
    assert (tmp_path / "equivariant_denoising_curves.png").exists()
