"""Data-driven training: latent labels (errors-in-variables, missing labels), cross-validation,
the filter normalisation of training spectra, training sets from spectrum files, and the CLI."""

import functools

import numpy as np
import pytest

from jaxpayne.datadriven import (
    cross_validate,
    filter_normalize,
    latent_labels,
    population_of,
    recovery_summary,
    resample_spectrum,
    segments_of,
    train_with_latent_labels,
    training_set_from_spectra,
)
from jaxpayne.emulators.cannon import polynomial_powers, train_cannon
from jaxpayne.grids import GridFormatError, TrainingSet

NAMES = ("teff", "logg", "feh")
MEAN = np.array([4600.0, 2.4, -0.2])
SD = np.array([300.0, 0.6, 0.25])


def _mock(n=400, n_pix=40, seed=0):
    """Spectra from a known quadratic Cannon; labels from a correlated Gaussian population (log g
    follows Teff, as along a giant branch); per-star noise and a per-pixel intrinsic scatter."""
    rng = np.random.default_rng(seed)
    corr = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.2], [0.3, 0.2, 1.0]])
    labels = rng.multivariate_normal(MEAN, corr * np.outer(SD, SD), n)
    x = (labels - MEAN) / SD
    design = np.prod(x[:, None, :] ** polynomial_powers(3, 2)[None], axis=2)
    theta = np.column_stack([np.full(n_pix, 0.9), rng.normal(0, 0.01, (n_pix, 3)), rng.normal(0, 0.003, (n_pix, 6))])
    scatter = rng.uniform(0.002, 0.006, n_pix)
    sigma = rng.uniform(0.005, 0.015, (n, 1)) * np.ones((1, n_pix))
    flux = design @ theta.T + rng.normal(size=(n, n_pix)) * np.hypot(sigma, scatter)
    return labels, flux, sigma**-2.0, 15100.0 + 0.3 * np.arange(n_pix)


def _train(wave):
    return functools.partial(train_cannon, label_names=NAMES, wavelength=wave)


def test_latent_labels_fill_missing_values_and_weigh_errors():
    labels, flux, ivar, wave = _mock()
    model = _train(wave)(labels, flux, ivar)
    reference = labels.copy()
    gone = np.arange(len(labels)) % 4 == 0
    reference[gone, 1] = np.nan
    found, cov, _ = latent_labels(model, flux, ivar, reference)
    np.testing.assert_array_equal(found[~gone], labels[~gone])  # exact labels are held
    assert np.all(cov[~gone] == 0)
    sigma = np.sqrt(cov[gone, 1, 1])
    pulls = (found[gone, 1] - labels[gone, 1]) / sigma
    assert 0.6 < np.std(pulls) < 1.5 and abs(np.mean(pulls)) < 0.35
    # the covariance is the conditional one given the fixed labels: 1/√(JᵀJ) of the free label
    import jax

    one = np.flatnonzero(gone)[0]
    fm_free = jax.jacfwd(lambda l: model.predict(l))(found[one].astype(np.float32))
    sigma_total = np.hypot(ivar[one] ** -0.5, model.emulator_error)
    info = float(np.sum((np.asarray(fm_free)[:, 1] / sigma_total) ** 2))
    # (measured 0.146 against 0.127 counting every pixel: the forward model leaves out a few at
    # the ends; the marginal variance over the fixed labels, before the fix, is much larger)
    assert np.sqrt(cov[one, 1, 1]) == pytest.approx(info**-0.5, rel=0.25)
    # a Gaussian reference label and the spectrum: the result lies between them, more precise than either
    errors = np.zeros_like(labels)
    errors[:, 0] = 150.0
    shifted = labels.copy()
    shifted[:, 0] += 300.0
    both, cov_both, _ = latent_labels(model, flux, ivar, shifted, errors)
    alone, cov_alone, _ = latent_labels(model, flux, ivar, np.where(np.arange(3) == 0, np.nan, labels))
    moved = both[:, 0] - labels[:, 0]
    assert 0.0 < np.median(moved) < 300.0
    # the information adds: 1/σ² = 1/150² + 1/σ_spectrum² (measured ratio 0.94–1.15)
    expected = 1.0 / np.sqrt(1.0 / 150.0**2 + 1.0 / cov_alone[:, 0, 0])
    assert np.all(np.abs(np.sqrt(cov_both[:, 0, 0]) / expected - 1.0) < 0.25)
    with pytest.raises(ValueError, match="label errors"):
        latent_labels(model, flux, ivar, labels, -np.ones_like(labels))


