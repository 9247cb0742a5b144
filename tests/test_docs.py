"""The documentation's code examples run (with stand-in inputs where they name the user's own)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DOCS = Path(__file__).parents[1] / "docs"


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_forward_model_usage_example_runs():
    from jaxpayne.forward import log_uniform_wavelength, vacuum_to_air
    from jaxpayne.forward.synthetic import SyntheticLineEmulator

    emulator = SyntheticLineEmulator(log_uniform_wavelength(4950.0, 5350.0, 1.5), n_lines=30)
    vacuum = np.linspace(5000.0, 5300.0, 1800)
    inputs = {
        "emulator": emulator,
        "wavelength_air": np.asarray(vacuum_to_air(vacuum)),
        "flux": 1.0 + np.random.default_rng(0).normal(0, 0.01, vacuum.size),
        "error": np.full(vacuum.size, 0.01),
        "chip": np.digitize(vacuum, [5100.0, 5200.0]).astype(np.int32),
    }
    (block,) = [b for b in _python_blocks(DOCS / "forward_model.md") if "ForwardModel(" in b]
    namespace = dict(inputs)
    exec(compile(block, "docs/forward_model.md", "exec"), namespace)
    assert np.all(np.isfinite(np.asarray(namespace["loglikes"])))
    assert namespace["fisher"].shape == (len(namespace["fm"].param_names),) * 2
    assert np.isfinite(float(namespace["loss"](namespace["theta"])[0]))


def test_cli_guide_documents_every_subcommand_and_option():
    """docs/cli.md has a section for every subcommand and names every one of its options."""
    import argparse

    from jaxpayne.cli import build_parser

    guide = (DOCS / "cli.md").read_text()
    (subparsers,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    missing = []
    for command, parser in subparsers.choices.items():
        if f"`jaxpayne {command}" not in guide.split("\n## ", 1)[1]:
            missing.append(f"section {command}")
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help" and not re.search(rf"`{option}[` \[]", guide):
                    missing.append(f"{command} {option}")
    assert not missing, missing


def test_docs_build_without_warnings(tmp_path):
    """The guides and the API reference (autodoc of every public module) build with warnings as errors."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                          str(tmp_path / "html")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    api = (tmp_path / "html" / "api.html").read_text()
    for name in ("fit_spectra", "sample_spectra", "crlb", "ParameterSpace", "load_model"):
        assert name in api, f"{name} missing from the API reference"
