"""Reading many spectrum files: :func:`read_spectra` (a list) and :func:`iter_spectra` (lazily).

Both combine the GALAH CCD files of one star and can collect bad files instead of stopping:
:func:`read_spectra` lists them in ``.failures``, :func:`iter_spectra` yields a
:class:`ReadFailure` in their place, so one bad file never spoils a survey-sized batch. Each
file is read by :func:`jaxpayne.io.readers.read_spectrum`, looked up on that module at each call
(so a wrapper installed there, e.g. by a test, sees every read).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from jaxpayne.io import _common as C
from jaxpayne.io import readers, surveys
from jaxpayne.io.generic import load_wavelength
from jaxpayne.io.spectrum import Spectrum, SpectrumFormatError

__all__ = ["ReadFailure", "SpectrumList", "SpectrumReadWarning", "galah_path_groups", "iter_spectra", "read_spectra"]


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
        **kw: passed to :func:`~jaxpayne.io.readers.read_spectrum` (``format``, ``wavelength``,
            ``medium``, options). A ``wavelength`` file is read once for the whole batch.

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
            spectra.extend(readers.read_spectrum(path, **kw))
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
        **kw: passed to :func:`~jaxpayne.io.readers.read_spectrum` (``format``, ``medium``, options).

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
    readers.check_options(
        kw.get("format"), {k: v for k, v in kw.items() if k not in ("format", "wavelength", "hdu", "medium")}
    )
    if kw.get("wavelength") is not None:
        kw = dict(kw, wavelength=load_wavelength(kw["wavelength"]))
    return kw


def galah_path_groups(paths) -> list[list]:
    """``paths`` as groups in input order: the GALAH CCD files of one star (same directory and
    sobject_id in the file name) form one group, at the place of the first of them; every other
    file is a group of its own. These are the units that :func:`iter_spectra` reads into one
    spectrum each (a run split into partitions keeps a group together)."""
    groups: dict[Any, list] = {}
    for i, path in enumerate(paths):
        parts = C.galah_name_parts(path) if isinstance(path, (str, os.PathLike)) else None
        key = (str(Path(path).absolute().parent), parts[0]) if parts else i
        groups.setdefault(key, []).append(path)
    return list(groups.values())


def _galah_ccds_together(paths) -> list:
    """``paths`` in order, except that GALAH CCD files of one star are moved up to follow the
    first of them (:func:`galah_path_groups`, flattened)."""
    return [path for group in galah_path_groups(paths) for path in group]


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
            spectra = readers.read_spectrum(path, **kw)
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
