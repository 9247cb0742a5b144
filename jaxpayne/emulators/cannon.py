"""The Cannon: flux at every pixel a polynomial in the labels, as a model like any other.

The Cannon (Ness et al. 2015, ApJ 808, 16; Casey et al. 2016, arXiv:1603.03040) models the
normalised flux of pixel p as ``f_p(ℓ) = θ_p · v(ℓ)`` with ``v_j = Π_k x_k^{P_jk}`` the monomials
of the scaled labels ``x = (ℓ − fiducial)/scale`` and an intrinsic scatter ``s_p²`` per pixel.
Evaluating it is one (n_pixels × n_terms) matrix product.

Here it is an emulator kind, ``"cannon"`` (:class:`CannonPolynomial`), of the ordinary
:class:`~jaxpayne.Model`: the coefficients are its weights, ``s_p`` is its stored per-pixel error
(``validation["rms"]``, which the likelihood adds in quadrature to the noise), and it is saved to
and loaded from the same model file. So ``fit``, ``sample`` and ``crlb`` work with it unchanged.

- :func:`train_cannon`: the Cannon's training step on spectra with reference labels;
- :func:`cannon_model`: a Model from coefficients, powers and the label scaling;
- :func:`load_doppler_cannon`: the wide-band (3000–18000 Å, air) cubic Cannon of the Doppler
  package (D. Nidever; ``coolstars_cubic_cannon.npz``), also read by :func:`jaxpayne.load_model`
  (format ``"cannon"``).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxpayne.labels import LabelSpec
from jaxpayne.model import Model, ModelFileError, register_format

__all__ = ["CannonPolynomial", "cannon_model", "cannon_scaling", "load_doppler_cannon", "polynomial_powers",
           "train_cannon"]

#: Validation ``rms_kind`` of a Cannon: its per-pixel error is the fitted intrinsic scatter s_p.
SCATTER_KIND = "intrinsic_scatter"
#: Arrays of a Doppler-package Cannon ``.npz``.
_DOPPLER_KEYS = ("wavelength", "theta", "powers", "fiducial", "scale", "label_names", "s2", "training_set_labels")


class CannonPolynomial(nn.Module):
    """The Cannon's per-pixel polynomial as a Flax emulator (kind ``"cannon"``).

    Input: The Payne's scaled labels ``s`` (see :class:`~jaxpayne.LabelSpec`); the Cannon's own
    scaled labels are ``x = offset + slope · s`` (so ``x = (ℓ − fiducial)/scale`` in physical
    units, see :func:`cannon_scaling`), and the flux is ``v(x) @ coefficientsᵀ``.

    Attributes:
        n_pixels: number of pixels.
        powers: (n_terms, n_labels) integer exponents of the monomials (row 0: the constant).
        offset: (n_labels,) x at s = 0.
        slope: (n_labels,) dx/ds.
    """

    n_pixels: int
    powers: Sequence[Sequence[int]]
    offset: Sequence[float]
    slope: Sequence[float]

    @nn.compact
    def __call__(self, scaled_labels):
        powers = np.asarray(self.powers, np.int32)
        theta = self.param("coefficients", nn.initializers.zeros, (self.n_pixels, powers.shape[0]), jnp.float32)
        s = jnp.asarray(scaled_labels)
        dtype = jnp.result_type(s.dtype, jnp.float32)
        x = jnp.asarray(self.offset, dtype) + jnp.asarray(self.slope, dtype) * s.astype(dtype)
        return _monomials(x, powers, jnp) @ theta.astype(dtype).T


def cannon_scaling(spec: LabelSpec, fiducial, scale) -> tuple[list[float], list[float]]:
    """(offset, slope) of :class:`CannonPolynomial` for the Cannon scaling ``x = (ℓ − fiducial)/scale``
    of labels whose box is ``spec`` (The Payne's ``s = (ℓ − lo)/(hi − lo) − 0.5``)."""
    lo, hi = spec.lower, spec.upper
    fiducial = np.asarray(fiducial, np.float64).reshape(-1)
    scale = np.asarray(scale, np.float64).reshape(-1)
    slope = (hi - lo) / scale
    offset = (0.5 * (lo + hi) - fiducial) / scale
    return offset.tolist(), slope.tolist()


def cannon_model(wavelength, coefficients, powers, fiducial, scale, label_names: Sequence[str], bounds, *,
                 scatter=None, medium: str = "vacuum", label_units: Sequence[str] | None = None,
                 provenance: dict | None = None, summary: dict | None = None) -> Model:
    """A :class:`~jaxpayne.Model` of kind ``"cannon"``.

    Args:
        wavelength: (n_pix,) wavelengths [Å], strictly increasing.
        coefficients: (n_pix, n_terms) polynomial coefficients θ (NaN rows: pixels the training
            could not constrain; they predict NaN).
        powers: (n_terms, n_labels) integer exponent of each label in each term.
        fiducial: (n_labels,) label offsets of the Cannon scaling [label units].
        scale: (n_labels,) label scales [label units].
        label_names: names of the labels.
        bounds: (lower, upper) label box (e.g. that of the training set).
        scatter: optional (n_pix,) intrinsic scatter s [flux units, not s²]: the emulator error.
        medium: ``"vacuum"`` or ``"air"``.
        label_units: optional units of the labels.
        provenance: optional provenance stored with the model.
        summary: optional extra validation summary entries.

    Raises:
        ValueError: for inconsistent shapes, unsorted wavelengths or an empty box.
    """
    wavelength = np.asarray(wavelength, np.float64).reshape(-1)
    coefficients = np.asarray(coefficients, np.float32)
    powers = np.asarray(powers, np.int32)
    names = tuple(str(n) for n in label_names)
    if powers.ndim != 2 or powers.shape[1] != len(names):
        raise ValueError(f"powers must be (n_terms, {len(names)}) for labels {list(names)}, got {powers.shape}")
    if coefficients.shape != (wavelength.size, powers.shape[0]):
        raise ValueError(f"coefficients must be (n_pixels, n_terms) = ({wavelength.size}, {powers.shape[0]}), "
                         f"got {coefficients.shape}")
    scale = np.asarray(scale, np.float64).reshape(-1)
    if np.asarray(fiducial).size != len(names) or scale.size != len(names) or np.any(scale <= 0):
        raise ValueError(f"fiducial and scale must describe {len(names)} labels, scale > 0")
    lower, upper = (np.asarray(b, np.float64).reshape(-1) for b in bounds)
    spec = LabelSpec(names, lower, upper, tuple(label_units or ()))
    offset, slope = cannon_scaling(spec, fiducial, scale)
    config = {"n_pixels": int(wavelength.size), "powers": powers.tolist(), "offset": offset, "slope": slope}
    validation = {}
    if scatter is not None:
        scatter = np.asarray(scatter, np.float64).reshape(-1)
        if scatter.shape != wavelength.shape:
            raise ValueError(f"scatter must be (n_pixels,) = ({wavelength.size},), got {scatter.shape}")
        finite = scatter[np.isfinite(scatter)]
        validation = {"rms": scatter.astype(np.float32), "summary": {
            "rms_kind": SCATTER_KIND, "rms": float(np.sqrt(np.mean(finite**2))) if finite.size else float("nan"),
            "median_scatter": float(np.median(finite)) if finite.size else float("nan"),
            "n_unconstrained_pixels": int(np.sum(~np.all(np.isfinite(coefficients), axis=1))), **(summary or {})}}
    return Model("cannon", config, {"params": {"coefficients": coefficients}}, spec, wavelength, medium=medium,
                 validation=validation, provenance=provenance)


def load_doppler_cannon(path: str | os.PathLike, wavelength_range: tuple[float, float] | None = None, *,
                        label_names=None, wavelength=None, **_) -> Model:
    """The Doppler package's Cannon model from its npz (air wavelengths; box = the training set's
    label range; labels lower-cased, ``teff``, ``logg``, ``feh``).

    Args:
        path: ``coolstars_cubic_cannon.npz`` (keys ``wavelength``, ``theta``, ``powers``,
            ``fiducial``, ``scale``, ``label_names``, ``s2`` and ``training_set_labels``).
        wavelength_range: optional (lo, hi) [Å, air] to keep (a 150,001-pixel model is mostly
            outside any one instrument's range).
        label_names, wavelength: not accepted (the file carries both); for the
            :func:`~jaxpayne.load_model` interface.

    Raises:
        ModelFileError: naming the file, for a file that is not such a model, or a range
            outside it.
    """
    if label_names is not None or wavelength is not None:
        raise ValueError("a Doppler Cannon file carries its labels and wavelengths; do not pass them")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in _DOPPLER_KEYS}
    except KeyError as error:
        raise ModelFileError(f"{path}: not a Doppler Cannon npz (missing {error})") from None
    except (OSError, ValueError) as error:
        raise ModelFileError(f"{path}: cannot read as npz ({error})") from None
    wave = np.asarray(arrays["wavelength"], np.float64)
    keep = np.ones(wave.size, bool)
    if wavelength_range is not None:
        lo, hi = (float(v) for v in wavelength_range)
        keep = (wave >= lo) & (wave <= hi)
        if keep.sum() < 2:
            raise ModelFileError(f"{path}: the Cannon model has no pixels in {lo:g}–{hi:g} Å "
                                 f"(it covers {wave[0]:g}–{wave[-1]:g} Å)")
    training = np.asarray(arrays["training_set_labels"], np.float64)
    names = [str(n).lower() for n in arrays["label_names"]]
    return cannon_model(wave[keep], arrays["theta"][keep], arrays["powers"], arrays["fiducial"], arrays["scale"],
                        names, (training.min(axis=0), training.max(axis=0)),
                        scatter=np.sqrt(np.clip(arrays["s2"][keep], 0.0, None)), medium="air",
                        provenance={"source": str(Path(path).name), "origin": "Doppler package (D. Nidever), "
                                    "cubic Cannon trained on a synthetic grid"})


