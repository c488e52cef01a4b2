"""The demo's SPECT/CT part: DICOM CT + NM in, ``jaxspect reconstruct`` with ``--ct``, a
collimator by name and a calibration factor, Bq/mL out as DICOM and NIfTI in scanner
coordinates, and a PNG of fused SPECT/CT slices.

The study is made from the demo's torso phantom: a CT series (soft tissue 40 HU, lungs -780 HU,
spine 1100 HU, 120 kVp) at twice the in-plane resolution of the SPECT grid, and a Lu-177 NM
file whose counts are ``sensitivity * seconds * activity`` projected through the phantom's own
attenuation map with the ``siemens-me`` collimator, Poisson noise. The reconstruction then uses
only the files (CT -> mu at the file's photopeak, the grid's patient position from the NM file).
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

# The site's calibration factor (counts/s per MBq), seconds per view, activity concentration of
# the body background (Bq/mL), the collimator, the grid centre's patient position (LPS mm).
SENSITIVITY_CPS_PER_MBQ, SECONDS_PER_VIEW, BACKGROUND_BQ_PER_ML = 9.6, 20.0, 40_000.0
COLLIMATOR = "siemens-me"
CENTRE_MM = (0.0, 25.0, -420.0)
# The files the SPECT/CT part writes into its folder (besides the CT series' slices).
OUTPUT_NAMES = ("nm.dcm", "recon.nii.gz", "fused_spect_ct.png")


def _write_study(folder: Path, phantom, voxel_mm: float, nview: int):
    """CT series and NM file of the phantom; returns the true concentration (Bq/mL)."""
    import jax.numpy as jnp
    from pydicom.uid import generate_uid

    from . import io as jio
    from ._collimators import get_collimator
    from ._geometry import SPECTGeometry
    from ._projector import SPECTProjector
    from .phantoms import LU177_KEV

    shape, vs = phantom.activity.shape, (voxel_mm,) * 3
    concentration = np.asarray(phantom.activity) * BACKGROUND_BQ_PER_ML
    activity_mbq = concentration * (voxel_mm**3 / 1000) / 1e6
    masks = phantom.masks
    hu = np.where(masks["body"], 40.0, -1000.0)
    hu[masks["lung_left"] | masks["lung_right"]] = -780.0
    hu[masks["spine"]] = 1100.0
    spect_affine = jio.grid_affine(shape, vs, CENTRE_MM)
    ct_affine = np.diag([voxel_mm / 2, voxel_mm / 2, voxel_mm, 1.0])
    ct_affine[:3, 3] = spect_affine[:3, 3] - np.array([voxel_mm / 4, voxel_mm / 4, 0.0])  # same field of view
    study = {"PatientID": "JAXSPECT-DEMO", "PatientName": "Demo^Torso", "StudyInstanceUID": generate_uid(),
             "FrameOfReferenceUID": generate_uid(), "Manufacturer": "jaxspect"}
    jio.write_dicom_ct(folder / "ct", np.repeat(np.repeat(hu, 2, axis=0), 2, axis=1), ct_affine, kvp=120.0,
                       reference=study)

    psf = get_collimator(COLLIMATOR).psf(LU177_KEV)
    angles = 2 * np.pi * np.arange(nview) / nview
    probe = SPECTGeometry(shape, vs, psf, angles=angles, radii=shape[0] * voxel_mm)
    radii = np.asarray(probe.object_extent(masks["body"])) + 10.0
    projector = SPECTProjector(SPECTGeometry(shape, vs, psf, angles=angles, radii=radii), jnp.asarray(phantom.mumap))
    expected = projector(jnp.asarray(SENSITIVITY_CPS_PER_MBQ * SECONDS_PER_VIEW * activity_mbq, jnp.float32))
    counts = np.random.default_rng(1).poisson(np.asarray(expected)).astype(np.float32)
    injected = datetime.datetime(2026, 3, 2, 9, 0, 0)
    jio.write_dicom_projections(
        folder / "nm.dcm", jio.ProjectionData(counts, angles, radii, (voxel_mm, voxel_mm)), centre_mm=CENTRE_MM,
        frame_duration_s=SECONDS_PER_VIEW, reference=study, energy_window_kev=(187.6, 229.2),
        half_life_s=6.647 * 86400, injection_datetime=injected, acquisition_datetime=injected + datetime.timedelta(hours=24),
        collimator_name=COLLIMATOR)
    return concentration


def _fused_figure(path: Path, ct, spect, lesion_mask):
    """Axial and coronal slices through the lesion: the CT averaged onto the SPECT grid (both in
    patient coordinates), the SPECT in Bq/mL over it."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from . import io as jio
    from ._demo import _save_figure

    ct_on_spect = jio.resample_to_grid(ct.array, ct.affine, spect.array.shape, spect.affine)
    i, j, k = (int(round(c)) for c in np.argwhere(lesion_mask).mean(axis=0))
    nx, ny, nz = spect.array.shape
    dx, dy, dz = (abs(spect.affine[n, n]) for n in range(3))
    x0, y0, z0 = spect.affine[:3, 3]
    top = float(spect.array.max())
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    cuts = ((ct_on_spect[:, :, k].T, spect.array[:, :, k].T, (x0 - dx / 2, x0 + (nx - 0.5) * dx, y0 + (ny - 0.5) * dy,
                                                                 y0 - dy / 2), "upper",
             f"axial z = {z0 + k * dz:.0f} mm", "y (mm, posterior down)"),
            (ct_on_spect[:, j, :].T, spect.array[:, j, :].T, (x0 - dx / 2, x0 + (nx - 0.5) * dx, z0 - dz / 2,
                                                                 z0 + (nz - 0.5) * dz), "lower",
             f"coronal y = {y0 + j * dy:.0f} mm", "z (mm, head up)"))
    for ax, (ct_cut, spect_cut, extent, origin, title, ylabel) in zip(axes, cuts):
        ax.imshow(ct_cut, cmap="gray", vmin=-300, vmax=400, extent=extent, origin=origin)
        shown = ax.imshow(np.ma.masked_less(spect_cut, 0.1 * top), cmap="hot", alpha=0.6, vmin=0, vmax=top,
                          extent=extent, origin=origin)
        ax.axvline(x0 + i * dx, color="c", lw=0.5)
        ax.set(title=title, xlabel="x (mm, patient left)", ylabel=ylabel)
    fig.colorbar(shown, ax=axes, shrink=0.7, label="Bq/mL")
    fig.suptitle(f"Lu-177 SPECT ({COLLIMATOR}, CT attenuation, Bq/mL) fused on the CT, in scanner coordinates")
    written = _save_figure(fig, path)
    plt.close(fig)
    return written


