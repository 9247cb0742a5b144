"""Batched, jit-compiled fitting of spectra: template pre-search (rv and start), Levenberg–Marquardt,
Laplace covariances and quality flags.

The physics is one spectrum's; :class:`Fitter` vmaps it over a batch of padded
:class:`~jaxpayne.forward.Observation` arrays so one compiled call fits many spectra. It is a
composition of the forward model's public functions: the parameter space's unit coordinates
(:meth:`~jaxpayne.forward.ParameterSpace.to_unit`), :func:`~jaxpayne.forward.prepare_data`,
:func:`~jaxpayne.forward.residuals` with :data:`~jaxpayne.forward.DEFAULT_SETTINGS` (the
defaults ``sample`` and ``crlb`` share), :func:`~jaxpayne.forward.usable_pixels` for the pixels
of each fit, and the Gauss–Newton Fisher matrix JᵀJ of the same residuals.

Radial velocity: the pre-search finds rv over ±``max_rv``; the optimiser then works inside
rv₀ ± :data:`RV_WINDOW`, and each fit uses every pixel the model covers for all velocities of that
window (one pixel set per fit, the same at every iteration), instead of the pixels it covers at
every velocity of ±max_rv.

Broadening that the data do not resolve: the rotational and macroturbulent transfer functions are
even in vsini and ζ, so their derivatives vanish at 0 and the Fisher matrix is singular there.
A fit whose vsini (or vmacro) is not detected — below its own conditional 1σ error — reports the
other parameters' errors at that value held fixed, NaN for its own error, a 95 % upper limit
(``<name>_upper``: the value where χ² rises by :data:`UPPER_LIMIT_DCHI2` with the others held at
the best fit) and the flag UPPER_LIMIT.
"""

from __future__ import annotations

import enum
import functools
from typing import Any, Mapping, NamedTuple

import numpy as np

from jaxpayne.fitting.lm import LMOptions, levenberg_marquardt
from jaxpayne.fitting.presearch import build_library, library_size, presearch
from jaxpayne.forward.likelihood import DEFAULT_SETTINGS, LikelihoodSettings

