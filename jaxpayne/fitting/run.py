"""Fit a stream of spectra and return (and write, as it goes) one table row per spectrum.

:func:`fit_spectra` is what ``jaxpayne fit`` runs. It consumes its input lazily, ``batch_size``
spectra at a time (read, convert, fit, record, move on), so memory is bounded by one batch plus
the finished rows, whatever the number of spectra; :func:`jaxpayne.io.iter_spectra` feeds it files
one by one.

Output is chosen by extension: ``.fits``, ``.ecsv`` or ``.parquet`` (needs pyarrow). Every
finished batch is appended to a journal ``<OUT>.journal.jsonl`` (flushed and fsynced), the
durable record; the output table is rewritten atomically after the first batch, then at most every
``table_every`` seconds, and at the end, after which the journal is deleted. Killing the process at
any moment loses no finished row: ``resume=True`` merges the table and the journal, skips spectra
(by source file and id) already done, and retries those whose row says only FAILED.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from jaxpayne.fitting.fitter import Fitter, Flags

__all__ = ["fit_spectra", "read_results", "result_columns"]

#: Pixel counts are padded up to a multiple of this, so batches of similar spectra share one
#: compiled program.
LENGTH_QUANTUM = 512
_FORMATS = {".fits": "fits", ".fit": "fits", ".ecsv": "ascii.ecsv", ".parquet": "parquet"}


def result_columns(param_names: Sequence[str]) -> list[str]:
    """Column names of a results table, in order."""
    cols = ["id", "source"]
    for name in param_names:
        cols += [name, f"{name}_err"]
    return cols + ["chi2", "dof", "chi2_red", "n_pixels", "converged", "n_iter", "flags", "message", "covariance"]


def fit_spectra(
    model,
    spectra: Iterable,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    fitter: Fitter | None = None,
    failures: Sequence[tuple[str, str]] = (),
    table_every: float = 60.0,
    **fitter_options,
):
    """Fit a stream of spectra with a model; return an astropy Table with one row per spectrum.

    The input is consumed lazily: ``batch_size`` spectra are taken, converted to observations
    (in the model's medium, pixels the model cannot reach masked), fitted in one compiled call and
    recorded before the next are read, so memory holds one batch plus the finished rows. Each batch
    is padded to a fixed number of spectra (with copies of its first, discarded) and its pixels to
    a multiple of 512, so only a few shapes compile. Rows come in input order; spectra sharing a
    ``(source, id)`` get ``#2``, ``#3``... appended to the id so every row stays distinct.

    Args:
        model: a :class:`jaxpayne.Model`.
        spectra: any iterable (a list, or a generator such as :func:`jaxpayne.io.iter_spectra`)
            of :class:`jaxpayne.io.Spectrum` objects (any wavelength grids [Å] and lengths) and
            :class:`jaxpayne.io.ReadFailure` ``(source, message)`` items, each of which becomes a
            FAILED row where it occurs.
        out: optional output file (``.fits``, ``.ecsv``, ``.parquet``), written as rows finish.
        resume: continue ``out``: skip spectra (by source and id) already in it or its journal,
            and retry those whose row has only the FAILED flag (a file that did not read, a
            spectrum that could not be converted); a retried row replaces the old one, and a
            spectrum from a file replaces that file's read-failure row (``id`` ``""``).
        batch_size: spectra per compiled call (a run with fewer spectra uses its own count).
        progress: show a progress bar with spectra/s (its total is known when ``spectra`` has a
            ``len()``).
        fitter: a ready :class:`Fitter` (else one is built from ``fitter_options``).
        failures: ``(source, message)`` pairs for inputs that could not be read, fed before
            ``spectra`` (same as :class:`~jaxpayne.io.ReadFailure` items in the stream).
        table_every: minimum time between rewrites of the ``out`` table during the run [s]. The
            table is written after the first batch, then at most this often, and at the end; the
            fsynced journal holds every finished row in between. 0 rewrites after every batch.
        **fitter_options: options of :class:`Fitter` (``rv``, ``vsini``, ``continuum``,
            ``restarts``...). ``n_segments`` defaults to the first spectrum's number of segments;
            a later spectrum with more segments gets a FAILED row, so pass it when spectra with
            different numbers of segments are mixed.

    Returns:
        ``astropy.table.Table`` with columns ``id``, ``source``, each parameter and
        ``<name>_err``, ``chi2``, ``dof``, ``chi2_red``, ``n_pixels``, ``converged``, ``n_iter``,
        ``flags`` (:class:`~jaxpayne.fitting.Flags` bits), ``message`` and ``covariance``;
        ``table.meta`` records the parameter names, the model and the fit settings. With
        ``resume``, the earlier rows come first.

    Raises:
        FileExistsError: ``out`` (or its journal) exists and ``resume`` is False.
        ValueError: ``out`` has an unknown extension, or its existing rows have other columns.
    """
    from tqdm.auto import tqdm

    out_path = Path(out) if out is not None else None
    journal = None if out_path is None else out_path.with_name(out_path.name + ".journal.jsonl")
    if out_path is not None:
        if out_path.suffix.lower() not in _FORMATS:
            raise ValueError(f"{out_path}: output must end in .fits, .ecsv or .parquet")
        if not resume and (out_path.exists() or journal.exists()):
            raise FileExistsError(f"{out_path}: output exists; use --resume to continue it or remove it")
    total = len(spectra) + len(failures) if hasattr(spectra, "__len__") else None
    items: Iterator = chain(failures, spectra)
    if fitter is None:
        if "n_segments" not in fitter_options:
            first, items = _peek_spectrum(items)
            fitter_options["n_segments"] = first.n_segments if first is not None else 1
        fitter = Fitter(model, **fitter_options)
    names = fitter.param_names
    rows = _previous_rows(out_path, journal, names) if resume and out_path is not None else {}
    done = {key for key, row in rows.items() if not _retryable(row)}

    batch_size = max(1, int(batch_size))
    bar = tqdm(total=total, unit="spectra", desc="fitting", disable=not progress, leave=False)
    n_batch, written, n_fitted, t0 = None, -math.inf, 0, time.perf_counter()
    try:
        for chunk, last in _chunks(_entries(items, fitter, names, done, bar), batch_size):
            n_fit = sum(isinstance(entry, tuple) for entry in chunk)
            if n_batch is None and n_fit:
                n_batch = n_fit if last else batch_size  # fixed from the first fitted batch on
            _commit(_chunk_rows(fitter, names, chunk, n_batch), rows, journal)
            if out_path is not None and not last and time.monotonic() - written >= table_every:
                _write_table(_table(rows.values(), names, fitter), out_path)
                written = time.monotonic()
            n_fitted += n_fit
            bar.update(len(chunk))
            bar.set_postfix(spectra_per_s=f"{n_fitted / (time.perf_counter() - t0):.2f}")
    finally:
        bar.close()
    table = _table(rows.values(), names, fitter)
    if out_path is not None:
        # the table on disk must hold every row (also those only in the journal) before the
        # journal goes
        _write_table(table, out_path)
        if journal.exists():
            journal.unlink()
    return table


def _peek_spectrum(items: Iterator):
    """The first Spectrum among ``items`` (or None), and an iterator over all of them."""
    head = []
    for item in items:
        head.append(item)
        if not isinstance(item, tuple):
            return item, chain(head, items)
    return None, iter(head)


def _entries(items, fitter: Fitter, names, done: set, bar):
    """Each input item, in order, as a FAILED row or ``(id, source, observation, extra)`` to fit.

    Spectra whose ``(source, id)`` is in ``done`` are skipped; a repeated pair gets ``#k``.
    """
    seen: dict[tuple[str, str], int] = {}
    for item in items:
        failed = isinstance(item, tuple)  # a ReadFailure or a (source, message) pair
        if failed:
            (source, message), id_ = map(str, item), ""
        else:
            source, key = item.source, _key(item.source, item.id)
            seen[key] = count = seen.get(key, 0) + 1
            id_ = item.id if count == 1 else f"{item.id}#{count}"
        if _key(source, id_) in done:
            bar.update(1)
            continue
        if not failed:
            try:
                obs, extra = _observation(fitter, item)
            except ValueError as err:
                failed, message = True, str(err)
        yield _failed_row(names, id_, source, message) if failed else (id_, source, obs, extra)


def _chunks(entries, batch_size: int):
    """Entries grouped in order into chunks of ``batch_size`` spectra to fit (or ``2 * batch_size``
    entries in all, so that a long run of failures stays bounded); yields ``(chunk, is_last)``."""
    chunk, n_fit = [], 0
    for entry in entries:
        chunk.append(entry)
        n_fit += isinstance(entry, tuple)
        if n_fit == batch_size or len(chunk) == 2 * batch_size:
            yield chunk, False
            chunk, n_fit = [], 0
    if chunk:
        yield chunk, True


def _chunk_rows(fitter: Fitter, names, chunk, n_batch) -> list[dict]:
    """Fit a chunk's spectra in one batch of ``n_batch``; the chunk's rows in order."""
    fits = [entry for entry in chunk if isinstance(entry, tuple)]
    fitted = iter(())
    if fits:
        length = max(int(np.shape(obs.wavelength)[0]) for _, _, obs, _ in fits)
        length = LENGTH_QUANTUM * math.ceil(length / LENGTH_QUANTUM)
        result = fitter.fit(_pad_batch([obs for _, _, obs, _ in fits], n_batch, length))
        fitted = (_result_row(names, *fit[:2], fit[3], result, i) for i, fit in enumerate(fits))
    return [next(fitted) if isinstance(entry, tuple) else entry for entry in chunk]


def _observation(fitter: Fitter, spectrum):
    """A spectrum as a checked Observation; pixels the model cannot reach are masked."""
    fm = fitter.forward
    if spectrum.n_segments > fm.n_segments:
        raise ValueError(
            f"spectrum has {spectrum.n_segments} segments but the fit models {fm.n_segments} "
            "(n_segments comes from the first spectrum unless given)"
        )
    ivar = np.where(spectrum.good, spectrum.ivar, 0.0)
    obs = fm.observation(
        spectrum.wavelength, np.where(spectrum.good, spectrum.flux, 0.0), ivar,
        segment=spectrum.segment, medium=spectrum.medium, outside="mask",
    )
    clipped = int(np.sum(ivar > 0) - np.sum(np.asarray(obs.ivar) > 0))
    extra_flags = int(Flags.PIXELS_CLIPPED) if clipped else 0
    note = f"{clipped} pixels outside the model's range masked" if clipped else ""
    return obs, (extra_flags, note)


def _pad_batch(observations, n_batch: int, length: int):
    """Stack observations, padding pixels to ``length`` and the batch to ``n_batch`` spectra
    (filler spectra are copies of the first, discarded afterwards)."""
    from jaxpayne.forward import pad_observations

    obs = list(observations) + [observations[0]] * (n_batch - len(observations))
    return pad_observations(obs, length)


def _result_row(names, id_, source, extra, result, i) -> dict:
    row: dict[str, Any] = {"id": id_, "source": source}
    theta, cov = result.theta[i], result.covariance[i]
    err = np.sqrt(np.clip(np.diag(cov), 0, None))
    for j, name in enumerate(names):
        row[name] = float(theta[j])
        row[f"{name}_err"] = float(err[j])
    flags = int(result.flags[i]) | extra[0]
    note = extra[1]
    dof = int(result.dof[i])
    chi2 = float(result.chi2[i])
    row.update(
        chi2=chi2,
        dof=dof,
        chi2_red=chi2 / dof if dof > 0 else float("nan"),
        n_pixels=int(result.n_pixels[i]),
        converged=bool(result.converged[i]),
        n_iter=int(result.n_iter[i]),
        flags=flags,
        message="; ".join(m for m in (_describe_flags(flags), note) if m),
        covariance=np.array(cov, dtype=np.float64),  # a compact copy, not a view of the batch
    )
    return row


def _describe_flags(flags: int) -> str:
    return ",".join(f.name for f in Flags if flags & f)


def _failed_row(names, id_, source, message) -> dict:
    row: dict[str, Any] = {"id": id_, "source": source}
    for name in names:
        row[name] = float("nan")
        row[f"{name}_err"] = float("nan")
    n = len(names)
    row.update(chi2=float("nan"), dof=0, chi2_red=float("nan"), n_pixels=0, converged=False, n_iter=0,
               flags=int(Flags.FAILED), message=message.splitlines()[0] if message else "failed",
               covariance=np.full((n, n), np.nan))
    return row


def _commit(new_rows, rows: dict, journal: Path | None) -> None:
    """Record finished rows: in ``rows``, and appended to the journal (flushed and fsynced)."""
    for row in new_rows:
        _add(rows, row)
    if journal is None:
        return
    with open(journal, "a+b") as fh:  # appends always go to the end
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":  # a line cut off by a kill must not swallow the next row
                fh.write(b"\n")
        lines = (json.dumps(row, allow_nan=True, default=np.ndarray.tolist) + "\n" for row in new_rows)
        fh.write("".join(lines).encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def _add(rows: dict, row: dict) -> None:
    """Insert a row. It replaces an earlier row of its key (in that row's place), and a row of a
    spectrum replaces the read-failure row (id ``""``, only FAILED) of the file(s) it came from."""
    if row["id"]:
        for source in str(row["source"]).split("; "):  # combined spectra: "; "-joined files
            if _retryable(rows.get((source, ""))):
                del rows[(source, "")]
    rows[_key(row["source"], row["id"])] = row


def _retryable(row: dict | None) -> bool:
    """A row that says only FAILED (unreadable file or unusable spectrum): retried on resume."""
    return row is not None and int(row["flags"]) == int(Flags.FAILED)


def _write_table(table, out_path: Path) -> None:
    """Write atomically and durably: a synced temporary file renamed over ``out_path``."""
    fmt = _FORMATS[out_path.suffix.lower()]
    tmp = out_path.with_name(out_path.name + ".tmp" + out_path.suffix)
    try:
        table.write(tmp, format=fmt, overwrite=True)
    except ImportError as err:
        raise ValueError(f"{out_path}: cannot write {fmt} ({err}); install pyarrow or use .fits/.ecsv") from None
    with open(tmp, "r+b") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out_path)
    if hasattr(os, "O_DIRECTORY"):  # POSIX: the rename itself reaches the disk
        fd = os.open(out_path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _table(rows, names, fitter):
    from astropy.table import Table

    rows = list(rows)
    cols = result_columns(names)
    n = len(names)
    data = {c: [r[c] for r in rows] for c in cols}
    if not rows:
        data["covariance"] = np.zeros((0, n, n))
    else:
        # rows read back from some formats carry the matrix flattened
        data["covariance"] = np.stack([np.asarray(c, dtype=np.float64).reshape(n, n) for c in data["covariance"]])
    table = Table(data, names=cols)
    for c in cols:
        if c in ("id", "source", "message"):
            table[c] = table[c].astype(str)
    model = fitter.model
    units = dict(zip(getattr(model, "label_names", ()), getattr(model, "label_units", ())))
    units.update(rv="km/s", vsini="km/s", vmacro="km/s")
    for name in names:
        unit = units.get(name)
        if unit and unit != "dex":
            table[name].unit = table[f"{name}_err"].unit = unit
    table.meta["PARAMS"] = ",".join(names)
    table.meta["CONTINUU"] = str(fitter.forward.continuum)
    table.meta["FLAGS"] = "; ".join(f"{f.value}={f.name}" for f in Flags)
    return table


def _previous_rows(out_path: Path, journal: Path, names) -> dict[tuple[str, str], dict]:
    """The rows of an earlier run: the table, then the journal on top (a later row wins)."""
    rows: dict[tuple[str, str], dict] = {}
    if out_path.exists():
        for row in read_results(out_path):
            _add(rows, row)
    if journal.exists():
        with open(journal, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by a kill
                _add(rows, row)
    cols = set(result_columns(names))
    for row in rows.values():
        if set(row) != cols:
            raise ValueError(
                f"{out_path}: existing results have different columns (another model or settings?); "
                "write to a new file"
            )
    return rows


def _key(source, id_) -> tuple[str, str]:
    """Identity of a spectrum for resuming (empty/masked table cells read back as "")."""
    return (str(source or ""), str(id_ or ""))


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of a results table written by :func:`fit_spectra`, as dicts."""
    from astropy.table import Table

    path = Path(path)
    if _FORMATS.get(path.suffix.lower()) == "parquet":
        # pyarrow directly: astropy's parquet reader leaves threads that abort the interpreter at exit
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises many types for unreadable files
            raise ValueError(f"{path}: cannot read existing results ({type(err).__name__}: {err})") from None
        for row in rows:
            for c in ("id", "source", "message"):
                row[c] = str(row.get(c) or "")
        return rows
    try:
        table = Table.read(path, format=_FORMATS.get(path.suffix.lower()))
    except Exception as err:  # astropy raises many types for unreadable files
        raise ValueError(f"{path}: cannot read existing results ({type(err).__name__}: {err})") from None
    rows = []
    for r in table:
        row = {}
        for c in table.colnames:
            v = r[c]
            row[c] = v.tolist() if hasattr(v, "tolist") else v
            if c in ("id", "source", "message"):
                row[c] = str(row[c] or "")
        rows.append(row)
    return rows