def run_spect_ct_demo(folder, phantom, voxel_mm: float, nview: int, *, iterations: int = 8, subsets: int = 4) -> dict:
    """Write the study into ``folder``, reconstruct it with the command line and draw the fused
    slices; print and return the figures: ``mu_error`` (mean relative error of the CT-derived
    mu in the body), ``table`` (organ -> (true, reconstructed) Bq/mL), ``files``, ``affine``
    (the DICOM output's), ``nm_affine`` (the NM file's grid)."""
    from . import io as jio
    from ._cli import main

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    concentration = _write_study(folder, phantom, voxel_mm, nview)
    print(f"\nSPECT/CT: wrote a CT series ({folder / 'ct'}) and a Lu-177 NM file ({folder / 'nm.dcm'}); reconstructing "
          f"with\n  jaxspect reconstruct nm.dcm --ct ct --collimator {COLLIMATOR} --sensitivity "
          f"{SENSITIVITY_CPS_PER_MBQ:g} --output recon --format dicom", flush=True)
    main(["reconstruct", str(folder / "nm.dcm"), "--ct", str(folder / "ct"), "--collimator", COLLIMATOR,
          "--sensitivity", str(SENSITIVITY_CPS_PER_MBQ), "--iterations", str(iterations), "--subsets", str(subsets),
          "--output", str(folder / "recon"), "--format", "dicom", "--no-progress", "--overwrite"])
    spect = jio.read_dicom_volume(folder / "recon" / "recon.dcm")
    nifti = jio.write_nifti(folder / "recon.nii.gz", spect.array, spect.voxel_size_mm, affine=spect.affine,
                            description="jaxspect Bq/mL (BQML)")
    ct = jio.read_dicom_volume(folder / "ct")
    data = jio.read_dicom_projections(folder / "nm.dcm")
    mumap = jio.ct_to_mumap(folder / "ct", data.photopeak_kev, data.image_shape, data.image_affine)
    body = phantom.masks["body"]
    mu_error = float(np.abs(mumap - np.asarray(phantom.mumap))[body].mean() / np.asarray(phantom.mumap)[body].mean())
    table = {organ: (float(concentration[phantom.masks[organ]].mean()), float(spect.array[phantom.masks[organ]].mean()))
             for organ in ("liver", "spleen", "kidney_left", "lesion_1") if organ in phantom.masks}
    figure = _fused_figure(folder / "fused_spect_ct.png", ct, spect, phantom.masks["lesion_1"])
    print(f"  CT-derived mu at {data.photopeak_kev:.1f} keV: mean |error| {100 * mu_error:.1f} % of the phantom's in the body")
    for organ, (true, recon) in table.items():
        print(f"  {organ:12s} true {true / 1000:7.1f} kBq/mL   OSEM {recon / 1000:7.1f} kBq/mL")
    files = [folder / "nm.dcm", folder / "recon" / "recon.dcm", nifti, figure]
    print("  wrote " + ", ".join(str(p.relative_to(folder)) for p in files) + f" in {folder}")
    return {"mu_error": mu_error, "table": table, "files": files, "affine": spect.affine,
            "nm_affine": data.image_affine, "units": spect.metadata.get("Units")}
