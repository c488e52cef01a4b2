"""Speed and memory of jaxspect's SPECT projector (prints figures; never asserts on them).

What it measures
----------------
Two problem sizes, both with 4.8 mm voxels, a circular orbit and a depth-dependent Gaussian
PSF, on a numerical torso phantom (an elliptical water cylinder with lungs, a liver and two
hot lesions; attenuation of water at 140 keV, 0.0153 /mm):

- case ``a``: 64x64x40 image, 60 views, 19x19 PSF (half widths 9): the timing setup of
  SPECTrecon.jl, whose published figures are 290 ms forward / 208 ms back on a multi-core
  workstation;
- case ``b``: 128x128x80 image, 128 views, 37x37 PSF (half widths 18): the paper's size.

For each case and rotation method (``bilinear``, ``three_pass``) it runs four
``jax.jit``-compiled functions: forward projection ``A x`` (``js.forward_project``), back
projection ``A^T v`` (``js.back_project``), ``jax.grad`` of ``0.5 * ||A x - y||^2`` with
respect to the image ``x`` (its VJP is one back projection), and ``jax.jvp`` of the projection
(forward mode: ``A x`` and ``A t``). The attenuation map and geometry are jit arguments, as in a
reconstruction loop. For each it reports

- compile time (trace + lower + XLA compile, measured once, cold);
- the median wall time of a few calls after a warm-up call (with ``jax.block_until_ready``),
  and min/max;
- memory two ways: XLA's own compiled memory analysis (``argument + output + temp - alias``
  bytes of ``jit(f).lower(...).compile().memory_analysis()``), and the increase of the
  process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over one
  call, measured in a fresh subprocess whose baseline is taken after imports, input creation
  and compilation. So that the XLA compiler's own memory does not count as the call's, that
  process hands the compiler's freed memory back to the OS (``malloc_trim``) and resets its
  peak RSS (Linux ``/proc/self/clear_refs``) just before the call;
- the targets next to the figures, with a PASS/MISS word: (a) <= 300 ms forward and back,
  (b) <= 3 s forward and back, grad (and jvp) <= 2.5x forward, and peak memory of (b)'s grad
  < 1 GiB.

Every (case, rotation, operation) runs in its own subprocesses, so caches, allocator
state and peak RSS do not leak from one measurement into the next.

Optional peer comparison: when ``torch`` and ``pytomography`` are importable, PyTomography's
``SPECTSystemMatrix`` (rotate+sum, with attenuation and PSF transforms) projects the same
phantom with the same attenuation map, views, orbit radius and FWHM model, and the script
prints jaxspect's time over PyTomography's (below 1: jaxspect is faster), both timed in one
process with their calls interleaved; :func:`worker_peer` says what is and is not matched.
It runs with ``OMP_WAIT_POLICY=PASSIVE`` (unless set) so that other load on the machine does
not penalise torch's spinning OpenMP threads disproportionately. Install it with
``pip install torch==2.13.0 pytomography`` (a CPU build of torch is what this compares).
Without it the comparison is skipped.

Usage::

    python benchmarks/projector.py                      # cases a and b, both rotations (5-8 min on 2 cores)
    python benchmarks/projector.py --quick              # case a only (about 2 min)
    python benchmarks/projector.py --cases a,b --rotation bilinear
    python benchmarks/projector.py --json results.json  # also write every figure as JSON

Timings depend on the machine and on whatever else runs on it; they are printed, not checked.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if (REPO_ROOT / "jaxspect" / "__init__.py").exists():
    sys.path.insert(0, str(REPO_ROOT))  # benchmark this checkout, installed or not

MIB = 2**20
GIB = 2**30
RESULT_TAG = "RESULT-JSON:"


# --- problem definitions ------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, int, int]
    nview: int
    psf_half_width: int
    voxel_mm: float
    radius_mm: float
    time_target_s: float  # forward and back, each
    repeats: int  # timed jaxspect calls (after a warm-up call)
    peer_repeats: int  # timed PyTomography calls (slow: tens of seconds each at case b)
    note: str

    @property
    def psf_size(self) -> int:
        return 2 * self.psf_half_width + 1

    def describe(self) -> str:
        nx, ny, nz = self.shape
        p = self.psf_size
        return (
            f"case {self.name}: image {nx}x{ny}x{nz}, {self.nview} views, PSF {p}x{p}, "
            f"voxel {self.voxel_mm} mm, orbit radius {self.radius_mm:g} mm ({self.note})"
        )


CASES = {
    "a": Case("a", (64, 64, 40), 60, 9, 4.8, 260.0, 0.3, 5, 3,
              "SPECTrecon.jl timing setup: 290 ms forward / 208 ms back published"),
    "b": Case("b", (128, 128, 80), 128, 18, 4.8, 260.0, 3.0, 3, 1, "the paper's size"),
}
ROTATIONS = ("bilinear", "three_pass")
OPS = ("forward", "back", "grad", "jvp")
GRAD_RATIO_TARGET = 2.5
GRAD_MEMORY_TARGET_BYTES = GIB  # case b's grad
# torch's OpenMP threads spin while waiting; when anything else runs on the machine that
# makes PyTomography several times slower (measured 1.4 s -> 10 s on 2 busy cores). Passive
# waiting costs little on an idle machine and keeps the comparison fair on a busy one.
PEER_ENV = {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}

# Collimator response FWHM(d) = sqrt(FWHM0^2 + (SLOPE d)^2), d = distance to the detector face
# (a low-energy high-resolution collimator: ~7 mm at 10 cm). Tap counts are fixed per case.
FWHM0_MM = 3.5
SLOPE = 0.06
MU_WATER_PER_MM = 0.0153  # water at 140 keV (Tc-99m)


def make_phantom(case: Case):
    """Activity and attenuation maps (numpy float32, (nx, ny, nz), 1/mm), fixed for a case.

    An elliptical water cylinder (semi-axes 140 x 100 mm, full axial length) holding two lungs
    (30% density, low activity), a liver and two hot spheres. Lengths are in mm, so the body is
    the same physical size in both cases and fits inside the orbit.
    """
    import numpy as np

    nx, ny, nz = case.shape
    d = case.voxel_mm
    x = (np.arange(nx) - (nx - 1) / 2)[:, None, None] * d
    y = (np.arange(ny) - (ny - 1) / 2)[None, :, None] * d
    z = (np.arange(nz) - (nz - 1) / 2)[None, None, :] * d

    def ellipsoid(cx, cy, cz, ax, ay, az):
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1

    body = np.broadcast_to((x / 140.0) ** 2 + (y / 100.0) ** 2 <= 1, case.shape)
    lungs = ellipsoid(60, 10, 40, 40, 50, 70) | ellipsoid(-60, 10, 40, 40, 50, 70)
    liver = ellipsoid(-45, -10, -40, 55, 45, 50) & ~lungs
    lesions = [(ellipsoid(40, -30, -20, 15, 15, 15), 10.0), (ellipsoid(0, 45, 20, 10, 10, 10), 8.0)]

    mumap = np.where(body, MU_WATER_PER_MM, 0.0)
    mumap = np.where(body & lungs, 0.3 * MU_WATER_PER_MM, mumap)
    activity = np.where(body, 1.0, 0.0)
    activity = np.where(body & lungs, 0.2, activity)
    activity = np.where(body & liver, 4.0, activity)
    for mask, value in lesions:
        activity = np.where(body & mask, value, activity)
    return activity.astype(np.float32), mumap.astype(np.float32)


# --- the jaxspect worker: one (case, rotation, operation) per process ---------------------------


def _maxrss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def _jaxspect_problem(case: Case, rotation: str, op: str):
    """(function, arguments) of one measurement; the function is pure and jit-able."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxspect as js

    activity, mu = make_phantom(case)
    h = case.psf_half_width
    psf = js.GaussianPSF(FWHM0_MM, SLOPE, half_width_x=h, half_width_z=h)
    voxel = (case.voxel_mm,) * 3
    geom = js.SPECTGeometry(case.shape, voxel, psf, nview=case.nview, radii=case.radius_mm)
    image, mumap = jnp.asarray(activity), jnp.asarray(mu)
    rng = np.random.default_rng(0)
    data = jnp.asarray(rng.uniform(0.0, 10.0, geom.views_shape).astype(np.float32))

    if op == "forward":
        fn = lambda x, mu, g: js.forward_project(x, mu, g, rotation=rotation)
        args = (image, mumap, geom)
    elif op == "back":
        fn = lambda v, mu, g: js.back_project(v, mu, g, rotation=rotation)
        args = (data, mumap, geom)
    elif op == "grad":
        def loss(x, mu, g, y):
            r = js.forward_project(x, mu, g, rotation=rotation) - y
            return 0.5 * jnp.sum(r * r)

        fn = jax.grad(loss)  # w.r.t. the image only
        args = (image, mumap, geom, data)
    elif op == "jvp":
        # forward mode: the projection and its tangent A t (a second projection) in one call
        fn = lambda x, t, mu, g: jax.jvp(lambda x: js.forward_project(x, mu, g, rotation=rotation), (x,), (t,))
        args = (image, jnp.asarray(rng.standard_normal(case.shape).astype(np.float32)), mumap, geom)
    else:
        raise ValueError(op)
    jax.block_until_ready(args)
    return fn, args


