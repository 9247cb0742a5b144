"""Shared helpers of the spectrum readers: file sniffing, safe FITS opening, WCS, column names.

Everything here raises :class:`~jaxpayne.io.spectrum.SpectrumFormatError` with a one-line
``"<path>: <problem>"`` message. astropy is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxpayne.io.spectrum import SpectrumFormatError

#: File-name suffixes that promise a FITS file.
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fts.gz")
#: File-name suffixes read as plain-text tables.
TEXT_SUFFIXES = (".txt", ".dat", ".csv", ".tsv", ".asc", ".ascii", ".spec")

#: Plausible wavelength range [Å] for a stellar spectrum; values outside it almost always mean a
#: unit or log10 mistake, so generic readers refuse them with a hint instead of fitting garbage.
PLAUSIBLE_WAVELENGTH_RANGE = (100.0, 1.0e6)

#: Column/key names (lower case) recognised by the generic table, npz and text readers, in order
#: of preference. ``log`` names hold log10(λ/Å).
WAVELENGTH_NAMES = (
    "wavelength",
    "wave",
    "lambda",
    "lam",
    "wl",
    "wavelength_vac",
    "wave_vac",
    "wavelength_air",
    "wave_air",
    "vacuum_wavelength",
    "air_wavelength",
    "loglam",
    "log_lambda",
    "loglambda",
    "log_wave",
    "logwave",
    "log_wavelength",
)
FLUX_NAMES = ("flux", "spectrum", "spec", "spectra", "fluxes", "flux_norm", "norm_flux", "normalized_flux", "fnorm")
IVAR_NAMES = ("ivar", "invvar", "inv_var", "inverse_variance", "flux_ivar", "ivar_flux")
VARIANCE_NAMES = ("var", "variance", "flux_var", "var_flux")
ERROR_NAMES = (
    "error",
    "err",
    "errors",
    "sigma",
    "sig",
    "uncertainty",
    "unc",
    "uncert",
    "noise",
    "std",
    "stddev",
    "flux_err",
    "flux_error",
    "err_flux",
    "error_flux",
    "e_flux",
    "eflux",
    "flux_sigma",
    "sigma_flux",
    "flux_unc",
    "spec_err",
    "spec_errs",
    "spectrum_err",
)
MASK_NAMES = ("and_mask", "mask", "pixmask", "bitmask", "badpix", "bad_pixel", "bad", "flag", "flags")
GOOD_MASK_NAMES = ("good", "goodpix", "good_pixel", "good_mask")
SEGMENT_NAMES = ("segment", "chip", "ccd", "arm", "order", "seg")

#: Length units accepted for wavelength columns / WCS axes, as factors to Å.
_LENGTH_UNITS_TO_ANGSTROM = {
    "": 1.0,
    "angstrom": 1.0,
    "angstroms": 1.0,
    "aa": 1.0,
    "a": 1.0,
    "ang": 1.0,
    "0.1 nm": 1.0,
    "nm": 10.0,
    "nanometer": 10.0,
    "nanometers": 10.0,
    "um": 1e4,
    "micron": 1e4,
    "microns": 1e4,
    "µm": 1e4,
    "m": 1e10,
    "meter": 1e10,
    "cm": 1e8,
    "mm": 1e7,
}


def check_file(path) -> Path:
    """The path as a :class:`Path` if it is an existing readable file, else a one-line error."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise SpectrumFormatError(f"{p}: file not found")
    if p.is_dir():
        raise SpectrumFormatError(f"{p}: is a directory, not a spectrum file")
    if not os.access(p, os.R_OK):
        raise SpectrumFormatError(f"{p}: permission denied")
    return p


def sniff(path: Path) -> str:
    """Content type from the first bytes: ``fits``, ``gzip``, ``npz``, ``npy``, ``hdf5``, ``text``,
    ``empty`` or ``binary``."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head:
        return "empty"
    if head[:6] == b"SIMPLE":
        return "fits"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:4] == b"\x89HDF":
        return "hdf5"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character may be cut at the 4096-byte boundary
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return "binary"
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return "text" if printable >= 0.95 * len(text) else "binary"


def describe_start(path: Path, n: int = 40) -> str:
    """The first characters of a file, for error messages."""
    with open(path, "rb") as fh:
        head = fh.read(n)
    return repr(head.decode("latin-1").split("\n")[0][:n])


def has_suffix(path: Path, suffixes) -> bool:
    """Case-insensitive multi-dot suffix test (``.fits.gz`` works)."""
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def _data_nbytes(header) -> int:
    """Size of an HDU's data part from its header (FITS standard, without padding)."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    dims = [int(header.get(f"NAXIS{i}", 0)) for i in range(1, naxis + 1)]
    if header.get("GROUPS", False) and dims[0] == 0:  # random groups: NAXIS1 = 0
        dims = dims[1:]
    size = int(np.prod(dims, dtype=np.int64)) + int(header.get("PCOUNT", 0))
    return abs(int(header.get("BITPIX", 8))) // 8 * int(header.get("GCOUNT", 1)) * size


