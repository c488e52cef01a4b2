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
    x = js.osem(projector, y, jnp.ones(shape, jnp.float32), n_iter=10, n_subsets=4).image
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


def test_cli_simulated_spect_ct_study_end_to_end(tmp_path, capsys):
    """simulate -> DICOM NM + CT series -> reconstruct --ct with the collimator the file names, a
    calibration from a point-source acquisition and decay correction to the injection -> Bq/mL
    that matches the simulated truth, on the same patient grid, in NIfTI and DICOM."""
    import re

    nibabel = pytest.importorskip("nibabel")
    pydicom = pytest.importorskip("pydicom")
    from jaxspect._cli import main

    assert main(["simulate", "--output", str(tmp_path / "nm.dcm"), "--ct", str(tmp_path / "ct"), "--collimator",
                 "siemens-me", "--size", "16", "--slices", "8", "--views", "12", "--counts", "5e6",
                 "--scatter-fraction", "0", "--activity-mbq", "800"]) == 0
    sensitivity = float(re.search(r"--sensitivity ([0-9.e+-]+) for Bq/mL", capsys.readouterr().out).group(1))
    # the calibration acquisition: 25 MBq in air (a 3-voxel cube), 10 s per view, same camera
    data = js.io.read_dicom_projections(tmp_path / "nm.dcm")
    cube = np.zeros(data.image_shape, np.float32)
    cube[7:10, 7:10, 3:6] = sensitivity * 10.0 * 25.0 / 27
    views = np.asarray(js.forward_project(jnp.asarray(cube), None, data.spect_geometry(js.GaussianPSF(5.0, 0.08))))
    js.io.write_interfile(tmp_path / "cal.h00", js.io.ProjectionData(views, data.angles, data.radii, data.pixel_size_mm),
                          extra_keys={"!time per projection (sec)": 10})
    base = ["reconstruct", str(tmp_path / "nm.dcm"), "--ct", str(tmp_path / "ct"), "--calibration",
            str(tmp_path / "cal.h00"), "--calibration-activity", "25", "--decay-to", "injection", "--iterations", "6",
            "--subsets", "3", "--no-progress"]
    assert main([*base, "--output", str(tmp_path / "recon.nii.gz")]) == 0
    assert main([*base, "--output", str(tmp_path / "dicom"), "--format", "dicom"]) == 0
    printed = capsys.readouterr().out
    assert "collimator sy-me" in printed and "as named in" in printed  # from the DICOM file, not assumed
    found = float(re.search(r"calibration ([0-9.e+-]+) cps/MBq", printed).group(1))
    assert found == pytest.approx(sensitivity, rel=0.01)
    decay = float(re.search(r"decay-corrected to [0-9T:-]+ \(x([0-9.]+)\)", printed).group(1))
    assert decay == pytest.approx(2 ** (24 / (6.647 * 24)) * 1.0003, rel=1e-3)  # 24 h after injection, 320 s scan
    recon, truth = nibabel.load(str(tmp_path / "recon.nii.gz")), nibabel.load(str(tmp_path / "nm_activity_bqml.nii.gz"))
    np.testing.assert_allclose(recon.affine, truth.affine, atol=1e-4)
    assert b"Bq/mL" in recon.header["descrip"].tobytes()
    x, t = np.asarray(recon.dataobj), np.asarray(truth.dataobj)
    voxel_ml = float(np.prod(recon.header.get_zooms())) / 1000
    assert float(x.sum()) * voxel_ml / 1e6 == pytest.approx(800.0 * decay, rel=0.1)  # MBq at injection
    assert np.corrcoef(x[t > 0], t[t > 0])[0, 1] > 0.8
    out = pydicom.dcmread(tmp_path / "dicom" / "recon.dcm")
    assert out.Units == "BQML" and set(out.CorrectedImage) == {"ATTN", "DECY"}
    assert float((out.pixel_array * float(out.RescaleSlope)).sum()) == pytest.approx(float(x.sum()), rel=1e-3)
