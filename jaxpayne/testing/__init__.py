"""Helpers installed with the package for the test suite, the benchmarks and ``jaxpayne demo``.

:mod:`jaxpayne.testing.mock` makes simulated stellar spectra: a fast, deterministic mock (not a
spectral-synthesis code) for training grids and mock observations. Never use them for science.

Example:
    >>> import numpy as np
    >>> from jaxpayne.testing import mock_grid
    >>> labels, flux = mock_grid(100, np.linspace(15100.0, 15200.0, 500), seed=1)
"""

from jaxpayne.testing import mock
from jaxpayne.testing.mock import (
    DEFAULT_ELEMENTS,
    DEFAULT_LABELS,
    DEFAULT_LINES_PER_ANGSTROM,
    DEFAULT_VMIC,
    SPECIES,
    LineList,
    LineParameters,
    MockSpectrumGenerator,
    Species,
    canonical_label_name,
    mock_grid,
    mock_spectra,
    pseudo_voigt,
)

__all__ = ["mock"]
__all__ += mock.__all__
