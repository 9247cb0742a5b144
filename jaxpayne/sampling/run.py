"""Sample a stream of spectra, resumably: what ``jaxpayne sample`` runs.

Spectra are taken ``batch_size`` at a time, fitted (the starts), sampled in one compiled call and
written as one netCDF part ``<OUT>.parts/part-NNNNNN.nc`` (atomically: a synced temporary file
renamed) before the next batch is read. Spectra that cannot be read or converted are recorded in
``<OUT>.parts/failed.jsonl``. At the end the parts are joined along ``star`` into ``OUT`` (netCDF,
readable by ArviZ), the summary table is written, and the parts folder is removed. Killing the
run at any moment loses no finished batch: ``resume=True`` keeps the stars already sampled
(matched by source and id), retries the failures, and refuses parts made with another model or
other settings.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from itertools import chain
from pathlib import Path

import numpy as np

from jaxpayne.fitting.run import (atomic_write, batch_fixed_values, model_fingerprint, pad_batch, peek_spectrum,
                                  spectrum_observation, write_table)
from jaxpayne.sampling.sampler import Sampler
from jaxpayne.sampling.summary import failed_summary_row, summarize, summary_table

__all__ = ["read_posterior", "sample_spectra"]

_SUMMARY_FORMATS = (".fits", ".fit", ".ecsv", ".parquet")


def sample_spectra(model, spectra: Iterable, *, out, summary=None, resume: bool = False, batch_size: int = 16,
                   progress: bool = True, sampler: Sampler | None = None, report=None,
                   log_likelihood: bool = False, constraints: Mapping[str, Mapping[str, float]] | None = None,
                   **sampler_options):
    """Sample the posteriors of a stream of spectra; write InferenceData (netCDF) and a summary.

    Args:
        model: a :class:`jaxpayne.Model`.
        spectra: :class:`jaxpayne.io.Spectrum` objects and :class:`~jaxpayne.io.ReadFailure`
            ``(source, message)`` items (e.g. :func:`jaxpayne.io.iter_spectra`).
        out: the netCDF file of the posteriors (``.nc``).
        summary: optional summary table (``.fits``, ``.ecsv`` or ``.parquet``); see
            :func:`~jaxpayne.sampling.summary.summary_columns`.
        resume: continue an interrupted run (see the module notes).
        batch_size: spectra per compiled call.
        progress: progress bars.
        sampler: a ready :class:`Sampler` (else built from ``sampler_options``).
        report: optional callable ``(source, message)`` told about every failed spectrum.
        log_likelihood: add the ``log_likelihood`` group.
        constraints: per-star data of the sampler's ``terms``: star id → name → value (e.g.
            :func:`~jaxpayne.sampling.terms.read_constraints`); stars without an entry have none.
        **sampler_options: :class:`Sampler` and :class:`~jaxpayne.fitting.Fitter` options;
            ``n_segments`` defaults to the first spectrum's.

    Returns:
        The summary as an astropy Table (FAILED rows included).

    Raises:
        FileExistsError: ``out`` or its parts exist and ``resume`` is False.
        ValueError: bad file names, or parts from another model or other settings.
    """
    from jaxpayne._progress import progress_bar

    out = Path(out)
    if out.suffix.lower() != ".nc":
        raise ValueError(f"{out}: the posterior file must end in .nc (netCDF)")
    if summary is not None and Path(summary).suffix.lower() not in _SUMMARY_FORMATS:
        raise ValueError(f"{summary}: the summary must end in .fits, .ecsv or .parquet")
    parts = out.with_name(out.name + ".parts")
    if not resume and (out.exists() or parts.exists()):
        raise FileExistsError(f"{out}: output exists; use --resume to continue it or remove it")
    items = iter(spectra)
    if sampler is None:
        if "n_segments" not in sampler_options and "fitter" not in sampler_options:
            first, items = peek_spectrum(items)
            sampler_options["n_segments"] = first.n_segments if first is not None else 1
        sampler = Sampler(model, **sampler_options)
    names = list(sampler.space.free_names)
    setup = {"model": model_fingerprint(model), "sample": sampler.describe_settings()}
    setup = json.loads(json.dumps(setup, sort_keys=True, default=str))
    parts.mkdir(exist_ok=True)
    setup_file = parts / "setup.json"
    if setup_file.exists():
        _check_setup(parts, json.loads(setup_file.read_text()), setup)
    else:
        text = json.dumps(setup, sort_keys=True)
        atomic_write(setup_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if out.exists():  # a finished earlier run being extended: its stars become the first part
        _check_setup(out, _file_setup(out), setup)
        first_part = parts / "part-000000.nc"
        if not first_part.exists():
            shutil.copyfile(out, first_part)
    done = _done_keys(parts)
    failed_file = parts / "failed.jsonl"
    failures = _read_failures(failed_file)
    bar = progress_bar(unit="spectra", desc="sampling", progress=progress, leave=False)
    seen: dict = {}
    chunk: list = []
    n_batch = None  # fixed by the first batch: later batches share its compiled program
    index = 1 + max([int(p.stem.split("-")[1]) for p in parts.glob("part-*.nc")] or [0])
    try:
        for item in chain(items, [None]):
            if item is not None:
                entry = _entry(item, sampler, seen, done, report, constraints)
                if entry is None:
                    bar.update(1)
                    continue
                if entry[0] == "failed":
                    failures[(entry[2], entry[1])] = entry[3]
                    _append_failure(failed_file, entry[1], entry[2], entry[3])
                    bar.update(1)
                    continue
                failures.pop((entry[2], entry[1]), None)
                for source in entry[2].split("; "):  # a file that now reads: drop its read failure
                    failures.pop((source, ""), None)
                chunk.append(entry)
            if chunk and (len(chunk) == batch_size or item is None):
                if n_batch is None:
                    n_batch = len(chunk) if item is None else batch_size
                _sample_chunk(sampler, chunk, parts / f"part-{index:06d}.nc", n_batch, progress,
                              log_likelihood)
                index += 1
                bar.update(len(chunk))
                chunk = []
    finally:
        bar.close()
    idata = _join_parts(sorted(parts.glob("part-*.nc")))
    rows = summarize(idata) if idata is not None else []
    sampled = {(r["source"], r["id"]) for r in rows}
    rows += [failed_summary_row(names, id_, source, message, sampler.derived)
             for (source, id_), message in failures.items() if (source, id_) not in sampled]
    meta = {"MODEL": setup["model"]["name"], "MODELSHA": setup["model"]["sha256"],
            "PRIOR": sampler.prior.describe(), "SAMPSETUP": json.dumps(setup, sort_keys=True)}
    table = summary_table(rows, names, meta, sampler.derived)
    if idata is not None:
        atomic_write(out, lambda tmp: idata.to_netcdf(str(tmp)), suffix=".tmp.nc")
    if summary is not None:
        write_table(table, summary)
    shutil.rmtree(parts)
    return table


def read_posterior(path):
    """The InferenceData of a ``jaxpayne sample`` netCDF file."""
    import arviz as az

    return az.from_netcdf(str(path))


def _entry(item, sampler, seen, done, report, constraints=None):
    """("fit", id, source, obs, own fixed values or None, constraints or None) to sample,
    ("failed", id, source, message), or None (done)."""
    if isinstance(item, tuple):
        source, message = map(str, item)
        if report is not None:
            report(source, message)
        return ("failed", "", source, message)
    key = (item.source, item.id)
    seen[key] = count = seen.get(key, 0) + 1
    id_ = item.id if count == 1 else f"{item.id}#{count}"
    if (str(item.source), str(id_)) in done:
        return None
    try:
        obs, extra = spectrum_observation(sampler.fitter, item)
    except ValueError as err:
        if report is not None:
            report(item.source, str(err))
        return ("failed", id_, str(item.source), str(err))
    return ("fit", id_, str(item.source), obs, extra.get("fixed"), (constraints or {}).get(str(item.id)))


def _sample_chunk(sampler, chunk, path: Path, batch_size: int, progress: bool, log_likelihood: bool):
    """Sample a chunk padded to ``batch_size`` spectra (copies of the first, dropped), write a part."""
    observations = [entry[3] for entry in chunk]
    n = len(chunk)
    batch = pad_batch(observations, batch_size)
    fixed = batch_fixed_values([entry[4] for entry in chunk], sampler.fitter.forward.fixed, batch_size)
    names = sampler.posterior.constraint_names
    per_star = [entry[5] or {} for entry in chunk]
    per_star += [per_star[0]] * (batch_size - n)
    constraints = {k: np.array([float(star.get(k, np.nan)) for star in per_star]) for k in names}
    ids = [entry[1] for entry in chunk] + [f"__pad{i}" for i in range(batch_size - n)]
    sources = [entry[2] for entry in chunk] + [""] * (batch_size - n)
    # ids must be unique within a part for the star coordinate; sources keep them apart across files
    idata = sampler.sample(batch, fixed, ids=_unique(ids, sources), sources=sources, progress=progress,
                           log_likelihood=log_likelihood, constraints=constraints or None)
    if n < batch_size:
        idata = idata.isel(star=slice(0, n))
    atomic_write(path, lambda tmp: idata.to_netcdf(str(tmp)))


def _unique(ids, sources):
    counts: dict = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    return [i if counts[i] == 1 else f"{s}:{i}" for i, s in zip(ids, sources)]


def _join_parts(paths):
    """The parts joined along ``star`` (pixels padded with NaN to the longest), or None."""
    import arviz as az
    import xarray as xr

    if not paths:
        return None
    loaded = [az.from_netcdf(str(p)) for p in paths]
    if len(loaded) == 1:
        return loaded[0].copy()
    groups = {}
    for group in loaded[0].groups():
        datasets = [d[group] for d in loaded]
        joined = xr.concat(datasets, dim="star", join="outer", data_vars="all", coords="minimal",
                           compat="override", combine_attrs="override")
        groups[group] = joined
    return az.InferenceData(**groups)


def _done_keys(parts: Path) -> set:
    import xarray as xr

    done = set()
    for path in sorted(parts.glob("part-*.nc")):
        try:
            const = xr.open_dataset(path, group="constant_data", engine="h5netcdf")
        except Exception as err:  # noqa: BLE001 - a truncated part: report and stop
            raise ValueError(f"{path}: unreadable part ({type(err).__name__}: {err}); remove it to resample") from None
        with const:
            stars = [str(s) for s in const["star"].values]
            sources = [str(s) for s in const["source"].values]
        for star, source in zip(stars, sources):
            done.add((source, star))
            if star.startswith(source + ":"):
                done.add((source, star[len(source) + 1:]))
    return done


def _file_setup(path: Path) -> dict | None:
    import xarray as xr

    try:
        with xr.open_dataset(path, group="posterior", engine="h5netcdf") as post:
            return {"model": {"name": post.attrs.get("model"), "sha256": post.attrs.get("model_sha256")},
                    "sample": json.loads(post.attrs.get("setup", "null"))}
    except Exception:  # noqa: BLE001
        return None


def _check_setup(path: Path, previous: dict | None, setup: dict) -> None:
    if previous is None:
        raise ValueError(f"{path}: records no model or settings; write to a new file")
    previous = json.loads(json.dumps(previous, sort_keys=True, default=str))
    if previous.get("model", {}).get("sha256") != setup["model"]["sha256"]:
        raise ValueError(f"{path}: existing posteriors come from another model "
                         f"({previous.get('model', {}).get('name')}); write to a new file")
    old, new = previous.get("sample") or {}, setup["sample"]
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        raise ValueError(f"{path}: existing posteriors were drawn with other settings ({', '.join(changed)}); "
                         "use the same options to resume, or write to a new file")


def _read_failures(path: Path) -> dict:
    failures = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a kill
            failures[(row["source"], row["id"])] = row["message"]
    return failures


def _append_failure(path: Path, id_, source, message) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": id_, "source": source, "message": message}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
