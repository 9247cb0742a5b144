"""Survey-scale fits: partitioned Parquet output, resumable by partition, in one process or on a
Dask cluster.

:func:`fit_survey` splits a list of inputs (spectrum files, or the stars of a manifest) into
partitions of ``partition_size`` inputs and fits each partition with :func:`fit_spectra` into one
Parquet file of a folder::

    OUT/_run.json                the model, the fit settings and the inputs (checked on resume)
    OUT/part-000000.parquet      the rows of inputs 0 … P-1, written atomically when finished
    OUT/part-000001.parquet      …
    OUT/_work/                   partitions in progress: their fsynced journals

The folder reads as one table with any Parquet reader (``pyarrow.parquet.read_table(OUT)``,
``pandas.read_parquet(OUT)``, :func:`~jaxpayne.fitting.run.read_results`): files whose names start
with ``_`` or ``.`` are not data. Memory is one partition's rows (plus the list of inputs), so it
does not grow with the number of spectra.

The run's fitter is described by a :class:`FitJob`, plain picklable data (a model path, options),
because jitted functions do not pickle: every process (a Dask worker) builds its fitter once from
the job, keeps it for all the partitions it is given, and reuses JAX's persistent compilation
cache (:mod:`jaxpayne.compilation_cache`), so a restarted worker does not compile again.

Faults: a finished batch is in its partition's journal, so a process killed at any moment loses
no finished row; ``resume=True`` skips finished partitions without reading their files, finishes
the interrupted ones from their journals, and retries the FAILED-only rows (a file that did not
read) of finished ones, reading only those files again. Under Dask a partition whose worker
died is rescheduled by the scheduler on another worker and resumes from the journal in the same
way. A bad file is one FAILED row, as in :func:`fit_spectra`.

Example:
    >>> job = FitJob("model.h5", fitter_options={"rv": True, "continuum": "filter"})  # doctest: +SKIP
    >>> fit_survey(job, paths, "labels/")                               # one process  # doctest: +SKIP
    >>> from distributed import Client                                                  # doctest: +SKIP
    >>> fit_survey(job, paths, "labels/", client=Client("tcp://scheduler:8786"))       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FitJob", "PARTITION_SIZE", "SurveyResult", "fit_partition", "fit_survey", "is_partitioned",
           "partition_inputs", "read_partitioned"]

#: Default number of inputs (files, or manifest stars) per partition.
PARTITION_SIZE = 1024
#: The run record in the output folder.
RUN_FILE = "_run.json"
#: Sub-folder of the partitions in progress.
WORK_DIR = "_work"
_PART_NAME = "part-{:06d}.parquet"
_PART_RE = re.compile(r"^part-(\d{6})\.parquet$")


@dataclass(frozen=True)
class FitJob:
    """Everything needed to rebuild a run's fitter and read its inputs: plain, picklable data.

    Attributes:
        model: the model file (any format :func:`jaxpayne.load_model` reads).
        model_options: keyword arguments of :func:`jaxpayne.load_model` (``format``,
            ``label_names``, ``wavelength`` … of an npz network).
        fitter_options: keyword arguments of :class:`~jaxpayne.fitting.Fitter` (``rv``,
            ``continuum``, ``resolution``, ``n_segments``, ``fixed`` …); ``n_segments`` is taken
            from the first input when missing.
        binary: options of a double-lined binary fit, or None: the arguments of
            :func:`~jaxpayne.fitting.binary.binary_fitter` (``weights``, ``networks`` as a
            folder, ``rv_span``); ``fitter_options`` then configure its single-star fit.
        read_options: keyword arguments of :func:`~jaxpayne.io.iter_spectra` /
            :func:`~jaxpayne.io.manifest.iter_manifest` (``wavelength``, ``medium``, ``format`` …).
        batch_size: spectra per compiled call.
        error_floor: parameter → systematic error floor, as in :func:`fit_spectra`.
    """

    model: str
    model_options: Mapping[str, Any] = field(default_factory=dict)
    fitter_options: Mapping[str, Any] = field(default_factory=dict)
    binary: Mapping[str, Any] | None = None
    read_options: Mapping[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    error_floor: Mapping[str, float] = field(default_factory=dict)

    def key(self) -> str:
        """A text that names this job's fitter (equal jobs build equal fitters)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, default=str)

    def build(self, model=None):
        """The model and fitter of this job, built once per process and then reused (while the
        model file is unchanged).

        Args:
            model: the job's model (``self.model``), already loaded: used instead of loading it
                again when nothing is cached yet.

        Returns:
            ``(model, fitter)``: a :class:`~jaxpayne.Model` and a
            :class:`~jaxpayne.fitting.Fitter` (or
            :class:`~jaxpayne.fitting.binary.BinaryFitter`).
        """
        try:
            stat = os.stat(self.model)
            key = f"{self.key()}|{stat.st_size}|{stat.st_mtime_ns}"
        except OSError:  # load_model names the problem
            key = None
        if key is None or key not in _BUILT:
            if model is None:
                from jaxpayne.model import load_model

                model = load_model(self.model, **dict(self.model_options))
            _BUILT.clear()  # one job per process at a time: an old fitter's memory goes
            _BUILT[key] = (model, self._fitter(model))
        return _BUILT[key]

    def _fitter(self, model):
        from jaxpayne.fitting.fitter import Fitter

        options = dict(self.fitter_options)
        if self.binary is None:
            return Fitter(model, **options)
        from jaxpayne.fitting.binary import binary_fitter

        return binary_fitter(model, **dict(self.binary), **options)

    def read(self, units: Sequence):
        """The spectra (and read failures) of some inputs: files through
        :func:`~jaxpayne.io.iter_spectra`, manifest stars through
        :func:`~jaxpayne.io.manifest.iter_manifest`."""
        from jaxpayne.io import iter_spectra
        from jaxpayne.io.manifest import ManifestStar, iter_manifest

        if units and isinstance(units[0], ManifestStar):
            return iter_manifest(units, **dict(self.read_options))
        return iter_spectra(list(units), on_error="skip", **dict(self.read_options))


