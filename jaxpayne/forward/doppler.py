"""Relativistic Doppler shift and the radial-velocity convention.

Convention (used throughout :mod:`jaxpayne.forward`): a radial velocity ``rv > 0`` means the star
recedes, and a rest-frame wavelength is observed at

.. math:: \\lambda_{obs} = \\lambda_{rest} \\sqrt{\\frac{1 + \\beta}{1 - \\beta}}, \\qquad
          \\beta = v / c,

so that on a logarithmic wavelength axis the shift is a constant offset
:math:`\\ln\\lambda_{obs} - \\ln\\lambda_{rest} = \\operatorname{artanh}\\beta`
(e.g. Lindegren & Dravins 2003, A&A 401, 1185 for the special-relativistic form).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["SPEED_OF_LIGHT", "doppler_factor", "doppler_log_shift", "doppler_shift"]

#: Speed of light in vacuum [km/s] (exact, SI definition).
SPEED_OF_LIGHT = 299_792.458


def _namespace(x):
    """numpy for numpy/Python inputs (construction-time use), jax.numpy otherwise."""
    return np if isinstance(x, (np.ndarray, np.generic, float, int)) else jnp


def doppler_log_shift(rv):
    """Shift in natural-log wavelength caused by a radial velocity.

    .. math:: \\Delta\\ln\\lambda = \\ln\\sqrt{(1+\\beta)/(1-\\beta)} = \\operatorname{artanh}(v/c)

    Args:
        rv: radial velocity [km/s], any shape; > 0 is receding (redshift).

    Returns:
        ``ln(λ_obs/λ_rest)`` [dimensionless], same shape and dtype.
    """
    xp = _namespace(rv)
    return xp.arctanh(rv / SPEED_OF_LIGHT)


def doppler_factor(rv):
    """Relativistic Doppler factor ``D = λ_obs/λ_rest = sqrt((1+β)/(1−β))``.

    Args:
        rv: radial velocity [km/s], any shape; > 0 is receding.

    Returns:
        D [dimensionless], > 1 for rv > 0.

    Example:
        >>> float(doppler_factor(0.0))
        1.0
    """
    xp = _namespace(rv)
    return xp.exp(doppler_log_shift(rv))


def doppler_shift(wavelength, rv):
    """Observed wavelength of rest-frame wavelength(s) for a source moving at ``rv``.

    Args:
        wavelength: rest-frame wavelength [Å], any shape.
        rv: radial velocity [km/s], broadcastable to ``wavelength``; > 0 is receding.

    Returns:
        Observed wavelength [Å] in the same medium as the input.
    """
    return wavelength * doppler_factor(rv)
