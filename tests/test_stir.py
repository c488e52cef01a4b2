"""STIR's Interfile (.hs projection data, .hv images), headers written exactly as STIR writes
them (src/IO/interfile.cxx, write_basic_interfile_PDFS_header's SPECT branch and
write_basic_interfile_image_header, UCL/STIR), and the geometry checked physically: an
off-centre point source reconstructs where the header's geometry puts it."""

import numpy as np
import pytest

import jax.numpy as jnp

import jaxspect as js
import jaxspect.io as jio
from jaxspect._cli import main
from jaxspect.io._projections import views_to_frames

N, NZ, NVIEW, PIXEL, RADIUS = 24, 6, 24, 4.0, 150.0
HOT = (17, 6, 2)  # (i, j, k): towards the patient's left and front, below the middle slice


def stir_hs(data_name, *, start=180.0, direction="CW", radii=None, extent=360, offset=0, extra=()):
    """A SPECT .hs as STIR writes it (no patient position known; one radionuclide line)."""
    lines = ["!INTERFILE  :=", "!imaging modality := nucmed", f"name of data file := {data_name}",
             "originating system := Unknown", "!version of keys := 3.3", "!GENERAL DATA :=",
             "!GENERAL IMAGE DATA :=", "!type of data := Tomographic", "imagedata byte order := LITTLEENDIAN",
             "number of radionuclides := 1", "!SPECT STUDY (General) :=", "!number format := float",
             "!number of bytes per pixel := 4", f"!number of projections := {NVIEW}",
             f"!extent of rotation := {extent:g}", "process status := acquired", "!SPECT STUDY (acquired data):=",
             f"!direction of rotation := {direction}", f"start angle := {start:g}"]
    if radii is None:
        lines += ["orbit := Circular", f"Radius := {RADIUS:g}"]
    else:  # VectorWithOffset's operator<< ends with std::endl, then the header's '\n': a blank line
        lines += ["orbit := Non-circular", "Radii := {" + ", ".join(f"{r:g}" for r in radii) + "}", ""]
    lines += [f"!matrix size [1] := {N}", f"!scaling factor (mm/pixel) [1] := {PIXEL:g}", f"!matrix size [2] := {NZ}",
              f"!scaling factor (mm/pixel) [2] := {PIXEL:g}"]
    if offset:
        lines.append(f"data offset in bytes := {offset}")
    return "\n".join([*lines, *extra, "!END OF INTERFILE :=", ""])


def stir_hv(data_name, shape, voxel):
    """An image .hv as STIR writes it for SPECT (write_basic_interfile_image_header)."""
    lines = ["!INTERFILE  :=", "!imaging modality := nucmed", "!version of keys := STIR6.0",
             f"name of data file := {data_name}", "!GENERAL DATA :=", "!GENERAL IMAGE DATA :=",
             "!type of data := Tomographic", "imagedata byte order := LITTLEENDIAN", "number of radionuclides := 1",
             "!SPECT STUDY (General) :=", "process status := Reconstructed", "!number format := float",
             "!number of bytes per pixel := 4", "number of dimensions := 3"]
    for n, (axis, size, v) in enumerate(zip("xyz", shape, voxel), 1):
        lines += [f"matrix axis label [{n}] := {axis}", f"!matrix size [{n}] := {size}",
                  f"scaling factor (mm/pixel) [{n}] := {v:g}"]
    lines += [f"first pixel offset (mm) [1] := {-(shape[0] - 1) / 2 * voxel[0]:g}",
              f"first pixel offset (mm) [2] := {-(shape[1] - 1) / 2 * voxel[1]:g}", "first pixel offset (mm) [3] := 0",
              "number of time frames := 1", "!END OF INTERFILE :=", ""]
    return "\n".join(lines)


def stir_angles_deg(start, direction):
    """STIR's view angles (InterfilePDFSHeaderSPECT.cxx: cw = negative angle sampling)."""
    step = 360.0 / NVIEW * (-1.0 if direction == "CW" else 1.0)
    return start + step * np.arange(NVIEW)


def write_pair(folder, stem, frames, **header):
    (folder / f"{stem}.hs").write_text(stir_hs(f"{stem}.s", **header), encoding="latin-1")
    np.asarray(frames, "<f4").tofile(folder / f"{stem}.s")
    return folder / f"{stem}.hs"