def test_population_prior_of_latent_and_of_noisy_labels():
    rng = np.random.default_rng(1)
    truth = rng.multivariate_normal([0.0, 1.0], [[1.0, 0.5], [0.5, 2.0]], 20000)
    mean, cov = population_of(truth, covariance=np.tile(0.1 * np.eye(2), (len(truth), 1, 1)))
    np.testing.assert_allclose(mean, [0.0, 1.0], atol=0.03)
    np.testing.assert_allclose(cov, [[1.1, 0.5], [0.5, 2.1]], atol=0.06)
    noisy = truth + rng.normal(size=truth.shape) * [0.5, 0.0]
    _, cov = population_of(noisy, errors=np.tile([0.5, 0.0], (len(truth), 1)))
    np.testing.assert_allclose(np.diag(cov), [1.0, 2.0], atol=0.06)  # the errors' variance removed


def test_errors_in_variables_beat_ignoring_the_errors():
    """Noisy reference labels with known errors: training on them naively dilutes the model
    (measured: 3 folds, Teff scatter 86 K ignored vs 50 K EIV), errors-in-variables recovers."""
    labels, flux, ivar, wave = _mock(n=450, seed=2)
    rng = np.random.default_rng(3)
    errors = np.where(rng.random((len(labels), 1)) < 0.5, 1.0, 0.2) * np.array([200.0, 0.4, 0.15])
    noisy = labels + rng.normal(size=labels.shape) * errors
    common = dict(wavelength=wave, label_names=NAMES, folds=3)
    naive = cross_validate(_train(wave), noisy, flux, ivar, **common)
    eiv = cross_validate(_train(wave), noisy, flux, ivar, errors=errors, latent=True, **common)
    a = recovery_summary(naive.found, labels, NAMES)
    b = recovery_summary(eiv.found, labels, NAMES)
    assert b["teff"]["scatter"] < 0.75 * a["teff"]["scatter"]
    assert b["logg"]["scatter"] < 0.85 * a["logg"]["scatter"]
    assert naive.table()["fold"].max() == 2 and "teff_ref" in eiv.table().colnames


def test_missing_labels_are_latent_not_dropped():
    labels, flux, ivar, wave = _mock(n=300, seed=4)
    reference = labels.copy()
    gone = np.random.default_rng(5).random(len(labels)) < 0.3
    reference[gone, 1] = np.nan
    seen = []
    result = train_with_latent_labels(_train(wave), reference, flux, ivar, iterations=2,
                                      progress=lambda i, objective: seen.append((i, objective)))
    assert result.model.provenance["n_train"] == len(labels) and len(seen) == 2
    error = result.labels[gone, 1] - labels[gone, 1]
    assert np.std(error) < 0.12 and abs(np.mean(error)) < 0.05  # measured 0.06 and 0.00
    np.testing.assert_array_equal(result.labels[~gone], labels[~gone])
    assert np.all(result.sigma[gone, 1] > 0) and np.all(result.sigma[~gone] == 0)
    with pytest.raises(ValueError, match="every label"):
        train_with_latent_labels(_train(wave), np.full_like(reference, np.nan), flux, ivar)


def test_real_giants_missing_log_g_from_their_spectra(need_data):
    """671 real APOGEE giants with 30 % of log g removed: the latent log g of those stars
    (Teff and [M/H] held at their reference values) against the removed values."""
    d = np.load(need_data("cannon_apogee_giants") / "apogee_giants_100px.npz")
    labels, flux, ivar = d["labels"], d["flux"], d["ivar"] ** -2.0
    wave = 15100.0 + 0.3 * np.arange(flux.shape[1])
    reference = labels.copy()
    gone = np.random.default_rng(1).random(len(labels)) < 0.3
    reference[gone, 1] = np.nan
    train = functools.partial(train_cannon, label_names=["teff", "logg", "m_h"], wavelength=wave)
    result = train_with_latent_labels(train, reference, flux, ivar, iterations=2)
    error = result.labels[gone, 1] - labels[gone, 1]
    # measured: bias +0.01, scatter 0.23 dex (the held-out CV scatter with every label free is 0.44)
    assert abs(error.mean()) < 0.06 and error.std() < 0.3


