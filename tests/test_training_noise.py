"""The emulator error stored in a model: the excess over the noise of observed validation spectra."""

import numpy as np
import pytest

from jaxpayne.grids import TrainingSet
from jaxpayne.model import Model
from jaxpayne.training import train_emulator, validation_errors

#: Injected photon noise σ of the mock observed spectra [normalized flux].
SIGMA = 0.05


def line_spectra(n, npix=40, seed=0):
    """Noiseless spectra of one line whose depth follows teff and width logg."""
    rng = np.random.default_rng(seed)
    wave = np.linspace(5000, 5010, npix)
    labels = np.column_stack([rng.uniform(4000, 7000, n), rng.uniform(1, 5, n)])
    depth = 0.2 + 0.5 * (7000 - labels[:, :1]) / 3000
    width = 0.3 + 0.1 * labels[:, 1:]
    return wave, labels, 1 - depth * np.exp(-0.5 * ((wave - 5005) / width) ** 2)


def test_validation_errors_in_pixel_blocks_match_the_direct_formulas(monkeypatch):
    """Statistics gathered block by block (pixels) equal the whole-array numpy formulas, masks and
    the interior/edge split included."""
    import jaxpayne.training as training

    rng = np.random.default_rng(5)
    n, npix = 300, 53
    flux = 1.0 - 0.3 * rng.uniform(size=(n, npix))
    predicted = flux + rng.normal(size=flux.shape) * 0.01
    ivar = rng.uniform(1e3, 4e3, (n, npix))
    ivar[rng.uniform(size=ivar.shape) < 0.1] = 0.0
    ivar[:, 7] = 0.0
    edge = rng.uniform(size=n) < 0.3
    monkeypatch.setattr(training, "VALIDATION_PIXEL_BLOCK", 8)  # 7 blocks, the last one partial
    out = validation_errors(predicted, flux, ivar, subtract_noise=True, edge=edge)
    diff = np.where(ivar > 0, np.abs(predicted - flux), np.nan)
    noise = np.where(ivar > 0, 1.0 / np.where(ivar > 0, ivar, 1.0), np.nan)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        square, var = np.nanmean(diff**2, axis=0), np.nanmean(noise, axis=0)
        np.testing.assert_allclose(out["rms"], np.sqrt(np.maximum(0, square - var)), rtol=1e-5)
        np.testing.assert_allclose(out["median_abs"], np.nanmedian(diff, axis=0), rtol=1e-5)
        np.testing.assert_allclose(out["p99_abs"], np.nanpercentile(diff, 99, axis=0), rtol=1e-5)
    summary = out["summary"]
    for name, rows in (("rms", slice(None)), ("rms_interior", ~edge), ("rms_edge", edge)):
        expected = np.sqrt(max(0.0, np.nanmean(diff[rows] ** 2) - np.nanmean(noise[rows])))
        assert summary[name] == pytest.approx(expected, rel=1e-6), name
    assert summary["median_abs"] == pytest.approx(np.nanmedian(diff), rel=1e-5)
    assert summary["p99_abs"] == pytest.approx(np.nanpercentile(diff, 99), rel=1e-5)
    assert summary["max_abs"] == pytest.approx(np.nanmax(diff), rel=1e-6)
    assert summary["n_edge"] == edge.sum() and summary["n_spectra"] == n


