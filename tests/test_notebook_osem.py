"""notebooks/osem_torso.py runs top to bottom at a small size and its figures make sense."""

import os
import runpy
from pathlib import Path

import numpy as np
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "osem_torso.py"


def test_osem_torso_notebook_runs(monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(os.environ, "MPLBACKEND", "Agg")
    monkeypatch.setitem(os.environ, "OSEM_TORSO_SIZE", "16")
    import matplotlib

    matplotlib.use("Agg", force=True)
    ns = runpy.run_path(str(NOTEBOOK))
    assert ns["recon"].shape == (16, 16, 10)
    ll, nrmse = ns["log_likelihood"], ns["nrmse"]
    assert ll.shape == nrmse.shape == (ns["n_iter"] + 1,)
    assert np.all(np.diff(ll) > 0)  # OSEM raises the likelihood at every iteration here
    assert nrmse[-1] < 0.8 * nrmse[0]
    table = ns["table"]
    assert set(table) >= {"liver", "spleen", "lesion_1", "image"}
    assert table["liver"]["MAE %"] < 50
    assert np.isclose(ns["recon"].sum(), ns["phantom"].activity.sum(), rtol=0.3)
