"""Generic spectrum files: FITS binary tables and 1-D images, numpy ``.npz``, text tables, specutils
objects, and wavelength grids.

Columns, keys and HDUs are found by name (case-insensitive, in the order of preference of the
``*_NAMES`` lists in :mod:`jaxpayne.io._common`); uncertainties may be given as inverse variance,
variance or 1σ error, and are estimated with DER_SNR (flagged in ``meta``) when a file has none.
The medium comes from the file (``CTYPE1``, ``AIRORVAC``/``VACUUM`` cards, ``_air``/``_vac``
names) or the ``medium=`` argument, else vacuum is assumed and ``meta["medium_assumed"]`` is set.
Generic files do not record a velocity frame: their spectra have ``frame = None``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from jaxpayne.io import _common as C
from jaxpayne.io.spectrum import Spectrum, SpectrumFormatError, _to_angstrom

__all__ = [
    "from_specutils",
    "load_wavelength",
    "read_fits_image",
    "read_fits_table",
    "read_npz",
    "read_text",
]

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
#: Primary-header cards naming the object, in order of preference (id of a table spectrum).
_ID_CARDS = ("OBJID", "OBJECT", "OBJNAME", "APOGEE_ID", "TARGET", "NAME")
#: Table column / npz key names holding spectrum ids.
_ID_KEYS = ("id", "ids", "objid", "object", "name", "names", "star", "apogee_id")


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
            if C.is_table(hdu):
                col = C.find_name(hdu.columns.names, C.WAVELENGTH_NAMES)
                if col is not None:
                    data = np.asarray(C.hdu_data(hdu, path, i)[col], dtype=np.float64).ravel()
                    return (
                        10.0**data
                        if col.lower().startswith("log")
                        else data * C.length_unit_factor(hdu.columns[col].unit, str(path))
                    )
        for i, hdu in enumerate(hdul):
            if C.is_image(hdu):
                data = C.hdu_data(hdu, path, i)
                if data is not None and data.squeeze().ndim == 1:
                    return data.squeeze().astype(np.float64)
        for hdu in hdul:
            if C.is_image(hdu) and "CRVAL1" in hdu.header and hdu.header.get("NAXIS1"):
                return C.wcs_wavelength(hdu.header, int(hdu.header["NAXIS1"]), str(path))
    raise SpectrumFormatError(f"{path}: no wavelength column, 1-D image or WCS found")


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


def _wavelengths(path: Path, name, values, wavelength, meta: dict, *, what: str, unit=None, among: str = ""):
    """Wavelengths [Å] from a named column/key, else from the ``wavelength=`` grid.

    Args:
        path: the file, for messages.
        name: the wavelength column/key found (``log…`` names hold log10 λ/Å), or None.
        values: its values (ignored when ``name`` is None).
        wavelength: the ``wavelength=`` grid [Å] (already loaded), or None.
        meta: receives ``wavelength_source``.
        what: ``"column"`` or ``"key"``.
        unit: the column's length unit (TUNIT) for a linear column; None = Å.
        among: the names searched, for the error when there is neither.

    Returns:
        ``(wave, medium)``: the wavelengths (checked to be plausible) and ``"air"``/``"vacuum"``
        when the name says (``…_air``, ``…vac…``), else None.
    """
    if name is None:
        if wavelength is None:
            raise SpectrumFormatError(f"{path}: no wavelength {what} among {among}; pass wavelength=")
        meta["wavelength_source"] = "argument"
        return wavelength, None
    lname = str(name).lower()
    wave = np.asarray(values, dtype=np.float64)
    wave = 10.0**wave if lname.startswith("log") else wave * C.length_unit_factor(unit, str(path))
    C.check_wavelength_plausible(wave, str(path), f"{what} {name}")
    meta["wavelength_source"] = f"{what} {name}"
    return wave, "air" if "air" in lname else "vacuum" if "vac" in lname else None


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
    id_stem: str,
    given_ids=None,
    meta: dict,
    estimate: bool,
) -> list[Spectrum]:
    """Spectra from 1-D or 2-D (k, n) arrays; uncertainties as ivar, variance or error.

    Ids are ``given_ids`` when there is one per spectrum, else ``id_stem`` (one spectrum) or
    ``<id_stem>_<i>``.
    """
    flux = np.asarray(flux, dtype=np.float64)
    if flux.ndim == 1:
        flux = flux[None, :]
    if flux.ndim != 2:
        raise SpectrumFormatError(f"{where}: flux must be 1-D or 2-D (n_spectra, n_pixels), got shape {flux.shape}")
    k, n = flux.shape
    ids = _default_ids(id_stem, k, given_ids)
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
        out.append(
            Spectrum(wave[i], flux[i], iv, mask=bad_mask, medium=medium, id=ids[i], source=where, segment=seg, meta=m)
        )
    return out


def _default_ids(stem: str, k: int, given=None) -> list[str]:
    """k spectrum ids: ``given`` if it has k (or, for k = 1, one) entries, else from ``stem``."""
    if given is not None:
        vals = [str(C.plain(v)) for v in np.atleast_1d(given)]
        if len(vals) == k:
            return vals
        if len(vals) == 1 and k == 1:
            return vals
    return [stem] if k == 1 else [f"{stem}_{i}" for i in range(k)]


# ------------------------------------------------------------------------------ generic FITS


def _header_id(primary, path: Path) -> str:
    """The object name from the first set :data:`_ID_CARDS` card of a primary header, else the stem."""
    return next((str(C.plain(primary[c])) for c in _ID_CARDS if c in primary and C.plain(primary[c])), path.stem)


def read_fits_table(
    path: Path, *, wavelength=None, hdu=None, medium=None, estimate_missing_errors=True, **_
) -> list[Spectrum]:
    """Read the first FITS table with a flux and a wavelength column (or ``wavelength=``).

    Scalar columns give one spectrum of ``len(table)`` pixels; vector cells give one spectrum per
    row (ids from an ``id``/``objid``/``name`` column, else the primary header's object cards or
    the file stem).

    Args:
        path: the file.
        wavelength: ``(n,)`` grid [Å] for a file that carries none (already loaded), or None.
        hdu: index or EXTNAME of the HDU to read, or None to search.
        medium: medium of the file's wavelengths when it does not say (see module docstring).
        estimate_missing_errors: estimate the noise with DER_SNR when the file has no
            uncertainties (``meta["ivar_estimated"]``); False raises instead.
        **_: options of other formats, ignored.

    Returns:
        The spectra (``meta["format"] = "fits-table"``, ``meta["hdu"]``).
    """
    with C.open_fits(path) as hdul:
        primary = hdul[0].header
        candidates = [hdu] if hdu is not None else range(len(hdul))
        for i in candidates:
            h = C.get_hdu(hdul, i, path)
            if not C.is_table(h):
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
                return None if name is None else C.native(np.asarray(data[name]))

            flux = np.asarray(data[fcol], dtype=np.float64)
            meta = {"format": "fits-table", "hdu": i}
            meta.update(C.header_values(primary, _GENERIC_CARDS))
            meta.update(C.header_values(h.header, _GENERIC_CARDS))
            if h.columns[fcol].unit:
                meta["flux_unit"] = str(h.columns[fcol].unit)
            wave, detected = _wavelengths(
                path,
                wcol,
                None if wcol is None else data[wcol],
                wavelength,
                meta,
                what="column",
                unit=None if wcol is None else h.columns[wcol].unit,
            )
            detected = detected or C.medium_from_header(h.header) or C.medium_from_header(primary)
            # scalar columns → one spectrum of len(table) pixels; vector cells → one spectrum per row
            id_col = col(_ID_KEYS)
            return _assemble(
                str(path),
                wave=wave,
                flux=flux,
                **_optional_arrays(col),
                medium=_choose_medium(medium, detected, meta),
                id_stem=_header_id(primary, path),
                given_ids=id_col,
                meta=meta,
                estimate=estimate_missing_errors,
            )
        raise SpectrumFormatError(f"{path}: no table with wavelength and flux columns ({C.hdu_summary(hdul)})")


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


def read_fits_image(
    path: Path, *, wavelength=None, hdu=None, medium=None, estimate_missing_errors=True, **_
) -> list[Spectrum]:
    """Read a 1-D FITS image spectrum, its wavelengths from a WCS or a wavelength HDU.

    Other 1-D HDUs of the same length are taken as ivar, variance, 1σ error or mask by their
    EXTNAME (an unnamed float HDU right after the flux is its error); see
    :func:`jaxpayne.io._common.wcs_wavelength` for the WCS forms. Arguments as for
    :func:`read_fits_table` (``hdu`` selects the flux HDU).

    Returns:
        A one-element list (``meta["format"] = "fits-image"``, ``meta["hdu"]``).
    """
    with C.open_fits(path) as hdul:
        primary = hdul[0].header
        if hdu is not None:
            idx = hdul.index_of(C.get_hdu(hdul, hdu, path))
        else:
            candidates = [
                i
                for i, h in enumerate(hdul)
                if C.is_image(h)
                and len([d for d in C.image_shape(h) if d > 1]) == 1
                and _classify_extra_hdu(h.name, np.dtype("f8")) is None
            ]
            if not candidates:
                raise SpectrumFormatError(f"{path}: no 1-D image HDU ({C.hdu_summary(hdul)})")
            # prefer an HDU named like flux, then one with a WCS, then the longest; ties: first
            idx = min(
                candidates,
                key=lambda i: (
                    hdul[i].name.lower() not in C.FLUX_NAMES + ("sci", "science"),
                    "CRVAL1" not in hdul[i].header,
                    -int(np.prod(C.image_shape(hdul[i]))),
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
            if j == idx or not C.is_image(h) or int(np.prod(C.image_shape(h) or (0,))) != n:
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
        id_stem = _header_id(primary, path)
    return _assemble(
        str(path),
        wave=wave,
        flux=flux,
        ivar=extras.get("ivar"),
        var=extras.get("var"),
        err=extras.get("err"),
        mask=extras.get("mask"),
        medium=_choose_medium(medium, detected, meta),
        id_stem=id_stem,
        meta=meta,
        estimate=estimate_missing_errors,
    )


# ------------------------------------------------------------------------------ npz and text


def read_npz(path: Path, *, wavelength=None, medium=None, estimate_missing_errors=True, **_) -> list[Spectrum]:
    """Read a numpy ``.npz`` with named wavelength/flux/(ivar|error|variance)[/mask] arrays.

    A 2-D ``(k, n)`` flux gives k spectra; a scalar string ``medium`` key sets the medium.

    Args:
        path: the file.
        wavelength: ``(n,)`` grid [Å] for a file that carries none (already loaded), or None.
        medium: medium of the file's wavelengths when it does not say (see module docstring).
        estimate_missing_errors: estimate the noise with DER_SNR when the file has no
            uncertainties (``meta["ivar_estimated"]``); False raises instead.
        **_: options of other formats, ignored.

    Returns:
        The spectra (ids from an ``id`` key, else the file stem).
    """
    with C.open_npz(path) as z:
        keys = list(z.files)
        get = lambda cands: None if (k := C.find_name(keys, cands)) is None else np.asarray(z[k])  # noqa: E731
        fkey = C.find_name(keys, C.FLUX_NAMES)
        if fkey is None:
            raise SpectrumFormatError(f"{path}: no flux array among keys {keys}")
        flux = np.asarray(z[fkey], dtype=np.float64)
        wkey = C.find_name(keys, C.WAVELENGTH_NAMES)
        meta: dict[str, Any] = {"format": "npz"}
        wave, detected = _wavelengths(
            path, wkey, None if wkey is None else z[wkey], wavelength, meta, what="key", among=f"keys {keys}"
        )
        if "medium" in keys:
            stored = str(np.asarray(z["medium"]).reshape(-1)[0]).strip().lower()
            if stored in ("air", "vacuum"):
                detected = stored
        arrays = _optional_arrays(get)
        given_ids = get(_ID_KEYS)
    return _assemble(
        str(path),
        wave=wave,
        flux=flux,
        medium=_choose_medium(medium, detected, meta),
        id_stem=path.stem,
        given_ids=given_ids,
        meta=meta,
        estimate=estimate_missing_errors,
        **arrays,
    )


def read_text(path: Path, *, wavelength=None, medium=None, estimate_missing_errors=True, **_) -> list[Spectrum]:
    """Read a whitespace- or comma-separated text table.

    Column names come from a header line or the last ``#`` comment line; without names, 2 or 3
    columns are ``wavelength flux [error]`` (1σ). Arguments as for :func:`read_npz`.

    Returns:
        A one-element list (id: the file stem).
    """
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
    if not body:  # one line of words: a header without data, or not a table at all
        raise SpectrumFormatError(f"{path}: text file holds no data rows (only the line {lines[start - 1][:40]!r})")
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
    wave, detected = _wavelengths(
        path, wname, None if wname is None else table[:, lower.index(wname)], wavelength, meta, what="column",
        among=str(names),
    )
    return _assemble(
        str(path),
        wave=wave,
        flux=table[:, lower.index(fname)],
        **_optional_arrays(column),
        medium=_choose_medium(medium, detected, meta),
        id_stem=path.stem,
        meta=meta,
        estimate=estimate_missing_errors,
    )


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
