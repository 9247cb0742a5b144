"""Posterior sampling with NUTS: one star with several chains, or thousands of stars in one
compiled call.

:class:`Sampler` composes public pieces only: the batched Levenberg–Marquardt :class:`Fitter`
gives each star its start and Laplace covariance (the initial mass matrix), the forward model's
:meth:`~jaxpayne.forward.ForwardModel.usable_pixels` and :func:`~jaxpayne.forward.prepare_data`
give the data side, and :class:`~jaxpayne.sampling.Posterior` the density. NumPyro's functional
NUTS (:func:`numpyro.infer.hmc.hmc`) runs on it, ``vmap``-ed over stars and chains, so every
chain of every star has its own step size and dense mass matrix, adapted in Stan's windowed
warmup.

Under ``vmap`` a NUTS iteration lasts as long as the longest trajectory in the batch: the tree
depth is capped (:data:`DEFAULT_MAX_TREE_DEPTH`) and the *lockstep efficiency* — mean leapfrog
steps over the mean of each iteration's largest — is measured and recorded. ``chain_method=
"sequential"`` runs the chains one after another instead (no lockstep cost; on a CPU with few
cores often the faster choice for one star), and ``"parallel"`` does that on every local device
at once, the chains split over them (on a CPU, one host device per core:
:func:`numpyro.set_host_device_count`).

The pixels: each star's likelihood uses the pixels the model covers at every velocity of
rv₀ ± :data:`~jaxpayne.fitting.fitter.RV_WINDOW` (rv₀ the fit's), the same pixel set at every
draw; the uniform rv prior is truncated to that window (a posterior reaching its edge raises
RV_AT_LIMIT).

Binaries: ``binary="ratio"|"physical"|"tied"`` (or ``fitter=`` a
:class:`~jaxpayne.fitting.binary.BinaryFitter`) samples the composite model of a double-lined
binary, started from the binary fit: both velocities share the window from the lower of the
fitted velocities − RV_WINDOW to the higher + RV_WINDOW, and the composite's derived labels (the
tied companion's ``teff_2``, ``logg_2``) are computed for every draw and stored in the posterior
group beside the sampled parameters — the posterior of the mass ratio q and of what it implies.
"""

from __future__ import annotations

import functools
import json
import math
import time
from typing import Any, Mapping

import numpy as np

from jaxpayne.fitting.fitter import RV_WINDOW, BatchFit, Fitter
from jaxpayne.fitting.multistart import restrict_pixels
from jaxpayne.sampling.posterior import Posterior

__all__ = ["DEFAULT_MAX_TREE_DEPTH", "Sampler", "sample"]

#: Default cap of the NUTS tree depth (at most 2^depth − 1 leapfrog steps per iteration).
DEFAULT_MAX_TREE_DEPTH = 8
#: Dense mass matrices up to this many parameters, diagonal above.
DENSE_MASS_LIMIT = 30
#: Iterations per compiled call (the progress bar's granularity).
SEGMENT = 100
#: ``chain_method`` choices of :class:`Sampler`.
CHAIN_METHODS = ("auto", "vectorized", "sequential", "parallel")
#: Spread of the chains' starts, in units of the Laplace standard deviations.
START_SPREAD = 0.5
#: Fraction of a bound's range kept between a start and the bound.
START_MARGIN = 1e-3


