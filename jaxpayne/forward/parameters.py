"""The parameter space of a forward model: names, units, bounds, which are free, and bijections.

One :class:`ParameterSpace` serves every consumer of the likelihood — the Levenberg–Marquardt
fitter, the NumPyro sampler and the Cramér–Rao bounds — so that all agree on the order of the flat
vector, the box and how fixed parameters are filled in:

* a *named* pytree ``{"teff": ..., "rv": ...}`` (what users, priors and tables speak) and the
  *flat* vector of free parameters (what optimisers speak) map onto each other with
  :meth:`ParameterSpace.flatten` / :meth:`ParameterSpace.unflatten`, both traceable;
* fixed parameters are *data*: :attr:`ParameterSpace.fixed` holds their defaults, and every call
  may override them (``unflatten(theta, fixed={"rv": rv_of_this_star})``) with traced values, so a
  per-star catalogue rv or per-fibre resolution vmaps like any other input;
* :meth:`ParameterSpace.to_unit` maps the box onto [0, 1] (the fitter's well-scaled working
  coordinates), :meth:`ParameterSpace.to_unconstrained` onto the real line (a logistic map for a
  finite box, a shifted log for a half line, the identity for an unbounded parameter), with
  :meth:`ParameterSpace.log_abs_det_jacobian` for densities (NumPyro, HMC).

All values are in physical units: labels in the emulator's units, velocities in km/s, R
dimensionless, continuum coefficients in flux units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ParameterSpace"]


def _bound_kinds(lo, hi):
    """Masks (box, lower bound only, upper bound only) and finite stand-ins for the bounds."""
    finite_lo, finite_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    return (finite_lo & finite_hi, finite_lo & ~finite_hi, finite_hi & ~finite_lo,
            jnp.where(finite_lo, lo, 0.0), jnp.where(finite_hi, hi, 1.0))


@dataclass(frozen=True, eq=False)
class ParameterSpace:
    """Names, units, bounds, start values and the free/fixed split of a model's parameters.

    A frozen description (numpy metadata, never traced); hashing is by identity, so it can be
    static data of a jitted function.

    Args:
        names: every parameter, in the order of the model (labels, then rv, vsini, vmacro, R,
            continuum coefficients).
        units: unit of each parameter (``"K"``, ``"dex"``, ``"km/s"``, ``""`` ...).
        lower: (n,) lower bounds (``-inf`` allowed).
        upper: (n,) upper bounds (``inf`` allowed).
        initial: (n,) start values inside the bounds.
        fixed: name → default value of the parameters held fixed (left out of the flat vector).

    Example:
        >>> space = fm.space
        >>> theta = space.flatten({"teff": 5000.0, "logg": 4.5, "feh": 0.0, "rv": 10.0})
        >>> values = space.unflatten(theta, fixed={"vsini": 3.0})   # every parameter by name
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    initial: np.ndarray
    fixed: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "units", tuple(str(u) for u in self.units))
        for key in ("lower", "upper", "initial"):
            value = np.array(getattr(self, key), dtype=np.float64).reshape(-1)
            value.setflags(write=False)
            object.__setattr__(self, key, value)
        n = len(names)
        if len(set(names)) != n:
            raise ValueError(f"parameter names must be unique, got {names}")
        if not (len(self.units) == self.lower.size == self.upper.size == self.initial.size == n):
            raise ValueError("names, units, lower, upper and initial must have equal lengths")
        if np.any(~(self.upper >= self.lower)):
            raise ValueError("every upper bound must be ≥ its lower bound")
        fixed = {str(k): float(v) for k, v in dict(self.fixed).items()}
        unknown = sorted(set(fixed) - set(names))
        if unknown:
            raise ValueError(f"unknown fixed parameter(s) {unknown}; known: {list(names)}")
        object.__setattr__(self, "fixed", fixed)
        free = tuple(i for i, name in enumerate(names) if name not in fixed)
        object.__setattr__(self, "_free", free)
        object.__setattr__(self, "_position", {names[i]: j for j, i in enumerate(free)})

    # ------------------------------------------------------------------------- description
    @property
    def free_names(self) -> tuple[str, ...]:
        """Names of the free parameters, in the order of the flat vector."""
        return tuple(self.names[i] for i in self._free)

    @property
    def n_free(self) -> int:
        """Number of free parameters (length of the flat vector)."""
        return len(self._free)

    def _free_array(self, values: np.ndarray) -> np.ndarray:
        out = values[list(self._free)] if self._free else np.zeros(0)
        out.setflags(write=False)
        return out

    @property
    def free_lower(self) -> np.ndarray:
        """(n_free,) lower bounds of the free parameters."""
        return self._free_array(self.lower)

    @property
    def free_upper(self) -> np.ndarray:
        """(n_free,) upper bounds of the free parameters."""
        return self._free_array(self.upper)

    @property
    def free_initial(self) -> np.ndarray:
        """(n_free,) start values of the free parameters."""
        return self._free_array(self.initial)

    @property
    def free_units(self) -> tuple[str, ...]:
        """Units of the free parameters."""
        return tuple(self.units[i] for i in self._free)

    def index(self, name: str) -> int:
        """Position of a free parameter in the flat vector.

        Raises:
            KeyError: for an unknown or fixed name.
        """
        if name not in self._position:
            raise KeyError(f"{name!r} is not a free parameter; free: {list(self.free_names)}")
        return self._position[name]

    def bounds_of(self, name: str) -> tuple[float, float]:
        """(lower, upper) bounds of a parameter, free or fixed."""
        i = self.names.index(name)
        return float(self.lower[i]), float(self.upper[i])

    def replace(self, *, fixed: Mapping[str, float] | None = None,
                bounds: Mapping[str, tuple[float, float]] | None = None) -> "ParameterSpace":
        """A copy with other fixed parameters and/or bounds.

        Args:
            fixed: the new name → value map of fixed parameters (replaces the old one).
            bounds: name → (lower, upper) to change; start values are clipped into them.
        """
        lower, upper = self.lower.copy(), self.upper.copy()
        for name, (lo, hi) in (bounds or {}).items():
            i = self.names.index(name)
            lower[i], upper[i] = float(lo), float(hi)
        initial = np.clip(self.initial, lower, upper)
        return ParameterSpace(self.names, self.units, lower, upper, initial,
                              self.fixed if fixed is None else fixed)

    # ------------------------------------------------------------------------- named ↔ flat
    def pack(self, values: Mapping[str, float] | None = None) -> np.ndarray:
        """Flat float64 numpy vector from named values; missing free parameters take their start.

        Raises:
            ValueError: for unknown or fixed names.
        """
        theta = self.free_initial.copy()
        for name, value in (values or {}).items():
            if name not in self._position:
                raise ValueError(f"{name!r} is not a free parameter; free: {list(self.free_names)}")
            theta[self._position[name]] = float(value)
        return theta

    def flatten(self, values: Mapping[str, jax.Array]) -> jax.Array:
        """Flat vector (n_free,) of the free parameters from a named pytree (traceable).

        Names of fixed parameters are ignored; every free name must be present.

        Raises:
            KeyError: for a missing free parameter.
        """
        missing = [n for n in self.free_names if n not in values]
        if missing:
            raise KeyError(f"missing free parameter(s) {missing}")
        if not self._free:
            return jnp.zeros((0,))
        return jnp.stack([jnp.asarray(values[n]) for n in self.free_names], axis=-1)

    def unflatten(self, theta, fixed: Mapping[str, jax.Array] | None = None,
                  dtype=None) -> dict[str, jax.Array]:
        """Every parameter by name from the flat vector and the fixed values (traceable).

        Args:
            theta: (..., n_free) free parameters.
            fixed: values overriding :attr:`fixed` (traced values allowed: per star, vmapped).
                Only names of fixed parameters are accepted.
            dtype: dtype of the values; default that of ``theta``.

        Returns:
            dict name → array of shape ``theta.shape[:-1]``.

        Raises:
            ValueError: for a ``theta`` of the wrong length, or an override of a free parameter.
        """
        theta = jnp.asarray(theta)
        if theta.shape[-1:] != (self.n_free,):
            raise ValueError(
                f"theta must have shape (..., {self.n_free}) for parameters "
                f"{list(self.free_names)}, got {theta.shape}"
            )
        dtype = dtype or (theta.dtype if jnp.issubdtype(theta.dtype, jnp.floating) else jnp.float32)
        overrides = dict(fixed or {})
        wrong = sorted(set(overrides) - set(self.fixed))
        if wrong:
            raise ValueError(
                f"only fixed parameters can be given as data, got {wrong}; fixed: {sorted(self.fixed)}"
            )
        shape = theta.shape[:-1]
        values = {}
        for name in self.names:
            if name in self._position:
                values[name] = theta[..., self._position[name]].astype(dtype)
            else:
                value = overrides.get(name, self.fixed[name])
                values[name] = jnp.broadcast_to(jnp.asarray(value, dtype), shape)
        return values

    # ------------------------------------------------------------------------- bijections
    def _free_bounds(self, like):
        dtype = jnp.asarray(like).dtype
        return jnp.asarray(self.free_lower, dtype), jnp.asarray(self.free_upper, dtype)

    def to_unit(self, theta):
        """Free parameters → working coordinates: [lower, upper] ↦ [0, 1] where both bounds are
        finite, the identity elsewhere (traceable)."""
        theta = jnp.asarray(theta)
        offset, scale = self.unit_offset_scale()
        return (theta - jnp.asarray(offset, theta.dtype)) / jnp.asarray(scale, theta.dtype)

    def from_unit(self, u):
        """Inverse of :meth:`to_unit` (traceable)."""
        u = jnp.asarray(u)
        offset, scale = self.unit_offset_scale()
        return u * jnp.asarray(scale, u.dtype) + jnp.asarray(offset, u.dtype)

    def unit_offset_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """(offset, scale) float64 numpy vectors with θ = offset + scale · u (see :meth:`to_unit`)."""
        lo, hi = self.free_lower, self.free_upper
        finite = np.isfinite(lo) & np.isfinite(hi) & (hi > lo)
        return np.where(finite, lo, 0.0), np.where(finite, hi - lo, 1.0)

    def unit_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Bounds of the working coordinates ((0, 1) or ±inf), float64 numpy."""
        lo, hi = self.free_lower, self.free_upper
        finite = np.isfinite(lo) & np.isfinite(hi) & (hi > lo)
        return np.where(finite, 0.0, lo), np.where(finite, 1.0, hi)

    def to_unconstrained(self, theta):
        """Free parameters → the real line (traceable).

        Finite box: z = logit((θ − a)/(b − a)); half line [a, ∞): z = ln(θ − a); (−∞, b]:
        z = −ln(b − θ); unbounded: z = θ.
        """
        theta = jnp.asarray(theta)
        lo, hi = self._free_bounds(theta)
        both, lo_only, hi_only, safe_lo, safe_hi = _bound_kinds(lo, hi)
        # Every branch gets an argument inside its own domain (the "double where"), so the
        # branches jnp.where discards cannot put inf·0 = NaN into the gradient.
        span = jnp.where(both, safe_hi - safe_lo, 1.0)
        unit = (jnp.where(both, theta, safe_lo + 0.5 * span) - safe_lo) / span
        above = jnp.where(lo_only, theta, safe_lo + 1.0) - safe_lo
        below = safe_hi - jnp.where(hi_only, theta, safe_hi - 1.0)
        return jnp.where(
            both, jnp.log(unit) - jnp.log1p(-unit),
            jnp.where(lo_only, jnp.log(above), jnp.where(hi_only, -jnp.log(below), theta)),
        )

    def from_unconstrained(self, z):
        """Inverse of :meth:`to_unconstrained` (traceable)."""
        z = jnp.asarray(z)
        lo, hi = self._free_bounds(z)
        both, lo_only, hi_only, safe_lo, safe_hi = _bound_kinds(lo, hi)
        # Double where: exp(±z) of a discarded branch overflows for |z| ≳ 88 (float32) and its
        # inf·0 would make the gradient NaN.
        return jnp.where(
            both, safe_lo + (safe_hi - safe_lo) * jax.nn.sigmoid(z),
            jnp.where(lo_only, safe_lo + jnp.exp(jnp.where(lo_only, z, 0.0)),
                      jnp.where(hi_only, safe_hi - jnp.exp(-jnp.where(hi_only, z, 0.0)), z)),
        )

    def log_abs_det_jacobian(self, z):
        """ln|dθ/dz| of :meth:`from_unconstrained`, summed over the last axis (traceable)."""
        z = jnp.asarray(z)
        lo, hi = self._free_bounds(z)
        both, lo_only, hi_only, safe_lo, safe_hi = _bound_kinds(lo, hi)
        span = jnp.where(both, safe_hi - safe_lo, 1.0)
        terms = jnp.where(
            both, jnp.log(span) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z),
            jnp.where(lo_only, z, jnp.where(hi_only, -z, 0.0)),
        )
        return jnp.sum(terms, axis=-1)

    def contains(self, values: Mapping[str, float], tolerance: float = 0.0) -> dict[str, bool]:
        """Whether each given (concrete) value lies inside its bounds, widened by ``tolerance``
        times the range."""
        out = {}
        for name, value in values.items():
            lo, hi = self.bounds_of(name)
            pad = tolerance * (hi - lo) if np.isfinite(hi - lo) else 0.0
            v = np.asarray(value, dtype=np.float64)
            out[name] = bool(np.all((v >= lo - pad) & (v <= hi + pad)))
        return out

    def describe(self) -> str:
        """One line per parameter: name, unit, bounds, start or fixed value."""
        lines = []
        for i, name in enumerate(self.names):
            unit = f" [{self.units[i]}]" if self.units[i] else ""
            state = (f"fixed = {self.fixed[name]:g}" if name in self.fixed
                     else f"start {self.initial[i]:g}")
            lines.append(f"{name}{unit}: [{self.lower[i]:g}, {self.upper[i]:g}], {state}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"ParameterSpace(free={list(self.free_names)}, "
                f"fixed={ {k: v for k, v in self.fixed.items()} })")


