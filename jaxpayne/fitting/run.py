"""Fit a stream of spectra and return (and write, as it goes) one table row per spectrum.

:func:`fit_spectra` is what ``jaxpayne fit`` runs. It consumes its input lazily, ``batch_size``
spectra at a time (read, convert, fit, record, move on), so memory is bounded by one batch plus
the finished rows, whatever the number of spectra; :func:`jaxpayne.io.iter_spectra` feeds it files
one by one. For runs whose rows should not stay in memory (~6 KB each), or that go to a Dask
cluster, :func:`jaxpayne.fitting.survey.fit_survey` runs it partition by partition into a folder
of Parquet files.

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
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from jaxpayne.fitting.fitter import CLIPPED_FRACTION_LIMIT, EVEN_PARAMETERS, Fitter, Flags
from jaxpayne.forward.doppler import SPEED_OF_LIGHT

__all__ = ["StarVisits", "batch_fixed_values", "check_setup", "fit_spectra", "group_visits", "model_fingerprint", "pad_batch", "read_results",
           "result_columns", "run_setup",
           "peek_spectrum", "spectrum_observation", "write_table", "atomic_write"]

#: Pixel counts are padded up to a multiple of this, so batches of similar spectra share one
#: compiled program.
LENGTH_QUANTUM = 512
_FORMATS = {".fits": "fits", ".fit": "fits", ".ecsv": "ascii.ecsv", ".parquet": "parquet"}


#: Definition of the reported radial velocity (recorded in every table's header).
RV_DEFINITION = ("relativistic radial velocity v [km/s], > 0 receding: lambda_obs/lambda_rest = "
                 "sqrt((1+v/c)/(1-v/c)); cz = c*(lambda_obs/lambda_rest - 1) differs at O(v^2/c)")
#: Table-header keyword holding the JSON of the run's model and settings.
SETTINGS_KEY = "FITSETUP"


def result_columns(param_names: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """Column names of a results table, in order.

    Per parameter: the value, its formal (Laplace) error ``<name>_err`` and ``<name>_err_scaled``,
    the formal error times √max(χ²_red, 1) added in quadrature to the user's systematic floor;
    for vsini and vmacro also ``<name>_upper`` (95 % upper limit where not detected). Then the
    velocity frame: ``rv_frame`` (frame of the input wavelengths), ``bc`` (barycentric correction
    from the header [km/s]) and ``rv_bary`` (rv in the barycentric frame where it can be formed).
    ``extra`` are further columns of the fitter (``fitter.extra_columns``; e.g. a binary fit's
    single-star comparison), after the parameters.
    """
    cols = ["id", "source"]
    for name in param_names:
        cols += [name, f"{name}_err", f"{name}_err_scaled"]
        if name in EVEN_PARAMETERS:
            cols.append(f"{name}_upper")
    cols += list(extra)
    return cols + ["rv_frame", "bc", "rv_bary", "chi2", "dof", "chi2_red", "n_pixels", "n_clipped",
                   "converged", "n_iter", "flags", "message", "covariance"]


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
    table_every: float | None = 60.0,
    error_floor: dict[str, float] | None = None,
    report=None,
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
            FAILED row where it occurs. With a :class:`~jaxpayne.fitting.visits.VisitFitter` as
            ``fitter``, the items are :class:`StarVisits` (:func:`group_visits`): one row per star.
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
            fsynced journal holds every finished row in between. 0 rewrites after every batch;
            None writes the table only at the end (a partition of :func:`fit_survey`).
        error_floor: parameter name → systematic error floor (parameter units), added in
            quadrature in ``<name>_err_scaled``.
        report: optional callable ``(source, message)`` told about every spectrum that becomes
            a FAILED row (the CLI prints them on stderr).
        **fitter_options: options of :class:`Fitter` (``rv``, ``vsini``, ``continuum``,
            ``restarts``...). ``n_segments`` defaults to the first spectrum's number of segments;
            a later spectrum with more segments gets a FAILED row, so pass it when spectra with
            different numbers of segments are mixed.

    Returns:
        ``astropy.table.Table`` with the columns of :func:`result_columns` (``flags`` holds
        :class:`~jaxpayne.fitting.Flags` bits); ``table.meta`` records the parameter names, the
        rv definition, the model (name and content hash) and every fit setting. With
        ``resume``, the earlier rows come first.

    Raises:
        FileExistsError: ``out`` (or its journal) exists and ``resume`` is False.
        ValueError: ``out`` has an unknown extension, or its existing rows come from another
            model or other settings.
    """
    from jaxpayne._progress import progress_bar

    out_path = Path(out) if out is not None else None
    if out_path is not None and (out_path.is_dir() or not out_path.suffix):
        raise ValueError(f"{out_path}: a folder is a partitioned output; fit it with "
                         "jaxpayne.fitting.fit_survey, or give a table file (.fits, .ecsv, .parquet)")
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
            first, items = peek_spectrum(items)
            fitter_options["n_segments"] = first.n_segments if first is not None else 1
        fitter = Fitter(model, **fitter_options)
    names = fitter.param_names
    extra = tuple(getattr(fitter, "extra_columns", ()))
    floor = dict(error_floor or {})
    unknown = sorted(set(floor) - set(names))
    if unknown:
        raise ValueError(f"error floor for unknown parameter(s) {unknown}; fitted: {list(names)}")
    setup = run_setup(model, fitter, floor)
    rows = _previous_rows(out_path, journal, names, setup, extra) if resume and out_path is not None else {}
    done = {key for key, row in rows.items() if not _retryable(row)}
    if journal is not None and not journal.exists():
        _write_journal_header(journal, setup)
    context = _RunContext(names, floor, report, extra)

    batch_size = max(1, int(batch_size))
    bar = progress_bar(total=total, unit="spectra", desc="fitting", progress=progress, leave=False)
    n_batch, written, n_fitted, t0 = None, -math.inf, 0, time.perf_counter()
    try:
        for chunk, last in _chunks(_entries(items, fitter, context, done, bar), batch_size):
            n_fit = sum(isinstance(entry, tuple) for entry in chunk)
            if n_batch is None and n_fit:
                n_batch = n_fit if last else batch_size  # fixed from the first fitted batch on
                n_batch = _device_multiple(n_batch)  # whole shards on every local device
            _commit(_chunk_rows(fitter, context, chunk, n_batch), rows, journal)
            if (out_path is not None and not last and table_every is not None
                    and time.monotonic() - written >= table_every):
                _write_table(_table(rows.values(), names, fitter, setup, extra), out_path)
                written = time.monotonic()
            n_fitted += n_fit
            bar.update(len(chunk))
            bar.set_postfix(spectra_per_s=f"{n_fitted / (time.perf_counter() - t0):.2f}")
    finally:
        bar.close()
    table = _table(rows.values(), names, fitter, setup, extra)
    if out_path is not None:
        # the table on disk must hold every row (also those only in the journal) before the
        # journal goes
        _write_table(table, out_path)
        if journal.exists():
            journal.unlink()
    return table