#: The fitter of this process's job (``FitJob.key()`` → ``(model, fitter)``).
_BUILT: dict[str, tuple] = {}


@dataclass(frozen=True)
class SurveyResult:
    """What :func:`fit_survey` did.

    Attributes:
        path: the output folder (read it with :func:`read_partitioned` or any Parquet reader).
        n_partitions: partitions of the run.
        n_skipped: of them, finished before this call (resumed runs).
        n_rows: rows in the folder.
        n_flagged: of them, rows with any flag set.
        seconds: wall time of this call [s].
    """

    path: Path
    n_partitions: int
    n_skipped: int
    n_rows: int
    n_flagged: int
    seconds: float


def is_partitioned(path: str | os.PathLike) -> bool:
    """Whether an output path names a partitioned folder (an existing folder, a name ending in a
    path separator, or one without extension) rather than one table file."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or Path(text).is_dir() or not Path(text).suffix


def partition_inputs(inputs: Sequence, partition_size: int = PARTITION_SIZE) -> list[list]:
    """Split inputs into partitions of ``partition_size`` units, in order.

    A unit is a manifest star, or a spectrum file; the GALAH CCD files of one star are one unit
    (:func:`~jaxpayne.io.galah_path_groups`), never split between partitions.

    Returns:
        The partitions, each a list of inputs (files, or :class:`~jaxpayne.io.manifest.ManifestStar`).
    """
    from jaxpayne.io import galah_path_groups
    from jaxpayne.io.manifest import ManifestStar

    size = int(partition_size)
    if size < 1:
        raise ValueError(f"partition_size must be >= 1, got {partition_size}")
    inputs = list(inputs)
    units = [[star] for star in inputs] if inputs and isinstance(inputs[0], ManifestStar) \
        else galah_path_groups([os.fspath(p) for p in inputs])
    return [[item for unit in units[a:a + size] for item in unit] for a in range(0, len(units), size)]


def fit_partition(job: FitJob, index: int, inputs: Sequence, out: str | os.PathLike) -> dict:
    """Fit one partition of a survey run into ``out/part-<index>.parquet`` (what a worker runs).

    Resumes from the partition's journal, if any; a finished partition with FAILED-only rows has
    just those inputs read and fitted again. Safe to run again after a kill at any point.

    Returns:
        ``{"index", "n_rows", "n_flagged", "failures"}``: the partition's row counts and the
        ``(source, message)`` of each spectrum that became a FAILED row in this call.
    """
    from jaxpayne.compilation_cache import enable
    from jaxpayne.fitting.run import fit_spectra

    enable()
    out = Path(out)
    final = out / _PART_NAME.format(index)
    work = out / WORK_DIR / final.name
    journal = work.with_name(work.name + ".journal.jsonl")
    inputs = list(inputs)
    if final.exists():
        retry = _retry_sources(final)
        if not retry:
            flags = _flags(final)
            return {"index": index, "n_rows": len(flags), "n_flagged": int(sum(f != 0 for f in flags)),
                    "failures": []}
        inputs = [unit for unit in inputs if _unit_sources(unit) & retry]
        work.parent.mkdir(exist_ok=True)
        os.replace(final, work)
    work.parent.mkdir(exist_ok=True)
    model, fitter = job.build()
    failures: list[tuple[str, str]] = []
    table = fit_spectra(model, job.read(inputs) if inputs else iter(()), out=work,
                        resume=work.exists() or journal.exists(), fitter=fitter,
                        batch_size=job.batch_size, progress=False, table_every=None,
                        error_floor=dict(job.error_floor), report=lambda s, m: failures.append((s, m)))
    _replace_durably(work, final)
    return {"index": index, "n_rows": len(table), "n_flagged": int(sum(f != 0 for f in table["flags"])),
            "failures": failures}


def fit_survey(
    job: FitJob,
    inputs: Sequence,
    out: str | os.PathLike,
    *,
    partition_size: int = PARTITION_SIZE,
    client=None,
    resume: bool = False,
    progress: bool = True,
    report: Callable[[str, str], None] | None = None,
) -> SurveyResult:
    """Fit many spectra into a partitioned Parquet folder, in this process or on a Dask cluster.

    The rows are those :func:`fit_spectra` gives for the same inputs and job (a spectrum's fit
    does not depend on which others share its batch), one Parquet file per partition of
    ``partition_size`` inputs; see the module notes for the layout, resuming and faults.

    Args:
        job: the fitter and reading options (:class:`FitJob`).
        inputs: spectrum files, or the stars of a manifest
            (:func:`~jaxpayne.io.manifest.read_manifest`); all paths must be readable where the
            work runs (on a cluster: a shared filesystem).
        out: the output folder (made if missing; on a cluster, shared by all workers).
        partition_size: inputs per partition (a GALAH star's CCD files count as one).
        client: a ``distributed.Client``: partitions run as tasks on its workers; None runs
            them here, one after another.
        resume: continue an earlier run into ``out``: same job and inputs, finished partitions
            skipped.
        progress: a progress bar over the inputs (rate and time left), advanced as partitions
            finish.
        report: optional callable ``(source, message)`` told about each spectrum that became a
            FAILED row.

    Returns:
        A :class:`SurveyResult`.

    Raises:
        FileExistsError: ``out`` holds results and ``resume`` is False.
        ValueError: resuming with another model, other settings, other inputs or another
            partition size.
        RuntimeError: some partitions raised (the message names them; the others are written,
            and ``resume=True`` runs the failed ones again).
    """
    from jaxpayne._progress import progress_bar

    from jaxpayne.fitting.run import check_setup, run_setup

    start = time.perf_counter()
    out = Path(out)
    partitions = partition_inputs(inputs, partition_size)
    if not partitions:
        raise ValueError("no inputs to fit")
    model = None
    if "n_segments" not in job.fitter_options:
        from jaxpayne.model import load_model

        model = load_model(job.model, **dict(job.model_options))  # a bad model is the first error
        job = dataclasses.replace(job, fitter_options={**job.fitter_options,
                                                       "n_segments": _first_segments(job, partitions)})
    model, fitter = job.build(model)  # here too: the settings to record, and a check of the options
    record = {"setup": run_setup(model, fitter, dict(job.error_floor)), "partition_size": int(partition_size),
              "n_partitions": len(partitions), "inputs_sha256": _inputs_digest(partitions)}
    record = json.loads(json.dumps(record, sort_keys=True, default=str))
    run_file = out / RUN_FILE
    if run_file.exists() or (out.exists() and any(out.iterdir())):
        if not resume:
            raise FileExistsError(f"{out}: output exists; use --resume to continue it or remove it")
        previous = json.loads(run_file.read_text(encoding="utf-8")) if run_file.exists() else None
        if previous is None:
            raise ValueError(f"{out}: not a jaxpayne results folder (no {RUN_FILE}); write to a new folder")
        check_setup(run_file, previous.get("setup"), record["setup"])
        for name, what in (("partition_size", "partition size"), ("inputs_sha256", "inputs")):
            if previous.get(name) != record[name]:
                raise ValueError(f"{out}: the run being resumed had other {what}; use the same inputs and "
                                 "--partition-size, or write to a new folder")
    else:
        out.mkdir(parents=True, exist_ok=True)
        from jaxpayne.fitting.run import atomic_write

        text = json.dumps(record, sort_keys=True, indent=1)
        atomic_write(run_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    todo = [k for k in range(len(partitions)) if not _finished(out / _PART_NAME.format(k))]
    sizes = [len(p) for p in partitions]
    bar = progress_bar(total=sum(sizes), initial=sum(sizes) - sum(sizes[k] for k in todo), unit="inputs",
               desc="fitting", progress=progress, leave=False)
    errors: list[str] = []
    n_rows = 0

    def done(k, summary):
        nonlocal n_rows
        for source, message in summary["failures"]:
            if report is not None:
                report(source, message)
        n_rows += summary["n_rows"]
        bar.update(sizes[k])
        bar.set_postfix(rows_per_s=f"{n_rows / (time.perf_counter() - start):.1f}")

    try:
        if client is None:
            for k in todo:
                try:
                    done(k, fit_partition(job, k, partitions[k], out))
                except Exception as err:  # noqa: BLE001 - a partition's error must not lose the others
                    errors.append(f"partition {k}: {type(err).__name__}: {err}")
        else:
            errors = _run_on_cluster(client, job, partitions, todo, out, done)
    finally:
        bar.close()
    if errors:
        raise RuntimeError(f"{out}: {len(errors)} partition(s) failed (the others are written; --resume runs "
                           f"them again): " + "; ".join(errors[:3]))
    n_total = n_flagged = 0
    for k in range(len(partitions)):
        flags = _flags(out / _PART_NAME.format(k))
        n_total += len(flags)
        n_flagged += int(sum(f != 0 for f in flags))
    return SurveyResult(out, len(partitions), len(partitions) - len(todo), n_total, n_flagged,
                        time.perf_counter() - start)


def _run_on_cluster(client, job: FitJob, partitions, todo, out: Path, done) -> list[str]:
    """Submit the partitions as Dask tasks; call ``done`` as each finishes; the errors."""
    from distributed import as_completed

    token = hashlib.sha256(f"{out.absolute()}{time.time_ns()}".encode()).hexdigest()[:10]
    futures = {client.submit(fit_partition, job, k, partitions[k], str(out.absolute()),
                             key=f"jaxpayne-fit-{token}-{k:06d}", pure=False): k for k in todo}
    errors = []
    for future in as_completed(futures):
        k = futures[future]
        try:
            done(k, future.result())
        except Exception as err:  # noqa: BLE001 - reported together at the end
            errors.append(f"partition {k}: {type(err).__name__}: {err}")
        future.release()
    return errors


def read_partitioned(path: str | os.PathLike):
    """The rows of a partitioned results folder as one astropy Table, partitions in order.

    Raises:
        ValueError: the folder has no partition files.
    """
    from astropy.table import vstack

    path = Path(path)
    parts = _parts(path)
    if not parts:
        raise ValueError(f"{path}: no finished partitions (part-NNNNNN.parquet) in this folder")
    tables = [_read_part(p) for p in parts]
    table = vstack(tables, metadata_conflicts="silent") if len(tables) > 1 else tables[0]
    table.meta = dict(tables[0].meta)
    return table


def _read_part(path: Path):
    """One partition as an astropy Table (through pyarrow; astropy's own reader leaves threads)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.io.misc import yaml
    from astropy.table import Table

    arrow = pq.read_table(path)
    header = (arrow.schema.metadata or {}).get(b"table_meta_yaml")
    described = yaml.load(header.decode()) if header else {}
    meta = dict(described.get("meta", {}))
    units = {c["name"]: c.get("unit") for c in described.get("datatype", []) if c.get("unit")}
    n = len(meta["PARAMS"].split(",")) if meta.get("PARAMS") else 0
    data = {}
    for name in arrow.column_names:
        column = arrow.column(name)
        if name == "covariance":
            data[name] = np.asarray(column.to_pylist(), dtype=np.float64).reshape(len(arrow), n, n)
        elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            data[name] = np.asarray([str(v or "") for v in column.to_pylist()], dtype=str)
        else:
            data[name] = column.to_numpy(zero_copy_only=False)
    table = Table(data, names=arrow.column_names, meta=meta)
    for name, unit in units.items():
        if name in table.colnames:
            table[name].unit = unit
    return table


def _parts(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if _PART_RE.match(p.name)) if path.is_dir() else []


def _finished(final: Path) -> bool:
    """A partition written and without rows to retry."""
    return final.exists() and not _retry_sources(final)


def _flags(path: Path) -> list[int]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["flags"]).column("flags").to_pylist()


def _retry_sources(path: Path) -> set[str]:
    """The files of a partition's FAILED-only rows (those a resumed run tries again)."""
    import pyarrow.parquet as pq

    from jaxpayne.fitting.fitter import Flags

    table = pq.read_table(path, columns=["source", "flags"]).to_pylist()
    sources: set[str] = set()
    for row in table:
        if int(row["flags"]) == int(Flags.FAILED):
            sources |= set(_split_sources(str(row["source"] or "")))
    return sources


def _split_sources(source: str) -> list[str]:
    """The files of a row's ``source`` (manifest stars join theirs with ``;``, combined spectra
    with ``"; "``)."""
    return [s.strip() for s in source.split(";") if s.strip()]


def _unit_sources(unit) -> set[str]:
    files = getattr(unit, "files", None)
    return {os.fspath(f) for f in files} if files is not None else {os.fspath(unit)}


def _first_segments(job: FitJob, partitions) -> int:
    """The number of segments of the first spectrum that reads (1 if none does)."""
    for part in partitions:
        for unit in part:
            for item in job.read([unit]):
                if not isinstance(item, tuple):
                    return int(item.n_segments)
                break
    return 1


def _inputs_digest(partitions) -> str:
    digest = hashlib.sha256()
    for part in partitions:
        for unit in part:
            digest.update(json.dumps(list(unit) if isinstance(unit, tuple) else os.fspath(unit),
                                     sort_keys=True, default=str).encode())
        digest.update(b"|")
    return digest.hexdigest()


def _replace_durably(src: Path, dst: Path) -> None:
    """Move a finished file into place and sync the folder (the rename reaches the disk)."""
    os.replace(src, dst)
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(dst.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

