"""Multi-bed studies: per-bed reconstructions stitched along z with overlap weighting."""

import jax.numpy as jnp
import numpy as np
import pytest

import jaxspect as js
from jaxspect._beds import stitch_beds
from jaxspect.phantoms import elliptic_cylinder

N, NZ, OVERLAP, VOXEL = 12, 8, 3, 8.0


@pytest.fixture(scope="module")
def two_beds():
    """A long phantom (2 NZ - OVERLAP slices) seen by two beds of NZ slices each, reconstructed
    separately (no attenuation, noise-free)."""
    total_z = 2 * NZ - OVERLAP
    shape = (N, N, total_z)
    truth = np.asarray(elliptic_cylinder(shape, (VOXEL,) * 3, (30.0, 30.0)), np.float32)
    truth[:, :, NZ - 2] *= 3.0  # a hot slice inside the overlap
    psf = js.get_collimator("sy-lehr").psf(140.5)
    geometry = js.SPECTGeometry((N, N, NZ), (VOXEL,) * 3, psf, nview=12, radii=90.0)
    projector = js.SPECTProjector(geometry, None)
    beds, affines = [], []
    for start in (0, NZ - OVERLAP):
        y = projector(jnp.asarray(truth[:, :, start:start + NZ]))
        x = js.osem(projector, y, jnp.ones((N, N, NZ), jnp.float32), n_iter=5, n_subsets=3).image
        beds.append(np.asarray(x))
        affines.append(js.io.grid_affine((N, N, NZ), (VOXEL,) * 3, (0.0, 0.0, 100.0 + (start + (NZ - 1) / 2) * VOXEL)))
    return truth, beds, affines


def test_stitch_conserves_the_overlap(two_beds):
    truth, beds, affines = two_beds
    volume, affine = stitch_beds(beds, affines)
    assert volume.shape == truth.shape
    np.testing.assert_allclose(affine, affines[0])  # starts where bed 1 starts
    # outside the overlap each bed alone; inside a weighted mean: never a sum
    np.testing.assert_allclose(volume[:, :, :NZ - OVERLAP], beds[0][:, :, :NZ - OVERLAP], rtol=1e-6)
    np.testing.assert_allclose(volume[:, :, NZ:], beds[1][:, :, OVERLAP:], rtol=1e-6)
    overlap = slice(NZ - OVERLAP, NZ)
    for k_bed1, k_bed2, k in zip(range(NZ - OVERLAP, NZ), range(OVERLAP), range(NZ - OVERLAP, NZ)):
        lo, hi = sorted((beds[0][:, :, k_bed1].sum(), beds[1][:, :, k_bed2].sum()))
        assert lo - 1e-3 <= volume[:, :, k].sum() <= hi + 1e-3
    # both beds' activity in the overlap is conserved, and the whole volume matches the truth
    assert volume[:, :, overlap].sum() == pytest.approx(truth[:, :, overlap].sum(), rel=0.06)
    assert volume.sum() == pytest.approx(truth.sum(), rel=0.04)


def test_stitch_errors():
    a = js.io.grid_affine((4, 4, 3), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    shifted = js.io.grid_affine((4, 4, 3), (2.0, 2.0, 2.0), (0.0, 0.0, 3.0))  # 1.5 slices
    with pytest.raises(ValueError, match="whole slices apart"):
        stitch_beds([np.ones((4, 4, 3))] * 2, [a, shifted])
    moved = js.io.grid_affine((4, 4, 3), (2.0, 2.0, 2.0), (5.0, 0.0, 4.0))
    with pytest.raises(ValueError, match="bed 2: transaxial grid"):
        stitch_beds([np.ones((4, 4, 3))] * 2, [a, moved])


def test_cli_stitch(two_beds, tmp_path, capsys):
    pytest.importorskip("nibabel")
    pytest.importorskip("pydicom")
    from jaxspect._cli import main

    _, beds, affines = two_beds
    paths = []
    for b, (volume, affine) in enumerate(zip(beds, affines)):
        paths.append(js.io.write_dicom_volume(tmp_path / f"bed{b}", volume, affine, units="BQML"))
    assert main(["stitch", str(tmp_path / "bed1"), str(paths[0]), "--output", str(tmp_path / "wb.nii.gz")]) == 0
    expected, affine = stitch_beds(beds, affines)
    import nibabel

    image = nibabel.load(str(tmp_path / "wb.nii.gz"))
    np.testing.assert_allclose(np.asarray(image.dataobj), expected, rtol=1e-3, atol=1e-4 * float(expected.max()))
    np.testing.assert_allclose(np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine, affine, atol=1e-4)
    assert b"BQML" in image.header["descrip"].tobytes()
    js.io.write_dicom_volume(tmp_path / "counts", beds[0], affines[0], units="CNTS")
    with pytest.raises(SystemExit) as info:
        main(["stitch", str(tmp_path / "counts"), str(paths[1]), "--output", str(tmp_path / "x.nii")])
    assert info.value.code == 2 and "different units" in capsys.readouterr().err
