"""What the models built on a :class:`~jaxpayne.forward.ForwardModel` share (private).

A :class:`~jaxpayne.forward.CompositeModel` (N stars in one spectrum) and a
:class:`~jaxpayne.forward.MultiVisitModel` (one system seen at several epochs) wrap a single-star
model and offer what the likelihood uses of one: a :class:`~jaxpayne.forward.ParameterSpace`
(``space``) and ``spectrum(values, obs)``. This module holds their common parts: the pytree
protocol (the wrapped models' weights are the leaves, everything else static and equal by
identity, so copies with other weights reuse compiled functions), the free-parameter
conveniences and the compiled likelihood calls.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxpayne.forward import likelihood as _likelihood
from jaxpayne.forward.likelihood import DEFAULT_SETTINGS, LikelihoodSettings
from jaxpayne.forward.observation import Observation

__all__ = ["Static", "WrappedModel"]


class Static:
    """The static part of a model pytree (auxiliary data; equal by identity)."""

    def __init__(self, attributes: dict):
        self.attributes = attributes


def flatten(model, leaves: tuple[str, ...]):
    """(children, static) of a model whose attributes ``leaves`` are its pytree children."""
    static = model.__dict__.get("_static")
    if static is None:
        static = Static({k: v for k, v in model.__dict__.items() if k not in leaves})
        model.__dict__["_static"] = static
    return tuple(model.__dict__[k] for k in leaves), static


def unflatten(cls, leaves: tuple[str, ...], static: Static, children):
    """The model of class ``cls`` from :func:`flatten`'s output."""
    new = object.__new__(cls)
    new.__dict__.update(static.attributes)
    new.__dict__["_static"] = static
    new.__dict__.update(zip(leaves, children))
    return new


def theta_vector(model, theta) -> jax.Array:
    """A checked (n_free,) parameter vector from a vector or a dict of named values."""
    if isinstance(theta, Mapping):
        theta = model.space.flatten(theta)
    theta = jnp.asarray(theta)
    if jnp.shape(theta) != (model.space.n_free,):
        raise ValueError(f"theta must have shape ({model.space.n_free},) for parameters "
                         f"{model.space.free_names}, got {jnp.shape(theta)}")
    return theta


def is_concrete(*arrays) -> bool:
    """Whether every array is a concrete value (not a tracer under jit/vmap/grad)."""
    try:
        for a in arrays:
            if a is not None:
                np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    return True


class WrappedModel:
    """Mixin of the models that wrap a single-star forward model (``self.base``).

    Subclasses set ``_LEAVES`` (attribute names of their pytree children), ``space`` and
    ``spectrum(values, obs, emulator_error=...)``; register them with
    :func:`jax.tree_util.register_pytree_node_class`.
    """

    _LEAVES: tuple[str, ...] = ("base",)
    #: Check a concrete observation against the base model's range before the compiled calls
    #: (one observation at the free velocities; a stitched multi-visit observation is not).
    _RANGE_CHECK: bool = False

    # ------------------------------------------------------------------ pytree
    def tree_flatten(self):
        return flatten(self, self._LEAVES)

    @classmethod
    def tree_unflatten(cls, static, children):
        return unflatten(cls, cls._LEAVES, static, children)

    # ------------------------------------------------------------------ free parameters
    @property
    def param_names(self) -> tuple[str, ...]:
        return self.space.free_names

    @property
    def n_params(self) -> int:
        return self.space.n_free

    @property
    def fixed(self) -> dict:
        return dict(self.space.fixed)

    @property
    def lower(self):
        return self.space.free_lower

    @property
    def upper(self):
        return self.space.free_upper

    @property
    def initial(self):
        return self.space.free_initial

    def pack(self, values=None):
        return self.space.pack(values)

    def uses_emulator_error(self, settings: LikelihoodSettings) -> bool:
        return self.base.uses_emulator_error(settings)

    def dtype_of(self, theta, obs):
        return self.base.dtype_of(theta, obs)

    # ------------------------------------------------------------------ eager checks
    def _checked_theta(self, theta, obs: Observation) -> jax.Array:
        """``theta`` as a checked vector (:func:`theta_vector`), after the eager range check of a
        concrete observation (``_RANGE_CHECK`` models): every unmasked pixel must be modelled by
        the base model at each free velocity of a concrete ``theta`` (all of them, from the
        lowest to the highest), else a one-line ValueError."""
        theta = theta_vector(self, theta)
        if not self._RANGE_CHECK or not is_concrete(obs.wavelength, obs.ivar, theta):
            return theta
        names = [n for n in getattr(self, "velocity_names", ()) if n in self.param_names]
        if names:
            rv = np.asarray(theta, np.float64)[[self.space.index(n) for n in names]]
            self.base.check_observation(obs, (float(rv.min()), float(rv.max())))
        return theta

    # ------------------------------------------------------------------ compiled conveniences
    def model_flux(self, theta, obs: Observation, fixed=None):
        """The model spectrum (n,) on the observed pixels at free parameters ``theta`` (a flat
        vector or a dict), before the continuum step (compiled)."""
        theta = self._checked_theta(theta, obs)
        return _jit_model_flux(self, theta, obs, fixed)

    def loglike(self, theta, obs: Observation, fixed=None, settings: LikelihoodSettings | None = None):
        """:func:`~jaxpayne.forward.loglike` of this model (compiled)."""
        theta = self._checked_theta(theta, obs)
        return _jit_loglike(self, theta, obs, fixed, settings or DEFAULT_SETTINGS)

    def normalized(self, theta, obs: Observation, fixed=None, settings: LikelihoodSettings | None = None):
        """(model_norm, data_norm, ivar_norm) after the continuum step (compiled); see
        :func:`~jaxpayne.forward.normalize`."""
        theta = self._checked_theta(theta, obs)
        out = _jit_normalize(self, theta, obs, fixed, settings or DEFAULT_SETTINGS)
        return out.model, out.data, out.ivar

    def jacobian(self, theta, obs: Observation, fixed=None, settings: LikelihoodSettings | None = None):
        """:func:`~jaxpayne.forward.jacobian` of this model's whitened residuals (compiled)."""
        theta = self._checked_theta(theta, obs)
        return _jit_jacobian(self, theta, obs, fixed, settings or DEFAULT_SETTINGS)


def _model_flux_impl(model, theta, obs, fixed):
    values = model.space.unflatten(theta, fixed, dtype=model.dtype_of(theta, obs))
    return model.spectrum(values, obs).flux


_jit_model_flux = jax.jit(_model_flux_impl)
_jit_loglike = jax.jit(_likelihood.loglike, static_argnums=(4,))
_jit_normalize = jax.jit(_likelihood.normalize, static_argnums=(4,))
_jit_jacobian = jax.jit(_likelihood.jacobian, static_argnums=(4,))
