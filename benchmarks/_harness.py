"""Shared machinery of the benchmark scripts: timing, memory, subprocess workers, reports.

Imports nothing but the standard library at module level, so that a driver process can use it
without importing JAX (a child process inherits its parent's peak RSS in ``ru_maxrss`` at
``exec``: a large driver would mask its workers' memory figures). JAX is imported inside the
functions that need it.

- :func:`time_jitted`: compile time (trace + lower + XLA compile, cold), a warm-up call, the
  median of a few timed calls (``jax.block_until_ready``), and XLA's memory analysis.
- :func:`xla_memory`: ``argument + output + temp - alias`` bytes of a compiled function.
- :func:`device_peak_bytes`: the device allocator's peak (GPU/TPU; ``None`` on CPU).
- :func:`rss_of_one_call`: the increase of the process's peak RSS over one call, with the
  compiler's freed memory handed back to the OS and the peak reset just before it (Linux).
- :func:`run_worker` / :func:`worker_main`: run one measurement in a fresh ``python -m`` process
  and read its JSON result back.
- :func:`machine_line`, :func:`load_average`, :func:`table`, :func:`fmt_s`, :func:`fmt_mib`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MIB = 2**20
GIB = 2**30
RESULT_TAG = "RESULT-JSON:"
REPO_ROOT = Path(__file__).resolve().parents[1]


# --- timing and memory --------------------------------------------------------------------------


def xla_memory(compiled) -> dict:
    """XLA's compiled memory analysis, plus ``total_bytes = argument + output + temp - alias``
    (empty where the backend gives none)."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    names = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
             "alias_size_in_bytes", "generated_code_size_in_bytes")
    out = {n: int(getattr(stats, n)) for n in names if hasattr(stats, n)}
    out["total_bytes"] = (out.get("argument_size_in_bytes", 0) + out.get("output_size_in_bytes", 0)
                          + out.get("temp_size_in_bytes", 0) - out.get("alias_size_in_bytes", 0))
    return out


def device_peak_bytes() -> int | None:
    """Peak bytes in use on the default device since the process started (``memory_stats``;
    ``None`` where the backend does not keep them, e.g. on CPU)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def time_jitted(fn, args, repeats: int, *, jit=None) -> dict:
    """Compile ``jit(fn)`` for ``args`` (cold), call it once (warm-up), then time ``repeats`` calls.

    ``jit`` defaults to ``jax.jit`` (pass ``equinox.filter_jit``-style wrappers that have
    ``.lower``). Returns ``trace_lower_s``, ``compile_s``, ``warmup_s``, ``times_s``,
    ``median_s``, ``xla_memory`` (see :func:`xla_memory`) and the last output (``out``, not
    JSON-serialisable: pop it before reporting).
    """
    import jax

    jit = jax.jit if jit is None else jit
    t0 = time.perf_counter()
    lowered = jit(fn).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))  # warm-up
    t3 = time.perf_counter()
    times = []
    for _ in range(max(1, repeats)):
        s = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - s)
    return {
        "trace_lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "warmup_s": t3 - t2,
        "times_s": times,
        "median_s": statistics.median(times),
        "xla_memory": xla_memory(compiled),
        "compiled": compiled,
        "out": out,
    }


def maxrss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so that memory the compiler
    freed is not silently reused by the next call (which would hide that call's footprint)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux ``clear_refs``); False if not
    possible. Resets ``ru_maxrss`` too, except for any peak inherited at ``exec`` time from
    the parent, which is why drivers import nothing large."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_of_one_call(call) -> dict:
    """Peak-RSS increase over ``call()`` (which must block until its result is ready).

    Baseline: now, with freed memory returned to the OS and the peak reset to the current RSS.
    Where the peak cannot be reset the figure includes whatever peak came before (reported as
    ``rss_peak_reset: False``).
    """
    release_free_memory()
    reset = reset_peak_rss()
    base = maxrss_bytes()
    call()
    return {"rss_baseline_bytes": base, "rss_increase_bytes": maxrss_bytes() - base, "rss_peak_reset": reset}


# --- subprocess workers -------------------------------------------------------------------------


def run_worker(module: str, spec: dict, timeout_s: float, env: dict | None = None) -> dict:
    """Run ``python -m module --worker JSON(spec)`` from the repository root in a fresh process
    and return the dict it printed with :func:`worker_main` (or ``{"error": ...}``)."""
    cmd = [sys.executable, "-m", module, "--worker", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT,
                              env=None if env is None else {**os.environ, **env})
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    return {"error": f"exit {proc.returncode}: {tail}"}


def worker_main(kinds: dict, argv=None) -> None:
    """Entry point of a worker module: ``--worker JSON`` names ``kind`` in ``kinds`` (a dict of
    ``spec -> dict`` functions); prints the result after :data:`RESULT_TAG`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "--worker":
        raise SystemExit(f"usage: python -m {__package__}.<worker module> --worker JSON")
    spec = json.loads(argv[1])
    result = kinds[spec["kind"]](spec)
    print(RESULT_TAG + json.dumps(result), flush=True)


# --- reports ------------------------------------------------------------------------------------


def machine_line() -> str:
    """One line: OS, CPU, core count, Python/JAX versions, the default device."""
    import jax
    import jaxlib

    dev = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs "
        f"({affinity} usable); python {platform.python_version()}, jax {jax.__version__}, "
        f"jaxlib {jaxlib.__version__}, device {dev.platform}:{dev.device_kind} "
        f"(x{jax.device_count()}); float32"
    )


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unknown"


def fmt_s(t) -> str:
    if t is None:
        return "-"
    if t < 1e-3:
        return f"{t * 1e6:.0f} us"
    return f"{t * 1e3:.1f} ms" if t < 0.1 else (f"{t * 1e3:.0f} ms" if t < 1 else f"{t:.2f} s")


def fmt_mib(b) -> str:
    return "-" if b is None else f"{b / MIB:.0f}"


def table(rows, header, left: int = 1) -> str:
    """Plain-text table; the first ``left`` columns left-aligned, the rest right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(str(r[i])) if i < len(r) else 0 for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join((c.ljust(w) if i < left else c.rjust(w))
                               for i, (c, w) in enumerate(zip(map(str, r), widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def time_call(call, repeats: int) -> dict:
    """Time a function that compiles on first use and cannot be lowered from outside (e.g. one
    that places its inputs on devices itself): the first call (compile + run), then the median of
    ``repeats`` calls; ``compile_s`` is estimated as first call minus median. ``call()`` must block
    until its result is ready."""
    s = time.perf_counter()
    call()
    first = time.perf_counter() - s
    times = []
    for _ in range(max(1, repeats)):
        s = time.perf_counter()
        call()
        times.append(time.perf_counter() - s)
    median = statistics.median(times)
    return {"first_call_s": first, "compile_s": max(first - median, 0.0), "times_s": times, "median_s": median}
