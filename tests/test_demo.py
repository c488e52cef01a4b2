"""The README's demo job and the command line."""

import pytest

from jaxspect.__main__ import main
from jaxspect._demo import run_demo


def test_demo_figures_are_physical(capsys):
    figures = run_demo(n=32, nz=20, nview=16, voxel_mm=19.2, osem_iterations=3, osem_subsets=4)
    out = capsys.readouterr().out
    assert "adjoint dot test" in out and "counts per view" in out and "lesion_1" in out
    assert figures["views_shape"] == (32, 20, 16)
    assert figures["adjoint_dot_test_rel_error"] < 1e-4
    assert 0.05 < figures["attenuation_survival"] < 0.9  # a soft-tissue body at 208 keV
    lo, hi = figures["view_counts_min_max"]
    assert 0 < lo <= hi < figures["activity_total"]
    r_min, r_max = figures["orbit_radius_mm"]
    assert 0 < r_min < r_max  # elliptical body -> non-circular orbit
    table = figures["voi_table"]
    # OSEM recovers organ means to within tens of percent even at this coarse size
    assert table["liver"]["MAE %"] < 30 and table["spleen"]["MAE %"] < 50


def test_cli_rejects_unknown_command():
    with pytest.raises(SystemExit):
        main(["reconstruct-everything"])
