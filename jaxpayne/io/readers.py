"""Reading spectra from files: format detection, generic FITS/npz/text readers, batches, specutils.

:func:`read_spectrum` reads one file into a list of :class:`~jaxpayne.io.spectrum.Spectrum`
(one file may hold several spectra); :func:`read_spectra` reads many, combines GALAH CCD files of
the same star and can collect bad files instead of stopping; :func:`iter_spectra` does the same
lazily, file by file, for survey-sized inputs. Every problem with a file surfaces as a one-line
:class:`~jaxpayne.io.spectrum.SpectrumFormatError` ``"<path>: <problem>"``.

Formats (``format=``; detected from the content when omitted):

================  ===========================================================================
``apstar``        APOGEE apStar (combined spectrum; ``visits=True`` adds the visits)
``apvisit``       APOGEE apVisit (3 chips)
``galah``         GALAH HERMES CCD file (one CCD; :func:`read_spectra` groups a star's CCDs)
``fits-table``    FITS binary table with wavelength/flux[/ivar|error|variance][/mask] columns
``fits-image``    1-D FITS image with a linear or log-linear WCS, optional error/ivar/mask HDUs
``binspec``       binspec ``.npz`` (``spectrum``/``spec_err`` or ``spectra``/``spec_errs``)
``npz``           numpy ``.npz`` with wavelength/flux/(ivar|error|variance) arrays
``text``          whitespace/CSV text table (named columns, or wavelength flux [error])
================  ===========================================================================
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxpayne.io import _common as C
from jaxpayne.io import surveys
from jaxpayne.io.spectrum import Spectrum, SpectrumFormatError, _to_angstrom

__all__ = [
    "FORMATS",
    "ReadFailure",
    "SpectrumList",
    "SpectrumReadWarning",
    "detect_format",
    "from_specutils",
    "iter_spectra",
    "load_wavelength",
    "read_spectra",
    "read_spectrum",
]

#: Format names accepted by ``format=``.
FORMATS = ("apstar", "apvisit", "galah", "fits-table", "fits-image", "binspec", "npz", "text")

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

#: Header cards copied into ``meta`` by the generic FITS readers (meta key → card).
_GENERIC_CARDS = {
    "OBJECT": "OBJECT",
    "OBJID": "OBJID",
    "RA": "RA",
    "DEC": "DEC",
    "SNR": "SNR",
    "VHELIO": "VHELIO",
    "TELESCOPE": "TELESCOP",
    "INSTRUMENT": "INSTRUME",
    "MJD": "MJD",
    "MJD-OBS": "MJD-OBS",
    "DATE-OBS": "DATE-OBS",
    "EXPTIME": "EXPTIME",
}
_ID_CARDS = ("OBJID", "OBJECT", "OBJNAME", "APOGEE_ID", "TARGET", "NAME")
_ID_KEYS = ("id", "ids", "objid", "object", "name", "names", "star", "apogee_id")


class SpectrumReadWarning(UserWarning):
    """A file in a batch could not be read (``read_spectra(..., on_error="warn")``)."""


class SpectrumList(list):
    """A ``list`` of :class:`Spectrum` with the files that failed in ``.failures``.

    Attributes:
        failures: ``[(path, message), ...]`` for the files that could not be read (only filled
            when ``on_error`` is ``"warn"`` or ``"skip"``).
    """

    def __init__(self, spectra: Iterable[Spectrum] = (), failures: Iterable[tuple[str, str]] = ()):
        super().__init__(spectra)
        self.failures: list[tuple[str, str]] = list(failures)


class ReadFailure(NamedTuple):
    """A file :func:`iter_spectra` could not read, yielded where its spectra would have been.

    Attributes:
        source: the file's path.
        message: one line ``"<path>: <problem>"``.
    """

    source: str
    message: str


# ------------------------------------------------------------------------------ wavelength grids


def load_wavelength(source, *, name: str = "wavelength") -> np.ndarray:
    """A wavelength grid [Å] from an array or a file.

    Args:
        source: array-like or astropy Quantity, or the path of a ``.npz`` (key ``wavelength``,
            ``wave``, ``lambda``, ``loglam`` … or its only array), ``.npy``, text (first column) or
            FITS file (a wavelength table column, a 1-D image, or the WCS of the first image).
        name: what the grid is, for messages.

    Returns:
        ``(n,)`` float64 wavelengths [Å].
    """
    if isinstance(source, (str, os.PathLike)):
        path = C.check_file(source)
        kind = C.sniff(path)
        log = False
        if kind == "npz":
            with C.open_npz(path) as z:
                key = C.find_name(z.files, C.WAVELENGTH_NAMES)
                if key is None and len(z.files) == 1:
                    key = z.files[0]
                if key is None:
                    raise SpectrumFormatError(f"{path}: no wavelength array among keys {z.files}")
                log = key.lower().startswith("log")
                wave = np.asarray(z[key], dtype=np.float64)
        elif kind == "npy":
            wave = np.asarray(np.load(path, allow_pickle=False), dtype=np.float64)
        elif kind == "text":
            wave = np.loadtxt(path, comments="#", ndmin=2, usecols=0, delimiter="," if _is_csv(path) else None)
        elif kind in ("fits", "gzip"):
            wave = _wavelength_from_fits(path)
        else:
            raise SpectrumFormatError(f"{path}: cannot read a {name} grid from {kind} content")
        if log:
            wave = 10.0**wave
        where = str(path)
    else:
        where = name
        wave = _to_angstrom(source, where, name)
    wave = np.asarray(wave, dtype=np.float64).squeeze()
    if wave.ndim != 1 or wave.size < 2:
        raise SpectrumFormatError(f"{where}: {name} grid must be 1-D with ≥ 2 values, got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise SpectrumFormatError(f"{where}: {name} grid holds NaN/inf values")
    C.check_wavelength_plausible(wave, where, f"the {name} grid")
    return wave


def _is_csv(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip() and not line.lstrip().startswith("#"):
                return "," in line
    return False


def _wavelength_from_fits(path: Path) -> np.ndarray:
    with C.open_fits(path) as hdul:
        for i, hdu in enumerate(hdul):
            if _is_table(hdu):
                col = C.find_name(hdu.columns.names, C.WAVELENGTH_NAMES)
                if col is not None:
                    data = np.asarray(C.hdu_data(hdu, path, i)[col], dtype=np.float64).ravel()
                    return (
                        10.0**data
                        if col.lower().startswith("log")
                        else data * C.length_unit_factor(hdu.columns[col].unit, str(path))
                    )
        for i, hdu in enumerate(hdul):
            if _is_image(hdu):
                data = C.hdu_data(hdu, path, i)
                if data is not None and data.squeeze().ndim == 1:
                    return data.squeeze().astype(np.float64)
        for hdu in hdul:
            if _is_image(hdu) and "CRVAL1" in hdu.header and hdu.header.get("NAXIS1"):
                return C.wcs_wavelength(hdu.header, int(hdu.header["NAXIS1"]), str(path))
    raise SpectrumFormatError(f"{path}: no wavelength column, 1-D image or WCS found")


# ------------------------------------------------------------------------------ detection


def _native(arr: np.ndarray) -> np.ndarray:
    """A copy-free view in native byte order when possible (FITS data are big-endian)."""
    if arr.dtype.byteorder not in ("=", "|"):
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _is_table(hdu) -> bool:
    return type(hdu).__name__ in ("BinTableHDU", "TableHDU")


def _is_image(hdu) -> bool:
    return type(hdu).__name__ in ("PrimaryHDU", "ImageHDU", "CompImageHDU")


def _image_shape(hdu) -> tuple[int, ...]:
    naxis = int(hdu.header.get("NAXIS", 0))
    return tuple(int(hdu.header.get(f"NAXIS{i}", 0)) for i in range(naxis, 0, -1))


def _hdu_summary(hdul) -> str:
    parts = []
    for i, hdu in enumerate(hdul):
        label = f"HDU {i}" + (f" {hdu.name!r}" if hdu.name and hdu.name != "PRIMARY" else "")
        if _is_table(hdu):
            cols = list(hdu.columns.names)
            parts.append(f"{label}: table with columns {cols[:8]}{'...' if len(cols) > 8 else ''}")
        elif _is_image(hdu):
            shape = _image_shape(hdu)
            parts.append(f"{label}: image {shape}" if shape else f"{label}: no data")
        else:
            parts.append(f"{label}: {type(hdu).__name__}")
    return "; ".join(parts)


def _classify_fits(hdul, path: Path, hdu=None) -> str:
    primary = hdul[0].header
    if hdu is None:
        if any(h.name.lower() == "input_sigma" for h in hdul):
            return "galah"
        shapes = [_image_shape(h) if _is_image(h) else None for h in hdul]
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
    candidates = [hdu] if hdu is not None else range(len(hdul))
    for i in candidates:
        try:
            h = hdul[i]
        except (KeyError, IndexError) as exc:
            raise SpectrumFormatError(f"{path}: no HDU {i!r} ({len(hdul)} HDUs)") from exc
        if _is_table(h) and C.find_name(h.columns.names, C.FLUX_NAMES):
            return "fits-table"
        if _is_image(h) and len([d for d in _image_shape(h) if d > 1]) == 1:
            return "fits-image"
    if hdu is not None:
        raise SpectrumFormatError(
            f"{path}: HDU {hdu!r} is neither a spectrum table nor a 1-D image ({_hdu_summary(hdul)})"
        )
    raise SpectrumFormatError(f"{path}: not a recognised spectrum file (FITS: {_hdu_summary(hdul)})")


def detect_format(path, *, hdu=None) -> str:
    """The :data:`FORMATS` name of a spectrum file, from its content (and name for text files).

    Raises:
        SpectrumFormatError: the file is missing, empty, corrupt, or none of the formats.
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


