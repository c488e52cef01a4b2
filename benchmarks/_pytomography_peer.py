"""PyTomography's OSEM on jaxspect's data: the peer of ``benchmarks/osem.py``.

:func:`pytomography_osem` reconstructs jaxspect-simulated projections (``counts`` and the mean
additive ``background``, both ``(nx, nz, nview)``) with PyTomography's own classes
(``SPECTSystemMatrix`` with ``SPECTAttenuationTransform`` and ``SPECTPSFTransform``,
``PoissonLogLikelihood(additive_term=...)``, ``OSEM``), the same number of iterations and
(interleaved) subsets, start image ones, float32, on all CPU threads, and returns the image in
jaxspect's layout. It returns ``None`` when ``torch`` or ``pytomography`` is not importable;
both are imported lazily, so this module imports without them.

Mapping between the two systems (established empirically, see below)
--------------------------------------------------------------------
jaxspect and PyTomography describe the same acquisition with these correspondences, and
nothing else (no flips, transposes, reordering or angle offsets):

- image / attenuation map: PyTomography's object ``f[x, y, z]`` *is* jaxspect's
  ``x[i, j, k]`` (identity; same for the map, converted from 1/mm to 1/cm, i.e. times 10);
- views: PyTomography's view ``l`` is jaxspect's view ``l`` (same order, so the interleaved
  subsets ``l = s, s + S, ...`` of both are the same views), at PyTomography angle
  ``beta_l = degrees(theta_l)`` (same value, same sign, no offset), with radius
  ``radii[l] / 10`` cm (jaxspect's axis-to-detector-face distance, per view);
- projections: ``proj[l, r, z] == views[r, z, l]`` (``np.moveaxis(views, -1, 0)``): the
  radial bin ``r`` runs the same way as jaxspect's ``i``, ``z`` as ``k``.

Both rotate about the grid centre ``((n - 1)/2, (n - 1)/2)`` with bilinear interpolation,
attenuate with the central-ray model with the half-voxel self term, and put plane ``p``
(counted from the detector) at ``d = R + (p - (n - 1)/2) dx`` from the detector face.
(PyTomography rotates by ``beta - 270`` degrees and sums along ``x`` with the detector at
``+x``; jaxspect rotates by ``theta`` and sums along ``j`` with the detector at ``j = 0``: the
270 degrees and the different depth axis cancel, so the two angles coincide.)

How it was established (``python -m benchmarks._pytomography_peer`` reruns it): a 32 x 32 x 16
image with three off-centre point sources of different strengths, an asymmetric attenuation
map (inside the inscribed circle), 32 views at random (non-uniform) angles and no PSF was
projected by jaxspect and by PyTomography under every combination of the 8 in-plane
symmetries of the image (transposes and flips of ``(i, j)``, applied to image and map), angle
maps ``beta = +-degrees(theta) + {0, 90, 180, 270}`` and an optional flip of the bin axis
(128 hypotheses). Exactly one equivalence class (the 8 hypotheses that are the same
acquisition written in 8 ways, e.g. "flip ``i`` and use ``beta = -degrees(theta)`` with the
bins flipped") agrees to float32 round-off (NRMSE ~3e-6: the two rotate-and-sum projectors are
then numerically the same operator); its simplest member is the identity above. Every other
hypothesis is off by ~95% NRMSE or more. (Without attenuation the opposite-side hypothesis,
``beta + 180`` with flipped bins, would match too: the asymmetric attenuation tells the sides
apart.) The depth direction of the PSF and the pairing of radii with views were then checked
separately with a strongly depth-dependent PSF (FWHM0 2 mm, slope 0.15), no attenuation,
activity away from the axial ends and a body-contouring orbit (118-178 mm), 32 x 32 x 16
voxels of 12 mm, 32 views: identity 0.09% NRMSE (with ``pixel_integrated_sigma=True``), opposite side 11%,
radii in reversed view order 1.2%, one mean radius for all views 3.0%.

Forward projections with the full model (attenuation, depth-dependent Gaussian PSF, per-view
body-contouring radii) of the torso phantom of ``benchmarks.problems.osem_problem`` agree to 2.3% NRMSE
(32 x 32 x 16 voxels of 19.2 mm, 32 views) and 2.0% (64 x 64 x 40 of 9.6 mm, 64 views); with
``pixel_integrated_sigma=True`` 0.9% and 1.5% (0.6% and 0.2% without the first and last axial
slices). ``python -m benchmarks._pytomography_peer`` prints these figures. The rest is what the
two libraries discretise differently and this module does not try to paper over:

- PSF taps: jaxspect integrates the Gaussian over each pixel; PyTomography samples it at pixel
  centres (same FWHM(d) model, passed through ``sigma_fit``). For sigmas of about a pixel the
  point-sampled kernel is slightly narrower (variance smaller by about ``dx^2 / 12``);
  ``pixel_integrated_sigma=True`` adds that variance to PyTomography's sigma, a closer match
  (off by default, as in ``benchmarks/projector.py``). On ``osem.py --small`` it halves the
  NRMSE between the two OSEM reconstructions (6.9% -> 3.3%; the paper size gave 9.3% with
  the default, not measured with the option);
- PSF edges: jaxspect pads the blur with replicate (nearest) values; PyTomography pads with
  zeros (``Conv1d``). It matters where activity touches the image edge: the torso phantom
  fills every axial slice, so the first and last slices differ;
- kernel size: jaxspect uses one tap count ``2h + 1`` (``h = ceil(3 sigma_max / dx)``) for all
  views; PyTomography picks one per radius from ``min_sigmas``, chosen here so that the widest
  (largest radius) kernel has jaxspect's ``2h + 1`` taps (smaller radii get fewer taps, all
  still covering >= 3 sigma);
- rotation support: jaxspect rotates within the ``n x n`` square (SPECTrecon.jl's choice),
  PyTomography in a zero-padded square (``ceil((sqrt(2) - 1) n / 2)`` per side), so activity
  or attenuation outside the inscribed circle is clipped at oblique views by jaxspect only
  (the torso phantom lies well inside it);
- OSEM details: PyTomography divides by ``H_m^T 1 + 1e-11`` and ``H x + r + 1e-11``;
  jaxspect zeroes zero-sensitivity voxels. Nothing in this problem is zero.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import statistics
import sys
import time

import numpy as np

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))


def available() -> bool:
    """Whether ``torch`` and ``pytomography`` can be imported (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "pytomography"))