def _is_doppler_cannon(path: Path, head: bytes) -> bool:
    if not head.startswith(b"PK"):
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            return {"theta", "powers", "fiducial", "scale", "s2"} <= set(data.files)
    except Exception:  # not readable as npz: another format's detector decides
        return False


register_format("cannon", _is_doppler_cannon, load_doppler_cannon, description="a Doppler Cannon .npz")


#: Largest intrinsic scatter s [flux] the training step considers.
MAX_SCATTER = 1.0
#: Smallest intrinsic scatter s [flux]: "none" (the search's lower end).
MIN_SCATTER = 1e-6
#: Golden-section steps of the per-pixel search for s (bracket shrinks by 0.618 per step; 36
#: steps leave 2e-7 of the 13.8-wide ln-s bracket).
SCATTER_STEPS = 36
#: Pixels trained at once (the per-pixel steps are independent; blocks bound the memory).
PIXEL_BLOCK = 256


def polynomial_powers(n_labels: int, order: int = 2) -> np.ndarray:
    """(n_terms, n_labels) exponents of every monomial of total degree ≤ ``order``: the constant,
    the linear terms, then the higher ones (the Cannon's quadratic model for ``order=2``)."""
    import itertools

    if order < 1 or n_labels < 1:
        raise ValueError("need order >= 1 and at least one label")
    terms = [p for p in itertools.product(range(order + 1), repeat=n_labels) if sum(p) <= order]
    return np.array(sorted(terms, key=lambda p: (sum(p), [-v for v in p])), np.int32)


