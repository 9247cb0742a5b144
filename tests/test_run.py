"""fit_spectra as a stream: lazy input, batch shapes, table rewrites, journal, resume; iter_spectra."""

import json

import numpy as np
import pytest

from jaxpayne.fitting import Fitter, Flags, fit_spectra, run
from jaxpayne.forward.synthetic import SyntheticLineEmulator
from jaxpayne.io import ReadFailure, Spectrum, SpectrumFormatError, iter_spectra

OPTS = {"rv": True, "max_rv": 100.0, "continuum": "none", "restarts": 1, "progress": False, "emulator_error": False}


@pytest.fixture(scope="module")
def emulator():
    wave = np.exp(np.linspace(np.log(5000.0), np.log(5100.0), 1200))
    return SyntheticLineEmulator(wave, n_lines=40, seed=3)


def shared(fitter):
    return {"fitter": fitter, "progress": False}


@pytest.fixture(scope="module")
def fitter(emulator):
    """One fitter shared by the tests that do not build their own: its compiled shapes are reused."""
    return Fitter(emulator, **{k: v for k, v in OPTS.items() if k != "progress"})


def make_spectra(emulator, n, seed=0, n_pixels=900, source=""):
    """Noisy spectra from the forward model (SNR 50) with ids s0, s1, ..."""
    from jaxpayne.forward import ForwardModel, make_observation

    rng = np.random.default_rng(seed)
    lo, hi = emulator.bounds
    fm = ForwardModel(emulator, rotation=False, macroturbulence=False, continuum="none", max_rv=100.0)
    wave = np.exp(np.linspace(np.log(5010.0), np.log(5090.0), n_pixels))
    template = make_observation(wave, np.ones_like(wave))
    spectra = []
    for i in range(n):
        theta = np.r_[lo + (hi - lo) * rng.uniform(0.3, 0.7, 3), rng.uniform(-20, 20)]
        clean = np.asarray(fm.model_flux(theta, template), np.float64)
        err = np.full_like(clean, 0.02)
        spectra.append(Spectrum.from_error(wave, clean + rng.normal(size=clean.size) * err, err, id=f"s{i}",
                                           source=source))
    return spectra


@pytest.fixture
def fit_log(monkeypatch):
    """Record, for each Fitter.fit call, the batch shape and how many input items were pulled."""
    log = {"calls": [], "pulled": 0}
    real_fit = Fitter.fit

    def fit(self, batch):
        log["calls"].append((np.shape(batch.wavelength), log["pulled"]))
        return real_fit(self, batch)

    monkeypatch.setattr(Fitter, "fit", fit)
    return log


def counted(items, log):
    for item in items:
        log["pulled"] += 1
        yield item


def test_generator_is_consumed_batch_by_batch(emulator, fit_log, monkeypatch):
    short = make_spectra(emulator, 3, seed=1, n_pixels=400)
    long = make_spectra(emulator, 4, seed=2)
    spectra = [s.replace(id=f"short{i}") for i, s in enumerate(short)] + long + [long[0]]  # long[0] twice
    totals = []

    import tqdm.auto

    real_tqdm = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **k: totals.append(k.get("total")) or real_tqdm(*a, **k))
    table = fit_spectra(emulator, counted(spectra, fit_log), batch_size=2, **OPTS)
    # each batch is fitted as soon as its spectra are read, never before
    assert [pulled for _, pulled in fit_log["calls"]] == [2, 4, 6, 8]
    # the batch dimension stays fixed (the last, single spectrum is padded with a copy); pixels are
    # padded per batch to a multiple of 512
    assert [shape for shape, _ in fit_log["calls"]] == [(2, 512), (2, 1024), (2, 1024), (2, 1024)]
    assert list(table["id"]) == ["short0", "short1", "short2", "s0", "s1", "s2", "s3", "s0#2"]
    assert not np.any(table["flags"] & Flags.FAILED)
    np.testing.assert_allclose(table["teff"][3], table["teff"][7], rtol=1e-6)
    # a list has a len(): the progress bar knows its total; a generator's total is unknown
    fit_spectra(emulator, spectra[:2], batch_size=2, **OPTS)
    assert totals == [None, 2]


def test_small_run_is_not_padded_to_batch_size(emulator, fitter, fit_log):
    table = fit_spectra(emulator, iter(make_spectra(emulator, 3, seed=3)), batch_size=64, **shared(fitter))
    assert [shape for shape, _ in fit_log["calls"]] == [(3, 1024)] and len(table) == 3


