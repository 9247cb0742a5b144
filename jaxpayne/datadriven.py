"""Data-driven emulators: reference labels with errors, missing labels, and cross-validation.

A data-driven emulator (The Cannon, DD-Payne) learns from observed spectra whose reference labels
come from elsewhere (another pipeline, asteroseismology, a benchmark catalogue). Two problems of
such training sets are handled here by one idea, per-star latent true labels ℓ_n:

- **label errors** (errors-in-variables): the reference ℓ̂_n is a Gaussian measurement of ℓ_n,
  with 1σ uncertainties σ̂_n; ignoring them biases the model towards the mean (regression
  dilution) and the labels it later infers with it;
- **missing labels**: a missing ℓ̂_nk is no measurement at all, so ℓ_nk is free and set by the
  spectrum alone; the star is not dropped.

:func:`train_with_latent_labels` alternates the two conditional optimisations of

.. math:: \\sum_n \\Bigl[\\chi^2(f_n \\mid \\text{model}, \\ell_n)
          + \\sum_k \\frac{(\\ell_{nk} - \\hat\\ell_{nk})^2}{\\hat\\sigma_{nk}^2}\\Bigr]

(the model at fixed labels: any training function, e.g. :func:`~jaxpayne.emulators.cannon.train_cannon`
or a network's; the labels at a fixed model: :func:`latent_labels`, the ordinary likelihood of
each training spectrum with the model's own error, plus the Gaussian terms, maximised by the same
bounded Levenberg–Marquardt as every fit). A label with σ̂ = 0 is held at its reference value.
For a low-capacity model such as the Cannon this is the joint optimum; a flexible network can
memorise its training labels, so there the alternation corrects less (measured in
``benchmarks/cannon_cv.py``).

:func:`cross_validate` measures K-fold cross-validated label recovery: each fold held out in turn,
a model trained on the others (naively or with latent labels), and the held-out spectra fitted by
the ordinary :class:`~jaxpayne.fitting.Fitter`.

References: Ness et al. 2015, ApJ 808, 16 (The Cannon); Casey et al. 2016, arXiv:1603.03040;
Xiang et al. 2019, ApJS 245, 34 (DD-Payne); Carroll et al. 2006, *Measurement Error in
Nonlinear Models* (errors-in-variables).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

__all__ = ["CrossValidation", "LatentResult", "cross_validate", "filter_normalize", "latent_labels", "population_of",
           "recovery_summary", "resample_spectrum", "segments_of", "train_with_latent_labels",
           "training_function", "training_set_from_spectra"]

#: Fraction of each label's reference range by which a latent label may leave the reference box.
LATENT_MARGIN = 0.05
#: Spectra per compiled batch of the latent-label step.
LATENT_BATCH = 256


class LatentResult(NamedTuple):
    """What :func:`train_with_latent_labels` returns.

    Attributes:
        model: the model trained on the final latent labels.
        labels: (n_spectra, n_labels) latent labels (physical units).
        sigma: (n_spectra, n_labels) their formal 1σ errors (0 for labels held fixed).
        history: per alternation, the total objective (χ² of the spectra + label terms).
    """

    model: object
    labels: np.ndarray
    sigma: np.ndarray
    history: list


def _as_errors(reference: np.ndarray, errors) -> np.ndarray:
    """(n, L) label errors: 0 (exact) where none are given, NaN where the label is missing."""
    if errors is None:
        errors = np.zeros_like(reference)
    errors = np.broadcast_to(np.asarray(errors, np.float64), reference.shape).copy()
    measured = np.isfinite(reference)
    if np.any(measured & ~(np.isfinite(errors) & (errors >= 0))):
        raise ValueError("label errors must be finite and >= 0 where a reference label is given")
    return np.where(measured, errors, np.nan)


def latent_labels(model, flux, ivar, reference, errors=None, *, population=None, start=None, bounds=None,
                  continuum: str = "none", emulator_error: bool = True, max_iter: int = 40,
                  batch: int = LATENT_BATCH):
    """Each training spectrum's most probable true labels, given the model and its reference labels.

    Maximises, per spectrum n, ``ln L(f_n | ℓ_n) − ½ Σ_k (ℓ_nk − ℓ̂_nk)²/σ̂_nk² + ln p(ℓ_n)``
    over ℓ_n: the likelihood is the ordinary one of :mod:`jaxpayne.forward` (rv 0, no
    broadening, the given continuum treatment, the model's own error added to the noise), the
    reference labels are Gaussian measurements (a missing one, NaN, adds nothing; σ̂ = 0 holds
    the label at ℓ̂), and ``p`` is the population's Gaussian distribution of true labels (or
    flat). The population matters: with a flat one a missing label's estimate is the spectrum's
    own (noisy) best fit, and a model trained on such estimates is attenuated like one trained
    on noisy labels; the population prior shrinks it towards the labels' relation in the
    training set (e.g. log g with Teff along the giant branch).

    Args:
        model: the emulator (a :class:`~jaxpayne.Model`), on the spectra's wavelength grid.
        flux: (n, n_pix) flux on ``model.wavelength``.
        ivar: (n, n_pix) inverse variances (0: masked).
        reference: (n, n_labels) reference labels, NaN where missing.
        errors: (n, n_labels) 1σ errors of the reference labels (None: all exact).
        population: optional ``(mean, covariance)`` of the population's true labels, (n_labels,)
            and (n_labels, n_labels) (see :func:`population_of`); None: a flat prior.
        start: optional (n, n_labels) starting labels (default: the reference, and the middle
            of the box where it is missing).
        bounds: (lower, upper) box of the latent labels (default: the reference labels' range,
            widened by :data:`LATENT_MARGIN` of it on each side; the model's box for a label
            missing everywhere).
        continuum: continuum treatment of the likelihood (``"none"`` for normalised spectra).
        emulator_error: add the model's own error (the Cannon's s²) to the noise.
        max_iter: Levenberg–Marquardt iterations per spectrum.
        batch: spectra per compiled call.

    Returns:
        ``(labels, covariance, objective)``: (n, n_labels) latent labels, their (n, n_labels,
        n_labels) covariance from the curvature (Laplace; zero rows and columns for labels held
        fixed), and the total objective Σ χ² (spectra and label terms) at them.

    Raises:
        ValueError: for inconsistent shapes or errors.
    """
    import jax.numpy as jnp

    from jaxpayne.forward import LikelihoodSettings, forward_model_from_options

    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    reference = np.asarray(reference, np.float64)
    n, n_labels = reference.shape
    if flux.shape != ivar.shape or flux.shape[0] != n:
        raise ValueError(f"flux {flux.shape}, ivar {ivar.shape} and reference labels {reference.shape} disagree")
    errors = _as_errors(reference, errors)
    fm = forward_model_from_options(model, rv=False, continuum=continuum)
    space = fm.space
    if tuple(space.free_names) != tuple(model.label_names):
        raise ValueError(f"the latent-label step fits the labels only; the model has {list(space.free_names)}")
    if bounds is None:
        box_lo, box_hi = (np.asarray(b, np.float64) for b in model.bounds)
        known = np.any(np.isfinite(reference), axis=0)
        with np.errstate(all="ignore"):
            lo = np.where(known, np.nanmin(np.where(np.isfinite(reference), reference, np.inf), axis=0), box_lo)
            hi = np.where(known, np.nanmax(np.where(np.isfinite(reference), reference, -np.inf), axis=0), box_hi)
        pad = LATENT_MARGIN * np.where(hi > lo, hi - lo, 1.0)
        bounds = (lo - pad, hi + pad)
    lower, upper = (np.asarray(b, np.float64).reshape(-1) for b in bounds)
    offset, scale = space.unit_offset_scale()
    to_u = lambda x: (x - offset) / scale  # noqa: E731  (working coordinates of the model box)
    missing = ~np.isfinite(reference)
    fixed = ~missing & (errors == 0)
    if start is None:
        start = np.where(missing, 0.5 * (lower + upper), reference)
    start = np.clip(np.where(fixed, reference, np.asarray(start, np.float64)), lower, upper)
    u_lo = np.where(fixed, to_u(np.clip(reference, lower, upper)), to_u(lower))
    u_hi = np.where(fixed, to_u(np.clip(reference, lower, upper)), to_u(upper))
    gauss = ~missing & ~fixed
    inv_err = np.where(gauss, 1.0 / np.where(gauss, errors, 1.0), 0.0)
    ref0 = np.where(gauss, reference, 0.0)
    if population is None:
        mean, whiten = np.zeros(n_labels), np.zeros((n_labels, n_labels))
    else:
        mean = np.asarray(population[0], np.float64).reshape(n_labels)
        whiten = np.linalg.inv(np.linalg.cholesky(np.asarray(population[1], np.float64)))  # rᵀr = Δᵀ Σ⁻¹ Δ
    settings = LikelihoodSettings(emulator_error=bool(emulator_error))
    observations = [fm.observation(model.wavelength, f, i, outside="mask", rv_mode="any") for f, i in zip(flux, ivar)]

    from jaxpayne.forward import pad_observations

    dtype = jnp.asarray(observations[0].flux).dtype
    cast = lambda x: jnp.asarray(x, dtype)  # noqa: E731
    shared = (cast(offset), cast(scale), cast(mean), cast(whiten))
    run = _latent_batch()
    labels, covariance, cost = np.empty((n, n_labels)), np.empty((n, n_labels, n_labels)), np.empty(n)
    size = min(int(batch), n)
    for a in range(0, n, size):
        rows = np.arange(a, a + size) % n  # the last batch filled with the first spectra: one shape
        obs = pad_observations([observations[i] for i in rows])
        args = [jnp.asarray(x[rows], dtype) for x in (to_u(start), u_lo, u_hi, ref0, inv_err)]
        out = [np.asarray(v, np.float64) for v in run(fm, obs, *args, *shared, settings=settings, max_iter=int(max_iter))]
        take = slice(0, min(size, n - a))
        labels[a:a + size], covariance[a:a + size], cost[a:a + size] = out[0][take], out[1][take], out[2][take]
    labels = np.where(fixed, reference, labels)
    covariance = covariance * ~(fixed[:, :, None] | fixed[:, None, :])
    return labels, covariance, float(np.sum(cost))


def population_of(labels, covariance=None, errors=None) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian (mean, covariance) of a population's true labels.

    From latent labels (means ``labels`` and ``covariance`` (n, L, L), the M-step of EM:
    μ = ⟨ℓ_n⟩, Σ = ⟨(ℓ_n − μ)(ℓ_n − μ)ᵀ + C_n⟩); or from complete reference labels with 1σ
    ``errors``: their sample covariance less the mean error variance (each variance kept at ≥ 10 %
    of the sample's).

    Args:
        labels: (n, L) latent-label means or complete reference labels.
        covariance: (n, L, L) latent-label covariances.
        errors: (n, L) reference-label errors (with reference labels).
    """
    labels = np.asarray(labels, np.float64)
    mean = labels.mean(axis=0)
    delta = labels - mean
    cov = delta.T @ delta / len(labels)
    if covariance is not None:
        cov = cov + np.mean(covariance, axis=0)
    elif errors is not None:
        noise = np.nanmean(np.asarray(errors, np.float64) ** 2, axis=0)
        var = np.diag(cov)
        cov = cov + np.diag(np.maximum(var - noise, 0.1 * var) - var)
    # positive definite: the diagonal's correction can leave |ρ| > 1 for strongly related labels
    # (in the correlation matrix, so that labels of any units are treated alike)
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    corr = 0.5 * (cov + cov.T) / np.outer(sd, sd)
    values, vectors = np.linalg.eigh(corr)
    corr = (vectors * np.maximum(values, 1e-3)) @ vectors.T
    d = np.sqrt(np.diag(corr))
    corr = corr / np.outer(d, d)  # unit diagonal again: the variances are kept
    return mean, corr * np.outer(sd, sd)


