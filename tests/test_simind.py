"""SIMIND's own output: a header per energy window with window limits, radius, collimator and
photon energy in comment lines (key spellings from a header SIMIND V7.0.3 wrote)."""

import numpy as np
import pytest

import jax.numpy as jnp

import jaxspect as js
import jaxspect.io as jio
from jaxspect._cli import main
from jaxspect.io._projections import views_to_frames

N, NZ, NVIEW, PIXEL = 16, 6, 16, 6.0
RADIUS_CM = 15.0
WINDOWS = {1: (147.07, 170.93), 2: (123.22, 147.07), 3: (170.93, 194.78)}  # SIMIND's scattwin order: peak first


def simind_header(name, window, *, radius_line=True, extra=()):
    lo, hi = WINDOWS[window]
    lines = [
        "!INTERFILE :=", "!imaging modality := nucmed", ";# imaging modality 2 := EMS", "!originating system := simind",
        "!version of keys := 3.3", "program author := M Ljungberg, Lund University", "program version := V7.0.3", "  ",
        "!GENERAL DATA :=", "original institution := Medical Radiation Physics", "contact person := M Ljungberg",
        "!data offset in bytes := 0",
        f"!name of data file := C:\\Users\\someone\\simind\\{name}_tot_w{window}.a00",
        f"patient name := SMC_{name}_tot_w{window}.a00", f"!study ID := {name}", "data description := EMISSION VMAN",
        ";# Radionuclide := i123", "exam type := EMISSION VMAN", "!patient ID := SIMIND", "  ",
        "!GENERAL IMAGE DATA :=", "patient orientation := head_in", "patient rotation := supine",
        "!type of data := tomographic", "study date := 2024:10:15", "study time := 14:39:04",
        "imagedata byte order := LITTLEENDIAN", f";energy window lower level := {lo:.2f}",
        f";energy window upper level := {hi:.2f}", f"!total number of images := {NVIEW}",
        "!number of energy windows := 1", ";# Units of data (ECT) := counts", "  ",
        "!SPECT STUDY (General) :=", "number of detector heads := 1", f"!matrix size [1] := {N}",
        f"!matrix size [2] := {NZ}", "!number format := short float", "!number of bytes per pixel := 4",
        f"scaling factor (mm/pixel) [1] := {PIXEL:.3f}", f"scaling factor (mm/pixel) [2] := {PIXEL:.3f}",
        "!extent of rotation := 360", "!process status := acquired", f"!number of projections := {NVIEW}",
        f"!number of images/energy window := {NVIEW}", "!time per projection (sec) := 12.000",
        f"image duration (sec) := {12.0 * NVIEW:.3f}", "  ", "!SPECT STUDY (acquired data) :=", "orbit := circular",
    ]
    if radius_line:
        lines.append(f";#Radius := {RADIUS_CM:.3f}")
    lines += ["acquisition mode := stepped", "!direction of rotation := CCW", "start angle := 0.000",
              ";#X_offset := 0.000", "  ", *extra, ";# SIMIND-SPECIFIC PARAMETERS :=",
              ";# Intrinsic FWHM for the camera := 0.380", ";# Collimator := sy-lehr",
              ";# Collimator hole diameter := 0.111", ";# Collimator hole septa := 0.016",
              ";# Collimator thickness := 2.405", ";# SIMIND: Photon Energy := 159.000",
              ";# SIMIND: Time shift := -9999.000", "  ", "!END OF INTERFILE :="]
    return "\n".join(lines) + "\n"


HOT = (11, 4, 2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("simind")
    angles = np.deg2rad(np.arange(NVIEW) * 360.0 / NVIEW)  # CCW from 0
    psf = js.get_collimator("sy-lehr").psf(159.0)
    geometry = js.SPECTGeometry((N, N, NZ), (PIXEL,) * 3, psf, angles=angles, radii=10 * RADIUS_CM)
    source = np.zeros((N, N, NZ), np.float32)
    source[HOT] = 500.0
    peak = np.asarray(js.forward_project(jnp.asarray(source), None, geometry))
    scatter = {2: 0.1 * peak.mean() + 0.02 * peak, 3: 0.05 * peak.mean() + 0.01 * peak}
    for w, views in ((1, peak), (2, scatter[2]), (3, scatter[3])):
        (folder / f"pt_tot_w{w}.h00").write_text(simind_header("pt", w), encoding="latin-1")
        views_to_frames(views).astype("<f4").tofile(folder / f"pt_tot_w{w}.a00")
    return folder, peak, scatter


def test_read_simind_windows_comments_and_tew(run):
    folder, peak, scatter = run
    assert jio.is_simind_header(folder / "pt_tot_w2.h00")
    data = jio.read_projections(folder / "pt_tot_w2.h00", scatter="tew")  # any window's header finds the run
    assert data.photopeak == "w1" and set(data.windows) == {"w1", "w2", "w3"}  # the window holding 159 keV
    np.testing.assert_allclose(data.counts, peak, rtol=1e-6)
    np.testing.assert_allclose(data.radii, 150.0)  # ;#Radius is cm
    assert data.window_ranges_kev["w2"] == (123.22, 147.07)
    w = {n: hi - lo for n, (lo, hi) in data.window_ranges_kev.items()}
    np.testing.assert_allclose(data.background, (scatter[2] / w["w2"] + scatter[3] / w["w3"]) * w["w1"] / 2, rtol=1e-5)
    assert data.metadata["collimator"] == "sy-lehr" and data.metadata["photon_energy_kev"] == 159.0
    assert data.metadata["intrinsic_fwhm_mm"] == pytest.approx(3.8) and data.metadata["frame_duration_s"] == 12.0
    assert jio.read_simind(folder / "pt_tot_w1.h00", window=2).photopeak == "w2"


def test_cor_named_in_a_comment(tmp_path):
    radii_cm = 14.0 + 0.1 * np.arange(NVIEW)
    (tmp_path / "orbit.cor").write_text("".join(f"{r:.3f}\n" for r in radii_cm))
    header = simind_header("nc", 1, radius_line=False, extra=(";# Non-circular orbit file := C:\\sim\\orbit.cor",))
    (tmp_path / "nc_tot_w1.h00").write_text(header.replace("orbit := circular", "orbit := non-circular"))
    np.zeros((NVIEW, NZ, N), "<f4").tofile(tmp_path / "nc_tot_w1.a00")
    data = jio.read_projections(tmp_path / "nc_tot_w1.h00")
    np.testing.assert_allclose(data.radii, 10 * radii_cm)
    (tmp_path / "orbit.cor").unlink()
    with pytest.raises(FileNotFoundError, match="orbit.cor named in SIMIND header"):
        jio.read_projections(tmp_path / "nc_tot_w1.h00")


def test_cli_simind_tew_and_collimator_from_header(run, tmp_path, capsys):
    folder, _, _ = run
    out = tmp_path / "r.nii"
    assert main(["reconstruct", str(folder / "pt_tot_w1.h00"), "--scatter", "tew", "--iterations", "6",
                 "--subsets", "4", "--no-progress", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "collimator sy-lehr at 159 keV" in printed and "as named in" in printed and "scatter background" in printed
    image, _ = jio.read_nifti(out)
    assert np.unravel_index(np.argmax(image), image.shape) == HOT