def _threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _import(threads: int | None = None):
    """Import torch and pytomography (quietly): CPU device, float32; ``threads`` torch threads
    when given (else torch's setting is left alone)."""
    if "torch" not in sys.modules:
        # torch's OpenMP workers spin while waiting; on a shared machine that penalises it
        # disproportionately (see benchmarks/projector.py). Only effective before torch loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    with contextlib.redirect_stdout(io.StringIO()):  # "PyTomography did not find a GPU ..."
        import pytomography
    if threads is not None:
        torch.set_num_threads(threads)
    pytomography.set_device("cpu")
    pytomography.dtype = torch.float32
    return torch, pytomography


# --- the mapping between the two conventions (see the module docstring) ------------------------


def image_to_pytomography(image):
    """jaxspect image (or attenuation map) ``(nx, ny, nz)`` -> PyTomography object: identity."""
    return np.ascontiguousarray(np.asarray(image, np.float32))


def image_from_pytomography(obj):
    """PyTomography object ``(nx, ny, nz)`` -> jaxspect image: identity."""
    return np.ascontiguousarray(np.asarray(obj, np.float32))


def views_to_pytomography(views):
    """jaxspect views ``(nx, nz, nview)`` -> PyTomography projections ``(nview, nx, nz)``."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(views, np.float32), -1, 0))


def views_from_pytomography(proj):
    """PyTomography projections ``(nview, nx, nz)`` -> jaxspect views ``(nx, nz, nview)``."""
    return np.ascontiguousarray(np.moveaxis(np.asarray(proj, np.float32), 0, -1))


def angles_to_pytomography(angles_rad):
    """jaxspect view angles (radians) -> PyTomography angles (degrees): same value and sign."""
    return np.degrees(np.asarray(angles_rad, np.float64))


def build_system_matrix(geometry, mumap_per_mm=None, *, pixel_integrated_sigma=False):
    """PyTomography ``SPECTSystemMatrix`` modelling the acquisition of a jaxspect geometry.

    ``geometry``: a ``jaxspect.SPECTGeometry`` with a ``GaussianPSF`` (or, for no PSF, a
    ``GaussianPSF`` with zero half widths) and radii; ``mumap_per_mm``: jaxspect's attenuation
    map (1/mm, image layout) or None. Returns ``(system, info)``.
    """
    torch, _ = _import()
    from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
    from pytomography.projectors.SPECT import SPECTSystemMatrix
    from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform
    from pytomography.utils import compute_pad_size, get_distance

    nx, ny, nz = geometry.image_shape
    dx_mm, _, dz_mm = geometry.voxel_size
    dr_cm = [v / 10 for v in geometry.voxel_size]
    angles_deg = angles_to_pytomography(geometry.angles)
    nview = len(angles_deg)
    if geometry.radii is None:
        raise ValueError("the geometry needs radii (mm) to model the PSF")
    radii_cm = np.asarray(geometry.radii, np.float64) / 10
    object_meta = SPECTObjectMeta(dr_cm, [nx, ny, nz])
    proj_meta = SPECTProjMeta((nx, nz), [dr_cm[0], dr_cm[2]], angles_deg, radii=radii_cm)

    obj2obj = []
    if mumap_per_mm is not None:
        mu_cm = torch.tensor(image_to_pytomography(mumap_per_mm) * 10)  # 1/mm -> 1/cm
        obj2obj.append(SPECTAttenuationTransform(attenuation_map=mu_cm))

    psf = geometry.psf
    hx, hz = getattr(psf, "half_width_x", None), getattr(psf, "half_width_z", None)
    if hx is None or hz is None:
        raise NotImplementedError(f"only jaxspect's GaussianPSF is mapped, got {type(psf).__name__}")
    info = {"psf_taps_jaxspect": (2 * hx + 1, 2 * hz + 1)}
    fwhm0_cm, slope = float(psf.fwhm0) / 10, float(psf.slope)
    if hx > 0 and (fwhm0_cm > 0 or slope > 0):
        if hz == 0 and nz > 1:
            raise NotImplementedError("a GaussianPSF with half_width_z=0 (1-D blur) is not mapped")
        # sigma(d) in cm, d the distance to the detector face in cm: the same FWHM(d) model.
        a, b = slope / FWHM_PER_SIGMA, fwhm0_cm / FWHM_PER_SIGMA
        extra = (dr_cm[0] ** 2 / 12) if pixel_integrated_sigma else 0.0
        if pixel_integrated_sigma and not np.isclose(dx_mm, dz_mm):
            raise NotImplementedError("pixel_integrated_sigma needs dx == dz")

        def sigma_fit(r, a, b):
            return np.sqrt((a * r) ** 2 + b**2 + extra)

        # Kernel size: PyTomography uses 2 ceil(min_sigmas * sigma_max / dx) + 1 taps per
        # radius, sigma_max over the padded planes; make the largest radius's kernel 2 hx + 1.
        padded = nx + 2 * compute_pad_size(nx)
        sigma_max_px = sigma_fit(get_distance(padded, float(radii_cm.max()), dr_cm[0]), a, b).max() / dr_cm[0]
        min_sigmas = (hx - 0.5) / sigma_max_px
        psf_transform = SPECTPSFTransform(SPECTPSFMeta((a, b), sigma_fit=sigma_fit, min_sigmas=min_sigmas))
        obj2obj.append(psf_transform)
    else:
        psf_transform = None

    system = SPECTSystemMatrix(obj2obj, [], object_meta, proj_meta)
    if psf_transform is not None:
        layer = psf_transform.layers[float(radii_cm.max())]
        info["psf_taps_pytomography_max_radius"] = (
            int(layer.layer_r.weight.shape[-1]), int(layer.layer_z.weight.shape[-1]))
        layer = psf_transform.layers[float(radii_cm.min())]
        info["psf_taps_pytomography_min_radius"] = (
            int(layer.layer_r.weight.shape[-1]), int(layer.layer_z.weight.shape[-1]))
    info["nview"] = nview
    return system, info


def forward_project(system, image):
    """PyTomography forward projection of a jaxspect image, returned as jaxspect views."""
    import torch

    with torch.no_grad():
        proj = system.forward(torch.tensor(image_to_pytomography(image)))
    return views_from_pytomography(proj.numpy())


# --- the OSEM peer ------------------------------------------------------------------------------


def pytomography_osem(phantom, geometry, counts, background, n_iter, n_subsets, *,
                      repeats: int = 1, threads: int | None = None, pixel_integrated_sigma=False):
    """PyTomography OSEM of jaxspect data; ``None`` if torch/pytomography are not importable.

    ``phantom.mumap`` (1/mm) is the attenuation map; ``counts`` and ``background`` are
    jaxspect views ``(nx, nz, nview)``. The timed part is what ``jaxspect.osem`` also does in
    its jitted call: the per-subset sensitivity images ``H_m^T 1`` (computed when the likelihood
    is given its subsets) and ``n_iter`` x ``n_subsets`` updates from ones. Building the system
    matrix (PSF layers) and a one-view warm-up projection are not timed. Returns a dict with
    ``image`` (numpy ``(nx, ny, nz)`` float32 in jaxspect's layout and units), ``median_s``
    (median over ``repeats`` runs), ``times``, ``setup_s``, ``threads`` and version figures.
    """
    if not available():
        return None
    try:
        torch, pytomography = _import(threads or _threads())
    except ImportError:
        return None
    from pytomography.algorithms import OSEM
    from pytomography.likelihoods import PoissonLogLikelihood

    start = time.perf_counter()
    system, info = build_system_matrix(geometry, np.asarray(phantom.mumap),
                                       pixel_integrated_sigma=pixel_integrated_sigma)
    y = torch.tensor(views_to_pytomography(counts))
    r = torch.tensor(views_to_pytomography(background))
    x0 = torch.ones(geometry.image_shape, dtype=torch.float32)
    setup_s = time.perf_counter() - start

    with torch.no_grad():
        # Warm-up (PyTomography is eager: nothing to compile): one view forward and back.
        system.set_n_subsets(info["nview"])
        system.backward(system.forward(x0, subset_idx=0), subset_idx=0)
        times, image = [], None
        for _ in range(max(1, int(repeats))):
            start = time.perf_counter()
            likelihood = PoissonLogLikelihood(system, y, additive_term=r)
            recon = OSEM(likelihood, object_initial=x0.clone())
            image = recon(n_iters=n_iter, n_subsets=n_subsets)
            times.append(time.perf_counter() - start)
    return {
        "image": image_from_pytomography(image.cpu().numpy()),
        "median_s": statistics.median(times),
        "times": times,
        "setup_s": setup_s,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "pytomography": pytomography.__version__,
        **info,
    }


# --- the mapping check (python -m benchmarks._pytomography_peer) -------------------------------


def _dihedral(a, code):
    transpose, flip0, flip1 = code
    out = np.swapaxes(a, 0, 1) if transpose else a
    if flip0:
        out = out[::-1]
    if flip1:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def _nrmse(a, ref):
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def check_mapping(n=32, nz=16, nview=32, seed=0):
    """Search all 128 candidate mappings on point sources; return ``[(nrmse, hypothesis), ...]``
    sorted, where hypothesis = (image (transpose, flip i, flip j), angle sign, offset deg,
    bin flip)."""
    import itertools

    import jax.numpy as jnp

    import jaxspect as js

    rng = np.random.default_rng(seed)
    vs = 4.0
    img = np.zeros((n, n, nz), np.float32)
    img[22, 9, 4], img[20, 9, 4], img[8, 12, 11] = 1.0, 0.5, 2.0  # off-centre, asymmetric
    c = (n - 1) / 2
    ii, jj = np.meshgrid(np.arange(n) - c, np.arange(n) - c, indexing="ij")
    disk = (ii**2 + jj**2 < (n / 2 - 2) ** 2)[..., None]
    mu = np.zeros((n, n, nz), np.float32)
    mu[4:-4, 4:-4] = 0.015
    mu[4 : n // 2, 4:-4] = 0.03
    mu[4:-4, 4:12] += 0.02
    mu = (mu * disk).astype(np.float32)  # inside the inscribed circle (see the docstring)
    angles = np.sort(rng.uniform(0, 2 * np.pi, nview))
    radii = rng.uniform(150, 250, nview)
    no_psf = js.GaussianPSF(0.0, 0.0, half_width_x=0, half_width_z=0)
    geom = js.SPECTGeometry((n, n, nz), (vs,) * 3, no_psf, angles=angles, radii=radii)
    ref = np.asarray(js.forward_project(jnp.asarray(img), jnp.asarray(mu), geom))
    deg = np.degrees(angles)
    results = []
    for code in itertools.product((0, 1), repeat=3):
        for sign in (1, -1):
            for offset in (0, 90, 180, 270):
                g = js.SPECTGeometry((n, n, nz), (vs,) * 3, no_psf,
                                     angles=np.radians((sign * deg + offset) % 360), radii=radii)
                system, _ = build_system_matrix(g, _dihedral(mu, code))
                proj = forward_project(system, _dihedral(img, code))
                for flip in (0, 1):
                    results.append((_nrmse(proj[::-1] if flip else proj, ref), (code, sign, offset, flip)))
    results.sort(key=lambda t: t[0])
    return results


def check_psf_depth(n=32, nz=16, nview=32, voxel_mm=12.0):
    """PSF depth direction and radius-view pairing: NRMSE of PyTomography's forward projection
    (no attenuation, strongly depth-dependent PSF, activity away from the axial ends) against
    jaxspect's, for the mapping and for three wrong alternatives."""
    import jax.numpy as jnp

    import jaxspect as js
    from benchmarks.problems import osem_problem  # noqa: PLC0415

    phantom, g = osem_problem(n, nz, nview, voxel_mm)
    act = np.asarray(phantom.activity, np.float32).copy()
    act[:, :, :4], act[:, :, -4:] = 0, 0
    theta, radii = np.asarray(g.angles, np.float64), np.asarray(g.radii, np.float64)
    psf = js.GaussianPSF(2.0, 0.15)
    geom = js.SPECTGeometry(g.image_shape, g.voxel_size, psf, angles=theta, radii=radii)
    ref = np.asarray(js.forward_project(jnp.asarray(act), None, geom))
    out = {}
    for name, angles, r, flip in (
        ("mapping (identity)", theta, radii, False),
        ("opposite side (beta + 180, bins flipped)", (theta + np.pi) % (2 * np.pi), radii, True),
        ("radii in reversed view order", theta, radii[::-1].copy(), False),
        ("one mean radius for all views", theta, np.full_like(radii, radii.mean()), False),
    ):
        gg = js.SPECTGeometry(g.image_shape, g.voxel_size, geom.psf, angles=angles, radii=r)
        system, _ = build_system_matrix(gg, None, pixel_integrated_sigma=True)
        views = forward_project(system, act)
        out[name] = _nrmse(views[::-1] if flip else views, ref)
    return out, (float(radii.min()), float(radii.max()))


def compare_forward(phantom, geometry, *, pixel_integrated_sigma=False):
    """NRMSE of PyTomography's (mapped) forward projection against jaxspect's, full model."""
    import jax.numpy as jnp

    import jaxspect as js

    act, mu = np.asarray(phantom.activity, np.float32), np.asarray(phantom.mumap, np.float32)
    ref = np.asarray(js.forward_project(jnp.asarray(act), jnp.asarray(mu), geometry))
    system, info = build_system_matrix(geometry, mu, pixel_integrated_sigma=pixel_integrated_sigma)
    proj = forward_project(system, act)
    inner = _nrmse(proj[:, 1:-1], ref[:, 1:-1])  # without the first and last axial slices
    return _nrmse(proj, ref), inner, info


def _main():
    if not available():
        print("torch/pytomography not importable")
        return
    _import(int(os.environ.get("PEER_THREADS", _threads())))
    results = check_mapping()
    print("mapping search (point sources, asymmetric attenuation, random angles/radii, no PSF):")
    for err, hyp in results[:10]:
        print(f"  NRMSE {err:.2e}  image(transpose, flip i, flip j)={hyp[0]} beta={'+' if hyp[1] > 0 else '-'}"
              f"deg(theta)+{hyp[2]}  bin flip={hyp[3]}")
    print(f"  ... best outside the matching class: {results[8][0]:.3f}")

    errors, (rmin, rmax) = check_psf_depth()
    print(f"PSF depth / radii check (no attenuation, FWHM0 2 mm, slope 0.15, orbit {rmin:.0f}-{rmax:.0f} mm):")
    for name, err in errors.items():
        print(f"  {name:45s} NRMSE {100 * err:.2f}%")

    from benchmarks.problems import osem_problem  # noqa: PLC0415

    for n, nz, nview, vs in ((32, 16, 32, 19.2), (64, 40, 64, 9.6)):
        phantom, geometry = osem_problem(n, nz, nview, vs)
        for corr in (False, True):
            full, inner, info = compare_forward(phantom, geometry, pixel_integrated_sigma=corr)
            print(f"torso {n}x{n}x{nz}, {vs} mm, {nview} views, body-contouring orbit, PSF "
                  f"{info['psf_taps_jaxspect']} taps (PyTomography {info['psf_taps_pytomography_max_radius']}"
                  f"-{info['psf_taps_pytomography_min_radius']}), attenuation, pixel_integrated_sigma={corr}: "
                  f"forward NRMSE {100 * full:.2f}% ({100 * inner:.2f}% without the end slices)")


if __name__ == "__main__":
    _main()