def _latent_one(fm, obs, u0, lo, hi, ref, w, offset, scale, pop_mean, pop_whiten, settings, max_iter):
    """One spectrum's latent labels: the bounded LM fit in working coordinates (see
    :func:`latent_labels`), its Laplace covariance and cost."""
    import jax.numpy as jnp

    from jaxpayne.fitting import LMOptions, levenberg_marquardt
    from jaxpayne.forward import prepare_data, residuals

    dtype = u0.dtype
    data = prepare_data(fm, obs, dtype)

    def res(u):
        theta = u * scale + offset
        return jnp.concatenate([residuals(fm, theta, obs, None, settings, data), (theta - ref) * w,
                                pop_whiten @ (theta - pop_mean)])

    out = levenberg_marquardt(res, u0, lo, hi, LMOptions(max_iter=max_iter))
    free = (hi > lo).astype(dtype)
    jac = out.jacobian * free[None, :]  # the covariance given the fixed labels (not marginal over them)
    hess = jac.T @ jac + jnp.diag(1.0 - free)  # fixed labels: a unit diagonal
    cov = jnp.linalg.inv(hess) * jnp.outer(free, free)
    return out.x * scale + offset, cov * jnp.outer(scale, scale), out.cost


_LATENT_BATCH = []


def _latent_batch():
    """The compiled, vmapped :func:`_latent_one` (built once: every call with the same shapes
    and settings reuses its program)."""
    if not _LATENT_BATCH:
        import functools

        import jax

        def mapped(fm, obs, u0, lo, hi, ref, w, offset, scale, pop_mean, pop_whiten, settings, max_iter):
            one = functools.partial(_latent_one, settings=settings, max_iter=max_iter)
            return jax.vmap(one, in_axes=(None, 0, 0, 0, 0, 0, 0, None, None, None, None))(
                fm, obs, u0, lo, hi, ref, w, offset, scale, pop_mean, pop_whiten)

        _LATENT_BATCH.append(jax.jit(mapped, static_argnames=("settings", "max_iter")))
    return _LATENT_BATCH[0]


