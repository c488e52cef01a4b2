"""The README's main job: torso phantom -> projections -> back projection -> OSEM, with figures.

Besides printing its figures, the demo writes PNG figures (matplotlib, Agg backend) and NIfTI
volumes to an output folder: see :func:`run_demo`.
"""

from __future__ import annotations

import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._geometry import SPECTGeometry
from ._projector import SPECTProjector
from ._psf import GaussianPSF
from ._simulate import simulate
from .metrics import format_table, voi_table
from .phantoms import torso_phantom
from .recon import osem

# A medium-energy parallel-hole collimator for Lu-177 (208 keV): ~10 mm FWHM at 100 mm.
ME_FWHM0_MM, ME_SLOPE = 2.5, 0.1


def _largest_lesion_centre(phantom) -> tuple[int, int, int] | None:
    """Voxel index of the centroid of the largest lesion, or None without lesions."""
    if not phantom.lesion_volumes_ml:
        return None
    largest = int(np.argmax(phantom.lesion_volumes_ml)) + 1
    return tuple(int(round(c)) for c in np.argwhere(phantom.masks[f"lesion_{largest}"]).mean(axis=0))


# The files the demo writes (besides one voi_<name>.nii.gz per VOI).
OUTPUT_NAMES = ("slices.png", "profile.png", "convergence.png", "truth.nii.gz", "mumap.nii.gz", "osem.nii.gz",
                "unrolled.nii.gz")


def existing_outputs(folder) -> list[Path]:
    """Files in ``folder`` that a demo run would replace (its SPECT/CT part's in ``spect_ct/``)."""
    from ._demo_spect_ct import OUTPUT_NAMES as SPECT_CT_NAMES

    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = [*OUTPUT_NAMES, *(f"spect_ct/{n}" for n in SPECT_CT_NAMES), "spect_ct/recon", "spect_ct/ct"]
    return [folder / n for n in names if (folder / n).exists()] + sorted(folder.glob("voi_*.nii.gz"))


