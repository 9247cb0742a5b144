"""Smoke-run the notebooks' code cells (they use the reference data)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, need_data, capsys, monkeypatch):
    need_data("binspec_apogee")
    monkeypatch.setenv("JAXPAYNE_NOTEBOOK_DRAWS", "40")  # a smoke run: few warmup/draws per chain
    cells = json.loads(path.read_text())["cells"]
    code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    exec(compile(code, str(path), "exec"), {"__name__": "__notebook__"})
    assert "reduced chi2" in capsys.readouterr().out
