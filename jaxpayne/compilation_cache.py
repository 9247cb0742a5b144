"""JAX's persistent compilation cache for jaxpayne: a second run with the same model and shapes
does not compile again.

XLA compiles every jitted function for each new set of shapes: for a fitter that takes seconds to
tens of seconds, most of a small run. JAX can keep the compiled executables on disk and reuse them
in later processes (the key is the program and the compile options, so a different model, shape,
JAX version or device compiles anew). The ``jaxpayne`` command turns this on by default.

Where: ``$JAXPAYNE_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/jaxpayne/xla`` (default
``~/.cache/jaxpayne/xla``). Opt out with ``JAXPAYNE_COMPILATION_CACHE=0``. A cache directory
already chosen through JAX's own ``jax_compilation_cache_dir`` option (or ``JAX_COMPILATION_CACHE_DIR``)
is left as it is. Delete the folder at any time to empty the cache.

In a notebook or a pipeline: ``jaxpayne.compilation_cache.enable()``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "OPT_OUT_ENV", "default_path", "enable"]

#: Environment variable naming the cache folder.
CACHE_ENV = "JAXPAYNE_CACHE_DIR"
#: Set to 0 / false / no / off to leave the cache off.
OPT_OUT_ENV = "JAXPAYNE_COMPILATION_CACHE"
#: Compiles shorter than this [s] are not worth a disk entry.
MIN_COMPILE_SECONDS = 0.1


def default_path() -> Path:
    """The cache folder: ``$JAXPAYNE_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxpayne/xla``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "jaxpayne" / "xla"


def enable(path: str | os.PathLike | None = None, min_compile_seconds: float = MIN_COMPILE_SECONDS) -> Path | None:
    """Turn on JAX's persistent compilation cache (idempotent).

    Args:
        path: the cache folder (default :func:`default_path`).
        min_compile_seconds: only compiles at least this long are stored.

    Returns:
        The folder in use, or None when opted out (``JAXPAYNE_COMPILATION_CACHE=0``) or when the
        folder cannot be created (the run goes on without a cache).
    """
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return None
    import jax

    chosen = jax.config.jax_compilation_cache_dir
    if chosen and path is None:
        return Path(chosen)
    folder = Path(path).expanduser() if path is not None else default_path()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
