"""Shared test configuration: CPU only, seeded RNGs, data-path handling."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxpayne.datasets import DATA_ENV, data_dir  # noqa: E402

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
