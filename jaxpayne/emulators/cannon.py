"""A Cannon-style polynomial spectrum model: flux at every pixel is a polynomial in the labels.

The Cannon (Ness et al. 2015, ApJ 808, 16; Casey et al. 2016, arXiv:1603.03040) models the normalised flux of pixel p as
``f_p(ℓ) = θ_p · v(ℓ)`` with ``v_j = Π_k x_k^{P_jk}`` the monomials of the scaled labels
``x = (ℓ − fiducial)/scale`` and an intrinsic scatter ``s_p²`` per pixel. Evaluating it is one
(n_pixels × n_terms) matrix product, so it is an emulator like any other for
:class:`~jaxpayne.forward.ForwardModel`: ``fit``, ``sample`` and the Cramér–Rao bounds work with it,
and ``s_p`` enters the likelihood as the emulator's own error.

:func:`train_cannon` is the Cannon's training step on spectra with reference labels;
:meth:`CannonEmulator.from_doppler` reads the wide-band (3000–18000 Å, air) cubic Cannon of the
Doppler package (D. Nidever; ``coolstars_cubic_cannon.npz``).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["CannonEmulator", "polynomial_powers", "train_cannon"]

#: Units of the label names a Cannon file may carry (lower-cased).
_UNITS = {"teff": "K", "logg": "dex", "feh": "dex", "m_h": "dex", "mh": "dex"}


class CannonEmulator:
    """Flux as a polynomial in the labels (traceable ``predict``; the emulator interface).

    Args:
        wavelength: (n_pix,) wavelengths [Å], sorted.
        coefficients: (n_pix, n_terms) polynomial coefficients θ.
        powers: (n_terms, n_labels) integer exponent of each label in each term.
        fiducial: (n_labels,) label offsets of the scaling.
        scale: (n_labels,) label scales.
        label_names: names of the labels.
        bounds: (lower, upper) label box (e.g. that of the training set).
        scatter: optional (n_pix,) intrinsic scatter s (flux units, not s²): the emulator error.
        medium: ``"vacuum"`` or ``"air"``.
        label_units: optional units of the labels.

    Raises:
        ValueError: for inconsistent shapes or unsorted wavelengths.
    """

    def __init__(self, wavelength, coefficients, powers, fiducial, scale, label_names: Sequence[str],
                 bounds, scatter=None, medium: str = "vacuum", label_units: Sequence[str] | None = None):
        self.wavelength = np.asarray(wavelength, np.float64).reshape(-1)
        self.coefficients = np.asarray(coefficients, np.float32)
        self.powers = np.asarray(powers, np.int32)
        self.fiducial = np.asarray(fiducial, np.float64).reshape(-1)
        self.scale = np.asarray(scale, np.float64).reshape(-1)
        self.label_names = tuple(str(n) for n in label_names)
        n_labels = len(self.label_names)
        if self.coefficients.shape != (self.wavelength.size, self.powers.shape[0]):
            raise ValueError(f"coefficients must be (n_pixels, n_terms) = ({self.wavelength.size}, "
                             f"{self.powers.shape[0]}), got {self.coefficients.shape}")
        if self.powers.shape[1:] != (n_labels,) or self.fiducial.shape != (n_labels,) or \
                self.scale.shape != (n_labels,):
            raise ValueError(f"powers, fiducial and scale must describe {n_labels} labels")
        if np.any(np.diff(self.wavelength) <= 0):
            raise ValueError("Cannon wavelengths must be strictly increasing")
        lower, upper = (np.asarray(b, np.float64).reshape(-1) for b in bounds)
        if lower.shape != (n_labels,) or upper.shape != (n_labels,) or np.any(lower >= upper):
            raise ValueError("bounds must be (lower, upper) with lower < upper for every label")
        self._bounds = (lower, upper)
        self.emulator_error = None if scatter is None else np.asarray(scatter, np.float64).reshape(-1)
        self.medium = str(medium).lower()
        self.label_units = tuple(label_units) if label_units is not None else tuple(
            _UNITS.get(n.lower(), "") for n in self.label_names)

    @classmethod
    def from_doppler(cls, path: str | os.PathLike, wavelength_range: tuple[float, float] | None = None
                     ) -> "CannonEmulator":
        """The Doppler package's Cannon model from its npz (air wavelengths; box = the training
        set's label range).

        Args:
            path: ``coolstars_cubic_cannon.npz`` (keys ``wavelength``, ``theta``, ``powers``,
                ``fiducial``, ``scale``, ``label_names``, ``s2`` and ``training_set_labels``).
            wavelength_range: optional (lo, hi) [Å] to keep (a 150,001-pixel model is mostly
                outside any one instrument's range).

        Raises:
            ValueError: naming the file, for a file that is not such a model.
        """
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in ("wavelength", "theta", "powers", "fiducial", "scale",
                                               "label_names", "s2", "training_set_labels")}
        except KeyError as error:
            raise ValueError(f"{path}: not a Doppler Cannon npz (missing {error})") from None
        except (OSError, ValueError) as error:
            raise ValueError(f"{path}: cannot read as npz ({error})") from None
        training = np.asarray(arrays["training_set_labels"], np.float64)
        names = [str(n).lower() for n in arrays["label_names"]]
        model = cls(arrays["wavelength"], arrays["theta"], arrays["powers"], arrays["fiducial"],
                    arrays["scale"], names, (training.min(axis=0), training.max(axis=0)),
                    scatter=np.sqrt(np.clip(arrays["s2"], 0.0, None)), medium="air")
        return model if wavelength_range is None else model.restrict(wavelength_range)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) label bounds."""
        return self._bounds[0].copy(), self._bounds[1].copy()

    def restrict(self, wavelength_range: tuple[float, float]) -> "CannonEmulator":
        """The same model on the pixels within ``wavelength_range`` [Å, the model's medium]."""
        lo, hi = (float(v) for v in wavelength_range)
        keep = (self.wavelength >= lo) & (self.wavelength <= hi)
        if keep.sum() < 2:
            raise ValueError(f"the Cannon model has no pixels in {lo:g}–{hi:g} Å "
                             f"(it covers {self.wavelength[0]:g}–{self.wavelength[-1]:g} Å)")
        return CannonEmulator(self.wavelength[keep], self.coefficients[keep], self.powers, self.fiducial,
                              self.scale, self.label_names, self._bounds,
                              None if self.emulator_error is None else self.emulator_error[keep],
                              self.medium, self.label_units)

    def design(self, labels):
        """(..., n_terms) monomials of the scaled labels (traceable, keeps a float dtype)."""
        labels = jnp.asarray(labels)
        dtype = labels.dtype if jnp.issubdtype(labels.dtype, jnp.floating) else jnp.float32
        x = (labels.astype(dtype) - jnp.asarray(self.fiducial, dtype)) / jnp.asarray(self.scale, dtype)
        return _monomials(x, self.powers, jnp)

    def predict(self, labels):
        """Flux (..., n_pix) for labels (..., n_labels) in physical units (traceable)."""
        terms = self.design(labels)
        return terms @ jnp.asarray(self.coefficients, terms.dtype).T

    def __repr__(self) -> str:
        return (f"CannonEmulator(labels={list(self.label_names)}, {self.wavelength.size} pixels "
                f"{self.wavelength[0]:.1f}–{self.wavelength[-1]:.1f} Å {self.medium}, "
                f"{self.powers.shape[0]} terms)")


#: Largest intrinsic scatter s [flux] the training step considers.
MAX_SCATTER = 1.0
#: Smallest intrinsic scatter s [flux]: "none" (the search's lower end).
MIN_SCATTER = 1e-6
#: Golden-section steps of the per-pixel search for s (bracket shrinks by 0.618 per step).
SCATTER_STEPS = 48


def polynomial_powers(n_labels: int, order: int = 2) -> np.ndarray:
    """(n_terms, n_labels) exponents of every monomial of total degree ≤ ``order``: the constant,
    the linear terms, then the higher ones (the Cannon's quadratic model for ``order=2``)."""
    import itertools

    if order < 1 or n_labels < 1:
        raise ValueError("need order >= 1 and at least one label")
    terms = [p for p in itertools.product(range(order + 1), repeat=n_labels) if sum(p) <= order]
    return np.array(sorted(terms, key=lambda p: (sum(p), [-v for v in p])), np.int32)


def train_cannon(labels, flux, ivar=None, *, label_names: Sequence[str], wavelength=None, order: int = 2,
                 l1: float = 0.0, iterations: int = 6, bounds=None, medium: str = "vacuum",
                 label_units: Sequence[str] | None = None) -> CannonEmulator:
    r"""The Cannon's training step: per-pixel polynomial coefficients and intrinsic scatter.

    For every pixel p the coefficients θ_p and the scatter s_p minimise (Casey et al. 2016, eq. 2)

    .. math:: \sum_n \Bigl[\frac{(f_{np} - \theta_p\cdot v(\ell_n))^2}{\sigma_{np}^2 + s_p^2}
              + \ln(\sigma_{np}^2 + s_p^2)\Bigr] + \Lambda \sum_{j \ge 1} |\theta_{pj}|

    by alternation: θ_p in closed form (weighted least squares at fixed s_p; with ``l1`` > 0 by
    iteratively reweighted least squares, the constant term unregularised) and s_p by a
    golden-section search in ln s at fixed θ_p. The labels are scaled to zero mean and unit
    standard deviation of the training set. Pixels with ``ivar == 0`` (or non-finite flux) do not
    enter; a pixel usable in fewer stars than there are terms gets NaN coefficients. All pixels
    are solved at once (numpy; cheap next to training a network).

    Args:
        labels: (n_stars, n_labels) reference labels (physical units; finite).
        flux: (n_stars, n_pixels) normalised flux.
        ivar: (n_stars, n_pixels) inverse variances (None: all pixels equally, scatter only).
        label_names: names of the labels.
        wavelength: (n_pixels,) increasing wavelengths [Å] (None: the pixel index, for sets
            without a grid).
        order: total degree of the polynomial (2: the Cannon's quadratic model; 3: cubic).
        l1: Λ of the L1 penalty on the non-constant coefficients (0: none).
        iterations: alternations of the θ and s steps.
        bounds: (lower, upper) label box of the model (default: the training labels' range).
        medium: ``"vacuum"`` or ``"air"`` (of ``wavelength``).
        label_units: optional label units.

    Returns:
        A :class:`CannonEmulator` whose ``emulator_error`` is s_p.

    Raises:
        ValueError: for inconsistent shapes, non-finite labels, or fewer stars than terms.

    Example:
        >>> cannon = train_cannon(labels, flux, ivar, label_names=["teff", "logg", "feh"])
        >>> fitter = Fitter(cannon, rv=False, continuum="none")
    """
    labels = np.asarray(labels, np.float64)
    flux = np.asarray(flux, np.float64)
    if labels.ndim != 2 or flux.ndim != 2 or labels.shape[0] != flux.shape[0]:
        raise ValueError(f"labels (n_stars, n_labels) and flux (n_stars, n_pixels) must match; got "
                         f"{labels.shape} and {flux.shape}")
    if not np.all(np.isfinite(labels)):
        raise ValueError("training labels must be finite (missing labels are not supported by the Cannon step)")
    n_stars, n_pix = flux.shape
    powers = polynomial_powers(labels.shape[1], order)
    if n_stars <= powers.shape[0]:
        raise ValueError(f"{n_stars} training spectra for {powers.shape[0]} polynomial terms: need more spectra")
    ivar = np.ones_like(flux) if ivar is None else np.asarray(ivar, np.float64)
    if ivar.shape != flux.shape:
        raise ValueError(f"ivar shape {ivar.shape} != flux shape {flux.shape}")
    usable = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0)
    flux = np.where(usable, flux, 0.0)
    var = np.where(usable, 1.0 / np.where(usable, ivar, 1.0), np.inf)  # σ²; ∞ = no weight
    fiducial = labels.mean(axis=0)
    scale = labels.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    wavelength = np.arange(n_pix, dtype=np.float64) if wavelength is None else np.asarray(wavelength, np.float64)
    if bounds is None:
        bounds = (labels.min(axis=0), labels.max(axis=0))
    proto = CannonEmulator(wavelength, np.zeros((n_pix, powers.shape[0])), powers, fiducial, scale, label_names,
                           bounds, medium=medium, label_units=label_units)
    design = _monomials((labels - proto.fiducial) / proto.scale, powers, np)  # float64, as design()
    n_terms = design.shape[1]
    enough = usable.sum(axis=0) > n_terms
    theta = np.zeros((n_pix, n_terms))
    s2 = np.full(n_pix, MIN_SCATTER**2)
    ridge = np.zeros((n_pix, n_terms))
    for _ in range(max(1, int(iterations))):
        weights = 1.0 / (var + s2[None, :])  # (N, P); 0 where unusable
        normal = np.einsum("np,nt,nu->ptu", weights, design, design) + ridge[:, :, None] * np.eye(n_terms)
        rhs = np.einsum("np,nt,np->pt", weights, design, flux)
        theta[enough] = np.linalg.solve(normal[enough], rhs[enough][..., None])[..., 0]
        if l1 > 0:  # IRLS: Λ|θ| ≈ Λθ²/|θ_old|, the constant term free
            ridge[:, 1:] = float(l1) / (2.0 * np.maximum(np.abs(theta[:, 1:]), 1e-8))
        residual2 = np.where(usable, (flux - design @ theta.T) ** 2, 0.0)
        s2 = _scatter_search(residual2, var, usable)
    theta[~enough] = np.nan
    s2[~enough] = np.nan
    return CannonEmulator(wavelength, theta, powers, fiducial, scale, label_names, bounds,
                          scatter=np.sqrt(s2), medium=medium, label_units=label_units)


