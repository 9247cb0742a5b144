"""Levenberg–Marquardt from several starts on any model, and the batch result it makes.

The fitters of composite (:class:`~jaxpayne.fitting.binary.BinaryFitter`) and multi-visit
(:class:`~jaxpayne.fitting.visits.VisitFitter`) models share two steps, both compositions of
public pieces:

* :func:`multistart_lm` (traceable, vmap over spectra): keep the pixels the model covers at every
  velocity of a window, run :func:`~jaxpayne.fitting.levenberg_marquardt` on
  :func:`~jaxpayne.forward.residuals` from each start for a few iterations, and refine the best
  to convergence;
* :func:`batch_result` (host side): the Laplace covariance
  (:func:`~jaxpayne.fitting.fitter.invert_fisher`), degrees of freedom and the shared
  :func:`~jaxpayne.fitting.fitter.quality_flags` → a :class:`~jaxpayne.fitting.BatchFit`.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np

from jaxpayne.fitting.fitter import (
    MIN_PIXELS_PER_PARAMETER,
    BatchFit,
    Flags,
    invert_fisher,
    marginal_terms,
    quality_flags,
)
from jaxpayne.fitting.lm import LMOptions, levenberg_marquardt

__all__ = ["EXPLORE_ITERATIONS", "MultistartFit", "batch_result", "multistart_lm", "restrict_pixels", "window_bounds"]

#: Levenberg–Marquardt iterations from each start before the best is refined.
EXPLORE_ITERATIONS = 6


class MultistartFit(NamedTuple):
    """One spectrum's fit (arrays; a leading batch axis under vmap).

    Attributes:
        theta: (n,) best fit, physical units.
        jacobian: (n_pixels, n) Jacobian of the whitened residuals in unit-scaled coordinates.
        cost: χ² / inflation² at the best fit.
        n_pixels: pixels in the likelihood.
        n_marginal: continuum coefficients marginalised (count against the degrees of freedom).
        n_iter: iterations of all starts together.
        converged: whether the refinement converged.
        n_clipped: good pixels left out because the model does not cover them in the window.
    """

    theta: Any
    jacobian: Any
    cost: Any
    n_pixels: Any
    n_marginal: Any
    n_iter: Any
    converged: Any
    n_clipped: Any


def window_bounds(space, velocity_names, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, n) lower and upper bounds: the box of ``space``'s free parameters, with every
    velocity in ``velocity_names`` confined to its spectrum's (B, 2) window [km/s]."""
    batch = windows.shape[0]
    names = space.free_names
    lower = np.repeat(space.free_lower[None], batch, axis=0).astype(np.float64)
    upper = np.repeat(space.free_upper[None], batch, axis=0).astype(np.float64)
    for name in velocity_names:
        k = names.index(name)
        lower[:, k], upper[:, k] = windows[:, 0], windows[:, 1]
    return lower, upper


def restrict_pixels(model, obs, window):
    """The observation with only the pixels ``model`` covers at every velocity of ``window``
    (km/s, (2,)), its prepared data and the number of good pixels so dropped (traceable)."""
    import jax.numpy as jnp

    from jaxpayne.forward import prepare_data

    usable = model.usable_pixels(obs.wavelength, window[0], window[1])
    n_clipped = jnp.sum((obs.ivar > 0) & ~usable)
    obs = obs._replace(ivar=jnp.where(usable, obs.ivar, 0.0), flux=jnp.where(usable, obs.flux, 0.0))
    return obs, prepare_data(model, obs, obs.flux.dtype), n_clipped


