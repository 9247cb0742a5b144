"""Survey-scale runs (issue #14): a partitioned Parquet folder from one process or a Dask cluster
gives the rows of the plain single-table run; finished partitions are skipped on resume; a
worker killed mid-run loses no finished row and its partition is redone."""

import os
import signal
import threading
import time

import numpy as np
import pytest

NAMES = ("teff", "logg", "feh")
N_STARS = 14


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """A small Cannon and N_STARS mock spectrum files (one unreadable) at random velocities."""
    from jaxpayne.emulators.cannon import train_cannon
    from jaxpayne.forward import forward_model_from_options, make_observation
    from jaxpayne.testing import mock_grid

    root = tmp_path_factory.mktemp("survey")
    wave = np.exp(np.linspace(np.log(5000.0), np.log(5060.0), 700))
    labels, flux = mock_grid(300, wave, NAMES, [4500.0, 2.0, -1.0], [6000.0, 4.5, 0.3], seed=1)
    model = train_cannon(labels, flux, None, label_names=NAMES, wavelength=wave, order=2)
    path = model.save(root / "cannon.h5")
    fm = forward_model_from_options(model, rv=True, max_rv=60.0, continuum="none")
    rng = np.random.default_rng(3)
    w = np.exp(np.linspace(np.log(5008.0), np.log(5052.0), 500))
    files = []
    for k in range(N_STARS):
        truth = dict(zip(NAMES, rng.uniform([4800.0, 2.5, -0.7], [5700.0, 4.0, 0.1])))
        clean = np.asarray(fm.model_flux(fm.pack(dict(truth, rv=rng.uniform(-40, 40))), make_observation(w, np.ones_like(w))))
        name = root / f"star{k:02d}.npz"
        np.savez(name, wavelength=w, flux=clean + 0.005 * rng.normal(size=w.size), error=np.full(w.size, 0.005))
        files.append(str(name))
    (root / "star05.npz").write_bytes(b"not a spectrum")  # one bad file: one FAILED row
    return path, files


def _job(path, batch_size=4, **options):
    from jaxpayne.fitting import FitJob

    return FitJob(str(path), fitter_options={"rv": True, "max_rv": 60.0, "continuum": "none", **options},
                  batch_size=batch_size)


def _plain(survey, tmp_path):
    from jaxpayne.fitting import fit_spectra

    path, files = survey
    model, fitter = _job(path, n_segments=1).build()
    return fit_spectra(model, _job(path).read(files), fitter=fitter, batch_size=4, progress=False,
                       out=tmp_path / "plain.parquet")


def _same_rows(a, b):
    from jaxpayne.fitting import Flags

    assert list(a["id"]) == list(b["id"]) and list(a["source"]) == list(b["source"])
    assert list(a["flags"]) == list(b["flags"])
    good = np.asarray(a["flags"]) != int(Flags.FAILED)
    for c in ("teff", "logg", "feh", "rv", "teff_err", "chi2"):
        np.testing.assert_allclose(np.asarray(a[c])[good], np.asarray(b[c])[good], rtol=1e-6, atol=1e-6, err_msg=c)
    np.testing.assert_allclose(np.asarray(a["covariance"])[good], np.asarray(b["covariance"])[good],
                               rtol=1e-5, atol=1e-9)


