"""Manifests: one row per star → its files (joined into one multi-segment star) and per-star
fixed values; the real GALAH star's four CCD files as one star."""

import numpy as np
import pytest
from astropy.table import Table

from jaxpayne.io.manifest import iter_manifest, manifest_fixed, read_manifest

NAMES = ("teff", "logg", "feh")


@pytest.fixture(scope="module")
def cannon_file(tmp_path_factory):
    """A small Cannon trained on mock spectra of two wavelength pieces (two "arms")."""
    from jaxpayne.emulators.cannon import train_cannon
    from jaxpayne.testing import mock_grid

    wave = np.exp(np.linspace(np.log(5000.0), np.log(5060.0), 700))
    labels, flux = mock_grid(300, wave, NAMES, [4500.0, 2.0, -1.0], [6000.0, 4.5, 0.3], seed=1)
    model = train_cannon(labels, flux, None, label_names=NAMES, wavelength=wave, order=3)
    return model.save(tmp_path_factory.mktemp("manifest") / "cannon.h5")


def _write(path, wave, flux, sigma):
    np.savez(path, wavelength=wave, flux=flux, error=np.full_like(flux, sigma))


def _stars(tmp_path, model, rv):
    """Three mock stars, each as two files (blue and red arm), at velocities ``rv``."""
    from jaxpayne.forward import forward_model_from_options, make_observation

    fm = forward_model_from_options(model, rv=True, max_rv=60.0, continuum="none")
    rng = np.random.default_rng(0)
    labels = np.array([[5000.0, 3.0, -0.3], [5500.0, 4.0, 0.0], [4800.0, 2.5, -0.6]])
    rows = []
    for k, (lab, v) in enumerate(zip(labels, rv)):
        names = []
        for arm, (lo, hi) in enumerate([(5008.0, 5028.0), (5032.0, 5052.0)]):
            w = np.exp(np.linspace(np.log(lo), np.log(hi), 300))
            clean = np.asarray(fm.model_flux(fm.pack(dict(zip(NAMES, lab), rv=v)), make_observation(w, np.ones_like(w))))
            _write(tmp_path / f"star{k}_arm{arm}.npz", w, clean + 0.005 * rng.normal(size=w.size), 0.005)
            names.append(f"star{k}_arm{arm}.npz")
        rows.append(";".join(names))
    return labels, rows


def test_manifest_rows_and_errors(tmp_path):
    Table({"id": ["a", "b"], "files": ["x.fits;y.fits", "z.fits"], "fixed_rv": [10.0, -30.0]}).write(tmp_path / "m.csv")
    stars = read_manifest(tmp_path / "m.csv")
    assert stars[0].files == (str(tmp_path / "x.fits"), str(tmp_path / "y.fits")) and stars[1].fixed == {"rv": -30.0}
    assert manifest_fixed(stars) == {"rv": 30.0}
    failures = list(iter_manifest(stars))
    assert len(failures) == 2 and "star a" in failures[0].message and failures[0].source.endswith("y.fits")
    Table({"id": ["a", "a"], "files": ["x", "y"]}).write(tmp_path / "dup.csv")
    with pytest.raises(ValueError, match="duplicated id"):
        read_manifest(tmp_path / "dup.csv")
    Table({"id": ["a"], "spectra": ["x"]}).write(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="needs columns 'id' and 'files'"):
        read_manifest(tmp_path / "bad.csv")
    Table({"id": ["a", "b"], "files": ["x", "y"], "fixed_rv": [1.0, np.nan]}).write(tmp_path / "nan.csv")
    with pytest.raises(ValueError, match="fixed_rv must be finite"):
        read_manifest(tmp_path / "nan.csv")


