"""Reading one spectrum file: :func:`read_spectrum` detects the format and calls its reader.

:func:`read_spectrum` reads one file into a list of :class:`~jaxpayne.io.spectrum.Spectrum` (one
file may hold several spectra); :mod:`jaxpayne.io.iterate` reads many. Every problem with a file
surfaces as a one-line :class:`~jaxpayne.io.spectrum.SpectrumFormatError` ``"<path>: <problem>"``.

Formats (``format=``; detected from the content when omitted, see :mod:`jaxpayne.io.detect`):

================  ===========================================================================
``apstar``        APOGEE apStar (combined spectrum; ``visits=True`` adds the visits)
``apvisit``       APOGEE apVisit (3 chips)
``galah``         GALAH HERMES CCD file (one CCD; :func:`~jaxpayne.io.read_spectra` groups a
                  star's CCDs)
``sdss``          SDSS/BOSS ``spec-PLATE-MJD-FIBER.fits`` (full or lite), id ``PLATE-MJD-FIBER``
``fits-table``    FITS binary table with wavelength/flux[/ivar|error|variance][/mask] columns
``fits-image``    1-D FITS image with a linear or log-linear WCS, optional error/ivar/mask HDUs
``binspec``       binspec ``.npz`` (``spectrum``/``spec_err`` or ``spectra``/``spec_errs``)
``npz``           numpy ``.npz`` with wavelength/flux/(ivar|error|variance) arrays
``text``          whitespace/CSV text table (named columns, or wavelength flux [error])
================  ===========================================================================

Survey readers live in :mod:`jaxpayne.io.surveys`, the generic ones in :mod:`jaxpayne.io.generic`.
"""

from __future__ import annotations

import os
import zipfile

from jaxpayne.io import _common as C
from jaxpayne.io import generic, surveys
from jaxpayne.io.detect import FORMATS, detect_format
from jaxpayne.io.generic import from_specutils, load_wavelength
from jaxpayne.io.spectrum import MEDIA, Spectrum, SpectrumFormatError

__all__ = ["READER_OPTIONS", "check_options", "read_spectrum"]

#: Format-specific options :func:`read_spectrum` accepts through ``**kw`` (each reader uses the
#: ones that concern it and ignores the rest, so one set of options can serve a mixed batch).
READER_OPTIONS = {
    "visits": "apstar: also return the visit spectra (default False)",
    "pixmask_bits": "apstar/apvisit: APOGEE_PIXMASK bits to mask (names, numbers or int)",
    "keep_gaps": "apstar/apvisit: keep empty gap pixels (masked) instead of dropping them",
    "relative_sigma": "galah: input_sigma is relative to the flux (default True)",
    "estimate_missing_errors": "generic formats: DER_SNR noise when a file has no uncertainties "
    "(default True; False raises)",
}


# ------------------------------------------------------------------------------ survey adapters
# Each reader takes (path, *, wavelength, hdu, medium, **options) and returns a list of spectra.


def _apstar(path, *, medium=None, visits=False, pixmask_bits=None, keep_gaps=False, **_):
    return surveys.read_apstar(path, visits=visits, pixmask_bits=pixmask_bits, keep_gaps=keep_gaps, medium=medium)


def _apvisit(path, *, medium=None, pixmask_bits=None, keep_gaps=False, **_):
    return surveys.read_apvisit(path, pixmask_bits=pixmask_bits, keep_gaps=keep_gaps, medium=medium)


def _galah(path, *, medium=None, relative_sigma=True, **_):
    return [surveys.read_galah_ccd(path, relative_sigma=relative_sigma, medium=medium)]


def _sdss(path, *, medium=None, **_):
    return [surveys.read_sdss_spec(path, medium=medium)]


def _binspec(path, *, wavelength=None, medium=None, **_):
    return surveys.read_binspec(path, wavelength, medium=medium)


_READERS = {
    "apstar": _apstar,
    "apvisit": _apvisit,
    "galah": _galah,
    "sdss": _sdss,
    "fits-table": generic.read_fits_table,
    "fits-image": generic.read_fits_image,
    "binspec": _binspec,
    "npz": generic.read_npz,
    "text": generic.read_text,
}
_GENERIC = ("fits-table", "fits-image")

#: Exceptions from numpy/astropy internals that mean "this file is broken", turned into one-liners.
_FILE_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError)


