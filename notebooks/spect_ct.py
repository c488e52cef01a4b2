# ---
# jupyter:
#   jupytext:
#     formats: py:percent
# ---

# %% [markdown]
# # A SPECT/CT study end to end: DICOM in, Bq/mL out, in scanner coordinates
#
# A Lu-177 study of the torso phantom as a clinic would hand it over: a DICOM NM projection
# file (with the patient position of the detector, the frame duration and the
# radiopharmaceutical) and a DICOM CT series on its own, finer grid, sharing the study and the
# frame of reference. From there: CT -> attenuation map at 208 keV on the SPECT grid, the
# collimator by name, OSEM, a calibration factor -> Bq/mL, DICOM and NIfTI outputs that overlay
# on the CT, and a figure of fused SPECT/CT slices. The same pipeline is one command:
#
# ```
# jaxspect reconstruct nm.dcm --ct ct/ --collimator siemens-me --sensitivity 9.6 \
#     --output recon/ --format dicom
# ```
#
# `SPECT_CT_SIZE` sets the in-plane grid (default 64 voxels of 9.6 mm; the tests use 16) and
# `SPECT_CT_OUTPUT` the folder for the files and the figure.

# %%
import datetime
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from pydicom.uid import generate_uid

import jaxspect as js

n = int(os.environ.get("SPECT_CT_SIZE", 64))
out = Path(os.environ.get("SPECT_CT_OUTPUT", "spect-ct-output"))
nz, nview, voxel = max(n * 5 // 8, 4), max(n // 2, 8), 614.4 / n
shape, vs = (n, n, nz), (voxel,) * 3
centre = np.array([0.0, 25.0, -420.0])  # patient position (LPS mm) of the SPECT grid centre
sensitivity, seconds = 9.6, 20.0  # cps/MBq (the site's calibration), s per view
collimator = js.get_collimator("siemens-me")
energy = js.phantoms.LU177_KEV

# %% [markdown]
# ## The "clinical" files
# The CT is made from the phantom's tissues (soft tissue 40 HU, lungs -780 HU, spine
# 1100 HU) at twice the in-plane resolution; the SPECT projections from its activity (kBq/mL),
# attenuated by its own (ICRU-44) attenuation map, blurred by the collimator, Poisson noise.

# %%
phantom = js.phantoms.torso_phantom(jax.random.key(0), shape=shape, voxel_size=vs)
concentration = phantom.activity * 40_000.0  # Bq/mL, body background 40 kBq/mL
activity_mbq = concentration * (voxel**3 / 1000) / 1e6

hu = np.where(phantom.masks["body"], 40.0, -1000.0)
hu[phantom.masks["lung_left"] | phantom.masks["lung_right"]] = -780.0
hu[phantom.masks["spine"]] = 1100.0
ct_hu = np.repeat(np.repeat(hu, 2, axis=0), 2, axis=1)
spect_affine = js.io.grid_affine(shape, vs, centre)
ct_affine = np.diag([voxel / 2, voxel / 2, voxel, 1.0])
ct_affine[:3, 3] = spect_affine[:3, 3] - np.array([voxel / 4, voxel / 4, 0.0])

angles = 2 * np.pi * np.arange(nview) / nview
probe = js.SPECTGeometry(shape, vs, collimator.psf(energy), angles=angles, radii=n * voxel)
radii = np.asarray(probe.object_extent(phantom.masks["body"])) + 10.0
geometry = js.SPECTGeometry(shape, vs, collimator.psf(energy), angles=angles, radii=radii)
truth_projector = js.SPECTProjector(geometry, jnp.asarray(phantom.mumap))
expected = truth_projector(jnp.asarray(sensitivity * seconds * activity_mbq, jnp.float32))
counts = np.random.default_rng(1).poisson(np.asarray(expected)).astype(np.float32)

study = {"PatientID": "TORSO-1", "PatientName": "Phantom^Torso", "StudyInstanceUID": generate_uid(),
         "FrameOfReferenceUID": generate_uid()}
injected = datetime.datetime(2026, 3, 2, 9, 0, 0)
js.io.write_dicom_ct(out / "ct", ct_hu, ct_affine, kvp=120.0, reference=study)
js.io.write_dicom_projections(
    out / "nm.dcm", js.io.ProjectionData(counts, angles, radii, (voxel, voxel)), centre_mm=centre,
    frame_duration_s=seconds, reference=study, energy_window_kev=(187.6, 229.2), half_life_s=6.647 * 86400,
    injection_datetime=injected, acquisition_datetime=injected + datetime.timedelta(hours=24))
print(f"wrote {out / 'nm.dcm'} ({counts.shape}, {counts.sum():.3g} counts) and {ct_hu.shape[2]} CT slices")

# %% [markdown]
# ## Reconstruction from the files
# Everything below uses only what the files say: the photopeak from the energy window, the
# grid's patient position from the NM detector geometry, the CT's own geometry and kVp.

# %%
data = js.io.read_dicom_projections(out / "nm.dcm")
mumap = js.io.ct_to_mumap(out / "ct", data.photopeak_kev, data.image_shape, data.image_affine)
projector = js.SPECTProjector(data.spect_geometry(collimator.psf(data.photopeak_kev)), jnp.asarray(mumap))
x = js.osem(projector, jnp.asarray(data.counts), jnp.ones(data.image_shape, jnp.float32), n_iter=8,
            n_subsets=4).image
recon = js.activity_concentration(np.asarray(x), data.voxel_size_mm, sensitivity, data.metadata["frame_duration_s"])
mu_error = float(np.abs(mumap - phantom.mumap)[phantom.masks["body"]].mean() / phantom.mumap[phantom.masks["body"]].mean())
print(f"CT-derived mu at {data.photopeak_kev:.1f} keV: mean |error| {100 * mu_error:.1f} % of the phantom's in the body")

table = {}
for organ in ("liver", "spleen", "kidney_left", "lesion_1"):
    m = phantom.masks[organ]
    table[organ] = (float(concentration[m].mean()), float(recon[m].mean()))
    print(f"{organ:12s} true {table[organ][0] / 1000:7.1f} kBq/mL   OSEM {table[organ][1] / 1000:7.1f} kBq/mL")

dicom_file = js.io.write_dicom_volume(out / "recon", recon, data.image_affine, units="BQML", reference=data.metadata,
                                      corrections=("ATTN",))
nifti_file = js.io.write_nifti(out / "recon.nii.gz", recon, data.voxel_size_mm, affine=data.image_affine,
                               description="jaxspect Bq/mL (BQML)")
print(f"wrote {dicom_file} and {nifti_file}")

# %% [markdown]
# ## Fused SPECT/CT
# The CT slices are read back from their DICOM files and the SPECT from its DICOM output; each
# is drawn at its own patient coordinates (mm), so the overlay shows that they line up.

# %%
ct = js.io.read_dicom_volume(out / "ct")
spect = js.io.read_dicom_volume(dicom_file)
k = int(np.argmax(phantom.masks["lesion_1"].sum(axis=(0, 1))))
z = spect.affine[2, 3] + k * spect.affine[2, 2]
k_ct = int(round((z - ct.affine[2, 3]) / ct.affine[2, 2]))
j = int(np.argmax(phantom.masks["lesion_1"].sum(axis=(0, 2))))


def extent(affine, shape, a, b):
    lo = affine[[a, b], 3] - 0.5 * np.diag(affine)[[a, b]]
    hi = lo + np.diag(affine)[[a, b]] * np.asarray(shape)[[a, b]]
    return (lo[0], hi[0], hi[1], lo[1])


fig, axes = plt.subplots(1, 2, figsize=(10, 5))
axes[0].imshow(ct.array[:, :, k_ct].T, cmap="gray", vmin=-300, vmax=400, extent=extent(ct.affine, ct.array.shape, 0, 1))
top = float(spect.array.max())
axes[0].imshow(np.ma.masked_less(spect.array[:, :, k].T, 0.1 * top), cmap="hot", alpha=0.6, vmin=0, vmax=top,
               extent=extent(spect.affine, spect.array.shape, 0, 1))
axes[0].set(title=f"axial z = {z:.0f} mm", xlabel="x (mm, patient left)", ylabel="y (mm, posterior)")
j_ct = int(round((spect.affine[1, 3] + j * spect.affine[1, 1] - ct.affine[1, 3]) / ct.affine[1, 1]))
axes[1].imshow(ct.array[:, j_ct, :].T, cmap="gray", vmin=-300, vmax=400, origin="lower",
               extent=(*extent(ct.affine, ct.array.shape, 0, 2)[:2], *sorted(extent(ct.affine, ct.array.shape, 0, 2)[2:])))
axes[1].imshow(np.ma.masked_less(spect.array[:, j, :].T, 0.1 * top), cmap="hot", alpha=0.6, vmin=0, vmax=top,
               origin="lower", extent=(*extent(spect.affine, spect.array.shape, 0, 2)[:2],
                                       *sorted(extent(spect.affine, spect.array.shape, 0, 2)[2:])))
axes[1].set(title="coronal", xlabel="x (mm, patient left)", ylabel="z (mm, head up)")
fig.suptitle("Lu-177 SPECT (Bq/mL, hot) fused on CT, both in scanner coordinates")
fig.tight_layout()
fig.savefig(out / "fused_spect_ct.png", dpi=100)
print(f"wrote {out / 'fused_spect_ct.png'}")
