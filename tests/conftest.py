"""Shared test configuration: CPU only, seeded RNGs, data-path handling, one compilation cache
per test session."""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
# The suite is compile-bound (small batches, many distinct programs): XLA's expensive optimisation
# passes cost more than they save here (measured: the orbit fit test 137 -> 83 s, the sampling
# tests 270 -> 188 s). Numerics are unchanged to the tests' tolerances; benchmarks and users
# keep the optimised compiles.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# The suite compiles the same programs many times over (every test builds its own fitter): a
# persistent compilation cache in a fresh folder, shared by the xdist workers (who inherit this
# variable from the controller), makes every compile after the first a disk read. Never the
# user's own cache: each session starts empty.
_SESSION_CACHE = "JAXPAYNE_TEST_CACHE_DIR"
if _SESSION_CACHE not in os.environ:
    os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix="jaxpayne-test-xla-")
    _OWN_CACHE = True
else:
    _OWN_CACHE = False
os.environ["JAXPAYNE_CACHE_DIR"] = os.environ[_SESSION_CACHE]

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxpayne.compilation_cache import enable as _enable_cache  # noqa: E402
from jaxpayne.datasets import DATA_ENV, data_dir  # noqa: E402

_enable_cache(os.environ[_SESSION_CACHE], min_compile_seconds=0.1)


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):  # the controller made it: it removes it
        shutil.rmtree(os.environ[_SESSION_CACHE], ignore_errors=True)

#: When set (as .ci/run does), a test that needs the reference data fails instead of skipping.
REQUIRE_DATA_ENV = "JAXPAYNE_REQUIRE_DATA"


def _need_data(*parts: str):
    root = data_dir()
    path = None if root is None else root.joinpath(*parts)
    if path is None or not path.exists():
        reason = f"reference data {'/'.join(parts) or 'folder'} not found (set {DATA_ENV})"
        if os.environ.get(REQUIRE_DATA_ENV):
            pytest.fail(reason + f"; {REQUIRE_DATA_ENV} is set so this is an error")
        pytest.skip(reason)
    return path


@pytest.fixture
def need_data():
    """Return a function mapping data-folder path parts to a Path, skipping if absent."""
    return _need_data


@pytest.fixture(scope="module")
def need_data_module():
    """:func:`need_data` for module-scoped fixtures."""
    return _need_data


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    yield


@pytest.fixture
def x64():
    """Run a test with float64 enabled, restoring the previous setting afterwards."""
    import jax

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture(autouse=True)
def _no_leaked_x64():
    """A test must leave JAX's 64-bit mode as it found it (the next test on this worker inherits it)."""
    import jax

    before = bool(jax.config.jax_enable_x64)
    yield
    after = bool(jax.config.jax_enable_x64)
    if after != before:
        jax.config.update("jax_enable_x64", before)
        pytest.fail(f"the test left jax_enable_x64={after} (was {before})")
