"""Metrics against hand-computed values."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspect import metrics


def test_mae_nrmse_psnr_by_hand():
    truth = jnp.asarray([[2.0, 2.0], [4.0, 0.0]])
    x = jnp.asarray([[1.0, 3.0], [5.0, 1.0]])
    voi = jnp.asarray([[True, True], [True, False]])
    # VOI means: x (1+3+5)/3 = 3, truth (2+2+4)/3 = 8/3 -> |1 - 9/8| = 12.5%
    assert float(metrics.mae(x, truth, voi)) == pytest.approx(12.5)
    # errors -1, 1, 1 -> RMSE 1; / mean truth 8/3 -> 37.5%
    assert float(metrics.nrmse(x, truth, voi)) == pytest.approx(37.5)
    # whole image: errors -1,1,1,1 -> RMSE 1; mean truth 2 -> 50%
    assert float(metrics.nrmse(x, truth)) == pytest.approx(50.0)
    # PSNR: range 4, MSE 1 -> 10 log10(16)
    assert float(metrics.psnr(x, truth)) == pytest.approx(10 * np.log10(16.0))


def test_contrast_recovery_and_normalisation():
    truth = jnp.asarray([4.0, 4.0, 1.0, 1.0])
    x = jnp.asarray([3.0, 3.0, 1.0, 1.0])
    hot = jnp.asarray([True, True, False, False])
    assert float(metrics.contrast_recovery(x, truth, hot, ~hot)) == pytest.approx(2.0 / 3.0)
    assert float(metrics.normalize_total(x, 2.0).sum()) == pytest.approx(2.0)


def test_voi_table_normalises_scale_away():
    rng = np.random.default_rng(0)
    truth = jnp.asarray(rng.random((6, 6, 3)) + 1)
    masks = {"left": np.zeros((6, 6, 3), bool), "right": np.zeros((6, 6, 3), bool)}
    masks["left"][:3] = True
    masks["right"][3:] = True
    table = metrics.voi_table(7.0 * truth, truth, masks)  # a pure global scale error
    for name in ("left", "right"):
        assert table[name]["MAE %"] == pytest.approx(0.0, abs=1e-4)
        assert table[name]["NRMSE %"] == pytest.approx(0.0, abs=1e-4)
    assert table["image"]["NRMSE %"] == pytest.approx(0.0, abs=1e-4)
    raw = metrics.voi_table(7.0 * truth, truth, masks, normalize=False)
    assert raw["left"]["MAE %"] == pytest.approx(600.0)
    assert "left" in metrics.format_table(table)
    with pytest.raises(ValueError, match="empty"):
        metrics.voi_table(truth, truth, {"none": np.zeros((6, 6, 3), bool)})
    with pytest.raises(TypeError, match="boolean"):
        metrics.mae(truth, truth, np.ones((6, 6, 3)))
