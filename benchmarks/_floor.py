"""The floor a projection is measured against: work per view and stage, and the machine's limits.

The model (formulas in ``benchmarks/projector.py``'s docstring) is plain Python
(:func:`stages`, :func:`floor_seconds`), so that the driver can use it without importing JAX.
:func:`machine_peaks` (memory bandwidth and FMA throughput) and :func:`stage_times` (each stage
of one view jitted alone) measure; they import JAX and run in a worker process.
"""

from __future__ import annotations

import statistics
import time

F32 = 4  # bytes


def stages(shape, psf_taps: int, *, attenuation: bool = True, cached: bool = False) -> list[dict]:
    """Per-view work of one forward (or back) projection, stage by stage.

    ``shape = (nx, ny, nz)`` (``ny`` the depth axis of a view), ``psf_taps = 2h + 1`` per axis
    (0 or 1: no blur). Each stage is ``{"stage", "flops", "flops_taps", "bytes"}``: ``flops``
    as the projector computes it (dense blur GEMMs), ``flops_taps`` the direct-convolution
    count of the same blur (``2 p`` per voxel and axis), ``bytes`` each stage's operands read
    and its result written once from memory (no reuse between stages; within a rotation the 4
    taps of neighbouring outputs overlap, so its input is read once: counting 4 reads per
    output voxel, 20 bytes, gives a "floor" that the measured rotation beats).
    """
    nx, ny, nz = shape
    n = nx * ny * nz
    out = [dict(stage="rotate image", flops=8 * n, flops_taps=8 * n, bytes=2 * F32 * n)]
    if attenuation and not cached:
        out.append(dict(stage="rotate mu", flops=8 * n, flops_taps=8 * n, bytes=2 * F32 * n))
        out.append(dict(stage="attenuation factors", flops=4 * n, flops_taps=4 * n, bytes=2 * F32 * n))
    if attenuation:
        out.append(dict(stage="attenuation multiply", flops=n, flops_taps=n, bytes=3 * F32 * n))
    if psf_taps > 1:
        p = psf_taps
        out.append(dict(stage="PSF matrices (z)", flops=0, flops_taps=0, bytes=F32 * ny * nz * nz))
        out.append(dict(stage="blur z (GEMM)", flops=2 * nx * ny * nz * nz, flops_taps=2 * p * n,
                        bytes=F32 * (2 * n + ny * nz * nz)))
        out.append(dict(stage="blur x + depth sum (taps)", flops=2 * p * n + p * nx * nz,
                        flops_taps=2 * p * n + p * nx * nz, bytes=F32 * (n + 2 * p * nx * nz + nx * nz)))
    else:
        out.append(dict(stage="depth sum", flops=n, flops_taps=n, bytes=F32 * (n + nx * nz)))
    return out


def floor_seconds(stage: dict, gflops: float, gbytes_per_s: float, *, taps: bool = False) -> float:
    """``max(flops / peak FLOP/s, bytes / bandwidth)`` of one stage."""
    flops = stage["flops_taps" if taps else "flops"]
    return max(flops / (gflops * 1e9), stage["bytes"] / (gbytes_per_s * 1e9))


def _median_time(f, *args, repeats=5):
    import jax

    jax.block_until_ready(f(*args))  # compile + warm-up
    times = []
    for _ in range(repeats):
        s = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - s)
    return statistics.median(times)


def machine_peaks(*, stream_floats: int | None = None, gemm_n: int | None = None) -> dict:
    """Measured memory bandwidth (GB/s: a jitted in-place ``a + 1`` over a large float32 array,
    read and write) and FMA throughput (GFLOP/s: a jitted float32 ``n x n`` GEMM, ``2 n^3`` FLOPs) of the
    default device. Sizes default to 64 MiB / 1024 on CPU and 1 GiB / 8192 on accelerators."""
    import jax
    import jax.numpy as jnp

    accel = jax.devices()[0].platform != "cpu"
    m = stream_floats or (2**28 if accel else 2**24)
    n = gemm_n or (8192 if accel else 1024)
    # in place (the input donated, the output fed back): no page faults of fresh buffers
    step = jax.jit(lambda a: a + 1.0, donate_argnums=0)
    a = jax.block_until_ready(step(jnp.ones((m,), jnp.float32)))
    times = []
    for _ in range(5):
        s = time.perf_counter()
        a = jax.block_until_ready(step(a))
        times.append(time.perf_counter() - s)
    t_stream = statistics.median(times)
    x = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    t_gemm = _median_time(jax.jit(lambda x, y: x @ y), x, x)
    return {
        "bandwidth_gb_s": 2 * F32 * m / t_stream / 1e9,
        "gemm_gflop_s": 2 * n**3 / t_gemm / 1e9,
        "stream_mib": F32 * m / 2**20,
        "gemm_n": n,
    }


