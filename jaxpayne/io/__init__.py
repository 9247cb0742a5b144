"""Spectra in: the :class:`Spectrum` container and readers for survey and generic files.

Conventions (details in ``docs/spectra_io.md``): wavelengths in Å, float64, strictly increasing,
``medium`` "vacuum" or "air"; ``ivar`` is the inverse variance (0 = no information); ``mask`` is
True for a **bad** pixel; a pixel is usable iff ``not mask and ivar > 0`` (:attr:`Spectrum.good`);
``segment`` numbers the detector pieces (chips, CCDs) from the blue end; ``frame`` is the velocity
frame of the wavelengths (:data:`FRAMES` or None) and ``barycentric_correction`` [km/s] the one from
the header (``v_bary = v_topo + barycentric_correction``). Readers raise
:class:`SpectrumFormatError` with a one-line ``"<path>: <problem>"`` message;
:func:`iter_spectra` reads many files lazily and yields a :class:`ReadFailure` for each bad one.

Modules: :mod:`~jaxpayne.io.spectrum` (the container, air/vacuum), :mod:`~jaxpayne.io.detect`
(format detection), :mod:`~jaxpayne.io.readers` (one file: :func:`read_spectrum`),
:mod:`~jaxpayne.io.iterate` (many files), :mod:`~jaxpayne.io.surveys` (APOGEE, SDSS/BOSS, GALAH,
binspec), :mod:`~jaxpayne.io.generic` (FITS tables/images, npz, text, specutils, wavelength grids).

Example:
    >>> from jaxpayne.io import read_spectra
    >>> spectra = read_spectra(["apStar-dr17-2M17335483-2753043.fits"], on_error="warn")  # doctest: +SKIP
    >>> spectra[0].to_air().medium  # doctest: +SKIP
    'air'
"""

from jaxpayne.io.detect import FORMATS, detect_format
from jaxpayne.io.generic import from_specutils, load_wavelength
from jaxpayne.io._common import read_table
from jaxpayne.io.iterate import ReadFailure, SpectrumList, SpectrumReadWarning, galah_path_groups, iter_spectra, read_spectra
from jaxpayne.io.readers import READER_OPTIONS, read_spectrum
from jaxpayne.io.spectrum import (
    FRAMES,
    MEDIA,
    Spectrum,
    SpectrumFormatError,
    air_to_vacuum,
    combine,
    vacuum_to_air,
)
from jaxpayne.io.surveys import (
    APOGEE_BAD_PIXMASK_BITS,
    APOGEE_PIXMASK,
    apogee_pixmask_value,
    read_apstar,
    read_apvisit,
    read_binspec,
    read_galah_ccd,
    read_galah_star,
    read_sdss_spec,
)

__all__ = [
    "APOGEE_BAD_PIXMASK_BITS",
    "APOGEE_PIXMASK",
    "FORMATS",
    "FRAMES",
    "MEDIA",
    "READER_OPTIONS",
    "ReadFailure",
    "Spectrum",
    "SpectrumFormatError",
    "SpectrumList",
    "SpectrumReadWarning",
    "air_to_vacuum",
    "apogee_pixmask_value",
    "combine",
    "detect_format",
    "from_specutils",
    "galah_path_groups",
    "iter_spectra",
    "load_wavelength",
    "read_apstar",
    "read_apvisit",
    "read_binspec",
    "read_galah_ccd",
    "read_galah_star",
    "read_sdss_spec",
    "read_spectra",
    "read_spectrum",
    "read_table",
    "vacuum_to_air",
]
