"""Per-star summary of posterior samples: one table row per star, in the style of ``fit`` tables.

Columns (:func:`summary_columns`): per parameter the posterior ``<name>_mean``, ``<name>_sd``,
the 16/50/84 % quantiles ``<name>_p16``/``_p50``/``_p84``, the rank-normalised split
``<name>_r_hat`` and the bulk and tail effective sample sizes (Vehtari et al. 2021, Bayesian
Analysis 16, 667, via ArviZ) — also of the derived quantities stored beside the parameters (a
tied binary's ``teff_2``, ``logg_2``); then the star's ``n_divergent`` and ``divergence_rate`` (after
warmup), ``max_depth_rate`` (share of transitions at the tree-depth cap), ``mean_steps``,
``step_size``, the start fit's ``fit_chi2_red``, the :class:`~jaxpayne.fitting.Flags` bits,
a ``message`` and the posterior ``covariance`` of the sampled parameters.
"""

from __future__ import annotations

import json
import warnings
from typing import Sequence

import numpy as np

from jaxpayne.fitting.fitter import BOUND_TOLERANCE, Flags
from jaxpayne.sampling.sampler import DEFAULT_MAX_TREE_DEPTH

__all__ = ["ESS_LIMIT", "R_HAT_LIMIT", "TREE_DEPTH_RATE_LIMIT", "summarize", "summary_columns",
           "failed_summary_row"]

#: r_hat above which R_HAT_HIGH is raised.
R_HAT_LIMIT = 1.01
#: ess_bulk below which ESS_LOW is raised.
ESS_LIMIT = 400.0
#: Share of transitions at the maximum tree depth above which TREE_DEPTH is raised.
TREE_DEPTH_RATE_LIMIT = 0.05
#: Flags of the start fit that carry over to the summary (they describe the data, not the fit).
INHERITED_FLAGS = Flags.FEW_PIXELS | Flags.FAILED | Flags.PIXELS_CLIPPED | Flags.HIGH_CHI2
_STATS = ("mean", "sd", "p16", "p50", "p84", "r_hat", "ess_bulk", "ess_tail")


def summary_columns(param_names: Sequence[str], derived: Sequence[str] = ()) -> list[str]:
    """Column names of a summary table, in order (``derived``: quantities computed from the draws)."""
    cols = ["id", "source"]
    for name in (*param_names, *derived):
        cols += [f"{name}_{stat}" for stat in _STATS]
    return cols + ["n_divergent", "divergence_rate", "max_depth_rate", "mean_steps", "step_size",
                   "fit_chi2_red", "flags", "message", "covariance"]