def train_with_latent_labels(train: Callable, labels, flux, ivar, errors=None, *, iterations: int = 3,
                             marginalize: bool = False, population: bool = True, continuum: str = "none",
                             bounds=None, progress: Callable | None = None) -> LatentResult:
    """Train a model on spectra whose reference labels have errors or are missing.

    Alternates the model step with :func:`latent_labels` (see the module notes). With
    ``marginalize`` (an EM algorithm) the model step is ``train(labels, flux, ivar,
    label_covariance=C)`` with each star's latent-label mean and Laplace covariance, so the model
    is fitted to the expectation over the latent labels (``train_cannon`` does this exactly up to
    its sampling); without it, ``train(labels, flux, ivar)`` at the latent labels' point values (a
    joint optimum, which for a label that the spectrum constrains poorly lets the model fit its
    own errors). With missing labels the first model is trained on the complete spectra only,
    and gives the missing labels their first values.

    Args:
        train: ``train(labels, flux, ivar[, label_covariance=]) -> model`` on complete labels
            (e.g. ``functools.partial(train_cannon, label_names=..., wavelength=...)``).
        labels: (n, n_labels) reference labels, NaN where missing.
        flux, ivar: (n, n_pix) training spectra on the model's grid and their inverse variances.
        errors: (n, n_labels) 1σ errors of the reference labels (None: exact; then only the
            missing labels are latent).
        iterations: alternations after the first model.
        marginalize: pass the latent labels' covariance to ``train`` (EM; ``train`` must take
            ``label_covariance``). False for training functions that cannot (networks).
        population: a Gaussian population prior on the true labels, estimated with them (EM;
            see :func:`latent_labels` for why it matters); False: a flat prior.
        continuum: continuum treatment of the latent-label likelihood.
        bounds: box of the latent labels (see :func:`latent_labels`).
        progress: optional ``progress(iteration, objective)`` callback.

    Returns:
        A :class:`LatentResult`.

    Raises:
        ValueError: if no more spectra than labels have every label (the start).
    """
    reference = np.asarray(labels, np.float64)
    errors = _as_errors(reference, errors)
    complete = np.all(np.isfinite(reference), axis=1)
    current, covariance = reference.copy(), None
    history = []
    if complete.sum() <= reference.shape[1]:
        raise ValueError(f"latent labels need more than {reference.shape[1]} spectra with every label to start from "
                         f"(got {complete.sum()})")
    prior = population_of(reference[complete], errors=errors[complete]) if population else None
    if not complete.all():
        first = train(reference[complete], flux[complete], ivar[complete])
        current, covariance, _ = latent_labels(first, flux, ivar, reference, errors, population=prior,
                                               bounds=bounds, continuum=continuum)
        prior = population_of(current, covariance) if population else None
    elif np.all(errors == 0):
        model = train(reference, flux, ivar)
        return LatentResult(model, reference, np.zeros_like(reference), history)

    def step():
        if marginalize and covariance is not None:
            return train(current, flux, ivar, label_covariance=covariance)
        return train(current, flux, ivar)

    for it in range(max(1, int(iterations))):
        model = step()
        current, covariance, objective = latent_labels(model, flux, ivar, reference, errors, population=prior,
                                                       start=current, bounds=bounds, continuum=continuum)
        if population:
            prior = population_of(current, covariance)
        history.append(objective)
        if progress is not None:
            progress(it + 1, objective)
    sigma = np.sqrt(np.einsum("nii->ni", covariance))
    return LatentResult(step(), current, sigma, history)