def test_partitioned_folder_equals_the_plain_table_and_resumes_by_partition(survey, tmp_path):
    import pyarrow.parquet as pq

    from jaxpayne.fitting import fit_survey, read_partitioned, read_results

    path, files = survey
    plain = _plain(survey, tmp_path)
    assert int(np.sum(plain["flags"] != 0)) >= 1 and "star05.npz" in plain["source"][5]
    out = tmp_path / "rows"
    result = fit_survey(_job(path), files, out, partition_size=4, progress=False)
    assert (result.n_partitions, result.n_skipped, result.n_rows) == (4, 0, N_STARS)
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    assert parts == [f"part-00000{k}.parquet" for k in range(4)] and not list((out / "_work").iterdir())
    table = read_partitioned(out)
    _same_rows(plain, table)
    assert pq.read_table(out).num_rows == N_STARS  # any Parquet reader sees one table
    assert [r["id"] for r in read_results(out)] == list(plain["id"])
    assert table.meta["MODELSHA"] == plain.meta["MODELSHA"]

    with pytest.raises(FileExistsError, match="use --resume"):
        fit_survey(_job(path), files, out, partition_size=4, progress=False)
    with pytest.raises(ValueError, match="other partition size"):
        fit_survey(_job(path), files, out, partition_size=5, resume=True, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        fit_survey(_job(path, max_rv=50.0), files, out, partition_size=4, resume=True, progress=False)

    # an interrupted run: partition 2 in progress (its first batch in the journal), 3 not begun
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("part-00000[01].parquet")}
    (out / "part-000003.parquet").unlink()
    work = out / "_work" / "part-000002.parquet"
    os.replace(out / "part-000002.parquet", work)
    rows = read_results(work)
    work.unlink()
    from jaxpayne.fitting.run import run_setup

    model, fitter = _job(path, n_segments=1).build()
    import json

    journal = work.with_name(work.name + ".journal.jsonl")
    with open(journal, "w") as fh:
        fh.write(json.dumps({"__setup__": run_setup(model, fitter, {})}) + "\n")
        for row in rows[:2]:
            fh.write(json.dumps(row, default=lambda a: np.asarray(a).tolist()) + "\n")
    # the bad file now reads: its FAILED row (partition 1) is retried, the rest is skipped
    import shutil

    shutil.copyfile(files[4], files[5])
    resumed = fit_survey(_job(path), files, out, partition_size=4, resume=True, progress=False)
    assert (resumed.n_skipped, resumed.n_rows, resumed.n_flagged) == (1, N_STARS, 0)
    assert (out / "part-000000.parquet").stat().st_mtime_ns == stamp[out / "part-000000.parquet"]
    again = read_partitioned(out)  # the retried row comes after its partition's earlier rows
    order = np.argsort(np.asarray(again["id"]))
    assert list(np.asarray(again["id"])[order]) == [f"star{k:02d}" for k in range(N_STARS)]
    keep = np.arange(N_STARS) != 5
    for c in ("teff", "logg", "rv"):
        np.testing.assert_allclose(np.asarray(again[c])[order][keep], np.asarray(plain[c])[keep], rtol=1e-6, atol=1e-6)
    assert again["source"][order][5].endswith("star05.npz") and again["flags"][order][5] == 0


def test_dask_workers_give_the_same_rows_and_survive_a_killed_worker(survey, tmp_path):
    """Two worker processes; both are killed (SIGKILL) as soon as a first batch is in a journal:
    the nannies restart them, the scheduler reruns the lost partitions, which resume from their
    journals, and the folder ends with every row, equal to the plain run's."""
    distributed = pytest.importorskip("distributed")
    from jaxpayne.fitting import fit_survey, read_partitioned

    path, files = survey
    plain = _plain(survey, tmp_path)
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster, distributed.Client(cluster) as client:
        pids = set(client.run(os.getpid).values())
        result, killed = {}, []

        def run():
            # two batches per partition (and other batches than the plain run's): a kill falls
            # between a partition's batches
            result["value"] = fit_survey(_job(path, batch_size=2), files, out, partition_size=4, client=client,
                                         progress=False)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and thread.is_alive():
            journals = list((out / "_work").glob("*.journal.jsonl")) if (out / "_work").exists() else []
            if any(len(j.read_text().splitlines()) >= 2 for j in journals):
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                killed = sorted(pids)
                break
            time.sleep(0.02)
        thread.join(timeout=300)
    assert killed, "the run ended before a worker could be killed"
    assert not thread.is_alive() and result["value"].n_rows == N_STARS
    _same_rows(plain, read_partitioned(out))


def test_cli_fit_into_a_folder_here_and_on_dask(survey, tmp_path, capsys):
    from astropy.table import Table

    from jaxpayne.cli import main
    from jaxpayne.fitting import read_partitioned

    path, files = survey
    common = ["--model", str(path), "--continuum", "none", "--max-rv", "60", "--batch", "4", "--quiet"]
    assert main(["fit", *files, *common, "--out", str(tmp_path / "one.ecsv")]) == 0
    assert main(["fit", *files, *common, "--out", str(tmp_path / "here") + "/", "--partition-size", "5"]) == 0
    assert "in 3 partitions" in capsys.readouterr().out
    assert main(["fit", *files, *common, "--out", str(tmp_path / "here") + "/", "--partition-size", "5",
                 "--resume"]) == 0
    assert "(3 finished before)" in capsys.readouterr().out
    assert main(["fit", *files[:6], *common, "--out", str(tmp_path / "dask"), "--dask", "--workers", "1",
                 "--partition-size", "2"]) == 0
    one, here, dask = Table.read(tmp_path / "one.ecsv"), read_partitioned(tmp_path / "here"), read_partitioned(tmp_path / "dask")
    assert list(here["id"]) == list(one["id"]) and list(dask["id"]) == list(one["id"][:6])
    good = np.asarray(one["flags"]) == 0
    np.testing.assert_allclose(np.asarray(here["teff"])[good], np.asarray(one["teff"])[good], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dask["teff"]), np.asarray(one["teff"][:6]), rtol=1e-6, equal_nan=True)
    assert dask["teff"].unit == one["teff"].unit
    capsys.readouterr()
    assert main(["fit", *files, *common, "--out", str(tmp_path / "t.fits"), "--dask"]) == 2
    assert "give --out a folder" in capsys.readouterr().err