#: Samples per star of the expected design when the training labels are uncertain
#: (``label_covariance``): antithetic pairs, so the mean of every linear term is exact.
LABEL_SAMPLES = 64


def train_cannon(labels, flux, ivar=None, *, label_names: Sequence[str], wavelength=None, order: int = 2,
                 l1: float = 0.0, iterations: int = 6, bounds=None, medium: str = "vacuum",
                 label_units: Sequence[str] | None = None, label_covariance=None, seed: int = 0) -> Model:
    r"""The Cannon's training step: per-pixel polynomial coefficients and intrinsic scatter.

    For every pixel p the coefficients θ_p and the scatter s_p minimise (Casey et al. 2016, eq. 2)

    .. math:: \sum_n \Bigl[\frac{(f_{np} - \theta_p\cdot v(\ell_n))^2}{\sigma_{np}^2 + s_p^2}
              + \ln(\sigma_{np}^2 + s_p^2)\Bigr] + \Lambda \sum_{j \ge 1} |\theta_{pj}|

    by alternation: θ_p in closed form (weighted least squares at fixed s_p; with ``l1`` > 0 by
    iteratively reweighted least squares, the constant term unregularised) and s_p by a
    golden-section search in ln s at fixed θ_p. The labels are scaled to zero mean and unit
    standard deviation of the training set. Pixels with ``ivar == 0`` (or non-finite flux) do not
    enter; a pixel usable in fewer stars than there are terms predicts a flat 1 with the largest
    scatter (``MAX_SCATTER``: no weight in a fit), counted in the validation summary's
    ``n_unconstrained_pixels``. Pixels are solved in blocks (numpy, one matrix product per
    normal matrix). ``ivar=None``: noiseless spectra (the scatter is then the whole residual).

    With ``label_covariance`` the labels are uncertain, ℓ_n ~ N(labels_n, C_n), and the objective
    is its expectation over them (the M-step of an EM algorithm): the design v(ℓ_n) and its outer
    product are replaced by their expectations, and the residual² by
    (f − θ·E v)² + θᵀ Cov(v) θ; the expectations are averages over :data:`LABEL_SAMPLES`
    samples (seeded) per star. A star whose label is poorly known then constrains the terms of
    that label less.

    Args:
        labels: (n_stars, n_labels) reference labels (physical units; finite).
        flux: (n_stars, n_pixels) normalised flux.
        ivar: (n_stars, n_pixels) inverse variances (None: noiseless spectra, scatter only).
        label_names: names of the labels.
        wavelength: (n_pixels,) increasing wavelengths [Å] (None: the pixel index, for sets
            without a grid).
        order: total degree of the polynomial (2: the Cannon's quadratic model; 3: cubic).
        l1: Λ of the L1 penalty on the non-constant coefficients (0: none).
        iterations: alternations of the θ and s steps.
        bounds: (lower, upper) label box of the model (default: the training labels' range).
        medium: ``"vacuum"`` or ``"air"`` (of ``wavelength``).
        label_units: optional label units.
        label_covariance: optional (n_stars, n_labels, n_labels) covariance of each star's
            labels (e.g. from :func:`jaxpayne.datadriven.latent_labels`).
        seed: seed of the label samples.

    Returns:
        A :class:`~jaxpayne.Model` of kind ``"cannon"`` whose ``emulator_error`` is s_p.

    Raises:
        ValueError: for inconsistent shapes, non-finite labels, or fewer stars than terms.

    Example:
        >>> cannon = train_cannon(labels, flux, ivar, label_names=["teff", "logg", "feh"])
        >>> fitter = Fitter(cannon, rv=False, continuum="none")
        >>> cannon.save("cannon.h5")
    """
    labels = np.asarray(labels, np.float64)
    flux = np.asarray(flux)
    if labels.ndim != 2 or flux.ndim != 2 or labels.shape[0] != flux.shape[0]:
        raise ValueError(f"labels (n_stars, n_labels) and flux (n_stars, n_pixels) must match; got "
                         f"{labels.shape} and {flux.shape}")
    if not np.all(np.isfinite(labels)):
        raise ValueError("training labels must be finite (for missing labels see "
                         "jaxpayne.datadriven.train_with_latent_labels)")
    n_stars, n_pix = flux.shape
    n_labels = labels.shape[1]
    powers = polynomial_powers(n_labels, order)
    if n_stars <= powers.shape[0]:
        raise ValueError(f"{n_stars} training spectra for {powers.shape[0]} polynomial terms: need more spectra")
    ivar = np.full(flux.shape, np.inf, np.float32) if ivar is None else np.asarray(ivar)  # None: noiseless
    if ivar.shape != flux.shape:
        raise ValueError(f"ivar shape {ivar.shape} != flux shape {flux.shape}")
    fiducial = labels.mean(axis=0)
    scale = labels.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    wavelength = np.arange(n_pix, dtype=np.float64) if wavelength is None else np.asarray(wavelength, np.float64)
    if bounds is None:
        bounds = (labels.min(axis=0), labels.max(axis=0))
    n_terms = powers.shape[0]
    design, outer, design_cov = _expected_design(labels, label_covariance, fiducial, scale, powers, seed)
    theta = np.full((n_pix, n_terms), np.nan)
    s2 = np.full(n_pix, np.nan)
    for a in range(0, n_pix, PIXEL_BLOCK):  # pixels are independent: blocks bound the memory
        cols = slice(a, a + PIXEL_BLOCK)
        theta[cols], s2[cols] = _train_pixels(design, outer, design_cov, flux[:, cols], ivar[:, cols], l1, iterations)
    # a pixel too few stars constrain predicts a flat 1 with the largest scatter (no weight in a
    # fit) instead of NaN, which the forward model's FFTs would spread over the whole spectrum
    unconstrained = ~np.all(np.isfinite(theta), axis=1)
    theta[unconstrained] = np.eye(n_terms)[0]
    s2[unconstrained] = MAX_SCATTER**2
    provenance = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "training": "train_cannon", "order": int(order), "l1": float(l1), "n_train": int(n_stars),
                  "iterations": int(iterations), "uncertain_labels": label_covariance is not None}
    return cannon_model(wavelength, theta, powers, fiducial, scale, label_names, bounds, scatter=np.sqrt(s2),
                        medium=medium, label_units=label_units, provenance=provenance,
                        summary={"n_unconstrained_pixels": int(unconstrained.sum())})