class CrossValidation(NamedTuple):
    """What :func:`cross_validate` returns.

    Attributes:
        fold: (n,) fold of each spectrum.
        reference: (n, n_labels) reference labels (NaN where missing).
        found: (n, n_labels) labels fitted to each spectrum by the model that did not see it.
        sigma: (n, n_labels) their formal errors.
        flags: (n,) :class:`~jaxpayne.fitting.Flags` of those fits.
        label_names: label names.
        summary: per label ``{"bias", "scatter", "robust_scatter", "n"}`` (see
            :func:`recovery_summary`).
        seconds: (training, fitting) wall time [s], all folds.
    """

    fold: np.ndarray
    reference: np.ndarray
    found: np.ndarray
    sigma: np.ndarray
    flags: np.ndarray
    label_names: tuple
    summary: dict
    seconds: tuple

    def table(self):
        """An astropy Table, one row per spectrum: fold, reference and cross-validated labels."""
        from astropy.table import Table

        cols = {"index": np.arange(len(self.fold)), "fold": self.fold}
        for j, name in enumerate(self.label_names):
            cols[f"{name}_ref"] = self.reference[:, j]
            cols[name] = self.found[:, j]
            cols[f"{name}_err"] = self.sigma[:, j]
        cols["flags"] = self.flags
        import json

        table = Table(cols)
        table.meta["cv_summary"] = json.dumps(self.summary)
        return table

    def markdown(self) -> str:
        """The summary as a Markdown table."""
        lines = ["| label | bias | scatter (std) | robust scatter (1.4826 MAD) | n |", "|---|---|---|---|---|"]
        for name, s in self.summary.items():
            lines.append(f"| {name} | {s['bias']:+.3g} | {s['scatter']:.3g} | {s['robust_scatter']:.3g} | {s['n']} |")
        return "\n".join(lines)


