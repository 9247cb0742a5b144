"""Location of the reference data sets used by tests, benchmarks and examples.

jaxpayne never downloads or copies data. The folder holding the published networks and real
spectra (``binspec_apogee``, ``korg_marcs_5000``, ``apogee_dr17``, ...) is found through one
configurable path:

1. the environment variable ``JAXPAYNE_DATA`` if it is set;
2. otherwise ``../shared/data`` relative to the current working directory;
3. otherwise ``../shared/data`` relative to the source checkout holding this package.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "data_dir", "data_file"]

#: Environment variable naming the reference-data folder.
DATA_ENV = "JAXPAYNE_DATA"


def data_dir() -> Path | None:
    """The reference-data folder, or None when it cannot be found.

    Returns:
        The folder as a :class:`pathlib.Path`, or ``None`` if ``JAXPAYNE_DATA`` is unset and no
        ``../shared/data`` exists next to the working directory or the source checkout.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    return None


def data_file(*parts: str) -> Path:
    """Path of a file inside the reference-data folder.

    Args:
        *parts: path components below the data folder, e.g. ``("binspec_apogee",
            "NN_normalized_spectra.npz")``.

    Returns:
        The path.

    Raises:
        FileNotFoundError: if the data folder or the file does not exist; the message says how to
            point ``JAXPAYNE_DATA`` at the data.
    """
    root = data_dir()
    if root is None:
        raise FileNotFoundError(
            f"jaxpayne reference data not found: set {DATA_ENV} to the folder holding "
            "binspec_apogee/, korg_marcs_5000/, ... (default ../shared/data)"
        )
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path}: reference data file not found under {root}")
    return path
