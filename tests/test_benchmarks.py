"""The GPU benchmark script runs end to end (``python -m benchmarks.gpu --quick``), so it cannot
rot between the occasions a GPU is lent. Figures are printed, not checked."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_quick_mode_runs_and_prints_every_row():
    # A fresh process at XLA's lowest optimisation level: this checks that the script works,
    # not how fast the code it measures is, and compiles ~30% faster.
    env = {**os.environ, "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    for row in ("forward", "back", "grad", "OSEM 2x2", "batch OSEM x1", "batch OSEM x3", "unrolled EM step",
                "SPECTnet step (batch 4)", "batch throughput x3 / x1"):
        match = [line for line in lines if line.startswith(row + " ")]
        assert match, f"row {row!r} missing from:\n{proc.stdout}"
        assert "nan" not in match[0] and "ERROR" not in match[0], match[0]
