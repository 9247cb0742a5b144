"""The differentiable forward model: emulator → what an instrument records.

Pure, composable, jit/vmap/grad-able steps (each an exact identity when its parameter is absent or
zero) and :class:`ForwardModel`, a pytree (the emulator's weights are its leaves) holding the static
description — :class:`ParameterSpace`, working grid, instrument, continuum — that the pure
functions take as their first argument: :func:`model_spectrum` → :func:`apply_continuum` (after
:func:`prepare_data`) → :func:`gaussian_loglike` / :func:`whitened_residuals`, and
:func:`fisher_matrix` of the same likelihood, with :data:`DEFAULT_SETTINGS` shared by fitting,
sampling and bounds. See ``docs/forward_model.md`` for the equations and conventions:

* wavelengths in Å, in the emulator's medium (vacuum or air; :func:`air_to_vacuum`,
  :func:`vacuum_to_air`); velocities in km/s; rv > 0 means receding (redshift);
* broadening (:func:`rotational_broadening`, :func:`macroturbulent_broadening`,
  :func:`instrumental_broadening`, :func:`broaden`) by FFT on a grid uniform in ln λ with analytic
  kernel transforms;
* the relativistic Doppler shift and resampling in one C² cubic B-spline evaluation
  (:func:`doppler_factor`, :func:`evaluate_spline`) or a per-pixel Gaussian LSF
  (:func:`evaluate_gaussian`);
* several stars in one spectrum (:class:`CompositeModel`) and several visits of one system
  fitted together (:class:`MultiVisitModel`), both evaluated by the same likelihood through
  their ``spectrum`` method;
* continuum: running-mean filter (:func:`smooth_continuum`) or per-segment Chebyshev polynomials
  (:func:`chebyshev_basis` → :class:`SegmentedDesign`, :func:`chebyshev_design`,
  :func:`chebyshev_continuum`).
"""

from jaxpayne.forward.broadening import (
    FWHM_TO_SIGMA,
    broaden,
    gaussian_transfer,
    instrumental_broadening,
    macroturbulent_broadening,
    macroturbulent_kernel,
    macroturbulent_transfer,
    resolution_to_sigma,
    rotational_broadening,
    rotational_kernel,
    rotational_transfer,
)
from jaxpayne.forward.continuum import (
    ContinuumFit,
    ContinuumSpec,
    SegmentedDesign,
    chebyshev_basis,
    chebyshev_continuum,
    chebyshev_design,
    smooth_continuum,
)
from jaxpayne.forward.composite import (
    CompanionEmulator,
    CompositeModel,
    composite_spectrum,
    flux_continuum,
)
from jaxpayne.forward.visits import MultiVisitModel, orbit_secondary_velocity
from jaxpayne.forward.doppler import (
    SPEED_OF_LIGHT,
    doppler_factor,
    doppler_log_shift,
    doppler_shift,
)
from jaxpayne.forward.continuum import parse_continuum
from jaxpayne.forward.grid import WorkingGrid, log_uniform_wavelength, working_grid
from jaxpayne.forward.likelihood import (
    DEFAULT_SETTINGS,
    LikelihoodSettings,
    Normalized,
    PreparedData,
    apply_continuum,
    fisher_matrix,
    gaussian_loglike,
    jacobian,
    loglike,
    normalize,
    prepare_data,
    residuals,
    whitened_residuals,
)
from jaxpayne.forward.media import air_to_vacuum, convert_medium, vacuum_to_air
from jaxpayne.forward.model import ForwardModel, forward_model_from_options
from jaxpayne.forward.parameters import ParameterSpace
from jaxpayne.forward.spectrum import (
    ModelSpectrum,
    emulator_flux,
    grid_positions,
    model_spectrum,
    usable_pixels,
    working_spectrum,
)
from jaxpayne.forward.observation import (
    Observation,
    make_observation,
    pad_observations,
    segments_from_gaps,
)
from jaxpayne.forward.resample import evaluate_gaussian, evaluate_spline, spline_coefficients

__all__ = [
    "DEFAULT_SETTINGS",
    "FWHM_TO_SIGMA",
    "SPEED_OF_LIGHT",
    "CompanionEmulator",
    "CompositeModel",
    "ContinuumFit",
    "ContinuumSpec",
    "ForwardModel",
    "LikelihoodSettings",
    "ModelSpectrum",
    "MultiVisitModel",
    "Normalized",
    "Observation",
    "ParameterSpace",
    "PreparedData",
    "WorkingGrid",
    "air_to_vacuum",
    "apply_continuum",
    "emulator_flux",
    "fisher_matrix",
    "forward_model_from_options",
    "gaussian_loglike",
    "grid_positions",
    "jacobian",
    "loglike",
    "model_spectrum",
    "normalize",
    "prepare_data",
    "residuals",
    "usable_pixels",
    "whitened_residuals",
    "working_spectrum",
    "broaden",
    "chebyshev_basis",
    "chebyshev_continuum",
    "chebyshev_design",
    "composite_spectrum",
    "flux_continuum",
    "convert_medium",
    "doppler_factor",
    "doppler_log_shift",
    "doppler_shift",
    "evaluate_gaussian",
    "evaluate_spline",
    "gaussian_transfer",
    "instrumental_broadening",
    "log_uniform_wavelength",
    "macroturbulent_broadening",
    "macroturbulent_kernel",
    "macroturbulent_transfer",
    "make_observation",
    "orbit_secondary_velocity",
    "pad_observations",
    "parse_continuum",
    "resolution_to_sigma",
    "rotational_broadening",
    "rotational_kernel",
    "rotational_transfer",
    "segments_from_gaps",
    "SegmentedDesign",
    "smooth_continuum",
    "spline_coefficients",
    "vacuum_to_air",
    "working_grid",
]