def _memory_stats(compiled) -> dict:
    """XLA's compiled memory analysis, plus ``total_bytes = argument + output + temp - alias``."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    names = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
             "alias_size_in_bytes", "generated_code_size_in_bytes", "peak_memory_in_bytes")
    out = {n: int(getattr(stats, n)) for n in names if hasattr(stats, n)}
    out["total_bytes"] = (out.get("argument_size_in_bytes", 0) + out.get("output_size_in_bytes", 0)
                          + out.get("temp_size_in_bytes", 0) - out.get("alias_size_in_bytes", 0))
    return out


def worker_time(case: Case, rotation: str, op: str, repeats: int) -> dict:
    """Compile (cold), warm up, then time ``repeats`` calls; XLA's memory analysis."""
    import jax

    fn, args = _jaxspect_problem(case, rotation, op)
    t0 = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    jax.block_until_ready(compiled(*args))  # warm-up
    t3 = time.perf_counter()
    times = []
    for _ in range(repeats):
        s = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - s)
    return {
        "trace_lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "warmup_s": t3 - t2,
        "times_s": times,
        "median_s": statistics.median(times),
        "xla_memory": _memory_stats(compiled),
    }


def _release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so that memory the compiler
    freed is not silently reused by the call (which would hide the call's own footprint)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); False if not
    possible. Resets ``ru_maxrss`` too, except for any peak inherited at ``exec`` time from
    the parent, which is why the driver process imports nothing large."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker_rss(case: Case, rotation: str, op: str) -> dict:
    """Peak-RSS increase over one call of the compiled function, in a fresh process.

    Baseline: after imports, input creation and compilation, with the compiler's freed memory
    returned to the OS and the peak reset to the current RSS. Where the peak cannot be reset
    the baseline is taken before compiling, and the figure then includes the compiler's peak.
    """
    import jax

    fn, args = _jaxspect_problem(case, rotation, op)
    before_compile = _maxrss_bytes()
    compiled = jax.jit(fn).lower(*args).compile()
    _release_free_memory()
    reset = _reset_peak_rss()
    base = _maxrss_bytes() if reset else before_compile
    jax.block_until_ready(compiled(*args))
    peak = _maxrss_bytes()
    return {
        "rss_baseline_bytes": base,
        "rss_increase_bytes": peak - base,
        "rss_peak_reset": reset,
    }


# --- the PyTomography peer ----------------------------------------------------------------------


def peer_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "pytomography"))


