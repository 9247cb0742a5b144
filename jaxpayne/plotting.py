"""Diagnostic plots (matplotlib, imported lazily)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_binary_fit", "plot_corner", "plot_emulator_error", "plot_fit", "plot_gradient_spectra",
           "plot_precision_vs_resolution", "plot_training_history"]

#: Windows [Å] of :func:`plot_binary_fit`: strong Fe, Mg, OH and CN lines on each APOGEE chip.
APOGEE_LINE_WINDOWS = ((15190.0, 15290.0), (15950.0, 16050.0), (16700.0, 16800.0))


def _single_axes(ax, figsize):
    """``ax`` and its figure, or a new figure of ``figsize`` with one axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _finish(fig, ax, title: str, legend_size: float = 8):
    """The common ending of a one-axes plot: legend, title, tight layout."""
    ax.legend(fontsize=legend_size)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_fit(fitter, theta, obs, *, title: str = "", axes=None):
    """Data, best-fit model and normalised residuals of one spectrum, one panel pair per segment.

    Both data and model are shown after the fit's continuum treatment (the same for both), on the
    pixels the model covers at the fitted radial velocity.

    Args:
        fitter: a :class:`jaxpayne.fitting.Fitter` (or anything with a ``forward`` ForwardModel).
        theta: best-fit free parameters, physical units (a row of the results table).
        obs: the :class:`~jaxpayne.forward.Observation` that was fitted.
        title: figure title.
        axes: optional (2, n_segments) array of matplotlib axes.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    fm = getattr(fitter, "forward", fitter)
    theta = np.asarray(theta, dtype=np.float64)
    values = dict(zip(fm.param_names, theta))
    rv = float(values.get("rv", fm.fixed.get("rv", 0.0)))
    covered = fm.valid_wavelength(np.asarray(obs.wavelength), (rv, rv))
    obs = obs._replace(ivar=np.where(covered, np.asarray(obs.ivar), 0.0))
    model_norm, data_norm, ivar_norm = (np.asarray(a) for a in fm.normalized(theta, obs))
    wave = np.asarray(obs.wavelength)
    segment = np.asarray(obs.segment)
    good = ivar_norm > 0
    segments = [s for s in range(fm.n_segments) if np.any(good & (segment == s))]
    if axes is None:
        fig, axes = plt.subplots(2, len(segments), figsize=(5 * len(segments), 4.5), squeeze=False,
                                 sharey="row", gridspec_kw={"height_ratios": [3, 1.3]})
    else:
        fig = axes[0, 0].figure
    for col, s in enumerate(segments):
        pick = good & (segment == s)
        top, bottom = axes[0, col], axes[1, col]
        top.plot(wave[pick], data_norm[pick], "k-", lw=0.5, label="data")
        top.plot(wave[pick], model_norm[pick], "r-", lw=0.5, label="model")
        resid = (data_norm - model_norm) * np.sqrt(np.where(good, ivar_norm, 0))
        bottom.plot(wave[pick], resid[pick], "k-", lw=0.3)
        bottom.axhline(0, color="r", lw=0.5)
        bottom.set_xlabel("wavelength [Å]")
        if col == 0:
            top.set_ylabel("normalised flux")
            bottom.set_ylabel("(data − model)/σ")
            top.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_binary_fit(fitter, obs, result, *, index: int = 0, windows=APOGEE_LINE_WINDOWS, title: str = ""):
    """Data, the single-star and the binary (SB2) fits and both residuals in a few windows.

    Both models are shown after the same continuum step, at their own best-fit parameters, on
    the pixels the single-star model covers at its largest velocity margin.

    Args:
        fitter: a :class:`jaxpayne.fitting.binary.BinaryFitter`.
        obs: the :class:`~jaxpayne.forward.Observation` that was fitted (one spectrum, no batch axis).
        result: the :class:`~jaxpayne.fitting.BatchFit` of ``fitter.fit`` (its ``extra`` holds the
            single-star fit as ``single_<name>`` and ``chi2_single``).
        index: the spectrum's row in ``result``.
        windows: (lo, hi) wavelength windows [Å], one column of panels each.
        title: what the figure shows (a star's name); Δχ², q and both velocities follow it.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    theta = np.asarray(result.theta[index], np.float64)
    single = np.array([result.extra[f"single_{n}"][index] for n in fitter.single.param_names])
    settings = fitter.settings
    covered = np.asarray(fitter.single.forward.valid_wavelength(np.asarray(obs.wavelength)))
    obs = obs._replace(ivar=np.where(covered, np.asarray(obs.ivar), 0.0),
                       flux=np.where(covered, np.asarray(obs.flux), 0.0))
    m_bin, data, ivar = (np.asarray(a) for a in fitter.forward.normalized(theta, obs, settings=settings))
    m_one = np.asarray(fitter.single.forward.normalized(single, obs, settings=settings)[0])
    wave = np.asarray(obs.wavelength)
    good = ivar > 0
    fig, axes = plt.subplots(2, len(windows), figsize=(5 * len(windows), 6), sharex="col", squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1.4]})
    for k, (lo, hi) in enumerate(windows):
        sel = good & (wave >= lo) & (wave <= hi)
        top, bottom = axes[0, k], axes[1, k]
        top.plot(wave[sel], data[sel], "k.", ms=2, label="data")
        top.plot(wave[sel], m_one[sel], color="C0", lw=1,
                 label=f"single star (χ² {result.extra['chi2_single'][index]:.0f})")
        top.plot(wave[sel], m_bin[sel], color="C3", lw=1, label=f"binary (χ² {result.chi2[index]:.0f})")
        sigma = 1.0 / np.sqrt(ivar[sel])
        bottom.fill_between(wave[sel], -sigma, sigma, color="0.85", lw=0)
        bottom.plot(wave[sel], data[sel] - m_one[sel], color="C0", lw=0.8)
        bottom.plot(wave[sel], data[sel] - m_bin[sel], color="C3", lw=0.8)
        bottom.set_xlabel("wavelength [Å]")
        if k == 0:
            top.set_ylabel("normalised flux")
            bottom.set_ylabel("data − model")
            top.legend(loc="lower left", fontsize=8)
    row = dict(zip(fitter.param_names, theta))
    summary = (f"Δχ² = {result.extra['delta_chi2'][index]:.0f}, q = {row.get('q', np.nan):.2f}, "
               f"rv₁ = {row['rv_1']:.1f}, rv₂ = {row['rv_2']:.1f} km/s")
    fig.suptitle(f"{title}: {summary}" if title else summary, fontsize=10)
    fig.tight_layout()
    return fig


