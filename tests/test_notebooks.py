"""Notebooks run top to bottom at a small size."""

import os
import runpy
from pathlib import Path

import numpy as np

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_projector_tour_runs(monkeypatch):
    monkeypatch.setitem(os.environ, "TOUR_SIZE", "20")
    ns = runpy.run_path(str(NOTEBOOKS / "projector_tour.py"))
    assert ns["dot_error"] < 1e-4
    assert ns["views"].shape == (20, 10, 64)
    assert np.all(np.isfinite(np.asarray(ns["gmu"]))) and float(abs(ns["gmu"]).max()) > 0