class _RunContext:
    """What row building needs: the parameter names, error floors, the failure reporter and the
    fitter's extra columns."""

    def __init__(self, names, floor, report, extra=()):
        self.names, self.floor, self.report, self.extra = tuple(names), dict(floor), report, tuple(extra)

    def failed(self, id_, source, message) -> dict:
        if self.report is not None:
            self.report(source, message)
        return _failed_row(self.names, id_, source, message, self.extra)


def model_fingerprint(model) -> dict:
    """Name and content hash (SHA-256 over weights, labels, bounds, grid and error) of a model."""
    import hashlib

    import jax

    digest = hashlib.sha256()
    for name in getattr(model, "label_names", ()):
        digest.update(str(name).encode())
    for array in (getattr(model, "wavelength", None), *getattr(model, "bounds", ()),
                  getattr(model, "emulator_error", None)):
        if array is not None:
            digest.update(np.ascontiguousarray(np.asarray(array, np.float64)).tobytes())
    params = getattr(model, "params", None)
    for leaf in jax.tree_util.tree_leaves(params):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    if params is None and hasattr(model, "predict"):  # no weights to hash: what it predicts
        lower, upper = (np.asarray(b, np.float64) for b in model.bounds)
        probe = lower + (upper - lower) * np.array([[0.5], [0.25], [0.75]])
        digest.update(np.ascontiguousarray(np.asarray(model.predict(probe), np.float32)).tobytes())
    provenance = getattr(model, "provenance", None) or {}
    name = provenance.get("name") or provenance.get("source") or type(model).__name__
    return {"name": str(name), "sha256": digest.hexdigest()}