def plot_gradient_spectra(bounds, names=None, *, axes=None, title: str = ""):
    """Gradient spectra (flux change per 1σ of each parameter) and each pixel's information share.

    One panel pair per parameter: the gradient spectrum on top, the pixel's share of the
    parameter's marginal information below (see :func:`jaxpayne.information.information_shares`).

    Args:
        bounds: a :class:`jaxpayne.information.Bounds`.
        names: parameters to draw (default every constrained one).
        axes: optional (2·len(names),) matplotlib axes.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    from jaxpayne.information import gradient_spectra, information_shares

    gradient, shares = gradient_spectra(bounds), information_shares(bounds)
    if names is None:
        names = [n for n, s in zip(bounds.names, bounds.status) if s == "ok"]
    columns = [bounds.names.index(n) for n in names]
    if axes is None:
        fig, axes = plt.subplots(2 * len(columns), 1, figsize=(9, 2.2 * len(columns) + 0.6), sharex=True,
                                 squeeze=False)
        axes = axes[:, 0]
    fig = axes[0].figure
    wave, segment = bounds.wavelength, bounds.segment
    for k, j in enumerate(columns):
        top, bottom = axes[2 * k], axes[2 * k + 1]
        for s in np.unique(segment):  # no lines drawn across chip gaps
            pick = segment == s
            top.plot(wave[pick], gradient[pick, j], "k-", lw=0.5)
            bottom.plot(wave[pick], shares[pick, j], "C0-", lw=0.5)
        unit = bounds.units[j]
        sigma = bounds.sigma[j]
        top.set_ylabel(f"∂f/∂{bounds.names[j]}·σ", fontsize=8)
        top.set_title(f"{bounds.names[j]}: σ = {sigma:.3g}{' ' + unit if unit else ''}", fontsize=8, loc="left")
        bottom.set_ylabel("info share", fontsize=8)
    axes[-1].set_xlabel("wavelength [Å]")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_precision_vs_resolution(resolutions, bounds_list, names=None, *, ax=None, title: str = ""):
    """Cramér–Rao bound of each parameter against resolving power (one line per parameter, in
    its own units, log–log); flagged bounds (NaN) are left out, never drawn huge.

    Args:
        resolutions: the resolving powers.
        bounds_list: one :class:`jaxpayne.information.Bounds` per R (e.g. from
            :func:`jaxpayne.information.crlb_vs_resolution`).
        names: parameters to draw (default all).
        ax: optional matplotlib axes.
        title: axes title.

    Returns:
        The matplotlib figure.
    """
    names = list(names or bounds_list[0].names)
    fig, ax = _single_axes(ax, (6, 4))
    resolutions = np.asarray(resolutions, np.float64)
    for name in names:
        sigma = np.array([b.sigma[b.names.index(name)] for b in bounds_list])
        unit = bounds_list[0].units[bounds_list[0].names.index(name)]
        ax.plot(resolutions, sigma, "o-", ms=3, label=f"{name}{' [' + unit + ']' if unit else ''}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(resolutions, [f"{r:,.0f}" for r in resolutions])  # the R values, not crowded log labels
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("resolving power R")
    ax.set_ylabel("Cramér–Rao bound σ")
    ax.grid(alpha=0.3, which="both")
    return _finish(fig, ax, title, legend_size=7)


def plot_corner(idata, *, star=0, var_names=None, truths=None, title: str = ""):
    """Corner plot of one star's posterior: pairwise draws and each parameter's marginal,
    drawn with :func:`arviz.plot_pair`.

    Args:
        idata: ``arviz.InferenceData`` from :mod:`jaxpayne.sampling` (a ``star`` dimension).
        star: the star, by position or by its id in the ``star`` coordinate.
        var_names: parameters to draw (default every sampled parameter of the star).
        truths: optional name → value (e.g. a mock star's true labels), drawn as reference lines.
        title: figure title.

    Returns:
        The matplotlib figure.
    """
    import arviz as az
    import matplotlib.pyplot as plt

    post = idata.posterior
    if "star" in post.dims:
        post = post.isel(star=star) if isinstance(star, (int, np.integer)) else post.sel(star=star)
    if var_names is None:
        var_names = [v for v in post.data_vars if post[v].dims == ("chain", "draw")]
    reference = None if truths is None else {k: float(v) for k, v in truths.items() if k in var_names}
    axes = az.plot_pair(post, var_names=list(var_names), kind="scatter", marginals=True,
                        scatter_kwargs={"alpha": 0.25, "s": 2}, reference_values=reference,
                        reference_values_kwargs={"color": "C3", "markersize": 5},
                        figsize=(1.9 * len(var_names) + 1, 1.9 * len(var_names) + 1), textsize=8)
    fig = np.atleast_2d(axes)[0, 0].figure
    if title:
        fig.suptitle(title, fontsize=9)
    plt.setp(fig.axes, rasterized=True)
    return fig


def plot_training_history(history, *, best_epoch: int | None = None, ax=None, title: str = ""):
    """Training curve: the training loss and the validation rms error per epoch (log scale).

    Args:
        history: ``{"epoch", "train_loss", "val_rms"}`` arrays
            (:attr:`jaxpayne.training.TrainingResult.history`).
        best_epoch: epoch of the kept weights, marked with a vertical line.
        ax: optional matplotlib axes.
        title: axes title.

    Returns:
        The matplotlib figure.
    """
    fig, ax = _single_axes(ax, (6, 3.8))
    epoch = np.asarray(history["epoch"])
    ax.plot(epoch, np.asarray(history["train_loss"]), "C0-", lw=0.8, label="training loss")
    ax.plot(epoch, np.asarray(history["val_rms"]), "C1-", lw=0.8, label="validation rms error")
    if best_epoch is not None:
        ax.axvline(best_epoch, color="k", ls=":", lw=0.8, label=f"kept: epoch {best_epoch}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss, rms error [normalised flux]")
    ax.grid(alpha=0.3, which="both")
    return _finish(fig, ax, title)


def plot_emulator_error(model, *, noise: float | None = None, ax=None, title: str = ""):
    """The emulator's own validation error against wavelength (the per-pixel rms the model
    file carries and the likelihood adds to the noise).

    Args:
        model: a :class:`jaxpayne.Model` with a validation error.
        noise: optional reference noise level (e.g. 1/(S/N)) drawn as a horizontal line.
        ax: optional matplotlib axes.
        title: axes title.

    Returns:
        The matplotlib figure.

    Raises:
        ValueError: when the model carries no validation error.
    """
    error = model.emulator_error
    if error is None:
        raise ValueError("the model carries no validation error (train it with jaxpayne, or add one)")
    fig, ax = _single_axes(ax, (8, 3.2))
    wave = np.asarray(model.wavelength)
    error = np.asarray(error)
    gaps = np.flatnonzero(np.diff(wave) > 20 * np.median(np.diff(wave))) + 1  # no lines across chip gaps
    for k, (a, b) in enumerate(zip(np.r_[0, gaps], np.r_[gaps, wave.size])):
        ax.plot(wave[a:b], error[a:b], "k-", lw=0.5, label="validation rms" if k == 0 else None)
    ax.axhline(np.median(error), color="C0", lw=0.8, ls="--", label=f"median {np.median(error):.2g}")
    if noise is not None:
        ax.axhline(noise, color="C3", lw=0.8, ls=":", label=f"noise {noise:.2g}")
    ax.set_yscale("log")
    ax.set_xlabel(f"wavelength [Å, {getattr(model, 'medium', 'vacuum')}]")
    ax.set_ylabel("emulator rms error [normalised flux]")
    return _finish(fig, ax, title)
