"""jaxpayne: stellar labels from spectra with differentiable JAX emulators.

The public API is imported lazily, so ``import jaxpayne`` (and the CLI) start fast; JAX, Flax and
astropy load on first use.

Example:
    >>> import jaxpayne
    >>> model = jaxpayne.load_model("model.h5")
    >>> flux = model.predict([[5777.0, 4.44, 0.0]])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: Public name → defining module (imported on first attribute access).
_LAZY = {
    "LabelSpec": "jaxpayne.labels",
    "Model": "jaxpayne.model",
    "ModelFileError": "jaxpayne.model",
    "load_model": "jaxpayne.model",
    "TrainingSet": "jaxpayne.grids",
    "StreamedTrainingSet": "jaxpayne.grids",
    "GridFormatError": "jaxpayne.grids",
    "read_training_set": "jaxpayne.grids",
    "TrainingConfig": "jaxpayne.training",
    "TrainingResult": "jaxpayne.training",
    "train_emulator": "jaxpayne.training",
    "export_payne": "jaxpayne.payne_format",
    "ForwardModel": "jaxpayne.forward",
    "Observation": "jaxpayne.forward",
    "make_observation": "jaxpayne.forward",
    "pad_observations": "jaxpayne.forward",
    "Fitter": "jaxpayne.fitting",
    "Flags": "jaxpayne.fitting",
    "LMOptions": "jaxpayne.fitting",
    "fit_spectra": "jaxpayne.fitting",
    "FitJob": "jaxpayne.fitting",
    "fit_survey": "jaxpayne.fitting",
    "Prior": "jaxpayne.sampling",
    "Sampler": "jaxpayne.sampling",
    "sample": "jaxpayne.sampling",
    "sample_spectra": "jaxpayne.sampling",
    "Spectrum": "jaxpayne.io",
    "read_spectrum": "jaxpayne.io",
    "read_spectra": "jaxpayne.io",
    "iter_spectra": "jaxpayne.io",
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from jaxpayne.fitting import FitJob, Fitter, Flags, LMOptions, fit_spectra, fit_survey
    from jaxpayne.forward import ForwardModel, Observation, make_observation, pad_observations
    from jaxpayne.io import Spectrum, iter_spectra, read_spectra, read_spectrum
    from jaxpayne.grids import GridFormatError, StreamedTrainingSet, TrainingSet, read_training_set
    from jaxpayne.labels import LabelSpec
    from jaxpayne.model import Model, ModelFileError, load_model
    from jaxpayne.payne_format import export_payne
    from jaxpayne.sampling import Prior, Sampler, sample, sample_spectra
    from jaxpayne.training import TrainingConfig, TrainingResult, train_emulator


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxpayne' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
