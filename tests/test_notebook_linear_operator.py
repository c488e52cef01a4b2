"""notebooks/linear_operator.py runs top to bottom at a small size, and its numbers agree with
dense-matrix computations."""

import os
import runpy
from pathlib import Path

import numpy as np

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "linear_operator.py"


def test_linear_operator_notebook_runs(monkeypatch):
    monkeypatch.setitem(os.environ, "LINOP_SIZE", "8")
    ns = runpy.run_path(str(NOTEBOOK))
    assert ns["x_ls"].shape == (8, 8, 4)
    assert ns["nrmse"](ns["x_ls"]) < 0.5
    # PSF calibration: within a few Cramer-Rao standard deviations of the truth
    std = ns["psf_std"]
    assert np.all(np.isfinite(std)) and np.all(std > 0)
    assert np.all(np.abs(ns["fitted_psf"] - np.array(ns["true_psf"])) < 5 * std + 1e-3 * np.array(ns["true_psf"]))
    # Posterior mean and standard deviation of the region's mean against the dense Hessian
    m = np.asarray(ns["A"].as_matrix(), np.float64)
    sigma, lam = ns["sigma"], ns["lam"]
    h = m.T @ m / sigma**2 + lam * np.eye(m.shape[1])
    c = np.asarray(ns["roi"], np.float64).ravel()
    np.testing.assert_allclose(ns["roi_std"], np.sqrt(c @ np.linalg.solve(h, c)), rtol=1e-3)
    x_map = np.linalg.solve(h, m.T @ np.asarray(ns["y"], np.float64).ravel() / sigma**2)
    np.testing.assert_allclose(float(np.ravel(ns["x_map"]) @ c), x_map @ c, rtol=1e-3)
