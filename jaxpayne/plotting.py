"""Diagnostic plots (matplotlib, imported lazily)."""

from __future__ import annotations

import numpy as np

__all__ = ["plot_fit"]


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
