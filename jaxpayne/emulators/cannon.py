"""A Cannon-style polynomial spectrum model: flux at every pixel is a polynomial in the labels.

The Cannon (Ness et al. 2015, ApJ 808, 16) models the normalised flux of pixel p as
``f_p(ℓ) = θ_p · v(ℓ)`` with ``v_j = Π_k x_k^{P_jk}`` the monomials of the scaled labels
``x = (ℓ − fiducial)/scale`` and an intrinsic scatter ``s_p²`` per pixel. Evaluating it is one
(n_pixels × n_terms) matrix product, so it is an emulator like any other for
:class:`~jaxpayne.forward.ForwardModel`: ``fit``, ``sample`` and the Cramér–Rao bounds work with it,
and ``s_p`` enters the likelihood as the emulator's own error.

:meth:`CannonEmulator.from_doppler` reads the wide-band (3000–18000 Å, air) cubic Cannon of the
Doppler package (D. Nidever; ``coolstars_cubic_cannon.npz``).
"""

from __future__ import annotations

import os
from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["CannonEmulator"]

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
        terms = jnp.ones(x.shape[:-1] + (self.powers.shape[0],), dtype)
        for k in range(self.powers.shape[1]):  # integer powers: exact products, no log/exp
            for p in range(1, int(self.powers[:, k].max()) + 1):
                terms = terms * jnp.where(jnp.asarray(self.powers[:, k] >= p), x[..., k:k + 1], 1.0)
        return terms

    def predict(self, labels):
        """Flux (..., n_pix) for labels (..., n_labels) in physical units (traceable)."""
        terms = self.design(labels)
        return terms @ jnp.asarray(self.coefficients, terms.dtype).T

    def __repr__(self) -> str:
        return (f"CannonEmulator(labels={list(self.label_names)}, {self.wavelength.size} pixels "
                f"{self.wavelength[0]:.1f}–{self.wavelength[-1]:.1f} Å {self.medium}, "
                f"{self.powers.shape[0]} terms)")
