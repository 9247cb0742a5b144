"""Smoke-run the fitting and emulator benchmarks at tiny sizes (figures come from full runs)."""

import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


def run_script(name, args, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name] + args)
    runpy.run_path(str(BENCH / name), run_name="__main__")


def test_bench_emulator_smoke(need_data, monkeypatch, capsys):
    need_data("korg_marcs_5000")
    run_script("bench_emulator.py", ["--epochs", "2", "--n-train", "60"], monkeypatch)
    out = capsys.readouterr().out
    assert "mlp" in out and "resmlp" in out and "val rms" in out


@pytest.mark.filterwarnings("ignore::scipy.optimize.OptimizeWarning")
def test_bench_fit_smoke(need_data, monkeypatch, capsys):
    need_data("binspec_apogee")
    run_script("bench_fit.py", ["--n", "2", "--baseline-n", "1", "--batches", "2", "--restarts", "1"], monkeypatch)
    out = capsys.readouterr().out
    assert "baseline curve_fit" in out and "speed-up" in out


def test_fit_real_apogee_script_makes_residual_plots(need_data, monkeypatch, capsys, tmp_path):
    need_data("binspec_apogee")
    run_script("fit_real_apogee.py", ["--out", str(tmp_path), "--restarts", "1"], monkeypatch)
    out = capsys.readouterr().out
    assert "chi2_red" in out
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 4 and all(p.stat().st_size > 10_000 for p in pngs)
