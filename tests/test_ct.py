"""SPECT/CT in scanner coordinates: CT series reading, HU -> mu, resampling onto the SPECT grid,
NIfTI/DICOM outputs, and one point that lands on the same patient coordinate everywhere."""

import numpy as np
import pytest

pytest.importorskip("pydicom")
pytest.importorskip("nibabel")

import jax.numpy as jnp  # noqa: E402
import nibabel  # noqa: E402
import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

import jaxspect as js  # noqa: E402
import jaxspect.io as jio  # noqa: E402
from jaxspect._cli import main  # noqa: E402
from jaxspect.io._ct import CARNEY_511KEV, bilinear_mu, bone_ct_number  # noqa: E402
from jaxspect.io._projections import views_to_frames  # noqa: E402
from jaxspect.phantoms import linear_attenuation  # noqa: E402

STUDY, FRAME = generate_uid(), generate_uid()


def _base(modality, sop_class):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.FrameOfReferenceUID = modality, STUDY, FRAME
    ds.PatientID, ds.PatientName = "PHANTOM-1", "Phantom^Point"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    return ds


def write_ct(folder, hu, affine, *, kvp=120.0, series_uid=None, shuffle=True, prefix="slice"):
    """A CT series, one file per slice; ``hu[a, b, c]`` = pixel (row b, column a) of slice c and
    ``affine`` maps (a, b, c) to patient LPS mm."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    order = np.random.default_rng(0).permutation(hu.shape[2]) if shuffle else np.arange(hu.shape[2])
    for n, c in enumerate(order):
        ds = _base("CT", "1.2.840.10008.5.1.4.1.1.2")
        ds.SeriesInstanceUID = series_uid
        if kvp is not None:
            ds.KVP = kvp
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.ImageOrientationPatient = [float(v) for v in (*(affine[:3, 0] / spacing[0]), *(affine[:3, 1] / spacing[1]))]
        ds.ImagePositionPatient = [float(v) for v in affine[:3, :] @ np.array([0.0, 0.0, c, 1.0])]
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        ds.PixelData = np.round(hu[:, :, c].T + 1024).astype("<u2").tobytes()
        ds.save_as(folder / f"{prefix}{n:03d}.dcm", enforce_file_format=True)
    return folder


def test_bilinear_model_reproduces_carney_at_511kev():
    mu_w, mu_b = 0.0960, 0.1716  # 1/cm at 511 keV: water, cortical bone (NIST)
    for kvp, (a, b, bp) in CARNEY_511KEV.items():
        hu = np.array([bp + 100.0, 500.0, 1000.0, 2000.0])
        np.testing.assert_allclose(bilinear_mu(hu, mu_w, mu_b, kvp), a * (hu + 1000) + b, rtol=2e-3)
        below = np.array([-1000.0, -500.0, 0.0])
        np.testing.assert_allclose(bilinear_mu(below, mu_w, mu_b, kvp), 9.6e-5 * (below + 1000), rtol=1e-6)
    # bone's CT number falls with kVp (beam hardening)
    hu_b = [bone_ct_number(k)[0] for k in (80, 100, 120, 140)]
    assert hu_b == sorted(hu_b, reverse=True) and 1200 < hu_b[-1] < hu_b[0] < 2100


def test_hu_to_mu_at_the_photopeak():
    e = 208.4
    mu = jio.hu_to_mu(np.array([-1000.0, -2000.0, 0.0, bone_ct_number(120)[0]]), e, 120)
    np.testing.assert_allclose(mu, [0.0, 0.0, linear_attenuation("water", e), linear_attenuation("bone", e)], rtol=1e-5)
    # higher kVp: the same HU means denser bone, so more attenuation
    assert jio.hu_to_mu(np.array([800.0]), e, 140)[0] > jio.hu_to_mu(np.array([800.0]), e, 80)[0]
    with pytest.raises(ValueError, match="outside the bilinear model's 80-140 kVp"):
        jio.hu_to_mu(np.zeros(1), e, 150)


def test_read_series_and_average_over_spect_voxels(tmp_path):
    # an oblique-ish CT: rows along -x, columns along +y, slices stacked towards the feet
    affine = np.array([[-1.5, 0, 0, 40.0], [0, 1.5, 0, -30.0], [0, 0, -2.0, 120.0], [0, 0, 0, 1]])
    shape = (40, 40, 30)
    a, b, c = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    x, y, z = (affine[r, 0] * a + affine[r, 1] * b + affine[r, 2] * c + affine[r, 3] for r in range(3))
    field = 2.0 * x - 1.0 * y + 0.5 * z  # linear in patient mm
    write_ct(tmp_path / "ct", field, affine)
    volume = jio.read_dicom_volume(tmp_path / "ct")
    np.testing.assert_allclose(volume.affine, affine, atol=1e-9)
    np.testing.assert_allclose(volume.array, np.round(field + 1024) - 1024, atol=1e-4)
    assert volume.kvp == 120.0 and volume.metadata["FrameOfReferenceUID"] == FRAME
    # SPECT grid of 6 mm voxels inside the CT whose voxel boundaries fall on CT voxel boundaries:
    # the average of a linear field over a SPECT voxel is its centre value
    grid = jio.grid_affine((4, 4, 3), (6.0, 6.0, 6.0), (22.75, -3.75, 90.0))
    out = jio.resample_to_grid(volume.array, volume.affine, (4, 4, 3), grid)
    i, j, k = np.meshgrid(np.arange(4), np.arange(4), np.arange(3), indexing="ij")
    cx, cy, cz = (grid[r, 0] * i + grid[r, 1] * j + grid[r, 2] * k + grid[r, 3] for r in range(3))
    np.testing.assert_allclose(out, 2.0 * cx - 1.0 * cy + 0.5 * cz, atol=0.5 + 1e-3)  # CT values rounded to 1 HU
    # the footprint: a CT voxel contributes to the SPECT voxels it overlaps, no others
    spot = np.zeros(shape)
    spot[19, 10, 19] = 1.0  # CT voxel x 10.75..12.25, y -15.75..-14.25, z 81..83: inside SPECT voxel (0, 0, 0)
    moved = jio.resample_to_grid(spot, affine, (4, 4, 3), grid)
    assert np.count_nonzero(moved) == 1 and moved[0, 0, 0] == pytest.approx(1 / (4 * 4 * 3))
    # the sub-sampled path (for grids that are not parallel) agrees where both are exact
    from jaxspect.io._ct import _resample_supersampled

    to_source = np.linalg.inv(volume.affine) @ grid
    np.testing.assert_allclose(_resample_supersampled(volume.array, to_source, (4, 4, 3), 12), out, rtol=1e-5, atol=1e-3)
    # a CT whose rows run along y (axes swapped): same patient field, same averages
    swapped = affine[:, [1, 0, 2, 3]]
    write_ct(tmp_path / "swapped", np.transpose(field, (1, 0, 2)), swapped)
    again = jio.read_dicom_volume(tmp_path / "swapped")
    np.testing.assert_allclose(jio.resample_to_grid(again.array, again.affine, (4, 4, 3), grid), out, atol=1e-3)
    # grids whose boundaries coincide up to rounding (9.6 mm voxels, 4.8 mm CT voxels): no spill-over
    block = np.zeros((8, 8, 4))
    block[2:6, 2:6, :] = 1.0
    fine = jio.grid_affine((8, 8, 4), (4.8, 4.8, 9.6), (1.7, -3.1, 0.3))
    coarse = jio.grid_affine((4, 4, 4), (9.6, 9.6, 9.6), (1.7, -3.1, 0.3))
    np.testing.assert_array_equal(jio.resample_to_grid(block, fine, (4, 4, 4), coarse) > 0,
                                  np.pad(np.ones((2, 2, 4), bool), ((1, 1), (1, 1), (0, 0))))
    # a step edge through the middle of a SPECT voxel: the average, not the nearest sample
    step = np.where(x < 5.0, 0.0, 1.0)
    edge = jio.resample_to_grid(step, affine, (1, 1, 1), jio.grid_affine((1, 1, 1), (6.0,) * 3, (5.0 - 0.75, 0.0, 90.0)))
    assert 0.3 < float(edge[0, 0, 0]) < 0.7
    # outside the CT: air
    far = jio.resample_to_grid(field, affine, (2, 2, 2), jio.grid_affine((2, 2, 2), (6.0,) * 3, (500.0, 0.0, 0.0)))
    assert np.all(far == 0)


def test_ct_series_errors(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    hu = np.zeros((4, 4, 3))
    write_ct(tmp_path / "two", hu, affine, series_uid="1.2.3")
    write_ct(tmp_path / "two", hu, affine, series_uid="1.2.4", prefix="other")
    with pytest.raises(ValueError, match="holds 2 series"):
        jio.read_dicom_volume(tmp_path / "two")
    assert jio.read_dicom_volume(tmp_path / "two", series_uid="1.2.4").array.shape == (4, 4, 3)
    write_ct(tmp_path / "nokvp", hu, affine, kvp=None)
    with pytest.raises(ValueError, match=r"lacks KVP \(0018,0060\)"):
        jio.ct_to_mumap(tmp_path / "nokvp", 140.5, (2, 2, 2), np.eye(4))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no DICOM image slices"):
        jio.read_dicom_volume(tmp_path / "empty")


# --- one point through SPECT input, CT and outputs ----------------------------------------------

N, NZ, NVIEW, VOXEL = 16, 8, 16, 6.0
CENTRE = np.array([12.0, -20.0, 300.0])  # patient LPS mm of the SPECT grid centre (on the rotation axis)
HOT = (11, 5, 2)  # the point source's voxel


def _patient(index):
    return CENTRE + (np.asarray(index, np.float64) - (np.array([N, N, NZ]) - 1) / 2) * VOXEL


def write_nm(path, views, angles_deg, radius):
    """One-head NM TOMO file whose first frame (gantry 0, anterior) has IPP/IOP placing the
    SPECT grid centre at CENTRE."""
    ds = _base("NM", "1.2.840.10008.5.1.4.1.1.20")
    ds.SeriesInstanceUID = generate_uid()
    frames = views_to_frames(views)
    ds.Rows, ds.Columns, ds.NumberOfFrames = NZ, N, NVIEW
    ds.PixelSpacing = [VOXEL, VOXEL]
    scale = float(frames.max()) / 65535
    ds.RescaleSlope = scale
    ds.PixelData = np.round(frames / scale).astype("<u2").tobytes()
    window, rng = Dataset(), Dataset()
    rng.EnergyWindowLowerLimit, rng.EnergyWindowUpperLimit = 126.0, 155.0
    window.EnergyWindowRangeSequence, window.EnergyWindowName = [rng], "TC99M"
    ds.EnergyWindowInformationSequence = [window]
    detector = Dataset()
    row_dir, col_dir = np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
    detector.ImageOrientationPatient = [*row_dir, *col_dir]
    detector.ImagePositionPatient = list(CENTRE - (N - 1) / 2 * VOXEL * row_dir - (NZ - 1) / 2 * VOXEL * col_dir)
    detector.StartAngle, detector.RadialPosition = angles_deg[0], radius
    ds.DetectorInformationSequence = [detector]
    rotation = Dataset()
    rotation.StartAngle, rotation.AngularStep, rotation.RotationDirection = angles_deg[0], 360.0 / NVIEW, "CC"
    rotation.NumberOfFramesInRotation = NVIEW
    rotation.ActualFrameDuration = 20000  # ms
    ds.RotationInformationSequence = [rotation]
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def spect_ct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("spectct")
    # CT: a water cylinder with a bone marker centred on the hot voxel, 3 mm voxels, its own grid
    ct_affine = np.array([[3.0, 0, 0, CENTRE[0] - 60], [0, 3.0, 0, CENTRE[1] - 60], [0, 0, 3.0, CENTRE[2] - 36],
                          [0, 0, 0, 1]])
    shape = (41, 41, 25)
    a, b, c = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    pos = np.stack([ct_affine[r, 0] * a + ct_affine[r, 1] * b + ct_affine[r, 2] * c + ct_affine[r, 3]
                    for r in range(3)], axis=-1)
    hu = np.full(shape, -1000.0)
    hu[np.hypot(pos[..., 0] - CENTRE[0], pos[..., 1] - CENTRE[1]) < 45] = 0.0
    hot = _patient(HOT)
    hu[np.all(np.abs(pos - hot) <= 3.0, axis=-1)] = 1400.0
    write_ct(folder / "ct", hu, ct_affine)
    # SPECT: a point source at HOT, projected through the CT-derived map (the reader's geometry)
    angles = np.arange(NVIEW) * 360.0 / NVIEW
    mumap = jio.ct_to_mumap(folder / "ct", 140.5, (N, N, NZ), jio.grid_affine((N, N, NZ), (VOXEL,) * 3, CENTRE))
    geometry = js.SPECTGeometry((N, N, NZ), (VOXEL,) * 3, js.get_collimator("sy-lehr").psf(140.5),
                                angles=np.deg2rad(angles), radii=150.0)
    source = np.zeros((N, N, NZ), np.float32)
    source[HOT] = 1000.0
    source[N // 2, N // 2, NZ // 2] = 200.0
    views = np.asarray(js.forward_project(jnp.asarray(source), jnp.asarray(mumap), geometry))
    write_nm(folder / "nm.dcm", views, angles, 150.0)
    return folder, mumap


def test_nm_geometry_matches_dicom_semantics(spect_ct):
    folder, _ = spect_ct
    data = jio.read_dicom_projections(folder / "nm.dcm")
    np.testing.assert_allclose(data.centre_mm, CENTRE)
    assert data.photopeak_kev == pytest.approx(140.5)
    assert data.metadata["frame_duration_s"] == 20.0 and data.metadata["StudyInstanceUID"] == STUDY
    # anterior frame 0, read straight from the DICOM pixels: the point is at column (x - IPP_x) / dx
    # and row (IPP_z - z) / dz of IPP = ImagePositionPatient
    ds = pydicom.dcmread(folder / "nm.dcm")
    frame0 = ds.pixel_array[0]
    ipp = np.asarray(ds.DetectorInformationSequence[0].ImagePositionPatient, np.float64)
    row, col = np.unravel_index(np.argmax(frame0), frame0.shape)
    hot = _patient(HOT)
    assert (col, row) == (round((hot[0] - ipp[0]) / VOXEL), round((ipp[2] - hot[2]) / VOXEL))


def test_point_lands_on_one_patient_coordinate(spect_ct, tmp_path, capsys):
    folder, mumap = spect_ct
    hot = _patient(HOT)
    # the CT-derived map: its bone marker sits at the hot voxel
    assert np.unravel_index(np.argmax(mumap), mumap.shape) == HOT
    assert mumap[HOT] > 1.5 * linear_attenuation("water", 140.5)
    base = ["reconstruct", str(folder / "nm.dcm"), "--ct", str(folder / "ct"), "--collimator", "sy-lehr",
            "--iterations", "4", "--subsets", "4", "--no-progress"]
    assert main([*base, "--output", str(tmp_path / "dicom"), "--format", "dicom"]) == 0
    assert main([*base, "--output", str(tmp_path / "recon.nii.gz")]) == 0
    printed = capsys.readouterr().out
    assert "attenuation map from CT" in printed and "at 140.5 keV" in printed
    # DICOM output, read with pydicom alone
    ds = pydicom.dcmread(tmp_path / "dicom" / "recon.dcm")
    assert ds.StudyInstanceUID == STUDY and ds.FrameOfReferenceUID == FRAME and ds.PatientID == "PHANTOM-1"
    assert ds.SeriesInstanceUID != jio.read_dicom_projections(folder / "nm.dcm").metadata["SeriesInstanceUID"]
    assert ds.Units == "CNTS" and list(ds.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    assert ds.NumberOfFrames == NZ and float(ds.SliceThickness) == VOXEL and list(ds.PixelSpacing) == [VOXEL, VOXEL]
    frames = ds.pixel_array * float(ds.RescaleSlope)  # (k, row j, column i)
    k, j, i = np.unravel_index(np.argmax(frames), frames.shape)
    ipp = np.asarray(ds.ImagePositionPatient, np.float64)
    position = ipp + i * VOXEL * np.array([1, 0, 0]) + j * VOXEL * np.array([0, 1, 0]) + k * VOXEL * np.array([0, 0, 1])
    np.testing.assert_allclose(position, hot, atol=1e-6)
    # ... and with jaxspect
    volume = jio.read_dicom_volume(tmp_path / "dicom" / "recon.dcm")
    index = np.unravel_index(np.argmax(volume.array), volume.array.shape)
    np.testing.assert_allclose(volume.affine @ np.array([*index, 1.0]), [*hot, 1.0], atol=1e-6)
    # NIfTI output: RAS world = (-x, -y, z) of the same point
    image = nibabel.load(str(tmp_path / "recon.nii.gz"))
    data = np.asarray(image.dataobj)
    index = np.unravel_index(np.argmax(data), data.shape)
    np.testing.assert_allclose(image.affine @ np.array([*index, 1.0]), [-hot[0], -hot[1], hot[2], 1.0], atol=1e-4)
    np.testing.assert_allclose(data, volume.array, rtol=1e-3, atol=1e-4 * float(data.max()))


def test_cli_ct_errors(spect_ct, tmp_path, capsys):
    folder, _ = spect_ct
    out = ["--output", str(tmp_path / "r.nii"), "--collimator", "sy-lehr", "--iterations", "1", "--no-progress"]

    def fails(argv, *needles):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        for needle in needles:
            assert needle in err, (needle, err)

    fails(["reconstruct", str(folder / "nm.dcm"), "--ct", str(tmp_path / "nowhere"), *out], "--ct folder not found")
    fails(["reconstruct", str(folder / "nm.dcm"), "--ct", str(folder / "ct"), "--mumap", "m.nii", *out], "not both")
    write_ct(tmp_path / "nokvp", np.zeros((4, 4, 2)), np.eye(4), kvp=None)
    fails(["reconstruct", str(folder / "nm.dcm"), "--ct", str(tmp_path / "nokvp"), *out], "KVP (0018,0060)", "--kvp")
    interfile = tmp_path / "p.h00"
    jio.write_interfile(interfile, jio.ProjectionData(np.ones((N, NZ, 4), np.float32), np.arange(4) * np.pi / 2, 150.0,
                                                      (VOXEL, VOXEL)))
    fails(["reconstruct", str(interfile), "--ct", str(folder / "ct"), "--energy", "140", *out],
          "--ct needs the patient position", "ImagePositionPatient")
    fails(["reconstruct", str(folder / "nm.dcm"), "--output", str(tmp_path / "x.nii"), "--format", "dicom",
           "--collimator", "sy-lehr"], "--format dicom writes into a folder")


def test_write_dicom_projections_and_ct_round_trip(tmp_path):
    import datetime

    rng = np.random.default_rng(1)
    counts = rng.poisson(50.0, (N, NZ, 12)).astype(np.float32)
    angles = np.deg2rad(15.0 + 30.0 * np.arange(12))  # the reader sorts views by angle in [0, 360)
    radii = 150.0 + np.arange(12)
    data = jio.ProjectionData(counts, angles, radii, (VOXEL, 4.0), window_ranges_kev={"p": (187.2, 228.8)},
                              windows={"p": counts}, photopeak="p")
    injected = datetime.datetime(2026, 5, 4, 9, 30, 0)
    jio.write_dicom_projections(tmp_path / "nm.dcm", data, centre_mm=CENTRE, frame_duration_s=25.0,
                                reference={"PatientID": "P7"}, half_life_s=574300.0, injection_datetime=injected,
                                acquisition_datetime=injected + datetime.timedelta(hours=24))
    back = jio.read_dicom_projections(tmp_path / "nm.dcm")
    np.testing.assert_allclose(back.counts, counts, atol=counts.max() / 65535)
    np.testing.assert_allclose(np.rad2deg(back.angles), np.rad2deg(angles), atol=1e-9)
    np.testing.assert_allclose(back.radii, radii)
    np.testing.assert_allclose(back.centre_mm, CENTRE, atol=1e-9)
    assert back.pixel_size_mm == (VOXEL, 4.0) and back.photopeak_kev == pytest.approx(208.0)
    meta = back.metadata
    assert meta["frame_duration_s"] == 25.0 and meta["acquisition_duration_s"] == 300.0
    assert meta["half_life_s"] == 574300.0 and meta["injection_datetime"] == injected and meta["PatientID"] == "P7"
    # CT series written by jaxspect, read back, shares the SPECT series' study and frame of reference
    affine = jio.grid_affine((5, 4, 3), (2.0, 2.5, 3.0), (1.0, 2.0, 3.0))
    hu = rng.integers(-1000, 1500, (5, 4, 3)).astype(np.float64)
    jio.write_dicom_ct(tmp_path / "ct", hu, affine, kvp=100.0, reference=meta)
    ct = jio.read_dicom_volume(tmp_path / "ct")
    np.testing.assert_array_equal(ct.array, hu)
    np.testing.assert_allclose(ct.affine, affine)
    assert ct.kvp == 100.0 and ct.metadata["StudyInstanceUID"] == meta["StudyInstanceUID"]


def test_dicom_volume_signed_values_and_errors(tmp_path):
    volume = np.linspace(-5.0, 20.0, 4 * 3 * 2).reshape(4, 3, 2)
    affine = jio.grid_affine((4, 3, 2), (2.0, 2.0, 3.0), (1.0, -2.0, 50.0))
    path = jio.write_dicom_volume(tmp_path, volume, affine, units="BQML", name="signed")
    back = jio.read_dicom_volume(path)
    np.testing.assert_allclose(back.array, volume, atol=20.0 / 32767)
    np.testing.assert_allclose(back.affine, affine)
    assert back.metadata["Units"] == "BQML" and back.metadata["Modality"] == "NM"
    with pytest.raises(ValueError, match="NaN or Inf"):
        jio.write_dicom_volume(tmp_path, np.full((2, 2, 2), np.nan), affine)
    with pytest.raises(ValueError, match="right-handed"):
        jio.write_dicom_volume(tmp_path, volume, np.diag([2.0, 2.0, -3.0, 1.0]))