class Sampler:
    """Draw posterior samples for many spectra at once.

    Args:
        model: a :class:`jaxpayne.Model` (or any emulator :class:`Fitter` takes).
        prior: the :class:`~jaxpayne.sampling.Prior` (None: uniform over the box; a dict of
            NumPyro distributions, or a joint log-density callable, also work).
        chains: chains per star.
        warmup: adaptation iterations per chain (discarded).
        samples: draws kept per chain.
        max_tree_depth: cap of the NUTS tree depth.
        target_accept: target acceptance probability of the step-size adaptation.
        dense_mass: dense mass matrix (default: when there are ≤ 30 parameters).
        chain_method: ``"vectorized"`` (stars and chains ``vmap``-ed in lockstep, the batch
            split over the local devices; the GPU choice), ``"sequential"`` (one chain after
            another on one device, no lockstep cost), ``"parallel"`` (one chain after another
            on each local device, the chains split over the devices: on a CPU, one device per
            core with :func:`numpyro.set_host_device_count`) or ``"auto"`` (default: vectorized
            on a GPU/TPU; on a CPU parallel when there are several devices, else sequential —
            vmapped chains gain little there and the per-pixel networks' batched contractions
            are slow; see ``benchmarks/README.md``).
        noise_scale: sample a factor on every uncertainty (``noise_scale``) too.
        terms: likelihood terms beside the spectrum's (:mod:`jaxpayne.sampling.terms`:
            :class:`~jaxpayne.sampling.terms.Seismic`,
            :class:`~jaxpayne.sampling.terms.LabelMeasurement`,
            :class:`~jaxpayne.photometry.Photometry` ...); their per-star data go to
            :meth:`sample` as ``constraints``, their latent parameters are sampled too.
        algorithm: ``"NUTS"`` (default) or ``"HMC"``: static HMC with a fixed trajectory length
            in the whitened coordinates (every star's trajectory has about the same number of
            steps, so a vmapped batch wastes little in lockstep; see ``trajectory_length``).
        trajectory_length: integration time of ``"HMC"`` (whitened units, where the posterior's
            standard deviations are ≈ 1; default 2.5, which measured best on mock stars, see
            ``benchmarks/README.md``).
        dtype: ``"float32"`` (default) or ``"float64"`` (needs ``jax_enable_x64``).
        seed: random seed (chains' starts and NUTS).
        binary: sample a double-lined binary: the weights (``"ratio"``, ``"physical"``,
            ``"tied"``) of a :class:`~jaxpayne.fitting.binary.BinaryFitter` built from
            ``fitter_options`` (None: one star).
        networks: the binary's flux, radius and companion networks
            (:func:`~jaxpayne.payne_format.load_binspec_networks`).
        fitter: a ready :class:`Fitter` or :class:`~jaxpayne.fitting.binary.BinaryFitter` for the
            starts (else built from ``fitter_options``).
        **fitter_options: forward-model and fit options of :class:`Fitter` (``rv``, ``vsini``,
            ``vmacro``, ``resolution``, ``continuum``, ``n_segments``, ``emulator_error`` ...).

    Example:
        >>> sampler = Sampler(model, prior={"logg": dist.Normal(2.45, 0.02)}, continuum="filter")
        >>> idata = sampler.sample(pad_observations([sampler.observation(w, f, ivar)]))
    """

    def __init__(
        self,
        model: Any,
        *,
        prior=None,
        chains: int = 4,
        warmup: int = 1000,
        samples: int = 1000,
        max_tree_depth: int = DEFAULT_MAX_TREE_DEPTH,
        target_accept: float = 0.8,
        dense_mass: bool | None = None,
        chain_method: str = "auto",
        noise_scale: bool = False,
        terms=(),
        algorithm: str = "NUTS",
        trajectory_length: float = 2.5,
        dtype: str = "float32",
        seed: int = 0,
        binary: str | None = None,
        networks: Mapping[str, Any] | None = None,
        fitter=None,
        **fitter_options,
    ):
        import jax

        if chains < 1 or warmup < 1 or samples < 1:
            raise ValueError("chains, warmup and samples must be >= 1")
        if chain_method not in CHAIN_METHODS:
            raise ValueError(f"chain_method must be one of {', '.join(map(repr, CHAIN_METHODS))}, got {chain_method!r}")
        if chain_method == "auto":
            if jax.default_backend() != "cpu":
                chain_method = "vectorized"
            else:
                chain_method = "parallel" if jax.local_device_count() > 1 else "sequential"
        if not 1 <= int(max_tree_depth) <= 15:
            raise ValueError("max_tree_depth must be in 1..15")
        if not 0.0 < float(target_accept) < 1.0:
            raise ValueError("target_accept must be in (0, 1)")
        if str(algorithm).upper() not in ("NUTS", "HMC"):
            raise ValueError(f"algorithm must be 'NUTS' or 'HMC', got {algorithm!r}")
        if not float(trajectory_length) > 0:
            raise ValueError("trajectory_length must be > 0")
        if str(dtype) not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if str(dtype) == "float64" and not jax.config.jax_enable_x64:
            raise ValueError("float64 sampling needs JAX's 64-bit mode: set JAX_ENABLE_X64=1 or "
                             "jax.config.update('jax_enable_x64', True) before using JAX")
        if fitter is not None and fitter_options:
            raise ValueError(f"give either a ready fitter or fit options, not both (got {sorted(fitter_options)})")
        if fitter is None and binary is not None:
            from jaxpayne.fitting.binary import BinaryFitter

            fitter = BinaryFitter(model, weights=binary, networks=networks, **fitter_options)
        self.fitter = fitter if fitter is not None else Fitter(model, seed=seed, **fitter_options)
        self.model = model
        self.forward = self.fitter.forward
        self.settings = self.fitter.settings
        self.posterior = Posterior(self.forward, prior, self.settings, noise_scale=noise_scale, terms=terms)
        self.space = self.posterior.space
        self.prior = self.posterior.prior
        self.chains, self.warmup, self.samples = int(chains), int(warmup), int(samples)
        self.max_tree_depth = int(max_tree_depth)
        self.target_accept = float(target_accept)
        self.dense_mass = self.space.n_free <= DENSE_MASS_LIMIT if dense_mass is None else bool(dense_mass)
        self.chain_method = chain_method
        self.algorithm = str(algorithm).upper()
        self.trajectory_length = float(trajectory_length)
        self.dtype = str(dtype)
        self.seed = int(seed)
        #: The free velocities (rv; rv_1, rv_2 of a binary) and their indices in θ.
        self.velocity_names = tuple(self.forward.velocity_names)
        self._rv_indices = tuple(self.space.index(n) for n in self.velocity_names)
        #: Quantities derived from every draw (a tied binary's teff_2, logg_2).
        self.derived = tuple(getattr(self.forward, "derived", ()))
        self.derived = tuple(f"{n}_2" for n in self.derived)
        self._segment = _segment_length(self.warmup, self.samples)
        self._compiled: dict = {}

    # --------------------------------------------------------------------------- description
    def describe_settings(self) -> dict:
        """Every setting that changes the draws (JSON-serialisable; recorded in the outputs)."""
        return {
            "fit": self.fitter.describe_settings(),
            "labels": list(self.forward.label_names),
            "velocities": list(self.velocity_names),
            "bounds": {**{n: [float(lo), float(hi)] for n, lo, hi in
                          zip(self.space.free_names, self.space.free_lower, self.space.free_upper)},
                       **self._derived_bounds()},
            "posterior": self.posterior.describe(),
            "chains": self.chains, "warmup": self.warmup, "samples": self.samples,
            "max_tree_depth": self.max_tree_depth, "target_accept": self.target_accept,
            "dense_mass": self.dense_mass, "chain_method": self.chain_method, "dtype": self.dtype,
            "seed": self.seed, "algorithm": self.algorithm,
            **({"trajectory_length": self.trajectory_length} if self.algorithm == "HMC" else {}),
        }

    def _derived_bounds(self) -> dict:
        """The emulator's box of each derived label (a tied companion's ``teff_2``, ``logg_2``
        are clipped to it): a posterior piled up on it is flagged AT_BOUND."""
        if not self.derived:
            return {}
        space = self.forward.base.space
        return {name: [float(v) for v in space.bounds_of(label)]
                for name, label in zip(self.derived, self.forward.derived)}

    def observation(self, wavelength, flux, ivar=None, **options):
        """A checked observation for this sampler (see :meth:`Fitter.observation`)."""
        return self.fitter.observation(wavelength, flux, ivar, **options)

    # --------------------------------------------------------------------------- the density
    def _potential_gen(self, obs, data, fixed, constraints, window, centre, chol):
        """The potential energy of one star in its whitened coordinates w (NumPyro's
        ``potential_fn_gen``): z = centre + chol · w maps w onto the unconstrained z of
        :meth:`~jaxpayne.forward.ParameterSpace.to_unconstrained`, with the fit's Laplace
        covariance in z as chol·cholᵀ, so every direction has a scale of order one (a constant
        Jacobian; the mass-matrix adaptation then starts from a well-scaled problem)."""
        import jax.numpy as jnp

        posterior, indices = self.posterior, jnp.asarray(self._rv_indices, jnp.int32)

        def potential(w):
            z = centre + chol @ w
            log_p = posterior.log_density_unconstrained(z, obs, fixed, data, constraints)
            if self._rv_indices:
                rv = posterior.space.from_unconstrained(z)[indices]
                log_p = jnp.where(jnp.all((rv >= window[0]) & (rv <= window[1])), log_p, -jnp.inf)
            return -log_p

        return potential

    def _star_inputs(self, obs, fixed, window):
        """One star's likelihood inputs: pixels usable over its velocity window, prepared data."""
        obs, data, _ = restrict_pixels(self.forward, obs, window)
        return obs, data

    # --------------------------------------------------------------------------- compiled parts
    def _kernels(self):
        from numpyro.infer.hmc import hmc

        return hmc(potential_fn_gen=self._potential_gen, algo=self.algorithm)

    def _functions(self):
        """(init, advance cache): jitted over the (star, chain) grid; cached per sampler."""
        if self._compiled:
            return self._compiled["init"], self._compiled["advance"]
        import jax

        init_kernel, sample_kernel = self._kernels()
        devices = jax.local_devices() if self.chain_method in ("parallel", "vectorized") else jax.local_devices()[:1]
        over = functools.partial(_over_grid, vectorize=self.chain_method == "vectorized", devices=devices)

        def init_one(obs, fixed, constraints, window, centre, chol, w0, key):
            obs, data = self._star_inputs(obs, fixed, window)
            state = init_kernel(
                w0, self.warmup, dense_mass=self.dense_mass,
                target_accept_prob=self.target_accept, max_tree_depth=self.max_tree_depth,
                trajectory_length=self.trajectory_length,
                model_args=(obs, data, fixed, constraints, window, centre, chol), rng_key=key,
            )
            return state

        def advance_one(state, obs, fixed, constraints, window, centre, chol, length, keep):
            obs, data = self._star_inputs(obs, fixed, window)

            def body(s, _):
                s = sample_kernel(s, model_args=(obs, data, fixed, constraints, window, centre, chol))
                stats = (s.num_steps, s.diverging)
                if keep:
                    stats = stats + (s.z, s.accept_prob, s.adapt_state.step_size, s.energy, s.potential_energy)
                return s, stats

            return jax.lax.scan(body, state, None, length=length)

        init = jax.jit(over(init_one, chain_axes=(None, None, None, None, None, None, 0, 0)))
        self._compiled.update(init=init, advance={}, advance_one=advance_one, over=over)
        return init, self._compiled["advance"]

    def _advance(self, length: int, keep: bool):
        import jax

        self._functions()
        table = self._compiled["advance"]
        if (length, keep) not in table:
            one = functools.partial(self._compiled["advance_one"], length=length, keep=keep)
            table[(length, keep)] = jax.jit(self._compiled["over"](one, chain_axes=(0, None, None, None, None, None, None)))
        return table[(length, keep)]

    # --------------------------------------------------------------------------- starts
    def _starts(self, fit: BatchFit, batch: int, rng: np.random.Generator, constraints: Mapping | None = None):
        """Each star's whitening (centre (B, n) and Cholesky factor (B, n, n) of the fit's
        Laplace covariance in the unconstrained z, the best fit clipped inside the box) and the
        chains' starts w₀ (B, C, n), spread START_SPREAD σ around the best fit."""
        import jax
        import jax.numpy as jnp

        space, n = self.space, self.space.n_free
        theta = np.array(fit.theta, np.float64)
        cov = np.array(fit.covariance, np.float64)
        if self.posterior.noise_scale:
            red = np.where(fit.dof > 0, fit.chi2 / np.maximum(fit.dof, 1), 1.0)
            scale = np.sqrt(np.clip(np.nan_to_num(red, nan=1.0), 1.0, None))
            theta = np.column_stack([theta, scale])
            k = cov.shape[1]
            grown = np.zeros((batch, k + 1, k + 1))
            grown[:, :k, :k] = cov
            grown[:, k, k] = scale**2 / (2.0 * np.maximum(fit.dof, 1))
            cov = grown
        if self.posterior.latent:  # the terms' latent parameters: their starts, spread by their scales
            starts = self._latent_starts(fit, batch, constraints)
            k = cov.shape[1]
            theta = np.column_stack([theta] + [starts[lat.name] for lat in self.posterior.latent])
            grown = np.zeros((batch, n, n))
            grown[:, :k, :k] = cov
            for j, lat in enumerate(self.posterior.latent):
                grown[:, k + j, k + j] = lat.scale**2
            cov = grown
        lo, hi = space.free_lower, space.free_upper
        span = np.where(np.isfinite(hi - lo), hi - lo, 1.0)
        centre = np.where(np.isfinite(lo) & np.isfinite(hi), 0.5 * (lo + hi), space.free_initial)
        theta = np.where(np.isfinite(theta), theta, centre)
        inner_lo = np.where(np.isfinite(lo), lo + START_MARGIN * span, -np.inf)
        inner_hi = np.where(np.isfinite(hi), hi - START_MARGIN * span, np.inf)
        theta = np.clip(theta, inner_lo, inner_hi)
        # dz/dθ of the elementwise bijection, at the best fit
        dz = np.asarray(jax.vmap(lambda t: jax.jvp(space.to_unconstrained, (t,), (jnp.ones_like(t),))[1])(
            jnp.asarray(theta)), np.float64)
        cov_z = cov * dz[:, :, None] * dz[:, None, :]
        chol = np.empty((batch, n, n))
        for b in range(batch):
            chol[b] = _safe_cholesky(cov_z[b])
        z_best = np.asarray(space.to_unconstrained(jnp.asarray(theta)), np.float64)
        w0 = START_SPREAD * rng.standard_normal((batch, self.chains, n))
        return z_best, chol, w0

    def _latent_starts(self, fit: BatchFit, batch: int, constraints: Mapping | None) -> dict[str, np.ndarray]:
        """Start values (B,) of the terms' latent parameters, from the fit and the data."""
        fm_space = self.forward.space
        values = {n: np.asarray(fit.theta, np.float64)[:, j] for j, n in enumerate(fm_space.free_names)}
        values.update({n: np.full(batch, float(v)) for n, v in fm_space.fixed.items()})
        data = {n: np.asarray((constraints or {}).get(n, np.full(batch, np.nan)), np.float64)
                for n in self.posterior.constraint_names}
        out: dict[str, np.ndarray] = {}
        for term in self.posterior.terms:
            for name, value in term.start(values, data).items():
                out.setdefault(name, np.asarray(value, np.float64))
        return out

    def _windows(self, fit: BatchFit, fixed: Mapping, batch: int) -> np.ndarray:
        """(B, 2) velocity windows: from the lowest of the fit's velocities − RV_WINDOW to the
        highest + RV_WINDOW inside ±max_rv, or the fixed rv."""
        fm = self.forward
        if not self._rv_indices:
            rv = np.broadcast_to(np.asarray(fixed.get("rv", fm.fixed.get("rv", 0.0)), np.float64), (batch,))
            return np.column_stack([rv, rv])
        rv0 = np.nan_to_num(np.asarray(fit.theta, np.float64)[:, list(self._rv_indices)])
        limit = fm.max_rv
        return np.column_stack([np.clip(rv0.min(axis=1) - RV_WINDOW, -limit, limit),
                                np.clip(rv0.max(axis=1) + RV_WINDOW, -limit, limit)])

    # --------------------------------------------------------------------------- sampling
    def sample(self, observations, fixed: Mapping[str, Any] | None = None, ids=None, *,
               sources=None, fit: BatchFit | None = None, progress: bool = True,
               log_likelihood: bool = False, seed: int | None = None,
               constraints: Mapping[str, Any] | None = None):
        """Sample the posteriors of a batch of observations in one compiled call.

        Args:
            observations: an :class:`~jaxpayne.forward.Observation` with a leading batch axis
                (:func:`~jaxpayne.forward.pad_observations` of :meth:`observation` results).
            fixed: per-spectrum values of fixed parameters, name → (B,) array.
            ids: names of the stars (the ``star`` coordinate; default ``"0"``, ``"1"`` ...).
            sources: the file each spectrum came from (``constant_data.source``).
            fit: the batch's :class:`BatchFit` (else fitted here, for the starts).
            progress: a progress bar over iterations.
            log_likelihood: add the ``log_likelihood`` group (ln L of each draw, per star).
            seed: override the sampler's seed for this call.
            constraints: per-star data of the terms, name → (B,) array (``numax``,
                ``numax_err`` ...; NaN where a star has none; missing names are all NaN).

        Returns:
            ``arviz.InferenceData`` with groups ``posterior`` (one variable per free parameter,
            dims ``chain, draw, star``), ``sample_stats`` (``diverging``, ``n_steps``,
            ``tree_depth``, ``step_size``, ``acceptance_rate``, ``energy``, ``lp``),
            ``observed_data`` (``flux``, ``ivar``, ``wavelength``; dims ``star, pixel``),
            ``constant_data`` (the fit: ``fit_theta``, ``fit_covariance``, ``fit_flags``,
            ``fit_chi2``, ``fit_dof``) and optionally ``log_likelihood``; attributes record the
            settings, timing, gradient evaluations and lockstep efficiency.
        """
        import jax
        import jax.numpy as jnp
        from jaxpayne._progress import progress_bar

        t_start = time.perf_counter()
        batch = int(np.shape(observations.flux)[0])
        dtype = jnp.float64 if self.dtype == "float64" else jnp.float32
        observations = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else jnp.asarray(a),
            observations)
        ids = [str(i) for i in range(batch)] if ids is None else [str(i) for i in ids]
        if len(ids) != batch:
            raise ValueError(f"{len(ids)} ids for {batch} spectra")
        if fixed and not hasattr(self.fitter, "batch_fixed"):
            raise ValueError(f"per-spectrum fixed values are not supported by {type(self.fitter).__name__}")
        fixed_b = self.fitter.batch_fixed(fixed, batch) if fixed else {}
        if fit is None:
            fit = self.fitter.fit(observations, fixed=fixed_b or None)
        seed = self.seed if seed is None else int(seed)
        rng = np.random.default_rng(seed)
        unknown = sorted(set(constraints or {}) - set(self.posterior.constraint_names))
        if unknown:
            raise ValueError(f"constraints {unknown} are read by no term; the terms read "
                             f"{list(self.posterior.constraint_names)}")
        cons = {n: np.broadcast_to(np.asarray((constraints or {}).get(n, np.nan), np.float64), (batch,))
                for n in self.posterior.constraint_names}
        centre, chol, w0 = self._starts(fit, batch, rng, cons)
        windows = self._windows(fit, fixed_b, batch)
        keys = jax.random.split(jax.random.PRNGKey(seed), batch * self.chains).reshape(batch, self.chains, -1)
        init, _ = self._functions()
        fixed_j = {k: jnp.asarray(v, dtype) for k, v in fixed_b.items()}
        cons_j = {k: jnp.asarray(v, dtype) for k, v in cons.items()}
        windows_j = jnp.asarray(windows, dtype)
        centre_j, chol_j = jnp.asarray(centre, dtype), jnp.asarray(chol, dtype)
        state = init(observations, fixed_j, cons_j, windows_j, centre_j, chol_j, jnp.asarray(w0, dtype), keys)
        total = self.warmup + self.samples
        bar = progress_bar(total=total, unit="it", desc=f"NUTS {batch}x{self.chains}", progress=progress, leave=False)
        steps, draws = [], []
        try:
            done = 0
            while done < total:
                keep = done >= self.warmup
                end = total if keep else self.warmup
                length = min(self._segment, end - done)
                state, stats = self._advance(length, keep)(state, observations, fixed_j, cons_j, windows_j, centre_j,
                                                           chol_j)
                stats = jax.device_get(stats)
                steps.append(np.asarray(stats[0]))
                if keep:
                    draws.append(stats)
                done += length
                bar.update(length)
        finally:
            bar.close()
        wall = time.perf_counter() - t_start
        sources = [""] * batch if sources is None else [str(v) for v in sources]
        return self._inference_data(observations, ids, sources, fit, steps, draws, wall, log_likelihood,
                                    fixed_j, centre, chol, windows)

    # --------------------------------------------------------------------------- output
    def _inference_data(self, observations, ids, sources, fit, steps, draws, wall, log_likelihood, fixed_j,
                        centre, chol, windows):
        import arviz as az
        import jax
        import jax.numpy as jnp

        from jaxpayne.fitting.run import model_fingerprint

        space = self.space
        n_steps_all = np.concatenate(steps, axis=2)  # (B, C, warmup + samples)
        cat = [np.concatenate([d[k] for d in draws], axis=2) for k in range(7)]
        n_steps, diverging, w, accept, step_size, energy, potential = cat
        z = centre[:, None, None, :] + np.einsum("bij,bcsj->bcsi", chol, np.asarray(w, np.float64))
        theta = np.array(jax.jit(space.from_unconstrained)(jnp.asarray(z)), np.float64)  # (B, C, S, n)
        failed = ~np.all(np.isfinite(fit.theta), axis=1)
        theta[failed] = np.nan

        def cds(a):  # (B, C, S, ...) -> (C, S, B, ...)
            return np.moveaxis(np.asarray(a), 0, 2)

        posterior = {name: cds(theta[..., j]) for j, name in enumerate(space.free_names)}
        posterior.update({name: cds(v) for name, v in self._derived_draws(theta).items()})
        depth = np.where(n_steps > 0, np.floor(np.log2(np.maximum(n_steps, 1))).astype(np.int64) + 1, 0)
        sample_stats = {
            "diverging": cds(diverging.astype(bool)), "n_steps": cds(n_steps.astype(np.int64)),
            "tree_depth": cds(depth), "step_size": cds(step_size.astype(np.float64)),
            "acceptance_rate": cds(accept.astype(np.float64)), "energy": cds(energy.astype(np.float64)),
            "lp": cds(-potential.astype(np.float64)),
        }
        dims = {name: ["star"] for name in posterior}
        dims.update({name: ["star"] for name in sample_stats})
        flux = np.asarray(observations.flux, np.float64)
        groups = {"posterior": posterior, "sample_stats": sample_stats,
                  "observed_data": {"flux": flux, "ivar": np.asarray(observations.ivar, np.float64),
                                    "wavelength": np.asarray(observations.wavelength, np.float64)},
                  "constant_data": {"fit_theta": _fit_theta(self, fit), "fit_covariance": _fit_cov(self, fit),
                                    "fit_flags": np.asarray(fit.flags, np.int64),
                                    "fit_chi2": np.asarray(fit.chi2, np.float64),
                                    "fit_dof": np.asarray(fit.dof, np.int64),
                                    "rv_window": np.asarray(windows, np.float64),
                                    "source": np.asarray(sources, dtype=str)}}
        dims.update(flux=["star", "pixel"], ivar=["star", "pixel"], wavelength=["star", "pixel"],
                    fit_theta=["star", "parameter"], fit_covariance=["star", "parameter", "parameter_"],
                    fit_flags=["star"], fit_chi2=["star"], fit_dof=["star"], rv_window=["star", "bound"],
                    source=["star"])
        if log_likelihood:
            groups["log_likelihood"] = {"spectrum": cds(self._draw_loglike(observations, fixed_j, windows, theta,
                                                                           failed))}
            dims["spectrum"] = ["star"]
        coords = {"star": list(ids), "parameter": list(space.free_names), "parameter_": list(space.free_names),
                  "bound": ["lower", "upper"]}
        idata = az.from_dict(**groups, coords=coords, dims=dims)
        # lockstep: each iteration of a vmapped batch lasts as long as its longest trajectory
        flat = n_steps_all.reshape(-1, n_steps_all.shape[-1])
        mean_steps = float(flat.mean())
        lockstep = mean_steps / float(flat.max(axis=0).mean()) if flat.size else float("nan")
        n_grad = int(flat.sum())
        fingerprint = model_fingerprint(self.model)
        attrs = {
            "inference_library": "numpyro", "created_by": "jaxpayne.sample",
            "model": fingerprint["name"], "model_sha256": fingerprint["sha256"],
            "setup": json.dumps(self.describe_settings(), sort_keys=True, default=str),
            "prior": self.prior.describe(), "parameters": ",".join(space.free_names),
            "derived": ",".join(self.derived),
            "wall_seconds": float(wall), "gradient_evaluations": n_grad,
            "mean_leapfrog_steps": mean_steps,
            "lockstep_efficiency": lockstep if self.chain_method == "vectorized" else 1.0,
        }
        for group in idata.groups():
            idata[group].attrs.update(attrs)
        return idata

    def _derived_draws(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """The forward model's derived quantities (a tied binary's teff_2, logg_2) at every
        draw: name → (B, C, S)."""
        if not self.derived:
            return {}
        import jax
        import jax.numpy as jnp

        fm, n_model = self.forward, self.forward.space.n_free

        def one(t):
            values = fm.derived_values(fm.space.unflatten(t[:n_model]))
            return jnp.stack([jnp.asarray(values[n]) for n in self.derived])

        flat = np.nan_to_num(theta.reshape(-1, theta.shape[-1]))
        out = np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(flat, jnp.float32)), np.float64)
        out = out.reshape(theta.shape[:-1] + (len(self.derived),))
        out[~np.all(np.isfinite(theta), axis=-1)] = np.nan
        return {name: out[..., d] for d, name in enumerate(self.derived)}

    def _draw_loglike(self, observations, fixed_j, windows, theta, failed):
        """ln L of every draw (B, C, S), in chunks of draws; NaN for the ``failed`` stars."""
        import jax
        import jax.numpy as jnp

        def one_star(obs, fixed, window, th):
            obs, data = self._star_inputs(obs, fixed, window)
            return jax.lax.map(lambda t: self.posterior.log_likelihood(t, obs, fixed, data), th, batch_size=64)

        fn = jax.jit(jax.vmap(one_star))
        b, c, s, n = theta.shape
        dtype = observations.flux.dtype
        flat = jnp.asarray(np.nan_to_num(theta).reshape(b, c * s, n), dtype)
        out = np.array(fn(observations, fixed_j, jnp.asarray(windows, dtype), flat), np.float64).reshape(b, c, s)
        out[failed] = np.nan
        return out