def _train_pixels(design, outer, design_cov, flux, ivar, l1, iterations):
    """(θ (P, T), s² (P,)) of one block of pixels (float64; NaN where too few stars are usable).
    ``ivar = inf`` is a noiseless pixel (σ² = 0: the scatter is then the whole residual)."""
    flux = np.asarray(flux, np.float64)
    ivar = np.asarray(ivar, np.float64)
    usable = np.isfinite(flux) & ~np.isnan(ivar) & (ivar > 0)
    flux = np.where(usable, flux, 0.0)
    var = np.where(usable, 1.0 / np.where(usable, ivar, 1.0), np.inf)  # σ²; ∞ = no weight
    n_pix, n_terms = flux.shape[1], design.shape[1]
    enough = usable.sum(axis=0) > n_terms
    theta = np.zeros((n_pix, n_terms))
    s2 = np.full(n_pix, MIN_SCATTER**2)
    ridge = np.zeros((n_pix, n_terms))
    for _ in range(max(1, int(iterations))):
        weights = 1.0 / (var + s2[None, :])  # (N, P); 0 where unusable
        normal = (weights.T @ outer).reshape(n_pix, n_terms, n_terms) + ridge[:, :, None] * np.eye(n_terms)
        rhs = (weights * flux).T @ design
        try:
            theta[enough] = np.linalg.solve(normal[enough], rhs[enough][..., None])[..., 0]
        except np.linalg.LinAlgError:  # a degenerate design (e.g. a label constant here): least norm
            theta[enough] = (np.linalg.pinv(normal[enough]) @ rhs[enough][..., None])[..., 0]
        if l1 > 0:  # IRLS: Λ|θ| ≈ Λθ²/|θ_old|, the constant term free
            ridge[:, 1:] = float(l1) / (2.0 * np.maximum(np.abs(theta[:, 1:]), 1e-8))
        residual2 = (flux - design @ theta.T) ** 2
        if design_cov is not None:  # + θᵀ Cov(v) θ, the labels' uncertainty
            residual2 = residual2 + design_cov @ (theta[:, :, None] * theta[:, None, :]).reshape(n_pix, -1).T
        s2 = _scatter_search(np.where(usable, residual2, 0.0), var, usable)
    theta[~enough] = np.nan
    s2[~enough] = np.nan
    return theta, s2