def worker_peer(case: Case, repeats: int, rotation: str) -> dict:
    """Time PyTomography's SPECT system matrix (forward and back) on the same problem.

    Matched: image grid and voxel size, phantom, attenuation map (converted to 1/cm), number of
    views (equally spaced over 360 degrees), orbit radius, the FWHM(d) model (through
    ``sigma_fit``) and the PSF kernel size (through ``min_sigmas``), float32, all CPU cores.
    What differs (PyTomography's design, not settings): it rotates a zero-padded volume
    (``ceil((sqrt(2) - 1) n / 2)`` voxels per side) with kornia's bilinear ``rotate``, blurs
    every padded plane, with point-sampled (not pixel-integrated) Gaussian taps and zero (not
    replicate) padding via grouped ``Conv1d``; its angle convention differs from jaxspect's.
    Its attenuation uses the same central-ray model with a half-voxel self term.

    jaxspect's forward and back projection (jit-compiled, ``rotation``) are timed in this same
    process, one call before and one after every PyTomography call, so that the ratio compares
    the two under the same load.
    """
    import numpy as np
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    import pytomography
    from pytomography.metadata.SPECT import SPECTObjectMeta, SPECTProjMeta, SPECTPSFMeta
    from pytomography.projectors.SPECT import SPECTSystemMatrix
    from pytomography.transforms.SPECT import SPECTAttenuationTransform, SPECTPSFTransform
    from pytomography.utils import compute_pad_size, get_distance

    pytomography.set_device("cpu")
    activity, mu = make_phantom(case)
    nx, _, nz = case.shape
    dr_cm = [case.voxel_mm / 10] * 3
    radius_cm = case.radius_mm / 10
    angles = np.arange(case.nview) * 360.0 / case.nview
    object_meta = SPECTObjectMeta(dr_cm, list(case.shape))
    proj_meta = SPECTProjMeta((nx, nz), dr_cm[:2], angles, radii=np.full(case.nview, radius_cm))

    # sigma(d) in cm with the same FWHM model; choose min_sigmas so that the kernel is
    # 2 * half_width + 1 taps, as in jaxspect (kernel = 2 ceil(min_sigmas * max sigma) + 1).
    fwhm_per_sigma = 2 * np.sqrt(2 * np.log(2))
    a, b = SLOPE / fwhm_per_sigma, FWHM0_MM / 10 / fwhm_per_sigma
    sigma_fit = lambda r, a, b: np.sqrt((a * r) ** 2 + b**2)
    padded = nx + 2 * compute_pad_size(nx)
    sigma_max_px = sigma_fit(get_distance(padded, radius_cm, dr_cm[0]), a, b).max() / dr_cm[0]
    min_sigmas = (case.psf_half_width - 0.5) / sigma_max_px
    psf_meta = SPECTPSFMeta((a, b), sigma_fit=sigma_fit, min_sigmas=min_sigmas)

    att = SPECTAttenuationTransform(attenuation_map=torch.tensor(mu * 10))  # 1/mm -> 1/cm
    psf = SPECTPSFTransform(psf_meta)
    system = SPECTSystemMatrix([att, psf], [], object_meta, proj_meta)
    layer = psf.layers[radius_cm]
    kernel = (int(layer.layer_r.weight.shape[-1]), int(layer.layer_z.weight.shape[-1]))

    image = torch.tensor(activity)
    views = torch.tensor(np.random.default_rng(0).uniform(0, 10, (case.nview, nx, nz)).astype(np.float32))

    # jaxspect on the same problem in this same process, its calls interleaved with
    # PyTomography's, so that both see the same machine load.
    import jax

    ours = {}
    for op in ("forward", "back"):
        fn, args = _jaxspect_problem(case, rotation, op)
        compiled = jax.jit(fn).lower(*args).compile()
        jax.block_until_ready(compiled(*args))  # warm-up
        ours[op] = lambda c=compiled, a=args: jax.block_until_ready(c(*a))

    def clock(f):
        s = time.perf_counter()
        f()
        return time.perf_counter() - s

    def interleaved(peer_call, peer_warm_up, our_call):
        peer_warm_up()
        peer_times, our_times = [], [clock(our_call)]
        for _ in range(repeats):
            peer_times.append(clock(peer_call))
            our_times.append(clock(our_call))  # one jaxspect call before and after each
        return peer_times, our_times

    # PyTomography runs eagerly (nothing to compile): warm it up on a single view (a one-view
    # "subset"), which is cheap even at case b's size, then time full projections.
    system.set_n_subsets(case.nview)
    with torch.no_grad():
        fwd, our_fwd = interleaved(lambda: system.forward(image),
                                   lambda: system.forward(image, subset_idx=0), ours["forward"])
        back, our_back = interleaved(lambda: system.backward(views),
                                     lambda: system.backward(views[:1], subset_idx=0), ours["back"])
    return {
        "torch": torch.__version__,
        "pytomography": pytomography.__version__,
        "threads": torch.get_num_threads(),
        "kernel": kernel,
        "rotation": rotation,
        "forward_s": statistics.median(fwd),
        "back_s": statistics.median(back),
        "jaxspect_forward_s": statistics.median(our_fwd),
        "jaxspect_back_s": statistics.median(our_back),
        "forward_times_s": fwd,
        "back_times_s": back,
        "jaxspect_forward_times_s": our_fwd,
        "jaxspect_back_times_s": our_back,
    }


