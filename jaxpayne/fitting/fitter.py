"""Batched, jit-compiled fitting of spectra: template pre-search (rv and start), Levenberg–Marquardt,
Laplace covariances and quality flags.

The physics is one spectrum's; :class:`Fitter` vmaps it over a batch of padded
:class:`~jaxpayne.forward.Observation` arrays so one compiled call fits many spectra.
"""

from __future__ import annotations

import enum
from typing import Any, Mapping, NamedTuple

import numpy as np

from jaxpayne.fitting.lm import LMOptions, levenberg_marquardt
from jaxpayne.fitting.presearch import build_library, library_size, presearch

__all__ = ["Flags", "Fitter", "BatchFit"]

#: Reciprocal condition number below which a Fisher matrix counts as singular.
SINGULAR_RCOND = 1e-10
#: Reciprocal condition number (after Jacobi scaling) below which a Fisher matrix computed in
#: float32 is formed again in float64 from its Jacobian.
RECHECK_RCOND = 1e-4
#: Fraction of a parameter's range within which a best fit "sits on a bound".
BOUND_TOLERANCE = 1e-3
#: Levenberg–Marquardt iterations spent on each start before the best one is refined.
EXPLORE_ITERATIONS = 4
#: Default number of templates in the pre-search library.
DEFAULT_TEMPLATES = 128
#: Iterations of the batched first pass; unconverged spectra continue in a smaller batch.
FIRST_PASS_ITERATIONS = 4
#: Minimum number of usable pixels per free parameter for a fit to be attempted.
MIN_PIXELS_PER_PARAMETER = 3


class Flags(enum.IntFlag):
    """Quality bits of a fit (the ``flags`` column); 0 means none raised.

    ==============  =====  ============================================================
    name            value  meaning
    ==============  =====  ============================================================
    NOT_CONVERGED   1      the optimiser hit its iteration limit
    AT_BOUND        2      a label sits on its training-box bound (extrapolation needed)
    COV_SINGULAR    4      Fisher matrix singular/ill-conditioned; errors unreliable
    FEW_PIXELS      8      too few usable pixels; no fit (labels NaN)
    FAILED          16     spectrum could not be read or modelled (see ``message``)
    RV_AT_LIMIT     32     rv sits at ±max_rv: the pre-search range is too small
    PIXELS_CLIPPED  64     pixels outside the model's range were masked
    HIGH_CHI2       128    reduced χ² > 5: model inadequate or errors underestimated
    ==============  =====  ============================================================
    """

    NOT_CONVERGED = 1
    AT_BOUND = 2
    COV_SINGULAR = 4
    FEW_PIXELS = 8
    FAILED = 16
    RV_AT_LIMIT = 32
    PIXELS_CLIPPED = 64
    HIGH_CHI2 = 128


#: Reduced χ² above which HIGH_CHI2 is raised.
HIGH_CHI2_LIMIT = 5.0


class BatchFit(NamedTuple):
    """Results for a batch, numpy arrays with a leading batch axis.

    Attributes:
        theta: (B, n) best-fit free parameters, physical units.
        covariance: (B, n, n) Laplace covariance (inverse Fisher matrix).
        chi2: (B,) χ² at the best fit.
        n_pixels: (B,) usable pixels.
        dof: (B,) degrees of freedom (pixels − free parameters − marginalised continuum terms).
        n_iter: (B,) optimiser iterations (all starts together).
        converged: (B,) bool.
        flags: (B,) int :class:`Flags`.
    """

    theta: np.ndarray
    covariance: np.ndarray
    chi2: np.ndarray
    n_pixels: np.ndarray
    dof: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    flags: np.ndarray


