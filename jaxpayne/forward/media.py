"""Conversion between vacuum and standard-air wavelengths.

The refractive index of standard dry air (15 °C, 101 325 Pa, 450 ppm CO2) is taken from the formula
of Birch & Downs (1994, Metrologia 31, 315) in the form given by Morton (2000, ApJS 130, 403,
eq. 8), the IAU standard also used by VALD:

.. math:: n - 1 = 8.34254\\times10^{-5} + \\frac{2.406147\\times10^{-2}}{130 - s^2}
                 + \\frac{1.5998\\times10^{-4}}{38.9 - s^2}, \\qquad s = 10^4/\\lambda_{vac}\\,[Å],

and :math:`\\lambda_{air} = \\lambda_{vac}/n`. By IAU convention only wavelengths above 2000 Å are
given in air; shorter ones are returned unchanged (so vacuum wavelengths in [1999.35, 2000) Å have
no unique air counterpart). :func:`air_to_vacuum` inverts
:func:`vacuum_to_air` by fixed-point iteration (converged to machine precision), so the round trip
is exact rather than relying on an approximate inverse formula.

Both functions take numpy or JAX arrays (numpy in → numpy out) and are differentiable.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

__all__ = ["AIR_CONVERSION_LIMIT", "air_to_vacuum", "convert_medium", "vacuum_to_air"]

#: Wavelengths [Å] below which air and vacuum wavelengths are, by IAU convention, the same.
AIR_CONVERSION_LIMIT = 2000.0
#: Fixed-point iterations in :func:`air_to_vacuum` (each gains ~6 digits; 3 reach 1e-16).
_AIR_TO_VACUUM_ITERATIONS = 3
_MEDIA = ("vacuum", "air")


def _namespace(x):
    return np if isinstance(x, (np.ndarray, np.generic, float, int)) else jnp


def _refractive_index(vacuum_wavelength, xp):
    """Refractive index of standard air at a vacuum wavelength [Å] (Morton 2000, eq. 8)."""
    s2 = (1.0e4 / vacuum_wavelength) ** 2
    return 1.0 + 8.34254e-5 + 2.406147e-2 / (130.0 - s2) + 1.5998e-4 / (38.9 - s2)


def vacuum_to_air(wavelength):
    """Vacuum wavelength → standard-air wavelength.

    Args:
        wavelength: vacuum wavelength [Å], any shape (numpy or JAX).

    Returns:
        Air wavelength [Å] (unchanged below 2000 Å), same shape and array type.

    Example:
        >>> round(float(vacuum_to_air(np.float64(5897.558))), 3)   # Na D1
        5895.924
    """
    xp = _namespace(wavelength)
    safe = xp.where(wavelength >= AIR_CONVERSION_LIMIT, wavelength, AIR_CONVERSION_LIMIT)
    return xp.where(
        wavelength >= AIR_CONVERSION_LIMIT, wavelength / _refractive_index(safe, xp), wavelength
    )


def air_to_vacuum(wavelength):
    """Standard-air wavelength → vacuum wavelength (exact inverse of :func:`vacuum_to_air`).

    Solves ``λ_vac = λ_air · n(λ_vac)`` by fixed-point iteration.

    Args:
        wavelength: air wavelength [Å], any shape (numpy or JAX).

    Returns:
        Vacuum wavelength [Å] (unchanged below the air image of 2000 Å).
    """
    xp = _namespace(wavelength)
    limit = AIR_CONVERSION_LIMIT / _refractive_index(AIR_CONVERSION_LIMIT, np)
    convert = wavelength >= limit
    air = xp.where(convert, wavelength, AIR_CONVERSION_LIMIT)
    vacuum = air * _refractive_index(air, xp)
    for _ in range(_AIR_TO_VACUUM_ITERATIONS):
        vacuum = air * _refractive_index(vacuum, xp)
    return xp.where(convert, vacuum, wavelength)


def convert_medium(wavelength, source: str, target: str):
    """Convert wavelengths between media.

    Args:
        wavelength: wavelength [Å] in medium ``source``.
        source: ``"vacuum"`` or ``"air"``.
        target: ``"vacuum"`` or ``"air"``.

    Returns:
        Wavelength [Å] in medium ``target`` (the input itself when the media agree).

    Raises:
        ValueError: for an unknown medium name.
    """
    source, target = str(source).lower(), str(target).lower()
    for medium in (source, target):
        if medium not in _MEDIA:
            raise ValueError(f"medium must be 'vacuum' or 'air', got {medium!r}")
    if source == target:
        return wavelength
    return air_to_vacuum(wavelength) if source == "air" else vacuum_to_air(wavelength)
