"""Manifests: one row per star naming its spectrum files and per-star options.

A star is often several files (GALAH's four CCDs, DESI's three arms, an instrument's chips). A
manifest is a table (CSV, ECSV, FITS or Parquet; anything :class:`astropy.table.Table` reads)
with one row per star:

``id``
    the star's name (the output row's ``id``); unique.
``files``
    its spectrum files, separated by ``;`` (paths relative to the manifest's folder); ``file``
    is accepted for one file per star.
``fixed_<parameter>`` (optional)
    a value at which the fit holds that parameter for this star, e.g. ``fixed_rv`` [km/s] or
    ``fixed_vsini``; every star then needs a finite value. ``fixed_rv`` is the velocity in the
    frame of the spectrum's wavelengths (topocentric for apVisit files, 0 for rest-frame ones),
    as a free rv would be. ``fixed_R`` is each star's resolving power λ/Δλ (a fibre's or an
    observing mode's): the fit's Gaussian line-spread function then takes it per star.

:func:`iter_manifest` reads each star's files (any format :func:`~jaxpayne.io.read_spectrum`
knows; the first spectrum of each file) and joins them into one multi-segment spectrum
(:func:`~jaxpayne.io.combine`, or the GALAH combination for GALAH CCD files), named by the
manifest; a star one of whose files cannot be read is one :class:`~jaxpayne.io.ReadFailure`.

Example:
    >>> stars = read_manifest("stars.csv")   # doctest: +SKIP
    >>> table = jaxpayne.fit_spectra(model, iter_manifest(stars), out="labels.fits")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

__all__ = ["FIXED_PREFIX", "ManifestStar", "iter_manifest", "manifest_fixed", "read_manifest"]

#: Manifest columns ``fixed_<name>`` hold a parameter fixed per star.
FIXED_PREFIX = "fixed_"


class ManifestStar(NamedTuple):
    """One manifest row.

    Attributes:
        id: the star's name.
        files: its spectrum files (absolute, or relative to the working directory).
        fixed: parameter name → value held fixed for this star.
    """

    id: str
    files: tuple
    fixed: dict


def read_manifest(path: str | os.PathLike) -> list[ManifestStar]:
    """The stars of a manifest table (see the module notes).

    Raises:
        ValueError: naming the manifest (and the row) for a missing column, an empty ``files``,
            a duplicated id or a non-finite ``fixed_`` value.
    """
    from jaxpayne.io._common import read_table

    path = Path(path)
    table = read_table(path, "manifest")
    column = "files" if "files" in table.colnames else "file" if "file" in table.colnames else None
    if "id" not in table.colnames or column is None:
        raise ValueError(f"{path}: a manifest needs columns 'id' and 'files' (has {', '.join(table.colnames)})")
    fixed_columns = [c for c in table.colnames if c.startswith(FIXED_PREFIX) and len(c) > len(FIXED_PREFIX)]
    base = path.parent
    stars, seen = [], set()
    for k, row in enumerate(table):
        star_id = str(row["id"]).strip()
        if not star_id or star_id in seen:
            raise ValueError(f"{path}: row {k + 1}: {'empty' if not star_id else 'duplicated'} id {star_id!r}")
        seen.add(star_id)
        names = [f.strip() for f in str(row[column]).split(";") if f.strip()]
        if not names or str(row[column]).strip() in ("--", "nan"):
            raise ValueError(f"{path}: row {k + 1} ({star_id}): no files")
        files = tuple(str(p if Path(p).is_absolute() else base / p) for p in names)
        fixed = {}
        for c in fixed_columns:
            value = row[c]
            value = float("nan") if np.ma.is_masked(value) else float(value)
            if not np.isfinite(value):
                raise ValueError(f"{path}: row {k + 1} ({star_id}): {c} must be finite for every star "
                                 "(a parameter is fixed for all stars of a fit, or for none)")
            fixed[c[len(FIXED_PREFIX):]] = value
        stars.append(ManifestStar(star_id, files, fixed))
    if not stars:
        raise ValueError(f"{path}: the manifest has no rows")
    return stars


def manifest_fixed(stars: Iterable[ManifestStar]) -> dict[str, float]:
    """The parameters the manifest fixes, each at the value a fitter must be built for so that
    every star's own value fits in its margins: the largest absolute value (the Doppler margin
    of rv, the kernel margins of vsini and vmacro), and for the resolving power ``R`` the
    smallest (the widest line-spread function)."""
    out: dict[str, float] = {}
    for star in stars:
        for name, value in star.fixed.items():
            if name == "R":
                out[name] = min(out.get(name, math.inf), value)
            else:
                out[name] = max(out.get(name, 0.0), abs(value))
    return out


def iter_manifest(stars: Iterable[ManifestStar] | str | os.PathLike, **read_options) -> Iterator:
    """Each manifest star as one :class:`~jaxpayne.io.Spectrum` (its files joined, named by the
    manifest, ``meta["fixed"]`` its fixed values, ``source`` its files ``;``-joined), or a
    :class:`~jaxpayne.io.ReadFailure` naming the file that failed.

    Args:
        stars: :func:`read_manifest`'s result, or a manifest's path.
        **read_options: :func:`~jaxpayne.io.read_spectrum` options (``wavelength``, ``medium``, ...).
    """
    from jaxpayne.io import surveys
    from jaxpayne.io.iterate import ReadFailure
    from jaxpayne.io.readers import read_spectrum
    from jaxpayne.io.spectrum import SpectrumFormatError, combine

    if isinstance(stars, (str, os.PathLike)):
        stars = read_manifest(stars)
    for star in stars:
        source = ";".join(star.files)
        try:
            parts = []
            for path in star.files:
                try:
                    parts.append(read_spectrum(path, **read_options)[0])
                except OSError as error:
                    raise SpectrumFormatError(f"{path}: {error}") from None
            if len(parts) == 1:
                spectrum = parts[0]
            elif all(surveys.galah_group_key(p) is not None for p in parts):
                spectrum = surveys.combine_galah(parts)
            else:
                spectrum = combine(parts)
        except (SpectrumFormatError, ValueError) as error:
            yield ReadFailure(source, f"star {star.id}: {error}")
            continue
        yield spectrum.replace(id=star.id, source=source, meta={**spectrum.meta, "fixed": dict(star.fixed)})