def recovery_summary(found, reference, label_names: Sequence[str], usable=None) -> dict:
    """Bias, scatter (std) and robust scatter (1.4826 × MAD) of ``found − reference`` per label,
    over the rows where both are finite (and ``usable``)."""
    found, reference = np.asarray(found, np.float64), np.asarray(reference, np.float64)
    usable = np.ones(len(found), bool) if usable is None else np.asarray(usable, bool)
    out = {}
    for j, name in enumerate(label_names):
        d = (found[:, j] - reference[:, j])[usable & np.isfinite(found[:, j]) & np.isfinite(reference[:, j])]
        if d.size == 0:
            out[name] = {"bias": float("nan"), "scatter": float("nan"), "robust_scatter": float("nan"), "n": 0}
            continue
        out[name] = {"bias": float(d.mean()), "scatter": float(d.std()),
                     "robust_scatter": float(1.4826 * np.median(np.abs(d - np.median(d)))), "n": int(d.size)}
    return out


def cross_validate(train: Callable, labels, flux, ivar, *, wavelength, label_names: Sequence[str], folds: int = 5,
                   seed: int = 0, errors=None, latent: bool = False, iterations: int = 3, marginalize: bool = False,
                   continuum: str = "none", fit_options: dict | None = None,
                   progress: Callable | None = None) -> CrossValidation:
    """K-fold cross-validated label recovery of a data-driven model.

    Spectrum i is in fold ``numpy.random.default_rng(seed).permutation(n)[i] % folds``. Each fold
    is held out in turn; a model is trained on the others and the held-out spectra are fitted by
    the ordinary :class:`~jaxpayne.fitting.Fitter` (rv fixed at 0, ``continuum``, the model's own
    error in the likelihood). Held-out labels that are missing are not scored.

    Args:
        train: ``train(labels, flux, ivar) -> model`` (complete labels).
        labels: (n, n_labels) reference labels, NaN where missing.
        flux, ivar: (n, n_pix) spectra and inverse variances on ``wavelength``.
        wavelength: (n_pix,) the spectra's (and models') grid [Å].
        label_names: label names.
        folds: K.
        seed: seed of the fold assignment.
        errors: optional (n, n_labels) reference-label errors.
        latent: train with latent labels (:func:`train_with_latent_labels`: label errors and
            missing labels); False: the naive choices (errors ignored, spectra with a missing
            label dropped from training).
        iterations: alternations of the latent training.
        marginalize: the EM form of the latent training (see :func:`train_with_latent_labels`).
        continuum: continuum treatment of the fits (``"none"`` for normalised spectra).
        fit_options: more :class:`~jaxpayne.fitting.Fitter` options.
        progress: optional ``progress(fold)`` callback.

    Returns:
        A :class:`CrossValidation`.
    """
    import time

    from jaxpayne.fitting import Fitter, Flags
    from jaxpayne.forward import pad_observations

    labels = np.asarray(labels, np.float64)
    flux, ivar = np.asarray(flux), np.asarray(ivar)
    n = len(labels)
    if folds < 2 or folds > n:
        raise ValueError(f"need 2 <= folds <= {n}, got {folds}")
    fold = np.random.default_rng(seed).permutation(n) % folds
    found = np.full(labels.shape, np.nan)
    sigma = np.full(labels.shape, np.nan)
    flags = np.zeros(n, np.int64)
    t_train = t_fit = 0.0
    for k in range(folds):
        train_rows, test_rows = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        t0 = time.perf_counter()
        ref = labels[train_rows]
        if latent:
            model = train_with_latent_labels(train, ref, flux[train_rows], ivar[train_rows],
                                             None if errors is None else np.asarray(errors)[train_rows],
                                             iterations=iterations, marginalize=marginalize,
                                             continuum=continuum).model
        else:
            keep = train_rows[np.all(np.isfinite(ref), axis=1)]
            model = train(labels[keep], flux[keep], ivar[keep])
        t_train += time.perf_counter() - t0
        t0 = time.perf_counter()
        fitter = Fitter(model, rv=False, continuum=continuum, **(fit_options or {}))
        batch = pad_observations([fitter.observation(wavelength, flux[i], ivar[i]) for i in test_rows])
        result = fitter.fit(batch)
        t_fit += time.perf_counter() - t0
        found[test_rows] = result.theta[:, :labels.shape[1]]
        sigma[test_rows] = np.sqrt(np.einsum("bii->bi", result.covariance))[:, :labels.shape[1]]
        flags[test_rows] = result.flags
        if progress is not None:
            progress(k + 1)
    ok = (flags & int(Flags.NOT_CONVERGED | Flags.FAILED)) == 0
    summary = recovery_summary(found, labels, label_names, ok)
    return CrossValidation(fold, labels, found, sigma, flags, tuple(label_names), summary, (t_train, t_fit))


