"""Hostile and clumsy input: every bad file is generated here, at run time, and each test asserts
the clause of the README's input contract it must meet:

1. a CLI user error exits with status 2 and one message naming the file or argument, no traceback;
2. a data file named in a header resolves inside the header's folder, else it is refused unread;
3. outputs: never overwritten without --overwrite, never equal to an input, checked before any
   computation, written atomically (old file or none after a crash);
4. no silent wrong result: non-finite numbers, μ-maps in the wrong unit, byte-swapped data, zero
   angular steps and oblique affines are refused;
5. memory is bounded by validation (checked in a subprocess under an address-space limit).
"""

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jaxspect as js  # noqa: E402
from jaxspect import io as jio  # noqa: E402
from jaxspect._cli import main  # noqa: E402
from jaxspect.nn import PaperCNN  # noqa: E402
from jaxspect.recon import UnrolledEM  # noqa: E402

NX, NZ, NVIEW, PIXEL = 8, 4, 6, 4.0
REPO = Path(__file__).resolve().parents[1]


def _projections(seed=0, radius=100.0):
    counts = np.random.default_rng(seed).poisson(20.0, (NX, NZ, NVIEW)).astype(np.float32)
    angles = 2 * np.pi * np.arange(NVIEW) / NVIEW
    return jio.ProjectionData(counts, angles, radius, (PIXEL, PIXEL))


def _body(shape=(NX, NX, NZ)):
    i, j = np.meshgrid(np.arange(shape[0]) - (shape[0] - 1) / 2, np.arange(shape[1]) - (shape[1] - 1) / 2,
                       indexing="ij")
    return np.broadcast_to(((i / 3.2) ** 2 + (j / 2.6) ** 2 <= 1)[..., None], shape)


@pytest.fixture
def files(tmp_path):
    """Valid small inputs: projections (Interfile) and a μ-map in 1/mm."""
    jio.write_interfile(tmp_path / "proj.h00", _projections())
    mumap = np.where(_body(), 0.015, 0.0).astype(np.float32)  # water at 140 keV, 1/mm
    jio.write_nifti(tmp_path / "mu.nii.gz", mumap, (PIXEL,) * 3)
    return tmp_path


