"""File formats: SIMIND/Interfile and DICOM NM projections, NIfTI volumes (written here, read back)."""

import numpy as np
import pytest

import jaxspect as js
from jaxspect import io as jio

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")


# --- Interfile -----------------------------------------------------------------------------------


def _data(nx=6, nz=4, nview=8, radii=None, start=0.0, sign=1.0):
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, (nx, nz, nview)).astype(np.float32) + rng.random((nx, nz, nview)).astype(np.float32)
    angles = np.deg2rad(start + sign * 360.0 * np.arange(nview) / nview)
    return jio.ProjectionData(counts, angles, radii, (4.5, 3.25))


def test_interfile_round_trip_non_circular(tmp_path):
    radii = 200.0 + 10.0 * np.sin(np.arange(8))
    data = _data(radii=radii)
    data_path = jio.write_interfile(tmp_path / "proj.h00", data)
    assert data_path == tmp_path / "proj.a00" and data_path.stat().st_size == 6 * 4 * 8 * 4
    back = jio.read_projections(tmp_path / "proj.h00")
    np.testing.assert_array_equal(back.counts, data.counts)
    np.testing.assert_allclose(back.angles, data.angles, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(back.radii, radii)
    assert back.pixel_size_mm == (4.5, 3.25)
    geometry = back.spect_geometry(js.GaussianPSF(2.5, 0.1))
    assert geometry.image_shape == (6, 6, 4) and geometry.voxel_size == (4.5, 4.5, 3.25)
    assert geometry.views_shape == data.counts.shape
    np.testing.assert_allclose(np.asarray(geometry.radii), radii, rtol=1e-6)


def test_interfile_round_trip_clockwise_circular_and_cor(tmp_path):
    data = _data(radii=np.full(8, 250.0), start=90.0, sign=-1.0)
    jio.write_interfile(tmp_path / "cw.h00", data, cor=True)
    header = jio.parse_interfile_header(tmp_path / "cw.h00")
    assert header["direction of rotation"] == "CW" and float(header["radius"]) == 250.0
    assert float(header["start angle"]) == 90.0 and float(header["extent of rotation"]) == 360.0
    back = jio.read_interfile(tmp_path / "cw.h00")
    np.testing.assert_allclose(np.mod(back.angles - data.angles + np.pi, 2 * np.pi) - np.pi, 0, atol=1e-12)
    np.testing.assert_array_equal(back.radii, 250.0)
    # the SIMIND orbit file is in cm
    assert (tmp_path / "cw.cor").read_text().splitlines()[0] == "25"
    np.testing.assert_allclose(jio.read_cor(tmp_path / "cw.cor", 8), 250.0)


SIMIND_HEADER = """!INTERFILE :=
!imaging modality := nucmed
!originating system := simind
;comment line
!GENERAL DATA :=
!data offset in bytes := 0
!name of data file := {data}
!GENERAL IMAGE DATA :=
!type of data := Tomographic
!total number of images := {nview}
imagedata byte order := BIGENDIAN
!number format := signed integer
!number of bytes per pixel := 2
!SPECT STUDY (general) :=
!matrix size[1] := {nx}
!matrix size[2] := {nz}
scaling factor (mm/pixel) [1] := 4.42
scaling factor (mm/pixel) [2] := 4.42
!number of projections := {nview}
!extent of rotation := 360
!process status := acquired
!SPECT STUDY (acquired data) :=
!direction of rotation := CCW
start angle := 180
Radius := 23.5
energy window lower level[1] := 187.6
energy window upper level[1] := 229.2
!END OF INTERFILE :=
"""


def _simind(tmp_path, nx=5, nz=3, nview=4, **overrides):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 300, (nview, nz, nx)).astype(">i2")
    frames.tofile(tmp_path / "sim.a00")
    text = SIMIND_HEADER.format(data="sim.a00", nx=nx, nz=nz, nview=nview)
    for key, value in overrides.items():
        text = text.replace(key, value)
    (tmp_path / "sim.h00").write_text(text)
    return frames


