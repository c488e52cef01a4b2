"""notebooks/unrolled_em.py runs top to bottom at a tiny size."""

import os
import runpy
from pathlib import Path

import numpy as np
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "unrolled_em.py"


def test_unrolled_em_notebook_runs(monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(os.environ, "MPLBACKEND", "Agg")
    monkeypatch.setitem(os.environ, "UNROLLED_SIZE", "16")
    monkeypatch.setitem(os.environ, "UNROLLED_EPOCHS", "2")
    import matplotlib

    matplotlib.use("Agg", force=True)
    ns = runpy.run_path(str(NOTEBOOK))
    fits = ns["fits"]
    assert set(fits) == {"sequential", "truncated", "end-to-end"}
    assert len(fits["sequential"].val_loss) == 3 * 2  # three networks, one after the other
    for f in fits.values():
        assert np.all(np.isfinite(f.train_loss)) and np.all(np.isfinite(f.val_loss))
    e2e = fits["end-to-end"].train_loss
    assert e2e[-1] < e2e[0]  # training reduces the loss
    assert ns["reload_error"] == 0.0  # save/load round trip is exact
    assert ns["scale_error"] < 1e-4  # count-scale equivariant
    for name, table in ns["tables"].items():
        assert 0 < table["image"]["NRMSE %"] < 200, name