def _fails(capsys, argv, *needles):
    """Clause 1: status 2, one ``jaxspect: error:`` line naming each needle, no traceback."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("jaxspect: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert str(needle) in err, (needle, err)
    return err


def _header(folder, name="proj.h00", **replace):
    text = (folder / "proj.h00").read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    (folder / name).write_text(text)
    return folder / name


# --- clause 2: a header names files in its own folder only -----------------------------------------


def test_data_file_outside_the_header_folder_is_refused_undescribed(files, tmp_path_factory, capsys):
    outside = tmp_path_factory.mktemp("private")
    secret = outside / "secret.a00"
    secret.write_bytes(np.arange(NX * NZ * NVIEW, dtype="<f4").tobytes())
    (files / "link.a00").symlink_to(secret)
    relative = os.path.relpath(secret, files)
    cases = {"absolute": str(secret), "escaping": relative, "symlink": "link.a00"}
    for kind, name in cases.items():
        header = _header(files, f"{kind}.h00", **{"name of data file := proj.a00": f"name of data file := {name}"})
        with pytest.raises(jio.FileCheckError) as info:
            jio.read_interfile(header)
        message = str(info.value)
        assert "name of data file" in message and str(header) in message
        assert "must lie in" in message and "not found" not in message
        assert str(secret.stat().st_size) not in message  # nothing about the target is disclosed
        err = _fails(capsys, ["reconstruct", header, "--output", files / "r.nii"], header, "name of data file")
        assert str(secret.stat().st_size) not in err
    # the same file is readable when the caller names it explicitly
    data = jio.read_interfile(files / "absolute.h00", data_file=secret)
    assert data.counts.shape == (NX, NZ, NVIEW) and data.counts.max() == NX * NZ * NVIEW - 1


def test_data_file_inside_the_folder_still_works(files):
    (files / "sub").mkdir()
    os.replace(files / "proj.a00", files / "sub" / "proj.a00")
    header = _header(files, "sub.h00", **{"name of data file := proj.a00": "name of data file := sub/../sub/proj.a00"})
    np.testing.assert_array_equal(jio.read_interfile(header).counts, _projections().counts)


# --- clause 4: no silent wrong results -------------------------------------------------------------


def test_simulate_refuses_non_finite_counts_and_scatter(tmp_path, capsys):
    A = js.SPECTProjector(js.SPECTGeometry((8, 8, 2), (4.0,) * 3, js.GaussianPSF(2.0, 0.0), nview=4, radii=60.0), None)
    x = jnp.ones((8, 8, 2))
    for kwargs, needle in (({"total_counts": np.inf}, "total_counts"), ({"total_counts": np.nan}, "total_counts"),
                           ({"scatter_fraction": np.inf}, "scatter_fraction"),
                           ({"scatter_fraction": np.nan}, "scatter_fraction")):
        with pytest.raises(ValueError, match=needle):
            js.simulate(jax.random.key(0), x, A, **kwargs)
    with pytest.raises(Exception, match="below 2\\^30"):  # the Poisson sampler would saturate
        js.simulate(jax.random.key(0), x, A, total_counts=1e15)
    out = tmp_path / "sim.h00"
    for flag, value in (("--counts", "inf"), ("--counts", "nan"), ("--counts", "1e12"), ("--scatter-fraction", "inf"),
                        ("--scatter-fraction", "-0.1"), ("--fwhm0", "inf"), ("--voxel-mm", "nan"), ("--size", "0"),
                        ("--size", "100000"), ("--views", "0"), ("--seed", "-1")):
        _fails(capsys, ["simulate", "--output", out, flag, value], flag)
    _fails(capsys, ["simulate", "--output", out, "--size", "8", "--voxel-mm", "1"], "--size", "phantom")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_mumap_in_the_wrong_unit_is_refused_unless_stated(files, capsys):
    per_mm = np.where(_body(), 0.015, 0.0).astype(np.float32)
    proj = files / "proj.h00"
    for name, volume, needle in (("per_cm.nii", 10 * per_mm, "looks like a map in 1/cm"),
                                 ("hu.nii", np.where(_body(), 40.0, -1000.0), "HU"),
                                 ("hu_positive.nii", np.where(_body(), 1040.0, 0.0), "HU"),
                                 ("nan.nii", np.where(_body(), np.nan, 0.0), "NaN")):
        jio.write_nifti(files / name, volume, (PIXEL,) * 3)
        _fails(capsys, ["reconstruct", proj, "--output", files / "r.nii", "--mumap", files / name], "--mumap", name, needle)
        with pytest.raises(ValueError, match=needle):
            jio.read_mumap(files / name)
    # stated explicitly, a 1/cm map is converted
    np.testing.assert_allclose(jio.read_mumap(files / "per_cm.nii", "per_cm"), per_mm, rtol=1e-6)
    np.testing.assert_allclose(jio.read_mumap(files / "mu.nii.gz"), per_mm)
    # a 1/mm map stated as 1/cm is the user's explicit choice: converted, not second-guessed
    np.testing.assert_allclose(jio.read_mumap(files / "mu.nii.gz", "per_cm"), per_mm / 10, rtol=1e-6)


def test_byte_swapped_data_are_refused(files):
    counts = np.random.default_rng(1).poisson(30.0, (NVIEW, NZ, NX))
    base = {"imagedata byte order := LITTLEENDIAN\n": ""}  # the key is absent: Interfile's default is BIGENDIAN
    # little-endian float32 read as big-endian: denormals
    counts.astype("<f4").tofile(files / "proj.a00")
    header = _header(files, "f.h00", **base)
    with pytest.raises(ValueError, match="imagedata byte order.*LITTLEENDIAN"):
        jio.read_interfile(header)
    # little-endian int16 declared big-endian: the swapped values are far smaller
    counts.astype("<i2").tofile(files / "proj.a00")
    header = _header(files, "i.h00", **base, **{"!number format := float": "!number format := signed integer",
                                                 "!number of bytes per pixel := 4": "!number of bytes per pixel := 2"})
    with pytest.raises(ValueError, match="imagedata byte order.*LITTLEENDIAN"):
        jio.read_interfile(header)
    # the same bytes with the right byte order read back exactly; big-endian data with the default too
    good = _header(files, "ok.h00", **{"!number format := float": "!number format := signed integer",
                                       "!number of bytes per pixel := 4": "!number of bytes per pixel := 2"})
    np.testing.assert_array_equal(jio.read_interfile(good).counts, np.transpose(counts[:, ::-1, :], (2, 1, 0)))
    counts.astype(">i2").tofile(files / "proj.a00")
    np.testing.assert_array_equal(jio.read_interfile(header).counts, np.transpose(counts[:, ::-1, :], (2, 1, 0)))
    # NaN in float data
    bad = counts.astype("<f4")
    bad[0, 0, 0] = np.nan
    bad.tofile(files / "proj.a00")
    with pytest.raises(ValueError, match="NaN or Inf"):
        jio.read_interfile(files / "proj.h00")


def test_zero_angular_extent_or_step_is_refused(files, tmp_path):
    from tests.test_io import _nm_dataset

    for extent in ("0", "-360", "inf", "720"):
        header = _header(files, "e.h00", **{"!extent of rotation := 360.0": f"!extent of rotation := {extent}"})
        with pytest.raises(ValueError, match="extent of rotation"):
            jio.read_interfile(header)
    path = tmp_path / "nm.dcm"
    _nm_dataset(path)
    ds = pydicom.dcmread(path)
    ds.RotationInformationSequence[0].AngularStep = 0.0
    ds.save_as(path)
    with pytest.raises(ValueError, match=r"AngularStep \(0018,1144\).*got 0"):
        jio.read_dicom_projections(path)
    assert jio.read_dicom_projections(path, angular_step_deg=45.0).nview == 8  # the override still works


def test_oblique_nifti_is_refused(tmp_path):
    volume = np.random.default_rng(0).random((8, 8, 4)).astype(np.float32)
    theta = np.deg2rad(10)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([4.0, 4.0, 4.0])
    nib.save(nib.Nifti1Image(volume, affine), str(tmp_path / "oblique.nii"))
    with pytest.raises(jio.FileCheckError, match="oblique.nii has an oblique affine.*10 degrees"):
        jio.read_nifti(tmp_path / "oblique.nii")
    affine[:3, :3] = np.diag([4.0, 4.0, 4.0]) + 1e-7  # rounding noise in an axis-aligned affine is fine
    nib.save(nib.Nifti1Image(volume, affine), str(tmp_path / "aligned.nii"))
    np.testing.assert_array_equal(jio.read_nifti(tmp_path / "aligned.nii")[0][::-1, ::-1], volume)


# --- clause 1: user errors end in status 2 and one message -----------------------------------------


def test_cli_user_errors_exit_2_with_one_message(files, tmp_path, capsys):
    proj, out = files / "proj.h00", files / "r.nii"
    base = ["reconstruct", proj, "--output", out]
    for flag, value in (("--radius", "-5"), ("--radius", "nan"), ("--fwhm0", "inf"), ("--slope", "-1"),
                        ("--iterations", "0"), ("--subsets", "0"), ("--window", "2")):
        _fails(capsys, [*base, flag, value], flag)
    _fails(capsys, [*base, "--subsets", "7"], "--subsets 7 exceeds the number of views (6)")
    _fails(capsys, ["reconstruct", files, "--output", out], "projections", "is not a file")
    for value in (-1.0, np.nan):
        bad = files / f"bad_bg_{value}.h00"
        jio.write_interfile(bad, jio.ProjectionData(np.full((NX, NZ, NVIEW), value), _projections().angles, 100.0,
                                                    (PIXEL, PIXEL)))
        _fails(capsys, [*base, "--background", bad], "--background", bad.name)
    for key, value, needle in (("!matrix size [1] := 8", "!matrix size [1] := inf", "matrix size [1]"),
                               ("data offset in bytes := 0", "data offset in bytes := -16", "data offset in bytes"),
                               ("Radius := 100.0", "Radius := nan", "radius"),
                               ("Radius := 100.0", "Radius := -5", "orbit radii must be positive"),
                               ("!matrix size [1] := 8", "!matrix size [1] := 9", "bytes")):
        header = _header(files, "h.h00", **{key: value})
        _fails(capsys, ["reconstruct", header, "--output", out], "h.h00", needle)
    # a truncated .nii.gz μ-map
    blob = (files / "mu.nii.gz").read_bytes()
    (files / "cut.nii.gz").write_bytes(blob[: len(blob) // 2])
    _fails(capsys, [*base, "--mumap", files / "cut.nii.gz"], "--mumap", "cut.nii.gz")
    # model files: truncated, or arrays that do not match the architecture line
    model_path = files / "m.eqx"
    js.save_model(model_path, UnrolledEM(PaperCNN, jax.random.key(0), n_outer=2))
    blob = model_path.read_bytes()
    (files / "cut.eqx").write_bytes(blob[: len(blob) // 2])
    line, arrays = blob.split(b"\n", 1)
    config = json.loads(line)
    config["network"]["channels"] = 3
    (files / "other.eqx").write_bytes(json.dumps(config).encode() + b"\n" + arrays)
    (files / "junk.eqx").write_bytes(b"\x00" * 64)
    for name, needle in (("cut.eqx", "truncated"), ("other.eqx", "do not match"), ("junk.eqx", "not a jaxspect model")):
        _fails(capsys, [*base, "--model", files / name], "--model", name, needle)
    # demo: bad sizes and outputs
    _fails(capsys, ["demo", "--size", "0"], "--size")
    _fails(capsys, ["demo", "--size", "4", "--output", tmp_path / "d"], "phantom")
    (tmp_path / "afile").write_text("x")
    _fails(capsys, ["demo", "--output", tmp_path / "afile"], "afile")
    _fails(capsys, ["simulate", "--output", tmp_path / "afile" / "sim.h00"], "afile")


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_dicom_errors_exit_2(tmp_path, capsys):
    from tests.test_io import _nm_dataset

    out = tmp_path / "r.nii"
    cases = {
        "no_rows.dcm": (lambda ds: delattr(ds, "Rows"), "Rows (0028,0010)"),
        "no_bits.dcm": (lambda ds: delattr(ds, "BitsAllocated"), "BitsAllocated (0028,0100)"),
        "zero_frames.dcm": (lambda ds: setattr(ds, "NumberOfFrames", 0), "NumberOfFrames"),
        "short.dcm": (lambda ds: setattr(ds, "PixelData", ds.PixelData[:100]), "PixelData holds 100 bytes"),
        "nan_slope.dcm": (lambda ds: setattr(ds, "RescaleSlope", "NaN"), "RescaleSlope (0028,1053) must be finite"),
    }
    for name, (spoil, needle) in cases.items():
        path = tmp_path / name
        _nm_dataset(path)
        ds = pydicom.dcmread(path)
        spoil(ds)
        ds.save_as(path)
        with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            jio.read_dicom_projections(path)
        _fails(capsys, ["reconstruct", path, "--output", out], name, needle)
    # compressed pixel data that no installed decoder can read (or that is corrupt)
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    path = tmp_path / "compressed.dcm"
    _nm_dataset(path)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 60] * int(ds.NumberOfFrames))
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path)
    _fails(capsys, ["reconstruct", path, "--output", out], "compressed.dcm", "cannot decode PixelData")
    # deflate-compressed data set: its inflated size is unbounded, refused before reading it
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    path = tmp_path / "deflated.dcm"
    _nm_dataset(path)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    with pytest.raises(jio.FileCheckError, match="deflate-compressed"):
        jio.read_dicom_projections(path)
    _fails(capsys, ["reconstruct", path, "--output", out], "deflated.dcm", "deflate-compressed")


def test_interfile_header_oddities(files):
    text = (files / "proj.h00").read_text()
    # a UTF-8 byte-order mark does not hide the first key
    (files / "bom.h00").write_bytes(b"\xef\xbb\xbf" + text.replace("!INTERFILE :=\n", "").encode())
    assert jio.parse_interfile_header(files / "bom.h00")["imaging modality"] == "nucmed"
    # keys after !END OF INTERFILE are not used
    (files / "end.h00").write_text(text + "!matrix size [1] := 9\n")
    assert jio.read_interfile(files / "end.h00").counts.shape == (NX, NZ, NVIEW)
    # read_cor reports mm, labelled mm
    (files / "o.cor").write_text("-2\n" * NVIEW)
    with pytest.raises(ValueError, match="got minimum -20 mm"):
        jio.read_cor(files / "o.cor", NVIEW)
    (files / "big.cor").write_bytes(b"1\n" * 100_000)
    with pytest.raises(ValueError, match="big.cor holds 200000 bytes"):
        jio.read_cor(files / "big.cor", NVIEW)
    # a huge "header" is not read as one
    (files / "huge.h00").write_bytes(b"a" * (2 << 20))
    with pytest.raises(ValueError, match="not an Interfile header"):
        jio.parse_interfile_header(files / "huge.h00")


def test_mutated_headers_fail_cleanly(files):
    """A cheap fuzz: every value of a valid header replaced by garbage either reads (finite
    counts) or raises ValueError / FileNotFoundError, never another exception."""
    lines = (files / "proj.h00").read_text().splitlines()
    garbage = ["", "inf", "-inf", "nan", "-1", "0", "1e308", "999999999999", "x", "1.5", "{1,2", "../../../x", "/x"]
    rng = np.random.default_rng(5)
    outcomes = set()
    for n, line in enumerate(lines):
        if ":=" not in line or line.rstrip().endswith(":="):
            continue
        key = line.split(":=")[0]
        for value in rng.choice(garbage, 4, replace=False):
            (files / "fuzz.h00").write_text("\n".join(lines[:n] + [f"{key}:= {value}"] + lines[n + 1:]) + "\n")
            try:
                data = jio.read_interfile(files / "fuzz.h00")
            except (ValueError, FileNotFoundError) as e:
                outcomes.add(type(e).__name__)
            else:
                assert np.all(np.isfinite(data.counts)) and np.all(np.isfinite(data.angles))
                outcomes.add("read")
    assert {"read", "ValueError", "FileCheckError"} <= outcomes


# --- clause 3: outputs -----------------------------------------------------------------------------


def test_outputs_are_never_lost(files, tmp_path, capsys):
    proj, mu = files / "proj.h00", files / "mu.nii.gz"
    old = files / "old.nii"
    old.write_bytes(b"previous result")
    _fails(capsys, ["reconstruct", proj, "--output", old], "old.nii exists", "--overwrite")
    assert old.read_bytes() == b"previous result"
    mu_bytes = mu.read_bytes()
    for flags in ([], ["--overwrite"]):  # an input is never an output, even with --overwrite
        _fails(capsys, ["reconstruct", proj, "--mumap", mu, "--output", mu, *flags], "is also an input")
    (files / "alias.nii.gz").symlink_to(mu)
    _fails(capsys, ["reconstruct", proj, "--mumap", mu, "--output", files / "alias.nii.gz", "--overwrite"],
           "is also an input")
    assert mu.read_bytes() == mu_bytes
    # simulate: any existing output stops it before anything is computed or written
    sim = tmp_path / "sim"
    sim.mkdir()
    (sim / "s_mumap.nii.gz").write_bytes(b"keep")
    _fails(capsys, ["simulate", "--output", sim / "s.h00", "--size", "8"], "s_mumap.nii.gz exists")
    assert sorted(p.name for p in sim.iterdir()) == ["s_mumap.nii.gz"] and (sim / "s_mumap.nii.gz").read_bytes() == b"keep"
    # a name an Interfile header cannot hold is refused before anything is written
    _fails(capsys, ["simulate", "--output", sim / "s€.h00", "--size", "8"], "latin-1")
    # demo: existing demo files are kept
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "osem.nii.gz").write_bytes(b"keep")
    _fails(capsys, ["demo", "--output", demo, "--size", "8"], "already holds demo output", "osem.nii.gz", "--overwrite")
    assert (demo / "osem.nii.gz").read_bytes() == b"keep"
    # the output check creates a missing folder and refuses a non-writable one
    assert jio.check_output(tmp_path / "new" / "deeper" / "x.nii") == tmp_path / "new" / "deeper" / "x.nii"
    assert (tmp_path / "new" / "deeper").is_dir()
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(jio.FileCheckError, match="not writable"):
            jio.check_output(locked / "x.nii")


class _Crash(Exception):
    pass


def _crash(*args, **kwargs):
    raise _Crash


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A crash in the middle of a write leaves the previous files, complete, and no temporaries."""
    volume = np.arange(64, dtype=np.float32).reshape(4, 4, 4)
    jio.write_nifti(tmp_path / "v.nii.gz", volume, (2.0,) * 3)
    data = _projections()
    jio.write_interfile(tmp_path / "p.h00", data)
    model = PaperCNN(jax.random.key(0))
    js.save_model(tmp_path / "m.eqx", model)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    assert all(p.stat().st_mode & 0o777 == 0o666 & ~umask for p in tmp_path.iterdir())  # usual permissions

    def partial_then_crash(image, filename):
        Path(filename).write_bytes(b"half a file")
        raise _Crash

    monkeypatch.setattr(nib, "save", partial_then_crash)
    with pytest.raises(_Crash):
        jio.write_nifti(tmp_path / "v.nii.gz", volume + 1, (2.0,) * 3)
    monkeypatch.undo()
    # the header is written after its data: crash while writing it
    real_write_bytes = Path.write_bytes
    monkeypatch.setattr(Path, "write_bytes", lambda self, b: (real_write_bytes(self, b[:10]), _crash()))
    with pytest.raises(_Crash):
        jio.write_interfile(tmp_path / "p.h00", _projections(seed=1))
    monkeypatch.undo()
    import equinox as eqx

    monkeypatch.setattr(eqx, "tree_serialise_leaves", lambda f, m: (f.write(b"junk"), _crash()))
    with pytest.raises(_Crash):
        js.save_model(tmp_path / "m.eqx", PaperCNN(jax.random.key(1)))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old files intact, no temporaries
    np.testing.assert_array_equal(jio.read_interfile(tmp_path / "p.h00").counts, data.counts)
    np.testing.assert_array_equal(jio.read_nifti(tmp_path / "v.nii.gz")[0], volume)