def test_fit_a_manifest_of_two_arm_stars_with_catalogue_velocities(tmp_path, cannon_file, capsys):
    """Each star's two files are one two-segment spectrum; with a fixed_rv column every star is
    fitted at its own catalogue velocity (rv not a free parameter)."""
    from jaxpayne import load_model
    from jaxpayne.cli import main

    rv = np.array([-40.0, 12.0, 35.0])
    labels, files = _stars(tmp_path, load_model(cannon_file), rv)
    Table({"id": ["s0", "s1", "s2"], "files": files}).write(tmp_path / "free.csv")
    Table({"id": ["s0", "s1", "s2"], "files": files, "fixed_rv": rv}).write(tmp_path / "fixed.csv")
    Table({"id": ["s0", "s1", "s2"], "files": files, "fixed_rv": rv + 8.0}).write(tmp_path / "wrong.csv")
    common = ["--model", str(cannon_file), "--continuum", "none", "--max-rv", "60", "--quiet"]
    for name in ("free", "fixed", "wrong"):
        assert main(["fit", "--manifest", str(tmp_path / f"{name}.csv"), *common, "--out", str(tmp_path / f"{name}.ecsv")]) == 0
    free, fixed, wrong = (Table.read(tmp_path / f"{n}.ecsv") for n in ("free", "fixed", "wrong"))
    assert list(free["id"]) == ["s0", "s1", "s2"] and free["source"][0].count(";") == 1
    np.testing.assert_allclose(free["rv"], rv, atol=0.5)
    assert "rv" not in fixed.colnames or np.all(np.isnan(fixed["rv"]))
    np.testing.assert_allclose(fixed["teff"], labels[:, 0], atol=60.0)
    assert np.all(wrong["chi2"] > 3 * fixed["chi2"])  # the star's own velocity is what was used
    assert main(["fit", "--manifest", str(tmp_path / "free.csv"), str(tmp_path / "x.npz"), *common,
                 "--out", str(tmp_path / "both.ecsv")]) == 2
    assert "not both" in capsys.readouterr().err


def test_galah_ccd_files_are_one_star(need_data, tmp_path):
    folder = need_data("galah_benchmark")
    files = sorted(str(p) for p in folder.glob("*.fits"))
    Table({"id": ["mu_Leo"], "files": [";".join(files)]}).write(tmp_path / "galah.csv")
    (star,) = list(iter_manifest(tmp_path / "galah.csv"))
    assert star.id == "mu_Leo" and star.n_segments == 4 and star.medium == "air"
    assert star.wavelength.size == 4 * 4096 and star.meta["fixed"] == {}


def test_per_star_resolution_and_fixed_values_in_sample(tmp_path, cannon_file, capsys):
    """A fixed_R column: each star's line-spread function at its own resolving power (the right
    ones fit, swapped ones do not); sample --manifest holds each star's fixed_rv."""
    from jaxpayne import load_model
    from jaxpayne.cli import main
    from jaxpayne.forward import forward_model_from_options, make_observation
    from jaxpayne.sampling import read_posterior

    model = load_model(cannon_file)
    rng = np.random.default_rng(1)
    labels = np.array([[5100.0, 3.2, -0.2], [5400.0, 3.8, -0.4]])
    resolution, rv = np.array([5000.0, 15000.0]), np.array([-20.0, 25.0])
    files = []
    for k in range(2):
        fm = forward_model_from_options(model, rv=True, max_rv=60.0, continuum="none", resolution=resolution[k])
        w = np.exp(np.linspace(np.log(5010.0), np.log(5050.0), 600))
        clean = np.asarray(fm.model_flux(fm.pack(dict(zip(NAMES, labels[k]), rv=rv[k])), make_observation(w, np.ones_like(w))))
        _write(tmp_path / f"r{k}.npz", w, clean + 0.003 * rng.normal(size=w.size), 0.003)
        files.append(f"r{k}.npz")
    Table({"id": ["a", "b"], "files": files, "fixed_R": resolution}).write(tmp_path / "right.csv")
    Table({"id": ["a", "b"], "files": files, "fixed_R": resolution[::-1]}).write(tmp_path / "swapped.csv")
    common = ["--model", str(cannon_file), "--continuum", "none", "--max-rv", "60", "--quiet"]
    for name in ("right", "swapped"):
        assert main(["fit", "--manifest", str(tmp_path / f"{name}.csv"), *common, "--out", str(tmp_path / f"{name}.ecsv")]) == 0
    right, swapped = (Table.read(tmp_path / f"{n}.ecsv") for n in ("right", "swapped"))
    assert np.all(right["chi2_red"] < 1.5) and np.all(swapped["chi2_red"] > 2 * right["chi2_red"])
    np.testing.assert_allclose(right["teff"], labels[:, 0], atol=60.0)
    np.testing.assert_allclose(right["rv"], rv, atol=0.5)
    assert main(["fit", "--manifest", str(tmp_path / "right.csv"), *common, "--resolution", "9000",
                 "--out", str(tmp_path / "both.ecsv")]) == 2
    assert "not both" in capsys.readouterr().err

    Table({"id": ["a", "b"], "files": files, "fixed_R": resolution, "fixed_rv": rv}).write(tmp_path / "all.csv")
    assert main(["sample", "--manifest", str(tmp_path / "all.csv"), *common, "--chains", "1", "--warmup", "60",
                 "--samples", "40", "--out", str(tmp_path / "post.nc"), "--summary", str(tmp_path / "post.ecsv")]) == 0
    post = read_posterior(tmp_path / "post.nc").posterior
    assert "rv" not in post and "R" not in post  # held at each star's own value
    summary = Table.read(tmp_path / "post.ecsv")
    np.testing.assert_allclose(summary["teff_p50"], labels[:, 0], atol=80.0)
    assert "rv_p50" not in summary.colnames


