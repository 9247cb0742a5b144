"""Smoke-run the notebooks' code cells, each in a fresh Python process as a kernel would (most use
the reference data, and some set global options such as JAX's 64-bit mode), at the small sizes
their ``JAXPAYNE_NOTEBOOK_SMOKE`` branches choose."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
#: notebook → (reference data folders it reads, a line its run must print)
EXPECT = {"quickstart.ipynb": ((), "quickstart finished"),
          "real_apogee.ipynb": (("binspec_apogee", "binspec_plus_apogee", "apogee_dr17"), "real APOGEE spectra"),
          "prior_prototyping.ipynb": (("binspec_apogee",), "prior prototyping done"),
          "information_content.ipynb": (("doppler_cannon",), "Cramér–Rao bounds computed"),
          "binary_star.ipynb": (("binspec_apogee",), "binary fits done"),
          "data_driven.ipynb": (("cannon_apogee_giants",), "data-driven workflow done"),
          "joint_constraints_mu_leo.ipynb": (("galah_benchmark", "doppler_cannon"), "posterior shifts computed")}


def test_every_notebook_is_listed():
    assert sorted(EXPECT) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, need_data, tmp_path):
    folders, marker = EXPECT[path.name]
    for folder in folders:
        need_data(folder)
    cells = json.loads(path.read_text())["cells"]
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), "commit notebooks without outputs"
    script = tmp_path / f"{path.stem}.py"
    script.write_text("\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code"))
    env = {**os.environ, "JAXPAYNE_NOTEBOOK_DRAWS": "40",  # a smoke run: few warmup/draws per chain,
           "JAXPAYNE_NOTEBOOK_SMOKE": "1", "MPLBACKEND": "Agg"}  # fewer configurations, no display
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert marker in run.stdout