def run_setup(model, fitter: Fitter, error_floor: dict | None = None) -> dict:
    """The model and every setting of a run (JSON-serialisable), as recorded in tables."""
    return {"model": model_fingerprint(model), "fit": fitter.describe_settings(),
            "error_floor": dict(error_floor or {})}


def _write_journal_header(journal: Path, setup: dict) -> None:
    with open(journal, "w", encoding="utf-8") as fh:
        fh.write(json.dumps({"__setup__": setup}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def peek_spectrum(items: Iterator):
    """The first Spectrum among ``items`` (or None), and an iterator over all of them (the
    items read so far, then the rest)."""
    head = []
    for item in items:
        head.append(item)
        if not isinstance(item, tuple):
            return item, chain(head, items)
    return None, iter(head)


def _entries(items, fitter: Fitter, context: _RunContext, done: set, bar):
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
                convert = visits_observations if isinstance(item, StarVisits) else spectrum_observation
                obs, extra = convert(fitter, item)
            except ValueError as err:
                failed, message = True, str(err)
        yield context.failed(id_, source, message) if failed else (id_, source, obs, extra)


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


def _device_multiple(n: int) -> int:
    """``n`` rounded up to a multiple of the local devices (batches shard over them)."""
    import jax

    k = jax.local_device_count()
    return -(-int(n) // k) * k


def _chunk_rows(fitter: Fitter, context: _RunContext, chunk, n_batch) -> list[dict]:
    """Fit a chunk's spectra in one batch of ``n_batch``; the chunk's rows in order."""
    fits = [entry for entry in chunk if isinstance(entry, tuple)]
    fitted = iter(())
    if fits:
        observations = [obs for _, _, obs, _ in fits]
        if isinstance(observations[0], list):  # stars of several visits (a VisitFitter)
            stars = observations + [observations[0]] * (n_batch - len(observations))
            batch = fitter.batch(stars, _padded_length(o for visits in stars for o in visits))
        else:
            batch = pad_batch(observations, n_batch)
        fixed = batch_fixed_values([fit[3].get("fixed") for fit in fits], fitter.forward.fixed, n_batch)
        result = fitter.fit(batch) if fixed is None else fitter.fit(batch, fixed=fixed)
        fitted = (_result_row(context, *fit[:2], fit[3], result, i) for i, fit in enumerate(fits))
    return [next(fitted) if isinstance(entry, tuple) else entry for entry in chunk]


def batch_fixed_values(per_star, held, n_batch: int) -> dict | None:
    """Per-spectrum fixed values of a batch as ``name → (n_batch,)`` arrays, or None when no
    spectrum has its own.

    Args:
        per_star: one mapping (or None) per spectrum of the batch: its own fixed values (the
            ``extra["fixed"]`` of :func:`spectrum_observation`).
        held: the fit's fixed values (``fitter.forward.fixed``), taken by a spectrum without
            its own value.
        n_batch: the padded batch size; filler spectra repeat the first spectrum's values.
    """
    per_star = [dict(values or {}) for values in per_star]
    if not any(per_star):
        return None
    names = sorted(set().union(*per_star))
    values = [[star.get(name, held[name]) for name in names] for star in per_star]
    values += [values[0]] * (n_batch - len(values))
    return {name: np.array([v[k] for v in values]) for k, name in enumerate(names)}


def spectrum_observation(fitter: Fitter, spectrum):
    """A :class:`~jaxpayne.io.Spectrum` as a checked Observation for ``fitter`` (also used by
    ``sample``); pixels the model cannot reach are masked.

    Returns:
        The observation and ``extra``: the good pixels, those masked here, the velocity frame
        and barycentric correction of the input.

    Raises:
        ValueError: for a spectrum with more segments than the fit, or none of whose good pixels
            the model covers.
    """
    fm = fitter.forward
    if spectrum.n_segments > fm.n_segments:
        raise ValueError(
            f"spectrum has {spectrum.n_segments} segments but the fit models {fm.n_segments} "
            "(n_segments comes from the first spectrum unless given)"
        )
    ivar = np.where(spectrum.good, spectrum.ivar, 0.0)
    obs = fitter.observation(
        spectrum.wavelength, np.where(spectrum.good, spectrum.flux, 0.0), ivar,
        segment=spectrum.segment, medium=spectrum.medium,
    )
    n_good = int(np.sum(ivar > 0))
    kept = int(np.sum(np.asarray(obs.ivar) > 0))
    if n_good and not kept:
        wave = np.asarray(spectrum.wavelength)
        ranges = ", ".join(f"{lo:.1f}–{hi:.1f}" for lo, hi in fm.grid.emulator_range)
        raise ValueError(
            f"spectrum ({wave.min():.1f}–{wave.max():.1f} Å) lies entirely outside the model's "
            f"range ({ranges} Å, {fm.medium})"
        )
    bc = getattr(spectrum, "barycentric_correction", None)
    extra = {"n_good": n_good, "n_masked": n_good - kept,
             "frame": getattr(spectrum, "frame", None) or "unknown",
             "bc": float("nan") if bc is None else float(bc)}
    fixed = (getattr(spectrum, "meta", None) or {}).get("fixed")
    if fixed:  # per-star values of parameters the fit holds fixed (a manifest's fixed_ columns)
        unknown = sorted(set(fixed) - set(fm.fixed))
        if unknown:
            raise ValueError(f"per-star fixed values for {unknown}, which this fit does not hold fixed "
                             f"(fixed: {sorted(fm.fixed)})")
        fitter.batch_fixed(fixed, 1)  # a value beyond the fit's margins fails this spectrum only
        extra["fixed"] = dict(fixed)
    return obs, extra


@dataclass(frozen=True)
class StarVisits:
    """One star's visit spectra, fitted jointly: an item of :func:`fit_spectra`'s input for a
    :class:`~jaxpayne.fitting.visits.VisitFitter` (see :func:`group_visits`).

    Attributes:
        id: the star's name (a row's ``id``).
        source: the file(s) its visits come from (``;``-separated).
        spectra: the visits, :class:`~jaxpayne.io.Spectrum` objects.
    """

    id: str
    source: str
    spectra: tuple

    @property
    def n_segments(self) -> int:
        return max(s.n_segments for s in self.spectra)


_VISIT_SUFFIX = re.compile(r"_visit\d+$")


def group_visits(items: Iterable, by: str = "file") -> Iterator:
    """Group a stream of spectra into stars of several visits (:class:`StarVisits`).

    Args:
        items: spectra and read failures, as from :func:`jaxpayne.io.iter_spectra`.
        by: ``"file"``: the spectra of one file are one star's visits (a binspec visit file, an
            apStar file read with ``visits=True``; an apStar's combined row is left out), streamed
            file by file; ``"object"``: spectra sharing an object (``meta["OBJID"]``, else the id
            without a ``_visitN`` suffix) across files are one star (apVisit files), in the order
            each object first appears (the whole input is read first).

    Yields:
        :class:`StarVisits` and the read failures, in input order.
    """
    if by not in ("file", "object"):
        raise ValueError(f"group visits by 'file' or 'object', not {by!r}")

    def star_of(spectrum) -> str:
        meta = getattr(spectrum, "meta", None) or {}
        return str(meta.get("OBJID") or _VISIT_SUFFIX.sub("", str(spectrum.id)))

    def visits(group) -> list:
        kept = [s for s in group if (getattr(s, "meta", None) or {}).get("kind") != "combined"]
        return kept or list(group)

    if by == "file":
        source, group = None, []
        for item in items:
            failed = isinstance(item, tuple)  # a read failure: another file
            if group and (failed or item.source != source):
                yield StarVisits(star_of(group[0]), str(source), tuple(visits(group)))
                group = []
            if failed:
                yield item
                continue
            source = item.source
            group.append(item)
        if group:
            yield StarVisits(star_of(group[0]), str(source), tuple(visits(group)))
        return
    stars: dict[str, list] = {}
    for item in items:
        if isinstance(item, tuple):
            yield item
        else:
            stars.setdefault(star_of(item), []).append(item)
    for star, group in stars.items():
        group = visits(group)
        yield StarVisits(star, ";".join(dict.fromkeys(str(s.source) for s in group)), tuple(group))


def visits_observations(fitter, star: StarVisits):
    """A star's visits as checked observations for a
    :class:`~jaxpayne.fitting.visits.VisitFitter`, every visit in one velocity frame.

    Topocentric visits with a barycentric correction are moved to the barycentric frame (their
    wavelengths times the Doppler factor of the correction), so that the fitted velocities of
    all visits share one frame, as an orbit needs.

    Returns:
        The list of visit observations and the star's ``extra`` (pixel counts summed over the
        visits, the common frame, no barycentric correction left to apply).

    Raises:
        ValueError: a star whose number of visits is not the fitter's, or whose visits were
            shifted to the rest frame (no velocity information left) while velocities are fitted.
    """
    if len(star.spectra) != fitter.n_visits:
        raise ValueError(f"star has {len(star.spectra)} visits but this run fits {fitter.n_visits} per star "
                         "(fit stars with other visit counts in a separate run)")
    spectra, frames = [], set()
    for spectrum in star.spectra:
        frame = getattr(spectrum, "frame", None) or "unknown"
        bc = getattr(spectrum, "barycentric_correction", None)
        if frame == "rest" and fitter.velocities != "constant":
            raise ValueError(f"{spectrum.source}: visit {spectrum.id!r} was shifted to the star's rest frame "
                             "(apStar visit rows); its velocity is gone: fit the apVisit files (group by object)")
        if frame == "topocentric" and bc is not None and np.isfinite(bc):
            beta = float(bc) / SPEED_OF_LIGHT
            spectrum = spectrum.replace(wavelength=np.asarray(spectrum.wavelength) * math.sqrt((1 + beta) / (1 - beta)),
                                        frame="barycentric", barycentric_correction=None)
            frame = "barycentric"
        frames.add(frame)
        spectra.append(spectrum)
    if len(frames) > 1 and fitter.velocities != "constant":
        raise ValueError(f"visits in different velocity frames ({', '.join(sorted(frames))})")
    observations, n_good, n_masked = [], 0, 0
    for spectrum in spectra:
        obs, extra = spectrum_observation(fitter.visit_fitter, spectrum)
        observations.append(obs)
        n_good, n_masked = n_good + extra["n_good"], n_masked + extra["n_masked"]
    return observations, {"n_good": n_good, "n_masked": n_masked, "frame": frames.pop(), "bc": float("nan")}


def _barycentric(rv: float, frame: str, bc: float) -> float:
    """rv in the barycentric frame: relativistic addition of the barycentric correction to a
    topocentric rv; the rv itself for barycentric/heliocentric input; NaN otherwise."""
    if frame == "topocentric" and np.isfinite(bc):
        return (rv + bc) / (1.0 + rv * bc / SPEED_OF_LIGHT**2)
    if frame in ("barycentric", "heliocentric"):
        return rv
    return float("nan")


def _padded_length(observations) -> int:
    """The longest of ``observations``' pixel counts, rounded up to a multiple of LENGTH_QUANTUM."""
    longest = max(int(np.shape(o.flux)[0]) for o in observations)
    return LENGTH_QUANTUM * math.ceil(longest / LENGTH_QUANTUM)


def pad_batch(observations, n_batch: int, length: int | None = None):
    """Stack observations, padding pixels to ``length`` and the batch to ``n_batch`` spectra
    (filler spectra are copies of the first, discarded afterwards).

    ``length`` defaults to the longest observation rounded up to a multiple of
    :data:`LENGTH_QUANTUM`, so batches of similar spectra share one compiled program.
    """
    from jaxpayne.forward import pad_observations

    if length is None:
        length = _padded_length(observations)
    obs = list(observations) + [observations[0]] * (n_batch - len(observations))
    return pad_observations(obs, length)


def _result_row(context: _RunContext, id_, source, extra, result, i) -> dict:
    names = context.names
    row: dict[str, Any] = {"id": id_, "source": source}
    theta, cov = result.theta[i], result.covariance[i]
    err = np.sqrt(np.clip(np.diag(cov), 0, None))
    dof = int(result.dof[i])
    chi2 = float(result.chi2[i])
    chi2_red = chi2 / dof if dof > 0 else float("nan")
    inflate = math.sqrt(max(chi2_red, 1.0)) if np.isfinite(chi2_red) else 1.0
    for j, name in enumerate(names):
        row[name] = float(theta[j])
        row[f"{name}_err"] = float(err[j])
        row[f"{name}_err_scaled"] = float(math.hypot(err[j] * inflate, context.floor.get(name, 0.0)))
        if name in EVEN_PARAMETERS:
            row[f"{name}_upper"] = float(result.upper_limits.get(name, np.full(i + 1, np.nan))[i])
    for name in context.extra:
        row[name] = float(result.extra[name][i])
    n_clipped = int(extra["n_masked"]) + int(result.n_clipped[i])
    flags = int(result.flags[i])
    note = ""
    if n_clipped:
        note = f"{n_clipped} of {extra['n_good']} good pixels outside the model's range"
        if n_clipped > CLIPPED_FRACTION_LIMIT * max(extra["n_good"], 1):
            flags |= int(Flags.PIXELS_CLIPPED)
    rv = row.get("rv", float("nan"))
    if "rv" not in names:
        rv = float("nan")
    row.update(
        rv_frame=extra["frame"],
        bc=extra["bc"],
        rv_bary=_barycentric(rv, extra["frame"], extra["bc"]) if np.isfinite(rv) else float("nan"),
        chi2=chi2,
        dof=dof,
        chi2_red=chi2_red,
        n_pixels=int(result.n_pixels[i]),
        n_clipped=n_clipped,
        converged=bool(result.converged[i]),
        n_iter=int(result.n_iter[i]),
        flags=flags,
        message="; ".join(m for m in (_describe_flags(flags), note) if m),
        covariance=np.array(cov, dtype=np.float64),  # a compact copy, not a view of the batch
    )
    return row


def _describe_flags(flags: int) -> str:
    return ",".join(f.name for f in Flags if flags & f)


def _failed_row(names, id_, source, message, extra=()) -> dict:
    row: dict[str, Any] = {"id": id_, "source": source}
    for name in names:
        row[name] = row[f"{name}_err"] = row[f"{name}_err_scaled"] = float("nan")
        if name in EVEN_PARAMETERS:
            row[f"{name}_upper"] = float("nan")
    for name in extra:
        row[name] = float("nan")
    n = len(names)
    row.update(rv_frame="unknown", bc=float("nan"), rv_bary=float("nan"),
               chi2=float("nan"), dof=0, chi2_red=float("nan"), n_pixels=0, n_clipped=0, converged=False, n_iter=0,
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


def write_table(table, path: str | os.PathLike) -> None:
    """Write an astropy table atomically and durably (format from the extension: .fits, .ecsv,
    .parquet): a synced temporary file renamed over ``path``."""
    _write_table(table, Path(path))


def _write_table(table, out_path: Path) -> None:
    """Write atomically and durably: a synced temporary file renamed over ``out_path``."""
    fmt = _FORMATS[out_path.suffix.lower()]

    def write(tmp):
        try:
            table.write(tmp, format=fmt, overwrite=True)
        except ImportError as err:
            raise ValueError(f"{out_path}: cannot write {fmt} ({err}); install pyarrow or use .fits/.ecsv") from None

    atomic_write(out_path, write, suffix=".tmp" + out_path.suffix)


def atomic_write(path: str | os.PathLike, write, suffix: str = ".tmp") -> None:
    """Write a file atomically and durably: ``write(tmp)`` fills a temporary file beside ``path``,
    which is synced, renamed over ``path``, and (POSIX) the rename itself synced to disk.

    Args:
        path: the file to (re)place.
        write: callable taking the temporary path and writing the whole file there.
        suffix: appended to the name for the temporary file (keep the extension where the writer
            reads the format from it).
    """
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    write(tmp)
    with open(tmp, "r+b") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    if hasattr(os, "O_DIRECTORY"):  # POSIX: the rename itself reaches the disk
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _table(rows, names, fitter, setup, extra=()):
    from astropy.table import Table

    rows = list(rows)
    cols = result_columns(names, extra)
    n = len(names)
    data = {c: [r[c] for r in rows] for c in cols}
    if not rows:
        data["covariance"] = np.zeros((0, n, n))
    else:
        # rows read back from some formats carry the matrix flattened
        data["covariance"] = np.stack([np.asarray(c, dtype=np.float64).reshape(n, n) for c in data["covariance"]])
    table = Table(data, names=cols)
    for c in cols:
        if c in ("id", "source", "message", "rv_frame"):
            table[c] = table[c].astype(str)
    model = fitter.model
    units = dict(zip(getattr(model, "label_names", ()), getattr(model, "label_units", ())))
    units.update(rv="km/s", vsini="km/s", vmacro="km/s")
    space = getattr(fitter, "space", None)
    if space is not None:
        units.update({n: u for n, u in zip(space.names, space.units) if u})
    for name in names:
        unit = units.get(name)
        if unit and unit != "dex":
            for c in (name, f"{name}_err", f"{name}_err_scaled", f"{name}_upper"):
                if c in table.colnames:
                    table[c].unit = unit
    table["bc"].unit = table["rv_bary"].unit = "km/s"
    table.meta["PARAMS"] = ",".join(names)
    table.meta["CONTINUU"] = str(fitter.forward.continuum)
    table.meta["FLAGS"] = "; ".join(f"{f.value}={f.name}" for f in Flags)
    table.meta["RVDEF"] = RV_DEFINITION
    table.meta["MODEL"] = setup["model"]["name"]
    table.meta["MODELSHA"] = setup["model"]["sha256"]
    table.meta[SETTINGS_KEY] = json.dumps(setup, sort_keys=True)
    return table


def _previous_rows(out_path: Path, journal: Path, names, setup: dict, extra=()) -> dict[tuple[str, str], dict]:
    """The rows of an earlier run: the table, then the journal on top (a later row wins).

    Raises:
        ValueError: when the earlier run used another model or other settings.
    """
    rows: dict[tuple[str, str], dict] = {}
    if out_path.exists():
        check_setup(out_path, _table_setup(out_path), setup)
        for row in read_results(out_path):
            _add(rows, row)
    if journal.exists():
        with open(journal, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut off by a kill
                if "__setup__" in row:
                    check_setup(journal, row["__setup__"], setup)
                    continue
                _add(rows, row)
    cols = set(result_columns(names, extra))
    for row in rows.values():
        if set(row) != cols:
            raise ValueError(
                f"{out_path}: existing results have different columns (another model or settings?); "
                "write to a new file"
            )
    return rows


def _table_setup(path: Path) -> dict | None:
    """The setup recorded in a results table's header (None if absent or unreadable)."""
    if _FORMATS.get(path.suffix.lower()) == "parquet":
        try:  # the header only (astropy's parquet reader leaves threads behind, see read_results)
            import pyarrow.parquet as pq
            from astropy.io.misc import yaml

            header = (pq.read_schema(path).metadata or {}).get(b"table_meta_yaml")
            value = dict(yaml.load(header.decode()).get("meta", {})).get(SETTINGS_KEY) if header else None
            return json.loads(value) if value else None
        except Exception:  # noqa: BLE001 - foreign or old files carry no setup
            return None
    try:
        from astropy.table import Table

        value = Table.read(path, format=_FORMATS.get(path.suffix.lower())).meta.get(SETTINGS_KEY)
        return json.loads(value) if value else None
    except Exception:  # noqa: BLE001 - read_results reports unreadable tables
        return None


def check_setup(path: Path, previous: dict | None, setup: dict) -> None:
    """Refuse to resume a run made with another model or other settings.

    Args:
        path: what is being resumed (named in the message).
        previous: the earlier run's :func:`run_setup` (None if it recorded none).
        setup: this run's.

    Raises:
        ValueError: one line naming ``path`` and what differs.
    """
    if previous is None:
        raise ValueError(f"{path}: existing results record no model or settings; write to a new file")
    previous = json.loads(json.dumps(previous, sort_keys=True))
    current = json.loads(json.dumps(setup, sort_keys=True))
    if previous["model"] != current["model"]:
        raise ValueError(
            f"{path}: existing results come from model {previous['model'].get('name')} "
            f"(sha256 {str(previous['model'].get('sha256'))[:12]}…), not {current['model']['name']} "
            f"({current['model']['sha256'][:12]}…); write to a new file"
        )
    changed = sorted(k for k in set(previous["fit"]) | set(current["fit"])
                     if previous["fit"].get(k) != current["fit"].get(k))
    if previous.get("error_floor") != current.get("error_floor"):
        changed.append("error_floor")
    if changed:
        raise ValueError(
            f"{path}: existing results were fitted with other settings ({', '.join(changed)}); "
            "use the same options to resume, or write to a new file"
        )


def _key(source, id_) -> tuple[str, str]:
    """Identity of a spectrum for resuming (empty/masked table cells read back as "")."""
    return (str(source or ""), str(id_ or ""))


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of a results table written by :func:`fit_spectra`, or of a partitioned folder written
    by :func:`~jaxpayne.fitting.survey.fit_survey` (partitions in order), as dicts."""
    from astropy.table import Table

    path = Path(path)
    if path.is_dir():
        parts = sorted(path.glob("part-[0-9][0-9][0-9][0-9][0-9][0-9].parquet"))
        if not parts:
            raise ValueError(f"{path}: no finished partitions (part-NNNNNN.parquet) in this folder")
        return [row for part in parts for row in read_results(part)]
    if _FORMATS.get(path.suffix.lower()) == "parquet":
        # pyarrow directly: astropy's parquet reader leaves threads that abort the interpreter at exit
        try:
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        except Exception as err:  # pyarrow raises many types for unreadable files
            raise ValueError(f"{path}: cannot read existing results ({type(err).__name__}: {err})") from None
        for row in rows:
            for c in ("id", "source", "message", "rv_frame"):
                if c in row:
                    row[c] = str(row.get(c) or "")
        return rows
    fmt = _FORMATS.get(path.suffix.lower())
    try:
        # NaN is a value here (an unfitted parameter), not a missing cell
        table = Table.read(path, format=fmt, **({"mask_invalid": False} if fmt == "fits" else {}))
    except Exception as err:  # astropy raises many types for unreadable files
        raise ValueError(f"{path}: cannot read existing results ({type(err).__name__}: {err})") from None
    rows = []
    for r in table:
        row = {}
        for c in table.colnames:
            v = r[c]
            row[c] = v.tolist() if hasattr(v, "tolist") else v
            if c in ("id", "source", "message", "rv_frame"):
                row[c] = str(row[c] or "")
        rows.append(row)
    return rows
