"""Quantitative units: calibration factor, counts -> Bq/mL, decay correction, and the CLI."""

import datetime
import math

import jax.numpy as jnp
import numpy as np
import pytest

import jaxspect as js
from jaxspect._quantification import (
    activity_concentration,
    decay_factor,
    sensitivity_from_point_source,
    sensitivity_from_reconstruction,
)
from jaxspect.phantoms import elliptic_cylinder, linear_attenuation

S, T = 80.0, 15.0  # cps/MBq, s per view


def test_concentration_formula():
    image = np.full((2, 2, 2), S * T * 0.004)  # 0.004 MBq per voxel
    out = activity_concentration(image, (5.0, 5.0, 4.0), S, T, decay=2.0)
    np.testing.assert_allclose(out, 4000.0 / 0.1 * 2.0)  # 4000 Bq in 0.1 mL, doubled
    with pytest.raises(ValueError, match="sensitivity_cps_per_mbq"):
        activity_concentration(image, (5.0, 5.0, 4.0), 0.0, T)


def test_decay_factor():
    t0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
    half = 6.0067 * 3600  # Tc-99m
    assert decay_factor(half, t0, 0.0, t0 - datetime.timedelta(seconds=half)) == pytest.approx(2.0, rel=1e-12)
    # finite acquisition: counts come from the mean activity over it (numerical integral)
    duration = 3 * half
    lam = math.log(2) / half
    mean = np.mean(np.exp(-lam * np.linspace(0, duration, 200001)))
    assert decay_factor(half, t0, duration, t0) == pytest.approx(1 / mean, rel=1e-5)


@pytest.fixture(scope="module")
def cylinder():
    n, nz, vs = 16, 4, 8.0
    shape, voxel = (n, n, nz), (vs, vs, vs)
    body = np.asarray(elliptic_cylinder(shape, voxel, (50.0, 50.0)))
    mu = body * linear_attenuation("water", 140.5)
    conc = 5000.0  # Bq/mL
    activity_mbq = body * conc * (vs**3 / 1000) * 1e-6
    psf = js.get_collimator("sy-lehr").psf(140.5)
    geometry = js.SPECTGeometry(shape, voxel, psf, nview=16, radii=120.0)
    projector = js.SPECTProjector(geometry, jnp.asarray(mu, jnp.float32))
    y = projector(jnp.asarray(S * T * activity_mbq, jnp.float32))  # noise-free counts
    x = js.osem(projector, y, jnp.ones(shape, jnp.float32), n_iter=20, n_subsets=4).image
    return body, conc, activity_mbq, np.asarray(x), voxel


def test_uniform_cylinder_reconstructs_to_its_concentration(cylinder):
    body, conc, activity_mbq, x, voxel = cylinder
    c = activity_concentration(x, voxel, S, T)
    centre = np.asarray(elliptic_cylinder(body.shape, voxel, (30.0, 30.0))).astype(bool)
    assert float(c[centre].mean()) == pytest.approx(conc, rel=0.05)
    # the same phantom as a calibration acquisition gives back S
    assert sensitivity_from_reconstruction(x, activity_mbq.sum(), T) == pytest.approx(S, rel=0.05)


def test_point_source_sensitivity():
    shape, voxel = (16, 16, 16), (4.0, 4.0, 4.0)
    geometry = js.SPECTGeometry(shape, voxel, js.get_collimator("ge-lehr").psf(140.5), nview=8, radii=100.0)
    source = np.zeros(shape, np.float32)
    # 20 MBq in air, a 12 mm cube (a single voxel loses ~7 % to bilinear rotation at 45 degrees)
    source[7:10, 6:9, 7:10] = S * T * 20.0 / 27
    views = np.asarray(js.forward_project(jnp.asarray(source), None, geometry))
    assert sensitivity_from_point_source(views, 20.0, T) == pytest.approx(S, rel=0.01)