class Fitter:
    """Fit emulator + forward model to many spectra at once.

    Args:
        model: a :class:`jaxpayne.Model` (or any emulator accepted by
            :class:`~jaxpayne.forward.ForwardModel`).
        rv: fit the radial velocity [km/s] (with a cross-correlation pre-search over ±``max_rv``);
            False fixes it at 0 (rest-frame spectra).
        vsini: fit rotational broadening [km/s].
        vmacro: fit radial–tangential macroturbulence [km/s].
        resolution: instrumental resolving power R (None: the emulator is already at the
            instrument's resolution).
        continuum: ``"filter[:WIDTH]"``, ``"cheb:N"``, ``"cheb:N:free"`` or ``"none"`` (see
            :class:`~jaxpayne.forward.ForwardModel`).
        n_segments: number of segments (chips/arms) of the observations.
        max_rv: bound of |rv| [km/s].
        templates: size of the pre-search library (the box centre and Sobol points of the label
            box; see :mod:`jaxpayne.fitting.presearch`), capped by its memory.
        restarts: number of optimiser starts, from the best-matching templates; each runs a few
            iterations and the best is refined to convergence.
        emulator_error: add the model file's per-pixel validation error in quadrature.
        inflation: factor on every uncertainty.
        fixed: parameter name → value held fixed.
        lm_options: optimiser settings.
        seed: seed of the Sobol starts.
        **forward_options: passed to :class:`~jaxpayne.forward.ForwardModel`.

    Example:
        >>> fitter = Fitter(model, rv=True, continuum="filter")
        >>> batch = pad_observations([fitter.forward.observation(w, f, e**-2) for w, f, e in ...])
        >>> result = fitter.fit(batch)
    """

    def __init__(
        self,
        model: Any,
        *,
        rv: bool = True,
        vsini: bool = False,
        vmacro: bool = False,
        resolution: float | None = None,
        continuum: str = "filter",
        n_segments: int = 1,
        max_rv: float = 300.0,
        templates: int = DEFAULT_TEMPLATES,
        restarts: int = 1,
        emulator_error: bool = True,
        inflation: float = 1.0,
        fixed: Mapping[str, float] | None = None,
        lm_options: LMOptions = LMOptions(),
        seed: int = 0,
        **forward_options,
    ):
        import jax

        from jaxpayne.forward import ForwardModel

        fixed = dict(fixed or {})
        if not rv:
            fixed.setdefault("rv", 0.0)
        names = {n.lower() for n in model.label_names}
        self.forward = ForwardModel(
            model,
            resolution=resolution,
            rotation=vsini and "vsini" not in names,
            macroturbulence=vmacro and "vmacro" not in names,
            continuum=continuum,
            n_segments=n_segments,
            max_rv=max_rv,
            fixed=fixed,
            **forward_options,
        )
        fm = self.forward
        if restarts < 1:
            raise ValueError("restarts must be >= 1")
        self.model = model
        self.emulator_error = bool(emulator_error and getattr(model, "emulator_error", None) is not None)
        self.inflation = float(inflation)
        if not self.inflation > 0:
            raise ValueError("inflation must be > 0")
        self.lm_options = lm_options
        self.param_names = fm.param_names
        self.n_labels = len(fm.label_names)
        lower, upper = fm.lower.copy(), fm.upper.copy()
        finite = np.isfinite(lower) & np.isfinite(upper)
        self._offset = np.where(finite, lower, 0.0)
        self._scale = np.where(finite, upper - lower, 1.0)
        self._u_lower = np.where(finite, 0.0, -np.inf)
        self._u_upper = np.where(finite, 1.0, np.inf)
        self._rv_index = fm.param_names.index("rv") if "rv" in fm.param_names else None
        n_nodes = fm.grid.n_pieces * fm.grid.fft_length
        self.n_templates = library_size(max(int(templates), restarts), n_nodes)
        self.restarts = min(int(restarts), self.n_templates)
        u_templates = self._template_points(self.n_templates, seed)
        self._library = build_library(fm, self.to_physical(u_templates), u_templates)
        self._fit_batch = jax.jit(jax.vmap(self._fit_one, in_axes=(0, None)))
        self._refine_batch = jax.jit(jax.vmap(self._refine_one))

    # --------------------------------------------------------------------------- starts
    def _template_points(self, n_templates: int, seed: int) -> np.ndarray:
        """(K, n) template parameters in working coordinates: the box centre, then scrambled Sobol
        points of the label box (forward-model parameters at their start values)."""
        fm = self.forward
        start = (fm.initial - self._offset) / self._scale
        points = np.repeat(start[None], n_templates, axis=0)
        label_cols = [i for i, n in enumerate(fm.param_names) if n in fm.label_names]
        if n_templates > 1 and label_cols:
            from scipy.stats import qmc

            sobol = qmc.Sobol(d=len(label_cols), scramble=True, seed=seed)
            draws = sobol.random(2 ** int(np.ceil(np.log2(n_templates))))[: n_templates - 1]
            points[1:, label_cols] = 0.02 + 0.96 * draws
        return points

    def to_physical(self, u):
        """Working coordinates → physical parameters."""
        return u * self._scale + self._offset

    # --------------------------------------------------------------------------- one spectrum
    def _problem(self, obs):
        """Residuals of one spectrum in working coordinates, and the box there.

        The data side of the likelihood (mask, continuum filter of the data) is computed here,
        once, not at every evaluation.
        """
        import jax.numpy as jnp

        dtype = obs.flux.dtype
        offset = jnp.asarray(self._offset, dtype)
        scale = jnp.asarray(self._scale, dtype)
        prepared = self.forward._prepare(obs, dtype)

        def residuals_u(u):
            return self.forward._residuals_impl(u * scale + offset, obs, self.emulator_error, self.inflation,
                                                prepared)

        return residuals_u, jnp.asarray(self._u_lower, dtype), jnp.asarray(self._u_upper, dtype), prepared

    def _fit_one(self, obs, library):
        import jax
        import jax.numpy as jnp

        residuals_u, lower, upper, prepared = self._problem(obs)
        k = self._rv_index

        def rv_to_u(rv):
            return (rv - self._offset[k]) / self._scale[k]

        starts, _ = presearch(self.forward, library, obs, fit_rv=k is not None, rv_index=k, rv_to_u=rv_to_u,
                              n_best=self.restarts, prepared=prepared)
        starts = starts.astype(obs.flux.dtype)
        if starts.shape[0] > 1:
            # explore: a few iterations from every start; then refine only the best to convergence
            explore = self.lm_options._replace(max_iter=EXPLORE_ITERATIONS)
            runs = jax.vmap(lambda u0: levenberg_marquardt(residuals_u, u0, lower, upper, explore))(starts)
            best = jnp.argmin(jnp.where(jnp.isfinite(runs.cost), runs.cost, jnp.inf))
            u_start, n_explore = runs.x[best], jnp.sum(runs.n_iter)
        else:
            u_start, n_explore = starts[0], 0
        first = self.lm_options._replace(max_iter=min(FIRST_PASS_ITERATIONS, self.lm_options.max_iter))
        final = levenberg_marquardt(residuals_u, u_start, lower, upper, first)
        return self._finish(obs, final, n_explore, prepared)

    def _refine_one(self, obs, u_start):
        """Continue Levenberg–Marquardt from ``u_start`` (a straggler of the first pass)."""
        residuals_u, lower, upper, prepared = self._problem(obs)
        remaining = self.lm_options._replace(max_iter=max(1, self.lm_options.max_iter - FIRST_PASS_ITERATIONS))
        final = levenberg_marquardt(residuals_u, u_start.astype(obs.flux.dtype), lower, upper, remaining)
        return self._finish(obs, final, 0, prepared)

    def _finish(self, obs, final, n_explore, prepared):
        import jax
        import jax.numpy as jnp

        fm = self.forward
        dtype = obs.flux.dtype
        scale = jnp.asarray(self._scale, dtype)
        theta = final.x * scale + jnp.asarray(self._offset, dtype)
        # the optimiser's Jacobian at the returned point, in the unit-scaled working coordinates
        jac = final.jacobian
        fisher = jnp.matmul(jac.T, jac, precision=jax.lax.Precision.HIGHEST)
        valid = fm._used(prepared)
        n_pixels = jnp.sum(valid)
        cont = fm.continuum
        if cont.kind == "cheb" and not cont.free:
            # marginalised continuum terms: columns of the design matrix that touch a used pixel
            from jaxpayne.forward import chebyshev_design

            design = chebyshev_design(obs.wavelength, obs.segment, obs.ivar, n_segments=fm.n_segments,
                                      degree=cont.degree)
            n_marginal = jnp.sum(jnp.any((design != 0) & valid[:, None], axis=0))
        else:
            n_marginal = jnp.zeros((), jnp.int32)
        # JᵀJ in the working precision; where it looks ill-conditioned the host forms it again in
        # float64 from the Jacobian (float32 rounding in the product can hide a singular direction)
        return theta, jac, fisher, final.cost, n_pixels, n_marginal, final.n_iter + n_explore, final.converged

    # --------------------------------------------------------------------------- batches
    def _refine_stragglers(self, observations, theta, jac, fisher, cost, n_pix, n_marginal, n_iter, converged):
        """Continue the spectra the first pass left unconverged, in a smaller batch.

        The numpy arrays are updated in place; the Jacobians (a device array) are returned.

        Under ``vmap`` a while-loop runs until its slowest member stops, so a batch costs as much as
        its worst spectrum. The first pass therefore stops at :data:`FIRST_PASS_ITERATIONS`; the few
        stragglers are gathered into a batch padded to a power of two (few compiled shapes).
        """
        import jax

        if self.lm_options.max_iter <= FIRST_PASS_ITERATIONS:
            return jac
        # a fit that failed at its start (non-finite cost) would fail again
        todo = np.flatnonzero(~converged.astype(bool) & np.isfinite(cost))
        if todo.size == 0:
            return jac
        size = 1 << int(np.ceil(np.log2(todo.size)))
        pick = np.concatenate([todo, np.full(size - todo.size, todo[0])])
        sub = jax.tree_util.tree_map(lambda a: a[pick], observations)
        u0 = (theta[pick] - self._offset) / self._scale
        refined = self._refine_batch(sub, u0)
        k = todo.size
        out = [np.asarray(a) for a in refined[:1] + refined[2:]]
        theta[todo], fisher[todo], cost[todo] = out[0][:k], out[1][:k], out[2][:k]
        n_pix[todo], n_marginal[todo] = out[3][:k], out[4][:k]
        n_iter[todo] += out[5][:k]
        converged[todo] = out[6][:k]
        return jac.at[todo].set(refined[1][:k])

    def fit(self, observations) -> BatchFit:
        """Fit a batch of observations (an :class:`~jaxpayne.forward.Observation` with a leading
        batch axis, e.g. from :func:`~jaxpayne.forward.pad_observations`).

        Spectra with too few usable pixels get NaN parameters and the FEW_PIXELS flag; they never
        affect the others.

        Returns:
            A :class:`BatchFit` of numpy arrays.
        """
        out = list(self._fit_batch(observations, self._library))
        # the Jacobians stay on the device (only a few are ever needed here)
        out = [a if i == 1 else np.array(a) for i, a in enumerate(out)]
        jac = self._refine_stragglers(observations, *out)
        theta, _, fisher, cost, n_pix, n_marginal, n_iter, converged = out
        theta = theta.astype(np.float64)
        n_par = theta.shape[1]
        fisher = fisher.astype(np.float64)
        # float32 products are exact enough for a well-conditioned Fisher matrix; the others are
        # formed again in float64 from their Jacobians
        with np.errstate(invalid="ignore", divide="ignore"):
            # conditioning after Jacobi scaling (independent of the parameters' units)
            root = np.sqrt(np.clip(np.diagonal(fisher, axis1=1, axis2=2), 1e-300, None))
            jacobi = fisher / root[:, :, None] / root[:, None, :]
            w = np.linalg.eigvalsh(np.nan_to_num(0.5 * (jacobi + np.swapaxes(jacobi, 1, 2))))
            doubtful = ~(w[:, 0] > RECHECK_RCOND * w[:, -1]) | ~np.all(np.isfinite(fisher), axis=(1, 2))
        for b in np.flatnonzero(doubtful):
            rows = np.asarray(jac[b], np.float64)
            fisher[b] = rows.T @ rows
        cov, singular = _invert_fisher(fisher, self._scale, working=True)
        dof = n_pix.astype(np.int64) - n_par - n_marginal.astype(np.int64)
        finite = np.isfinite(cost) & np.all(np.isfinite(theta), axis=1)
        converged = converged.astype(bool) & finite
        flags = np.zeros(theta.shape[0], np.int64)
        flags |= np.where(~converged, int(Flags.NOT_CONVERGED), 0)
        flags |= np.where(~finite, int(Flags.FAILED), 0)
        flags |= np.where(singular, int(Flags.COV_SINGULAR), 0)
        fm = self.forward
        label_cols = [i for i, n in enumerate(fm.param_names) if n in fm.label_names]
        lo, hi = fm.lower[label_cols], fm.upper[label_cols]
        tol = BOUND_TOLERANCE * (hi - lo)
        on_bound = np.any((theta[:, label_cols] <= lo + tol) | (theta[:, label_cols] >= hi - tol), axis=1)
        flags |= np.where(on_bound, int(Flags.AT_BOUND), 0)
        if self._rv_index is not None:
            rv = theta[:, self._rv_index]
            limit = fm.upper[self._rv_index]
            flags |= np.where(np.abs(rv) >= limit * (1 - 1e-4), int(Flags.RV_AT_LIMIT), 0)
        chi2 = cost.astype(np.float64) * self.inflation**2
        with np.errstate(divide="ignore", invalid="ignore"):
            red = np.where(dof > 0, chi2 / np.maximum(dof, 1), np.nan)
        flags |= np.where(red > HIGH_CHI2_LIMIT, int(Flags.HIGH_CHI2), 0)
        few = n_pix < MIN_PIXELS_PER_PARAMETER * n_par
        flags = np.where(few, int(Flags.FEW_PIXELS), flags)
        theta[few] = np.nan
        cov[few] = np.nan
        chi2 = np.where(few, np.nan, chi2)
        return BatchFit(theta, cov, chi2, n_pix.astype(np.int64), dof, n_iter.astype(np.int64), converged.astype(bool) & ~few, flags)


