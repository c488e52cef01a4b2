"""The README's demo job and the command line."""

import numpy as np
import pytest

import jax

from jaxspect import save_model
from jaxspect.__main__ import main
from jaxspect.nn import PaperCNN
from jaxspect.recon import UnrolledEM
from jaxspect._demo import run_demo


def test_demo_figures_are_physical(capsys, tmp_path):
    out_dir = tmp_path / "demo"
    model_path = tmp_path / "unrolled.eqx"
    save_model(model_path, UnrolledEM(PaperCNN, jax.random.key(0), n_outer=1, beta=1.0))
    figures = run_demo(n=32, nz=20, nview=16, voxel_mm=19.2, osem_iterations=3, osem_subsets=4, output_dir=out_dir,
                       model_path=model_path)
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
    # convergence history: x_0 .. x_3, likelihood rising, NRMSE falling from the flat start
    ll, nrmse = figures["osem_log_likelihood"], figures["osem_nrmse"]
    assert ll.shape == (4,) and np.all(np.diff(ll) > 0) and nrmse[-1] < nrmse[0]
    # the (untrained) unrolled model ran from the OSEM image and got its own table
    assert "Unrolled EM" in out and set(figures["unrolled_voi_table"]) == set(table)
    assert figures["unrolled_voi_table"]["liver"]["MAE %"] != table["liver"]["MAE %"]

    names = sorted(p.name for p in figures["files"])
    for expected in ("slices.png", "profile.png", "convergence.png", "truth.nii.gz", "mumap.nii.gz",
                     "osem.nii.gz", "voi_liver.nii.gz", "voi_lesion_1.nii.gz", "unrolled.nii.gz"):
        assert expected in names
    assert all(p.parent == out_dir and p.stat().st_size > 0 for p in figures["files"])
    assert str(out_dir.resolve()) in out and "slices.png" in out
    assert (out_dir / "slices.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from jaxspect.io import read_nifti

    osem_image, voxel = read_nifti(out_dir / "osem.nii.gz")
    truth, _ = read_nifti(out_dir / "truth.nii.gz")
    assert osem_image.shape == (32, 32, 20) and voxel == (19.2, 19.2, 19.2)
    assert np.corrcoef(osem_image.ravel(), truth.ravel())[0, 1] > 0.8
    # scaled back to the truth's units: totals agree to within tens of percent
    assert 0.7 < osem_image.sum() / truth.sum() < 1.3

    # the SPECT/CT part: CT -> mu, collimator by name, calibration -> Bq/mL, DICOM + NIfTI, fused figure
    spect_ct = figures["spect_ct"]
    assert "--ct ct --collimator siemens-me --sensitivity" in out and "collimator sy-me" in out
    assert spect_ct["mu_error"] < 0.05 and spect_ct["units"] == "BQML"
    true, recon = spect_ct["table"]["liver"]
    assert recon == pytest.approx(true, rel=0.25)  # Bq/mL from the calibration factor
    np.testing.assert_allclose(spect_ct["affine"], spect_ct["nm_affine"], atol=1e-6)  # where the NM file put the grid
    nm, dicom, nifti, fused = spect_ct["files"]
    assert fused.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and dicom.is_file() and nm.is_file()
    from jaxspect.io import read_dicom_volume

    recon_nifti, _ = read_nifti(nifti)
    np.testing.assert_allclose(recon_nifti, read_dicom_volume(dicom).array, rtol=1e-4, atol=1e-3 * recon_nifti.max())


def test_cli_rejects_unknown_command():
    with pytest.raises(SystemExit):
        main(["reconstruct-everything"])