def test_filter_normalisation_removes_a_smooth_continuum():
    labels, flux, ivar, _ = _mock(n=20, n_pix=600)
    wave = np.concatenate([np.linspace(15100, 15300, 300), np.linspace(15800, 16000, 300)])  # two chips
    assert list(np.unique(segments_of(wave))) == [0, 1]
    continuum = 1e4 * (1.0 + 0.3 * np.sin(wave / 700.0))[None] * np.linspace(0.5, 2.0, 20)[:, None]
    normalised = TrainingSet(wave, labels, flux, NAMES, ivar=ivar)
    raw = TrainingSet(wave, labels, flux * continuum, NAMES, ivar=ivar / continuum**2)
    a, b = filter_normalize(normalised, 50.0), filter_normalize(raw, 50.0)
    # the same up to the continuum's change across the window (its weights change with it), most
    # at the chips' ends (measured: median 2.2e-3, max 1.3e-2 at the second chip's first pixel)
    interior = np.abs(wave[:, None] - wave[[0, 299, 300, 599]][None]).min(axis=1) > 100.0
    assert np.median(np.abs(b.flux - a.flux)) < 3e-3
    np.testing.assert_allclose(b.flux[:, interior], a.flux[:, interior], atol=6e-3)
    np.testing.assert_allclose(b.flux, a.flux, atol=2e-2)
    np.testing.assert_allclose(b.ivar / a.ivar, 1.0, atol=4e-2)
    assert b.meta["continuum"] == "filter:50" and abs(np.median(b.flux) - 1.0) < 0.02


def test_resampling_keeps_masks_and_is_exact_on_the_same_grid():
    wave = np.linspace(5000.0, 5010.0, 101)
    flux = 1.0 + 0.01 * wave
    ivar = np.full(101, 4.0)
    ivar[50] = 0.0
    f, i = resample_spectrum(wave, flux, ivar, wave)
    assert f is flux or np.array_equal(f, flux)
    grid = np.linspace(4999.0, 5011.0, 241)
    f, i = resample_spectrum(wave, flux, ivar, grid)
    inside = (grid >= wave[0]) & (grid <= wave[-1])
    assert np.all(i[~inside] == 0)
    near_bad = np.abs(grid - wave[50]) < 0.1 - 1e-9
    assert np.all(i[near_bad] == 0)
    good = (i > 0)
    np.testing.assert_allclose(f[good], 1.0 + 0.01 * grid[good], rtol=1e-12)  # linear: exact
    np.testing.assert_allclose(i[good], 4.0)


def _write_spectrum(path, wave, flux, error):
    np.savez(path, wavelength=wave, flux=flux, error=error)


def test_training_set_from_spectrum_files_and_a_catalogue(tmp_path):
    from astropy.table import Table

    labels, flux, ivar, wave = _mock(n=6, n_pix=80)
    files, ids = [], []
    for k in range(6):
        w = wave if k != 2 else wave + 0.05  # one spectrum on a shifted grid: resampled
        _write_spectrum(tmp_path / f"s{k}.npz", w, flux[k], ivar[k] ** -0.5)
        files.append(f"s{k}.npz")
        ids.append(f"star{k}")
    (tmp_path / "broken.npz").write_bytes(b"not a spectrum")
    Table({"file": files + ["broken.npz", "s0.npz"], "id": ids + ["starX", "nobody"]}).write(tmp_path / "spectra.csv")
    cat = Table({"id": ids, "teff": labels[:, 0], "logg": labels[:, 1], "feh": labels[:, 2],
                 "teff_err": np.full(6, 80.0), "logg_err": np.full(6, 0.1)})
    cat["logg"][3] = np.nan  # missing
    cat.write(tmp_path / "labels.ecsv")
    warnings = []
    ts = training_set_from_spectra(tmp_path / "spectra.csv", tmp_path / "labels.ecsv", warn=warnings.append)
    assert ts.n_spectra == 6 and ts.label_names == NAMES and len(warnings) == 2
    assert any("broken.npz" in w for w in warnings) and any("nobody" in w for w in warnings)
    np.testing.assert_allclose(ts.wavelength, wave)
    np.testing.assert_allclose(ts.flux[0], flux[0], rtol=1e-6)
    assert np.isnan(ts.labels[3, 1]) and ts.n_missing == 1
    np.testing.assert_allclose(ts.label_errors[:, 0], 80.0)
    assert np.isnan(ts.label_errors[3, 1]) and np.all(ts.label_errors[:, 2] == 0)
    assert ts.ivar[2, 0] == 0 and ts.ivar[2, 1] > 0  # resampled: the first pixel is outside that spectrum
    with pytest.raises(ValueError, match="no label column 'vsini'"):
        training_set_from_spectra(tmp_path / "spectra.csv", tmp_path / "labels.ecsv", label_names=["vsini"],
                                  warn=warnings.append)