def test_simind_header_big_endian_int16_and_cor(tmp_path):
    frames = _simind(tmp_path)
    data = jio.read_interfile(tmp_path / "sim.h00")
    assert data.counts.shape == (5, 3, 4) and data.counts.dtype == np.float32
    # column -> bin i, row 0 (head end) -> k = nz - 1
    for l in range(4):
        np.testing.assert_array_equal(data.counts[:, :, l], frames[l, ::-1, :].T)
    np.testing.assert_allclose(np.rad2deg(data.angles), [180, 270, 360, 450])  # CCW: increasing
    np.testing.assert_array_equal(data.radii, 23.5)  # 'Radius' is in mm
    assert data.pixel_size_mm == (4.42, 4.42)
    assert data.window_ranges_kev == {"window_1": (187.6, 229.2)}
    # SIMIND's .cor: cm by default, first number per line, overrides Radius
    (tmp_path / "sim.cor").write_text("20.5 0\n21.0 0\n\n22.5 0\n21.0 0\n")
    with_cor = jio.read_interfile(tmp_path / "sim.h00", cor=tmp_path / "sim.cor")
    np.testing.assert_allclose(with_cor.radii, [205, 210, 225, 210])
    in_mm = jio.read_interfile(tmp_path / "sim.h00", cor=tmp_path / "sim.cor", cor_units="mm")
    np.testing.assert_allclose(in_mm.radii, [20.5, 21.0, 22.5, 21.0])


def test_interfile_errors(tmp_path):
    _simind(tmp_path)
    (tmp_path / "sim.cor").write_text("20\n21\n")
    with pytest.raises(ValueError, match=r"sim.cor has 2 radii, expected one per view \(4\)"):
        jio.read_interfile(tmp_path / "sim.h00", cor=tmp_path / "sim.cor")
    with pytest.raises(FileNotFoundError, match="nothere.cor"):
        jio.read_interfile(tmp_path / "sim.h00", cor=tmp_path / "nothere.cor")
    with pytest.raises(FileNotFoundError, match="missing.h00"):
        jio.read_interfile(tmp_path / "missing.h00")

    _simind(tmp_path, **{"!matrix size[1] := 5": "!matrix size[1] := 6"})
    with pytest.raises(ValueError, match=r"holds 120 bytes.*matrix size 6 x 3 x 4 projections of int16 = 144 bytes"):
        jio.read_interfile(tmp_path / "sim.h00")
    _simind(tmp_path, **{"!total number of images := 4": "!total number of images := 12"})
    with pytest.raises(ValueError, match="'total number of images' \\(12\\) differs"):
        jio.read_interfile(tmp_path / "sim.h00")
    _simind(tmp_path, **{"!matrix size[2] := 3\n": ""})
    with pytest.raises(ValueError, match=r"lacks the key 'matrix size \[2\]'"):
        jio.read_interfile(tmp_path / "sim.h00")
    _simind(tmp_path, **{"direction of rotation := CCW": "direction of rotation := sideways"})
    with pytest.raises(ValueError, match="must be CW or CCW"):
        jio.read_interfile(tmp_path / "sim.h00")
    _simind(tmp_path)
    (tmp_path / "sim.a00").unlink()
    with pytest.raises(FileNotFoundError, match=r"data file .*sim.a00 named in Interfile header"):
        jio.read_interfile(tmp_path / "sim.h00")
    (tmp_path / "scan.raw").write_bytes(b"")
    with pytest.raises(ValueError, match=r"unknown projection file format '.raw'"):
        jio.read_projections(tmp_path / "scan.raw")
    uneven = jio.ProjectionData(np.ones((4, 2, 3), np.float32), [0.0, 0.1, 0.5], None, (1.0, 1.0))
    with pytest.raises(ValueError, match="equally spaced angles"):
        jio.write_interfile(tmp_path / "u.h00", uneven)
    with pytest.raises(ValueError, match=r"angles must have shape \(nview,\) = \(3,\)"):
        jio.ProjectionData(np.ones((4, 2, 3), np.float32), [0.0, 0.1], None, (1.0, 1.0))