def summarize(idata, sources: Sequence[str] | None = None) -> list[dict]:
    """Summary rows (dicts, columns of :func:`summary_columns`) of every star in ``idata``.

    Args:
        idata: InferenceData from :meth:`~jaxpayne.sampling.Sampler.sample` (or read back from
            its netCDF file).
        sources: source file of each star (default: ``constant_data.source`` where present).
    """
    import arviz as az

    post = idata.posterior
    names = [n for n in post.attrs.get("parameters", "").split(",") if n] or list(post.data_vars)
    derived = [n for n in post.attrs.get("derived", "").split(",") if n and n in post.data_vars]
    stat_names = names + derived
    stars = [str(s) for s in post["star"].values]
    if sources is None:
        const = getattr(idata, "constant_data", None)
        sources = ([str(s) for s in const["source"].values] if const is not None and "source" in const
                   else [""] * len(stars))
    setup = json.loads(post.attrs.get("setup", "{}") or "{}")
    max_depth = int(setup.get("max_tree_depth", DEFAULT_MAX_TREE_DEPTH))
    nuts = str(setup.get("algorithm", "NUTS")).upper() == "NUTS"
    with warnings.catch_warnings():  # a constant quantity (a companion clipped to the box) has no r_hat: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        # r_hat compares chains: with one chain there is none (NaN, and no R_HAT_HIGH flag)
        rhat = (az.rhat(post[stat_names], method="rank") if post.sizes.get("chain", 1) > 1
                else {n: post[n].isel(chain=0, draw=0) * np.nan for n in stat_names})
        bulk = az.ess(post[stat_names], method="bulk")
        tail = az.ess(post[stat_names], method="tail")
    stats = idata.sample_stats
    diverging = np.asarray(stats["diverging"].values, bool)  # (C, S, B)
    n_steps = np.asarray(stats["n_steps"].values)
    depth = np.asarray(stats["tree_depth"].values)
    step = np.asarray(stats["step_size"].values, np.float64)
    const = idata.constant_data
    fit_flags = np.asarray(const["fit_flags"].values, np.int64)
    fit_chi2 = np.asarray(const["fit_chi2"].values, np.float64)
    fit_dof = np.asarray(const["fit_dof"].values, np.int64)
    window = np.asarray(const["rv_window"].values, np.float64) if "rv_window" in const else None
    bounds = setup.get("bounds") or setup.get("fit", {}).get("bounds", {})
    velocities = [n for n in setup.get("velocities", ["rv"]) if n in names]
    labels = set(setup.get("labels", []))
    draws = {n: np.asarray(post[n].values, np.float64) for n in stat_names}  # (C, S, B)
    rows = []
    for b, star in enumerate(stars):
        row: dict = {"id": star, "source": str(sources[b])}
        every = np.column_stack([draws[n][:, :, b].reshape(-1) for n in stat_names])
        samples = every[:, :len(names)]
        failed = not np.all(np.isfinite(samples))
        flags = int(fit_flags[b]) & int(INHERITED_FLAGS)
        messages = []
        for j, name in enumerate(stat_names):
            x = every[:, j]
            q16, q50, q84 = np.percentile(x, [16, 50, 84]) if not failed else (np.nan,) * 3
            row.update({
                f"{name}_mean": float(np.mean(x)), f"{name}_sd": float(np.std(x, ddof=1)),
                f"{name}_p16": float(q16), f"{name}_p50": float(q50), f"{name}_p84": float(q84),
                f"{name}_r_hat": float(rhat[name].values[b]), f"{name}_ess_bulk": float(bulk[name].values[b]),
                f"{name}_ess_tail": float(tail[name].values[b]),
            })
            # the emulator's labels, and the derived labels it clips to its box (a tied companion)
            if (name in labels or name in derived) and name in bounds and not failed:
                lo, hi = bounds[name]
                tol = BOUND_TOLERANCE * (hi - lo) if np.isfinite(hi - lo) else 0.0
                if q50 <= lo + tol or q50 >= hi - tol:
                    flags |= int(Flags.AT_BOUND)
        if failed:
            flags |= int(Flags.FAILED)
            messages.append("no posterior (the start fit failed)")
        else:
            r = [x for x in (row[f"{n}_r_hat"] for n in names) if np.isfinite(x)]
            e = [x for x in (row[f"{n}_ess_bulk"] for n in names) if np.isfinite(x)]
            if r and max(r) > R_HAT_LIMIT:
                flags |= int(Flags.R_HAT_HIGH)
            if e and min(e) < ESS_LIMIT:
                flags |= int(Flags.ESS_LOW)
        n_div = int(diverging[:, :, b].sum())
        if n_div and not failed:
            flags |= int(Flags.DIVERGENT)
        at_cap = float(np.mean(depth[:, :, b] >= max_depth)) if nuts else float("nan")
        if nuts and at_cap > TREE_DEPTH_RATE_LIMIT and not failed:
            flags |= int(Flags.TREE_DEPTH)
        if window is not None and velocities and not failed and window[b, 1] > window[b, 0]:
            rv = samples[:, [names.index(n) for n in velocities]]
            span = window[b, 1] - window[b, 0]
            if rv.min() <= window[b, 0] + 1e-3 * span or rv.max() >= window[b, 1] - 1e-3 * span:
                flags |= int(Flags.RV_AT_LIMIT)
        dof = int(fit_dof[b])
        chi2_red = float(fit_chi2[b] / dof) if dof > 0 else float("nan")
        text = ",".join(f.name for f in Flags if flags & f)
        row.update(
            n_divergent=n_div, divergence_rate=float(diverging[:, :, b].mean()), max_depth_rate=at_cap,
            mean_steps=float(n_steps[:, :, b].mean()), step_size=float(np.median(step[:, :, b])),
            fit_chi2_red=chi2_red, flags=flags, message="; ".join(m for m in [text] + messages if m),
            covariance=np.cov(samples, rowvar=False).reshape(len(names), len(names)) if not failed
            else np.full((len(names), len(names)), np.nan),
        )
        rows.append(row)
    return rows


def failed_summary_row(names: Sequence[str], id_: str, source: str, message: str,
                       derived: Sequence[str] = ()) -> dict:
    """The row of a spectrum that could not be read or sampled (flag FAILED)."""
    row: dict = {"id": id_, "source": source}
    for name in (*names, *derived):
        for stat in _STATS:
            row[f"{name}_{stat}"] = float("nan")
    n = len(names)
    row.update(n_divergent=0, divergence_rate=float("nan"), max_depth_rate=float("nan"), mean_steps=float("nan"),
               step_size=float("nan"), fit_chi2_red=float("nan"), flags=int(Flags.FAILED),
               message=(message.splitlines()[0] if message else "failed"), covariance=np.full((n, n), np.nan))
    return row


def summary_table(rows, names, meta: dict | None = None, derived: Sequence[str] = ()):
    """An astropy Table of summary rows (columns of :func:`summary_columns`)."""
    from astropy.table import Table

    rows = list(rows)
    cols = summary_columns(names, derived)
    n = len(names)
    data = {c: [r[c] for r in rows] for c in cols}
    data["covariance"] = (np.stack([np.asarray(c, np.float64).reshape(n, n) for c in data["covariance"]])
                          if rows else np.zeros((0, n, n)))
    table = Table(data, names=cols)
    for c in ("id", "source", "message"):
        table[c] = table[c].astype(str)
    table.meta["PARAMS"] = ",".join(names)
    if derived:
        table.meta["DERIVED"] = ",".join(derived)
    table.meta["FLAGS"] = "; ".join(f"{f.value}={f.name}" for f in Flags)
    for key, value in (meta or {}).items():
        table.meta[key] = value
    return table