def _monomials(x, powers: np.ndarray, xp):
    """(..., n_terms) monomials Π_k x_k^{P_jk} of scaled labels ``x`` (..., n_labels), with the
    array module ``xp`` (jax.numpy, traceable; or numpy, float64 on the host): integer powers as
    exact products, no log/exp."""
    terms = xp.ones(x.shape[:-1] + (powers.shape[0],), x.dtype)
    for k in range(powers.shape[1]):
        for p in range(1, int(powers[:, k].max()) + 1):
            terms = terms * xp.where(xp.asarray(powers[:, k] >= p), x[..., k:k + 1], 1.0)
    return terms


def _scatter_search(residual2: np.ndarray, var: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """(P,) s² minimising Σ_n [r²/(σ²+s²) + ln(σ²+s²)] over each pixel's usable stars: a
    golden-section search in ln s on [MIN_SCATTER, MAX_SCATTER], all pixels at once."""
    finite_var = np.where(usable, var, 0.0)

    def cost(log_s):
        total = finite_var + np.exp(2.0 * log_s)[None, :]
        return np.sum(np.where(usable, residual2 / total + np.log(total), 0.0), axis=0)

    golden = 0.5 * (np.sqrt(5.0) - 1.0)
    lo = np.full(residual2.shape[1], np.log(MIN_SCATTER))
    hi = np.full(residual2.shape[1], np.log(MAX_SCATTER))
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = cost(a), cost(b)
    for _ in range(SCATTER_STEPS):
        left = fa < fb  # the minimum lies in [lo, b]
        hi, lo = np.where(left, b, hi), np.where(left, lo, a)
        a_new = np.where(left, hi - golden * (hi - lo), b)
        b_new = np.where(left, a, lo + golden * (hi - lo))
        a, b = a_new, b_new
        fa, fb = cost(a), cost(b)  # two evaluations per step: simple, and cheap here
    best = np.where(fa < fb, a, b)
    # the end of the bracket: the cost at s = MIN_SCATTER beats the interior (no scatter needed)
    best = np.where(cost(np.full_like(best, np.log(MIN_SCATTER))) <= np.minimum(fa, fb), np.log(MIN_SCATTER), best)
    return np.exp(2.0 * best)
