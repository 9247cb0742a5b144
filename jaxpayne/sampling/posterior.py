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
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from jaxpayne.forward.likelihood import DEFAULT_SETTINGS, LikelihoodSettings, loglike
from jaxpayne.forward.parameters import ParameterSpace
from jaxpayne.sampling.priors import Prior, as_prior

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

    Attributes:
        space: the sampled :class:`~jaxpayne.forward.ParameterSpace` — the forward model's, plus
            ``noise_scale`` when requested.
    """

    def __init__(self, fm, prior=None, settings: LikelihoodSettings = DEFAULT_SETTINGS,
                 noise_scale: bool = False):
        self.fm = fm
        self.prior: Prior = as_prior(prior)
        self.settings = settings
        self.noise_scale = bool(noise_scale)
        space = fm.space
        if self.noise_scale:
            lo, hi = NOISE_SCALE_BOUNDS
            space = ParameterSpace(space.names + (NOISE_SCALE,), space.units + ("",),
                                   np.r_[space.lower, lo], np.r_[space.upper, hi], np.r_[space.initial, 1.0],
                                   space.fixed)
        self.space = space
        self.prior.check(space)

    # ------------------------------------------------------------------------- densities
    def split(self, theta):
        """(forward-model θ, noise scale) from the sampled vector (traceable)."""
        if not self.noise_scale:
            return theta, None
        return theta[..., :-1], theta[..., -1]

    def log_prior(self, theta, fixed: Mapping | None = None):
        """ln P(θ) (constants left out; traceable)."""
        values = self.space.unflatten(theta, fixed)
        return self.prior.log_prob(values)

    def log_likelihood(self, theta, obs, fixed: Mapping | None = None, data=None):
        """ln L(O | θ): :func:`~jaxpayne.forward.loglike` with the noise scale applied (traceable)."""
        theta_fm, scale = self.split(theta)
        settings = self.settings
        if scale is not None:
            settings = settings._replace(inflation=settings.inflation * scale)
        return loglike(self.fm, theta_fm, obs, fixed, settings, data)

    def log_density(self, theta, obs, fixed: Mapping | None = None, data=None):
        """ln P(θ) + ln L(O | θ) in physical coordinates (traceable)."""
        return self.log_prior(theta, fixed) + self.log_likelihood(theta, obs, fixed, data)

    def log_density_unconstrained(self, z, obs, fixed: Mapping | None = None, data=None):
        """The density HMC samples: that of z = ``space.to_unconstrained(θ)``, Jacobian included;
        −inf wherever it is not finite (traceable)."""
        import jax.numpy as jnp

        theta = self.space.from_unconstrained(z)
        value = self.log_density(theta, obs, fixed, data) + self.space.log_abs_det_jacobian(z)
        return jnp.where(jnp.isfinite(value), value, -jnp.inf)

    # ------------------------------------------------------------------------- NumPyro
    def numpyro_model(self, obs, fixed: Mapping | None = None, data=None):
        """A NumPyro model of one spectrum: one sample site per free parameter, named after it.

        Each site has the box as its support (NumPyro maps it to the real line with the same
        logistic / log maps as :meth:`~jaxpayne.forward.ParameterSpace.to_unconstrained`); the
        prior and the likelihood enter as the factors ``"prior"`` and ``"loglike"``. Use it with
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

        return model

    def describe(self) -> dict:
        """JSON-serialisable description (recorded in output files)."""
        return {"prior": self.prior.describe(), "prior_name": self.prior.name,
                "noise_scale": self.noise_scale, "parameters": list(self.space.free_names)}


def _support(lo: float, hi: float):
    from numpyro.distributions import constraints

    if np.isfinite(lo) and np.isfinite(hi):
        return constraints.interval(float(lo), float(hi))
    if np.isfinite(lo):
        return constraints.greater_than(float(lo))
    if np.isfinite(hi):
        return constraints.less_than(float(hi))
    return constraints.real