# --- DICOM NM ------------------------------------------------------------------------------------

NX, NZ, NV = 6, 4, 4  # columns, rows, views per head


def _window(name, lo, hi):
    from pydicom.dataset import Dataset

    item, rng = Dataset(), Dataset()
    rng.EnergyWindowLowerLimit, rng.EnergyWindowUpperLimit = lo, hi
    item.EnergyWindowRangeSequence = [rng]
    item.EnergyWindowName = name
    return item


def _nm_dataset(path, *, drop=(), heads=(0.0, 180.0), windows=(("SC_LOW", 166.0, 187.0), ("PEAK", 187.0, 229.0), ("SC_HIGH", 229.0, 250.0))):
    """A two-head, three-window NM TOMO file: frames ordered window-major, then head, then view.
    Returns the frames as {(window, head, view): (rows, cols) array}."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    nw, nd = len(windows), len(heads)
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 1000, (nw, nd, NV, NZ, NX)).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.20"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "NM"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"]
    ds.Rows, ds.Columns, ds.NumberOfFrames = NZ, NX, nw * nd * NV
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [3.5, 4.0]  # rows (axial), columns (bins)
    ds.RescaleSlope = 0.5
    ds.NumberOfEnergyWindows = nw
    ds.EnergyWindowInformationSequence = [_window(*w) for w in windows]
    ds.NumberOfDetectors = nd
    detectors = []
    for d, start in enumerate(heads):
        item = Dataset()
        item.StartAngle = start
        item.RadialPosition = [200.0 + 10 * d + v for v in range(NV)]
        detectors.append(item)
    ds.DetectorInformationSequence = detectors
    rotation = Dataset()
    rotation.StartAngle, rotation.AngularStep, rotation.RotationDirection = heads[0], 45.0, "CW"
    rotation.NumberOfFramesInRotation, rotation.ScanArc = NV, 180.0
    ds.NumberOfRotations = 1
    ds.RotationInformationSequence = [rotation]
    w_idx, d_idx, v_idx = np.meshgrid(np.arange(nw), np.arange(nd), np.arange(NV), indexing="ij")
    ds.EnergyWindowVector = [int(v) for v in w_idx.ravel() + 1]
    ds.DetectorVector = [int(v) for v in d_idx.ravel() + 1]
    ds.RotationVector = [1] * (nw * nd * NV)
    ds.AngularViewVector = [int(v) for v in v_idx.ravel() + 1]
    ds.PixelData = frames.astype("<u2").tobytes()
    for keyword in drop:
        if "." in keyword:
            seq, key = keyword.split(".")
            for item in getattr(ds, seq):
                delattr(item, key)
        else:
            delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    return frames


def test_dicom_two_heads_three_windows(tmp_path):
    frames = _nm_dataset(tmp_path / "nm.dcm")
    data = jio.read_projections(tmp_path / "nm.dcm", scatter="tew")
    assert data.photopeak == "PEAK" and set(data.windows) == {"SC_LOW", "PEAK", "SC_HIGH"}
    assert data.counts.shape == (NX, NZ, 2 * NV)
    assert data.pixel_size_mm == (4.0, 3.5)
    # head 1 at 0, -45, -90, -135 deg (CW), head 2 at 180, 135, 90, 45: merged, sorted by angle
    np.testing.assert_allclose(np.rad2deg(data.angles), 45.0 * np.arange(8), atol=1e-12)
    expected_source = {0: (0, 0), 1: (1, 3), 2: (1, 2), 3: (1, 1), 4: (1, 0), 5: (0, 3), 6: (0, 2), 7: (0, 1)}
    for m, (d, v) in expected_source.items():
        np.testing.assert_array_equal(data.counts[:, :, m], 0.5 * frames[1, d, v, ::-1, :].T)
        np.testing.assert_array_equal(data.windows["SC_LOW"][:, :, m], 0.5 * frames[0, d, v, ::-1, :].T)
        assert data.radii[m] == 200.0 + 10 * d + v
    lower, upper = data.windows["SC_LOW"], data.windows["SC_HIGH"]
    np.testing.assert_allclose(data.background, (lower / 21 + upper / 21) * 42 / 2, rtol=1e-6)
    assert data.window_ranges_kev["PEAK"] == (187.0, 229.0)
    dew = jio.read_dicom_projections(tmp_path / "nm.dcm", scatter="dew", dew_k=0.4)
    np.testing.assert_allclose(dew.background, 0.4 * lower, rtol=1e-6)
    by_number = jio.read_dicom_projections(tmp_path / "nm.dcm", window=3)
    assert by_number.photopeak == "SC_HIGH"
    geometry = data.spect_geometry(js.GaussianPSF(2.5, 0.1))
    assert geometry.views_shape == data.counts.shape and geometry.voxel_size == (4.0, 4.0, 3.5)


def test_dicom_missing_fields_and_overrides(tmp_path):
    _nm_dataset(tmp_path / "a.dcm", drop=("PixelSpacing",))
    with pytest.raises(ValueError, match=r"lacks PixelSpacing \(0028,0030\).*pixel_spacing_mm="):
        jio.read_dicom_projections(tmp_path / "a.dcm")
    assert jio.read_dicom_projections(tmp_path / "a.dcm", pixel_spacing_mm=(2.0, 3.0)).pixel_size_mm == (2.0, 3.0)

    _nm_dataset(tmp_path / "b.dcm", drop=("DetectorInformationSequence.RadialPosition",))
    with pytest.raises(ValueError, match=r"lacks RadialPosition \(0018,1142\).*radius_mm="):
        jio.read_dicom_projections(tmp_path / "b.dcm")
    np.testing.assert_array_equal(jio.read_dicom_projections(tmp_path / "b.dcm", radius_mm=220.0).radii, 220.0)

    _nm_dataset(tmp_path / "c.dcm", drop=("RotationInformationSequence.AngularStep",))
    with pytest.raises(ValueError, match=r"lacks AngularStep \(0018,1144\) in the Rotation Information Sequence"):
        jio.read_dicom_projections(tmp_path / "c.dcm")

    _nm_dataset(tmp_path / "d.dcm", drop=("EnergyWindowVector",))
    with pytest.raises(ValueError, match=r"EnergyWindowVector \(0054,0010\) to index but lacks it"):
        jio.read_dicom_projections(tmp_path / "d.dcm")

    _nm_dataset(tmp_path / "e.dcm", windows=(("PEAK", 187.0, 229.0), ("SC_HIGH", 229.0, 250.0)))
    with pytest.raises(ValueError, match="scatter='tew' needs energy windows"):
        jio.read_dicom_projections(tmp_path / "e.dcm", scatter="tew", window="PEAK")
    with pytest.raises(ValueError, match="window 'P' not found"):
        jio.read_dicom_projections(tmp_path / "e.dcm", window="P")
    with pytest.raises(FileNotFoundError, match="nope.dcm"):
        jio.read_dicom_projections(tmp_path / "nope.dcm")
    (tmp_path / "junk.dcm").write_text("not dicom")
    with pytest.raises(ValueError, match="junk.dcm is not a readable DICOM file"):
        jio.read_dicom_projections(tmp_path / "junk.dcm")


def test_dicom_angles_match_projector_convention(tmp_path):
    """DICOM gantry 90 deg puts the detector at the patient's right (i = 0 side in LPS): a source
    near the patient's right is seen with less attenuation from 90 deg than from 270 deg."""
    _nm_dataset(tmp_path / "nm.dcm", windows=(("PEAK", 187.0, 229.0),))
    data = jio.read_dicom_projections(tmp_path / "nm.dcm", radius_mm=60.0)
    n, nz = NX, NZ
    geometry = js.SPECTGeometry((n, n, nz), (4.0, 4.0, 3.5), js.GaussianPSF(1.0, 0.0), angles=data.angles, radii=60.0)
    mumap = np.full((n, n, nz), 0.05, np.float32)
    source = np.zeros((n, n, nz), np.float32)
    source[0, n // 2, :] = 1.0  # i = 0: the patient's right
    views = np.asarray(js.forward_project(source, mumap, geometry)).sum(axis=(0, 1))
    deg = np.rad2deg(data.angles).round().astype(int).tolist()
    assert views[deg.index(90)] > 2 * views[deg.index(270)]


# --- NIfTI and scatter ---------------------------------------------------------------------------


def test_nifti_round_trip_and_orientation(tmp_path):
    rng = np.random.default_rng(3)
    volume = rng.random((5, 5, 3)).astype(np.float32)
    jio.write_nifti(tmp_path / "v.nii.gz", volume, (4.8, 4.8, 2.4))
    back, voxel = jio.read_nifti(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(back, volume)
    assert voxel == (4.8, 4.8, 2.4)
    image = nib.load(str(tmp_path / "v.nii.gz"))
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    np.testing.assert_allclose(image.affine @ [2, 2, 1, 1], [0, 0, 0, 1])  # grid centre at the origin
    mask = volume > 0.5
    jio.write_nifti(tmp_path / "m.nii", mask, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(jio.read_nifti(tmp_path / "m.nii")[0] > 0, mask)
    # a RAS-ordered file from another tool comes back on jaxspect's LPS axes
    ras = nib.Nifti1Image(volume[::-1, ::-1, :].copy(), np.diag([4.8, 4.8, 2.4, 1.0]))
    nib.save(ras, str(tmp_path / "ras.nii"))
    back, voxel = jio.read_nifti(tmp_path / "ras.nii")
    np.testing.assert_array_equal(back, volume)
    assert voxel == (4.8, 4.8, 2.4)
    # axes permuted (z first) as well
    zyx = nib.Nifti1Image(np.transpose(volume, (2, 1, 0)).copy(), np.array(
        [[0, 0, -4.8, 0], [0, -3.0, 0, 0], [2.4, 0, 0, 0], [0, 0, 0, 1.0]]))
    nib.save(zyx, str(tmp_path / "zyx.nii"))
    back, voxel = jio.read_nifti(tmp_path / "zyx.nii")
    np.testing.assert_array_equal(back, volume)
    assert voxel == (4.8, 3.0, 2.4)


def test_nifti_errors(tmp_path):
    with pytest.raises(ValueError, match=r"must end in .nii or .nii.gz"):
        jio.write_nifti(tmp_path / "v.img", np.zeros((2, 2, 2)), (1, 1, 1))
    with pytest.raises(ValueError, match=r"volume must have shape \(nx, ny, nz\)"):
        jio.write_nifti(tmp_path / "v.nii", np.zeros((2, 2)), (1, 1, 1))
    with pytest.raises(FileNotFoundError, match="absent.nii"):
        jio.read_nifti(tmp_path / "absent.nii")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), str(tmp_path / "t.nii"))
    with pytest.raises(ValueError, match=r"must hold a 3-D volume, got shape \(2, 2, 2, 3\)"):
        jio.read_nifti(tmp_path / "t.nii")


def test_scatter_formulas():
    lower, upper = np.full((2, 2, 1), 30.0), np.full((2, 2, 1), 10.0)
    np.testing.assert_allclose(jio.tew_scatter(lower, upper, lower_width_kev=6, upper_width_kev=5, peak_width_kev=40),
                               (30 / 6 + 10 / 5) * 40 / 2)
    np.testing.assert_allclose(jio.dew_scatter(lower), 15.0)
    with pytest.raises(ValueError, match="peak_width_kev must be a positive"):
        jio.tew_scatter(lower, upper, lower_width_kev=6, upper_width_kev=5, peak_width_kev=0)
    ranges = {"a": (100, 110), "b": (110, 150), "c": (150, 160)}
    assert jio.pick_windows(ranges) == ("b", "a", "c")
    assert jio.pick_windows({"lo": (92, 125), "pk": (126, 154)}) == ("pk", "lo", None)