# ------------------------------------------------------------------------------ assembling


def _choose_medium(medium, detected, meta) -> str:
    """Explicit argument > what the file says > assumed vacuum (flagged in meta)."""
    if medium is not None:
        meta["medium_source"] = "argument"
        return str(medium).lower()
    if detected is not None:
        meta["medium_source"] = "file"
        return detected
    meta["medium_source"] = "assumed"
    meta["medium_assumed"] = True
    return "vacuum"


def _rows(arr, k, n, what, where):
    """Broadcast a 1-D ``(n,)`` or 2-D ``(k, n)`` array to k rows, or None."""
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.ndim == 1 and a.size == n:
        return np.broadcast_to(a, (k, n))
    if a.shape == (k, n):
        return a
    raise SpectrumFormatError(f"{where}: {what} has shape {a.shape}, flux has {(k, n) if k > 1 else (n,)}")


def _optional_arrays(lookup) -> dict:
    """The optional per-pixel arrays of :func:`_assemble`, each found by ``lookup(candidate names)``
    (None when absent)."""
    return {
        "ivar": lookup(C.IVAR_NAMES),
        "var": lookup(C.VARIANCE_NAMES),
        "err": lookup(C.ERROR_NAMES),
        "mask": lookup(C.MASK_NAMES),
        "good": lookup(C.GOOD_MASK_NAMES),
        "segment": lookup(C.SEGMENT_NAMES),
    }