def _invert_fisher(fisher: np.ndarray, scale: np.ndarray, working: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Laplace covariance (physical units) from Fisher matrices (B, n, n), inverted in unit-scaled
    coordinates (θ = offset + scale·u).

    Singular or ill-conditioned matrices (reciprocal condition < :data:`SINGULAR_RCOND`) are
    inverted on their well-determined subspace (eigenvalues clipped) and flagged, never NaN.

    Args:
        fisher: Fisher matrices in physical units, or in the unit-scaled coordinates if
            ``working``.
        scale: (n,) the scale of each parameter.
        working: whether ``fisher`` is already in unit-scaled coordinates.
    """
    d = scale[None, :, None] * scale[None, None, :]
    scaled = fisher if working else fisher * d
    scaled = 0.5 * (scaled + np.swapaxes(scaled, 1, 2))
    w, v = np.linalg.eigh(np.nan_to_num(scaled))
    top = np.max(np.abs(w), axis=1, keepdims=True)
    floor = np.maximum(top * SINGULAR_RCOND, 1e-30)  # 1e-30: an all-zero Fisher matrix
    singular = np.any(w < floor, axis=1) | ~np.all(np.isfinite(fisher), axis=(1, 2))
    inv_w = 1.0 / np.maximum(w, floor)
    cov_scaled = np.einsum("bij,bj,bkj->bik", v, inv_w, v)
    return cov_scaled * d, singular
