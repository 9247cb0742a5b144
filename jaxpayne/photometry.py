"""Bolometric corrections, interpolated differentiably in JAX, and the parallax + photometry
likelihood term.

**Tables.** The MIST v1.2 "UBVRIplus" bolometric corrections (Choi et al. 2016, ApJ 823, 102;
Dotter 2016, ApJS 222, 8), computed from synthetic spectra for Teff 2500 K – 10⁶ K, log g −4 … 9.5,
[Fe/H] −4 … +0.75 and A_V 0 … 6 (R_V = 3.1, Cardelli et al. 1989), Vega magnitudes. They install
from PyPI inside the ``astroLACHESIS`` distribution (``pip install 'jaxpayne[photometry]'``; the
file ``lachesis/Datafiles/BC_tables/bc_tables.h5``, MIT-licensed package; the tables themselves
are MIST's, to be cited as above), with no download at run time. The file is found through the
package's install location without importing it (``lachesis`` itself needs heavy extras).

**Magnitudes.** For labels Teff, log g, [Fe/H], a mass M and a distance d, with
log g☉ = 4.4378 and M_bol,☉ = 4.74 (the tables' zero point):

.. math:: \\frac{R}{R_\\odot} = \\sqrt{\\frac{M/M_\\odot}{g/g_\\odot}},\\quad
          M_\\mathrm{bol} = 4.74 - 5\\log_{10}\\frac{R}{R_\\odot} - 10\\log_{10}\\frac{T_\\mathrm{eff}}{5772\\,\\mathrm{K}},\\quad
          m_b = M_\\mathrm{bol} - BC_b(T_\\mathrm{eff}, \\log g, [\\mathrm{Fe/H}], A_V) + 5\\log_{10}\\frac{d}{10\\,\\mathrm{pc}}

(the extinction is inside the tables' BC). The parallax is 1000/d [mas] plus an optional zero
point.

**Interpolation.** Multilinear in (Teff, log g, [Fe/H], A_V) over the table's own nodes (so it
returns the table's values at the nodes), clamped at the edges; the cut of the table kept in
memory is Teff ≤ 15,000 K and −1 ≤ log g ≤ 6 by default.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from jaxpayne.sampling.terms import LOGG_SUN, TEFF_SUN, GaussianTerm, Latent

__all__ = ["BANDS", "BolometricCorrections", "CATALOGUE_COLUMNS", "MBOL_SUN", "Photometry", "bc_table_path",
           "load_bolometric_corrections", "photometry_for_columns"]

#: Bolometric magnitude of the Sun in the MIST tables' convention.
MBOL_SUN = 4.74
#: Short band name → the MIST table's column (Gaia (E)DR3 passbands of Riello et al. 2021; 2MASS).
BANDS = {"G": "Gaia_G_EDR3", "BP": "Gaia_BP_EDR3", "RP": "Gaia_RP_EDR3", "J": "2MASS_J", "H": "2MASS_H",
         "Ks": "2MASS_Ks", "V": "Bessell_V"}
#: Constraints-table column of each band's magnitude (Gaia archive and 2MASS PSC names); the
#: uncertainty is the same name with ``_err``.
CATALOGUE_COLUMNS = {"G": "phot_g_mean_mag", "BP": "phot_bp_mean_mag", "RP": "phot_rp_mean_mag", "J": "j_m",
                     "H": "h_m", "Ks": "ks_m", "V": "v_mag"}
_TABLE = ("lachesis", "Datafiles/BC_tables/bc_tables.h5")


def bc_table_path() -> Path:
    """The MIST bolometric-correction file of the installed ``astroLACHESIS`` distribution.

    Raises:
        FileNotFoundError: one line saying how to install it.
    """
    spec = importlib.util.find_spec(_TABLE[0])
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / _TABLE[1]
        if path.is_file():
            return path
    raise FileNotFoundError("the MIST bolometric-correction tables are not installed: "
                            "pip install 'jaxpayne[photometry]' (the astroLACHESIS package holds them)")


class BolometricCorrections(NamedTuple):
    """A regular grid of bolometric corrections and its multilinear interpolation.

    Attributes:
        bands: the band names (keys of :data:`BANDS`), in the order of ``values``.
        teff, logg, feh, av: the grid's nodes [K, dex, dex, mag], increasing.
        values: (n_bands, n_teff, n_logg, n_feh, n_av) BC [mag].
        source: where the table came from.
    """

    bands: tuple[str, ...]
    teff: np.ndarray
    logg: np.ndarray
    feh: np.ndarray
    av: np.ndarray
    values: np.ndarray
    source: str

    def __call__(self, teff, logg, feh, av):
        """(n_bands,) BC at one point (scalars; traceable, differentiable; clamped at the edges)."""
        import jax.numpy as jnp

        values = jnp.asarray(self.values)
        corner = values
        weights = []
        for nodes, x in ((self.teff, teff), (self.logg, logg), (self.feh, feh), (self.av, av)):
            nodes_j = jnp.asarray(nodes, values.dtype)
            x = jnp.clip(jnp.asarray(x, values.dtype), nodes_j[0], nodes_j[-1])
            i = jnp.clip(jnp.searchsorted(nodes_j, x, side="right") - 1, 0, nodes_j.size - 2)
            w = (x - nodes_j[i]) / (nodes_j[i + 1] - nodes_j[i])
            weights.append((i, w))
        # contract one axis at a time: linear interpolation along teff, then logg, feh, av
        for i, w in weights:
            lower = jnp.take(corner, i, axis=1)
            upper = jnp.take(corner, i + 1, axis=1)
            corner = lower + w * (upper - lower)
        return corner

    def absolute_magnitudes(self, teff, logg, feh, av, radius):
        """(n_bands,) absolute magnitudes of a star of radius ``radius`` [R☉] (traceable)."""
        import jax.numpy as jnp

        mbol = MBOL_SUN - 5.0 * jnp.log10(radius) - 10.0 * jnp.log10(teff / TEFF_SUN)
        return mbol - self(teff, logg, feh, av)


@functools.lru_cache(maxsize=4)
def load_bolometric_corrections(bands: Sequence[str] = ("G", "BP", "RP", "J", "H", "Ks"), path=None,
                                teff_range=(2500.0, 15000.0), logg_range=(-1.0, 6.0)) -> BolometricCorrections:
    """Read the MIST UBVRIplus bolometric corrections into a regular grid.

    Args:
        bands: band names (keys of :data:`BANDS`).
        path: the HDF5 file (default :func:`bc_table_path`).
        teff_range, logg_range: the part of the grid kept [K, dex] (nodes within them).

    Raises:
        ValueError: for an unknown band, or a file that is not such a table (naming it).
    """
    import h5py

    bands = tuple(bands)
    unknown = [b for b in bands if b not in BANDS]
    if unknown:
        raise ValueError(f"unknown band(s) {unknown}; known: {list(BANDS)}")
    path = Path(path) if path is not None else bc_table_path()
    try:
        with h5py.File(path, "r") as f:
            group = f["UBVRIplus"]
            names = [b.decode() if isinstance(b, bytes) else str(b) for b in group["band_names"][:]]
            feh = np.asarray(group["feh_values"][:], np.float64)
            data = np.asarray(group["data"][:], np.float64)  # (n_feh, rows, 5 + n_bands)
    except (OSError, KeyError) as err:
        raise ValueError(f"{path}: not a MIST bolometric-correction table ({err})") from None
    columns = [5 + names.index(BANDS[b]) for b in bands]
    teff_all, logg_all, av_all = (np.unique(data[0][:, c]) for c in (0, 1, 3))
    teff = teff_all[(teff_all >= teff_range[0]) & (teff_all <= teff_range[1])]
    logg = logg_all[(logg_all >= logg_range[0]) & (logg_all <= logg_range[1])]
    values = np.full((len(bands), teff.size, logg.size, feh.size, av_all.size), np.nan)
    for k in range(feh.size):
        rows = data[k]
        keep = np.isin(rows[:, 0], teff) & np.isin(rows[:, 1], logg)
        rows = rows[keep]
        it, ig, ia = (np.searchsorted(nodes, rows[:, c]) for nodes, c in ((teff, 0), (logg, 1), (av_all, 3)))
        values[:, it, ig, k, ia] = rows[:, columns].T
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: the bolometric-correction grid has holes in the range kept")
    return BolometricCorrections(bands, teff, logg, feh, av_all, values.astype(np.float32), str(path))


class _SpaceDensity:
    """ln p(d) = 2 ln d − d/L: an exponentially decreasing space density (Bailer-Jones 2015),
    the default prior of the distance (duck-types a NumPyro distribution's ``log_prob``)."""

    def __init__(self, length_scale: float):
        self.length_scale = float(length_scale)

    def log_prob(self, d):
        import jax.numpy as jnp

        return 2.0 * jnp.log(d) - d / self.length_scale

    def __repr__(self):
        return f"SpaceDensity(L={self.length_scale:g} pc)"


class Photometry(GaussianTerm):
    """Parallax and apparent magnitudes from the labels, a mass, a distance and an extinction.

    Observables (constraints columns, each with ``_err``): ``parallax`` [mas] and the
    magnitudes of :data:`CATALOGUE_COLUMNS` (``phot_g_mean_mag``, ``j_m`` …). Latent
    parameters: ``mass`` [M☉] (shared with :class:`~jaxpayne.sampling.terms.Seismic`; the radius
    is √(M g☉/g), so without seismology or a mass prior log g and M are degenerate in the
    photometry), ``distance`` [pc] and ``av`` [mag].

    Args:
        bands: the bands used (keys of :data:`BANDS`).
        parallax: use the parallax.
        table: a :class:`BolometricCorrections` (default: the MIST tables for ``bands``).
        teff, logg, feh: the label names.
        mass_bounds, distance_bounds, av_bounds: the latent parameters' bounds.
        mass_prior, av_prior: NumPyro distributions (None: uniform).
        distance_length: length scale L [pc] of the distance prior p(d) ∝ d² e^{−d/L}
            (default 1350 pc, Bailer-Jones et al. 2018), or None for uniform.
        parallax_zero_point: added to 1000/d to predict the measured parallax [mas] (Gaia DR3's
            is about −0.017 mas; Lindegren et al. 2021).
        magnitude_floor: added in quadrature to every magnitude error [mag] (calibration and
            bolometric-correction systematics).
    """

    def __init__(self, bands: Sequence[str] = ("G", "BP", "RP", "J", "H", "Ks"), *, parallax: bool = True,
                 table: BolometricCorrections | None = None, teff: str = "teff", logg: str = "logg",
                 feh: str = "feh", mass_bounds=(0.3, 6.0), distance_bounds=(1.0, 50_000.0), av_bounds=(0.0, 6.0),
                 mass_prior=None, av_prior=None, distance_length: float | None = 1350.0,
                 parallax_zero_point: float = 0.0, magnitude_floor: float = 0.01):
        self.name = "photometry"
        self.bands = tuple(bands)
        if not self.bands:
            raise ValueError("a photometric term needs at least one band (the parallax alone says nothing of log g)")
        self.table = table if table is not None else load_bolometric_corrections(self.bands)
        missing = [b for b in self.bands if b not in self.table.bands]
        if missing:
            raise ValueError(f"band(s) {missing} are not in the bolometric-correction table ({list(self.table.bands)})")
        self._columns = [self.table.bands.index(b) for b in self.bands]
        self.use_parallax = bool(parallax)
        self.teff, self.logg, self.feh = teff, logg, feh
        self.parallax_zero_point = float(parallax_zero_point)
        self.magnitude_floor = float(magnitude_floor)
        self.magnitudes = tuple(CATALOGUE_COLUMNS[b] for b in self.bands)
        self.observables = (("parallax",) if parallax else ()) + self.magnitudes
        lo, hi = (float(b) for b in distance_bounds)
        self.distance_length = distance_length
        self.latent = (
            Latent("mass", "Msun", float(mass_bounds[0]), float(mass_bounds[1]), 1.0, mass_prior, 0.3),
            Latent("distance", "pc", lo, hi, min(max(1000.0, lo), hi),
                   None if distance_length is None else _SpaceDensity(distance_length), 100.0),
            Latent("av", "mag", float(av_bounds[0]), float(av_bounds[1]), 0.1, av_prior, 0.1),
        )

    def predict(self, values):
        import jax.numpy as jnp

        g = 10.0 ** (values[self.logg] - LOGG_SUN)
        radius = jnp.sqrt(values["mass"] / g)
        absolute = self.table.absolute_magnitudes(values[self.teff], values[self.logg], values[self.feh],
                                                  values["av"], radius)
        modulus = 5.0 * jnp.log10(values["distance"] / 10.0)
        out = {name: absolute[k] + modulus for name, k in zip(self.magnitudes, self._columns)}
        if self.use_parallax:
            out["parallax"] = 1000.0 / values["distance"] + self.parallax_zero_point
        return out

    def residuals(self, values, data):
        """Whitened residuals, the magnitudes' errors with the floor added in quadrature."""
        import jax.numpy as jnp

        floored = dict(data)
        for name in self.magnitudes:
            floored[f"{name}_err"] = jnp.sqrt(jnp.asarray(data[f"{name}_err"]) ** 2 + self.magnitude_floor**2)
        return super().residuals(values, floored)

    def start(self, values, data):
        """Distance from the parallax where it is measured to better than 30 %, else from the
        first magnitude at A_V = 0 and a solar mass; A_V 0.1; mass 1."""
        starts = super().start(values, data)
        teff = np.asarray(values[self.teff], np.float64)
        batch = teff.shape[0]
        plx = np.asarray(data.get("parallax", np.full(batch, np.nan)), np.float64)
        plx_err = np.asarray(data.get("parallax_err", np.full(batch, np.nan)), np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            good = np.isfinite(plx) & np.isfinite(plx_err) & (plx > 3.0 * plx_err) & (plx > 0)
            distance = np.where(good, 1000.0 / (plx - self.parallax_zero_point), np.nan)
        logg = np.asarray(values[self.logg], np.float64)
        feh = np.asarray(values.get(self.feh, np.zeros(batch)), np.float64)
        radius = np.sqrt(1.0 / 10.0 ** (logg - LOGG_SUN))
        for name, k in zip(self.magnitudes, self._columns):
            m = np.asarray(data.get(name, np.full(batch, np.nan)), np.float64)
            if not np.any(np.isfinite(m) & ~np.isfinite(distance)):
                continue
            absolute = np.array([float(self.table.absolute_magnitudes(t, lg, fe, 0.0, r)[k])
                                 for t, lg, fe, r in zip(teff, logg, feh, radius)])
            with np.errstate(invalid="ignore"):
                distance = np.where(np.isfinite(distance), distance, 10.0 ** ((m - absolute) / 5.0 + 1.0))
        lo, hi = self.latent[1].lower, self.latent[1].upper
        distance = np.where(np.isfinite(distance), distance, self.latent[1].initial)
        starts["distance"] = np.clip(distance, lo * 1.01, hi * 0.99)
        return starts

    def describe(self) -> dict:
        return {**super().describe(), "bands": list(self.bands), "table": os.path.basename(self.table.source),
                "parallax_zero_point": self.parallax_zero_point, "magnitude_floor": self.magnitude_floor,
                "distance_length": self.distance_length}


def photometry_for_columns(columns) -> Photometry | None:
    """A :class:`Photometry` term for the magnitude columns present (and ``parallax``), or None
    when there is no magnitude column.

    Raises:
        ValueError: for a column without its ``_err``.
        FileNotFoundError: the tables are not installed.
    """
    columns = set(columns)
    bands = [b for b, c in CATALOGUE_COLUMNS.items() if c in columns]
    if not bands:
        return None
    needed = [c for c in [CATALOGUE_COLUMNS[b] for b in bands] + (["parallax"] if "parallax" in columns else [])
              if f"{c}_err" not in columns]
    if needed:
        raise ValueError(f"constraints column(s) {needed} need their uncertainties ({', '.join(c + '_err' for c in needed)})")
    return Photometry(bands, parallax="parallax" in columns)