def _assemble(
    where: str,
    *,
    wave,
    flux,
    ivar=None,
    var=None,
    err=None,
    mask=None,
    good=None,
    segment=None,
    medium: str,
    ids,
    meta: dict,
    estimate: bool,
) -> list[Spectrum]:
    """Spectra from 1-D or 2-D (k, n) arrays; uncertainties as ivar, variance or error."""
    flux = np.asarray(flux, dtype=np.float64)
    if flux.ndim == 1:
        flux = flux[None, :]
    if flux.ndim != 2:
        raise SpectrumFormatError(f"{where}: flux must be 1-D or 2-D (n_spectra, n_pixels), got shape {flux.shape}")
    k, n = flux.shape
    wave = _rows(np.asarray(wave, dtype=np.float64), k, n, "wavelength", where)
    ivar, var, err, mask, good, segment = (
        _rows(a, k, n, name, where)
        for a, name in (
            (ivar, "ivar"),
            (var, "variance"),
            (err, "error"),
            (mask, "mask"),
            (good, "good mask"),
            (segment, "segment"),
        )
    )
    out = []
    for i in range(k):
        m = dict(meta)
        if ivar is not None:
            iv, bad = np.asarray(ivar[i], dtype=np.float64), None
        elif var is not None:
            iv, bad = C.ivar_from_error(np.sqrt(np.where(var[i] >= 0, var[i], np.nan)))
        elif err is not None:
            iv, bad = C.ivar_from_error(err[i])
        else:
            if not estimate:
                raise SpectrumFormatError(f"{where}: no uncertainties (no ivar/error/variance column or HDU)")
            sigma = C.der_snr_noise(flux[i])
            if not np.isfinite(sigma) or sigma <= 0:
                raise SpectrumFormatError(f"{where}: no uncertainties in the file and the noise cannot be estimated")
            iv, bad = np.full(n, 1.0 / sigma**2), None
            m["ivar_estimated"] = "DER_SNR"
            m["noise_estimate"] = sigma
        bad_mask = np.zeros(n, dtype=bool)
        if bad is not None:
            bad_mask |= bad
            m["n_bad_input"] = int(m.get("n_bad_input", 0)) + int(np.sum(bad & np.isfinite(flux[i])))
        if mask is not None:
            bad_mask |= np.asarray(mask[i]) != 0
        if good is not None:
            bad_mask |= np.asarray(good[i]) == 0
        seg = None if segment is None else np.asarray(segment[i])
        if seg is not None and seg.dtype.kind == "f":
            seg = seg.astype(np.int64)
        spec_id = ids[i] if ids is not None and i < len(ids) else ""
        out.append(
            Spectrum(wave[i], flux[i], iv, mask=bad_mask, medium=medium, id=spec_id, source=where, segment=seg, meta=m)
        )
    return out


def _default_ids(stem: str, k: int, given=None) -> list[str]:
    if given is not None:
        vals = [str(C.plain(v)) for v in np.atleast_1d(given)]
        if len(vals) == k:
            return vals
        if len(vals) == 1 and k == 1:
            return vals
    return [stem] if k == 1 else [f"{stem}_{i}" for i in range(k)]


# ------------------------------------------------------------------------------ generic FITS


