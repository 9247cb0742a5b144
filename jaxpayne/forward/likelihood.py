"""The likelihood: a continuum step applied identically to model and data, and a Gaussian
log-likelihood of any model spectrum — with one set of defaults for fitting, sampling and bounds.

The pieces compose (all pure, jit/vmap/grad-able):

1. :func:`prepare_data` — the data side, computed once per spectrum: the usable pixels, the
   data's ivar and, for the filter continuum, the data's running mean and the filter's
   denominator (which depends only on the ivar, so the model's running mean costs half);
2. :func:`apply_continuum` — any :class:`~jaxpayne.forward.ModelSpectrum` (one star, or a sum of
   components) and the prepared data → a :class:`Normalized` pair, continuum treated identically
   for both:

   * ``filter``: both divided by their ivar-weighted running means (Ho et al. 2017, ApJ 836, 5;
     DD-Payne, Xiang et al. 2019, ApJS 245, 34); ivar_norm = ivar · smooth(data)²;
   * ``cheb:N``: data divided by the Chebyshev continuum c fitted to data ≈ model · c by weighted
     least squares (binspec, El-Badry et al. 2018, MNRAS 476, 528) — the weights are the total
     variance σ² + c²σ_emu² of data − model·c, so the continuum fit and χ² use the same weights;
     ``cheb:N:free``: c from free coefficients; ivar_norm = ivar · c²;
   * ``none``: unchanged;

   with the emulator's own error σ_emu added in quadrature to the normalised data's variance;
3. :func:`whitened_residuals` and :func:`gaussian_loglike` — of any :class:`Normalized`
   (:func:`normalize` is steps 1–2 for one star at parameters θ);
4. :func:`jacobian` and :func:`fisher_matrix` — of the same likelihood with respect to the free
   parameters (forward-mode autodiff), the basis of Laplace covariances and Cramér–Rao bounds.

:data:`DEFAULT_SETTINGS` (:class:`LikelihoodSettings`) is the one set of defaults that
``fit``, ``sample`` and ``crlb`` share: emulator error on (where the model file has one), no
inflation, the Chebyshev continuum marginalised in the log-likelihood.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp

from jaxpayne.forward.continuum import chebyshev_basis, chebyshev_continuum, smooth_continuum
from jaxpayne.forward.observation import Observation
from jaxpayne.forward.spectrum import ModelSpectrum

__all__ = [
    "DEFAULT_SETTINGS",
    "LikelihoodSettings",
    "Normalized",
    "PreparedData",
    "apply_continuum",
    "fisher_matrix",
    "gaussian_loglike",
    "jacobian",
    "loglike",
    "normalize",
    "prepare_data",
    "residuals",
    "whitened_residuals",
]


class LikelihoodSettings(NamedTuple):
    """Options of the likelihood, shared by fitting, sampling and information bounds.

    Attributes:
        emulator_error: add the emulator's per-pixel validation error (the model file's) in
            quadrature to the data variance; ignored for an emulator without one.
        inflation: factor s > 0 on every uncertainty (σ → sσ).
        marginalize: for ``cheb:N``, the log-likelihood includes the analytic marginalisation
            over the continuum coefficients (flat prior); else the profile likelihood. (The
            least-squares fitter minimises χ² at the best continuum — the profile — whatever this
            says; the marginal term changes slowly with the labels.)
    """

    emulator_error: bool = True
    inflation: float = 1.0
    marginalize: bool = True


#: The defaults of ``fit``, ``sample`` and ``crlb``.
DEFAULT_SETTINGS = LikelihoodSettings()


class PreparedData(NamedTuple):
    """The data side of the likelihood (independent of the parameters; a pytree).

    Attributes:
        valid: (n,) bool, pixels with finite flux and ivar > 0.
        ivar: (n,) inverse variance, 0 where not valid.
        data: (n,) flux, 0 where not valid.
        wavelength: (n,) [Å].
        segment: (n,) int32.
        smooth_data: (n,) the data's running mean (filter continuum), else None.
        smooth_weight: (n,) the filter's denominator (filter continuum), else None.
    """

    valid: jax.Array
    ivar: jax.Array
    data: jax.Array
    wavelength: jax.Array
    segment: jax.Array
    smooth_data: jax.Array | None = None
    smooth_weight: jax.Array | None = None

    @property
    def used(self) -> jax.Array:
        """Pixels that enter the likelihood: the valid ones, less, for the filter continuum,
        those whose running mean is 0."""
        if self.smooth_data is None:
            return self.valid
        return self.valid & (self.smooth_data != 0)


class Normalized(NamedTuple):
    """Model and data after the continuum step (a pytree).

    Attributes:
        model: (n,) normalised model.
        data: (n,) normalised data, 0 where not valid.
        ivar: (n,) normalised inverse variance (emulator error included), 0 where not valid.
        valid: (n,) bool, pixels in the likelihood.
        log_continuum: (n,) ln|c| of the Chebyshev continuum (0 otherwise): the Jacobian term
            that makes the likelihood that of the observed flux.
        marginal: scalar log of the analytic marginalisation over the Chebyshev coefficients
            (0 unless ``cheb:N``).
    """

    model: jax.Array
    data: jax.Array
    ivar: jax.Array
    valid: jax.Array
    log_continuum: jax.Array
    marginal: jax.Array


def prepare_data(fm, obs: Observation, dtype=None) -> PreparedData:
    """The data side of the likelihood of one observation (traceable; vmap over spectra).

    Args:
        fm: the forward model (its continuum treatment and segments are used).
        obs: the observation.
        dtype: float dtype (default that of ``obs.flux``).
    """
    dtype = dtype or jnp.asarray(obs.flux).dtype
    ivar_raw = jnp.asarray(obs.ivar).astype(dtype)
    flux_raw = jnp.asarray(obs.flux).astype(dtype)
    valid = (ivar_raw > 0) & jnp.isfinite(ivar_raw) & jnp.isfinite(flux_raw)
    ivar = jnp.where(valid, ivar_raw, 0.0)
    data = jnp.where(valid, flux_raw, 0.0)
    wavelength = jnp.asarray(obs.wavelength).astype(dtype)
    segment = jnp.asarray(obs.segment, jnp.int32)
    smooth = weight = None
    if fm.continuum.kind == "filter":
        smooth, weight = smooth_continuum(
            data, ivar, wavelength, segment, width=fm.continuum.width,
            n_segments=fm.n_segments, wavelength_range=fm.filter_range, return_denominator=True,
        )
    return PreparedData(valid, ivar, data, wavelength, segment, smooth, weight)


def _with_model_error(ivar_norm, model_error):
    if model_error is None:
        return ivar_norm
    return ivar_norm / (1.0 + ivar_norm * model_error**2)


def apply_continuum(fm, spectrum: ModelSpectrum, data: PreparedData,
                    values: Mapping[str, jax.Array] | None = None, inflation=1.0) -> Normalized:
    """The continuum step, applied identically to a model spectrum and the data (traceable).

    Args:
        fm: the forward model (continuum treatment, segments, filter range).
        spectrum: the model on the observed pixels (any composition of components).
        data: the prepared data (:func:`prepare_data`).
        values: parameters by name; needed for free Chebyshev coefficients.
        inflation: uncertainty factor s, used for the weights of the analytic Chebyshev fit.

    Returns:
        The :class:`Normalized` model and data.
    """
    model, error = spectrum.flux, spectrum.sigma
    dtype = model.dtype
    valid, ivar, flux = data.valid, data.ivar.astype(dtype), data.data.astype(dtype)
    log_continuum = jnp.zeros_like(flux)
    marginal = jnp.zeros((), dtype)
    kind = fm.continuum.kind
    if kind == "none":
        model_norm, data_norm, ivar_norm = model, flux, _with_model_error(ivar, error)
    elif kind == "filter":
        smooth_data = data.smooth_data.astype(dtype)
        smooth_model = smooth_continuum(
            model, ivar, data.wavelength, data.segment, width=fm.continuum.width,
            n_segments=fm.n_segments, wavelength_range=fm.filter_range,
            denominator=data.smooth_weight,
        )
        model_norm = model / smooth_model
        data_norm = flux / smooth_data
        ivar_norm = _with_model_error(
            ivar * smooth_data**2, None if error is None else error / smooth_model
        )
    else:  # Chebyshev
        design = chebyshev_basis(data.wavelength, data.segment, ivar,
                                 n_segments=fm.n_segments, degree=fm.continuum.degree)
        if fm.continuum.free:
            coefficients = jnp.stack([values[n] for n in fm.continuum_names]).astype(dtype)
            continuum = design.evaluate(coefficients)
            weight = ivar if error is None else ivar / (1.0 + ivar * (continuum * error) ** 2)
        else:
            weight = ivar
            if error is not None:
                # the variance of data − model·c is σ² + c²σ_emu²: weights from a first fit
                first = chebyshev_continuum(model, flux, ivar / inflation**2, design).continuum
                weight = ivar / (1.0 + ivar * (first * error) ** 2)
            fit = chebyshev_continuum(model, flux, weight / inflation**2, design)
            continuum = fit.continuum
            marginal = 0.5 * fit.rank * jnp.log(2.0 * jnp.pi) - 0.5 * fit.logdet
        magnitude = jnp.abs(continuum)
        safe = jnp.where(valid & (magnitude > 0), continuum, 1.0)
        model_norm = model
        data_norm = flux / safe
        ivar_norm = jnp.where(valid, weight * safe**2, 0.0)
        log_continuum = jnp.where(valid, jnp.log(jnp.abs(safe)), 0.0)
    valid = valid & (ivar_norm > 0)
    ivar_norm = jnp.where(valid, ivar_norm, 0.0)
    data_norm = jnp.where(valid, data_norm, 0.0)
    return Normalized(model_norm, data_norm, ivar_norm, valid, log_continuum, marginal)


def whitened_residuals(normalized: Normalized, inflation=1.0) -> jax.Array:
    """(data_norm − model_norm)·√ivar_norm / s, exactly 0 at pixels not in the likelihood."""
    valid = normalized.valid
    root = jnp.sqrt(jnp.where(valid, normalized.ivar, 1.0))
    return jnp.where(valid, (normalized.data - normalized.model) * root / inflation, 0.0)


def gaussian_loglike(normalized: Normalized, inflation=1.0, marginalize: bool = True) -> jax.Array:
    """Gaussian log-likelihood of normalised data given a normalised model, normalisation included.

    .. math:: \\ln L = -\\tfrac12\\sum_i r_i^2
              + \\tfrac12\\sum_i \\ln\\frac{w_i}{2\\pi\\,s^2} - \\sum_i \\ln|c_i|
              \\;[+\\ \\tfrac{K}{2}\\ln 2\\pi - \\tfrac12\\ln\\det A]

    over the pixels in the likelihood, with r the :func:`whitened_residuals`, w = ivar_norm,
    s = ``inflation``, c the Chebyshev continuum (the Jacobian that makes this the likelihood of
    the *observed* flux; absent for ``filter``/``none``, whose likelihood is that of the
    normalised flux) and, for ``cheb:N`` with ``marginalize``, the analytic marginalisation over
    the K continuum coefficients under a flat prior (A = DᵀWD the normal matrix).

    Returns:
        Scalar log-likelihood.
    """
    valid = normalized.valid
    weight = jnp.where(valid, normalized.ivar, 1.0) / inflation**2
    chi2 = jnp.sum(jnp.where(valid, (normalized.data - normalized.model) ** 2 * weight, 0.0))
    norm = jnp.sum(jnp.where(valid, jnp.log(weight / (2.0 * jnp.pi)), 0.0))
    result = -0.5 * chi2 + 0.5 * norm - jnp.sum(normalized.log_continuum)
    if marginalize:
        result = result + normalized.marginal
    return result


def normalize(fm, theta, obs: Observation, fixed=None, settings: LikelihoodSettings = DEFAULT_SETTINGS,
              data: PreparedData | None = None) -> Normalized:
    """Model and data of one spectrum at free parameters ``theta`` after the continuum step
    (traceable): the model's spectrum (``fm.spectrum``: :func:`~jaxpayne.forward.model_spectrum`
    for a :class:`~jaxpayne.forward.ForwardModel`, the flux-weighted sum of its components for a
    :class:`~jaxpayne.forward.CompositeModel`) then :func:`apply_continuum`.

    Args:
        fm: the forward model (a ForwardModel or a CompositeModel).
        theta: (n_free,) free parameters, physical units, order ``fm.space.free_names``.
        obs: the observation.
        fixed: per-call values of fixed parameters (traced allowed).
        settings: likelihood options (the emulator error and the inflation are used).
        data: the prepared data (computed when not given).
    """
    values = fm.space.unflatten(jnp.asarray(theta), fixed, dtype=fm.dtype_of(theta, obs))
    spectrum = fm.spectrum(values, obs, emulator_error=fm.uses_emulator_error(settings))
    if data is None:
        data = prepare_data(fm, obs, spectrum.flux.dtype)
    return apply_continuum(fm, spectrum, data, values, settings.inflation)


def residuals(fm, theta, obs: Observation, fixed=None, settings: LikelihoodSettings = DEFAULT_SETTINGS,
              data: PreparedData | None = None) -> jax.Array:
    """Whitened residuals (n,) of one spectrum at free parameters ``theta`` (traceable).

    Args:
        fm: the forward model.
        theta: (n_free,) free parameters, physical units, order ``fm.space.free_names``.
        obs: the observation.
        fixed: per-call values of fixed parameters (traced allowed).
        settings: likelihood options.
        data: the prepared data (computed when not given).
    """
    normalized = normalize(fm, theta, obs, fixed, settings, data)
    return whitened_residuals(normalized, settings.inflation)


def loglike(fm, theta, obs: Observation, fixed=None, settings: LikelihoodSettings = DEFAULT_SETTINGS,
            data: PreparedData | None = None) -> jax.Array:
    """Log-likelihood ln L(obs | θ) of one spectrum (traceable); see :func:`gaussian_loglike`."""
    normalized = normalize(fm, theta, obs, fixed, settings, data)
    return gaussian_loglike(normalized, settings.inflation, settings.marginalize)


def jacobian(fm, theta, obs: Observation, fixed=None, settings: LikelihoodSettings = DEFAULT_SETTINGS,
             data: PreparedData | None = None) -> jax.Array:
    """Jacobian (n_pixels, n_free) of the whitened residuals (forward mode; traceable)."""
    theta = jnp.asarray(theta)
    return jax.jacfwd(lambda t: residuals(fm, t, obs, fixed, settings, data))(theta)


def fisher_matrix(fm, theta, obs: Observation, fixed=None,
                  settings: LikelihoodSettings = DEFAULT_SETTINGS,
                  data: PreparedData | None = None) -> jax.Array:
    """Fisher information matrix (n_free, n_free) of the Gaussian likelihood, JᵀJ (traceable).

    For Gaussian noise with parameter-independent weights this is the expected information
    :math:`F_{jk} = \\sum_i \\frac{\\partial\\mu_i}{\\partial\\theta_j}
    \\frac{\\partial\\mu_i}{\\partial\\theta_k}\\,w_i`, the inverse of the Cramér–Rao bound on the
    covariance of any unbiased estimator, and the Gauss–Newton Hessian of −ln L at a fit. Units
    are those of ``theta`` (physical): F[j, k] in 1/(unit_j · unit_k).
    """
    jac = jacobian(fm, theta, obs, fixed, settings, data)
    return jnp.matmul(jac.T, jac, precision=jax.lax.Precision.HIGHEST)