def segments_of(wavelength) -> np.ndarray:
    """(n,) segment number of each pixel of a grid: the segments the likelihood gives pixels of
    one spectrum (:func:`jaxpayne.forward.segments_from_gaps`: a new one at every gap, e.g.
    between APOGEE's three chips)."""
    from jaxpayne.forward import segments_from_gaps

    return np.asarray(segments_from_gaps(np.asarray(wavelength, np.float64)), np.int32)


def filter_normalize(training_set, width: float = 50.0):
    """The training set divided by its running-mean pseudo-continuum, as the likelihood's
    ``filter:WIDTH`` continuum divides every spectrum it fits (the DD-Payne normalisation; Xiang
    et al. 2019): :func:`~jaxpayne.forward.continuum.smooth_continuum` with the spectra's own
    inverse variances as weights, per segment (:func:`segments_of`); ivar scales with the flux
    (without ivar: pixels whose pseudo-continuum is unusable get ivar 0, the others 1).

    Args:
        training_set: a :class:`~jaxpayne.grids.TrainingSet` (un-normalised or normalised flux).
        width: the filter's length L [Å].

    Returns:
        A new :class:`~jaxpayne.grids.TrainingSet` (``meta["continuum"] = "filter:WIDTH"``).
    """
    import jax
    import jax.numpy as jnp

    from jaxpayne.forward.continuum import smooth_continuum
    from jaxpayne.grids import TrainingSet

    ts = training_set
    segment = segments_of(ts.wavelength)
    n_segments = int(segment.max()) + 1
    ivar = ts.ivar if ts.ivar is not None else np.ones_like(ts.flux)
    wave = jnp.asarray(ts.wavelength)
    span = (float(ts.wavelength[0]), float(ts.wavelength[-1]))

    @jax.jit
    def smooth(flux, ivar):
        return jax.vmap(lambda f, i: smooth_continuum(f, i, wave, jnp.asarray(segment), width=float(width),
                                                      n_segments=n_segments, wavelength_range=span))(flux, ivar)

    pseudo = np.concatenate([np.asarray(smooth(jnp.asarray(ts.flux[a:a + 1024]), jnp.asarray(ivar[a:a + 1024])))
                             for a in range(0, ts.n_spectra, 1024)])
    good = np.isfinite(pseudo) & (pseudo > 0)
    flux = np.where(good, ts.flux / np.where(good, pseudo, 1.0), 0.0)
    new_ivar = good.astype(np.float32) if ts.ivar is None else np.where(good, ts.ivar * pseudo**2, 0.0)
    return TrainingSet(ts.wavelength, ts.labels, flux, ts.label_names, ts.label_units, new_ivar, ts.medium,
                       ts.source, {**ts.meta, "continuum": f"filter:{float(width):g}"}, ts.label_errors)


def training_function(training_set, emulator: str = "cannon", *, order: int = 2, l1: float = 0.0, config=None,
                      progress: bool = False, gradient_model=None) -> Callable:
    """``train(labels, flux, ivar[, label_covariance=]) -> Model`` on the grid, label names and
    medium of ``training_set``: The Cannon (:func:`~jaxpayne.emulators.cannon.train_cannon`) or a
    network (:func:`~jaxpayne.training.train_emulator` with ``config``, which holds out its own
    validation spectra, and the DD-Payne ``gradient_model``). For
    :func:`train_with_latent_labels` and :func:`cross_validate`."""
    from jaxpayne.grids import TrainingSet

    ts = training_set
    if emulator == "cannon":
        from jaxpayne.emulators.cannon import train_cannon

        def train(labels, flux, ivar, label_covariance=None):
            return train_cannon(labels, flux, ivar, label_names=ts.label_names, wavelength=ts.wavelength,
                                order=order, l1=l1, medium=ts.medium, label_units=ts.label_units,
                                label_covariance=label_covariance)

        return train
    from jaxpayne.training import TrainingConfig, train_emulator

    config = config or TrainingConfig(emulator=emulator)

    def train_network(labels, flux, ivar):
        subset = TrainingSet(ts.wavelength, labels, flux, ts.label_names, ts.label_units, ivar, ts.medium, ts.source)
        return train_emulator(subset, config, progress=progress, gradient_model=gradient_model).model

    return train_network