def _read_fits_table(
    path: Path, *, wavelength=None, hdu=None, medium=None, estimate_missing_errors=True, **_
) -> list[Spectrum]:
    with C.open_fits(path) as hdul:
        primary = hdul[0].header
        candidates = [hdu] if hdu is not None else range(len(hdul))
        for i in candidates:
            try:
                h = hdul[i]
            except (KeyError, IndexError) as exc:
                raise SpectrumFormatError(f"{path}: no HDU {i!r} ({len(hdul)} HDUs)") from exc
            if not _is_table(h):
                if hdu is not None:
                    raise SpectrumFormatError(f"{path}: HDU {hdu!r} is not a table")
                continue
            names = h.columns.names
            fcol = C.find_name(names, C.FLUX_NAMES)
            wcol = C.find_name(names, C.WAVELENGTH_NAMES)
            if fcol is None or (wcol is None and wavelength is None):
                if hdu is not None:
                    missing = "flux" if fcol is None else "wavelength"
                    raise SpectrumFormatError(f"{path}: HDU {hdu!r} has no {missing} column (columns {names})")
                continue
            data = C.hdu_data(h, path, i)
            if data is None or len(data) == 0:
                raise SpectrumFormatError(f"{path}: table HDU {i} is empty")

            def col(candidates_, data=data, names=names):
                name = C.find_name(names, candidates_)
                return None if name is None else _native(np.asarray(data[name]))

            flux = np.asarray(data[fcol], dtype=np.float64)
            meta = {"format": "fits-table", "hdu": i}
            meta.update(C.header_values(primary, _GENERIC_CARDS))
            meta.update(C.header_values(h.header, _GENERIC_CARDS))
            if h.columns[fcol].unit:
                meta["flux_unit"] = str(h.columns[fcol].unit)
            detected = None
            if wcol is not None:
                wave = np.asarray(data[wcol], dtype=np.float64)
                if wcol.lower().startswith("log"):
                    wave = 10.0**wave
                else:
                    wave = wave * C.length_unit_factor(h.columns[wcol].unit, str(path))
                lname = wcol.lower()
                detected = "air" if "air" in lname else "vacuum" if "vac" in lname else None
                meta["wavelength_source"] = f"column {wcol}"
            else:
                wave = wavelength
                meta["wavelength_source"] = "argument"
            detected = detected or C.medium_from_header(h.header) or C.medium_from_header(primary)
            # scalar columns → one spectrum of len(table) pixels; vector cells → one spectrum per row
            C.check_wavelength_plausible(np.asarray(wave, dtype=np.float64), str(path), f"column {wcol}")
            id_col = col(_ID_KEYS)
            stem_id = next(
                (str(C.plain(primary[c])) for c in _ID_CARDS if c in primary and C.plain(primary[c])), path.stem
            )
            n_spectra = 1 if flux.ndim == 1 else flux.shape[0]
            return _assemble(
                str(path),
                wave=wave,
                flux=flux,
                **_optional_arrays(col),
                medium=_choose_medium(medium, detected, meta),
                ids=_default_ids(stem_id, n_spectra, id_col),
                meta=meta,
                estimate=estimate_missing_errors,
            )
        raise SpectrumFormatError(f"{path}: no table with wavelength and flux columns ({_hdu_summary(hdul)})")


def _classify_extra_hdu(name: str, dtype) -> str | None:
    lname = name.lower()
    if "ivar" in lname or "invvar" in lname or "inverse" in lname:
        return "ivar"
    if "var" in lname:
        return "var"
    if any(t in lname for t in ("err", "sig", "unc", "noise", "std")):
        return "err"
    if any(t in lname for t in ("mask", "flag", "bad", "qual")) or dtype.kind in "biu":
        return "mask"
    if any(t in lname for t in ("wave", "lambda", "wl")):
        return "wave"
    return None


