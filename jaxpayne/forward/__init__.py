"""The differentiable forward model: emulator → what an instrument records.

Pure, composable, jit/vmap/grad-able steps (each an exact identity when its parameter is absent or
zero) and :class:`ForwardModel`, which composes them around an emulator with named, fixable
parameters. See ``docs/forward_model.md`` for the equations and conventions:

* wavelengths in Å, in the emulator's medium (vacuum or air; :func:`air_to_vacuum`,
  :func:`vacuum_to_air`); velocities in km/s; rv > 0 means receding (redshift);
* broadening (:func:`rotational_broadening`, :func:`macroturbulent_broadening`,
  :func:`instrumental_broadening`, :func:`broaden`) by FFT on a grid uniform in ln λ with analytic
  kernel transforms;
* the relativistic Doppler shift and resampling in one C² cubic B-spline evaluation
  (:func:`doppler_factor`, :func:`evaluate_spline`) or a per-pixel Gaussian LSF
  (:func:`evaluate_gaussian`);
* continuum: running-mean filter (:func:`smooth_continuum`) or per-segment Chebyshev polynomials
  (:func:`chebyshev_design`, :func:`chebyshev_continuum`).
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
    chebyshev_continuum,
    chebyshev_design,
    smooth_continuum,
)
from jaxpayne.forward.doppler import (
    SPEED_OF_LIGHT,
    doppler_factor,
    doppler_log_shift,
    doppler_shift,
)
from jaxpayne.forward.grid import WorkingGrid, log_uniform_wavelength, working_grid
from jaxpayne.forward.media import air_to_vacuum, convert_medium, vacuum_to_air
from jaxpayne.forward.model import ForwardModel, parse_continuum
from jaxpayne.forward.observation import (
    Observation,
    make_observation,
    pad_observations,
    segments_from_gaps,
)
from jaxpayne.forward.resample import evaluate_gaussian, evaluate_spline, spline_coefficients

__all__ = [
    "FWHM_TO_SIGMA",
    "SPEED_OF_LIGHT",
    "ContinuumFit",
    "ForwardModel",
    "Observation",
    "WorkingGrid",
    "air_to_vacuum",
    "broaden",
    "chebyshev_continuum",
    "chebyshev_design",
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
    "pad_observations",
    "parse_continuum",
    "resolution_to_sigma",
    "rotational_broadening",
    "rotational_kernel",
    "rotational_transfer",
    "segments_from_gaps",
    "smooth_continuum",
    "spline_coefficients",
    "vacuum_to_air",
    "working_grid",
]