def _fit_theta(sampler: Sampler, fit: BatchFit) -> np.ndarray:
    """The fit's θ in the sampled parameters (NaN for the terms' latent ones, not fitted)."""
    theta = np.asarray(fit.theta, np.float64)
    if sampler.posterior.noise_scale:
        red = np.where(fit.dof > 0, fit.chi2 / np.maximum(fit.dof, 1), np.nan)
        theta = np.column_stack([theta, np.sqrt(red)])
    n_latent = len(sampler.posterior.latent)
    return np.column_stack([theta, np.full((theta.shape[0], n_latent), np.nan)]) if n_latent else theta


def _fit_cov(sampler: Sampler, fit: BatchFit) -> np.ndarray:
    cov = np.asarray(fit.covariance, np.float64)
    b, n, _ = cov.shape
    total = sampler.space.n_free
    if total > n:
        grown = np.full((b, total, total), np.nan)
        grown[:, :n, :n] = cov
        cov = grown
    return cov


def _safe_cholesky(cov: np.ndarray) -> np.ndarray:
    """Cholesky factor of a Laplace covariance; non-finite or non-positive directions get unit
    variance (an undetected vsini, a failed fit), an indefinite matrix its diagonal."""
    diag = np.diag(cov)
    bad = ~np.isfinite(diag) | ~(diag > 0)
    c = np.where(bad[:, None] | bad[None, :] | ~np.isfinite(cov), 0.0, cov)
    c[bad, bad] = 1.0
    c = 0.5 * (c + c.T)
    try:
        return np.linalg.cholesky(c + 1e-10 * np.diag(np.diag(c)))
    except np.linalg.LinAlgError:
        return np.diag(np.sqrt(np.diag(c)))