def resample_spectrum(wavelength, flux, ivar, grid):
    """Flux and inverse variance of a spectrum on another wavelength grid, with its mask.

    Linear interpolation of the flux and of the variance; a grid pixel is usable only where both
    neighbouring input pixels are (a masked input pixel masks the grid pixels next to it) and
    inside the input's range. Meant for training spectra on grids close to the model's (the
    usual case, the same grid, is exact).

    Args:
        wavelength, flux, ivar: the spectrum (increasing wavelengths [Å]; ivar 0 = masked).
        grid: (m,) target wavelengths [Å], same medium and frame.

    Returns:
        ``(flux, ivar)`` on ``grid``.
    """
    wavelength, flux, ivar = (np.asarray(a, np.float64) for a in (wavelength, flux, ivar))
    grid = np.asarray(grid, np.float64)
    if wavelength.shape == grid.shape and np.allclose(wavelength, grid, rtol=1e-10, atol=0.0):
        return flux, ivar
    good = (ivar > 0) & np.isfinite(flux) & np.isfinite(ivar)
    right = np.clip(np.searchsorted(wavelength, grid), 1, wavelength.size - 1)
    left = right - 1
    t = (grid - wavelength[left]) / (wavelength[right] - wavelength[left])
    inside = (grid >= wavelength[0]) & (grid <= wavelength[-1])
    usable = inside & good[left] & good[right]
    var = np.where(good, 1.0 / np.where(good, ivar, 1.0), 0.0)
    out_flux = np.where(usable, (1 - t) * np.where(good, flux, 0.0)[left] + t * np.where(good, flux, 0.0)[right], 0.0)
    out_var = (1 - t) * var[left] + t * var[right]
    return out_flux, np.where(usable, 1.0 / np.where(usable, out_var, 1.0), 0.0)


def _read_table(path_or_table, what: str):
    """(table, path) of a table given as an astropy Table or a file."""
    from pathlib import Path

    from astropy.table import Table

    from jaxpayne.io._common import read_table

    if isinstance(path_or_table, Table):
        return path_or_table, None
    return read_table(path_or_table, what), Path(path_or_table)


def _column(table, name, where, what="column"):
    if name not in table.colnames:
        raise ValueError(f"{where}: no {what} {name!r} (columns: {', '.join(table.colnames[:12])})")
    col = table[name]
    values = np.asarray(col.filled(np.nan) if hasattr(col, "filled") else col, dtype=np.float64)
    return values