def _read_fits_image(
    path: Path, *, wavelength=None, hdu=None, medium=None, estimate_missing_errors=True, **_
) -> list[Spectrum]:
    with C.open_fits(path) as hdul:
        primary = hdul[0].header
        if hdu is not None:
            try:
                idx = hdul.index_of(hdu)
            except (KeyError, IndexError) as exc:
                raise SpectrumFormatError(f"{path}: no HDU {hdu!r} ({len(hdul)} HDUs)") from exc
        else:
            candidates = [
                i
                for i, h in enumerate(hdul)
                if _is_image(h)
                and len([d for d in _image_shape(h) if d > 1]) == 1
                and _classify_extra_hdu(h.name, np.dtype("f8")) is None
            ]
            if not candidates:
                raise SpectrumFormatError(f"{path}: no 1-D image HDU ({_hdu_summary(hdul)})")
            # prefer an HDU named like flux, then one with a WCS, then the longest; ties: first
            idx = min(
                candidates,
                key=lambda i: (
                    hdul[i].name.lower() not in C.FLUX_NAMES + ("sci", "science"),
                    "CRVAL1" not in hdul[i].header,
                    -int(np.prod(_image_shape(hdul[i]))),
                    i,
                ),
            )
        flux = C.hdu_data(hdul[idx], path, idx)
        if flux is None or flux.squeeze().ndim != 1:
            raise SpectrumFormatError(
                f"{path}: HDU {idx} is not a 1-D spectrum (shape {None if flux is None else flux.shape})"
            )
        flux = flux.squeeze().astype(np.float64)
        n = flux.size
        extras: dict[str, np.ndarray] = {}
        for j, h in enumerate(hdul):
            if j == idx or not _is_image(h) or int(np.prod(_image_shape(h) or (0,))) != n:
                continue
            data = C.hdu_data(h, path, j)
            role = _classify_extra_hdu(h.name if h.name != "PRIMARY" else "", data.dtype)
            if role is None and j == idx + 1 and data.dtype.kind == "f":
                role = "err"  # the common "flux, then its error" layout with unnamed HDUs
            if role and role not in extras:
                extras[role] = data.reshape(-1)
        header = hdul[idx].header
        meta = {"format": "fits-image", "hdu": idx}
        meta.update(C.header_values(primary, _GENERIC_CARDS))
        meta.update(C.header_values(header, _GENERIC_CARDS))
        if header.get("BUNIT"):
            meta["flux_unit"] = C.plain(header["BUNIT"])
        if "wave" in extras:
            wave = extras["wave"].astype(np.float64)
            meta["wavelength_source"] = "wavelength HDU"
        else:
            wave = C.wcs_wavelength(header, n, str(path))
            if wave is None and idx != 0:
                wave = C.wcs_wavelength(primary, n, str(path))
            meta["wavelength_source"] = "WCS"
            if wave is None:
                if wavelength is None:
                    raise SpectrumFormatError(
                        f"{path}: no wavelength solution (no CRVAL1/CDELT1 WCS or wavelength HDU); pass wavelength="
                    )
                wave = wavelength
                meta["wavelength_source"] = "argument"
        detected = C.medium_from_header(header) or C.medium_from_header(primary)
        stem_id = next(
            (str(C.plain(primary[c])) for c in _ID_CARDS if c in primary and C.plain(primary[c])), path.stem
        )
    return _assemble(
        str(path),
        wave=wave,
        flux=flux,
        ivar=extras.get("ivar"),
        var=extras.get("var"),
        err=extras.get("err"),
        mask=extras.get("mask"),
        medium=_choose_medium(medium, detected, meta),
        ids=[stem_id],
        meta=meta,
        estimate=estimate_missing_errors,
    )


# ------------------------------------------------------------------------------ npz and text


def _read_npz(path: Path, *, wavelength=None, medium=None, estimate_missing_errors=True, **_) -> list[Spectrum]:
    with C.open_npz(path) as z:
        keys = list(z.files)
        get = lambda cands: None if (k := C.find_name(keys, cands)) is None else np.asarray(z[k])  # noqa: E731
        fkey = C.find_name(keys, C.FLUX_NAMES)
        if fkey is None:
            raise SpectrumFormatError(f"{path}: no flux array among keys {keys}")
        flux = np.asarray(z[fkey], dtype=np.float64)
        wkey = C.find_name(keys, C.WAVELENGTH_NAMES)
        meta: dict[str, Any] = {"format": "npz"}
        detected = None
        if wkey is not None:
            wave = np.asarray(z[wkey], dtype=np.float64)
            wave = 10.0**wave if wkey.lower().startswith("log") else wave
            detected = "air" if "air" in wkey.lower() else "vacuum" if "vac" in wkey.lower() else None
            meta["wavelength_source"] = f"key {wkey}"
        elif wavelength is not None:
            wave = wavelength
            meta["wavelength_source"] = "argument"
        else:
            raise SpectrumFormatError(f"{path}: no wavelength array among keys {keys}; pass wavelength=")
        if "medium" in keys:
            stored = str(np.asarray(z["medium"]).reshape(-1)[0]).strip().lower()
            if stored in ("air", "vacuum"):
                detected = stored
        arrays = _optional_arrays(get)
        given_ids = get(_ID_KEYS)
    C.check_wavelength_plausible(np.asarray(wave, dtype=np.float64), str(path), "the wavelength array")
    k = 1 if flux.ndim == 1 else flux.shape[0]
    return _assemble(
        str(path),
        wave=wave,
        flux=flux,
        medium=_choose_medium(medium, detected, meta),
        ids=_default_ids(path.stem, k, given_ids),
        meta=meta,
        estimate=estimate_missing_errors,
        **arrays,
    )


