"""The benchmark scripts still run (on tiny inputs); their figures live in docs/benchmarks.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize(
    "script,args",
    [
        ("bench_data.py", ["--rows", "20000", "--repeat", "1"]),
        ("bench_features.py", ["--rows", "30000", "--repeat", "1", "--reference-bars", "300"]),
        ("bench_engine.py", ["--bars", "5000", "--batch-steps", "50", "--repeat", "1"]),
        ("bench_envs.py", ["--quick"]),
        ("bench_backtest.py", ["--bars", "3000", "--repeat", "1", "--sb3-bars", "300"]),
        ("bench_train.py", ["--quick"]),
        ("bench_a3c.py", ["--quick"]),
    ],
)
def test_benchmark_script_runs(script, args):
    result = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "target" in result.stdout