def stage_times(image, mumap, geometry, *, repeats=5) -> dict:
    """Median time of each stage of view 0, jitted alone (public ``jaxspect`` functions and
    ``jnp`` equivalents of the projector's GEMMs and of its blur-matrix construction), plus one
    whole view (forward and back) through the public projector, which includes its per-call
    input checks (finiteness of ``mumap``, the orbit clearance): an upper bound of a view's cost."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxspect as js

    nx, ny, nz = geometry.image_shape
    dy = geometry.voxel_size[1]
    angle = jnp.asarray(geometry.angles[0])
    psf = geometry.psf
    one = geometry.view_subset(np.arange(1))
    fx, fz = psf.factors(one)  # (1, r, ny, p)
    p = fx.shape[-1]

    def band(taps, size):
        """Dense blur matrices ``(ny, size, size)`` from per-plane taps ``(ny, p)``."""
        h = taps.shape[-1] // 2
        d = jnp.arange(size)[None, :] - jnp.arange(size)[:, None] + h
        return jnp.where((d >= 0) & (d < taps.shape[-1]), taps[:, jnp.clip(d, 0, taps.shape[-1] - 1)], 0.0)

    t = {}
    t["rotate image"] = _median_time(jax.jit(js.rotate), image, angle, repeats=repeats)
    t["rotate adjoint"] = _median_time(jax.jit(js.rotate_adjoint), image, angle, repeats=repeats)
    if mumap is not None:
        # depth-major (ny, nx, nz), the layout the projector uses inside a view
        t["attenuation factors"] = _median_time(jax.jit(lambda m: js.attenuation_factors(m, dy, depth_axis=0)),
                                                jnp.transpose(mumap, (1, 0, 2)), repeats=repeats)
        t["attenuation multiply"] = _median_time(jax.jit(jnp.multiply), image, mumap, repeats=repeats)
    if p > 1:
        tx, tz = fx[0, 0], fz[0, 0]
        t["PSF matrices (z)"] = _median_time(jax.jit(lambda b: band(b, nz)), tz, repeats=repeats)
        bz = band(tz, nz)
        planes = jnp.transpose(image, (1, 0, 2))  # depth-major (ny, nx, nz)
        t["blur z (GEMM)"] = _median_time(jax.jit(lambda v, b: jnp.einsum("jim,jkm->jki", v, b)), planes, bz,
                                          repeats=repeats)

        def blur_x_and_sum(taps, v):
            """Tap by tap: ``U = taps' @ planes`` (one GEMM), then the taps' shifts of ``U``."""
            h = p // 2
            u = (taps.T @ v.reshape(ny, nx * nz)).reshape(p, nx, nz)
            u = jnp.pad(u, ((0, 0), (h, h), (0, 0)), mode="edge")
            return sum(u[t, 2 * h - t : 2 * h - t + nx] for t in range(p))

        t["blur x + depth sum (taps)"] = _median_time(jax.jit(blur_x_and_sum), tx, planes, repeats=repeats)
    else:
        t["depth sum"] = _median_time(jax.jit(lambda v: jnp.sum(v, axis=1)), image, repeats=repeats)
    t["one view, forward"] = _median_time(jax.jit(lambda x, m, g: js.forward_project(x, m, g)), image, mumap, one,
                                          repeats=repeats)
    view = jnp.ones(one.views_shape, image.dtype)
    t["one view, back"] = _median_time(jax.jit(lambda v, m, g: js.back_project(v, m, g)), view, mumap, one,
                                       repeats=repeats)
    return t


def op_profile(fn, args, *, per: int = 1, top: int = 10) -> list[dict]:
    """Where one call of ``fn(*args)`` spends its time, from a ``jax.profiler`` trace: the
    ``top`` XLA operations (fusions, GEMMs, loops) by total time, each ``{"op", "what",
    "calls", "seconds"}`` with ``seconds`` divided by ``per`` (e.g. the number of views).

    ``what`` is the JAX operation the XLA op came from (its ``op_name`` metadata, without the
    ``jit(...)`` and ``closed_call`` parts). A loop's time includes the ops inside it, which
    are listed too.
    """
    import collections
    import glob
    import gzip
    import json
    import re
    import tempfile

    import jax

    compiled = jax.jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))  # warm-up
    origin = {m.group(1): m.group(2) for m in re.finditer(r'%([\w.\-]+) = .*?op_name="([^"]*)"', compiled.as_text())}
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            jax.block_until_ready(compiled(*args))
        (path,) = glob.glob(f"{tmp}/**/*.trace.json.gz", recursive=True)
        with gzip.open(path) as f:
            trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    total, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and "hlo_op" in e.get("args", {}):  # XLA's own ops only
            total[e["name"]] += e.get("dur", 0) * 1e-6
            calls[e["name"]] += 1
    out = []
    for name, seconds in total.most_common(top):
        parts = [p for p in origin.get(name, "").split("/") if p != "closed_call" and not p.startswith("jit(")]
        what = "/".join(parts[-3:])
        out.append(dict(op=name, what=what, calls=calls[name], seconds=seconds / per))
    return out
