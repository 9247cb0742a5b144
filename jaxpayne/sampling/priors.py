"""Priors on a forward model's parameters: a research tool, swapped in one line.

A :class:`Prior` is two things that add up to ln P(θ):

* ``distributions``: name → a NumPyro distribution, one per parameter (any that has
  ``log_prob``; e.g. ``dist.Normal(4.4, 0.05)`` for a seismic logg);
* ``log_density``: a callable ``f(values) -> ln p`` of the *named* parameters (a dict of arrays),
  for joint priors — an [α/Fe]–[Fe/H] relation, a population prior, a logg from a parallax.

Every parameter without a distribution is uniform over the model's box (its training range for
labels, the forward model's bounds for rv, vsini ...). The box always applies: the sampler works
in the unconstrained coordinates of :meth:`~jaxpayne.forward.ParameterSpace.to_unconstrained`, so a
distribution that reaches beyond the box is truncated to it. Normalising constants of the
truncation are left out (they change no posterior).

Example:
    >>> import numpyro.distributions as dist
    >>> prior = Prior({"logg": dist.Normal(2.45, 0.02)},
    ...               log_density=lambda v: -0.5 * ((v["mg_fe"] - 0.3 * v["feh"]) / 0.1) ** 2)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

__all__ = ["Prior", "as_prior", "load_prior"]


class Prior:
    """Independent per-parameter distributions plus an optional joint log-density.

    Args:
        distributions: parameter name → NumPyro distribution (scalar ``batch_shape``).
        log_density: optional ``f(values: dict[str, Array]) -> scalar`` added to ln P; it sees
            every parameter by name (free and fixed) and must be traceable by JAX.
        name: a label for tables and file headers (default: built from the contents).

    Hashing is by identity, so a prior can be static data of a compiled function.
    """

    def __init__(self, distributions: Mapping[str, Any] | None = None,
                 log_density: Callable[[Mapping[str, Any]], Any] | None = None, name: str | None = None):
        self.distributions = dict(distributions or {})
        for key, value in self.distributions.items():
            if not hasattr(value, "log_prob"):
                raise TypeError(f"prior for {key!r} must be a NumPyro distribution, got {type(value).__name__}")
        if log_density is not None and not callable(log_density):
            raise TypeError("log_density must be a callable of the named parameters")
        self.log_density = log_density
        self.name = name or self._default_name()

    def _default_name(self) -> str:
        parts = [f"{k}~{type(d).__name__}" for k, d in self.distributions.items()]
        if self.log_density is not None:
            parts.append(f"joint:{getattr(self.log_density, '__name__', 'callable')}")
        return ",".join(parts) or "uniform"

    @property
    def is_uniform(self) -> bool:
        """Whether this is the default: uniform over the box."""
        return not self.distributions and self.log_density is None

    def check(self, space) -> None:
        """Raise ValueError for distributions of unknown or fixed parameters of ``space``."""
        unknown = sorted(set(self.distributions) - set(space.free_names))
        if unknown:
            fixed = [n for n in unknown if n in space.fixed]
            what = f"fixed parameter(s) {fixed}" if fixed else f"unknown parameter(s) {unknown}"
            raise ValueError(f"prior for {what}; free parameters: {list(space.free_names)}")

    def log_prob(self, values: Mapping[str, Any]):
        """ln P of named parameter values (traceable; constants of the box left out)."""
        import jax.numpy as jnp

        total = jnp.zeros(())
        for key, distribution in self.distributions.items():
            total = total + jnp.sum(distribution.log_prob(values[key]))
        if self.log_density is not None:
            total = total + jnp.asarray(self.log_density(values))
        dtype = next(iter(values.values())).dtype if values else total.dtype
        return total.astype(dtype)

    def sample(self, key, space, n: int) -> np.ndarray:
        """(n, n_free) independent draws of the free parameters, truncated to the box.

        Parameters without a distribution are drawn uniformly over their (finite) bounds; those
        with one by rejection inside the box.

        Raises:
            ValueError: for a joint ``log_density`` (no independent draws), or an infinite
                bound of a uniform parameter.
        """
        import jax

        if self.log_density is not None:
            raise ValueError("a prior with a joint log_density cannot be sampled directly")
        self.check(space)
        lower, upper = space.free_lower, space.free_upper
        out = np.empty((n, space.n_free))
        keys = jax.random.split(key, space.n_free)
        for j, name in enumerate(space.free_names):
            lo, hi = lower[j], upper[j]
            distribution = self.distributions.get(name)
            if distribution is None:
                if not (np.isfinite(lo) and np.isfinite(hi)):
                    raise ValueError(f"{name}: a uniform prior needs finite bounds, got [{lo}, {hi}]")
                out[:, j] = np.asarray(jax.random.uniform(keys[j], (n,), minval=lo, maxval=hi))
                continue
            kept, draw_key = np.empty(0), keys[j]
            for _ in range(100):
                draw_key, sub = jax.random.split(draw_key)
                draws = np.asarray(distribution.sample(sub, (4 * n,)), np.float64)
                kept = np.concatenate([kept, draws[(draws >= lo) & (draws <= hi)]])
                if kept.size >= n:
                    break
            if kept.size < n:
                raise ValueError(f"{name}: the prior puts almost no mass inside the box [{lo:g}, {hi:g}]")
            out[:, j] = kept[:n]
        return out

    def describe(self) -> str:
        """One line: the distributions and the joint term."""
        if self.is_uniform:
            return "uniform over the box"
        parts = [f"{k} ~ {_describe_distribution(d)}" for k, d in self.distributions.items()]
        if self.log_density is not None:
            parts.append(f"joint log-density {getattr(self.log_density, '__name__', 'callable')}")
        return "; ".join(parts) + "; others uniform over the box"

    def __repr__(self) -> str:
        return f"Prior({self.describe()})"


def _describe_distribution(distribution) -> str:
    args = []
    for name in getattr(distribution, "arg_constraints", {}):
        value = getattr(distribution, name, None)
        if value is not None and np.size(value) == 1:
            args.append(f"{name}={float(np.asarray(value)):g}")
    return f"{type(distribution).__name__}({', '.join(args)})"


def as_prior(prior) -> Prior:
    """A :class:`Prior` from None (uniform), a Prior, a dict of distributions, or a callable
    (a joint log-density)."""
    if prior is None:
        return Prior()
    if isinstance(prior, Prior):
        return prior
    if isinstance(prior, Mapping):
        return Prior(prior)
    if callable(prior):
        return Prior(log_density=prior)
    raise TypeError(f"cannot make a prior from {type(prior).__name__}; give a Prior, a dict of "
                    "NumPyro distributions or a callable log-density")


def load_prior(spec: str) -> Prior:
    """The prior named by ``FILE.py:NAME`` (the CLI's ``--prior``).

    ``NAME`` in the file may be a :class:`Prior`, a dict name → NumPyro distribution, a joint
    log-density ``f(values) -> ln p``, or a function of no arguments returning one of those.

    Raises:
        ValueError: one line naming the file and the problem.
    """
    path_text, sep, name = str(spec).rpartition(":")
    if not sep or not path_text or not name:
        raise ValueError(f"--prior expects FILE.py:NAME, got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"{path}: prior file not found")
    module_spec = importlib.util.spec_from_file_location(f"jaxpayne_prior_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - a user's file: report, one line
        raise ValueError(f"{path}: cannot load the prior ({type(err).__name__}: {err})") from None
    if not hasattr(module, name):
        raise ValueError(f"{path}: defines no {name!r}")
    value = getattr(module, name)
    if callable(value) and not isinstance(value, Prior):
        import inspect

        try:
            n_args = len(inspect.signature(value).parameters)
        except (TypeError, ValueError):
            n_args = 1
        if n_args == 0:
            value = value()
    try:
        prior = as_prior(value)
    except TypeError as err:
        raise ValueError(f"{path}:{name}: {err}") from None
    prior.name = f"{path.name}:{name}"
    return prior
