"""Joint fits of several visits of each star: SB1 (one star, moving) and SB2 orbits.

:class:`VisitFitter` fits a :class:`~jaxpayne.forward.MultiVisitModel` to a batch of stars, each
observed at the same number of visits V, in three steps, every one a composition of public
pieces:

1. **each visit on its own** with the visit fitter — a single-star
   :class:`~jaxpayne.fitting.Fitter`, or a :class:`~jaxpayne.fitting.binary.BinaryFitter` with its
   two-velocity pre-search — all B·V visits in one batch;
2. **starts** from those fits. For an orbit the per-visit velocity pairs (rv₁, rv₂) lie on the
   line rv₂ = γ(1 + 1/q_dyn) − rv₁/q_dyn; the pairs are assigned (a per-visit fit may have found
   the exchanged minimum) so that a least-squares line fits them best, and its slope and
   intercept give q_dyn and γ. The labels come from the visit whose binary is best resolved
   (largest Δχ²); for SB1 the median of the visits' labels and each visit's velocity;
3. **Levenberg–Marquardt** on the stitched visits' :func:`~jaxpayne.forward.residuals`
   (:func:`~jaxpayne.fitting.multistart.multistart_lm`) from the start of lowest χ², then the Laplace
   covariance and flags (:func:`~jaxpayne.fitting.multistart.batch_result`).

A binary (composite) fit is compared with the joint **SB1** fit of the same visits (one star with
free per-visit velocities, the natural null hypothesis of a velocity-variable star) on the same
pixels: ``chi2_single``, ``delta_chi2``, ``bic_single``, ``bic_binary``, ``delta_bic`` and the SB1
parameters ``single_*``, as :func:`~jaxpayne.fitting.binary.comparison_columns`. The derived
quantities — the secondary's velocity at each visit of an orbit (``rv_2_v0``, ...), the tied
companion's Teff and log g — come with errors propagated from the covariance.
"""

from __future__ import annotations

import itertools
from typing import Any, Mapping, Sequence

import numpy as np

from jaxpayne.fitting.binary import BinaryFitter, comparison_columns
from jaxpayne.fitting.fitter import RV_WINDOW, BatchFit, Fitter, Flags
from jaxpayne.fitting.lm import LMOptions
from jaxpayne.fitting.multistart import batch_result, multistart_lm, window_bounds
from jaxpayne.forward.observation import pad_observations
from jaxpayne.forward.visits import Q_DYN_BOUNDS, MultiVisitModel

__all__ = ["VISIT_RV_SPAN", "VisitFitter", "orbit_start"]

#: Default optimiser settings of joint visit fits.
VISIT_LM_OPTIONS = LMOptions(max_iter=80)
#: Half-width [km/s] of the per-visit binary fits' two-velocity pre-search (wider than a single
#: spectrum's default: visits sample the orbit, and some catch the stars far apart; on
#: 2M06133561+2433362 visit 0 has rv₂ − rv₁ = −117 km/s).
VISIT_RV_SPAN = 120.0
#: LM iterations from each start of the joint fit before the best is refined: none, the start of
#: lowest χ² is refined (the starts come from converged per-visit fits; measured on
#: 2M06133561+2433362: the same fit, and half the compile time of the joint step).
VISIT_EXPLORE_ITERATIONS = 0
#: Visits up to which every assignment of the per-visit velocity pairs is tried (2^(V−1)).
MAX_EXHAUSTIVE_VISITS = 10


def orbit_start(rv_1: np.ndarray, rv_2: np.ndarray, q_bounds=Q_DYN_BOUNDS, q_default: float = 0.8):
    """A start for an orbit from per-visit velocity pairs: the assignment and line fit.

    Tries every exchange of the pairs (for V ≤ :data:`MAX_EXHAUSTIVE_VISITS`, else none), fits
    rv₂ = a + b·rv₁ by least squares and returns the best assignment's primary velocities, γ and
    q_dyn (q_dyn = −1/b, γ = a/(1 − b), the line's crossing of rv₁ = rv₂). A line with b ≥ 0 or
    pairs that do not separate give q_dyn = ``q_default`` and γ the mean velocity.

    Args:
        rv_1, rv_2: (V,) per-visit velocities [km/s] of the brighter and the fainter star.
        q_bounds: bounds q_dyn is clipped to.
        q_default: q_dyn where the line does not determine it.

    Returns:
        (primary velocities (V,), γ, q_dyn, rms of the line fit [km/s]).
    """
    rv_1, rv_2 = np.asarray(rv_1, np.float64), np.asarray(rv_2, np.float64)
    n = rv_1.size
    lo, hi = q_bounds
    swaps = (itertools.product((False, True), repeat=n - 1) if n <= MAX_EXHAUSTIVE_VISITS
             else [(False,) * (n - 1)])
    best = None
    for swap in swaps:
        swap = np.array((False,) + tuple(swap))
        x, y = np.where(swap, rv_2, rv_1), np.where(swap, rv_1, rv_2)
        if n >= 2 and np.ptp(x) > 1e-6:
            b, a = np.polyfit(x, y, 1)
            rms = float(np.sqrt(np.mean((y - (a + b * x)) ** 2)))
        else:
            b, a, rms = 0.0, float(np.mean(y)), float(np.std(y))
        if b < -1e-3:
            q, gamma = -1.0 / b, a / (1.0 - b)
        else:
            q, gamma = q_default, float(np.mean((x + q_default * y) / (1.0 + q_default)))
        if best is None or rms < best[3] - 1e-9:
            best = (x, float(gamma), float(np.clip(q, lo, hi)), rms)
    return best