@contextlib.contextmanager
def open_fits(path: Path) -> Iterator[Any]:
    """Open a FITS file with every astropy problem turned into a one-line SpectrumFormatError.

    Headers of all HDUs are read up front; a file shorter than its headers promise (a truncated
    download) is refused here rather than failing later inside astropy. astropy's warnings about
    non-standard headers are swallowed (they are common in survey files and harmless).
    """
    from astropy.io import fits

    kind = sniff(path)
    if kind == "empty":
        raise SpectrumFormatError(f"{path}: empty file")
    if kind not in ("fits", "gzip"):
        hint = " (looks like a text file renamed .fits)" if kind == "text" else f" ({kind} content)"
        raise SpectrumFormatError(f"{path}: not a FITS file: it starts with {describe_start(path)}{hint}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
        except (OSError, ValueError, TypeError, EOFError, IndexError, KeyError) as exc:
            msg = str(exc).split("\n")[0]
            raise SpectrumFormatError(f"{path}: corrupt or truncated FITS file ({msg})") from exc
    with contextlib.closing(hdul):
        problems = [str(w.message).split("\n")[0] for w in caught if _is_structural(str(w.message))]
        if problems:
            raise SpectrumFormatError(f"{path}: corrupt or truncated FITS file ({problems[0]})")
        if kind == "fits":
            size = path.stat().st_size
            for i, hdu in enumerate(hdul):
                info = hdul.fileinfo(i)
                if info is None:
                    continue
                end = int(info["datLoc"]) + _data_nbytes(hdu.header)
                if end > size:
                    raise SpectrumFormatError(
                        f"{path}: truncated FITS file: HDU {i} needs {end} bytes but the file has {size}"
                    )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield hdul


@contextlib.contextmanager
def open_npz(path: Path) -> Iterator[Any]:
    """``np.load`` of an ``.npz`` (no pickles) whose file is always closed, errors as one-liners."""
    import zipfile

    with open(path, "rb") as fh:
        try:
            archive = np.load(fh, allow_pickle=False)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise SpectrumFormatError(f"{path}: corrupt .npz file ({str(exc).splitlines()[0]})") from exc
        if not hasattr(archive, "files"):
            raise SpectrumFormatError(f"{path}: expected an .npz archive, found a single array")
        with archive:
            yield archive


def _is_structural(message: str) -> bool:
    text = message.lower()
    # astropy's own "File may have been truncated" also fires for a missing final block padding,
    # which is harmless; real truncation is caught by the size check in open_fits instead.
    return any(word in text for word in ("corrupt", "extra bytes", "unexpected end"))


def hdu_data(hdu, path: Path, index) -> np.ndarray | None:
    """An image HDU's data as a native-byte-order numpy array, a table's as its FITS_rec (None if
    empty); read errors as one-liners."""
    try:
        data = hdu.data
    except (OSError, ValueError, TypeError, EOFError, IndexError) as exc:
        raise SpectrumFormatError(f"{path}: HDU {index} data unreadable ({str(exc).splitlines()[0]})") from exc
    if data is None:
        return None
    if getattr(data, "dtype", None) is not None and data.dtype.names:
        return data  # table (FITS_rec): columns are converted (logical, scaled) on field access
    return native(np.asarray(data))


def get_hdu(hdul, key, path: Path):
    """HDU ``key`` (index or EXTNAME) of an open file, or a one-line error naming the HDU count."""
    try:
        return hdul[key]
    except (KeyError, IndexError) as exc:
        raise SpectrumFormatError(f"{path}: no HDU {key!r} ({len(hdul)} HDUs)") from exc


def native(arr: np.ndarray) -> np.ndarray:
    """``arr`` in native byte order (FITS data are big-endian); itself when it already is."""
    if arr.dtype.byteorder not in ("=", "|"):
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def is_table(hdu) -> bool:
    """Whether an HDU is a (binary or ASCII) table."""
    return type(hdu).__name__ in ("BinTableHDU", "TableHDU")


def is_image(hdu) -> bool:
    """Whether an HDU is an image (primary, extension or tile-compressed)."""
    return type(hdu).__name__ in ("PrimaryHDU", "ImageHDU", "CompImageHDU")


def image_shape(hdu) -> tuple[int, ...]:
    """An image HDU's data shape from its header (numpy order), without reading the data."""
    naxis = int(hdu.header.get("NAXIS", 0))
    return tuple(int(hdu.header.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1))


def hdu_summary(hdul) -> str:
    """One line describing every HDU of a file (tables with their first columns), for messages."""
    parts = []
    for i, hdu in enumerate(hdul):
        label = f"HDU {i}" + (f" {hdu.name!r}" if hdu.name and hdu.name != "PRIMARY" else "")
        if is_table(hdu):
            cols = list(hdu.columns.names)
            parts.append(f"{label}: table with columns {cols[:8]}{'...' if len(cols) > 8 else ''}")
        elif is_image(hdu):
            shape = image_shape(hdu)
            parts.append(f"{label}: image {shape}" if shape else f"{label}: no data")
        else:
            parts.append(f"{label}: {type(hdu).__name__}")
    return "; ".join(parts)


def plain(value: Any) -> Any:
    """A header or numpy value as a plain Python scalar (str stripped), or None if undefined."""
    if value is None or type(value).__name__ == "Undefined":
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("latin-1").strip()
    if isinstance(value, str):
        return value.strip()
    return value


def header_values(header, keys: Mapping[str, str] | tuple) -> dict[str, Any]:
    """``{meta_key: plain(header[card])}`` for the cards present; ``keys`` maps meta key → card."""
    mapping = keys if isinstance(keys, Mapping) else {k: k for k in keys}
    out = {}
    for meta_key, card in mapping.items():
        if card in header:
            value = plain(header[card])
            if value is not None and value != "":
                out[meta_key] = value
    return out


def length_unit_factor(unit, where: str) -> float:
    """Factor converting a wavelength unit string (TUNIT/CUNIT) to Å."""
    text = str(unit or "").strip()
    key = text.lower()
    if key in _LENGTH_UNITS_TO_ANGSTROM:
        return _LENGTH_UNITS_TO_ANGSTROM[key]
    try:
        import astropy.units as u

        return float(u.Unit(text).to(u.AA))
    except (ValueError, TypeError, u.UnitsError) as exc:
        raise SpectrumFormatError(f"{where}: wavelength unit {text!r} is not a length unit") from exc


def check_wavelength_plausible(wave: np.ndarray, where: str, how: str) -> None:
    """Refuse wavelengths that cannot be Å for a stellar spectrum, with a unit/log hint."""
    lo, hi = PLAUSIBLE_WAVELENGTH_RANGE
    finite = wave[np.isfinite(wave)]
    if finite.size == 0:
        raise SpectrumFormatError(f"{where}: wavelengths from {how} are all NaN/inf")
    wmin, wmax = float(finite.min()), float(finite.max())
    if wmin < lo or wmax > hi:
        hint = ""
        if wmax < 10:
            hint = "; is it log10(λ)? name it loglam, or set DC-FLAG = 1 / CTYPE1 = 'LOG-LINEAR'"
        elif wmax > hi:
            hint = "; check the unit (CUNIT1/TUNIT)"
        raise SpectrumFormatError(f"{where}: wavelengths from {how} span {wmin:g}–{wmax:g}, not plausible in Å{hint}")


def medium_from_header(header) -> str | None:
    """``"air"``/``"vacuum"`` from CTYPE1 (AWAV/WAVE) or AIRORVAC/VACUUM cards, else None."""
    ctype = str(header.get("CTYPE1", "")).strip().upper()
    if ctype.startswith("AWAV"):
        return "air"
    if ctype.startswith("WAVE"):
        return "vacuum"
    airorvac = str(header.get("AIRORVAC", "")).strip().lower()
    if airorvac.startswith("air"):
        return "air"
    if airorvac.startswith("vac"):
        return "vacuum"
    if "VACUUM" in header and isinstance(header["VACUUM"], (bool, np.bool_)):
        return "vacuum" if header["VACUUM"] else "air"
    return None


def wcs_wavelength(header, n: int, where: str) -> np.ndarray | None:
    """Pixel wavelengths [Å] from a 1-D linear or logarithmic spectral WCS, or None if absent.

    λ_i = CRVAL1 + CDELT1·(i + 1 − CRPIX1) (``CD1_1`` if no ``CDELT1``; ``CRPIX1`` default 1), then
    10**(...) when ``DC-FLAG = 1`` (IRAF) or ``CTYPE1`` is ``LOG-LINEAR``/``LOGLAM`` (SDSS), or
    CRVAL1·exp(CDELT1·(i + 1 − CRPIX1)/CRVAL1) for FITS ``WAVE-LOG``/``AWAV-LOG`` (Greisen et al.
    2006). ``CUNIT1`` (default Å) converts the result.
    """
    if "CRVAL1" not in header:
        return None
    step = header.get("CDELT1", header.get("CD1_1"))
    if step is None:
        raise SpectrumFormatError(f"{where}: header has CRVAL1 but neither CDELT1 nor CD1_1")
    crval, step, crpix = float(header["CRVAL1"]), float(step), float(header.get("CRPIX1", 1.0))
    pix = np.arange(n, dtype=np.float64) + 1.0 - crpix
    ctype = str(header.get("CTYPE1", "")).strip().upper()
    if ctype.endswith("-LOG"):
        wave = crval * np.exp(step * pix / crval)
        how = f"the WCS (CTYPE1 = '{ctype}')"
    elif int(header.get("DC-FLAG", 0) or 0) == 1 or ctype in ("LOG-LINEAR", "LOGLAM", "LOG10", "LOG"):
        wave = 10.0 ** (crval + step * pix)
        how = f"the log10 WCS (CRVAL1 = {crval:g}, CDELT1 = {step:g})"
    else:
        wave = crval + step * pix
        how = f"the linear WCS (CRVAL1 = {crval:g}, CDELT1 = {step:g})"
    wave = wave * length_unit_factor(header.get("CUNIT1", ""), where)
    check_wavelength_plausible(wave, where, how)
    return wave


def find_name(names, candidates) -> str | None:
    """The first of ``names`` (original spelling) matching ``candidates`` case-insensitively, in
    the candidates' order of preference."""
    lower = {str(n).lower(): n for n in names}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    return None


def ivar_from_error(error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ivar, invalid)``: ivar = 1/σ² where σ is finite and > 0, else 0 with invalid = True."""
    err = np.asarray(error, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        invalid = ~(np.isfinite(err) & (err > 0))
        ivar = 1.0 / np.where(invalid, 1.0, err) ** 2
    invalid |= ~np.isfinite(ivar)
    return np.where(invalid, 0.0, ivar), invalid


def der_snr_noise(flux: np.ndarray) -> float:
    """Per-pixel noise estimated from the flux alone (DER_SNR; Stoehr, Seaman & Martinez 2008).

    σ ≈ 1.482602 / √6 · median |2 f_i − f_{i−2} − f_{i+2}| over finite pixels. It overestimates
    the noise of spectra with lines narrower than a few pixels; readers use it only when a file
    carries no uncertainties, and say so in ``meta["ivar_estimated"]``.
    """
    f = np.asarray(flux, dtype=np.float64)
    f = f[np.isfinite(f)]
    if f.size < 5:
        return float("nan")
    return float(1.482602 / np.sqrt(6.0) * np.median(np.abs(2.0 * f[2:-2] - f[:-4] - f[4:])))


_SOBJECT_RE = re.compile(r"^(?P<sobject>\d{15})(?P<ccd>[1-4])\.fits?(\.gz)?$", re.IGNORECASE)


def galah_name_parts(path) -> tuple[str, int] | None:
    """``(sobject_id, ccd)`` from a GALAH file name like ``1312160026010031.fits``, else None."""
    match = _SOBJECT_RE.match(Path(path).name)
    if match is None:
        return None
    return match["sobject"], int(match["ccd"])


def read_table(path, what: str):
    """An astropy Table from a file (CSV by its extension, else astropy's own detection: ECSV,
    FITS, Parquet...); a ValueError naming the file and ``what`` it should be otherwise."""
    from astropy.table import Table

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such {what}")
    try:
        return Table.read(path, format="ascii.csv" if path.suffix.lower() == ".csv" else None)
    except Exception as error:  # astropy raises many kinds for a foreign file
        raise ValueError(f"{path}: cannot read the {what} as a table ({type(error).__name__}: {error})") from None
