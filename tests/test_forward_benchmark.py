"""Smoke-run benchmarks/bench_forward.py at tiny sizes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_forward.py"


def test_benchmark_runs_quick(capsys):
    spec = importlib.util.spec_from_file_location("bench_forward", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (row,) = module.run(quick=True, repeat=1, cases=("apogee",))
    for key in ("model_flux_ms", "jacobian_residuals_ms"):
        assert np.isfinite(row[key]) and row[key] > 0
    assert "model_flux" in capsys.readouterr().out
