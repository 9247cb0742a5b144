"""Smoke and error-path tests of the command line (tiny sizes)."""

import numpy as np
import pytest

from jaxpayne.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_train_info_roundtrip(tmp_path, capsys):
    from jaxpayne.grids import TrainingSet

    rng = np.random.default_rng(0)
    wave = np.linspace(5000, 5010, 30)
    labels = rng.uniform(0, 1, (40, 2))
    flux = 1 - 0.3 * labels[:, :1] * np.exp(-0.5 * ((wave - 5005) / 0.5) ** 2)
    grid = TrainingSet(wave, labels, flux, ("teff", "feh")).save(tmp_path / "grid.npz")
    code, out, err = run(capsys, "train", str(grid), "--out", str(tmp_path / "m.h5"), "--epochs", "3",
                         "--hidden", "8,8", "--quiet")
    assert code == 0, err
    assert "validation rms" in out and (tmp_path / "m.h5").exists()
    code, out, _ = run(capsys, "info", str(tmp_path / "m.h5"))
    assert code == 0 and "teff" in out and "30" in out and "validation" in out


def test_convert_binspec(need_data, tmp_path, capsys):
    d = need_data("binspec_apogee")
    code, out, err = run(capsys, "convert", str(d / "NN_normalized_spectra.npz"), "--format", "binspec",
                         "--labels", "teff,logg,feh,mg_fe,vmacro", "--wavelength", str(d / "apogee_wavelength.npz"),
                         "--out", str(tmp_path / "binspec.h5"))
    assert code == 0, err
    assert "7214" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "{tmp}/missing.h5"], "missing.h5: no such model file"),
        (["info", "{tmp}/junk.h5"], "junk.h5: not a model file"),
        (["train", "{tmp}/junk.h5", "--out", "{tmp}/x.h5"], "junk.h5: not an HDF5 file"),
        (["fit", "--model", "{tmp}/junk.h5", "{tmp}/junk.h5", "--out", "{tmp}/r.ecsv"], "junk.h5: not a model file"),
        (["fit", "--model", "{tmp}/junk.h5", "{tmp}/junk.h5", "--out", "{tmp}/rows/"], "junk.h5: not a model file"),
        (["fit", "--model", "{tmp}/junk.h5", "{tmp}/junk.h5", "--out", "{tmp}/r.fits", "--dask"], "give --out a folder"),
        (["train", "{tmp}/junk.h5", "--out", "{tmp}/x.h5", "--gradient-weight", "0.1"], "give the model too"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "junk.h5").write_bytes(b"garbage")
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("jaxpayne: error: ") and message in err
    assert "Traceback" not in err


def test_fit_cli_real_spectra_with_bad_file(need_data, tmp_path, capsys):
    d = need_data("binspec_apogee")
    model = tmp_path / "binspec.h5"
    assert main(["convert", str(d / "NN_normalized_spectra.npz"), "--format", "binspec", "--labels",
                 "teff,logg,feh,mg_fe,vmacro", "--wavelength", str(d / "apogee_wavelength.npz"), "--out", str(model)]) == 0
    bad = tmp_path / "bad.fits"
    bad.write_text("not fits")
    out = tmp_path / "res.ecsv"
    code, stdout, err = run(capsys, "fit", "--model", str(model), str(d / "spectrum_combined_2M13012770+5754582.npz"),
                            str(bad), "--wavelength", str(d / "apogee_wavelength.npz"), "--out", str(out),
                            "--restarts", "1", "--max-rv", "50", "--quiet")
    assert code == 0, err
    assert "bad.fits" in err
    from astropy.table import Table

    table = Table.read(out)
    assert len(table) == 2
    good = table[table["id"] == "2M13012770+5754582"][0]
    assert 4500 < good["teff"] < 5400 and good["teff_err"] > 0
    failed = table[table["flags"] == 16]
    assert len(failed) == 1 and "bad.fits" in failed[0]["source"]


def test_demo_tiny(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "--out", str(tmp_path / "demo"), "--n-train", "64", "--n-stars", "3",
                         "--epochs", "2", "--draws", "20", "--quiet")
    assert code == 0, err
    assert "pull std" in out and "written:" in out
    for name in ("model.h5", "results.ecsv", "posterior.nc", "crlb.ecsv", "fit.png", "corner.png", "training.png",
                 "emulator_error.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0, name
    import arviz as az

    assert az.from_netcdf(tmp_path / "demo" / "posterior.nc").posterior.sizes["draw"] == 20


def test_public_api_is_lazy_and_complete():
    import subprocess
    import sys

    code = ("import sys, jaxpayne; assert 'jax' not in sys.modules, 'jax imported eagerly'; "
            "[getattr(jaxpayne, n) for n in jaxpayne.__all__]; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
