"""Collimator table: lead attenuation, system resolution against vendors' figures, the fitted
Gaussian PSF, and the command line's --collimator / `jaxspect collimators`."""

import math

import numpy as np
import pytest

import jaxspect as js
from jaxspect._attenuation_coefficients import lead_attenuation
from jaxspect._cli import main
from jaxspect._collimators import COLLIMATOR_ALIASES, INTRINSIC_FWHM_MM, psf_distance_range


def test_lead_attenuation_nist_and_k_edge():
    # NIST (Hubbell & Seltzer) mu/rho of Pb at tabulated energies, times 11.35 g/cm^3, in 1/mm
    assert lead_attenuation(100.0) == pytest.approx(5.549 * 11.35 / 10, rel=1e-12)
    assert lead_attenuation(600.0) == pytest.approx(0.1248 * 11.35 / 10, rel=1e-12)
    assert lead_attenuation(140.5) == pytest.approx(2.69, abs=0.01)  # the familiar ~27 /cm at 140 keV
    below, above = lead_attenuation(87.9), lead_attenuation(88.1)
    assert above / below == pytest.approx(7.683 / 1.910, rel=0.01)  # K edge
    with pytest.raises(ValueError, match="outside lead's tabulated range"):
        lead_attenuation(700.0)


@pytest.mark.parametrize(
    "name, energy_kev, published_mm",
    [
        ("siemens-lehr", 140.5, 7.5),  # Siemens Symbia data sheet, Tc-99m at 10 cm
        ("siemens-leap", 140.5, 8.3),
        ("siemens-me", 184.6, 12.5),  # Ga-67
        ("siemens-he", 364.5, 13.4),  # I-131
        ("ge-lehr", 140.5, 7.4),  # GE Infinia / Discovery 670 data sheet
    ],
)
def test_system_resolution_matches_published_figures(name, energy_kev, published_mm):
    collimator = js.get_collimator(name)
    model = float(collimator.system_fwhm_mm(100.0, energy_kev))
    assert model == pytest.approx(published_mm, rel=0.12)


def test_resolution_formula_and_ordering():
    c = js.get_collimator("SY-LEHR")  # case-insensitive SIMIND code
    assert c is js.COLLIMATORS["sy-lehr"] and c.hole_diameter_mm == 1.11 and c.hole_length_mm == 24.05
    # independent evaluation of the textbook formula
    mu = 2.393 * 11.35 / 10  # Pb at 140 keV (cm^2/g * g/cm^3 / 10 = 1/mm), log-log between NIST's 100 and 150 keV
    l_eff = 24.05 - 2 / mu
    expected = math.sqrt(INTRINSIC_FWHM_MM**2 + (1.11 * (l_eff + 100 + 4.75) / l_eff) ** 2)
    assert float(c.system_fwhm_mm(100.0, 140.0)) == pytest.approx(expected, rel=2e-3)
    # penetration: the same collimator is effectively shorter (blurrier) at higher energy
    me = js.get_collimator("si-me")
    assert me.effective_length_mm(364.5) < me.effective_length_mm(208.4) < me.hole_length_mm
    assert float(me.geometric_fwhm_mm(100.0, 364.5)) > float(me.geometric_fwhm_mm(100.0, 208.4))
    # high resolution beats general purpose beats medium energy, at 10 cm and 140 keV
    fwhm = {n: float(js.get_collimator(n).system_fwhm_mm(100.0, 140.5)) for n in ("ge-lehr", "ge-legp", "ge-megp")}
    assert fwhm["ge-lehr"] < fwhm["ge-legp"] < fwhm["ge-megp"]
    with pytest.raises(ValueError, match="transparent"):
        js.Collimator("thin", "10 mm holes", 1.0, 0.1, 10.0).effective_length_mm(600.0)  # 2 / mu_Pb = 14 mm
    with pytest.raises(ValueError, match="unknown collimator 'lehr'.*sy-lehr"):
        js.get_collimator("lehr")
    for alias, code in COLLIMATOR_ALIASES.items():
        assert js.get_collimator(alias) is js.COLLIMATORS[code]


def test_fitted_gaussian_psf_tracks_system_resolution():
    c = js.get_collimator("ge-megp")
    psf = c.psf(208.4, distance_range_mm=(100.0, 300.0))
    assert isinstance(psf, js.GaussianPSF)
    d = np.linspace(100.0, 300.0, 41)
    fit = np.sqrt(float(psf.fwhm0) ** 2 + (float(psf.slope) * d) ** 2)
    np.testing.assert_allclose(fit, c.system_fwhm_mm(d, 208.4), rtol=0.03)
    lo, hi = psf_distance_range(np.array([200.0, 250.0]), (64, 64, 10), (4.0, 4.0, 4.0))
    assert lo == pytest.approx(200 - 0.5 * math.hypot(256, 256)) and hi == pytest.approx(250 + 0.5 * math.hypot(256, 256))
    with pytest.raises(ValueError, match="distance_range_mm"):
        c.psf(208.4, distance_range_mm=(50.0, 10.0))


def test_cli_collimators_listing(capsys):
    assert main(["collimators", "--energy", "208"]) == 0
    out = capsys.readouterr().out
    for name in ("sy-lehr", "si-me", "gi-megp", "pb-hegp", "siemens-lehr = sy-lehr"):
        assert name in out


def _fails(capsys, argv, *needles):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def test_cli_collimator_and_no_silent_default(tmp_path, capsys):
    pytest.importorskip("nibabel")
    counts = np.random.default_rng(0).poisson(5.0, (8, 4, 6)).astype(np.float32)
    angles = 2 * np.pi * np.arange(6) / 6
    plain = tmp_path / "plain.h00"
    js.io.write_interfile(plain, js.io.ProjectionData(counts, angles, 150.0, (6.0, 6.0)))
    windowed = tmp_path / "windowed.h00"
    js.io.write_interfile(windowed, js.io.ProjectionData(counts, angles, 150.0, (6.0, 6.0), windows={"w": counts},
                                                         window_ranges_kev={"w": (187.6, 229.2)}, photopeak="w"))
    out = str(tmp_path / "r.nii")
    base = ["--output", out, "--iterations", "1", "--subsets", "1", "--no-progress", "--overwrite"]
    _fails(capsys, ["reconstruct", str(plain), *base], "no collimator response given", "--collimator NAME")
    _fails(capsys, ["reconstruct", str(plain), *base, "--collimator", "sy-me"], "photopeak energy is not recorded",
           "--energy KEV")
    _fails(capsys, ["reconstruct", str(plain), *base, "--collimator", "lehr"], "--collimator", "unknown collimator")
    _fails(capsys, ["reconstruct", str(plain), *base, "--collimator", "sy-me", "--fwhm0", "2"], "not both")
    _fails(capsys, ["reconstruct", str(plain), *base, "--fwhm0", "2"], "go together")
    assert main(["reconstruct", str(plain), *base, "--collimator", "sy-me", "--energy", "208.4"]) == 0
    assert "collimator sy-me" in capsys.readouterr().out
    assert main(["reconstruct", str(windowed), *base, "--collimator", "siemens-me"]) == 0
    assert "at 208.4 keV" in capsys.readouterr().out  # the window's centre
    assert main(["reconstruct", str(plain), *base, "--fwhm0", "2.5", "--slope", "0.1"]) == 0
    assert "from --fwhm0/--slope" in capsys.readouterr().out