def _read_text(path: Path, *, wavelength=None, medium=None, estimate_missing_errors=True, **_) -> list[Spectrum]:
    with open(path, encoding="utf-8", errors="strict") as fh:
        lines = fh.read().splitlines()
    comment_names, names, start = None, None, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            comment_names = stripped.lstrip("#").replace(",", " ").split()
            continue
        start = i
        break
    if start is None:
        raise SpectrumFormatError(f"{path}: text file holds no data rows")
    delimiter = "," if "," in lines[start] else None
    first = [t.strip() for t in lines[start].split(delimiter)]

    def numeric(token):
        try:
            float(token)
            return True
        except ValueError:
            return False

    if not all(numeric(t) for t in first):
        names, start = first, start + 1
    body = [ln for ln in lines[start:] if ln.strip() and not ln.lstrip().startswith("#")]
    try:
        table = np.loadtxt(io.StringIO("\n".join(body)), delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise SpectrumFormatError(f"{path}: not a numeric table ({str(exc).splitlines()[0]})") from exc
    ncol = table.shape[1]
    if (
        names is None
        and comment_names is not None
        and len(comment_names) == ncol
        and not all(numeric(t) for t in comment_names)
    ):
        names = comment_names
    if names is not None and len(names) != ncol:
        raise SpectrumFormatError(f"{path}: header names {names} but {ncol} data columns")
    meta: dict[str, Any] = {"format": "text"}
    detected = None
    if names is None:
        if ncol not in (2, 3):
            raise SpectrumFormatError(
                f"{path}: {ncol} unnamed columns; add a header line naming them (wavelength flux error ...)"
            )
        names = ["wavelength", "flux", "error"][:ncol]
    lower = [n.lower() for n in names]
    column = lambda cands: None if (c := C.find_name(lower, cands)) is None else table[:, lower.index(c)]  # noqa: E731
    fname = C.find_name(lower, C.FLUX_NAMES)
    if fname is None:
        raise SpectrumFormatError(f"{path}: no flux column among {names}")
    wname = C.find_name(lower, C.WAVELENGTH_NAMES)
    if wname is not None:
        wave = table[:, lower.index(wname)]
        wave = 10.0**wave if wname.startswith("log") else wave
        detected = "air" if "air" in wname else "vacuum" if "vac" in wname else None
        meta["wavelength_source"] = f"column {wname}"
    elif wavelength is not None:
        wave = wavelength
        meta["wavelength_source"] = "argument"
    else:
        raise SpectrumFormatError(f"{path}: no wavelength column among {names}; pass wavelength=")
    C.check_wavelength_plausible(np.asarray(wave, dtype=np.float64), str(path), "the wavelength column")
    return _assemble(
        str(path),
        wave=wave,
        flux=table[:, lower.index(fname)],
        **_optional_arrays(column),
        medium=_choose_medium(medium, detected, meta),
        ids=[path.stem],
        meta=meta,
        estimate=estimate_missing_errors,
    )


# ------------------------------------------------------------------------------ survey adapters


def _apstar(path, *, medium=None, visits=False, pixmask_bits=None, keep_gaps=False, **_):
    return surveys.read_apstar(path, visits=visits, pixmask_bits=pixmask_bits, keep_gaps=keep_gaps, medium=medium)


def _apvisit(path, *, medium=None, pixmask_bits=None, keep_gaps=False, **_):
    return surveys.read_apvisit(path, pixmask_bits=pixmask_bits, keep_gaps=keep_gaps, medium=medium)


def _galah(path, *, medium=None, relative_sigma=True, **_):
    return [surveys.read_galah_ccd(path, relative_sigma=relative_sigma, medium=medium)]


def _binspec(path, *, wavelength=None, medium=None, **_):
    return surveys.read_binspec(path, wavelength, medium=medium)


_READERS = {
    "apstar": _apstar,
    "apvisit": _apvisit,
    "galah": _galah,
    "fits-table": _read_fits_table,
    "fits-image": _read_fits_image,
    "binspec": _binspec,
    "npz": _read_npz,
    "text": _read_text,
}
_GENERIC = ("fits-table", "fits-image")

#: Exceptions from numpy/astropy internals that mean "this file is broken", turned into one-liners.
_FILE_ERRORS = (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, zipfile.BadZipFile, UnicodeDecodeError)


def _check_options(format, kw) -> str | None:
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
        spectrum per row, npz with 2-D flux).

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
    fmt = _check_options(format, kw)
    if medium is not None and str(medium).lower() not in ("vacuum", "air"):
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


