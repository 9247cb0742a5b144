"""Batched fitting of spectra: the Levenberg–Marquardt core, the :class:`Fitter`, and
:func:`fit_spectra`, which turns spectra into an astropy Table (resumable, written as it goes), and
:func:`fit_survey`, the same into a partitioned Parquet folder, in one process or on Dask.
"""

from jaxpayne.fitting.fitter import BatchFit, Fitter, Flags
from jaxpayne.fitting.lm import LMOptions, LMResult, levenberg_marquardt
from jaxpayne.fitting.run import fit_spectra, read_results
from jaxpayne.fitting.survey import FitJob, fit_survey, read_partitioned

__all__ = ["BatchFit", "FitJob", "Fitter", "Flags", "LMOptions", "LMResult", "fit_spectra", "fit_survey",
           "levenberg_marquardt", "read_partitioned", "read_results"]
