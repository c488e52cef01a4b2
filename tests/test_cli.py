"""The command line: simulate -> reconstruct round trip, and clean error exits (status 2)."""

import numpy as np
import pytest

pytest.importorskip("nibabel")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxspect as js  # noqa: E402
from jaxspect import save_model  # noqa: E402
from jaxspect._cli import main  # noqa: E402
from jaxspect.nn import PaperCNN  # noqa: E402
from jaxspect.recon import UnrolledEM  # noqa: E402
from jaxspect.io import read_interfile, read_nifti, write_nifti  # noqa: E402

SIZE, SLICES, VIEWS = 16, 8, 12


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    assert main(["simulate", "--output", str(folder / "sim.h00"), "--size", str(SIZE), "--slices", str(SLICES),
                 "--views", str(VIEWS), "--counts", "3e5", "--seed", "3"]) == 0
    return folder


def test_simulate_then_reconstruct(simulated, capsys):
    folder = simulated
    for name in ("sim.h00", "sim.a00", "sim_scatter.h00", "sim_activity.nii.gz", "sim_mumap.nii.gz"):
        assert (folder / name).is_file(), name
    data = read_interfile(folder / "sim.h00")
    assert data.counts.shape == (SIZE, SLICES, VIEWS) and data.radii.shape == (VIEWS,)
    assert data.pixel_size_mm == (614.4 / SIZE, 614.4 / SIZE)
    np.testing.assert_array_equal(data.counts, np.round(data.counts))  # Poisson counts survive exactly
    assert 2e5 < data.counts.sum() < 4.5e5  # 3e5 primary + 10 % scatter

    out = folder / "recon.nii.gz"
    code = main(["reconstruct", str(folder / "sim.h00"), "--mumap", str(folder / "sim_mumap.nii.gz"),
                 "--background", str(folder / "sim_scatter.h00"), "--output", str(out),
                 "--iterations", "4", "--subsets", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "osem: iteration 4/4" in printed and str(out) in printed
    image, voxel = read_nifti(out)
    truth, _ = read_nifti(folder / "sim_activity.nii.gz")
    assert image.shape == (SIZE, SIZE, SLICES) and voxel == (38.4, 38.4, 38.4)
    assert np.all(np.isfinite(image)) and image.min() >= 0
    assert np.corrcoef(image.ravel(), truth.ravel())[0, 1] > 0.8


def test_reconstruct_with_unrolled_model(simulated, tmp_path):
    """--model runs a saved unrolled EM from the OSEM image: the same as the Python API."""
    model = UnrolledEM(PaperCNN, jax.random.key(2), n_outer=2, beta=1.0)
    save_model(tmp_path / "unrolled.eqx", model)
    base = ["reconstruct", str(simulated / "sim.h00"), "--mumap", str(simulated / "sim_mumap.nii.gz"),
            "--background", str(simulated / "sim_scatter.h00"), "--iterations", "2", "--subsets", "3", "--no-progress"]
    assert main([*base, "--output", str(tmp_path / "osem.nii")]) == 0
    assert main([*base, "--output", str(tmp_path / "learned.nii"), "--model", str(tmp_path / "unrolled.eqx")]) == 0
    osem_image, voxel = read_nifti(tmp_path / "osem.nii")
    learned, _ = read_nifti(tmp_path / "learned.nii")
    data, scatter = read_interfile(simulated / "sim.h00"), read_interfile(simulated / "sim_scatter.h00")
    mumap, _ = read_nifti(simulated / "sim_mumap.nii.gz")
    projector = js.SPECTProjector(data.spect_geometry(js.GaussianPSF(2.5, 0.1)), jnp.asarray(mumap))
    expected = model(jnp.asarray(osem_image), projector, jnp.asarray(data.counts), jnp.asarray(scatter.counts))
    np.testing.assert_allclose(learned, expected, rtol=1e-4, atol=1e-4 * float(np.max(expected)))
    assert not np.allclose(learned, osem_image)


def _fails(capsys, argv, *needles):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_cli_errors(simulated, capsys, tmp_path):
    sim = str(simulated / "sim.h00")
    out = str(tmp_path / "r.nii")
    _fails(capsys, ["reconstruct", str(tmp_path / "none.h00"), "--output", out], "projections file not found", "none.h00")
    (tmp_path / "scan.xyz").write_text("x")
    _fails(capsys, ["reconstruct", str(tmp_path / "scan.xyz"), "--output", out], "unknown projection file format", "'.xyz'")
    _fails(capsys, ["reconstruct", sim, "--output", str(tmp_path / "r.png")], "--output must be a NIfTI file")
    _fails(capsys, ["reconstruct", sim, "--output", out, "--mumap", str(tmp_path / "mu.nii")], "--mumap", "mu.nii", "not found")
    write_nifti(tmp_path / "small.nii", np.zeros((8, 8, 8), np.float32), (38.4,) * 3)
    _fails(capsys, ["reconstruct", sim, "--output", out, "--mumap", str(tmp_path / "small.nii")],
           "small.nii has shape (8, 8, 8)", f"({SIZE}, {SIZE}, {SLICES})")
    write_nifti(tmp_path / "vox.nii", np.zeros((SIZE, SIZE, SLICES), np.float32), (4.8,) * 3)
    _fails(capsys, ["reconstruct", sim, "--output", out, "--mumap", str(tmp_path / "vox.nii")], "vox.nii has voxels")
    mu, _ = read_nifti(simulated / "sim_mumap.nii.gz")
    write_nifti(tmp_path / "hu.nii", mu * 1000, (38.4,) * 3)
    _fails(capsys, ["reconstruct", sim, "--output", out, "--mumap", str(tmp_path / "hu.nii"), "--mumap-units", "per_cm"],
           "wrong units (--mumap-units)")
    _fails(capsys, ["reconstruct", sim, "--output", out, "--scatter", "tew"], "--scatter tew needs the energy windows")
    _fails(capsys, ["reconstruct", sim, "--output", out, "--model", "m.eqx"], "--model file not found: m.eqx")
    save_model(tmp_path / "cnn.eqx", PaperCNN(jax.random.key(0)))
    _fails(capsys, ["reconstruct", sim, "--output", out, "--model", str(tmp_path / "cnn.eqx")],
           "holds a PaperCNN, expected a trained UnrolledEM")
    _fails(capsys, ["reconstruct", sim, "--output", out, "--iterations", "0"], "--iterations must be a positive integer")
    _fails(capsys, ["reconstruct", sim, "--output", out, "--radius", "50", "--mumap", str(simulated / "sim_mumap.nii.gz")],
           "inconsistent geometry", "puts the detector inside the object")
    (tmp_path / "broken.h00").write_text((simulated / "sim.h00").read_text().replace("sim.a00", "gone.a00"))
    _fails(capsys, ["reconstruct", str(tmp_path / "broken.h00"), "--output", out], "gone.a00", "not found")
    _fails(capsys, ["simulate", "--output", str(tmp_path / "sim.nii")], "--output must be an Interfile header")
    with pytest.raises(SystemExit) as exit_info:  # argparse: missing required --output
        main(["reconstruct", sim])
    assert exit_info.value.code == 2
