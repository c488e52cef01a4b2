"""notebooks/spect_ct.py runs top to bottom at a small size: DICOM in, Bq/mL out, fused figure."""

import os
import runpy
from pathlib import Path

import numpy as np
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "spect_ct.py"


def test_spect_ct_notebook_runs(monkeypatch, tmp_path):
    pytest.importorskip("matplotlib")
    pytest.importorskip("pydicom")
    pytest.importorskip("nibabel")
    monkeypatch.setitem(os.environ, "MPLBACKEND", "Agg")
    monkeypatch.setitem(os.environ, "SPECT_CT_SIZE", "16")
    monkeypatch.setitem(os.environ, "SPECT_CT_OUTPUT", str(tmp_path))
    import matplotlib

    matplotlib.use("Agg", force=True)
    ns = runpy.run_path(str(NOTEBOOK))
    assert (tmp_path / "fused_spect_ct.png").is_file() and (tmp_path / "recon" / "recon.dcm").is_file()
    assert ns["mu_error"] < 0.05  # CT-derived mu vs the phantom's own map
    for organ, (true, recon) in ns["table"].items():
        assert recon == pytest.approx(true, rel=0.25), organ  # Bq/mL from the calibration
    # the DICOM output sits where the NM file put the grid
    np.testing.assert_allclose(ns["spect"].affine, ns["data"].image_affine, atol=1e-6)