def test_validation_errors_excess_over_noise():
    """An emulator exact up to the noise has ≈ 0 stored error; a real error adds in quadrature."""
    rng = np.random.default_rng(3)
    n, npix = 2000, 60
    clean = 1.0 - 0.3 * rng.uniform(size=(n, npix))
    sigma = SIGMA * rng.uniform(0.5, 1.5, (n, 1))  # a different S/N for every spectrum
    ivar = np.broadcast_to(sigma**-2, (n, npix)).copy()
    ivar[:, 0] = 0.0  # pixel 0 unusable everywhere
    ivar[: n // 2, 1] = 0.0  # pixel 1 unusable in half the spectra
    observed = clean + rng.normal(size=clean.shape) * sigma
    observed[ivar == 0] = np.nan
    noise_rms = np.sqrt(np.mean(sigma**2))

    exact = validation_errors(clean, observed, ivar, subtract_noise=True)
    summary = exact["summary"]
    assert summary["rms_kind"] == "excess_over_noise"
    assert summary["noise_rms"] == pytest.approx(np.sqrt(np.mean(1 / ivar[ivar > 0])), rel=1e-6)
    assert summary["rms_raw"] == pytest.approx(noise_rms, rel=0.02)
    assert summary["rms"] < 0.1 * SIGMA
    assert np.isnan(exact["rms"][0]) and np.isnan(exact["rms_raw"][0])
    np.testing.assert_allclose(exact["rms_raw"][1:], noise_rms, rtol=0.1)
    assert np.median(exact["rms"][1:]) < 0.2 * SIGMA
    assert exact["rms"].dtype == np.float32

    offset = 0.5 * SIGMA  # an emulator that is off by a constant
    biased = validation_errors(clean + offset, observed, ivar, subtract_noise=True)
    assert biased["summary"]["rms"] == pytest.approx(offset, rel=0.1)
    np.testing.assert_allclose(biased["rms"][1:], offset, rtol=0.5)

    raw = validation_errors(clean, observed, ivar)
    assert raw["summary"]["rms_kind"] == "raw"
    np.testing.assert_array_equal(raw["rms"], raw["rms_raw"])
    np.testing.assert_array_equal(raw["rms_raw"], exact["rms_raw"])
    with pytest.raises(ValueError, match="needs the validation spectra's ivar"):
        validation_errors(clean, observed, subtract_noise=True)


def test_trained_model_stores_error_in_excess_of_noise(tmp_path):
    """Trained on noiseless spectra, validated on noisy observations of them: the stored error is
    the emulator's own (≪ σ), the raw rms is the noise (≈ σ), and both survive the model file."""
    wave, labels, flux = line_spectra(256)
    train = TrainingSet(wave, labels, flux, ("teff", "logg"))
    _, val_labels, val_flux = line_spectra(400, seed=1)
    noisy = val_flux + np.random.default_rng(2).normal(size=val_flux.shape) * SIGMA
    val = TrainingSet(wave, val_labels, noisy, ("teff", "logg"), ivar=np.full_like(noisy, SIGMA**-2))
    options = dict(epochs=1000, hidden=(32, 32), batch_size=32, learning_rate=3e-3, patience=None, progress=False)

    model = train_emulator(train, validation=val, **options).model
    summary = model.validation["summary"]
    assert summary["rms_kind"] == "excess_over_noise"
    assert summary["rms_raw"] == pytest.approx(SIGMA, rel=0.05)
    np.testing.assert_allclose(np.median(model.validation["rms_raw"]), SIGMA, rtol=0.1)
    assert summary["rms"] < 0.2 * SIGMA
    assert np.median(model.emulator_error) < 0.2 * SIGMA

    loaded = Model.load(model.save(tmp_path / "m.h5"))
    np.testing.assert_array_equal(loaded.validation["rms_raw"], model.validation["rms_raw"])
    np.testing.assert_array_equal(loaded.emulator_error, model.validation["rms"])
    assert loaded.validation["summary"]["rms_kind"] == "excess_over_noise"

    # ivar used only as weights: subtract_noise=False keeps the raw rms
    raw = train_emulator(train, validation=val, subtract_noise=False, **{**options, "epochs": 5}).model
    assert raw.validation["summary"]["rms_kind"] == "raw"
    np.testing.assert_array_equal(raw.validation["rms"], raw.validation["rms_raw"])


def test_noiseless_grid_error_is_raw():
    """Without ivar nothing is subtracted: the stored rms is the measured one."""
    wave, labels, flux = line_spectra(64)
    model = train_emulator(TrainingSet(wave, labels, flux, ("teff", "logg")), epochs=3, hidden=(8,),
                           batch_size=16, progress=False).model
    summary = model.validation["summary"]
    assert summary["rms_kind"] == "raw" and summary["noise_rms"] == 0.0
    assert summary["rms"] == summary["rms_raw"]
    np.testing.assert_array_equal(model.validation["rms"], model.validation["rms_raw"])