def test_missing_labels_in_a_training_set_file(tmp_path):
    labels, flux, ivar, wave = _mock(n=50)
    labels[3, 1] = np.nan
    ts = TrainingSet(wave, labels, flux, NAMES, ivar=ivar)
    assert ts.n_missing == 1 and ts.label_spec().lower[1] == np.nanmin(labels[:, 1])
    with pytest.raises(GridFormatError, match="missing labels"):
        ts.require_complete()
    labels[4] = np.nan
    with pytest.raises(GridFormatError, match="no label at all"):
        TrainingSet(wave, labels, flux, NAMES, ivar=ivar)
    with pytest.raises(GridFormatError, match="label_errors shape"):
        TrainingSet(wave, labels[5:, :2], flux[5:], NAMES[:2], ivar=ivar[5:], label_errors=np.ones((45, 3)))


def test_cli_train_cannon_with_cross_validation(tmp_path, capsys):
    import jaxpayne
    from astropy.table import Table

    from jaxpayne.cli import main

    labels, flux, ivar, wave = _mock(n=240, n_pix=30, seed=6)
    labels[::5, 1] = np.nan
    TrainingSet(wave, labels, flux, NAMES, ivar=ivar).save(tmp_path / "set.npz")
    out = tmp_path / "cannon.h5"
    assert main(["train", str(tmp_path / "set.npz"), "--emulator", "cannon", "--cv", "3", "--cv-out",
                 str(tmp_path / "cv.ecsv"), "--label-errors", "teff=60", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "48 missing labels and label errors as latent labels" in text and "| teff |" in text
    model = jaxpayne.load_model(out)
    assert model.kind == "cannon" and model.provenance["latent_labels"] and "cv" in model.provenance
    cv = Table.read(tmp_path / "cv.ecsv")
    assert len(cv) == 240 and set(cv["fold"]) == {0, 1, 2}
    assert main(["train", str(tmp_path / "set.npz"), "--emulator", "cannon", "--no-latent-labels",
                 "--out", str(tmp_path / "naive.h5")]) == 0
    assert "ignored (spectra with a missing label dropped)" in capsys.readouterr().out
    assert jaxpayne.load_model(tmp_path / "naive.h5").provenance["n_train"] == 192


def test_cli_train_network_with_missing_labels(tmp_path, capsys):
    """A network on a set with missing labels: latent labels too, by default."""
    import jaxpayne

    from jaxpayne.cli import main

    labels, flux, ivar, wave = _mock(n=120, n_pix=30, seed=6)
    labels[::5, 1] = np.nan
    TrainingSet(wave, labels, flux, NAMES, ivar=ivar).save(tmp_path / "set.npz")
    assert main(["train", str(tmp_path / "set.npz"), "--emulator", "mlp", "--hidden", "8", "--epochs", "2",
                 "--quiet", "--out", str(tmp_path / "net.h5")]) == 0
    assert "24 missing labels as latent labels" in capsys.readouterr().out
    assert jaxpayne.load_model(tmp_path / "net.h5").kind == "mlp"


def test_ddpayne_gradient_term_ties_label_gradients_where_there_are_no_stars(tmp_path):
    """A network trained on stars of a narrow Teff range learns nothing of the flux's Teff
    dependence outside it; the DD-Payne term (λ > 0) ties its label gradients to a synthetic
    model's over the whole box."""
    import jax

    from jaxpayne.training import TrainingConfig, train_emulator

    labels, flux, ivar, wave = _mock(n=900, n_pix=20, seed=7)
    synthetic = _train(wave)(labels, flux, ivar)  # stands in for a synthetic-spectrum model
    # most stars in a narrow Teff range, a few across the box (which they define)
    narrow = (np.abs(labels[:, 0] - MEAN[0]) < 150.0) | (np.arange(len(labels)) % 150 == 0)
    data = TrainingSet(wave, labels[narrow], np.asarray(synthetic.predict(labels[narrow])), NAMES,
                       ivar=ivar[narrow])
    config = TrainingConfig(hidden=(32, 32), epochs=150, batch_size=32, patience=None, learning_rate=3e-3)
    lo, hi = data.label_spec().bounds
    wide = np.random.default_rng(8).uniform(lo, hi, (400, 3))
    wide = wide[np.abs(wide[:, 0] - MEAN[0]) > 300.0][:64]  # where there are (almost) no stars

    def gradient_error(model):
        """rms over points and pixels of the gradient error, per label [flux per box range]."""
        jac = jax.vmap(jax.jacfwd(lambda l: model.predict(l)))(wide.astype(np.float32))
        ref = jax.vmap(jax.jacfwd(lambda l: synthetic.predict(l)))(wide.astype(np.float32))
        return np.sqrt(np.mean(((np.asarray(jac) - np.asarray(ref)) * (hi - lo)) ** 2, axis=(0, 1)))

    plain = train_emulator(data, config, progress=False).model
    tied = train_emulator(data, config, progress=False, gradient_model=synthetic, gradient_weight=1.0)
    assert tied.model.provenance["gradient_model"]["kind"] == "cannon"
    # measured: 0.38, 0.25, 0.17 without; 0.020, 0.022, 0.025 with λ = 1
    assert np.all(gradient_error(tied.model) < 0.2 * gradient_error(plain))
    with pytest.raises(ValueError, match="needs a gradient_model"):
        train_emulator(data, config, progress=False, gradient_weight=1.0)
    # the command line: --gradient-model MODEL --gradient-weight λ
    import jaxpayne
    from jaxpayne.cli import main

    synthetic.save(tmp_path / "synthetic.h5")
    data.save(tmp_path / "set.npz")
    assert main(["train", str(tmp_path / "set.npz"), "--emulator", "mlp", "--hidden", "8", "--epochs", "3", "--quiet",
                 "--gradient-model", str(tmp_path / "synthetic.h5"), "--gradient-weight", "0.1",
                 "--out", str(tmp_path / "dd.h5")]) == 0
    trained = jaxpayne.load_model(tmp_path / "dd.h5")
    assert trained.provenance["training_config"]["gradient_weight"] == 0.1 and "gradient_model" in trained.provenance


def test_a_cannon_from_spectrum_files_fits_samples_and_bounds(tmp_path, capsys):
    """The whole data-driven path at the command line: spectrum files and a catalogue →
    `train --labels-from --emulator cannon` → `fit`, `sample` and `crlb` with the Cannon file."""
    from astropy.table import Table

    from jaxpayne.cli import main

    labels, flux, ivar, wave = _mock(n=80, n_pix=60, seed=9)
    files = []
    for k in range(80):
        _write_spectrum(tmp_path / f"s{k}.npz", wave, flux[k], ivar[k] ** -0.5)
        files.append(f"s{k}.npz")
    Table({"file": files, "id": [f"star{k}" for k in range(80)]}).write(tmp_path / "spectra.csv")
    Table({"id": [f"star{k}" for k in range(80)], "teff": labels[:, 0], "logg": labels[:, 1],
           "feh": labels[:, 2]}).write(tmp_path / "labels.csv")
    model = str(tmp_path / "cannon.h5")
    assert main(["train", str(tmp_path / "spectra.csv"), "--labels-from", str(tmp_path / "labels.csv"),
                 "--emulator", "cannon", "--out", model]) == 0
    assert "training cannon (order 2) on 80 spectra x 60 pixels" in capsys.readouterr().out
    spectra = [str(tmp_path / "s0.npz"), str(tmp_path / "s1.npz")]
    common = ["--model", model, "--no-rv", "--continuum", "none"]
    assert main(["fit", *spectra, *common, "--out", str(tmp_path / "fit.ecsv"), "--quiet"]) == 0
    fit = Table.read(tmp_path / "fit.ecsv")
    assert np.all(np.abs(fit["teff"] - labels[:2, 0]) < 4 * fit["teff_err"] + 20.0)
    assert main(["sample", spectra[0], *common, "--chains", "2", "--warmup", "100", "--samples", "100",
                 "--out", str(tmp_path / "post.nc"), "--quiet"]) == 0
    assert main(["crlb", "--model", model, "--labels", "teff=4600,logg=2.4,feh=-0.2", "--snr", "100",
                 "--pixels", spectra[0], "--out", str(tmp_path / "crlb.ecsv")]) == 0
    bounds = Table.read(tmp_path / "crlb.ecsv")  # (before: --pixels failed on every file)
    assert list(bounds["name"]) == ["teff", "logg", "feh"] and np.all(np.isfinite(bounds["sigma"]))
