"""Bessel-function pieces needed by the closed-form rotational transfer function.

``jax.scipy.special`` has no J1 valid at large argument, so the Cephes rational approximation
(Moshier 2000, as used by ``scipy.special.j1``) is written here in ``jax.numpy``. Each function
returns the *deviation from its value at zero*, so that the transfer function built from them is
exactly 1 at zero velocity, and every branch is guarded ("double where") so gradients are finite
everywhere, including at zero.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["j1_over_x_minus_half", "spherical_j1_over_x_minus_third"]

# Cephes j1.c coefficients (Moshier 2000), rational approximation on [0, 5] ...
_RP = (-8.99971225705559398224e8, 4.52228297998194034323e11, -7.27494245221818276015e13,
       3.68295732863852883286e15)
_RQ = (1.0, 6.20836478118054335476e2, 2.56987256757748830383e5, 8.35146791431949253037e7,
       2.21511595479792499675e10, 4.74914122079991414898e12, 7.84369607876235854894e14,
       8.95222336184627338078e16, 5.32278620332680085395e18)
_Z1 = 1.46819706421238932572e1  # squares of the first two zeros of J1
_Z2 = 4.92184563216946036703e1
# ... and the Hankel asymptotic form beyond 5.
_PP = (7.62125616208173112003e-4, 7.31397056940917570436e-2, 1.12719608129684925192e0,
       5.11207951146807644818e0, 8.42404590141772420927e0, 5.21451598682361504063e0,
       1.00000000000000000254e0)
_PQ = (5.71323128072548699714e-4, 6.88455908754495404082e-2, 1.10514232634061696926e0,
       5.07386386128601488557e0, 8.39985554327604159757e0, 5.20982848682361821619e0,
       9.99999999999999997461e-1)
_QP = (5.10862594750176621635e-2, 4.98213872951233449420e0, 7.58238284132545283818e1,
       3.66779609360150777800e2, 7.10856304998926107277e2, 5.97489612400613639965e2,
       2.11688757100572135698e2, 2.52070205858023719784e1)
_QQ = (1.0, 7.42373277035675149943e1, 1.05644886038262816351e3, 4.98641058337653607651e3,
       9.56231892404756170795e3, 7.99704160447350683650e3, 2.82619278517639096600e3,
       3.36093607810698293419e2)
_THREE_PI_OVER_4 = 2.35619449019234492885
_SQRT_2_OVER_PI = 0.79788456080286535588

#: Below this |x| the Taylor series is used (truncation error < 1e-14).
_SERIES_LIMIT = 0.25
#: Boundary between the Cephes small-argument and asymptotic branches.
_ASYMPTOTIC_LIMIT = 5.0


def _polyval(coefficients, x):
    """Horner evaluation, highest power first (Cephes ``polevl`` order)."""
    result = jnp.zeros_like(x) + coefficients[0]
    for c in coefficients[1:]:
        result = result * x + c
    return result


def j1_over_x_minus_half(x):
    """``J1(x)/x - 1/2`` for real x, smooth and exactly 0 at x = 0.

    Args:
        x: array of any shape and float dtype.

    Returns:
        Array like ``x``. Absolute error ~1e-16 (float64).
    """
    x = jnp.asarray(x)
    z = x * x
    ax = jnp.abs(x)
    small = ax < _SERIES_LIMIT
    middle = (ax >= _SERIES_LIMIT) & (ax <= _ASYMPTOTIC_LIMIT)
    # Taylor series J1(x)/x = 1/2 - x^2/16 + x^4/384 - x^6/18432 + x^8/1474560 - ...
    z_s = jnp.where(small, z, 0.0)
    series = z_s * (-1.0 / 16 + z_s * (1.0 / 384 + z_s * (-1.0 / 18432 + z_s * (1.0 / 1474560))))
    # Cephes rational form on [0, 5]: J1(x)/x = (z - Z1)(z - Z2) RP(z)/RQ(z)
    z_m = jnp.where(middle, z, 1.0)
    rational = (z_m - _Z1) * (z_m - _Z2) * _polyval(_RP, z_m) / _polyval(_RQ, z_m) - 0.5
    # Hankel asymptotic form for x > 5
    ax_l = jnp.where(ax > _ASYMPTOTIC_LIMIT, ax, 2 * _ASYMPTOTIC_LIMIT)
    w = _ASYMPTOTIC_LIMIT / ax_l
    ww = w * w
    p = _polyval(_PP, ww) / _polyval(_PQ, ww)
    q = _polyval(_QP, ww) / _polyval(_QQ, ww)
    xn = ax_l - _THREE_PI_OVER_4
    j1 = (p * jnp.cos(xn) - w * q * jnp.sin(xn)) * _SQRT_2_OVER_PI / jnp.sqrt(ax_l)
    asymptotic = j1 / ax_l - 0.5
    return jnp.where(small, series, jnp.where(middle, rational, asymptotic))


def spherical_j1_over_x_minus_third(x):
    """``j1(x)/x - 1/3`` with the spherical Bessel function ``j1(x) = sin x/x² − cos x/x``.

    Equal to ``(sin x − x cos x)/x³ − 1/3``; a Taylor series avoids the cancellation near 0.

    Args:
        x: array of any shape and float dtype.

    Returns:
        Array like ``x``, exactly 0 at x = 0.
    """
    x = jnp.asarray(x)
    z = x * x
    small = jnp.abs(x) < 2 * _SERIES_LIMIT
    # j1(x)/x = 1/3 - x^2/30 + x^4/840 - x^6/45360 + x^8/3991680 - x^10/518918400
    z_s = jnp.where(small, z, 0.0)
    series = z_s * (
        -1.0 / 30
        + z_s * (1.0 / 840 + z_s * (-1.0 / 45360 + z_s * (1.0 / 3991680 - z_s / 518918400)))
    )
    x_l = jnp.where(small, 1.0, x)
    direct = (jnp.sin(x_l) - x_l * jnp.cos(x_l)) / (x_l * x_l * x_l) - 1.0 / 3
    return jnp.where(small, series, direct)