def training_set_from_spectra(spectra_table, catalogue, *, label_names=None, id_column: str = "id",
                              error_columns=None, wavelength=None, medium: str | None = None,
                              file_column: str = "file", rv_column: str | None = None, warn=None):
    """A training set of observed spectra: a table of spectrum files and a catalogue of their labels.

    Each file of ``spectra_table`` is read by :func:`jaxpayne.io.read_spectrum` (any supported
    format; the first spectrum of a file), moved to the rest frame (a spectrum in another frame
    needs ``rv_column``: its radial velocity [km/s] in that frame, or in the barycentric frame for
    topocentric spectra, whose barycentric correction is then applied), converted to the grid's
    medium and resampled to the grid with its mask (:func:`resample_spectrum`). Its reference
    labels come from the catalogue row with the same ``id_column`` value; a masked or NaN label
    is missing, and a catalogue without a star's id, or a file that cannot be read, drops that
    spectrum with a warning.

    Args:
        spectra_table: table (path .csv/.ecsv/.fits, or an astropy Table) with ``file_column``
            (paths relative to the table's folder) and ``id_column`` (default: each spectrum's
            own id).
        catalogue: table with ``id_column``, the label columns and optionally their errors.
        label_names: catalogue columns to train on (default every numeric column except the id,
            ``rv_column`` and the error columns).
        id_column: the column matching spectra to catalogue rows.
        error_columns: catalogue columns of the labels' 1σ errors, in ``label_names`` order
            (default ``<label>_err`` where present).
        wavelength: the training set's (model's) grid: an array or a file for
            :func:`jaxpayne.io.load_wavelength` (default the first spectrum's grid).
        medium: medium of generic files' wavelengths (see :func:`~jaxpayne.io.read_spectrum`);
            the grid is in the first spectrum's medium unless ``wavelength`` is given in air with
            ``medium="air"``.
        file_column: the column of spectrum files.
        rv_column: catalogue column of radial velocities [km/s] for spectra not in the rest frame.
        warn: ``warn(message)`` for dropped spectra (default :func:`warnings.warn`).

    Returns:
        A :class:`~jaxpayne.grids.TrainingSet` with ``ivar``, missing labels as NaN and
        ``label_errors`` when there are error columns.

    Raises:
        ValueError: naming the table and the problem (no such column, no spectrum left, ...).
    """
    import warnings
    from pathlib import Path

    from jaxpayne.forward.doppler import doppler_factor
    from jaxpayne.grids import TrainingSet
    from jaxpayne.io import SpectrumFormatError, load_wavelength, read_spectrum

    warn = warn or (lambda message: warnings.warn(message, stacklevel=3))
    spectra, spectra_path = _read_table(spectra_table, "spectra table")
    cat, cat_path = _read_table(catalogue, "catalogue")
    where_s, where_c = spectra_path or "spectra table", cat_path or "catalogue"
    if file_column not in spectra.colnames:
        raise ValueError(f"{where_s}: no column {file_column!r} of spectrum files (columns: {', '.join(spectra.colnames)})")
    if id_column not in cat.colnames:
        raise ValueError(f"{where_c}: no id column {id_column!r} (columns: {', '.join(cat.colnames[:12])})")
    ids = [str(v).strip() for v in cat[id_column]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{where_c}: the id column {id_column!r} has duplicates")
    row_of = {v: i for i, v in enumerate(ids)}
    if label_names is None:
        skip = {id_column, rv_column} | {c for c in cat.colnames if c.endswith("_err")}
        label_names = [c for c in cat.colnames if c not in skip and np.issubdtype(np.asarray(cat[c]).dtype, np.number)]
    elif isinstance(label_names, str):
        label_names = [n.strip() for n in label_names.split(",") if n.strip()]
    label_names = list(label_names)
    if not label_names:
        raise ValueError(f"{where_c}: no label columns")
    labels_all = np.column_stack([_column(cat, n, where_c, "label column") for n in label_names])
    if error_columns is None:
        error_columns = [f"{n}_err" if f"{n}_err" in cat.colnames else None for n in label_names]
        if not any(error_columns):
            error_columns = None
    elif len(error_columns) != len(label_names):
        raise ValueError(f"{len(error_columns)} error columns for {len(label_names)} labels {label_names}")
    errors_all = None if error_columns is None else np.column_stack(
        [np.zeros(len(cat)) if c is None else _column(cat, c, where_c, "error column") for c in error_columns])
    rvs = None if rv_column is None else _column(cat, rv_column, where_c, "rv column")
    base = Path(spectra_path).parent if spectra_path is not None else Path(".")
    grid = None if wavelength is None else (np.asarray(load_wavelength(wavelength), np.float64)
                                            if isinstance(wavelength, (str, Path)) else np.asarray(wavelength, np.float64))
    grid_medium = None if grid is None else (medium or "vacuum")
    rows, fluxes, ivars = [], [], []
    for k, entry in enumerate(spectra):
        path = Path(str(entry[file_column]).strip())
        path = path if path.is_absolute() else base / path
        try:
            spectrum = read_spectrum(path, medium=medium)[0]
        except (SpectrumFormatError, OSError, ValueError) as error:
            warn(f"{error}; spectrum dropped from the training set")
            continue
        sid = str(entry[id_column]).strip() if id_column in spectra.colnames else str(spectrum.id)
        if sid not in row_of:
            warn(f"{path}: id {sid!r} is not in {where_c}; spectrum dropped from the training set")
            continue
        i = row_of[sid]
        wave = spectrum.wavelength
        if spectrum.frame not in (None, "rest"):
            if rvs is None or not np.isfinite(rvs[i]):
                warn(f"{path}: {spectrum.frame} wavelengths and no rv for {sid!r} (rv_column); spectrum dropped")
                continue
            rv = float(rvs[i])
            if spectrum.frame == "topocentric":  # v_topo = v_bary − barycentric correction
                rv -= spectrum.barycentric_correction or 0.0
            wave = wave / float(doppler_factor(rv))
        if grid is None:
            grid, grid_medium = wave.copy(), spectrum.medium
        if spectrum.medium != grid_medium:
            from jaxpayne.io import air_to_vacuum, vacuum_to_air

            wave = vacuum_to_air(wave) if grid_medium == "air" else air_to_vacuum(wave)
        ivar = np.where(spectrum.good, spectrum.ivar, 0.0)
        f, iv = resample_spectrum(wave, spectrum.flux, ivar, grid)
        if not np.any(iv > 0):
            warn(f"{path}: no usable pixel on the training grid; spectrum dropped")
            continue
        rows.append(i)
        fluxes.append(f)
        ivars.append(iv)
    if len(rows) < 2:
        raise ValueError(f"{where_s}: fewer than 2 usable spectra with catalogue labels")
    rows = np.asarray(rows)
    return TrainingSet(grid, labels_all[rows], np.asarray(fluxes), tuple(label_names), (), np.asarray(ivars),
                       grid_medium, str(where_s), {"ids": [ids[i] for i in rows]},
                       None if errors_all is None else errors_all[rows])