def read_spectra(paths, *, on_error: str = "raise", group_galah: bool = True, **kw) -> SpectrumList:
    """Read many files (as given to ``jaxpayne fit SPECTRUM...``) into one flat list.

    GALAH CCD files of the same star (same directory and sobject_id, i.e. the file name without its
    last digit) are combined into one multi-segment spectrum, placed where its first CCD was.

    Args:
        paths: file paths (a single path is accepted too).
        on_error: ``"raise"`` stops at the first bad file; ``"warn"`` skips it with a
            :class:`SpectrumReadWarning`; ``"skip"`` skips it silently. Skipped files are listed in
            the result's ``.failures`` as ``(path, message)``, so one bad file never spoils a batch.
        group_galah: combine GALAH CCDs of one star (default True).
        **kw: passed to :func:`read_spectrum` (``format``, ``wavelength``, ``medium``, options). A
            ``wavelength`` file is read once for the whole batch.

    Returns:
        A :class:`SpectrumList` (a list of spectra with a ``.failures`` attribute).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    kw = _batch_options(on_error, kw)
    spectra: list[Spectrum] = []
    failures: list[tuple[str, str]] = []

    def fail(path, exc):
        if on_error == "raise":
            raise exc
        failures.append((str(path), str(exc)))
        if on_error == "warn":
            warnings.warn(str(exc), SpectrumReadWarning, stacklevel=3)

    for path in paths:
        try:
            spectra.extend(read_spectrum(path, **kw))
        except SpectrumFormatError as exc:
            fail(path, exc)
    if not group_galah:
        return SpectrumList(spectra, failures)
    groups: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(spectra):
        key = surveys.galah_group_key(s)
        if key is not None:
            groups.setdefault(key, []).append(i)
    out: list[Spectrum] = []
    for i, s in enumerate(spectra):
        key = surveys.galah_group_key(s)
        members = groups.get(key, [i]) if key is not None else [i]
        if len(members) == 1:
            out.append(s)
        elif i == members[0]:
            try:
                out.append(surveys.combine_galah([spectra[j] for j in members]))
            except SpectrumFormatError as exc:
                for j in members:
                    fail(spectra[j].source, exc)
    return SpectrumList(out, failures)


def iter_spectra(
    paths, *, on_error: str = "skip", wavelength=None, group_galah: bool = True, **kw
) -> Iterator[Spectrum | ReadFailure]:
    """Read files lazily, one at a time: the streaming form of :func:`read_spectra`.

    Made for survey-sized inputs (``jaxpayne fit`` uses it): a file is read only when the consumer
    asks for its spectra, so :func:`jaxpayne.fitting.fit_spectra` starts fitting after the first
    batch, and only the spectra of the current file (or of the current GALAH star's CCDs) are held
    here. Arguments are checked (and a ``wavelength`` file loaded) at the call, before any file is
    read.

    GALAH CCD files of one star are combined as in :func:`read_spectra`. For that they must be
    read one after the other: files named ``<sobject_id><ccd>.fits`` in the same directory are
    therefore moved up next to the first of them; every other file keeps its place. CCD spectra of
    one star (same directory and sobject_id) read in a row are combined; a broken group (e.g. the
    same CCD twice) gives a failure for each of its files.

    Args:
        paths: file paths (a single path is accepted too); with ``group_galah`` they are
            gathered into a list first (paths only, no data).
        on_error: ``"skip"`` yields a :class:`ReadFailure` in place of a bad file; ``"warn"``
            does the same and also emits a :class:`SpectrumReadWarning`; ``"raise"`` raises the
            :class:`SpectrumFormatError` when the bad file is reached.
        wavelength: wavelength grid [Å] for files that carry none (array or file, loaded once).
        group_galah: combine the CCDs of one GALAH star (default True).
        **kw: passed to :func:`read_spectrum` (``format``, ``medium``, options).

    Returns:
        An iterator over :class:`Spectrum` objects and, in input order among them, a
        :class:`ReadFailure` for each file that could not be read (keep the
        ``isinstance(item, Spectrum)`` items for spectra only).

    Example:
        >>> for item in iter_spectra(paths):  # doctest: +SKIP
        ...     if isinstance(item, ReadFailure):
        ...         print("skipped", item.message)
    """
    kw = _batch_options(on_error, dict(kw, wavelength=wavelength))
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if group_galah:
        paths = _galah_ccds_together(paths)
    return _iter_spectra(paths, on_error, group_galah, kw)


def _batch_options(on_error: str, kw: dict) -> dict:
    """Check the arguments of a many-file read; load a ``wavelength`` file once for all."""
    if on_error not in ("raise", "warn", "skip"):
        raise ValueError(f"on_error must be 'raise', 'warn' or 'skip', got {on_error!r}")
    _check_options(
        kw.get("format"), {k: v for k, v in kw.items() if k not in ("format", "wavelength", "hdu", "medium")}
    )
    if kw.get("wavelength") is not None:
        kw = dict(kw, wavelength=load_wavelength(kw["wavelength"]))
    return kw


def _galah_ccds_together(paths) -> list:
    """``paths`` in order, except that GALAH CCD files of one star (same directory and sobject_id
    in the file name) are moved up to follow the first of them."""
    groups: dict[Any, list] = {}
    for i, path in enumerate(paths):
        parts = C.galah_name_parts(path) if isinstance(path, (str, os.PathLike)) else None
        key = (str(Path(path).absolute().parent), parts[0]) if parts else i
        groups.setdefault(key, []).append(path)
    return [path for group in groups.values() for path in group]


def _iter_spectra(paths, on_error: str, group_galah: bool, kw: dict) -> Iterator[Spectrum | ReadFailure]:
    star: list[Spectrum] = []  # CCD spectra of one GALAH star read in a row, not yet combined

    def failure(source, exc) -> ReadFailure:
        if on_error == "raise":
            raise exc
        if on_error == "warn":
            warnings.warn(str(exc), SpectrumReadWarning, stacklevel=3)
        return ReadFailure(str(source), str(exc))

    def finish_star():
        ccds = star.copy()
        star.clear()
        if len(ccds) == 1:
            yield ccds[0]
        elif ccds:
            try:
                yield surveys.combine_galah(ccds)
            except SpectrumFormatError as exc:
                for ccd in ccds:
                    yield failure(ccd.source, exc)

    for path in paths:
        try:
            spectra = read_spectrum(path, **kw)
        except SpectrumFormatError as exc:  # named as the spectra read from it would be
            yield failure(Path(path) if isinstance(path, (str, os.PathLike)) else path, exc)
            continue
        for spectrum in spectra:
            key = surveys.galah_group_key(spectrum) if group_galah else None
            if star and key != surveys.galah_group_key(star[0]):
                yield from finish_star()
            if key is None:
                yield spectrum
            else:
                star.append(spectrum)
    yield from finish_star()


# ------------------------------------------------------------------------------ specutils


def from_specutils(obj, *, medium: str | None = None, id: str | None = None, source: str = "") -> Spectrum:
    """Convert a specutils ``Spectrum``/``Spectrum1D`` (or any look-alike) to a :class:`Spectrum`.

    Duck-typed, specutils need not be installed: ``obj.spectral_axis`` (Quantity in any spectral
    unit: length, frequency, energy or wavenumber → Å), ``obj.flux`` (Quantity; values kept in its
    unit, recorded in ``meta["flux_unit"]``), ``obj.uncertainty`` (astropy ``StdDevUncertainty``,
    ``VarianceUncertainty`` or ``InverseVariance``: read from ``uncertainty_type`` or the class
    name, ``.array`` converted to the flux unit when it has its own), ``obj.mask`` (True = bad,
    the NDData convention, same as ours) and ``obj.meta``.

    Args:
        obj: the spectrum object (1-D flux; slice a multi-spectrum object first).
        medium: medium of the spectral axis; specutils does not record it, so default vacuum with
            ``meta["medium_assumed"] = True``.
        id: name; default ``meta["OBJECT"]``/``meta["header"]["OBJECT"]`` or ``""``.
        source: provenance string.

    Returns:
        The spectrum.
    """
    where = source or (f"spectrum {id!r}" if id else "specutils spectrum")
    for attr in ("spectral_axis", "flux"):
        if not hasattr(obj, attr):
            raise SpectrumFormatError(f"{where}: object of type {type(obj).__name__} has no {attr!r}")
    wave = _to_angstrom(obj.spectral_axis, where, "spectral_axis")
    flux_q = obj.flux
    flux = np.asarray(getattr(flux_q, "value", flux_q), dtype=np.float64)
    flux_unit = getattr(flux_q, "unit", None)
    if flux.ndim != 1:
        raise SpectrumFormatError(f"{where}: flux has shape {flux.shape}; pass one spectrum (e.g. spec[i])")
    unc = getattr(obj, "uncertainty", None)
    if unc is None:
        raise SpectrumFormatError(f"{where}: no uncertainty; set spectrum.uncertainty (StdDevUncertainty, ...)")
    kind = str(getattr(unc, "uncertainty_type", "") or "").lower()
    if not kind:
        cls = type(unc).__name__.lower()
        kind = "ivar" if "inverse" in cls else "var" if "variance" in cls else "std" if "std" in cls else ""
    power = {"std": 1, "var": 2, "ivar": -2}.get(kind)
    if power is None:
        raise SpectrumFormatError(
            f"{where}: unsupported uncertainty type {type(unc).__name__!r} (need std, var or ivar)"
        )
    values = np.asarray(getattr(unc, "array", unc), dtype=np.float64)
    unc_unit = getattr(unc, "unit", None)
    if unc_unit is not None and flux_unit is not None:
        try:
            values = values * float((unc_unit / flux_unit**power).decompose().to(""))
        except Exception as exc:  # astropy UnitConversionError and friends
            raise SpectrumFormatError(
                f"{where}: uncertainty unit {unc_unit} incompatible with flux unit {flux_unit}"
            ) from exc
    if values.shape != flux.shape:
        raise SpectrumFormatError(f"{where}: uncertainty has shape {values.shape}, flux {flux.shape}")
    meta: dict[str, Any] = {"format": "specutils"}
    raw_meta = getattr(obj, "meta", None) or {}
    header = raw_meta.get("header") if hasattr(raw_meta, "get") else None
    for source_map in (header, raw_meta):
        if source_map is None or not hasattr(source_map, "items"):
            continue
        for key, value in source_map.items():
            value = C.plain(value)
            if isinstance(value, (bool, int, float, str)) and key and key not in meta:
                meta[str(key)] = value
    if flux_unit is not None:
        meta["flux_unit"] = str(flux_unit)
    spec_id = id if id is not None else str(meta.get("OBJECT", meta.get("OBJID", "")))
    chosen = _choose_medium(medium, None, meta)
    mask = getattr(obj, "mask", None)
    if kind == "ivar":
        ivar, invalid = values, None
    else:
        ivar, invalid = C.ivar_from_error(values if kind == "std" else np.sqrt(np.where(values >= 0, values, np.nan)))
        meta["n_bad_input"] = int(np.sum(invalid & np.isfinite(flux)))
    bad = np.zeros(flux.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask) != 0, flux.shape)
    if invalid is not None:
        bad = bad | invalid
    return Spectrum(wave, flux, ivar, mask=bad, medium=chosen, id=spec_id, source=source, meta=meta)
