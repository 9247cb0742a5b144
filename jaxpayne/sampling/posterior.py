"""The posterior density of one spectrum: prior × the forward model's likelihood, in physical and
in unconstrained coordinates, and as a NumPyro model.

A composition of public pure functions, nothing else: the parameter space's bijections
(:meth:`~jaxpayne.forward.ParameterSpace.from_unconstrained`,
:meth:`~jaxpayne.forward.ParameterSpace.log_abs_det_jacobian`), a :class:`~jaxpayne.sampling.Prior`
and :func:`~jaxpayne.forward.loglike` with the shared :data:`~jaxpayne.forward.DEFAULT_SETTINGS`.

.. math:: \\ln p(z \\mid O) = \\ln P(\\theta(z)) + \\ln L(O \\mid \\theta(z))
          + \\ln\\left|\\frac{\\partial\\theta}{\\partial z}\\right| + \\text{const}

An optional ``noise_scale`` parameter s (uniform on [:data:`NOISE_SCALE_BOUNDS`]) multiplies every
uncertainty (the likelihood's ``inflation``): a jitter for spectra whose errors are mis-estimated.

Optional ``terms`` (:mod:`jaxpayne.sampling.terms`: asteroseismology, label measurements,
parallax and photometry) add their log-likelihoods, of the named parameters and per-star
``constraints`` data, and their latent parameters (after the forward model's and the noise
scale) to the sampled space.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxpayne.forward.likelihood import DEFAULT_SETTINGS, LikelihoodSettings, loglike
from jaxpayne.forward.parameters import ParameterSpace
from jaxpayne.sampling.priors import Prior, as_prior
from jaxpayne.sampling.terms import constraint_columns, merge_latents

__all__ = ["NOISE_SCALE", "NOISE_SCALE_BOUNDS", "Posterior"]

#: Name of the optional noise-scale parameter.
NOISE_SCALE = "noise_scale"
#: Bounds of the noise scale (factor on every uncertainty).
NOISE_SCALE_BOUNDS = (0.2, 10.0)


class Posterior:
    """ln p(θ | O) of one spectrum for a forward model, a prior and likelihood settings.

    Static (hashed by identity): the per-spectrum inputs — the observation, its prepared data and
    fixed values — are arguments of the methods, so they vmap over stars.

    Args:
        fm: the :class:`~jaxpayne.forward.ForwardModel`.
        prior: a :class:`Prior` (or anything :func:`~jaxpayne.sampling.as_prior` takes; None:
            uniform over the box).
        settings: likelihood options (default :data:`~jaxpayne.forward.DEFAULT_SETTINGS`).
        noise_scale: add the free parameter ``noise_scale`` (s multiplies every uncertainty,
            on top of ``settings.inflation``).
        terms: likelihood terms beside the spectrum's (:mod:`jaxpayne.sampling.terms`).

    Attributes:
        space: the sampled :class:`~jaxpayne.forward.ParameterSpace` — the forward model's, plus
            ``noise_scale`` when requested, plus the terms' latent parameters.
    """

    def __init__(self, fm, prior=None, settings: LikelihoodSettings = DEFAULT_SETTINGS,
                 noise_scale: bool = False, terms=()):
        self.fm = fm
        self.prior: Prior = as_prior(prior)
        self.settings = settings
        self.noise_scale = bool(noise_scale)
        self.terms = tuple(terms)
        #: The terms' latent parameters (each name once), after the forward model's and s.
        self.latent = merge_latents(self.terms)
        #: The per-star data the terms read (``constraints`` of the density methods).
        self.constraint_names = constraint_columns(self.terms)
        space = fm.space
        rows = ([(NOISE_SCALE, "", *NOISE_SCALE_BOUNDS, 1.0)] if self.noise_scale else [])
        rows += [(lat.name, lat.unit, lat.lower, lat.upper, lat.initial) for lat in self.latent]
        clash = sorted({r[0] for r in rows} & set(space.names))
        if clash:
            raise ValueError(f"latent parameter(s) {clash} of the terms collide with the model's parameters")
        if rows:
            names, units, lo, hi, init = zip(*rows)
            space = ParameterSpace(space.names + names, space.units + units, np.r_[space.lower, lo],
                                   np.r_[space.upper, hi], np.r_[space.initial, init], space.fixed)
        self.space = space
        self._n_fm = fm.space.n_free
        self.prior.check(space)

    # ------------------------------------------------------------------------- densities
    def split(self, theta):
        """(forward-model θ, noise scale) from the sampled vector (traceable)."""
        theta_fm = theta[..., :self._n_fm]
        return theta_fm, (theta[..., self._n_fm] if self.noise_scale else None)

    def log_prior(self, theta, fixed: Mapping | None = None):
        """ln P(θ): the prior, and the latent parameters' distributions (constants left out;
        traceable)."""
        import jax.numpy as jnp

        values = self.space.unflatten(theta, fixed)
        total = self.prior.log_prob(values)
        for lat in self.latent:
            if lat.prior is not None and lat.name not in self.prior.distributions:
                total = total + jnp.asarray(lat.prior.log_prob(values[lat.name]), total.dtype)
        return total

    def log_likelihood(self, theta, obs, fixed: Mapping | None = None, data=None):
        """ln L(O | θ) of the spectrum: :func:`~jaxpayne.forward.loglike` with the noise scale
        applied (traceable)."""
        theta_fm, scale = self.split(theta)
        settings = self.settings
        if scale is not None:
            settings = settings._replace(inflation=settings.inflation * scale)
        return loglike(self.fm, theta_fm, obs, fixed, settings, data)

    def log_constraints(self, theta, fixed: Mapping | None = None, constraints: Mapping | None = None):
        """Σ ln L of the terms for one star's ``constraints`` (name → value; missing names and
        NaN values contribute nothing; traceable)."""
        import jax.numpy as jnp

        if not self.terms:
            return jnp.zeros((), theta.dtype)
        values = self.space.unflatten(theta, fixed)
        data = self._data(constraints, theta.dtype)
        return sum(term.log_likelihood(values, data) for term in self.terms).astype(theta.dtype)

    def constraint_fisher(self, theta, fixed: Mapping | None = None, constraints: Mapping | None = None):
        """(n, n) Fisher information of the terms at θ (JᵀJ of their whitened residuals), in the
        sampled parameters: add it to the spectrum's to predict their joint precision."""
        import jax
        import jax.numpy as jnp

        data = self._data(constraints, theta.dtype)

        def residuals(t):
            values = self.space.unflatten(t, fixed)
            parts = [term.residuals(values, data) for term in self.terms]
            return jnp.concatenate(parts) if parts else jnp.zeros((0,), t.dtype)

        jac = jax.jacfwd(residuals)(jnp.asarray(theta))
        return jac.T @ jac

    def _data(self, constraints, dtype):
        import jax.numpy as jnp

        given = dict(constraints or {})
        return {n: jnp.asarray(given.get(n, jnp.nan), dtype) for n in self.constraint_names}

    def log_density(self, theta, obs, fixed: Mapping | None = None, data=None, constraints: Mapping | None = None):
        """ln P(θ) + ln L(O | θ) + the terms' ln L in physical coordinates (traceable)."""
        value = self.log_prior(theta, fixed) + self.log_likelihood(theta, obs, fixed, data)
        return value + self.log_constraints(theta, fixed, constraints) if self.terms else value

    def log_density_unconstrained(self, z, obs, fixed: Mapping | None = None, data=None,
                                  constraints: Mapping | None = None):
        """The density HMC samples: that of z = ``space.to_unconstrained(θ)``, Jacobian included;
        −inf wherever it is not finite (traceable)."""
        import jax.numpy as jnp

        theta = self.space.from_unconstrained(z)
        value = self.log_density(theta, obs, fixed, data, constraints) + self.space.log_abs_det_jacobian(z)
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    # ------------------------------------------------------------------------- NumPyro
    def numpyro_model(self, obs, fixed: Mapping | None = None, data=None, constraints: Mapping | None = None):
        """A NumPyro model of one spectrum: one sample site per free parameter, named after it.

        Each site has the box as its support (NumPyro maps it to the real line with the same
        logistic / log maps as :meth:`~jaxpayne.forward.ParameterSpace.to_unconstrained`); the
        prior and the likelihood enter as the factors ``"prior"`` and ``"loglike"`` (and the
        terms as ``"constraints"``). Use it with
        any NumPyro algorithm (``MCMC(NUTS(model))``, SVI, ``Predictive``).

        Returns:
            A callable with no arguments.
        """
        import numpyro
        import numpyro.distributions as dist

        space = self.space

        def model():
            values = {}
            for name, lo, hi in zip(space.free_names, space.free_lower, space.free_upper):
                values[name] = numpyro.sample(name, dist.ImproperUniform(_support(lo, hi), (), ()))
            theta = space.flatten(values)
            numpyro.factor("prior", self.log_prior(theta, fixed))
            numpyro.factor("loglike", self.log_likelihood(theta, obs, fixed, data))
            if self.terms:
                numpyro.factor("constraints", self.log_constraints(theta, fixed, constraints))

        return model

    def describe(self) -> dict:
        """JSON-serialisable description (recorded in output files)."""
        out = {"prior": self.prior.describe(), "prior_name": self.prior.name,
               "noise_scale": self.noise_scale, "parameters": list(self.space.free_names)}
        if self.terms:
            out["terms"] = [term.describe() for term in self.terms]
        return out


def _support(lo: float, hi: float):
    from numpyro.distributions import constraints

    if np.isfinite(lo) and np.isfinite(hi):
        return constraints.interval(float(lo), float(hi))
    if np.isfinite(lo):
        return constraints.greater_than(float(lo))
    if np.isfinite(hi):
        return constraints.less_than(float(hi))
    return constraints.real
