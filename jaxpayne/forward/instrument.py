"""The instrument side of the forward model: line-spread function and the broadening margins.

* :func:`lsf_function` turns a per-pixel Gaussian LSF specification (a constant σ, a table, or a
  callable) into a function ``wavelength [Å] → σ [Å]`` usable in numpy and under JAX tracing;
* :func:`kernel_margin` is the half-width [km/s] of the widest broadening kernel a forward model
  must allow for at the edges of the emulator's range (rotation + macroturbulence + Gaussian LSF),
  taken from the *fixed* value of a broadening parameter when it is fixed and from its upper
  bound when it is free.
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from jaxpayne.forward.broadening import FWHM_TO_SIGMA
from jaxpayne.forward.doppler import SPEED_OF_LIGHT

__all__ = [
    "GAUSSIAN_EXTENT",
    "LSF_MIN_SAMPLING",
    "LSF_WINDOW_SIGMAS",
    "MACRO_EXTENT",
    "kernel_margin",
    "lsf_function",
]

#: Kernel half-width kept as margin, in units of ζ (the RT kernel is < 1e-5 of its peak at 3ζ).
MACRO_EXTENT = 3.0
#: Kernel half-width kept as margin, in units of the Gaussian σ.
GAUSSIAN_EXTENT = 5.0
#: Window half-width of the per-pixel Gaussian LSF, in units of its σ.
LSF_WINDOW_SIGMAS = 6.0
#: Smallest per-pixel LSF σ, in working-grid steps, for which the default step is refined.
LSF_MIN_SAMPLING = 1.0


def lsf_function(spec) -> Callable | None:
    """A per-pixel Gaussian LSF σ(λ) [Å] from its specification.

    Args:
        spec: None (no per-pixel LSF), a float σ [Å], a table ``(wavelength [Å], sigma [Å])``
            interpolated linearly, or a traceable callable ``wavelength → sigma``.

    Returns:
        A function of numpy or JAX wavelengths [Å] returning σ [Å] (numpy in, numpy out), or None.

    Raises:
        ValueError: for a malformed table.
    """
    if spec is None:
        return None
    if callable(spec):
        return spec
    if isinstance(spec, tuple) and len(spec) == 2:
        nodes = np.asarray(spec[0], dtype=np.float64)
        values = np.asarray(spec[1], dtype=np.float64)
        if nodes.shape != values.shape or nodes.ndim != 1 or np.any(np.diff(nodes) <= 0):
            raise ValueError("lsf_sigma table must be (sorted wavelengths, sigmas) of equal size")

        def table(wavelength):
            if isinstance(wavelength, np.ndarray):
                return np.interp(wavelength, nodes, values)
            dtype = wavelength.dtype
            return jnp.interp(wavelength, jnp.asarray(nodes, dtype), jnp.asarray(values, dtype))

        return table
    value = float(spec)

    def constant(wavelength):
        return value + 0.0 * wavelength

    return constant


def kernel_margin(*, vsini: float | None = None, vmacro: float | None = None,
                  resolution: float | None = None, lsf_sigma_velocity: float | None = None) -> float:
    """Half-width [km/s] of the combined broadening kernels, for the working grid's margins.

    Args:
        vsini: largest vsini [km/s] the model will see (None: no rotation).
        vmacro: largest macroturbulence ζ [km/s] (None: none); the RT kernel is kept to
            :data:`MACRO_EXTENT` ζ.
        resolution: smallest resolving power R (None: no constant-R LSF); the Gaussian is kept
            to :data:`GAUSSIAN_EXTENT` σ.
        lsf_sigma_velocity: largest per-pixel LSF σ [km/s] (None: none); kept to
            :data:`LSF_WINDOW_SIGMAS` σ.

    Returns:
        The margin [km/s] (kernel half-widths add: a conservative bound for their convolution).
    """
    margin = 0.0
    if vsini is not None:
        margin += abs(float(vsini))
    if vmacro is not None:
        margin += MACRO_EXTENT * abs(float(vmacro))
    if resolution is not None:
        margin += GAUSSIAN_EXTENT * SPEED_OF_LIGHT * FWHM_TO_SIGMA / float(resolution)
    if lsf_sigma_velocity is not None:
        margin += LSF_WINDOW_SIGMAS * float(lsf_sigma_velocity)
    return margin