def test_extra_segments_fail_alone(emulator):
    one, two = make_spectra(emulator, 2, seed=4)
    segment = (two.wavelength > 5050.0).astype(int)
    chips = two.replace(id="chips", segment=segment)
    items = [one, ReadFailure("gone.fits", "gone.fits: no such file"), chips, two]
    table = fit_spectra(emulator, iter(items), batch_size=4, **OPTS)
    assert list(table["id"]) == ["s0", "", "chips", "s1"]  # failures keep their place in the input
    assert list(table["flags"] & Flags.FAILED) == [0, Flags.FAILED, Flags.FAILED, 0]
    assert "2 segments" in table["message"][2] and "\n" not in table["message"][2]
    assert table["message"][1] == "gone.fits: no such file"
    # n_segments given: the two-chip spectrum is fitted too (whatever comes first)
    table = fit_spectra(emulator, [chips, one], batch_size=2, n_segments=2, **OPTS)
    assert not np.any(table["flags"] & Flags.FAILED)


def test_table_rewritten_only_every_table_every_seconds(emulator, fitter, tmp_path, monkeypatch):
    spectra = make_spectra(emulator, 6, seed=5)
    out = tmp_path / "res.ecsv"
    journal = tmp_path / "res.ecsv.journal.jsonl"
    kw = {"out": out, "batch_size": 2, "table_every": 3600, **shared(fitter)}
    real_write, written, real_fit, calls = run._write_table, [], Fitter.fit, []

    def write(table, path):
        written.append(len(table))
        real_write(table, path)

    def dying_fit(self, batch):
        calls.append(np.shape(batch.wavelength)[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed in the third batch
        return real_fit(self, batch)

    monkeypatch.setattr(run, "_write_table", write)
    monkeypatch.setattr(Fitter, "fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        fit_spectra(emulator, iter(spectra), **kw)
    # the table was written once, after the first batch; the journal holds both finished batches
    assert written == [2] and len(run.read_results(out)) == 2
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert "__setup__" in lines[0]  # the journal starts with the run's model and settings
    assert [row["id"] for row in lines[1:]] == ["s0", "s1", "s2", "s3"]

    # the final write fails: the journal must survive it
    monkeypatch.setattr(Fitter, "fit", real_fit)

    def failing_write(table, path):
        raise OSError("disk full")

    monkeypatch.setattr(run, "_write_table", failing_write)
    with pytest.raises(OSError, match="disk full"):
        fit_spectra(emulator, iter(spectra), resume=True, **kw)
    assert len(journal.read_text().splitlines()) == 1 + 6

    written.clear()
    monkeypatch.setattr(run, "_write_table", write)
    calls.clear()
    monkeypatch.setattr(Fitter, "fit", dying_fit)
    done = fit_spectra(emulator, iter(spectra), resume=True, **kw)
    assert calls == [] and written == [6]  # nothing left to fit: one final write
    assert sorted(done["id"]) == [f"s{i}" for i in range(6)] and not journal.exists()
    assert sorted(r["id"] for r in run.read_results(out)) == sorted(done["id"])


def test_resume_retries_failed_rows(emulator, fitter, tmp_path, fit_log):
    good, late = make_spectra(emulator, 2, seed=6)
    late = late.replace(source="late.npz", id="star")
    out = tmp_path / "res.fits"
    first = fit_spectra(emulator, [good, ReadFailure("late.npz", "late.npz: truncated file")], out=out,
                        batch_size=2, **shared(fitter))
    assert list(first["flags"]) == [0, Flags.FAILED]
    # still unreadable: the FAILED row is replaced, not duplicated; the good row is not refitted
    again = fit_spectra(emulator, [good, ReadFailure("late.npz", "late.npz: still truncated")], out=out,
                        resume=True, batch_size=2, **shared(fitter))
    assert len(fit_log["calls"]) == 1
    assert list(again["message"]) == ["", "late.npz: still truncated"]
    # now it reads: its spectrum's row replaces the file's read-failure row
    done = fit_spectra(emulator, [good, late], out=out, resume=True, batch_size=2, **shared(fitter))
    assert [shape[0] for shape, _ in fit_log["calls"]] == [1, 1]  # only the retried spectrum was fitted
    rows = run.read_results(out)
    assert [(r["source"], r["id"], r["flags"]) for r in rows] == [("", "s0", 0), ("late.npz", "star", 0)]
    assert list(done["id"]) == ["s0", "star"]


def test_journal_merge_drops_stale_read_failure(emulator, fitter, tmp_path):
    """Killed after the retry reached the journal but before the table was rewritten."""
    good, late = make_spectra(emulator, 2, seed=7)
    late = late.replace(source="late.npz", id="star")
    out = tmp_path / "res.ecsv"
    first = [good, ReadFailure("late.npz", "late.npz: truncated")]
    fit_spectra(emulator, first, out=out, batch_size=2, **shared(fitter))
    fit_spectra(emulator, [late], out=tmp_path / "late.ecsv", batch_size=1, **shared(fitter))
    (retried,) = run.read_results(tmp_path / "late.ecsv")
    journal = tmp_path / "res.ecsv.journal.jsonl"
    journal.write_text(json.dumps(retried) + "\n")
    done = fit_spectra(emulator, [], out=out, resume=True, **shared(fitter))
    assert [(r["source"], r["id"]) for r in done] == [("", "s0"), ("late.npz", "star")]
    assert not journal.exists() and len(run.read_results(out)) == 2


# ------------------------------------------------------------------------------ iter_spectra


def _write_npz(path, spectrum):
    np.savez(path, wavelength=spectrum.wavelength, flux=spectrum.flux, error=spectrum.error)
    return path


def test_iter_spectra_is_lazy_and_keeps_failures_in_order(emulator, tmp_path, monkeypatch):
    from jaxpayne.io import readers

    a, b = make_spectra(emulator, 2, seed=8)
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits")
    paths = [_write_npz(tmp_path / "a.npz", a), bad, _write_npz(tmp_path / "b.npz", b)]
    read, real_read = [], readers.read_spectrum
    monkeypatch.setattr(readers, "read_spectrum", lambda p, **kw: read.append(p) or real_read(p, **kw))
    items = iter_spectra(paths)
    assert read == []  # nothing is read before it is asked for
    first = next(items)
    assert read == [paths[0]] and isinstance(first, Spectrum) and first.id == "a"
    rest = list(items)
    assert isinstance(rest[0], ReadFailure) and rest[0].source == str(bad) and "bad.fits" in rest[0].message
    assert isinstance(rest[1], Spectrum) and rest[1].id == "b"
    # arguments are checked at the call; a bad file raises only when reached with on_error="raise"
    with pytest.raises(ValueError, match="on_error"):
        iter_spectra(paths, on_error="bogus")
    strict = iter_spectra(paths, on_error="raise")
    assert next(strict).id == "a"
    with pytest.raises(SpectrumFormatError, match="bad.fits"):
        next(strict)
    with pytest.warns(UserWarning, match="bad.fits"):
        assert sum(isinstance(x, ReadFailure) for x in iter_spectra(paths, on_error="warn")) == 1


def test_iter_spectra_groups_galah_ccds(need_data, emulator, tmp_path):
    folder = need_data("galah_benchmark")
    prefix = "131216002601003"
    other = _write_npz(tmp_path / "other.npz", make_spectra(emulator, 1)[0])
    paths = [folder / f"{prefix}3.fits", other, folder / f"{prefix}1.fits", folder / f"{prefix}2.fits"]
    items = list(iter_spectra(paths))
    assert [type(x).__name__ for x in items] == ["Spectrum", "Spectrum"]
    assert items[0].meta["ccds"] == [1, 2, 3] and items[0].n_segments == 3 and items[1].id == "other"
    # the same CCD twice: the star fails as a whole, one failure per file, the rest goes on
    items = list(iter_spectra([folder / f"{prefix}1.fits", folder / f"{prefix}1.fits", other]))
    assert [type(x).__name__ for x in items] == ["ReadFailure", "ReadFailure", "Spectrum"]
    assert "more than once" in items[0].message


def test_cli_streams_warns_and_retries_bad_file(emulator, tmp_path, monkeypatch, capsys):
    import jaxpayne.model
    from jaxpayne.cli import main

    monkeypatch.setattr(jaxpayne.model, "load_model", lambda *a, **k: emulator)
    a, b, c = make_spectra(emulator, 3, seed=9)
    bad = tmp_path / "c.npz"
    bad.write_text("truncated")
    paths = [_write_npz(tmp_path / "a.npz", a), bad, _write_npz(tmp_path / "b.npz", b)]
    out = tmp_path / "res.ecsv"
    argv = ["fit", "--model", "m.h5", *map(str, paths), "--out", str(out), "--restarts", "1", "--max-rv", "100",
            "--continuum", "none", "--no-emulator-error", "--batch", "2", "--quiet"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jaxpayne: warning: ") and "c.npz" in err
    rows = run.read_results(out)
    assert [(r["id"], r["flags"]) for r in rows] == [("a", 0), ("", Flags.FAILED), ("b", 0)]
    _write_npz(bad, c)  # repaired
    assert main([*argv, "--resume"]) == 0
    rows = run.read_results(out)  # the repaired file's row replaces its read-failure row
    assert [(r["id"], r["flags"]) for r in rows] == [("a", 0), ("b", 0), ("c", 0)]


def test_cli_no_spectra_is_one_line_error(emulator, tmp_path, monkeypatch, capsys):
    import jaxpayne.io
    import jaxpayne.model
    from jaxpayne.cli import main

    monkeypatch.setattr(jaxpayne.model, "load_model", lambda *a, **k: emulator)
    monkeypatch.setattr(jaxpayne.io, "iter_spectra", lambda *a, **k: iter(()))
    code = main(["fit", "--model", "m.h5", "x.npz", "--out", str(tmp_path / "r.ecsv"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err == "jaxpayne: error: no spectra to fit\n"
    assert not (tmp_path / "r.ecsv").exists()