__all__ = ["Flags", "Fitter", "BatchFit", "batch_over_devices", "invert_fisher", "marginal_terms", "quality_flags"]

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
#: Fractions of ``max_iter`` at which a straggler pass ends; the spectra still unconverged go on
#: in the next, smaller batch (the last pass ends at ``max_iter``).
REFINE_STAGES = (0.7,)
#: Smallest chunk of the later straggler passes (a batch's power of two over 8, at least this).
MIN_PASS_BATCH = 8
#: Minimum number of usable pixels per free parameter for a fit to be attempted.
MIN_PIXELS_PER_PARAMETER = 3
#: Half-width [km/s] of the velocity window around the pre-search's rv the optimiser works in (at
#: least :data:`RV_WINDOW_NODES` working-grid steps: on a coarse, low-resolution grid a step is
#: wider than this).
RV_WINDOW = 30.0
#: Smallest half-width of the velocity window, in working-grid steps (c·Δln λ).
RV_WINDOW_NODES = 1.0
#: Broadening parameters whose derivative vanishes at 0 (even transfer functions).
EVEN_PARAMETERS = ("vsini", "vmacro")
#: Δχ² of the one-sided 95 % upper limit of an undetected broadening parameter.
UPPER_LIMIT_DCHI2 = 2.71
#: Values of the upper-limit scan (from 0 to the upper bound).
UPPER_LIMIT_STEPS = 33
#: Fraction of a spectrum's good pixels lost to the model's range above which PIXELS_CLIPPED is set.
CLIPPED_FRACTION_LIMIT = 0.05


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
    RV_AT_LIMIT     32     rv sits at ±max_rv or at the edge of its window around the
                           pre-search's rv: the search range or the pre-search failed
    PIXELS_CLIPPED  64     > 5 % of the good pixels lie outside the model's range (the
                           count is in ``n_clipped``)
    HIGH_CHI2       128    reduced χ² > 5: model inadequate or errors underestimated
    UPPER_LIMIT     256    vsini or vmacro not detected: ``<name>_upper`` holds its 95 %
                           upper limit, the other errors are at its best value
    R_HAT_HIGH      512    (sampling) some parameter has r_hat > 1.01: chains disagree
    ESS_LOW         1024   (sampling) some parameter has ess_bulk < 400
    DIVERGENT       2048   (sampling) divergent transitions after warmup: the posterior
                           may be biased (a funnel, a wall of the box, a bad pixel)
    TREE_DEPTH      4096   (sampling) > 5 % of transitions hit the maximum tree depth
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
    UPPER_LIMIT = 256
    R_HAT_HIGH = 512
    ESS_LOW = 1024
    DIVERGENT = 2048
    TREE_DEPTH = 4096


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
        n_clipped: (B,) good pixels left out because the model does not cover them at the fit's
            velocities (beyond those an observation already masked).
        upper_limits: name → (B,) 95 % upper limit of each free even broadening parameter
            (NaN where it was detected).
        extra: name → (B,) further per-spectrum columns of the results table (e.g. a binary
            fit's single-star comparison), or None.
    """

    theta: np.ndarray
    covariance: np.ndarray
    chi2: np.ndarray
    n_pixels: np.ndarray
    dof: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    flags: np.ndarray
    n_clipped: np.ndarray
    upper_limits: dict
    extra: dict | None = None


class Fitter:
    """Fit emulator + forward model to many spectra at once.

    Args:
        model: a :class:`jaxpayne.Model` (or any emulator accepted by
            :class:`~jaxpayne.forward.ForwardModel`).
        rv: fit the radial velocity [km/s] (with a cross-correlation pre-search over ±``max_rv``);
            False fixes it (at 0, or at ``fixed["rv"]``, or per spectrum through ``fit(fixed=)``).
        vsini: fit rotational broadening [km/s].
        vmacro: fit radial–tangential macroturbulence [km/s].
        resolution: instrumental resolving power R (None: the emulator is already at the
            instrument's resolution).
        continuum: ``"filter[:WIDTH]"``, ``"cheb:N"``, ``"cheb:N:free"`` or ``"none"`` (see
            :class:`~jaxpayne.forward.ForwardModel`).
        n_segments: number of segments (chips/arms) of the observations.
        max_rv: bound of abs(rv) [km/s].
        templates: size of the pre-search library (the box centre and Sobol points of the label
            box; see :mod:`jaxpayne.fitting.presearch`), capped by its memory.
        restarts: number of optimiser starts, from the best-matching templates; each runs a few
            iterations and the best is refined to convergence.
        emulator_error: add the model file's per-pixel validation error in quadrature.
        inflation: factor on every uncertainty.
        fixed: parameter name → value held fixed (per-spectrum values: ``fit(fixed=...)``).
        lm_options: optimiser settings.
        seed: seed of the Sobol starts.
        **forward_options: passed to :class:`~jaxpayne.forward.ForwardModel` (``max_vsini``,
            ``max_vmacro``, ``limb_darkening``, ``lsf_sigma`` ...).

    Example:
        >>> fitter = Fitter(model, rv=True, continuum="filter")
        >>> batch = pad_observations([fitter.observation(w, f, e**-2) for w, f, e in ...])
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
        emulator_error: bool = DEFAULT_SETTINGS.emulator_error,
        inflation: float = DEFAULT_SETTINGS.inflation,
        fixed: Mapping[str, float] | None = None,
        lm_options: LMOptions = LMOptions(),
        seed: int = 0,
        **forward_options,
    ):
        import jax

        from jaxpayne.forward import forward_model_from_options

        self.forward = forward_model_from_options(
            model, rv=rv, vsini=vsini, vmacro=vmacro, resolution=resolution, continuum=continuum,
            n_segments=n_segments, max_rv=max_rv, fixed=fixed, **forward_options,
        )
        if self.forward.weights is not None:  # on the device once: the compiled calls take them
            self.forward = self.forward.with_weights(jax.device_put(self.forward.weights))
        fm = self.forward
        if restarts < 1:
            raise ValueError("restarts must be >= 1")
        self.model = model
        self.settings = LikelihoodSettings(emulator_error=bool(emulator_error), inflation=float(inflation))
        if not self.settings.inflation > 0:
            raise ValueError("inflation must be > 0")
        #: whether the likelihood includes the emulator's own error (requested, and the model has one)
        self.emulator_error = fm.uses_emulator_error(self.settings)
        self.inflation = self.settings.inflation
        self.lm_options = lm_options
        self.seed = int(seed)
        self.space = fm.space
        self.param_names = fm.param_names
        self.n_labels = len(fm.label_names)
        self._offset, self._scale = self.space.unit_offset_scale()
        self._u_lower, self._u_upper = self.space.unit_bounds()
        self._rv_index = self.space.index("rv") if "rv" in self.param_names else None
        self._even = tuple(n for n in EVEN_PARAMETERS if n in self.param_names)
        n_nodes = fm.grid.n_pieces * fm.grid.fft_length
        self.n_templates = library_size(max(int(templates), restarts), n_nodes)
        self.restarts = min(int(restarts), self.n_templates)
        u_templates = self._template_points(self.n_templates, seed)
        self._library = build_library(fm, self.space.from_unit(u_templates), u_templates)
        # the forward model is an argument of the compiled calls: its weights are inputs of the
        # programs rather than constants folded into them (smaller executables and cache entries,
        # faster lowering, one program for every model of the same shapes)
        # (each split over the local devices when there are several: see batch_over_devices)
        self._fit_batch = batch_over_devices(self._fit_one, (None, None, 0, 0))
        self._refine_batch = batch_over_devices(self._refine_one, (None, 0, 0, 0, 0, 0, None))
        self._scan_batch = {
            name: batch_over_devices(functools.partial(self._chi2_scan, name=name), (None, 0, 0, 0, 0))
            for name in self._even
        }

    # --------------------------------------------------------------------------- settings
    def describe_settings(self) -> dict:
        """Every setting that changes a fit's result (JSON-serialisable; recorded in tables)."""
        fm = self.forward
        return {
            "parameters": list(self.param_names),
            "fixed": dict(fm.fixed),
            "bounds": {n: [float(lo), float(hi)] for n, lo, hi in zip(self.param_names, fm.lower, fm.upper)},
            "resolution": fm.resolution,
            "lsf": fm.lsf is not None,
            "continuum": str(fm.continuum),
            "n_segments": fm.n_segments,
            "limb_darkening": fm.limb_darkening,
            "max_rv": fm.max_rv,
            "emulator_error": self.emulator_error,
            "inflation": self.inflation,
            "templates": self.n_templates,
            "restarts": self.restarts,
            "seed": self.seed,
            "lm_options": self.lm_options._asdict(),
        }

    def observation(self, wavelength, flux, ivar=None, **options):
        """A checked :class:`~jaxpayne.forward.Observation` for this fitter (eager).

        Pixels the model cannot cover at *any* velocity of the fit are masked; each fit then uses
        the pixels covered at every velocity of its window (see the module notes).

        Args:
            wavelength, flux, ivar: arrays (see :meth:`~jaxpayne.forward.ForwardModel.observation`).
            **options: ``error``, ``segment``, ``medium``, ``lsf_sigma``.
        """
        return self.forward.observation(wavelength, flux, ivar, outside="mask", rv_mode="any", **options)

    # --------------------------------------------------------------------------- starts
    def _template_points(self, n_templates: int, seed: int) -> np.ndarray:
        """(K, n) template parameters in working coordinates: the box centre, then scrambled Sobol
        points of the label box (forward-model parameters at their start values)."""
        fm = self.forward
        start = np.asarray(self.space.to_unit(fm.initial), np.float64)
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
    def _velocity_window(self, obs, fixed, rv0):
        """(lower, upper) velocities [km/s] of one fit: rv₀ ± max(RV_WINDOW, RV_WINDOW_NODES grid
        steps) inside ±max_rv, or the fixed rv."""
        import jax.numpy as jnp

        dtype = obs.flux.dtype
        if self._rv_index is None:
            rv = jnp.asarray(fixed.get("rv", self.forward.fixed["rv"]), dtype)
            return jnp.stack([rv, rv])
        limit = self.forward.max_rv
        half = max(RV_WINDOW, RV_WINDOW_NODES * float(self.forward.grid.velocity_step))
        return jnp.stack([jnp.clip(rv0 - half, -limit, limit),
                          jnp.clip(rv0 + half, -limit, limit)]).astype(dtype)

    def _problem(self, fm, obs, fixed, window):
        """Residuals of one spectrum in working coordinates, the box there, and the fit's data.

        The fit's pixels are those the model covers at every velocity of ``window``; the data
        side of the likelihood is prepared once, here.
        """
        import jax.numpy as jnp

        from jaxpayne.forward import prepare_data, residuals

        dtype = obs.flux.dtype
        usable = fm.usable_pixels(obs.wavelength, window[0], window[1])
        n_edge = jnp.sum((obs.ivar > 0) & ~usable)
        obs = obs._replace(ivar=jnp.where(usable, obs.ivar, 0.0), flux=jnp.where(usable, obs.flux, 0.0))
        data = prepare_data(fm, obs, dtype)
        offset = jnp.asarray(self._offset, dtype)
        scale = jnp.asarray(self._scale, dtype)

        def residuals_u(u):
            return residuals(fm, u * scale + offset, obs, fixed, self.settings, data)

        lower = jnp.asarray(self._u_lower, dtype)
        upper = jnp.asarray(self._u_upper, dtype)
        if self._rv_index is not None:
            k = self._rv_index
            lower = lower.at[k].set(((window[0] - self._offset[k]) / self._scale[k]).astype(dtype))
            upper = upper.at[k].set(((window[1] - self._offset[k]) / self._scale[k]).astype(dtype))
        return residuals_u, lower, upper, data, n_edge

    def _fit_one(self, fm, library, obs, fixed):
        import jax
        import jax.numpy as jnp

        from jaxpayne.forward import prepare_data

        k = self._rv_index
        dtype = obs.flux.dtype

        def rv_to_u(rv):
            return (rv - self._offset[k]) / self._scale[k]

        fixed_rv = fixed.get("rv", fm.fixed.get("rv", 0.0)) if k is None else 0.0
        starts, _, velocities = presearch(fm, library, obs, fit_rv=k is not None, rv_index=k,
                                          rv_to_u=rv_to_u, n_best=self.restarts,
                                          prepared=prepare_data(fm, obs, library.spectra.dtype),
                                          rv=fixed_rv)
        window = self._velocity_window(obs, fixed, velocities[0])
        residuals_u, lower, upper, data, n_edge = self._problem(fm, obs, fixed, window)
        starts = starts.astype(dtype)
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
        return self._finish(fm, obs, final, n_explore, data, window, n_edge)

    def _refine_one(self, fm, obs, fixed, u_start, window, damping, budget):
        """Continue Levenberg–Marquardt from ``u_start`` at λ = ``damping`` for at most ``budget``
        (traced) further evaluations (a straggler of an earlier pass)."""
        residuals_u, lower, upper, data, n_edge = self._problem(fm, obs, fixed, window)
        dtype = obs.flux.dtype
        final = levenberg_marquardt(residuals_u, u_start.astype(dtype), lower, upper,
                                    self.lm_options._replace(max_iter=budget), damping=damping)
        # the restart re-evaluates its start point: that evaluation was counted by the last pass
        return self._finish(fm, obs, final._replace(n_iter=final.n_iter - 1), 0, data, window, n_edge)

    def _finish(self, fm, obs, final, n_explore, data, window, n_edge):
        import jax
        import jax.numpy as jnp

        dtype = obs.flux.dtype
        theta = final.x * jnp.asarray(self._scale, dtype) + jnp.asarray(self._offset, dtype)
        # the optimiser's Jacobian at the returned point, in the unit-scaled working coordinates
        jac = final.jacobian
        fisher = jnp.matmul(jac.T, jac, precision=jax.lax.Precision.HIGHEST)
        used = data.used
        n_pixels = jnp.sum(used)
        n_marginal = marginal_terms(fm, data)
        # JᵀJ in the working precision; where it looks ill-conditioned the host forms it again in
        # float64 from the Jacobian (float32 rounding in the product can hide a singular direction)
        return (theta, jac, fisher, final.cost, n_pixels, n_marginal, final.n_iter + n_explore,
                final.converged, window, n_edge, final.damping)

    def _chi2_scan(self, fm, obs, fixed, u_best, window, name):
        """χ² of one spectrum along parameter ``name`` from 0 to its upper bound, the others at
        the best fit: (UPPER_LIMIT_STEPS,) values and (UPPER_LIMIT_STEPS,) χ² (for upper limits)."""
        import jax
        import jax.numpy as jnp

        residuals_u, *_ = self._problem(fm, obs, fixed, window)
        j = self.space.index(name)
        dtype = obs.flux.dtype
        grid_u = (jnp.linspace(0.0, 1.0, UPPER_LIMIT_STEPS, dtype=dtype) ** 2)  # dense near 0
        lo, hi = self.space.free_lower[j], self.space.free_upper[j]
        values = lo + (hi - lo) * grid_u
        u_values = (values - self._offset[j]) / self._scale[j]

        def chi2(v):
            r = residuals_u(u_best.astype(dtype).at[j].set(v))
            return jnp.sum(r * r)

        return values, jax.vmap(chi2)(u_values.astype(dtype))

    # --------------------------------------------------------------------------- batches
    def _refine_stragglers(self, observations, fixed, out):
        """Continue the spectra the first pass left unconverged, in smaller batches.

        ``out`` (the first pass's arrays; numpy except the Jacobians) is updated in place.

        Under ``vmap`` a while-loop runs until its slowest member stops, so a batch costs as much as
        its worst spectrum. The first pass therefore stops at :data:`FIRST_PASS_ITERATIONS`; the
        stragglers go on to the first of :data:`REFINE_STAGES` in one batch padded to a power of
        two, and those still unconverged to the next in chunks of one fixed size (a run meets few
        compiled shapes; the iteration budget is traced, so every pass of one shape shares one
        program). A fit goes on at the damping where it stopped.
        """
        theta, cost, converged = out[0], out[3], out[7]
        max_iter = self.lm_options.max_iter
        ends = sorted({min(max_iter, max(FIRST_PASS_ITERATIONS + 1, int(round(f * max_iter))))
                       for f in REFINE_STAGES} | {max_iter})
        done = FIRST_PASS_ITERATIONS
        # later passes run their few stragglers in chunks of one fixed size (one compiled shape
        # for every batch of a run, whatever their number)
        tail = max(MIN_PASS_BATCH, (1 << int(np.ceil(np.log2(theta.shape[0])))) // 8)
        for stage, end in enumerate(ends):
            if end <= done:
                continue
            # a fit that failed at its start (non-finite cost) would fail again
            todo = np.flatnonzero(~converged.astype(bool) & np.isfinite(cost))
            if todo.size == 0:
                return
            size = todo.size if stage == 0 else tail
            for first in range(0, todo.size, size):
                self._refine_pass(observations, fixed, out, todo[first : first + size], end - done,
                                  floor=tail if stage else 1)
            done = end

    def _refine_pass(self, observations, fixed, out, todo, iterations, floor=1):
        """One straggler pass: the spectra ``todo`` (a batch padded to a power of two, at least
        ``floor``) go on for ``iterations`` more evaluations; updates ``out`` in place."""
        import jax

        theta, _, fisher, cost, n_pix, n_marginal, n_iter, converged, window, _, damping = out
        k = todo.size
        pick = _padded_pick(todo, floor)
        # host-side indexing: an eager device gather would compile for every new shape
        sub, sub_fixed = jax.tree_util.tree_map(lambda a: np.asarray(a)[pick], (observations, fixed))
        u0 = (theta[pick] - self._offset) / self._scale
        # one more evaluation than the pass adds: the restart evaluates its start again
        refined = self._refine_batch(self.forward, sub, sub_fixed, u0, window[pick], damping[pick], np.int32(iterations + 1))
        host = [None if i == 1 else np.asarray(a)[:k] for i, a in enumerate(refined)]
        theta[todo], fisher[todo], cost[todo] = host[0], host[2], host[3]
        n_pix[todo], n_marginal[todo] = host[4], host[5]
        n_iter[todo] += host[6]
        converged[todo] = host[7]
        damping[todo] = host[10]
        out[1].update(todo, refined[1])

    def fit(self, observations, fixed: Mapping[str, Any] | None = None) -> BatchFit:
        """Fit a batch of observations (an :class:`~jaxpayne.forward.Observation` with a leading
        batch axis, e.g. from :func:`~jaxpayne.forward.pad_observations` of
        :meth:`observation` results).

        Spectra with too few usable pixels get NaN parameters and the FEW_PIXELS flag; they never
        affect the others.

        Args:
            observations: the batch.
            fixed: per-spectrum values of fixed parameters, name → (B,) array (e.g. a catalogue
                rv with ``rv=False``); they must lie within the margins the fitter was built for.

        Returns:
            A :class:`BatchFit` of numpy arrays.
        """
        batch = int(np.shape(observations.flux)[0])
        fixed = self.batch_fixed(fixed, batch)
        out = list(self._fit_batch(self.forward, self._library, observations, fixed))
        # the Jacobians stay on the device (only a few are ever needed here)
        out = [_DeviceRows(a) if i == 1 else np.array(a) for i, a in enumerate(out)]
        self._refine_stragglers(observations, fixed, out)
        theta, jac, fisher, cost, n_pix, n_marginal, n_iter, converged, window, n_edge, _ = out
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
        undetected = self._undetected(theta, fisher)
        cov, singular = invert_fisher(fisher, self._scale, working=True, exclude=undetected)
        upper_limits = self._upper_limits(observations, fixed, theta, window, undetected)
        dof = n_pix.astype(np.int64) - n_par - n_marginal.astype(np.int64)
        chi2 = cost.astype(np.float64) * self.inflation**2
        rv_windows = {} if self._rv_index is None else {"rv": window}
        flags, converged = quality_flags(self.space, self.forward.label_names, theta, chi2, dof, converged,
                                         singular, rv_windows)
        flags |= np.where(np.any(undetected, axis=1), int(Flags.UPPER_LIMIT), 0)
        few = n_pix < MIN_PIXELS_PER_PARAMETER * n_par
        flags = np.where(few, int(Flags.FEW_PIXELS), flags)
        theta[few] = np.nan
        cov[few] = np.nan
        chi2 = np.where(few, np.nan, chi2)
        for values in upper_limits.values():
            values[few] = np.nan
        return BatchFit(theta, cov, chi2, n_pix.astype(np.int64), dof, n_iter.astype(np.int64),
                        converged & ~few, flags, n_edge.astype(np.int64), upper_limits)

    def batch_fixed(self, fixed, batch: int) -> dict:
        """Per-spectrum fixed values as checked (B,) arrays (only names the forward model holds
        fixed; a per-spectrum rv must lie within the Doppler margin, a vsini or vmacro at most,
        and an R at least, the value the kernel margins were built for)."""
        import jax.numpy as jnp

        out = {}
        for name, value in (fixed or {}).items():
            if name not in self.forward.fixed:
                raise ValueError(f"{name!r} is not a fixed parameter of this fit; fixed: {sorted(self.forward.fixed)}")
            value = np.broadcast_to(np.asarray(value, dtype=np.float64), (batch,))
            if name == "rv" and np.any(np.abs(value) > self.forward.rv_margin * (1 + 1e-12)):
                raise ValueError(
                    f"per-spectrum rv up to {np.abs(value).max():g} km/s exceeds the fitter's Doppler "
                    f"margin {self.forward.rv_margin:g} km/s; build it with rv=False, "
                    "fixed={'rv': <largest |rv|>} to keep that margin"
                )
            built = float(self.forward.fixed[name])
            if name in ("vsini", "vmacro") and np.any(value > built * (1 + 1e-12)):
                raise ValueError(f"per-spectrum {name} up to {value.max():g} km/s exceeds the {built:g} km/s "
                                 f"the fitter's kernel margins were built for; build it with fixed={{'{name}': "
                                 "<largest value>}")
            if name == "R" and np.any(value < built * (1 - 1e-12)):
                raise ValueError(f"per-spectrum R down to {value.min():g} is below the {built:g} the fitter's "
                                 "kernel margins were built for; build it with fixed={'R': <smallest R>}")
            out[name] = jnp.asarray(value)
        return out

    def _undetected(self, theta, fisher) -> np.ndarray:
        """(B, n) bool: free even broadening parameters not detected (value < conditional 1σ)."""
        out = np.zeros(theta.shape, bool)
        for name in self._even:
            j = self.space.index(name)
            with np.errstate(divide="ignore", invalid="ignore"):
                sigma = self._scale[j] / np.sqrt(np.clip(fisher[:, j, j], 0.0, None))  # conditional
            out[:, j] = np.isfinite(theta[:, j]) & ~(theta[:, j] >= sigma)
        return out

    def _upper_limits(self, observations, fixed, theta, window, undetected) -> dict:
        """name → (B,) 95 % upper limits (NaN where detected), from χ² scans of the undetected."""
        import jax

        limits = {}
        for name in self._even:
            j = self.space.index(name)
            values = np.full(theta.shape[0], np.nan)
            todo = np.flatnonzero(undetected[:, j])
            if todo.size:
                pick = _padded_pick(todo)
                sub, sub_fixed = jax.tree_util.tree_map(lambda a: np.asarray(a)[pick], (observations, fixed))
                u_best = (theta[pick] - self._offset) / self._scale
                grid, chi2 = (np.asarray(a, np.float64)[: todo.size] for a in self._scan_batch[name](self.forward, 
                    sub, sub_fixed, u_best, window[pick]))
                values[todo] = [_crossing(g, c - c.min(), UPPER_LIMIT_DCHI2) for g, c in zip(grid, chi2)]
            limits[name] = values
        return limits


def batch_over_devices(fn, in_axes):
    """``jit(vmap(fn, in_axes))``, split over the local devices when there are several.

    With ``n > 1`` local devices a call whose batch (the leading axis of the mapped arguments) is
    a multiple of ``n`` runs as ``shard_map`` over a one-axis mesh of them: each device fits its
    own share of the spectra with the same per-device program, the unmapped arguments (the
    forward model, the template library) replicated. Other calls, and one device, use the plain
    compiled function. (``shard_map`` rather than sharded inputs to one ``jit``: the automatic
    partitioning of the FFTs trips an XLA CPU layout check.) On a CPU, several devices come from
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``.

    Returns:
        A function with ``fn``'s batched signature.
    """
    import jax
    from jax.sharding import Mesh, PartitionSpec

    mapped = jax.vmap(fn, in_axes=in_axes)
    plain = jax.jit(mapped)
    devices = jax.local_devices()
    if len(devices) < 2:
        return plain
    specs = tuple(PartitionSpec() if a is None else PartitionSpec("batch") for a in in_axes)
    split = jax.jit(jax.shard_map(mapped, mesh=Mesh(np.asarray(devices), ("batch",)), in_specs=specs,
                                  out_specs=PartitionSpec("batch"), check_vma=False))
    batch_arg = next(i for i, a in enumerate(in_axes) if a is not None)

    def call(*args):
        batch = jax.tree_util.tree_leaves(args[batch_arg])[0].shape[0]
        return (split if batch % len(devices) == 0 else plain)(*args)

    return call


def marginal_terms(fm, data):
    """Number of continuum coefficients the likelihood marginalises for one prepared spectrum
    (traceable): for ``cheb:N``, the design-matrix columns that touch a used pixel; else 0. They
    count against the degrees of freedom like fitted parameters."""
    import jax.numpy as jnp

    from jaxpayne.forward import chebyshev_basis

    cont = fm.continuum
    if cont.kind != "cheb" or cont.free:
        return jnp.zeros((), jnp.int32)
    design = chebyshev_basis(data.wavelength, data.segment, data.ivar, n_segments=fm.n_segments,
                             degree=cont.degree)
    return jnp.sum(design.touched(data.used)).astype(jnp.int32)


def quality_flags(space, label_names, theta, chi2, dof, converged, singular,
                  rv_windows: Mapping[str, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The :class:`Flags` of a batch of fits (host side), shared by every fitter.

    Args:
        space: the parameter space (its free names and bounds).
        label_names: names of the emulator-label parameters (AT_BOUND is checked on them).
        theta: (B, n) best fits.
        chi2: (B,) χ² (NaN/inf for a failed fit).
        dof: (B,) degrees of freedom.
        converged: (B,) whether the optimiser converged.
        singular: (B,) whether the Fisher matrix was singular.
        rv_windows: velocity parameter name → (B, 2) window its fit was confined to (RV_AT_LIMIT
            at an edge of it or at the bound of the space).

    Returns:
        (flags (B,) int64, converged (B,) bool — False also for non-finite fits).
    """
    names = space.free_names
    finite = np.isfinite(chi2) & np.all(np.isfinite(theta), axis=1)
    converged = np.asarray(converged).astype(bool) & finite
    flags = np.zeros(theta.shape[0], np.int64)
    flags |= np.where(~converged, int(Flags.NOT_CONVERGED), 0)
    flags |= np.where(~finite, int(Flags.FAILED), 0)
    flags |= np.where(singular, int(Flags.COV_SINGULAR), 0)
    lower, upper = space.free_lower, space.free_upper
    cols = [i for i, n in enumerate(names) if n in label_names]
    if cols:
        lo, hi = lower[cols], upper[cols]
        tol = BOUND_TOLERANCE * (hi - lo)
        on_bound = np.any((theta[:, cols] <= lo + tol) | (theta[:, cols] >= hi - tol), axis=1)
        flags |= np.where(on_bound, int(Flags.AT_BOUND), 0)
    for name, window in (rv_windows or {}).items():
        j = names.index(name)
        rv = theta[:, j]
        span = np.abs(window[:, 1] - window[:, 0]) + 1e-9
        at_edge = (rv <= window[:, 0] + 1e-4 * span) | (rv >= window[:, 1] - 1e-4 * span)
        flags |= np.where((np.abs(rv) >= upper[j] * (1 - 1e-4)) | at_edge, int(Flags.RV_AT_LIMIT), 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        red = np.where(dof > 0, chi2 / np.maximum(dof, 1), np.nan)
    flags |= np.where(red > HIGH_CHI2_LIMIT, int(Flags.HIGH_CHI2), 0)
    return flags, converged


class _DeviceRows:
    """Per-spectrum rows of device arrays (the Jacobians), updated by the straggler passes
    without a device scatter (it would compile for every new shape): row ``b`` is read from the
    array of the last pass that refitted spectrum ``b``."""

    def __init__(self, first):
        self.first = first
        self.source: dict[int, tuple[Any, int]] = {}

    def update(self, todo: np.ndarray, rows) -> None:
        for r, b in enumerate(todo):
            self.source[int(b)] = (rows, r)

    def __getitem__(self, b: int):
        rows, r = self.source.get(int(b), (self.first, int(b)))
        return np.asarray(rows[r])


def _padded_pick(todo: np.ndarray, floor: int = 1) -> np.ndarray:
    """Indices ``todo`` padded (by repeating the first) to a power of two, at least ``floor``:
    few compiled shapes."""
    size = max(1 << int(np.ceil(np.log2(todo.size))), int(floor))
    return np.concatenate([todo, np.full(size - todo.size, todo[0])])


def _crossing(values: np.ndarray, delta: np.ndarray, level: float) -> float:
    """First value at which ``delta`` (rising from its minimum) reaches ``level`` (linear
    interpolation); the last value if it never does."""
    start = int(np.argmin(delta))
    above = np.flatnonzero(delta[start:] >= level)
    if above.size == 0:
        return float(values[-1])
    k = start + int(above[0])
    if k == 0:
        return float(values[0])
    d0, d1 = delta[k - 1], delta[k]
    t = (level - d0) / (d1 - d0) if d1 > d0 else 1.0
    return float(values[k - 1] + t * (values[k] - values[k - 1]))


def invert_fisher(fisher: np.ndarray, scale: np.ndarray, working: bool = False,
                   exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Laplace covariance (physical units) from Fisher matrices (B, n, n), inverted in unit-scaled
    coordinates (θ = offset + scale·u).

    Singular or ill-conditioned matrices (reciprocal condition < :data:`SINGULAR_RCOND`) are
    inverted on their well-determined subspace (eigenvalues clipped) and flagged, never NaN.

    Args:
        fisher: Fisher matrices in physical units, or in the unit-scaled coordinates if
            ``working``.
        scale: (n,) the scale of each parameter.
        working: whether ``fisher`` is already in unit-scaled coordinates.
        exclude: optional (B, n) bool, parameters held at their value: the others' covariance is
            that of the matrix without their rows and columns (conditional), theirs is NaN.
    """
    d = scale[None, :, None] * scale[None, None, :]
    scaled = fisher if working else fisher * d
    scaled = 0.5 * (scaled + np.swapaxes(scaled, 1, 2))
    if exclude is not None and np.any(exclude):
        # decouple the held parameters: unit diagonal, zero off-diagonal; their entries are NaN
        keep = ~exclude
        mask = keep[:, :, None] & keep[:, None, :]
        eye = np.eye(scaled.shape[-1])[None] * exclude[:, :, None]
        scaled = np.where(mask, scaled, 0.0) + eye * np.max(np.abs(np.nan_to_num(scaled)), axis=(1, 2),
                                                         keepdims=True).clip(1e-30)
    w, v = np.linalg.eigh(np.nan_to_num(scaled))
    top = np.max(np.abs(w), axis=1, keepdims=True)
    floor = np.maximum(top * SINGULAR_RCOND, 1e-30)  # 1e-30: an all-zero Fisher matrix
    singular = np.any(w < floor, axis=1) | ~np.all(np.isfinite(fisher), axis=(1, 2))
    inv_w = 1.0 / np.maximum(w, floor)
    cov_scaled = np.einsum("bij,bj,bkj->bik", v, inv_w, v)
    cov = cov_scaled * d
    if exclude is not None and np.any(exclude):
        held = exclude[:, :, None] | exclude[:, None, :]
        cov = np.where(held, np.nan, cov)
    return cov, singular