def _expected_design(labels, covariance, fiducial, scale, powers, seed):
    """(E v (N, T), E[v vᵀ] (N, T²), Cov v (N, T²) or None) of the monomials of scaled labels;
    exact (no covariance) or averaged over antithetic Gaussian samples of each star's labels."""
    x = (labels - fiducial) / scale
    if covariance is None:
        design = _monomials(x, powers, np)  # float64
        return design, (design[:, :, None] * design[:, None, :]).reshape(len(x), -1), None
    n, n_labels = labels.shape
    covariance = np.asarray(covariance, np.float64)
    if covariance.shape != (n, n_labels, n_labels) or not np.all(np.isfinite(covariance)):
        raise ValueError(f"label_covariance must be finite, (n_stars, n_labels, n_labels) = {(n, n_labels, n_labels)}; "
                         f"got {covariance.shape}")
    scaled_cov = covariance / np.outer(scale, scale)[None]
    values, vectors = np.linalg.eigh(scaled_cov)  # a square root of a PSD matrix, zero modes allowed
    root = vectors * np.sqrt(np.clip(values, 0.0, None))[:, None, :]
    half = np.random.default_rng(seed).standard_normal((LABEL_SAMPLES // 2, n_labels))
    z = np.concatenate([half, -half])  # antithetic
    samples = x[:, None, :] + np.einsum("nij,sj->nsi", root, z)
    v = _monomials(samples, powers, np)  # (N, S, T)
    design = v.mean(axis=1)
    outer = np.einsum("nst,nsu->ntu", v, v) / v.shape[1]
    cov = outer - design[:, :, None] * design[:, None, :]
    return design, outer.reshape(n, -1), cov.reshape(n, -1)


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
    for _ in range(SCATTER_STEPS):  # one new evaluation per step: the other inner point is kept
        left = fa < fb  # the minimum lies in [lo, b]
        hi, lo = np.where(left, b, hi), np.where(left, lo, a)
        x = np.where(left, hi - golden * (hi - lo), lo + golden * (hi - lo))
        fx = cost(x)
        a, fa, b, fb = np.where(left, x, b), np.where(left, fx, fb), np.where(left, a, x), np.where(left, fa, fx)
    best = np.where(fa < fb, a, b)
    # the end of the bracket: the cost at s = MIN_SCATTER beats the interior (no scatter needed)
    best = np.where(cost(np.full_like(best, np.log(MIN_SCATTER))) <= np.minimum(fa, fb), np.log(MIN_SCATTER), best)
    return np.exp(2.0 * best)