def _segment_length(warmup: int, samples: int) -> int:
    """Iterations per compiled call: a divisor of both phases' lengths (few compiled shapes)."""
    common = math.gcd(warmup, samples)
    for length in range(min(SEGMENT, common), 0, -1):
        if common % length == 0 and length >= 10:
            return length
    return min(SEGMENT, max(warmup, samples))


def _over_grid(fn, chain_axes, *, vectorize: bool, devices):
    """Map ``fn`` over the (star, chain) grid of a batch.

    The arguments whose ``chain_axes`` entry is 0 carry (B, C, ...) leaves, the others (B, ...)
    (one value per star, shared by its chains). The grid is flattened to B·C items, padded to a
    multiple of ``len(devices)`` and split over the devices (:func:`jax.shard_map`); each
    device runs its share ``vmap``-ed in lockstep (``vectorize``) or one chain after another
    (:func:`jax.lax.map`). The result has (B, C, ...) leaves.
    """
    import jax
    import jax.numpy as jnp

    n_dev = len(devices)
    if vectorize:
        body = jax.vmap(fn)
    else:
        def body(*items):
            return jax.lax.map(lambda x: fn(*x), items)
    if n_dev > 1:
        from jax.sharding import Mesh, PartitionSpec

        spec = PartitionSpec("grid")
        body = jax.shard_map(body, mesh=Mesh(np.asarray(devices), ("grid",)), in_specs=spec, out_specs=spec,
                                check_vma=False)  # NumPyro's conds mix per-device and constant values

    def over_grid(*args):
        per_chain = [axis == 0 for axis in chain_axes]
        b, c = jax.tree_util.tree_leaves(args[per_chain.index(True)])[0].shape[:2]
        pad = (-b * c) % n_dev

        def flatten(a, chained):
            if not chained:
                a = jnp.broadcast_to(a[:, None], (b, c) + a.shape[1:])
            a = a.reshape((b * c,) + a.shape[2:])
            return jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a

        items = tuple(jax.tree_util.tree_map(lambda a, ch=ch: flatten(a, ch), arg) for arg, ch in zip(args, per_chain))
        out = body(*items)
        return jax.tree_util.tree_map(lambda a: a[: b * c].reshape((b, c) + a.shape[1:]), out)

    return over_grid