def multistart_lm(model, obs, window, starts, lower, upper, *, settings, options: LMOptions,
                  offset, scale, explore_iterations: int = EXPLORE_ITERATIONS):
    """Fit one spectrum from several starts (traceable; vmap over spectra).

    Args:
        model: any model the likelihood takes (``space``, ``spectrum``, continuum).
        obs: the observation.
        window: (2,) velocities [km/s] every pixel must be modelled at.
        starts: (K, n) starts, physical units.
        lower, upper: (n,) bounds, physical units.
        settings: likelihood settings.
        options: optimiser settings of the refinement.
        offset, scale: (n,) the unit scaling θ = offset + scale·u the optimiser works in.
        explore_iterations: iterations from each start before the best is refined (static); 0:
            refine the start of lowest χ².

    Returns:
        (:class:`MultistartFit`, the restricted observation, its prepared data).
    """
    import jax
    import jax.numpy as jnp

    from jaxpayne.forward import residuals

    obs, data, n_clipped = restrict_pixels(model, obs, window)
    dtype = obs.flux.dtype
    offset, scale = jnp.asarray(offset, dtype), jnp.asarray(scale, dtype)

    def residuals_u(u):
        return residuals(model, u * scale + offset, obs, None, settings, data)

    lower = ((lower - offset) / scale).astype(dtype)
    upper = ((upper - offset) / scale).astype(dtype)
    u0 = ((starts - offset) / scale).astype(dtype)
    if explore_iterations > 0:
        explore = options._replace(max_iter=explore_iterations)
        runs = jax.vmap(lambda u: levenberg_marquardt(residuals_u, u, lower, upper, explore))(u0)
        cost, x, n_explore = runs.cost, runs.x, jnp.sum(runs.n_iter)
    else:  # the best start by its χ² alone: one optimiser in the compiled program, not two
        x = jnp.clip(u0, lower, upper)
        cost = jax.vmap(lambda u: jnp.sum(residuals_u(u) ** 2))(x)
        n_explore = jnp.zeros((), jnp.int32)
    best = jnp.argmin(jnp.where(jnp.isfinite(cost), cost, jnp.inf))
    final = levenberg_marquardt(residuals_u, x[best], lower, upper, options)
    fit = MultistartFit(final.x * scale + offset, final.jacobian, final.cost, jnp.sum(data.used),
                        marginal_terms(model, data), final.n_iter + n_explore, final.converged, n_clipped)
    return fit, obs, data


def batch_result(space, label_names, fit: MultistartFit, scale, inflation: float,
                 rv_windows: Mapping[str, np.ndarray] | None = None, failed=None, extra=None) -> BatchFit:
    """A :class:`~jaxpayne.fitting.BatchFit` from a batch of :class:`MultistartFit` (host side).

    Args:
        space: the model's parameter space.
        label_names: emulator-label parameters (AT_BOUND).
        fit: the batched fits (numpy or jax arrays with a leading batch axis).
        scale: (n,) the unit scaling of the Jacobian's columns.
        inflation: the likelihood's uncertainty factor s (χ² = cost · s²).
        rv_windows: velocity parameter → (B, 2) window (RV_AT_LIMIT).
        failed: (B,) bool, spectra whose earlier steps failed (flagged FAILED, NaN results).
        extra: the ``extra`` columns.
    """
    theta = np.asarray(fit.theta, np.float64)
    jac = np.asarray(fit.jacobian, np.float64)
    n_pix = np.asarray(fit.n_pixels).astype(np.int64)
    fisher = np.einsum("bpi,bpj->bij", jac, jac)
    cov, singular = invert_fisher(fisher, scale, working=True)
    n_par = space.n_free
    dof = n_pix - n_par - np.asarray(fit.n_marginal).astype(np.int64)
    chi2 = np.asarray(fit.cost, np.float64) * inflation**2
    flags, converged = quality_flags(space, label_names, theta, chi2, dof, np.asarray(fit.converged), singular,
                                     rv_windows)
    failed = np.zeros(theta.shape[0], bool) if failed is None else np.asarray(failed, bool)
    flags |= np.where(failed, int(Flags.FAILED), 0)
    few = n_pix < MIN_PIXELS_PER_PARAMETER * n_par
    flags = np.where(few, int(Flags.FEW_PIXELS), flags)
    bad = few | failed
    theta[bad] = np.nan
    cov[bad] = np.nan
    chi2[bad] = np.nan
    return BatchFit(theta, cov, chi2, n_pix, dof, np.asarray(fit.n_iter).astype(np.int64), converged & ~bad,
                    flags, np.asarray(fit.n_clipped).astype(np.int64), {}, extra)
