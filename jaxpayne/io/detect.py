"""Which reader a spectrum file needs: :func:`detect_format` looks at the content, not the name.

FITS files are told apart by their HDU layout (APOGEE apStar/apVisit, GALAH, SDSS/BOSS ``spec``
files, then generic tables and 1-D images); zip archives by their keys (binspec or generic npz);
everything else by its first bytes. A ``.fits``/``.npz`` name with other content is an error
rather than a guess.
"""

from __future__ import annotations

import zipfile

import numpy as np

from jaxpayne.io import _common as C
from jaxpayne.io.spectrum import SpectrumFormatError
from jaxpayne.io.surveys import SDSS_SPEC_NAME

__all__ = ["FORMATS", "detect_format"]

#: Format names accepted by ``format=`` (see :func:`jaxpayne.io.read_spectrum`).
FORMATS = ("apstar", "apvisit", "galah", "sdss", "fits-table", "fits-image", "binspec", "npz", "text")

#: HDU 1 columns of an SDSS/BOSS ``spec``/``spec-lite`` file (the COADD table) used to detect it.
_SDSS_COADD_COLUMNS = {"flux", "loglam", "ivar"}


def _is_sdss_spec(hdul, path) -> bool:
    """An SDSS ``spec-PLATE-MJD-FIBER`` file: a COADD table in HDU 1 and the plate identity in the
    primary header or the file name."""
    if len(hdul) < 2 or not C.is_table(hdul[1]):
        return False
    columns = {name.lower() for name in hdul[1].columns.names}
    primary = hdul[0].header
    identified = ("PLATEID" in primary and "MJD" in primary) or SDSS_SPEC_NAME.match(path.name) is not None
    return _SDSS_COADD_COLUMNS <= columns and identified


def _classify_fits(hdul, path, hdu=None) -> str:
    primary = hdul[0].header
    if hdu is None:
        if any(h.name.lower() == "input_sigma" for h in hdul):
            return "galah"
        shapes = [C.image_shape(h) if C.is_image(h) else None for h in hdul]
        if (
            len(hdul) >= 4
            and "NWAVE" in primary
            and "CRVAL1" in primary
            and all(shapes[i] and shapes[i][-1] == int(primary["NWAVE"]) for i in (1, 2, 3))
        ):
            return "apstar"
        if (
            len(hdul) >= 5
            and all(shapes[i] and len(shapes[i]) == 2 for i in (1, 2, 3, 4))
            and len({shapes[i] for i in (1, 2, 3, 4)}) == 1
            and ("wave" in str(hdul[4].header.get("BUNIT", "")).lower() or shapes[4] == (3, 4096))
        ):
            return "apvisit"
        if _is_sdss_spec(hdul, path):
            return "sdss"
    candidates = [hdu] if hdu is not None else range(len(hdul))
    for i in candidates:
        h = C.get_hdu(hdul, i, path)
        if C.is_table(h) and C.find_name(h.columns.names, C.FLUX_NAMES):
            return "fits-table"
        if C.is_image(h) and len([d for d in C.image_shape(h) if d > 1]) == 1:
            return "fits-image"
    if hdu is not None:
        raise SpectrumFormatError(
            f"{path}: HDU {hdu!r} is neither a spectrum table nor a 1-D image ({C.hdu_summary(hdul)})"
        )
    raise SpectrumFormatError(f"{path}: not a recognised spectrum file (FITS: {C.hdu_summary(hdul)})")


def detect_format(path, *, hdu=None) -> str:
    """The :data:`FORMATS` name of a spectrum file, from its content (and name for text files).

    Args:
        path: the file.
        hdu: HDU index or name; when given, only the generic FITS formats are considered.

    Returns:
        One of :data:`FORMATS`.

    Raises:
        SpectrumFormatError: the file is missing, empty, corrupt, or none of the formats.

    Example:
        >>> detect_format("apStar-dr17-2M17335483-2753043.fits")  # doctest: +SKIP
        'apstar'
    """
    path = C.check_file(path)
    kind = C.sniff(path)
    if kind == "empty":
        raise SpectrumFormatError(f"{path}: empty file")
    if C.has_suffix(path, C.FITS_SUFFIXES) or kind == "fits" or (kind == "gzip" and ".fit" in path.name.lower()):
        with C.open_fits(path) as hdul:
            return _classify_fits(hdul, path, hdu)
    if C.has_suffix(path, (".npz",)) and kind != "npz":
        raise SpectrumFormatError(f"{path}: not a valid .npz (zip) file: it starts with {C.describe_start(path)}")
    if kind == "npz":
        try:
            with C.open_npz(path) as z:
                keys = set(z.files)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise SpectrumFormatError(f"{path}: corrupt .npz file ({exc})") from exc
        if ({"spectrum", "spec_err"} <= keys or {"spectra", "spec_errs"} <= keys) and not C.find_name(
            keys, C.WAVELENGTH_NAMES
        ):
            return "binspec"
        if C.find_name(keys, C.FLUX_NAMES):
            return "npz"
        raise SpectrumFormatError(
            f"{path}: not a recognised spectrum file (npz with keys {sorted(keys)}, no flux array)"
        )
    if kind == "npy":
        with open(path, "rb") as fh:
            try:
                version = np.lib.format.read_magic(fh)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape = read_header(fh)[0]
            except (ValueError, OSError):
                shape = "?"
        raise SpectrumFormatError(
            f"{path}: not a recognised spectrum file (.npy holding one bare array of shape {shape}; "
            "use an .npz with named arrays, or pass it as wavelength=)"
        )
    if kind == "hdf5":
        raise SpectrumFormatError(f"{path}: not a recognised spectrum file (HDF5 content)")
    if kind == "gzip":
        raise SpectrumFormatError(f"{path}: not a recognised spectrum file (gzip-compressed; only .fits.gz is read)")
    if kind == "text":
        return "text"
    raise SpectrumFormatError(
        f"{path}: not a recognised spectrum file (binary content starting {C.describe_start(path, 16)})"
    )