def sample(model, spectra, *, prior=None, chains: int = 4, warmup: int = 1000, samples: int = 1000,
           seed: int = 0, progress: bool = True, log_likelihood: bool = False, fixed=None, **options):
    """Posterior samples of one spectrum (or a few) — the notebook one-liner.

    Args:
        model: a :class:`jaxpayne.Model`.
        spectra: a :class:`jaxpayne.io.Spectrum`, a list of them, or ``(wavelength, flux, ivar)``.
        prior: the prior (see :class:`Sampler`).
        chains, warmup, samples, seed: NUTS settings.
        progress: show a progress bar.
        log_likelihood: add the ``log_likelihood`` group.
        fixed: per-spectrum values of fixed parameters.
        **options: :class:`Sampler` and :class:`Fitter` options (``rv``, ``continuum``,
            ``resolution``, ``max_tree_depth``, ``chain_method`` ...).

    Returns:
        ``arviz.InferenceData`` (see :meth:`Sampler.sample`); the ``star`` coordinate holds the
        spectra's ids.

    Example:
        >>> idata = jaxpayne.sample(model, spectrum, prior={"logg": dist.Normal(2.45, 0.02)})
        >>> arviz.summary(idata)
    """
    from jaxpayne.fitting.run import pad_batch, spectrum_observation
    from jaxpayne.io import Spectrum

    if isinstance(spectra, tuple) and len(spectra) == 3 and not isinstance(spectra[0], Spectrum):
        spectra = [Spectrum(np.asarray(spectra[0]), np.asarray(spectra[1]), np.asarray(spectra[2]))]
    elif isinstance(spectra, Spectrum):
        spectra = [spectra]
    spectra = list(spectra)
    if not spectra:
        raise ValueError("no spectra to sample")
    if "n_segments" not in options and options.get("fitter") is None:
        options["n_segments"] = max(s.n_segments for s in spectra)
    sampler = Sampler(model, prior=prior, chains=chains, warmup=warmup, samples=samples, seed=seed, **options)
    observations = [spectrum_observation(sampler.fitter, s)[0] for s in spectra]
    batch = pad_batch(observations, len(observations))
    ids = _unique_ids([s.id or f"spectrum{i}" for i, s in enumerate(spectra)])
    return sampler.sample(batch, fixed=fixed, ids=ids, sources=[s.source for s in spectra], progress=progress,
                          log_likelihood=log_likelihood)


def _unique_ids(ids):
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        out.append(i if seen[i] == 1 else f"{i}#{seen[i]}")
    return out