# --- driver -------------------------------------------------------------------------------------


def run_worker(spec: dict, timeout_s: float, env: dict | None = None) -> dict:
    """Run ``spec`` in a fresh Python process and return its result (or ``{"error": ...}``)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env=None if env is None else {**os.environ, **env})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def worker_main(spec: dict) -> None:
    case = CASES[spec["case"]]
    kind = spec["kind"]
    if kind == "time":
        result = worker_time(case, spec["rotation"], spec["op"], spec["repeats"])
    elif kind == "rss":
        result = worker_rss(case, spec["rotation"], spec["op"])
    elif kind == "machine":
        result = {"line": machine_line()}
    elif kind == "peer":
        result = worker_peer(case, spec["repeats"], spec["rotation"])
    else:
        raise ValueError(kind)
    print(RESULT_TAG + json.dumps(result), flush=True)


def machine_line() -> str:
    import jax
    import jaxlib

    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs "
        f"({affinity} usable); python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {jaxlib.__version__}, device {dev.platform}:{dev.device_kind} "
        f"(x{jax.device_count()}); float32"
    )


def _load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def _fmt_s(t):
    return "-" if t is None else (f"{t * 1e3:.0f} ms" if t < 1 else f"{t:.2f} s")


def _fmt_mib(b):
    return "-" if b is None else f"{b / MIB:.0f}"


def _table(rows, header):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="case a only")
    parser.add_argument("--cases", default=None, help="comma-separated cases (a,b); default a,b")
    parser.add_argument("--rotation", default=None, choices=ROTATIONS, help="one rotation method only")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default: jaxspect 5 for a, 3 for b; PyTomography 3 for a, 1 for b)")
    parser.add_argument("--no-peer", action="store_true", help="skip the PyTomography comparison")
    parser.add_argument("--json", default=None, help="also write all figures to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        worker_main(json.loads(args.worker))
        return

    names = ["a"] if args.quick else (args.cases or "a,b").split(",")
    bad = [n for n in names if n not in CASES]
    if bad:
        parser.error(f"unknown case(s) {bad}; choose from {sorted(CASES)}")
    cases = [CASES[n] for n in names]
    rotations = [args.rotation] if args.rotation else list(ROTATIONS)

    start = time.perf_counter()
    print("jaxspect projector benchmark")
    # The driver never imports jax (nor numpy): a child process inherits its parent's peak RSS
    # in ru_maxrss, so a large driver would mask the workers' memory figures.
    info = run_worker({"kind": "machine", "case": "a"}, timeout_s=300)
    print(info.get("line") or f"machine: unknown ({info.get('error')})")
    machine = info.get("line")
    load_start = _load_average()
    print(f"load average at start: {load_start} (figures are slower on a busy machine)")
    for case in cases:
        print(case.describe())
    print(f"PSF: FWHM(d) = sqrt({FWHM0_MM}^2 + ({SLOPE} d)^2) mm; attenuation: water {MU_WATER_PER_MM}/mm "
          "in an elliptical torso; timings are medians after a warm-up call\n", flush=True)

    results = {}
    for case in cases:
        repeats = args.repeats or case.repeats
        for rotation in rotations:
            for op in OPS:
                spec = dict(case=case.name, rotation=rotation, op=op, repeats=repeats)
                res = run_worker(dict(spec, kind="time"), timeout_s=900)
                if "error" not in res:
                    res.update(run_worker(dict(spec, kind="rss"), timeout_s=600))
                results[(case.name, rotation, op)] = res
                status = res.get("error") or f"median {_fmt_s(res['median_s'])}"
                print(f"  [{time.perf_counter() - start:5.0f} s] {case.name} {rotation} {op}: {status}",
                      flush=True)

    rows = []
    for case in cases:
        for rotation in rotations:
            fwd = results[(case.name, rotation, "forward")].get("median_s")
            for op in OPS:
                r = results[(case.name, rotation, op)]
                if "error" in r:
                    rows.append([case.name, rotation, op, "ERROR: " + r["error"], *[""] * 9])
                    continue
                t = r["median_s"]
                ratio = t / fwd if (op in ("grad", "jvp") and fwd) else None
                if op in ("grad", "jvp"):
                    target = f"<= {GRAD_RATIO_TARGET}x fwd"
                    ok = ratio is not None and ratio <= GRAD_RATIO_TARGET
                else:
                    target = f"<= {_fmt_s(case.time_target_s)}"
                    ok = t <= case.time_target_s
                xla = r["xla_memory"].get("total_bytes")
                rss = r.get("rss_increase_bytes")
                if op == "grad" and case.name == "b":
                    mem_target = "< 1024 MiB"
                    mem_ok = "PASS" if (xla is not None and rss is not None and max(xla, rss) < GRAD_MEMORY_TARGET_BYTES) else "MISS"
                else:
                    mem_target = mem_ok = "-"
                rows.append([
                    case.name, rotation, op,
                    f"{r['trace_lower_s'] + r['compile_s']:.1f} s",
                    _fmt_s(t), f"{_fmt_s(min(r['times_s']))}..{_fmt_s(max(r['times_s']))}",
                    "-" if ratio is None else f"{ratio:.2f}",
                    target, "PASS" if ok else "MISS",
                    _fmt_mib(xla), _fmt_mib(rss), mem_target, mem_ok,
                ])
    header = ["case", "rotation", "op", "compile", "median", "min..max", "grad/fwd", "time target", "time",
              "XLA MiB", "RSS+ MiB", "mem target", "mem"]
    print()
    print(_table(rows, header))
    print("compile = trace + lower + XLA compile (cold); XLA MiB = arguments + outputs + temporaries "
          "(memory_analysis); RSS+ MiB = peak-RSS increase (ru_maxrss) over one call in a fresh "
          "process, compiler memory excluded")
    if any(not r.get("rss_peak_reset", True) for r in results.values()):
        print("note: the peak RSS could not be reset here (/proc/self/clear_refs), so RSS+ includes the compiler's peak")

    # Peer comparison.
    peer = {}
    print()
    if args.no_peer:
        print("peer: PyTomography comparison skipped (--no-peer)")
    elif not peer_available():
        print("peer: PyTomography comparison skipped (torch/pytomography not importable); "
              "install with: pip install torch==2.13.0 pytomography")
    else:
        prow = []
        peer_rotation = "bilinear" if "bilinear" in rotations else rotations[0]
        for case in cases:
            spec = dict(case=case.name, kind="peer", rotation=peer_rotation,
                        repeats=args.repeats or case.peer_repeats)
            res = run_worker(spec, timeout_s=1200, env=PEER_ENV)
            peer[case.name] = res
            print(f"  [{time.perf_counter() - start:5.0f} s] {case.name} pytomography: "
                  f"{res.get('error') or 'done'}", flush=True)
            if "error" in res:
                prow.append([case.name, "ERROR: " + res["error"], *[""] * 5])
                continue
            for op, key in (("forward", "forward_s"), ("back", "back_s")):
                ours = res["jaxspect_" + key]
                ratio = ours / res[key]
                prow.append([
                    case.name, op, "x".join(map(str, res["kernel"])), _fmt_s(res[key]),
                    _fmt_s(ours),
                    f"{ratio:.2f}",
                    f"jaxspect {1 / ratio:.1f}x faster" if ratio < 1 else "PYTOMOGRAPHY FASTER",
                ])
        any_ok = next((r for r in peer.values() if "error" not in r), None)
        if any_ok:
            print(f"peer: PyTomography {any_ok['pytomography']} (torch {any_ok['torch']}, "
                  f"{any_ok['threads']} threads), SPECTSystemMatrix with attenuation + PSF; both timed in "
                  "one process, calls interleaved (medians)")
        print(_table(prow, ["case", "op", "peer PSF", "pytomography", f"jaxspect ({peer_rotation})",
                            "jaxspect/pytomography", ""]))

    elapsed = time.perf_counter() - start
    print(f"\ntotal benchmark time: {elapsed:.0f} s; load average at end: {_load_average()}")
    if args.json:
        out = {
            "machine": machine,
            "cases": {c.name: c.describe() for c in cases},
            "results": [dict(case=k[0], rotation=k[1], op=k[2], **v) for k, v in results.items()],
            "peer": peer,
            "elapsed_s": elapsed,
        }
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
