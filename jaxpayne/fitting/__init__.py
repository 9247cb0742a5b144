"""Batched fitting of spectra: the Levenberg–Marquardt core, the :class:`Fitter`, and
:func:`fit_spectra`, which turns spectra into an astropy Table (resumable, written as it goes).
"""

from jaxpayne.fitting.fitter import BatchFit, Fitter, Flags
from jaxpayne.fitting.lm import LMOptions, LMResult, levenberg_marquardt
from jaxpayne.fitting.run import fit_spectra

__all__ = ["BatchFit", "Fitter", "Flags", "LMOptions", "LMResult", "fit_spectra", "levenberg_marquardt"]
