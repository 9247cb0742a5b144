"""Line-broadening kernels and their analytic Fourier transforms on a log-wavelength grid.

On a grid uniform in :math:`x = \\ln\\lambda` a velocity ``v`` is a constant offset
:math:`\\Delta x = v/c` (to first order in v/c), so rotation, macroturbulence and an instrumental
profile of constant resolving power are convolutions in ``x`` — products in Fourier space. Every
kernel here has a closed-form transfer function :math:`\\hat K(f)` of the velocity frequency ``f``
[cycles per km/s], :math:`\\hat K(f) = \\int K(v)\\,e^{-2\\pi i f v}\\,dv`, with
:math:`\\hat K(0) = 1` (flux and equivalent width are conserved) and :math:`\\hat K \\equiv 1` when
the broadening parameter is zero (exact identity, gradients finite there):

* rotation (Gray 2005, *The Observation and Analysis of Stellar Photospheres*, 3rd ed., eq. 18.14),
  linear limb darkening ε, :math:`u = \\Delta v / v\\sin i`:

  .. math:: G(u) = \\frac{2(1-\\varepsilon)\\sqrt{1-u^2} + \\tfrac{\\pi\\varepsilon}{2}(1-u^2)}
                        {\\pi\\, v\\sin i\\,(1-\\varepsilon/3)},\\qquad
            \\hat G = \\frac{2(1-\\varepsilon)\\,J_1(s)/s + 2\\varepsilon\\, j_1(s)/s}{1-\\varepsilon/3},
            \\quad s = 2\\pi f\\, v\\sin i

  (``J1`` the Bessel function, ``j1`` the spherical Bessel function);
* radial–tangential macroturbulence with :math:`\\zeta_R = \\zeta_T = \\zeta`, equal areas
  (Gray 2005, eq. 17.x; disk integral without limb-darkening weighting), :math:`u = |\\Delta v|/\\zeta`:

  .. math:: M(u) = \\frac{2}{\\sqrt\\pi\\,\\zeta}\\left(e^{-u^2} - \\sqrt\\pi\\,u\\,\\mathrm{erfc}\\,u\\right),
            \\qquad \\hat M = \\frac{1 - e^{-a}}{a},\\quad a = (\\pi\\zeta f)^2;

* a Gaussian instrumental profile of resolving power R (FWHM = λ/R, i.e. c/R in velocity):
  :math:`\\sigma_v = c / (2\\sqrt{2\\ln 2}\\,R)`, :math:`\\hat N = e^{-2\\pi^2\\sigma_v^2 f^2}`.

The convolution functions FFT a spectrum sampled uniformly in ln λ after padding it with a linear
ramp that joins its last sample back to its first, so the periodic FFT sees no jump and nothing wraps
from one end onto the other; only the outer kernel half-width at each end (where the true spectrum
beyond the grid is unknown) is unreliable.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import scipy.fft

from jaxpayne.forward._special import j1_over_x_minus_half, spherical_j1_over_x_minus_third
from jaxpayne.forward.doppler import SPEED_OF_LIGHT

__all__ = [
    "FWHM_TO_SIGMA",
    "broaden",
    "gaussian_transfer",
    "instrumental_broadening",
    "macroturbulent_broadening",
    "macroturbulent_kernel",
    "macroturbulent_transfer",
    "resolution_to_sigma",
    "rotational_broadening",
    "rotational_kernel",
    "rotational_transfer",
]

#: σ of a Gaussian per unit FWHM, 1 / (2 sqrt(2 ln 2)).
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: Below this value of a = (π ζ f)² the macroturbulent transfer uses its Taylor series.
_MACRO_SERIES_LIMIT = 1e-2
#: Default linear limb-darkening coefficient (a typical optical/near-IR value; Gray 2005).
DEFAULT_LIMB_DARKENING = 0.6


def resolution_to_sigma(wavelength, resolution):
    """Gaussian σ of an instrumental profile with FWHM = λ/R.

    Args:
        wavelength: wavelength [Å].
        resolution: resolving power R = λ/FWHM [dimensionless], broadcastable.

    Returns:
        σ [Å] (same units as ``wavelength``).
    """
    return wavelength * FWHM_TO_SIGMA / resolution


def rotational_transfer(frequency, vsini, limb_darkening=DEFAULT_LIMB_DARKENING):
    """Fourier transform of Gray's rotational broadening kernel.

    Args:
        frequency: velocity frequency f [cycles per km/s], any shape.
        vsini: projected rotational velocity [km/s], broadcastable; 0 gives exactly 1. Even in
            vsini, smooth at 0 (derivative 0 there).
        limb_darkening: linear limb-darkening coefficient ε in [0, 1].

    Returns:
        Ĝ(f), real, same dtype as the inputs.
    """
    s = 2.0 * jnp.pi * frequency * vsini
    eps = limb_darkening
    deviation = 2.0 * (1.0 - eps) * j1_over_x_minus_half(s) + 2.0 * eps * (
        spherical_j1_over_x_minus_third(s)
    )
    return 1.0 + deviation / (1.0 - eps / 3.0)


def macroturbulent_transfer(frequency, vmacro):
    """Fourier transform of the radial–tangential macroturbulence kernel (ζ_R = ζ_T).

    Args:
        frequency: velocity frequency f [cycles per km/s], any shape.
        vmacro: ζ [km/s], broadcastable; 0 gives exactly 1 (smooth, even in ζ).

    Returns:
        M̂(f) = (1 − exp(−a))/a with a = (π ζ f)².
    """
    a = (jnp.pi * vmacro * frequency) ** 2
    small = a < _MACRO_SERIES_LIMIT
    a_s = jnp.where(small, a, 0.0)
    series = 1.0 + a_s * (-0.5 + a_s * (1.0 / 6 + a_s * (-1.0 / 24 + a_s / 120)))
    a_l = jnp.where(small, 1.0, a)
    return jnp.where(small, series, -jnp.expm1(-a_l) / a_l)


def gaussian_transfer(frequency, sigma):
    """Fourier transform of a unit-area Gaussian of standard deviation ``sigma``.

    Args:
        frequency: velocity frequency f [cycles per km/s].
        sigma: σ [km/s]; 0 gives exactly 1.

    Returns:
        exp(−2π² σ² f²).
    """
    return jnp.exp(-2.0 * (jnp.pi * sigma * frequency) ** 2)


def rotational_kernel(velocity, vsini, limb_darkening=DEFAULT_LIMB_DARKENING):
    """Gray's rotational broadening kernel in velocity space (reference/plotting).

    Args:
        velocity: velocity offset Δv [km/s] (numpy or JAX).
        vsini: projected rotational velocity [km/s], > 0.
        limb_darkening: linear limb-darkening coefficient ε.

    Returns:
        G(Δv) [per km/s], unit area; zero for abs(Δv) ≥ vsini.
    """
    xp = np if isinstance(velocity, np.ndarray) else jnp
    one_minus_u2 = xp.clip(1.0 - (velocity / vsini) ** 2, 0.0, None)
    eps = limb_darkening
    numerator = 2.0 * (1.0 - eps) * xp.sqrt(one_minus_u2) + 0.5 * np.pi * eps * one_minus_u2
    return numerator / (np.pi * vsini * (1.0 - eps / 3.0))


def macroturbulent_kernel(velocity, vmacro):
    """Radial–tangential macroturbulence kernel (ζ_R = ζ_T = ``vmacro``) in velocity space.

    Args:
        velocity: velocity offset Δv [km/s] (numpy).
        vmacro: ζ [km/s], > 0.

    Returns:
        M(Δv) [per km/s], unit area.
    """
    import scipy.special

    u = np.abs(np.asarray(velocity)) / vmacro
    return 2.0 / (np.sqrt(np.pi) * vmacro) * (
        np.exp(-u * u) - np.sqrt(np.pi) * u * scipy.special.erfc(u)
    )


def _fft_length(n: int, pad: int | None) -> int:
    pad = max(n // 2, 16) if pad is None else int(pad)
    return int(scipy.fft.next_fast_len(n + max(pad, 2), real=True))


def periodic_ramp_pad(flux, length: int):
    """Extend a spectrum to ``length`` samples with a linear ramp back to its first sample.

    Args:
        flux: array (..., n).
        length: total length ≥ n + 1.

    Returns:
        Array (..., length) whose periodic extension is continuous.
    """
    n = flux.shape[-1]
    extra = length - n
    ramp = jnp.arange(1, extra + 1, dtype=flux.dtype) / (extra + 1)
    first, last = flux[..., :1], flux[..., -1:]
    return jnp.concatenate([flux, last + (first - last) * ramp], axis=-1)


def broadening_transfer(
    frequency,
    *,
    vsini=None,
    vmacro=None,
    resolution=None,
    limb_darkening=DEFAULT_LIMB_DARKENING,
):
    """Product of the transfer functions of the requested broadening steps.

    Args:
        frequency: velocity frequency f [cycles per km/s].
        vsini: [km/s] or None (step skipped).
        vmacro: [km/s] or None.
        resolution: resolving power R or None (R → ∞).
        limb_darkening: ε for the rotational kernel.

    Returns:
        The combined transfer function (or the scalar 1.0 when every step is None).
    """
    transfer = 1.0
    if vsini is not None:
        transfer = transfer * rotational_transfer(frequency, vsini, limb_darkening)
    if vmacro is not None:
        transfer = transfer * macroturbulent_transfer(frequency, vmacro)
    if resolution is not None:
        sigma = SPEED_OF_LIGHT * FWHM_TO_SIGMA / resolution
        transfer = transfer * gaussian_transfer(frequency, sigma)
    return transfer


def broaden(
    flux,
    velocity_step: float,
    *,
    vsini=None,
    vmacro=None,
    resolution=None,
    limb_darkening: float = DEFAULT_LIMB_DARKENING,
    pad: int | None = None,
):
    """Apply rotation, macroturbulence and a constant-R Gaussian LSF in one FFT round trip.

    Args:
        flux: spectrum (..., n) sampled uniformly in ln λ.
        velocity_step: grid step c·Δln λ [km/s per pixel] (static Python float).
        vsini: projected rotation [km/s] (scalar or broadcastable to the batch shape + (1,)), or
            None to skip.
        vmacro: radial–tangential macroturbulence ζ [km/s], or None.
        resolution: resolving power R, or None (no instrumental broadening).
        limb_darkening: linear limb-darkening coefficient ε.
        pad: number of ramp-padding samples (static); default max(n/2, 16). Use at least the
            kernel half-width in pixels.

    Returns:
        Broadened spectrum (..., n), same dtype. Flux and equivalent width are conserved.

    Example:
        >>> wide = broaden(flux, 1.0, vsini=20.0, resolution=22_500.0)
    """
    flux = jnp.asarray(flux)
    if vsini is None and vmacro is None and resolution is None:
        return flux
    n = flux.shape[-1]
    length = _fft_length(n, pad)
    frequency = jnp.asarray(np.fft.rfftfreq(length, d=float(velocity_step)), dtype=flux.dtype)
    transfer = broadening_transfer(
        frequency, vsini=vsini, vmacro=vmacro, resolution=resolution,
        limb_darkening=limb_darkening,
    )
    spectrum = jnp.fft.rfft(periodic_ramp_pad(flux, length), axis=-1)
    return jnp.fft.irfft(spectrum * transfer, n=length, axis=-1)[..., :n].astype(flux.dtype)


def rotational_broadening(
    flux, vsini, *, velocity_step: float, limb_darkening: float = DEFAULT_LIMB_DARKENING,
    pad: int | None = None,
):
    """Rotational broadening (Gray 2005, eq. 18.14) of a log-λ-uniform spectrum.

    Args:
        flux: spectrum (..., n), uniform in ln λ.
        vsini: projected equatorial velocity [km/s]; 0 is the identity.
        velocity_step: grid step [km/s per pixel].
        limb_darkening: linear limb-darkening coefficient ε (default 0.6).
        pad: ramp-padding samples (see :func:`broaden`).

    Returns:
        Broadened spectrum (..., n).
    """
    return broaden(flux, velocity_step, vsini=vsini, limb_darkening=limb_darkening, pad=pad)


def macroturbulent_broadening(flux, vmacro, *, velocity_step: float, pad: int | None = None):
    """Radial–tangential macroturbulent broadening (Gray 2005) of a log-λ-uniform spectrum.

    Args:
        flux: spectrum (..., n), uniform in ln λ.
        vmacro: ζ_R = ζ_T [km/s]; 0 is the identity.
        velocity_step: grid step [km/s per pixel].
        pad: ramp-padding samples (see :func:`broaden`).

    Returns:
        Broadened spectrum (..., n).
    """
    return broaden(flux, velocity_step, vmacro=vmacro, pad=pad)


def instrumental_broadening(flux, resolution, *, velocity_step: float, pad: int | None = None):
    """Gaussian instrumental broadening at constant resolving power R (FWHM = λ/R).

    Args:
        flux: spectrum (..., n), uniform in ln λ.
        resolution: R; ``None`` or ``inf`` is the identity.
        velocity_step: grid step [km/s per pixel].
        pad: ramp-padding samples (see :func:`broaden`).

    Returns:
        Broadened spectrum (..., n).
    """
    return broaden(flux, velocity_step, resolution=resolution, pad=pad)
