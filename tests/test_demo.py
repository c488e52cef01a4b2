"""The README's demo job and the command line."""

import numpy as np
import pytest

from jaxspect.__main__ import main
from jaxspect._demo import run_demo


def test_demo_figures_are_physical(capsys):
    figures = run_demo(n=24, nz=6, nview=12)
    out = capsys.readouterr().out
    assert "adjoint dot test" in out and "counts per view" in out
    assert figures["views_shape"] == (24, 6, 12)
    assert figures["adjoint_dot_test_rel_error"] < 1e-4
    assert 0.05 < figures["attenuation_survival"] < 0.9  # water-filled body at 140 keV
    lo, hi = figures["view_counts_min_max"]
    assert 0 < lo <= hi < figures["activity_total"]
    r_min, r_max = figures["orbit_radius_mm"]
    assert 0 < r_min < r_max  # elliptical body -> non-circular orbit


def test_cli_rejects_unknown_command():
    with pytest.raises(SystemExit):
        main(["reconstruct-everything"])