def peak_of(data, n_iter=12):
    psf = js.ExplicitPSF(np.ones((1, 1, N, data.nview), np.float32))
    projector = js.SPECTProjector(data.spect_geometry(psf))
    image = js.mlem(projector, jnp.asarray(data.counts), jnp.ones(data.image_shape), n_iter=n_iter).image
    return np.unravel_index(int(jnp.argmax(image)), image.shape)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A jaxspect-simulated point, projected with the geometry the STIR header describes."""
    folder = tmp_path_factory.mktemp("stir")
    radii = RADIUS + 20.0 * np.abs(np.sin(np.deg2rad(stir_angles_deg(180.0, "CW"))))  # a body-contour-like orbit
    psf = js.ExplicitPSF(np.ones((1, 1, N, NVIEW), np.float32))
    geometry = js.SPECTGeometry((N, N, NZ), (PIXEL,) * 3, psf, angles=np.deg2rad(stir_angles_deg(180.0, "CW")),
                                radii=radii)
    source = np.zeros((N, N, NZ), np.float32)
    source[HOT] = 1000.0
    i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    mumap = np.zeros((N, N, NZ), np.float32)
    mumap[(i - N / 2 - 2) ** 2 + (j - N / 2 + 1) ** 2 < (0.4 * N) ** 2] = 0.0150  # water, off the axis, 1/mm
    views = np.asarray(js.forward_project(jnp.asarray(source), jnp.asarray(mumap), geometry))
    # the map as STIR stores it (z, y, x with every axis reversed; 1/cm)
    (folder / "mu.hv").write_text(stir_hv("mu.v", (N, N, NZ), (PIXEL,) * 3))
    np.ascontiguousarray(10 * mumap[::-1, ::-1, ::-1].transpose(2, 1, 0)).astype("<f4").tofile(folder / "mu.v")
    return folder, views, radii


def test_stir_point_source_reconstructs_where_the_header_puts_it(simulated, tmp_path):
    folder, views, radii = simulated
    header = write_pair(folder, "point", views_to_frames(views), radii=radii)
    data = jio.read_projections(header)
    np.testing.assert_allclose(np.rad2deg(data.angles), stir_angles_deg(180.0, "CW"))
    np.testing.assert_allclose(data.radii, radii, rtol=1e-5)
    np.testing.assert_allclose(data.counts, views, rtol=1e-6)
    out = tmp_path / "r.nii"
    assert main(["reconstruct", str(header), "--mumap", str(folder / "mu.hv"), "--psf", "none", "--algorithm", "mlem",
                 "--iterations", "12", "--no-progress", "--output", str(out)]) == 0
    image, _ = jio.read_nifti(out)
    assert np.unravel_index(np.argmax(image), image.shape) == HOT
    # the same data under the other rotation direction: the point moves (mirrored about the start axis)
    flipped = write_pair(folder, "flipped", views_to_frames(views), direction="CCW", radii=radii)
    moved = peak_of(jio.read_projections(flipped))
    assert max(abs(a - b) for a, b in zip(moved, HOT)) >= 3


def spectub_projections(point_xyz, start, direction):
    """Frames (view, axial, bin) of a point at STIR voxel ``point_xyz`` as STIR's SPECTUB lays
    them out, from its formulas, independently of jaxspect: internal coordinates
    ``xu = x0 + icol * sz`` with ``icol = N - 1 - x`` (InvertAxis on x), ``yu = y0 + y * sz``;
    bin coordinate ``x1 = xu cos(phi) + yu sin(phi)``; axial position = slice."""
    x, y, z = point_xyz
    x0 = (0.5 - N / 2) * PIXEL
    xu, yu = x0 + (N - 1 - x) * PIXEL, x0 + y * PIXEL
    frames = np.zeros((NVIEW, NZ, N), np.float32)
    for view, phi in enumerate(np.deg2rad(stir_angles_deg(start, direction))):
        x1 = xu * np.cos(phi) + yu * np.sin(phi)
        frames[view, z, int(np.floor((x1 + N * PIXEL / 2) / PIXEL))] += 100.0
    return frames


def test_stir_image_axes_match_stir_projector(tmp_path):
    """A point SPECTUB projects (its formulas) and the same point in a STIR .hv land on one jaxspect voxel."""
    point = (5, 16, 4)  # STIR x, y, z
    header = write_pair(tmp_path, "ub", spectub_projections(point, 90.0, "CCW"), start=90.0, direction="CCW")
    volume = np.zeros((NZ, N, N), "<f4")  # stored z, y, x
    volume[point[2], point[1], point[0]] = 0.2  # 1/cm
    (tmp_path / "map.hv").write_text(stir_hv("map.v", (N, N, NZ), (PIXEL,) * 3))
    volume.tofile(tmp_path / "map.v")
    image = jio.read_stir_image(tmp_path / "map.hv")
    where = np.unravel_index(np.argmax(image.array), image.array.shape)
    assert where == (N - 1 - point[0], N - 1 - point[1], NZ - 1 - point[2])
    assert image.voxel_size_mm == (PIXEL,) * 3 and image.first_pixel_offset_mm[2] == 0
    assert peak_of(jio.read_projections(header)) == where
    mumap = jio.read_mumap(tmp_path / "map.hv", "per_cm", image_shape=(N, N, NZ), voxel_size_mm=(PIXEL,) * 3)
    assert mumap[where] == pytest.approx(0.02)  # 1/cm -> 1/mm


def test_stir_header_details_and_refusals(tmp_path, capsys):
    frames = np.ones((NVIEW, NZ, N), "<f4")
    # STIR's DICOM converter: all windows in one data file, each header at its own offset; total duration
    both = np.concatenate([frames.ravel(), 2 * frames.ravel()]).astype("<f4")
    both.tofile(tmp_path / "two.s")
    extra = ("energy window lower level[1] := 187.2", "energy window upper level[1] := 228.8",
             "number of time frames := 1", f"!image duration (sec)[1] := {15 * NVIEW}")
    (tmp_path / "w2.hs").write_text(stir_hs("two.s", offset=frames.nbytes, extra=extra))
    data = jio.read_stir_projections(tmp_path / "w2.hs")
    assert float(data.counts.min()) == 2.0 and data.metadata["frame_duration_s"] == 15.0
    assert data.photopeak_kev == pytest.approx(208.0)

    def refused(text, match, name="bad.hs"):
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=match):
            jio.read_projections(tmp_path / name)

    frames.tofile(tmp_path / "one.s")
    good = stir_hs("one.s")
    refused(good.replace("nucmed", "PET"), "imaging modality := PET.*nucmed")
    refused(good.replace("!extent of rotation := 360\n", ""), "lacks the key '!extent of rotation'")
    refused(good.replace(f"Radius := {RADIUS:g}\n", ""), "'orbit := circular' needs 'Radius")
    refused(good.replace("orbit := Circular", "orbit := Non-circular"), "'orbit := non-circular' needs 'Radii")
    refused(good.replace("orbit := Circular", "orbit := elliptic"), "orbit := elliptic")
    refused(good.replace("!END", "matrix axis label [1] := tangential coordinate\n!END"), "bin coordinate")
    refused(stir_hs("one.s", radii=[RADIUS] * (NVIEW - 1)), "'radii' has 23 values, expected one per view")
    refused(stir_hs("one.s", offset=8), r"fewer than the header .* = 13832 bytes")
    refused(stir_hs("../one.s"), "outside the header's folder")
    # the CLI: a .hv is not projections; a .hs has one window
    (tmp_path / "img.hv").write_text(stir_hv("one.s", (N, N, NZ), (PIXEL,) * 3))
    for args, message in (([str(tmp_path / "img.hv"), "--psf", "none"], "STIR image header (.hv), not projections"),
                          ([str(tmp_path / "one.hs"), "--scatter", "tew"], "a STIR .hs file holds one")):
        (tmp_path / "one.hs").write_text(good)
        with pytest.raises(SystemExit) as exit_info:
            main(["reconstruct", *args, "--output", str(tmp_path / "x.nii")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    # a STIR attenuation map already in 1/mm is refused when read in STIR's 1/cm
    np.full((NZ, N, N), 0.015, "<f4").tofile(tmp_path / "mm.v")
    (tmp_path / "mm.hv").write_text(stir_hv("mm.v", (N, N, NZ), (PIXEL,) * 3))
    with pytest.raises(ValueError, match="looks like a map in 1/mm"):
        jio.read_mumap(tmp_path / "mm.hv")
    np.testing.assert_allclose(jio.read_mumap(tmp_path / "mm.hv", "per_mm"), 0.015)