# --- clause 5 (and 2): a fresh process under an address-space limit, watching every open() ---------

_BOUNDED = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import jax, numpy as np
    import jaxspect as js
    from jaxspect import io as jio
    folder, secret = Path(sys.argv[1]), sys.argv[2]
    jax.numpy.zeros(1).block_until_ready()  # start the backend (threads, pools) before measuring
    opened = []
    sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" and args else None)
    vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
    limit = vm + (768 << 20)  # 768 MiB beyond what is mapped now: each file claims >= 1 GiB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    results = {}
    for name, read in (("huge.h00", jio.read_interfile), ("huge.nii.gz", jio.read_nifti),
                       ("huge.nii", jio.read_nifti), ("huge.eqx", js.load_model),
                       ("escape.h00", jio.read_interfile), ("absolute.h00", jio.read_interfile)):
        try:
            read(folder / name)
            results[name] = "read"
        except MemoryError:
            results[name] = "MemoryError"
        except ValueError as e:
            results[name] = type(e).__name__ + ": " + str(e)
    results["secret opened"] = any(Path(p).name == Path(secret).name for p in opened)
    print(json.dumps(results))
""")


def test_memory_bounded_and_no_file_outside_opened(files, tmp_path_factory):
    folder = files
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.a00"
    secret.write_bytes(b"\x00" * (NX * NZ * NVIEW * 4))
    # an Interfile header claiming 32768 x 32768 x 4 float32 (16 GiB) over a few bytes of data
    _header(folder, "huge.h00", **{"!matrix size [1] := 8": "!matrix size [1] := 32768",
                                   "!matrix size [2] := 4": "!matrix size [2] := 32768"})
    _header(folder, "escape.h00", **{"name of data file := proj.a00": f"name of data file := {os.path.relpath(secret, folder)}"})
    _header(folder, "absolute.h00", **{"name of data file := proj.a00": f"name of data file := {secret}"})
    # NIfTI headers claiming 1 GiB over 36 bytes of data, compressed and not
    header = nib.Nifti1Header()
    header.set_data_shape((1024, 1024, 256))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    blob = header.binaryblock + b"\x00" * 4 + b"\x01" * 36
    (folder / "huge.nii").write_bytes(blob)
    (folder / "huge.nii.gz").write_bytes(gzip.compress(blob))
    # a model file whose architecture line asks for 10^8 networks
    js.save_model(folder / "m.eqx", UnrolledEM(PaperCNN, jax.random.key(0), n_outer=1))
    line, arrays = (folder / "m.eqx").read_bytes().split(b"\n", 1)
    config = json.loads(line)
    config["n_outer"] = 10**8
    (folder / "huge.eqx").write_bytes(json.dumps(config).encode() + b"\n" + arrays)

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", _BOUNDED, str(folder), str(secret)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert results["huge.h00"].startswith("FileCheckError") and "32768 x 32768 x 6" in results["huge.h00"]
    for name in ("huge.nii", "huge.nii.gz"):
        assert results[name].startswith("FileCheckError") and "promises 1073742176 bytes" in results[name], results
    assert results["huge.eqx"].startswith("FileCheckError") and "needs at least" in results["huge.eqx"]
    for name in ("escape.h00", "absolute.h00"):
        assert results[name].startswith("FileCheckError") and "name of data file" in results[name]
    assert results["secret opened"] is False


def test_a_fresh_process_exits_2_without_traceback(files):
    header = _header(files, "abs.h00", **{"name of data file := proj.a00": "name of data file := /etc/hostname"})
    run = subprocess.run([sys.executable, "-m", "jaxspect", "reconstruct", str(header), "--output", str(files / "r.nii")],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "jaxspect: error: projections" in run.stderr and "absolute path" in run.stderr