def check_options(format, kw) -> str | None:
    """Check ``format=`` and the reader options (also used for batches by :mod:`~jaxpayne.io.iterate`).

    Args:
        format: a :data:`FORMATS` name or alias (``table``, ``image``, ``txt``, ``csv`` …), or None.
        kw: the format options given (see :data:`READER_OPTIONS`).

    Returns:
        The canonical format name, or None to detect it.

    Raises:
        TypeError: an unknown option.
        ValueError: an unknown format or APOGEE mask bit.
    """
    unknown = set(kw) - set(READER_OPTIONS)
    if unknown:
        raise TypeError(f"unknown reader option(s) {sorted(unknown)}; known: {sorted(READER_OPTIONS)}")
    if "pixmask_bits" in kw:
        surveys.apogee_pixmask_value(kw["pixmask_bits"])  # ValueError for unknown bit names
    if format is None:
        return None
    fmt = str(format).lower().replace("_", "-")
    fmt = {
        "table": "fits-table",
        "image": "fits-image",
        "fits": None,
        "txt": "text",
        "ascii": "text",
        "csv": "text",
    }.get(fmt, fmt)
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose from {', '.join(FORMATS)} (or None to detect)")
    return fmt


def read_spectrum(
    path, *, format: str | None = None, wavelength=None, hdu=None, medium: str | None = None, **kw
) -> list[Spectrum]:
    """Read every spectrum in one file.

    Args:
        path: the file (or a specutils ``Spectrum``/``Spectrum1D`` object, see
            :func:`from_specutils`).
        format: one of :data:`FORMATS`, or None to detect it from the content.
        wavelength: wavelength grid [Å] for files that carry none (binspec ``.npz``, bare npz or
            text): an array or a file (see :func:`load_wavelength`). Files with their own grid keep
            it (``meta["wavelength_source"]`` says which was used).
        hdu: HDU index or name for the generic FITS formats.
        medium: ``"vacuum"``/``"air"``: the medium of the *file's* wavelengths. Needed for generic
            files that do not say (otherwise vacuum is assumed and ``meta["medium_assumed"]`` is
            set); for survey formats it must agree with the survey's medium. Use
            :meth:`Spectrum.to_vacuum` / :meth:`Spectrum.to_air` to convert.
        **kw: format options, see :data:`READER_OPTIONS` (``visits``, ``pixmask_bits``,
            ``keep_gaps``, ``relative_sigma``, ``estimate_missing_errors``).

    Returns:
        A list of spectra (one file can hold several: apStar visits, binspec visits, tables with one
        spectrum per row, npz with 2-D flux). Survey readers set ``frame`` and
        ``barycentric_correction`` from what the format and header say; generic formats leave
        them None.

    Raises:
        SpectrumFormatError: one line ``"<path>: <problem>"`` for a missing, empty, corrupt,
            truncated or unrecognised file, or inconsistent content.
        TypeError / ValueError: for bad arguments (unknown option, format or mask bit).

    Example:
        >>> spectra = read_spectrum("apStar-dr17-2M17335483-2753043.fits", visits=True)  # doctest: +SKIP
        >>> [s.id for s in spectra][:2]  # doctest: +SKIP
        ['2M17335483-2753043', '2M17335483-2753043_visit1']
    """
    if not isinstance(path, (str, os.PathLike)):
        if hasattr(path, "spectral_axis") and hasattr(path, "flux"):
            return [from_specutils(path, medium=medium)]
        raise TypeError(f"read_spectrum: expected a path or a specutils spectrum, got {type(path).__name__}")
    fmt = check_options(format, kw)
    if medium is not None and str(medium).lower() not in MEDIA:
        raise ValueError(f"medium must be 'vacuum' or 'air', got {medium!r}")
    p = C.check_file(path)
    grid = None
    if wavelength is not None:
        grid = load_wavelength(wavelength)
    try:
        if fmt is None:
            fmt = detect_format(p, hdu=hdu)
        if hdu is not None and fmt not in _GENERIC:
            raise SpectrumFormatError(f"{p}: hdu= applies to generic FITS tables/images, not to {fmt} files")
        spectra = _READERS[fmt](p, wavelength=grid, hdu=hdu, medium=medium, **kw)
    except SpectrumFormatError:
        raise
    except _FILE_ERRORS as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise SpectrumFormatError(f"{p}: cannot read as {fmt or 'a spectrum'} ({type(exc).__name__}: {msg})") from exc
    return spectra