def test_sample_with_a_constraints_table(tmp_path, cannon_file, capsys):
    """sample --constraints: a per-star log g measurement and the ν_max and Δν of log g 3.5 pull
    that star's posterior from its spectrum's 3.2 to 3.5; a star without a row is untouched; Δν
    adds the latent mass (and --dnu-correction its correction factor)."""
    from jaxpayne import load_model
    from jaxpayne.cli import main
    from jaxpayne.forward import forward_model_from_options, make_observation

    model = load_model(cannon_file)
    fm = forward_model_from_options(model, rv=True, max_rv=60.0, continuum="none")
    rng = np.random.default_rng(2)
    w = np.exp(np.linspace(np.log(5010.0), np.log(5050.0), 600))
    for k, lab in enumerate([[5100.0, 3.2, -0.2], [5300.0, 3.6, -0.1]]):
        clean = np.asarray(fm.model_flux(fm.pack(dict(zip(NAMES, lab), rv=5.0)), make_observation(w, np.ones_like(w))))
        np.savez(tmp_path / f"c{k}.npz", wavelength=w, flux=clean + 0.01 * rng.normal(size=w.size),
                 error=np.full(w.size, 0.01), id=np.array([f"c{k}"]))
    from jaxpayne.sampling.terms import Seismic

    seismic = {k: float(v) for k, v in Seismic().predict({"teff": 5100.0, "logg": 3.5, "mass": 1.2}).items()}
    Table({"id": ["c0", "nobody"], "logg": [3.5, 2.0], "logg_err": [0.03, 0.01], "numax": [seismic["numax"], np.nan],
           "numax_err": [0.1 * seismic["numax"], np.nan], "dnu": [seismic["dnu"], np.nan],
           "dnu_err": [0.05 * seismic["dnu"], np.nan]}).write(tmp_path / "cons.csv")
    common = ["--model", str(cannon_file), "--continuum", "none", "--max-rv", "60", "--quiet", "--chains", "2",
              "--warmup", "100", "--samples", "100"]
    files = [str(tmp_path / "c0.npz"), str(tmp_path / "c1.npz")]
    assert main(["sample", *files, *common, "--constraints", str(tmp_path / "cons.csv"), "--dnu-correction", "0.02",
                 "--out", str(tmp_path / "post.nc"), "--summary", str(tmp_path / "post.ecsv")]) == 0
    err = capsys.readouterr().err
    assert "seismic (numax, dnu)" in err and "labels (logg)" in err and "applied to 1 of 2 stars" in err
    summary = Table.read(tmp_path / "post.ecsv")
    assert summary["logg_p50"][0] == pytest.approx(3.5, abs=0.06)  # pulled from 3.2 to the measurements
    assert summary["logg_p50"][1] == pytest.approx(3.6, abs=0.3)  # no row: its own spectrum's value
    assert "mass_p50" in summary.colnames and "f_dnu_p50" in summary.colnames
    Table({"id": ["c0"], "numax": [120.0]}).write(tmp_path / "bad.csv")
    assert main(["sample", *files, *common, "--constraints", str(tmp_path / "bad.csv"),
                 "--out", str(tmp_path / "post2.nc")]) == 2
    assert "needs its uncertainty numax_err" in capsys.readouterr().err