def _save_figure(fig, path: Path) -> Path:
    from .io import atomic_write

    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def write_outputs(folder: Path, *, activity, mumap, recon, masks, voxel_size, phantom, log_likelihood, nrmse) -> list[Path]:
    """PNG figures (matplotlib, Agg) and NIfTI volumes of the demo; returns the paths written
    (each written to a temporary file and renamed into place; existing ones are replaced).

    ``activity``, ``recon`` (in the activity's units), ``mumap`` (1/mm) and ``masks`` are
    ``(nx, ny, nz)``; ``voxel_size`` in mm; ``log_likelihood``/``nrmse`` per OSEM iterate.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from .io import write_nifti

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    nx, ny, nz = activity.shape
    centre = _largest_lesion_centre(phantom) or (nx // 2, ny // 2, nz // 2)
    ci, cj, ck = centre
    vmax = float(max(activity.max(), recon.max()))
    # Mid-slices through the largest lesion: transverse (i, j), coronal (i, k), sagittal (j, k).
    planes = [("transverse k=%d" % ck, lambda v: v[:, :, ck].T),
              ("coronal j=%d" % cj, lambda v: v[:, cj, :].T),
              ("sagittal i=%d" % ci, lambda v: v[ci, :, :].T)]
    fig, axes = plt.subplots(2, 3, figsize=(11, 6.5))
    for row, (label, volume) in enumerate((("truth", activity), ("OSEM", recon))):
        for col, (title, cut) in enumerate(planes):
            ax = axes[row, col]
            im = ax.imshow(cut(volume), origin="lower", cmap="inferno", vmin=0, vmax=vmax)
            ax.set_title(f"{label}: {title}")
            ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.7, label="activity (relative concentration)")
    written.append(_save_figure(fig, folder / "slices.png"))
    plt.close(fig)

    dx = voxel_size[0]
    position = (np.arange(nx) - (nx - 1) / 2) * dx
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(position, activity[:, cj, ck], "k-", drawstyle="steps-mid", label="truth")
    ax.plot(position, recon[:, cj, ck], "C1-o", ms=3, label="OSEM")
    ax.set_xlabel("x (mm, towards the patient's left)")
    ax.set_ylabel("activity")
    ax.set_title(f"profile along x through the largest lesion (j={cj}, k={ck})")
    ax.legend()
    written.append(_save_figure(fig, folder / "profile.png"))
    plt.close(fig)

    iterations = np.arange(len(log_likelihood))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(iterations, log_likelihood, "o-")
    ax1.set_xlabel("OSEM iteration")
    ax1.set_ylabel("Poisson log-likelihood")
    ax2.plot(iterations, 100 * np.asarray(nrmse), "o-", color="C1")
    ax2.set_xlabel("OSEM iteration")
    ax2.set_ylabel("whole-image NRMSE %")
    fig.suptitle("OSEM convergence")
    fig.tight_layout()
    written.append(_save_figure(fig, folder / "convergence.png"))
    plt.close(fig)

    volumes = {"truth": activity, "mumap": mumap, "osem": recon}
    volumes.update({f"voi_{name}": np.asarray(mask, bool) for name, mask in masks.items()})
    for name, volume in volumes.items():
        written.append(write_nifti(folder / f"{name}.nii.gz", volume, voxel_size))
    return written


def _timed(fn, *args):
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, first, time.perf_counter() - start


def run_demo(
    n: int = 64, nz: int = 40, nview: int = 64, voxel_mm: float = 9.6, rotation: str = "bilinear",
    osem_iterations: int = 8, osem_subsets: int = 4, total_counts: float = 2e6,
    output_dir: str | Path | None = "jaxspect-demo-output", model_path: str | Path | None = None,
    spect_ct: bool = True,
) -> dict:
    """Run the demo and print its figures; returns them as a dict.

    A torso phantom (Lu-177, liver lesions) on a body-contouring orbit is projected and back
    projected (timings, adjoint dot test, attenuation), then Poisson data with 10% scatter are
    reconstructed with OSEM and the per-VOI MAE/NRMSE table is printed.

    Unless ``output_dir`` is ``None``, also writes to that folder (created if needed):
    ``slices.png`` (truth vs OSEM, mid-slices in the three planes), ``profile.png`` (a line
    profile through the largest lesion), ``convergence.png`` (OSEM log-likelihood and NRMSE
    per iteration) and the NIfTI volumes ``truth.nii.gz``, ``mumap.nii.gz`` (1/mm),
    ``osem.nii.gz`` (scaled back to the truth's units) and ``voi_<name>.nii.gz`` masks; their
    paths are returned under ``"files"`` and printed.

    With ``model_path`` (a trained :class:`jaxspect.recon.UnrolledEM` saved with
    :func:`jaxspect.save_model`, e.g. by ``benchmarks/training_methods.py --save-model``) the
    model is also run from the OSEM image; its VOI table is printed (``"unrolled_voi_table"``)
    and its image written as ``unrolled.nii.gz``.

    With ``spect_ct`` (and an ``output_dir``; needs pydicom) the SPECT/CT part runs in
    ``output_dir/spect_ct`` (:func:`jaxspect._demo_spect_ct.run_spect_ct_demo`): a DICOM CT
    series and NM file of the phantom, ``jaxspect reconstruct`` with ``--ct``, a collimator by
    name and a calibration factor, Bq/mL as DICOM and NIfTI in scanner coordinates and
    ``fused_spect_ct.png``; its figures under ``"spect_ct"``.
    """
    shape, vs = (n, n, nz), (voxel_mm,) * 3
    phantom = torso_phantom(jax.random.key(0), shape=shape, voxel_size=vs)
    activity, mumap, body = phantom.activity, phantom.mumap, phantom.masks["body"]
    angles = 2 * np.pi * np.arange(nview) / nview
    psf = GaussianPSF(ME_FWHM0_MM, ME_SLOPE)
    # Body-contouring orbit: 10 mm clearance from the body outline in every view (as in the paper).
    probe = SPECTGeometry(shape, vs, psf, angles=angles, radii=n * voxel_mm)
    radii = np.asarray(probe.object_extent(body)) + 10.0
    geometry = SPECTGeometry(shape, vs, psf, angles=angles, radii=radii)
    x, mu = jnp.asarray(activity), jnp.asarray(mumap)
    projector = SPECTProjector(geometry, mu, rotation=rotation)

    project = jax.jit(lambda a, x: a(x))
    backproject = jax.jit(lambda a, v: a.back(v))
    views, t_fp_first, t_fp = _timed(project, projector, x)
    free_views = project(SPECTProjector(geometry, None, rotation=rotation), x)
    sensitivity, t_bp_first, t_bp = _timed(backproject, projector, jnp.ones_like(views))
    rng = np.random.default_rng(0)
    u = jnp.asarray(rng.standard_normal(activity.shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(views.shape), jnp.float32)
    lhs, rhs = float(jnp.vdot(w, project(projector, u))), float(jnp.vdot(backproject(projector, w), u))
    dot_error = abs(lhs - rhs) / abs(lhs)

    data = simulate(jax.random.key(1), x, projector, total_counts=total_counts, scatter_fraction=0.1)
    start = time.perf_counter()
    result = osem(projector, data.counts, jnp.ones_like(x), n_iter=osem_iterations, n_subsets=osem_subsets,
                  background=data.background, history=True, reference=x * data.scale)
    recon = jax.block_until_ready(result.image)
    t_osem = time.perf_counter() - start
    masks = {name: m for name, m in phantom.masks.items() if name != "body"}
    table = voi_table(recon, x, masks)

    psf_px = geometry.psf.as_array(geometry.view_subset(np.arange(1))).shape[:2]
    counts = np.asarray(views).sum(axis=(0, 1))
    figures = {
        "image_shape": shape,
        "views_shape": tuple(views.shape),
        "psf_taps": tuple(psf_px),
        "orbit_radius_mm": (float(radii.min()), float(radii.max())),
        "activity_total": float(activity.sum()),
        "view_counts_min_max": (float(counts.min()), float(counts.max())),
        "attenuation_survival": float(views.sum() / free_views.sum()),
        "sensitivity_min_max_in_body": (
            float(np.asarray(sensitivity)[body > 0].min()),
            float(np.asarray(sensitivity)[body > 0].max()),
        ),
        "adjoint_dot_test_rel_error": dot_error,
        "forward_ms": 1e3 * t_fp,
        "back_ms": 1e3 * t_bp,
        "compile_s": t_fp_first - t_fp + t_bp_first - t_bp,
        "osem_s": t_osem,
        "voi_table": table,
        "osem_log_likelihood": np.asarray(result.log_likelihood),
        "osem_nrmse": np.asarray(result.nrmse),
        "files": [],
    }
    print(f"jaxspect demo on {jax.devices()[0].platform.upper()} ({jax.device_count()} device(s)), rotation={rotation}")
    print(f"  torso phantom {n}x{n}x{nz} voxels of {voxel_mm} mm (Lu-177, {len(phantom.lesion_volumes_ml)} liver lesions)")
    print(f"  {nview} views, body-contouring orbit {radii.min():.0f}-{radii.max():.0f} mm, ME collimator PSF {psf_px[0]}x{psf_px[1]} taps")
    print(f"  projections {figures['views_shape']}: counts per view {counts.min():.1f} .. {counts.max():.1f}")
    print(f"  fraction of photons surviving attenuation: {figures['attenuation_survival']:.3f}")
    lo, hi = figures["sensitivity_min_max_in_body"]
    print(f"  sensitivity A'1 inside the body: {lo:.2f} .. {hi:.2f}")
    print(f"  adjoint dot test |<w,Au> - <A'w,u>| / |<w,Au>| = {dot_error:.2e}")
    print(f"  forward {figures['forward_ms']:.0f} ms, back {figures['back_ms']:.0f} ms (after {figures['compile_s']:.1f} s compiling)")
    print(f"  OSEM {osem_iterations} iterations x {osem_subsets} subsets on {float(data.counts.sum()):.3g} counts "
          f"(10% scatter): {t_osem:.1f} s including compilation")
    print("\nOSEM vs truth, per VOI (images normalised to 1 MBq per field of view):")
    print(format_table(table))
    unrolled = None
    if model_path is not None:
        from ._serialization import load_model

        model = load_model(model_path)
        start = time.perf_counter()
        unrolled = jax.block_until_ready(eqx.filter_jit(model)(recon, projector, data.counts, data.background))
        figures["unrolled_voi_table"] = voi_table(unrolled, x, masks)
        print(f"\nUnrolled EM ({model_path}, {model.n_outer} outer iterations from the OSEM image, "
              f"{time.perf_counter() - start:.1f} s) vs truth, per VOI:")
        print(format_table(figures["unrolled_voi_table"]))
    if output_dir is not None:
        figures["files"] = write_outputs(
            Path(output_dir), activity=np.asarray(activity), mumap=np.asarray(mumap),
            recon=np.asarray(recon) / float(data.scale), masks=masks, voxel_size=vs, phantom=phantom,
            log_likelihood=figures["osem_log_likelihood"], nrmse=figures["osem_nrmse"],
        )
        if unrolled is not None:
            from .io import write_nifti

            figures["files"].append(write_nifti(Path(output_dir) / "unrolled.nii.gz",
                                                np.asarray(unrolled) / float(data.scale), vs))
        print(f"\nwrote {len(figures['files'])} files to {Path(output_dir).resolve()}:")
        for path in figures["files"]:
            print(f"  {path.name}")
        if spect_ct:
            try:
                import pydicom  # noqa: F401
            except ImportError:
                print("\nSPECT/CT part skipped: it needs pydicom (pip install \"jaxspect[io]\")")
            else:
                from ._demo_spect_ct import run_spect_ct_demo

                figures["spect_ct"] = run_spect_ct_demo(Path(output_dir) / "spect_ct", phantom, voxel_mm, nview,
                                                        iterations=osem_iterations, subsets=osem_subsets)
    return figures
