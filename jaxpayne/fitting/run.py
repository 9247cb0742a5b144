"""Fit a list of spectra and return (and write, as it goes) one table row per spectrum.

:func:`fit_spectra` is what ``jaxpayne fit`` runs. Output is chosen by extension: ``.fits``,
``.ecsv`` or ``.parquet`` (needs pyarrow). While running, every finished row is appended to a
journal ``<OUT>.journal.jsonl`` (flushed and fsynced per batch) and the output table is rewritten
atomically after each batch, so killing the process at any moment loses no finished row;
``resume=True`` skips spectra (by source file and id) already in the output or the journal.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from jaxpayne.fitting.fitter import Fitter, Flags

__all__ = ["fit_spectra", "result_columns", "read_results"]

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
    **fitter_options,
):
    """Fit spectra with a model; return an astropy Table with one row per spectrum.

    Args:
        model: a :class:`jaxpayne.Model`.
        spectra: :class:`jaxpayne.io.Spectrum` objects (any wavelength grids and lengths; they
            are converted to the model's medium, padded and masked into batches).
        out: optional output file (``.fits``, ``.ecsv``, ``.parquet``), written as rows finish.
        resume: skip spectra already present in ``out`` (or its journal).
        batch_size: spectra per compiled call.
        progress: show a progress bar with spectra/s.
        fitter: a ready :class:`Fitter` (else one is built from ``fitter_options``).
        failures: ``(source, message)`` pairs for inputs that could not be read; they get a
            FAILED row each so that nothing silently disappears.
        **fitter_options: options of :class:`Fitter` (``rv``, ``vsini``, ``continuum``,
            ``restarts``...).

    Returns:
        ``astropy.table.Table`` with columns ``id``, ``source``, each parameter and
        ``<name>_err``, ``chi2``, ``dof``, ``chi2_red``, ``n_pixels``, ``converged``, ``n_iter``,
        ``flags`` (:class:`~jaxpayne.fitting.Flags` bits), ``message`` and ``covariance``;
        ``table.meta`` records the parameter names, the model and the fit settings.
    """
    from tqdm.auto import tqdm

    spectra = _unique_ids(list(spectra))
    if fitter is None:
        n_seg = max([s.n_segments for s in spectra] + [1])
        fitter = Fitter(model, n_segments=n_seg, **fitter_options)
    names = fitter.param_names
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.suffix.lower() not in _FORMATS:
        raise ValueError(f"{out_path}: output must end in .fits, .ecsv or .parquet")
    journal = None if out_path is None else out_path.with_name(out_path.name + ".journal.jsonl")
    rows: list[dict] = []
    if out_path is not None:
        if resume:
            rows = _previous_rows(out_path, journal, names)
        elif out_path.exists() or journal.exists():
            raise FileExistsError(f"{out_path}: output exists; use --resume to continue it or remove it")
    done = {_key(r["source"], r["id"]) for r in rows}

    pending = []
    new_rows = []
    for source, message in failures:
        if _key(source, "") not in done:
            new_rows.append(_failed_row(names, "", source, message))
    for spectrum in spectra:
        if _key(spectrum.source, spectrum.id) in done:
            continue
        try:
            obs, extra = _observation(fitter, spectrum)
            pending.append((spectrum, obs, extra))
        except ValueError as err:
            new_rows.append(_failed_row(names, spectrum.id, spectrum.source, str(err)))
    if new_rows:
        _commit(new_rows, rows, journal, out_path, names, fitter)

    bar = tqdm(total=len(pending), unit="spectra", desc="fitting", disable=not progress, leave=False)
    batch_size = max(1, int(batch_size))
    if pending:
        length = max(int(np.shape(o.wavelength)[0]) for _, o, _ in pending)
        length = LENGTH_QUANTUM * math.ceil(length / LENGTH_QUANTUM)
        n_batch = min(batch_size, len(pending))
        t0 = time.perf_counter()
        for start in range(0, len(pending), n_batch):
            chunk = pending[start : start + n_batch]
            batch = _pad_batch([o for _, o, _ in chunk], n_batch, length)
            result = fitter.fit(batch)
            batch_rows = [_result_row(names, spec, extra, result, i) for i, (spec, _, extra) in enumerate(chunk)]
            _commit(batch_rows, rows, journal, out_path, names, fitter)
            bar.update(len(chunk))
            bar.set_postfix(spectra_per_s=f"{bar.n / (time.perf_counter() - t0):.2f}")
    bar.close()
    table = _table(rows, names, fitter)
    if out_path is not None:
        # the table on disk must hold every row (also those only in the journal) before the
        # journal goes
        _write_table(table, out_path)
        if journal.exists():
            journal.unlink()
    return table


def _unique_ids(spectra: list) -> list:
    """Give repeated (source, id) pairs a ``#k`` suffix so every row can be found on resume."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for spectrum in spectra:
        key = _key(spectrum.source, spectrum.id)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            spectrum = spectrum.replace(id=f"{spectrum.id}#{seen[key]}")
        out.append(spectrum)
    return out


def _observation(fitter: Fitter, spectrum):
    """A spectrum as a checked Observation; pixels the model cannot reach are masked."""
    fm = fitter.forward
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


def _result_row(names, spectrum, extra, result, i) -> dict:
    row: dict[str, Any] = {"id": spectrum.id, "source": spectrum.source}
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
        covariance=cov.tolist(),
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
               covariance=np.full((n, n), np.nan).tolist())
    return row


def _commit(new_rows, rows, journal, out_path, names, fitter) -> None:
    """Append finished rows to the journal (fsync), then rewrite the table atomically."""
    rows.extend(new_rows)
    if out_path is None:
        return
    with open(journal, "a+b") as fh:  # a line cut off by a kill must not swallow the next row
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.write(b"\n")
    with open(journal, "a", encoding="utf-8") as fh:
        for row in new_rows:
            fh.write(json.dumps(row, allow_nan=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    _write_table(_table(rows, names, fitter), out_path)


def _write_table(table, out_path: Path) -> None:
    fmt = _FORMATS[out_path.suffix.lower()]
    tmp = out_path.with_name(out_path.name + ".tmp" + out_path.suffix)
    try:
        table.write(tmp, format=fmt, overwrite=True)
    except ImportError as err:
        raise ValueError(f"{out_path}: cannot write {fmt} ({err}); install pyarrow or use .fits/.ecsv") from None
    os.replace(tmp, out_path)


def _table(rows, names, fitter):
    from astropy.table import Table

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


def _previous_rows(out_path: Path, journal: Path, names) -> list[dict]:
    rows: dict[tuple[str, str], dict] = {}
    if out_path.exists():
        for row in read_results(out_path):
            rows[_key(row["source"], row["id"])] = row
    if journal.exists():
        with open(journal, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by a kill
                rows[_key(row["source"], row["id"])] = row
    cols = set(result_columns(names))
    for row in rows.values():
        if set(row) != cols:
            raise ValueError(
                f"{out_path}: existing results have different columns (another model or settings?); "
                "write to a new file"
            )
    return list(rows.values())


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
