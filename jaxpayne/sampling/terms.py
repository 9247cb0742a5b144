"""Likelihood terms beside the spectrum's: asteroseismology, label measurements (and, with
:mod:`jaxpayne.photometry`, parallax and photometry), added to the posterior in a line.

A term predicts observables from the *named* parameters — the spectrum's labels and any latent
parameters it adds (a mass, a distance, an extinction, a Δν correction factor) — and compares them
with per-star measurements with Gaussian errors:

.. math:: \\ln L_\\text{term} = -\\tfrac12 \\sum_k \\left(\\frac{f_k(\\theta) - x_k}{\\sigma_k}\\right)^2

The measurements are data, one value per star (columns ``<observable>`` and
``<observable>_err`` of a constraints table); a star whose value is missing (NaN) gets no
contribution from that observable, so one catalogue serves stars with and without seismology.
Latent parameters join the sampled parameter space (uniform over their bounds unless the term
or the user's :class:`~jaxpayne.sampling.Prior` gives a distribution); terms that share a latent
name share the parameter (the mass of the seismic and the photometric terms).

Use:
    >>> sampler = Sampler(model, terms=[Seismic()], continuum="filter")        # doctest: +SKIP
    >>> idata = sampler.sample(batch, constraints={"numax": numax, "numax_err": err})  # doctest: +SKIP

The Fisher information of a term at θ is JᵀJ of its whitened residuals
(:meth:`~jaxpayne.sampling.Posterior.constraint_fisher`): added to the spectrum's it predicts how
much the term shrinks each posterior.

References:
    Brown et al. 1991, ApJ 368, 599; Kjeldsen & Bedding 1995, A&A 293, 87 (scaling relations);
    Huber et al. 2011, ApJ 743, 143 (solar references ν_max,☉ = 3090 μHz, Δν☉ = 135.1 μHz);
    Prša et al. 2016, AJ 152, 41 (IAU 2015 nominal Teff,☉ = 5772 K, GM☉, R☉: log g☉ = 4.438);
    Sharma et al. 2016, ApJ 822, 15 (Δν corrections of a few per cent).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

__all__ = ["DNU_SUN", "GaussianTerm", "LOGG_SUN", "Latent", "LabelMeasurement", "NUMAX_SUN", "Seismic",
           "TEFF_SUN", "constraint_columns", "merge_latents", "read_constraints", "terms_for_columns"]

#: Solar ν_max [μHz] (Huber et al. 2011).
NUMAX_SUN = 3090.0
#: Solar Δν [μHz] (Huber et al. 2011).
DNU_SUN = 135.1
#: Nominal solar effective temperature [K] (IAU 2015 B3, Prša et al. 2016).
TEFF_SUN = 5772.0
#: Solar log g [cgs] from the IAU 2015 nominal GM☉ and R☉ (log10(2.7400e4) = 4.4378).
LOGG_SUN = 4.4378


class Latent(NamedTuple):
    """A parameter a term adds to the sampled space.

    Attributes:
        name: its name (shared by terms that use the same quantity).
        unit: its unit.
        lower, upper: its bounds (the box HMC samples in).
        initial: a start value when a term has no better one.
        prior: a NumPyro distribution of it, or None for uniform over the bounds.
        scale: the spread of the chains' starts [its unit].
    """

    name: str
    unit: str
    lower: float
    upper: float
    initial: float
    prior: Any = None
    scale: float = 1.0


class GaussianTerm:
    """Observables predicted from the named parameters and measured with Gaussian errors.

    Subclasses define :meth:`predict` and set ``name``, ``observables`` and ``latent``; they
    may refine :meth:`start`. Hashing is by identity (a term is static data of compiled
    functions).
    """

    name: str = "term"
    observables: tuple[str, ...] = ()
    latent: tuple[Latent, ...] = ()

    def predict(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Observable name → its predicted value from the named parameters (traceable)."""
        raise NotImplementedError

    @property
    def data_names(self) -> tuple[str, ...]:
        """The per-star data the term reads: each observable and its ``_err``."""
        return tuple(n for o in self.observables for n in (o, f"{o}_err"))

    def residuals(self, values: Mapping[str, Any], data: Mapping[str, Any]):
        """(n_observables,) whitened residuals (f − x)/σ, 0 where x or σ is missing (traceable)."""
        import jax.numpy as jnp

        predicted = self.predict(values)
        out = []
        for name in self.observables:
            x, sigma = jnp.asarray(data[name]), jnp.asarray(data[f"{name}_err"])
            ok = jnp.isfinite(x) & jnp.isfinite(sigma) & (sigma > 0)
            out.append(jnp.where(ok, (predicted[name] - jnp.where(ok, x, 0.0)) / jnp.where(ok, sigma, 1.0), 0.0))
        return jnp.stack(out) if out else jnp.zeros((0,))

    def log_likelihood(self, values: Mapping[str, Any], data: Mapping[str, Any]):
        """ln L of the term (normalising constants left out; traceable)."""
        import jax.numpy as jnp

        return -0.5 * jnp.sum(self.residuals(values, data) ** 2)

    def start(self, values: Mapping[str, np.ndarray], data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Start values of the latent parameters for a batch (numpy; name → (B,)), from the
        fitted labels and the data. Default: each latent's ``initial``."""
        batch = np.shape(next(iter(values.values())))[0] if values else 1
        return {lat.name: np.full(batch, lat.initial) for lat in self.latent}

    def describe(self) -> dict:
        """JSON-serialisable description (recorded in output files)."""
        return {"term": type(self).__name__, "observables": list(self.observables),
                "latent": [lat.name for lat in self.latent]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(observables={list(self.observables)})"


class LabelMeasurement(GaussianTerm):
    """Independent measurements of labels, one per star: ``<label>`` ± ``<label>_err``.

    A per-star Gaussian prior on a label (a photometric Teff, a catalogue [Fe/H], an
    interferometric log g) — the prior varies from star to star, which a
    :class:`~jaxpayne.sampling.Prior` cannot do.

    Args:
        names: the labels (or other parameters) measured.
    """

    def __init__(self, names: Sequence[str]):
        self.observables = tuple(str(n) for n in names)
        self.name = "labels"

    def predict(self, values):
        return {name: values[name] for name in self.observables}


class Seismic(GaussianTerm):
    """Asteroseismic scaling relations for solar-like oscillators (global ν_max and Δν).

    .. math:: \\nu_\\max = \\nu_{\\max,\\odot}\\,\\frac{g}{g_\\odot}
              \\left(\\frac{T_\\mathrm{eff}}{T_{\\mathrm{eff},\\odot}}\\right)^{-1/2},\\qquad
              \\Delta\\nu = f_{\\Delta\\nu}\\,\\Delta\\nu_\\odot\\left(\\frac{\\rho}{\\rho_\\odot}\\right)^{1/2},
              \\quad \\frac{\\rho}{\\rho_\\odot} = \\left(\\frac{g}{g_\\odot}\\right)^{3/2}
              \\left(\\frac{M}{M_\\odot}\\right)^{-1/2}

    ν_max needs only Teff and log g; Δν brings in the mass (a latent parameter ``mass`` [M☉],
    uniform over ``mass_bounds`` unless a prior is given) and, optionally, a correction factor
    ``f_dnu`` with a Gaussian prior (its uncertainty expresses the relation's systematic error).

    Args:
        numax, dnu: which observables to use (columns ``numax``, ``numax_err``, ``dnu``,
            ``dnu_err``, μHz).
        teff, logg: the names of the labels [K, dex].
        numax_sun, dnu_sun, teff_sun, logg_sun: the solar references (defaults: Huber et al.
            2011 and the IAU 2015 nominal values).
        dnu_correction: ``(mean, sd)`` of the Gaussian prior of the factor ``f_dnu`` (e.g.
            ``(1.0, 0.02)``), or None to hold it at 1.
        mass_bounds: bounds of the latent mass [M☉].
        mass_prior: a NumPyro distribution of the mass, or None (uniform).
    """

    def __init__(self, numax: bool = True, dnu: bool = True, *, teff: str = "teff", logg: str = "logg",
                 numax_sun: float = NUMAX_SUN, dnu_sun: float = DNU_SUN, teff_sun: float = TEFF_SUN,
                 logg_sun: float = LOGG_SUN, dnu_correction: tuple[float, float] | None = None,
                 mass_bounds: tuple[float, float] = (0.3, 6.0), mass_prior=None):
        if not (numax or dnu):
            raise ValueError("a seismic term needs numax, dnu or both")
        self.name = "seismic"
        self.use_numax, self.use_dnu = bool(numax), bool(dnu)
        self.teff, self.logg = str(teff), str(logg)
        self.numax_sun, self.dnu_sun = float(numax_sun), float(dnu_sun)
        self.teff_sun, self.logg_sun = float(teff_sun), float(logg_sun)
        self.observables = tuple(n for n, use in (("numax", numax), ("dnu", dnu)) if use)
        latent = []
        if dnu:
            lo, hi = (float(b) for b in mass_bounds)
            latent.append(Latent("mass", "Msun", lo, hi, 1.0, mass_prior, 0.3))
            self.dnu_correction = None if dnu_correction is None else tuple(float(v) for v in dnu_correction)
            if self.dnu_correction is not None:
                import numpyro.distributions as dist

                mean, sd = self.dnu_correction
                if not sd > 0:
                    raise ValueError(f"the Δν correction's prior needs sd > 0, got {sd}")
                latent.append(Latent("f_dnu", "", max(mean - 10 * sd, 1e-3), mean + 10 * sd, mean,
                                     dist.Normal(mean, sd), sd))
        else:
            self.dnu_correction = None
        self.latent = tuple(latent)

    def predict(self, values):
        import jax.numpy as jnp

        g = 10.0 ** (values[self.logg] - self.logg_sun)  # g / g_sun
        t = values[self.teff] / self.teff_sun
        out = {}
        if self.use_numax:
            out["numax"] = self.numax_sun * g / jnp.sqrt(t)
        if self.use_dnu:
            density = g**1.5 / jnp.sqrt(values["mass"])
            factor = values["f_dnu"] if self.dnu_correction is not None else 1.0
            out["dnu"] = factor * self.dnu_sun * jnp.sqrt(density)
        return out

    def start(self, values, data):
        """The scaling-relation mass M = (ν_max/ν_max,☉)³ (Δν/Δν☉)⁻⁴ (Teff/Teff,☉)^{3/2} where
        both are measured, else M = (g/g☉)^3 (Δν/Δν☉)^-4 from Δν and the fitted log g, else 1."""
        starts = super().start(values, data)
        if not self.use_dnu:
            return starts
        teff = np.asarray(values[self.teff], np.float64)
        g = 10.0 ** (np.asarray(values[self.logg], np.float64) - self.logg_sun)
        dnu = np.asarray(data.get("dnu", np.full(teff.shape, np.nan)), np.float64) / self.dnu_sun
        numax = np.asarray(data.get("numax", np.full(teff.shape, np.nan)), np.float64) / self.numax_sun
        with np.errstate(invalid="ignore", divide="ignore"):
            both = numax**3 * dnu**-4 * (teff / self.teff_sun) ** 1.5
            from_logg = g**3 * dnu**-4
        mass = np.where(np.isfinite(both) & (both > 0), both, np.where(np.isfinite(from_logg) & (from_logg > 0),
                                                                         from_logg, 1.0))
        lat = self.latent[0]
        span = lat.upper - lat.lower
        starts["mass"] = np.clip(mass, lat.lower + 0.01 * span, lat.upper - 0.01 * span)
        return starts

    def describe(self) -> dict:
        return {**super().describe(), "numax_sun": self.numax_sun, "dnu_sun": self.dnu_sun,
                "teff_sun": self.teff_sun, "logg_sun": self.logg_sun,
                "dnu_correction": None if self.dnu_correction is None else list(self.dnu_correction)}


def merge_latents(terms: Sequence[GaussianTerm]) -> tuple[Latent, ...]:
    """The latent parameters of several terms, each name once (the first definition wins, so
    terms that share a quantity share one parameter)."""
    out: dict[str, Latent] = {}
    for term in terms:
        for lat in term.latent:
            out.setdefault(lat.name, lat)
    return tuple(out.values())


def constraint_columns(terms: Sequence[GaussianTerm]) -> tuple[str, ...]:
    """Every per-star data name the terms read, in order, each once."""
    return tuple(dict.fromkeys(n for term in terms for n in term.data_names))



def read_constraints(path, id_column: str = "id") -> dict[str, dict[str, float]]:
    """Per-star constraints from a table (CSV, ECSV, FITS, Parquet): star id → column → value.

    Masked or empty cells are NaN (that star has no such measurement); non-numeric columns
    other than the id are left out.

    Raises:
        ValueError: naming the file for a missing id column or a repeated id.
    """
    from jaxpayne.io import read_table

    table = read_table(path, "constraints table")
    if id_column not in table.colnames:
        raise ValueError(f"{path}: a constraints table needs an {id_column!r} column matching the spectrum ids "
                         f"(has {', '.join(table.colnames)})")
    numeric = [c for c in table.colnames if c != id_column and table[c].dtype.kind in "fiu"]
    out: dict[str, dict[str, float]] = {}
    for k, row in enumerate(table):
        star = str(row[id_column]).strip()
        if star in out:
            raise ValueError(f"{path}: row {k + 1}: repeated id {star!r}")
        out[star] = {c: (float("nan") if np.ma.is_masked(row[c]) else float(row[c])) for c in numeric}
    return out


def terms_for_columns(columns, parameters, *, dnu_correction: float | None = None) -> list[GaussianTerm]:
    """The terms a constraints table's columns call for.

    * ``numax`` / ``dnu`` (with ``numax_err`` / ``dnu_err``) → :class:`Seismic` (with a Δν
      correction factor of prior N(1, ``dnu_correction``) when given);
    * ``<parameter>`` with ``<parameter>_err`` for a sampled parameter (``teff``, ``logg``,
      ``feh`` ...) → :class:`LabelMeasurement`;
    * ``parallax`` with magnitudes (``phot_g_mean_mag``, ``j_m`` ...) → :class:`~jaxpayne.photometry.Photometry`.

    Args:
        columns: the table's column names.
        parameters: the names of the sampled parameters.
        dnu_correction: sd of the prior of the Δν correction factor, or None.

    Raises:
        ValueError: for an observable without its ``_err`` column.
    """
    columns = set(columns)
    terms: list[GaussianTerm] = []
    for name in ("numax", "dnu"):
        if name in columns and f"{name}_err" not in columns:
            raise ValueError(f"constraints column {name!r} needs its uncertainty {name}_err")
    numax, dnu = "numax" in columns, "dnu" in columns
    if numax or dnu:
        terms.append(Seismic(numax=numax, dnu=dnu,
                             dnu_correction=None if dnu_correction is None or not dnu else (1.0, dnu_correction)))
    labels = [p for p in parameters if p in columns]
    missing = [p for p in labels if f"{p}_err" not in columns]
    if missing:
        raise ValueError(f"constraints column(s) {missing} need their uncertainties ({', '.join(p + '_err' for p in missing)})")
    if labels:
        terms.append(LabelMeasurement(labels))
    from jaxpayne.photometry import photometry_for_columns

    photometry = photometry_for_columns(columns)
    if photometry is not None:
        terms.append(photometry)
    return terms