class VisitFitter:
    """Fit all visits of many stars jointly (see the module docstring).

    Its interface is :class:`~jaxpayne.fitting.Fitter`'s (``fit`` → a
    :class:`~jaxpayne.fitting.BatchFit`, ``param_names``, ``space``, ``describe_settings``,
    :attr:`extra_columns`) for a batch of *stitched* observations (:meth:`stitch`).

    Args:
        model: the spectral emulator.
        n_visits: visits per star V.
        velocities: ``"constant"``, ``"per-visit"`` or ``"orbit"`` (see
            :class:`~jaxpayne.forward.MultiVisitModel`); ``"orbit"`` needs ``binary``.
        binary: weights of a two-star composite (``"ratio"``, ``"physical"``, ``"tied"``), or None
            for one star.
        networks: the binary's flux, radius and companion networks (see
            :class:`~jaxpayne.fitting.binary.BinaryFitter`).
        q_dyn_bounds: bounds of the dynamical mass ratio (``"orbit"``).
        lm_options: optimiser settings of the joint fit.
        compare: for a binary, also fit the joint SB1 model and report the comparison columns.
        fixed: multi-visit parameter name → value held fixed.
        binary_options: further options of the per-visit
            :class:`~jaxpayne.fitting.binary.BinaryFitter` (``rv_span``, default
            :data:`VISIT_RV_SPAN`; ``q_bounds``, ...).
        **fitter_options: options of the single-star :class:`~jaxpayne.fitting.Fitter`
            (``continuum``, ``n_segments``, ``max_rv``, ...).

    Example:
        >>> fitter = VisitFitter(model, 3, velocities="orbit", binary="tied", networks=nets,
        ...                      continuum="cheb:4", n_segments=3)
        >>> star = [fitter.observation(wave, f, error=e) for f, e in zip(fluxes, errors)]
        >>> result = fitter.fit(fitter.batch([star]))
    """

    def __init__(self, model: Any, n_visits: int, *, velocities: str = "per-visit", binary: str | None = None,
                 networks: Mapping[str, Any] | None = None, q_dyn_bounds: tuple[float, float] = Q_DYN_BOUNDS,
                 lm_options: LMOptions = VISIT_LM_OPTIONS, compare: bool = True,
                 fixed: Mapping[str, float] | None = None, binary_options: Mapping[str, Any] | None = None,
                 visit_fitter=None, **fitter_options):
        import jax

        if velocities == "orbit" and binary is None and not isinstance(visit_fitter, BinaryFitter):
            raise ValueError("an orbit needs two stars: give binary='ratio'|'physical'|'tied'")
        if visit_fitter is None:
            if binary is None:
                visit_fitter = Fitter(model, **fitter_options)
            else:
                options = {"rv_span": VISIT_RV_SPAN, **dict(binary_options or {})}
                visit_fitter = BinaryFitter(model, weights=binary, networks=networks, **options, **fitter_options)
        self.visit_fitter = visit_fitter
        self.is_binary = isinstance(visit_fitter, BinaryFitter)
        self.single = visit_fitter.single if self.is_binary else visit_fitter
        if velocities != "constant" and self.single._rv_index is None:
            raise ValueError(f"{velocities!r} velocities need a free rv")
        self.forward = MultiVisitModel(visit_fitter.forward, n_visits, velocities=velocities,
                                       q_dyn_bounds=q_dyn_bounds, fixed=fixed)
        self.model = model
        self.n_visits = int(n_visits)
        self.velocities = velocities
        self.settings = self.single.settings
        self.space = self.forward.space
        self.param_names = self.space.free_names
        self.lm_options = lm_options
        self._offset, self._scale = self.space.unit_offset_scale()
        self._rv_names = self.forward.velocity_names
        self.derived = self.forward.derived_names
        self.comparison = None
        if self.is_binary and compare:
            self.comparison = VisitFitter(model, n_visits, velocities="per-visit", lm_options=lm_options,
                                          visit_fitter=self.single)
        single_names = self.comparison.param_names if self.comparison is not None else ()
        visit_names = tuple(f"visit_{self.forward.visit_name(n, v)}" for n in self.forward.inner_velocities
                            for v in range(self.n_visits))
        #: Extra table columns: the comparison with the joint SB1 fit, the derived quantities and
        #: the per-visit fits' velocities.
        self.extra_columns = ((comparison_columns(single_names, self.derived) if self.comparison is not None
                               else tuple(c for n in self.derived for c in (n, f"{n}_err")))
                              + tuple(c for n in visit_names for c in (n, f"{n}_err")))
        self._fit_batch = jax.jit(jax.vmap(self._fit_one))
        self._derived = jax.jit(jax.vmap(self._derived_one)) if self.derived else None

    # --------------------------------------------------------------------------- description
    def describe_settings(self) -> dict:
        """Every setting that changes a fit's result (JSON-serialisable)."""
        mv = self.forward
        return {
            "visits": {"n_visits": self.n_visits, "velocities": self.velocities,
                       "parameters": list(self.param_names), "fixed": mv.fixed,
                       "q_dyn_bounds": list(mv.q_dyn_bounds), "lm_options": self.lm_options._asdict(),
                       "compare": self.comparison is not None},
            "visit": self.visit_fitter.describe_settings(),
        }

    def observation(self, wavelength, flux, ivar=None, **options):
        """One visit's checked observation (see :meth:`~jaxpayne.fitting.Fitter.observation`)."""
        return self.single.observation(wavelength, flux, ivar, **options)

    def stitch(self, visits: Sequence, length: int | None = None):
        """One star's visits as one stitched observation (:meth:`~jaxpayne.forward.MultiVisitModel.stitch`)."""
        return self.forward.stitch(visits, length)

    def batch(self, stars: Sequence[Sequence], length: int | None = None):
        """A (B, V·n) batch of stitched stars from B lists of V visit observations, every visit
        padded to ``length`` pixels (default: the longest visit of the batch)."""
        stars = [list(visits) for visits in stars]
        if not stars:
            raise ValueError("no stars to fit")
        longest = max(int(np.shape(o.flux)[0]) for visits in stars for o in visits)
        length = longest if length is None else int(length)
        if length < longest:
            raise ValueError(f"visit length {length} is shorter than the longest visit ({longest} pixels)")
        return pad_observations([self.stitch(visits, length) for visits in stars])

    # --------------------------------------------------------------------------- compiled pieces
    def _fit_one(self, obs, window, starts, lower, upper):
        fit, _, _ = multistart_lm(self.forward, obs, window, starts, lower, upper, settings=self.settings,
                                  options=self.lm_options, offset=self._offset, scale=self._scale,
                                  explore_iterations=VISIT_EXPLORE_ITERATIONS)
        return fit

    def _derived_one(self, theta):
        import jax
        import jax.numpy as jnp

        def derived(t):
            values = self.forward.derived_values(self.space.unflatten(t))
            return jnp.stack([jnp.asarray(values[n]) for n in self.derived])

        return derived(theta), jax.jacfwd(derived)(theta)

    # --------------------------------------------------------------------------- starts
    def _visit_fits(self, observations):
        """Every visit of every star fitted on its own: a BatchFit of B·V rows (star-major)."""
        import jax

        batch = jax.tree_util.tree_map(lambda x: np.asarray(x), observations)
        visits = jax.vmap(self.forward.unstitch)(batch)
        flat = jax.tree_util.tree_map(lambda x: np.reshape(np.asarray(x), (-1,) + np.shape(x)[2:]), visits)
        return self.visit_fitter.fit(flat)

    def _starts(self, visits: BatchFit, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(B, K, n) starts, (B, 2) velocity windows and, for a binary, the single-star fit of each
        star's best-resolved visit, from the per-visit fits."""
        V = self.n_visits
        names = self.visit_fitter.param_names
        inner = self.forward.inner_velocities
        theta = np.asarray(visits.theta, np.float64).reshape(batch, V, len(names))
        initial = np.asarray(self.visit_fitter.space.free_initial, np.float64)
        theta = np.where(np.isfinite(theta), theta, initial)
        score = np.zeros((batch, V))
        if visits.extra and "delta_chi2" in visits.extra:
            score = np.nan_to_num(np.asarray(visits.extra["delta_chi2"], np.float64).reshape(batch, V), nan=-np.inf)
        elif visits.chi2 is not None:
            red = np.asarray(visits.chi2, np.float64) / np.maximum(np.asarray(visits.dof), 1)
            score = -np.nan_to_num(red.reshape(batch, V), nan=np.inf)
        # an orbit's secondary may lie beyond the per-visit fits' velocities: their search span too
        margin = RV_WINDOW + (self.visit_fitter.rv_span if self.is_binary else 0.0)
        starts, windows, singles = [], [], []
        for b in range(batch):
            per = [dict(zip(names, theta[b, v])) for v in range(V)]
            best = per[int(np.argmax(score[b]))]
            median = {n: float(np.median([p[n] for p in per])) for n in names}
            candidates = []
            for labels in (best, median):
                values = dict(labels)
                if self.velocities == "orbit":
                    first, second = inner
                    rv1, gamma, q, _ = orbit_start([p[first] for p in per], [p[second] for p in per],
                                                   self.forward.q_dyn_bounds, values.get("q", 0.8))
                    values.update(gamma=gamma, q_dyn=q)
                    values.update({self.forward.visit_name(first, v): rv1[v] for v in range(V)})
                elif self.velocities == "per-visit":
                    for name in inner:
                        values.update({self.forward.visit_name(name, v): per[v][name] for v in range(V)})
                else:
                    values.update({name: float(np.median([p[name] for p in per])) for name in inner})
                candidates.append(np.array([values.get(n, self.space.free_initial[i])
                                            for i, n in enumerate(self.param_names)], np.float64))
            starts.append(np.stack(candidates))
            velocities = np.array([p[n] for p in per for n in inner]) if inner else np.zeros(1)
            windows.append((velocities.min() - margin, velocities.max() + margin))
            if self.is_binary:
                v = int(np.argmax(score[b]))
                singles.append([float(np.asarray(visits.extra[f"single_{n}"])[b * V + v])
                                for n in self.single.param_names])
        limit = self.single.forward.max_rv
        theta_single = None
        if self.is_binary:
            theta_single = np.asarray(singles, np.float64)
            theta_single = np.where(np.isfinite(theta_single), theta_single, self.single.space.free_initial)
        return np.stack(starts), np.clip(np.array(windows), -limit, limit), theta_single

    def bounds(self, windows: np.ndarray, theta_single: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, n) bounds: the box, every velocity (and γ) inside the star's window, and the visit
        fitter's own bounds (a tied binary's q floor) for the parameters it shares."""
        lower, upper = window_bounds(self.space, self._rv_names, windows)
        if self.is_binary and "q" in self.param_names:
            # the per-visit single-star fit of the best-resolved visit sets the q floor
            k = self.param_names.index("q")
            lower[:, k] = np.minimum(self.visit_fitter.q_floor(theta_single), upper[:, k] - 1e-3)
        return lower, upper

    # --------------------------------------------------------------------------- batches
    def fit(self, observations, fixed: Mapping[str, Any] | None = None) -> BatchFit:
        """Fit a batch of stitched observations (leading batch axis: stars).

        Args:
            observations: (B, V·n) stitched visits (:meth:`batch`).
            fixed: not supported (per-star fixed values).

        Returns:
            A :class:`~jaxpayne.fitting.BatchFit` of the joint fits; ``extra`` holds
            :attr:`extra_columns`.
        """
        if fixed:
            raise ValueError("per-spectrum fixed values are not supported by multi-visit fits")
        return self._fit(observations)

    def _fit(self, observations, visits: BatchFit | None = None, windows: np.ndarray | None = None) -> BatchFit:
        """:meth:`fit`, optionally from ready per-visit fits and in given velocity windows (the
        SB1 comparison of a binary: its visits' single-star fits, the binary's windows and so
        its pixels)."""
        import jax.numpy as jnp

        batch = int(np.shape(observations.flux)[0])
        if visits is None:
            visits = self._visit_fits(observations)
        starts, own_windows, theta_single = self._starts(visits, batch)
        windows = own_windows if windows is None else windows
        lower, upper = self.bounds(windows, theta_single)
        span = np.where(np.isfinite(upper - lower), upper - lower, 0.0)
        starts = np.clip(starts, (lower + 1e-3 * span)[:, None], (upper - 1e-3 * span)[:, None])
        dtype = jnp.asarray(observations.flux).dtype
        fit = self._fit_batch(observations, jnp.asarray(windows, dtype), jnp.asarray(starts, dtype),
                              jnp.asarray(lower, dtype), jnp.asarray(upper, dtype))
        failed = np.all(((np.asarray(visits.flags) & int(Flags.FAILED | Flags.FEW_PIXELS)) != 0)
                        .reshape(batch, self.n_visits), axis=1)
        result = batch_result(self.space, self.forward.label_names or self.single.forward.label_names, fit,
                              self._scale, self.settings.inflation, {n: windows for n in self._rv_names},
                              failed=failed)
        extra = self._derived_columns(result)
        extra.update(self.visit_columns(visits, batch))
        if self.comparison is not None:
            sb1 = self.comparison._fit(observations, self._single_visits(visits), windows)
            extra.update(self._comparison(result, sb1))
        return result._replace(extra=extra or None)

    def visit_columns(self, visits: BatchFit, batch: int) -> dict:
        """The velocities of the per-visit fits, each with its error, as ``visit_<name>`` columns
        (``visit_rv_1_v0``, ...; for an orbit after the assignment of :func:`orbit_start`, so
        ``visit_rv_1`` is always the star the joint fit calls 1): the independent check that the
        velocities move as the joint model says."""
        V, names = self.n_visits, self.visit_fitter.param_names
        inner = self.forward.inner_velocities
        theta = np.asarray(visits.theta, np.float64).reshape(batch, V, len(names))
        error = np.sqrt(np.einsum("bii->bi", np.asarray(visits.covariance, np.float64))).reshape(batch, V, len(names))
        out = {}
        for name in inner:
            k = names.index(name)
            values, errors = theta[:, :, k].copy(), error[:, :, k].copy()
            if self.velocities == "orbit":
                other = names.index(inner[1] if name == inner[0] else inner[0])
                for b in range(batch):
                    rv1 = orbit_start(theta[b, :, names.index(inner[0])], theta[b, :, names.index(inner[1])],
                                      self.forward.q_dyn_bounds)[0]
                    swap = ~np.isclose(rv1, theta[b, :, names.index(inner[0])])
                    values[b] = np.where(swap, theta[b, :, other], values[b])
                    errors[b] = np.where(swap, error[b, :, other], errors[b])
            for v in range(V):
                column = f"visit_{self.forward.visit_name(name, v)}"
                out[column], out[f"{column}_err"] = values[:, v], errors[:, v]
        return out

    def _single_visits(self, visits: BatchFit) -> BatchFit:
        """The per-visit single-star fits a binary visit fitter made first (its ``single_*``)."""
        names = self.single.param_names
        theta = np.stack([np.asarray(visits.extra[f"single_{n}"], np.float64) for n in names], axis=1)
        chi2 = np.asarray(visits.extra["chi2_single"], np.float64)
        dof = np.asarray(visits.n_pixels) - len(names)
        return visits._replace(theta=theta, chi2=chi2, dof=dof, extra=None,
                               covariance=np.full(theta.shape + (len(names),), np.nan))

    def _derived_columns(self, result: BatchFit) -> dict:
        import jax.numpy as jnp

        extra = {}
        if not self.derived:
            return extra
        safe = np.where(np.isfinite(result.theta), result.theta, self.space.free_initial[None])
        values, grads = (np.asarray(a, np.float64) for a in self._derived(jnp.asarray(safe, jnp.float32)))
        ok = np.all(np.isfinite(result.theta), axis=1)
        for d, name in enumerate(self.derived):
            g = grads[:, d, :]
            var = np.einsum("bi,bij,bj->b", g, np.nan_to_num(result.covariance), g)
            extra[name] = np.where(ok, values[:, d], np.nan)
            extra[f"{name}_err"] = np.where(ok, np.sqrt(np.clip(var, 0.0, None)), np.nan)
        return extra

    def _comparison(self, result: BatchFit, sb1: BatchFit) -> dict:
        """Δχ² and BIC of the binary against the joint SB1 fit (same pixels: both restrict to
        the pixels covered in their windows; the counts are reported as they are)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            log_n = np.log(np.maximum(result.n_pixels.astype(np.float64), 1.0))
            bic_single = sb1.chi2 + self.comparison.space.n_free * log_n
            bic_binary = result.chi2 + self.space.n_free * log_n
        extra = {"chi2_single": sb1.chi2, "delta_chi2": sb1.chi2 - result.chi2, "bic_single": bic_single,
                 "bic_binary": bic_binary, "delta_bic": bic_single - bic_binary}
        for j, name in enumerate(self.comparison.param_names):
            extra[f"single_{name}"] = np.asarray(sb1.theta[:, j], np.float64)
        return extra
