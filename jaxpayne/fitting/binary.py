"""Batched fits of double-lined (SB2) binaries, with the single-star fit beside them.

:class:`BinaryFitter` fits a :class:`~jaxpayne.forward.CompositeModel` to a batch of spectra in
four compiled steps, every one a composition of public pieces:

1. the single-star :class:`~jaxpayne.fitting.Fitter` (pre-search, Levenberg–Marquardt): the
   comparison model and the start;
2. a **two-velocity pre-search**: χ² of the composite on a grid of (rv₁, rv₂) around the
   single-star velocity (± ``rv_span`` in steps of ``rv_step``) for a few values of the light
   ratio (flux ratio, mass ratio q, or the secondary's Teff), the components at the single-star
   labels — an SB2's χ² surface has a minimum wherever the two line sets line up with some lines
   of the data, so the optimiser must start in the right one. The emulator and the broadening are
   evaluated once per light ratio; each grid point costs a spline evaluation and the continuum
   step (:meth:`~jaxpayne.forward.CompositeModel.spectrum`,
   :func:`~jaxpayne.forward.apply_continuum`, :func:`~jaxpayne.forward.whitened_residuals`);
3. Levenberg–Marquardt (:func:`~jaxpayne.fitting.levenberg_marquardt`) on
   :func:`~jaxpayne.forward.residuals` of the composite from the best distinct grid points and
   from the *nested* start (the secondary a copy of the primary at the same velocity, whose
   spectrum is exactly the single star's), a few iterations each, the best refined to convergence
   — so the binary's χ² is never worse than the single star's;
4. the Laplace covariance (:func:`~jaxpayne.fitting.fitter.invert_fisher`), the shared
   :func:`~jaxpayne.fitting.fitter.quality_flags`, and the model comparison on the same pixels:
   ``chi2_single``, ``delta_chi2`` = χ²_single − χ²_binary and the Bayesian information criteria
   BIC = χ² + k ln n (Schwarz 1978, Ann. Stat. 6, 461), ``delta_bic`` = BIC_single − BIC_binary
   (> 0 favours the binary; > 10 is "very strong" evidence, Kass & Raftery 1995, JASA 90, 773).

Both components' velocities are confined to the single-star rv ± (``rv_span`` +
:data:`~jaxpayne.fitting.fitter.RV_WINDOW`), and every fit uses the pixels the model covers at all
velocities of that window.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from jaxpayne.fitting.fitter import BOUND_TOLERANCE, RV_WINDOW, BatchFit, Fitter, Flags
from jaxpayne.fitting.lm import LMOptions
from jaxpayne.fitting.multistart import (EXPLORE_ITERATIONS, batch_result, multistart_lm, restrict_pixels,
                                         window_bounds)
from jaxpayne.forward.composite import Q_BOUNDS, CompositeModel

__all__ = ["BinaryFitter", "DEFAULT_RV_SPAN", "DEFAULT_RV_STEP", "binary_fitter", "comparison_columns"]

#: Half-width [km/s] of the two-velocity pre-search grid around the single-star rv.
DEFAULT_RV_SPAN = 60.0
#: Step [km/s] of that grid (APOGEE's resolution element is ~13 km/s).
DEFAULT_RV_STEP = 5.0
#: Light-ratio values of the pre-search: flux ratio (``ratio``), mass ratio q (``tied``), or the
#: secondary's Teff offset from the single-star Teff [K] (``physical``).
DEFAULT_MIXES = {"ratio": (0.3, 0.7), "tied": (0.65, 0.9), "physical": (-300.0, -900.0)}
#: Optimiser starts: the nested one, then two grid minima and their exchanged twins.
DEFAULT_RESTARTS = 5
#: Default optimiser settings of binary fits (more parameters, longer valleys than one star).
BINARY_LM_OPTIONS = LMOptions(max_iter=80)
#: The q floor of ``tied`` fits is found for a primary this much hotter [K] than the single-star
#: fit (a composite's single-star Teff is a blend, cooler than the primary; binspec's starts
#: reach +500 K). Below it the companion's Teff is clipped to the box and the fit flagged AT_BOUND.
Q_FLOOR_TEFF_MARGIN = 500.0
#: Stars searched at once (vectorised) inside the compiled pre-search.
SEARCH_CHUNK = 8


def comparison_columns(single_names, derived=()) -> tuple[str, ...]:
    """The extra table columns of a binary fit: the comparison with the single-star fit, the
    single-star parameters and the derived labels with their errors."""
    cols = ["chi2_single", "delta_chi2", "bic_single", "bic_binary", "delta_bic"]
    for name in derived:
        cols += [name, f"{name}_err"]
    cols += [f"single_{n}" for n in single_names]
    return tuple(cols)


class BinaryFitter:
    """Fit a two-star composite model to many spectra at once, next to the single-star fit.

    Its interface is :class:`~jaxpayne.fitting.Fitter`'s (``observation``, ``fit`` → a
    :class:`~jaxpayne.fitting.BatchFit`, ``param_names``, ``describe_settings``) with
    :attr:`extra_columns`, so :func:`~jaxpayne.fitting.fit_spectra` (``jaxpayne fit --binary``)
    runs it unchanged: resumable tables, failures isolated per spectrum.

    Args:
        model: the spectral emulator (normalised spectra).
        weights: ``"ratio"``, ``"physical"`` or ``"tied"`` (see
            :class:`~jaxpayne.forward.CompositeModel`).
        networks: ``flux``, ``radius``, ``companion`` and ``continuum_pixels`` for physical or
            tied weights (e.g. :func:`jaxpayne.payne_format.load_binspec_networks`).
        shared: labels common to both stars (default the composition).
        ratio_per_segment, max_flux_ratio, q_bounds: see :class:`~jaxpayne.forward.CompositeModel`.
        rv_span: half-width [km/s] of the two-velocity pre-search around the single-star rv.
        rv_step: its step [km/s].
        mixes: light-ratio values of the pre-search (default :data:`DEFAULT_MIXES`).
        restarts: optimiser starts (the nested one, the best distinct grid points and their
            exchanged twins).
        lm_options: optimiser settings of the binary fit.
        fixed: composite parameter name → value held fixed (e.g. ``{"vmacro_2": 3.0}``).
        single: a ready single-star :class:`~jaxpayne.fitting.Fitter` (else built from
            ``fitter_options``; its rv must be free).
        **fitter_options: options of the single-star :class:`~jaxpayne.fitting.Fitter`
            (``continuum``, ``n_segments``, ``resolution``, ``max_rv``, ``vsini``, ...).

    Example:
        >>> nets = load_binspec_networks(folder, model.label_names)
        >>> fitter = BinaryFitter(model, weights="tied", networks=nets, continuum="cheb:4", n_segments=3)
        >>> result = fitter.fit(batch)       # result.extra["delta_bic"], result.theta ...
    """

    def __init__(
        self,
        model: Any,
        *,
        weights: str = "ratio",
        networks: Mapping[str, Any] | None = None,
        shared=None,
        ratio_per_segment: bool | None = None,
        max_flux_ratio: float = 1.0,
        q_bounds: tuple[float, float] = Q_BOUNDS,
        rv_span: float = DEFAULT_RV_SPAN,
        rv_step: float = DEFAULT_RV_STEP,
        mixes=None,
        restarts: int = DEFAULT_RESTARTS,
        lm_options: LMOptions = BINARY_LM_OPTIONS,
        fixed: Mapping[str, float] | None = None,
        single: Fitter | None = None,
        **fitter_options,
    ):
        import jax

        if single is not None and fitter_options:
            raise ValueError(f"give either a ready single-star fitter or its options, not both "
                             f"(got {sorted(fitter_options)})")
        if fitter_options.get("rv") is False:
            raise ValueError("a binary fit needs free radial velocities (rv=True)")
        self.single = single if single is not None else Fitter(model, **fitter_options)
        if self.single._rv_index is None:
            raise ValueError("a binary fit needs a single-star fitter with a free rv")
        nets = dict(networks or {})
        unknown = sorted(set(nets) - {"flux", "radius", "companion", "continuum_pixels"})
        if unknown:
            raise ValueError(f"unknown networks {unknown}; expected flux, radius, companion, continuum_pixels")
        if weights == "physical":
            nets.pop("companion", None)
        elif weights == "ratio":
            nets = {}
        self.forward = CompositeModel(self.single.forward, 2, weights=weights, shared=shared,
                                      ratio_per_segment=ratio_per_segment, max_flux_ratio=max_flux_ratio,
                                      q_bounds=q_bounds, fixed=fixed, **nets)
        self.model = model
        self.weights = weights
        self.settings = self.single.settings
        self.space = self.forward.space
        self.param_names = self.space.free_names
        self.lm_options = lm_options
        self.rv_span, self.rv_step = float(rv_span), float(rv_step)
        if not (self.rv_span > 0 and self.rv_step > 0):
            raise ValueError("rv_span and rv_step must be > 0")
        self.mixes = tuple(float(m) for m in (mixes if mixes is not None else DEFAULT_MIXES[weights]))
        self.restarts = max(1, int(restarts))
        self._offset, self._scale = self.space.unit_offset_scale()
        self._u_lower, self._u_upper = self.space.unit_bounds()
        self._rv_names = self.forward.velocity_names
        if len(self._rv_names) != 2:
            raise ValueError("both radial velocities (rv_1, rv_2) must be free")
        self._offsets = np.arange(-self.rv_span, self.rv_span + 0.5 * self.rv_step, self.rv_step)
        self.derived = tuple(f"{n}_2" for n in self.forward.derived)
        #: Extra table columns (see :func:`comparison_columns`).
        self.extra_columns = comparison_columns(self.single.param_names, self.derived)
        self._search = jax.jit(self._search_batch)
        self._fit_batch = jax.jit(jax.vmap(self._fit_one))
        self._derived = jax.jit(jax.vmap(self._derived_one))

    # --------------------------------------------------------------------------- description
    def describe_settings(self) -> dict:
        """Every setting that changes a fit's result (JSON-serialisable; recorded in tables)."""
        cm = self.forward
        return {
            "binary": {
                "weights": self.weights, "parameters": list(self.param_names), "fixed": cm.fixed,
                "shared": list(cm.shared), "bounds": {n: [float(lo), float(hi)] for n, lo, hi in
                                                      zip(self.param_names, cm.lower, cm.upper)},
                "rv_span": self.rv_span, "rv_step": self.rv_step, "mixes": list(self.mixes),
                "restarts": self.restarts, "lm_options": self.lm_options._asdict(),
                "networks": {k: getattr(getattr(cm, f"{k}_model", None), "provenance", {}).get("imported_from")
                             for k in ("flux", "radius")},
            },
            "single": self.single.describe_settings(),
        }

    def observation(self, wavelength, flux, ivar=None, **options):
        """A checked observation (see :meth:`~jaxpayne.fitting.Fitter.observation`)."""
        return self.single.observation(wavelength, flux, ivar, **options)

    # --------------------------------------------------------------------------- one spectrum
    def _composite_values(self, single_values, mix):
        """Composite parameters with both stars at the single-star values and light ratio ``mix``
        (traceable)."""
        import jax.numpy as jnp

        cm = self.forward
        values = {}
        for name in cm.space.names:
            base = cm.base_name(name)
            if base in single_values:
                values[name] = single_values[base]
        dtype = jnp.asarray(single_values["rv"]).dtype
        if self.weights == "ratio":
            for name in cm.ratio_names(2):
                values[name] = jnp.asarray(mix, dtype)
        elif self.weights == "tied":
            values["q"] = jnp.asarray(mix, dtype)
        else:
            lo, hi = cm.space.bounds_of("teff_2") if "teff_2" in cm.space.names else (-np.inf, np.inf)
            if "teff_2" in values:
                values["teff_2"] = jnp.clip(values["teff_2"] + mix, lo, hi)
        values.update({k: jnp.asarray(v, dtype) for k, v in cm.fixed.items()})
        return values

    def _search_one(self, obs, theta_single, window):
        """(n_mix, G, G) χ² of the composite on the (rv₁, rv₂) grid around the single-star rv."""
        import jax
        import jax.numpy as jnp

        from jaxpayne.forward import apply_continuum, whitened_residuals

        cm, settings = self.forward, self.settings
        obs, data, _ = restrict_pixels(cm, obs, window)
        dtype = obs.flux.dtype
        single_values = self.single.space.unflatten(theta_single.astype(dtype))
        offsets = jnp.asarray(self._offsets, dtype)
        error = cm.uses_emulator_error(settings)
        out = []
        for mix in self.mixes:
            base = self._composite_values(single_values, mix)

            def chi2(rv1, rv2, base=base):
                values = dict(base, rv_1=single_values["rv"] + rv1, rv_2=single_values["rv"] + rv2)
                normalized = apply_continuum(cm, cm.spectrum(values, obs, emulator_error=error), data, values,
                                             settings.inflation)
                r = whitened_residuals(normalized, settings.inflation)
                return jnp.sum(r * r)

            def row(a, chi2=chi2):
                return jax.vmap(lambda b: chi2(a, b))(offsets)

            out.append(jax.lax.map(row, offsets))
        return jnp.stack(out)

    def _search_batch(self, observations, theta_single, windows):
        import jax

        return jax.lax.map(lambda args: self._search_one(*args), (observations, theta_single, windows),
                           batch_size=SEARCH_CHUNK)

    def _fit_one(self, obs, window, starts, theta_single, lower, upper):
        from jaxpayne.forward import residuals

        fit, obs, data = multistart_lm(self.forward, obs, window, starts, lower, upper, settings=self.settings,
                                       options=self.lm_options, offset=self._offset, scale=self._scale,
                                       explore_iterations=EXPLORE_ITERATIONS)
        single = residuals(self.single.forward, theta_single.astype(obs.flux.dtype), obs, None, self.settings, data)
        return fit, (single * single).sum()

    def _derived_one(self, theta):
        """The derived labels (teff_2, logg_2 of tied weights) and their gradients."""
        import jax
        import jax.numpy as jnp

        def derived(t):
            values = self.forward.derived_values(self.space.unflatten(t))
            return jnp.stack([values[n] for n in self.derived])

        return derived(theta), jax.jacfwd(derived)(theta)

    # --------------------------------------------------------------------------- starts
    def _windows(self, rv_single: np.ndarray) -> np.ndarray:
        limit = self.single.forward.max_rv
        half = self.rv_span + RV_WINDOW
        rv = np.nan_to_num(rv_single)
        return np.column_stack([np.clip(rv - half, -limit, limit), np.clip(rv + half, -limit, limit)])

    def bounds(self, windows: np.ndarray, theta_single: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, n) lower and upper bounds of each binary fit: the box, both velocities inside the
        window, and for ``tied`` weights q ≥ the smallest mass ratio whose companion the
        emulator's box holds (binspec's ``min_q``, see :meth:`q_floor`; the companion's
        labels are clipped to the box, so below it q would only move log g₂)."""
        lower, upper = window_bounds(self.space, self._rv_names, windows)
        if self.weights == "tied" and "q" in self.param_names:
            k = self.param_names.index("q")
            lower[:, k] = np.minimum(self.q_floor(theta_single), upper[:, k] - 1e-3)
        return lower, upper

    def q_floor(self, theta_single: np.ndarray) -> np.ndarray:
        """(B,) smallest q whose predicted companion Teff lies inside the emulator's box for a
        primary :data:`Q_FLOOR_TEFF_MARGIN` hotter than the single-star fit."""
        cm = self.forward
        grid = np.linspace(*self.forward.q_bounds, 161)
        name = cm.derived[0] if cm.derived and cm.derived[0].lower() == "teff" else None
        if name is None:
            return np.full(theta_single.shape[0], self.forward.q_bounds[0])
        floor = cm.base.space.bounds_of(name)[0]
        inputs = cm.companion.model.label_names
        rows = []
        for theta in theta_single:
            values = {**self.single.space.fixed, **dict(zip(self.single.param_names, theta))}
            # the hottest primary the fit may reach: a blend's single-star Teff is too cool
            values[name] = values[name] + Q_FLOOR_TEFF_MARGIN
            rows.append(np.stack([grid if n == "q" else np.full(grid.shape, values[n]) for n in inputs], axis=1))
        labels = np.concatenate(rows).astype(np.float32)  # every star's q grid in one call
        teff2 = np.asarray(cm.companion.model.predict(labels), np.float64)[:, 0] * cm.companion.scales[0]
        ok = teff2.reshape(theta_single.shape[0], grid.size) >= floor
        out = np.where(ok.any(axis=1), grid[np.argmax(ok, axis=1)], grid[-1])
        return np.maximum(out, self.forward.q_bounds[0])

    def _start(self, theta_single: np.ndarray, rv1: float, rv2: float, mix: float) -> np.ndarray:
        """A start vector (physical units) from the single-star fit, two velocities and a mix."""
        single_values = {**self.single.space.fixed, **dict(zip(self.single.param_names, theta_single))}
        values = self._composite_values(single_values, mix)
        values["rv_1"], values["rv_2"] = rv1, rv2
        theta = np.array([float(values[n]) if n in values else float(self.space.free_initial[i])
                          for i, n in enumerate(self.param_names)])
        lo, hi = self.space.free_lower, self.space.free_upper
        span = np.where(np.isfinite(hi - lo), hi - lo, 0.0)
        return np.clip(theta, lo + 1e-3 * span, hi - 1e-3 * span)

    def _starts(self, chi2_grid: np.ndarray, theta_single: np.ndarray) -> np.ndarray:
        """(B, restarts, n) starts: the nested one, then the best grid points at least two grid
        steps (or one light ratio) apart, each followed by its exchanged twin (rv₁ ↔ rv₂)."""
        batch = theta_single.shape[0]
        out = np.empty((batch, self.restarts, self.space.n_free))
        nested_mix = {"ratio": 0.5 * self.forward.max_flux_ratio, "tied": self.forward.q_bounds[1],
                      "physical": 0.0}[self.weights]
        for b in range(batch):
            theta_s = np.where(np.isfinite(theta_single[b]), theta_single[b], self.single.space.free_initial)
            rv0 = float(theta_s[self.single._rv_index])
            chosen = [self._start(theta_s, rv0, rv0, nested_mix)]
            picked: list[tuple[int, int, int]] = []
            grid = np.where(np.isfinite(chi2_grid[b]), chi2_grid[b], np.inf)
            for flat in np.argsort(grid, axis=None):
                if len(chosen) >= self.restarts or not np.isfinite(grid.flat[flat]):
                    break
                m, i, j = np.unravel_index(flat, grid.shape)
                if any(m == pm and abs(i - pi) <= 2 and abs(j - pj) <= 2 for pm, pi, pj in picked):
                    continue
                picked.append((m, i, j))
                chosen.append(self._start(theta_s, rv0 + self._offsets[i], rv0 + self._offsets[j], self.mixes[m]))
                if len(chosen) < self.restarts and abs(i - j) > 2:
                    # the components exchanged: near q ≈ 1 both orders fit almost equally well
                    picked.append((m, j, i))
                    chosen.append(self._start(theta_s, rv0 + self._offsets[j], rv0 + self._offsets[i],
                                              self.mixes[m]))
            while len(chosen) < self.restarts:
                chosen.append(chosen[0])
            out[b] = np.stack(chosen)
        return out

    # --------------------------------------------------------------------------- batches
    def fit(self, observations, fixed: Mapping[str, Any] | None = None) -> BatchFit:
        """Fit a batch of observations (leading batch axis) with the binary and the single-star
        model.

        Args:
            observations: the batch (e.g. :func:`~jaxpayne.forward.pad_observations` of
                :meth:`observation` results).
            fixed: not supported for binaries (per-spectrum fixed values of the single fit).

        Returns:
            A :class:`~jaxpayne.fitting.BatchFit` of the binary fits, whose ``extra`` holds the
            columns of :attr:`extra_columns` (the comparison and the single-star parameters).
        """
        import jax.numpy as jnp

        if fixed:
            raise ValueError("per-spectrum fixed values are not supported by binary fits")
        single = self.single.fit(observations)
        dtype = jnp.asarray(observations.flux).dtype
        theta_s = np.where(np.isfinite(single.theta), single.theta, self.single.space.free_initial[None])
        windows = self._windows(single.theta[:, self.single._rv_index])
        grid = np.asarray(self._search(observations, jnp.asarray(theta_s, dtype), jnp.asarray(windows, dtype)),
                          np.float64)
        lower, upper = self.bounds(windows, theta_s)
        span = np.where(np.isfinite(upper - lower), upper - lower, 0.0)
        starts = np.clip(self._starts(grid, theta_s), (lower + 1e-3 * span)[:, None], (upper - 1e-3 * span)[:, None])
        fit, chi2_single = self._fit_batch(observations, jnp.asarray(windows, dtype), jnp.asarray(starts, dtype),
                                           jnp.asarray(theta_s, dtype), jnp.asarray(lower, dtype),
                                           jnp.asarray(upper, dtype))
        single_bad = (single.flags & int(Flags.FAILED | Flags.FEW_PIXELS)) != 0
        result = batch_result(self.space, self.forward.label_names, fit, self._scale, self.settings.inflation,
                              {name: windows for name in self._rv_names}, failed=single_bad)
        theta, cov, chi2, flags = result.theta, result.covariance, result.chi2, result.flags
        bad = ~np.isfinite(chi2)
        chi2_single = np.where(bad, np.nan, np.asarray(chi2_single, np.float64) * self.settings.inflation**2)
        extra = self._comparison(theta, cov, chi2, chi2_single, result.n_pixels, single)
        if "q" in self.param_names:  # a mass ratio at its bounds: near-twins, or a companion off the box
            k = self.param_names.index("q")
            tol = BOUND_TOLERANCE * (upper[:, k] - lower[:, k])
            flags |= np.where((theta[:, k] <= lower[:, k] + tol) | (theta[:, k] >= upper[:, k] - tol),
                              int(Flags.AT_BOUND), 0)
        for name in self.derived:  # a companion label held at the emulator's box
            lo, hi = self.forward.base.space.bounds_of(self.forward.base_name(name))
            tol = BOUND_TOLERANCE * (hi - lo)
            flags |= np.where((extra[name] <= lo + tol) | (extra[name] >= hi - tol), int(Flags.AT_BOUND), 0)
        return result._replace(flags=flags, extra=extra)

    def _comparison(self, theta, cov, chi2, chi2_single, n_pix, single) -> dict:
        """The extra columns: Δχ², BIC of both models, derived labels, single-star parameters."""
        import jax.numpy as jnp

        with np.errstate(divide="ignore", invalid="ignore"):
            log_n = np.log(np.maximum(n_pix.astype(np.float64), 1.0))
            bic_single = chi2_single + self.single.space.n_free * log_n
            bic_binary = chi2 + self.space.n_free * log_n
        extra = {"chi2_single": chi2_single, "delta_chi2": chi2_single - chi2, "bic_single": bic_single,
                 "bic_binary": bic_binary, "delta_bic": bic_single - bic_binary}
        if self.derived:
            safe = np.where(np.isfinite(theta), theta, self.space.free_initial[None])
            values, grads = (np.asarray(a, np.float64) for a in self._derived(jnp.asarray(safe)))
            for d, name in enumerate(self.derived):
                g = grads[:, d, :]
                var = np.einsum("bi,bij,bj->b", g, np.nan_to_num(cov), g)
                ok = np.all(np.isfinite(theta), axis=1)
                extra[name] = np.where(ok, values[:, d], np.nan)
                extra[f"{name}_err"] = np.where(ok, np.sqrt(np.clip(var, 0.0, None)), np.nan)
        for j, name in enumerate(self.single.param_names):
            extra[f"single_{name}"] = np.asarray(single.theta[:, j], np.float64)
        return extra


def binary_fitter(model, weights: str = "ratio", networks=None, rv_span: float | None = None,
                  **single_options) -> BinaryFitter:
    """A :class:`BinaryFitter` whose single-star fit has ``single_options`` (its restarts
    included; the binary keeps its own), as ``jaxpayne fit --binary`` builds it.

    Args:
        model: the single-star model.
        weights: ``"ratio"``, ``"physical"`` or ``"tied"``.
        networks: binspec's flux, radius and companion networks for physical or tied weights:
            their folder (read with :func:`jaxpayne.payne_format.load_binspec_networks`) or the
            loaded mapping.
        rv_span: half-width of the two-velocity pre-search [km/s] (default
            :data:`DEFAULT_RV_SPAN`).
        **single_options: options of the single-star :class:`~jaxpayne.fitting.Fitter`.

    Raises:
        ValueError: physical or tied weights without networks, or rv not fitted.
    """
    if weights != "ratio" and networks is None:
        raise ValueError(f"binary weights {weights!r} need binspec's flux, radius and companion networks "
                         "(NN_unnormalized_spectra.npz, NN_radius.npz, NN_Teff2_logg2.npz)")
    if single_options.get("rv") is False:
        raise ValueError("a binary fit needs free radial velocities: drop rv=False (--no-rv)")
    if isinstance(networks, (str, os.PathLike)):
        from jaxpayne.payne_format import load_binspec_networks

        networks = load_binspec_networks(networks, model.label_names)
    return BinaryFitter(model, weights=weights, networks=None if weights == "ratio" else networks,
                        rv_span=DEFAULT_RV_SPAN if rv_span is None else float(rv_span),
                        single=Fitter(model, **single_options))