def test_cli_bq_per_ml_with_decay(tmp_path, capsys):
    pytest.importorskip("pydicom")
    nibabel = pytest.importorskip("nibabel")
    import pydicom
    from pydicom.dataset import Dataset

    from jaxspect._cli import main
    from tests.test_ct import CENTRE, HOT, N, NVIEW, NZ, VOXEL, write_nm

    half_life = 6.0067 * 3600
    injected, start = datetime.datetime(2026, 3, 2, 8, 0, 0), datetime.datetime(2026, 3, 2, 11, 0, 0)
    a_at_start = 40.0  # MBq in the point source at the acquisition start
    geometry = js.SPECTGeometry((N, N, NZ), (VOXEL,) * 3, js.get_collimator("sy-lehr").psf(140.5),
                                angles=np.deg2rad(np.arange(NVIEW) * 360.0 / NVIEW), radii=150.0)
    angles = np.arange(NVIEW) * 360.0 / NVIEW
    duration = 20.0 * NVIEW
    lam = math.log(2) / half_life
    mean_activity = a_at_start * -math.expm1(-lam * duration) / (lam * duration)
    source = np.zeros((N, N, NZ), np.float32)
    source[HOT] = S * 20.0 * mean_activity
    write_nm(tmp_path / "patient.dcm", np.asarray(js.forward_project(jnp.asarray(source), None, geometry)), angles, 150.0)
    ds = pydicom.dcmread(tmp_path / "patient.dcm")
    item = Dataset()
    item.RadionuclideHalfLife = half_life
    item.RadiopharmaceuticalStartDateTime = injected.strftime("%Y%m%d%H%M%S")
    ds.RadiopharmaceuticalInformationSequence = [item]
    ds.AcquisitionDate, ds.AcquisitionTime = start.strftime("%Y%m%d"), start.strftime("%H%M%S")
    ds.save_as(tmp_path / "patient.dcm")
    calibration = np.zeros((N, N, NZ), np.float32)
    calibration[N // 2, N // 2, NZ // 2] = S * 10.0 * 25.0  # 25 MBq, 10 s per view
    cal_views = np.asarray(js.forward_project(jnp.asarray(calibration), None, geometry))
    js.io.write_interfile(tmp_path / "cal.h00", js.io.ProjectionData(cal_views, np.deg2rad(angles), 150.0,
                                                                     (VOXEL, VOXEL)))
    base = ["reconstruct", str(tmp_path / "patient.dcm"), "--collimator", "sy-lehr", "--iterations", "10",
            "--subsets", "4", "--no-progress", "--calibration", str(tmp_path / "cal.h00"), "--calibration-activity", "25",
            "--calibration-time-per-view", "10", "--decay-to", "injection"]
    assert main([*base, "--output", str(tmp_path / "q.nii.gz")]) == 0
    assert main([*base, "--output", str(tmp_path / "dcm"), "--format", "dicom"]) == 0
    printed = capsys.readouterr().out
    assert "cps/MBq" in printed and "decay-corrected" in printed and "Bq/mL" in printed
    image = nibabel.load(str(tmp_path / "q.nii.gz"))
    assert b"Bq/mL" in image.header["descrip"].tobytes()
    total_mbq = float(np.asarray(image.dataobj).sum()) * VOXEL**3 / 1000 / 1e6
    a_at_injection = a_at_start * 2 ** ((start - injected).total_seconds() / half_life)
    assert total_mbq == pytest.approx(a_at_injection, rel=0.03)
    out = pydicom.dcmread(tmp_path / "dcm" / "recon.dcm")
    assert out.Units == "BQML" and "DECY" in out.CorrectedImage
    assert float((out.pixel_array * float(out.RescaleSlope)).sum()) == pytest.approx(
        float(np.asarray(image.dataobj).sum()), rel=1e-3)
    assert np.allclose(CENTRE, js.io.read_dicom_volume(tmp_path / "dcm" / "recon.dcm").affine[:3, 3]
                       + (np.array([N, N, NZ]) - 1) / 2 * VOXEL)


def test_cli_simulated_spect_ct_study_end_to_end(tmp_path, capsys):
    """simulate -> DICOM NM + CT series -> reconstruct --ct, collimator from the file,
    --sensitivity -> Bq/mL that matches the simulated truth, on the same patient grid."""
    import re

    nibabel = pytest.importorskip("nibabel")
    pytest.importorskip("pydicom")
    from jaxspect._cli import main

    assert main(["simulate", "--output", str(tmp_path / "nm.dcm"), "--ct", str(tmp_path / "ct"), "--collimator",
                 "siemens-me", "--size", "16", "--slices", "8", "--views", "16", "--counts", "5e6",
                 "--scatter-fraction", "0", "--activity-mbq", "800"]) == 0
    printed = capsys.readouterr().out
    sensitivity = re.search(r"--sensitivity ([0-9.e+-]+) for Bq/mL", printed).group(1)
    assert main(["reconstruct", str(tmp_path / "nm.dcm"), "--ct", str(tmp_path / "ct"), "--sensitivity", sensitivity,
                 "--iterations", "10", "--subsets", "4", "--no-progress", "--output", str(tmp_path / "recon.nii.gz")]) == 0
    assert "collimator sy-me" in capsys.readouterr().out  # named in the DICOM file, not assumed
    recon, truth = nibabel.load(str(tmp_path / "recon.nii.gz")), nibabel.load(str(tmp_path / "nm_activity_bqml.nii.gz"))
    np.testing.assert_allclose(recon.affine, truth.affine, atol=1e-4)
    x, t = np.asarray(recon.dataobj), np.asarray(truth.dataobj)
    voxel_ml = float(np.prod(recon.header.get_zooms())) / 1000
    assert float(x.sum()) * voxel_ml / 1e6 == pytest.approx(800.0, rel=0.1)  # MBq in the field of view
    body = t > 0
    assert np.corrcoef(x[body], t[body])[0, 1] > 0.8
