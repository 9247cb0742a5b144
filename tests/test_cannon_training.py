"""The Cannon's training step (per-pixel polynomial + intrinsic scatter) against a known truth,
its L1 penalty and bad input, and label recovery on real APOGEE giants."""

import numpy as np
import pytest

from jaxpayne.emulators.cannon import MAX_SCATTER, MIN_SCATTER, polynomial_powers, train_cannon


def _mock(n_stars=800, n_pix=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.column_stack([rng.uniform(4000, 5500, n_stars), rng.uniform(1, 3.5, n_stars),
                              rng.uniform(-1, 0.3, n_stars)])
    x = (labels - labels.mean(axis=0)) / labels.std(axis=0)  # the training step's scaling
    powers = polynomial_powers(3, 2)
    design = np.prod(x[:, None, :] ** powers[None], axis=2)
    theta = np.column_stack([np.full(n_pix, 0.9), rng.normal(0, 0.03, (n_pix, powers.shape[0] - 1))])
    scatter = np.where(np.arange(n_pix) % 2 == 0, 0.0, rng.uniform(0.005, 0.02, n_pix))  # even pixels: none
    sigma = rng.uniform(0.003, 0.02, (n_stars, 1)) * np.ones((1, n_pix))
    flux = design @ theta.T + rng.normal(size=sigma.shape) * np.hypot(sigma, scatter[None])
    return labels, flux, sigma**-2.0, theta, scatter


def _coefficients(model):
    return np.asarray(model.params["params"]["coefficients"], np.float64)


def test_polynomial_powers():
    p = polynomial_powers(3, 2)
    assert p.shape == (10, 3) and p[0].sum() == 0 and np.all(p[1:4].sum(axis=1) == 1)
    assert polynomial_powers(3, 3).shape == (20, 3)
    with pytest.raises(ValueError):
        polynomial_powers(0, 2)


def test_training_recovers_coefficients_and_intrinsic_scatter():
    labels, flux, ivar, theta, scatter = _mock()
    model = train_cannon(labels, flux, ivar, label_names=["teff", "logg", "feh"])
    np.testing.assert_allclose(_coefficients(model), theta, atol=5e-3)
    s = model.emulator_error
    noisy = scatter > 0
    np.testing.assert_allclose(s[noisy], scatter[noisy], rtol=0.15)
    assert np.all(s[~noisy] < 2e-3)  # no scatter needed (often exactly the lower end)
    # predictions at the training labels: the emulator interface
    pred = np.asarray(model.predict(labels[:5].astype(np.float32)))
    assert pred.shape == (5, flux.shape[1]) and np.all(np.abs(pred - flux[:5]) < 0.15)
    assert model.bounds[0][0] == pytest.approx(labels[:, 0].min())


def test_l1_shrinks_the_higher_terms_and_masks_are_honoured():
    labels, flux, ivar, _, _ = _mock(seed=1)
    plain = train_cannon(labels, flux, ivar, label_names=["a", "b", "c"])
    # Λ is in units of χ² (here ~10⁴ per unit coefficient²): measured 1 → 10 coefficients < 1e-4
    sparse = train_cannon(labels, flux, ivar, label_names=["a", "b", "c"], l1=1e4)
    assert np.sum(np.abs(_coefficients(sparse)[:, 1:]) < 1e-4) >= 5 * max(1, np.sum(np.abs(_coefficients(plain)[:, 1:]) < 1e-4))
    np.testing.assert_allclose(_coefficients(sparse)[:, 0], _coefficients(plain)[:, 0], atol=0.02)
    # a pixel usable in too few stars gets NaN, the others are untouched by its mask
    ivar = ivar.copy()
    ivar[5:, 3] = 0.0
    masked = train_cannon(labels, flux, ivar, label_names=["a", "b", "c"])
    # it predicts a flat 1 with the largest scatter (no weight), never NaN (which the forward
    # model's FFTs would spread over every pixel)
    np.testing.assert_array_equal(_coefficients(masked)[3], np.eye(10)[0])
    assert masked.emulator_error[3] == pytest.approx(MAX_SCATTER)
    assert masked.validation["summary"]["n_unconstrained_pixels"] == 1
    assert np.all(np.isfinite(np.asarray(masked.predict(labels[:3]))))
    np.testing.assert_allclose(_coefficients(masked)[[0, 1, 2]], _coefficients(plain)[[0, 1, 2]], rtol=1e-10)
    assert MIN_SCATTER > 0


def test_noiseless_spectra_and_a_constant_label():
    """Without ivar the spectra are noiseless: s is the whole residual; a label constant in the
    training set (a degenerate design) still trains (least-norm coefficients)."""
    labels, flux, _, _, scatter = _mock(n_stars=600, seed=2)
    model = train_cannon(labels, flux, None, label_names=["a", "b", "c"])
    noisy = scatter > 0
    assert np.median(model.emulator_error[noisy]) > 0.5 * np.median(scatter[noisy])
    flat = labels.copy()
    flat[:, 2] = -0.5
    constant = train_cannon(flat, flux, None, label_names=["a", "b", "c"], bounds=([3000, 0, -1], [6000, 5, 0]))
    assert np.all(np.isfinite(_coefficients(constant)))


def test_bad_training_input_is_named():
    labels, flux, ivar, _, _ = _mock(n_stars=50)
    with pytest.raises(ValueError, match="must match"):
        train_cannon(labels[:10], flux, ivar, label_names=["a", "b", "c"])
    bad = labels.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        train_cannon(bad, flux, ivar, label_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="need more spectra"):
        train_cannon(labels[:8], flux[:8], ivar[:8], label_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="ivar shape"):
        train_cannon(labels, flux, ivar[:, :3], label_names=["a", "b", "c"])


def test_real_giants_held_out_labels(need_data):
    """671 real APOGEE giants (100 pixels): trained on 4/5, the held-out fifth's labels come back
    through the ordinary Fitter with the Cannon as its emulator (s² as the emulator error).
    The file's ``ivar`` array holds flux uncertainties σ (a 0.005 floor, ~16 on bad pixels)."""
    from jaxpayne.fitting import Fitter, Flags
    from jaxpayne.forward import pad_observations

    d = np.load(need_data("cannon_apogee_giants") / "apogee_giants_100px.npz")
    labels, flux, ivar = d["labels"], d["flux"], d["ivar"] ** -2.0
    fold = np.random.default_rng(0).permutation(len(labels)) % 5
    train, test = fold != 0, fold == 0
    model = train_cannon(labels[train], flux[train], ivar[train], label_names=["teff", "logg", "m_h"],
                         wavelength=15100.0 + 0.3 * np.arange(flux.shape[1]))
    fitter = Fitter(model, rv=False, continuum="none")
    batch = pad_observations([fitter.observation(model.wavelength, f, i) for f, i in zip(flux[test], ivar[test])])
    result = fitter.fit(batch)
    ok = (result.flags & int(Flags.AT_BOUND | Flags.NOT_CONVERGED | Flags.FAILED)) == 0
    assert ok.mean() > 0.85
    diff = result.theta[ok] - labels[test][ok]
    # measured (this split): bias −24 K, −0.09, −0.02; scatter 209 K, 0.42, 0.22 dex
    assert np.all(np.abs(diff.mean(axis=0)) < [60.0, 0.15, 0.05])
    assert np.all(diff.std(axis=0) < [260.0, 0.5, 0.27])
    pulls = diff / np.sqrt(np.einsum("bii->bi", result.covariance[ok]))
    assert 0.5 < np.median(np.abs(pulls[:, 0])) / 0.674 < 3.0  # errors of the right size


def test_a_trained_cannon_is_a_model_file(tmp_path, capsys):
    """The Cannon saves to and loads from the ordinary model file, predicts what its polynomial
    says, carries s as its error, and `jaxpayne info` describes it."""
    import jaxpayne
    from jaxpayne.cli import main

    labels, flux, ivar, _, _ = _mock(n_stars=300, n_pix=12, seed=3)
    model = train_cannon(labels, flux, ivar, label_names=["teff", "logg", "feh"], order=3,
                         wavelength=5000.0 + np.arange(12.0))
    path = model.save(tmp_path / "cannon.h5")
    back = jaxpayne.load_model(path)
    assert back.kind == "cannon" and back.label_names == ("teff", "logg", "feh")
    test = labels[:4]
    np.testing.assert_array_equal(np.asarray(back.predict(test)), np.asarray(model.predict(test)))
    np.testing.assert_allclose(back.emulator_error, model.emulator_error, rtol=1e-6)
    assert back.validation["summary"]["rms_kind"] == "intrinsic_scatter"
    # the polynomial by hand (Cannon scaling: mean and standard deviation of the training labels)
    x = (test - labels.mean(axis=0)) / labels.std(axis=0)
    design = np.prod(x[:, None, :] ** polynomial_powers(3, 3)[None], axis=2)
    np.testing.assert_allclose(np.asarray(back.predict(test), np.float64), design @ _coefficients(model).T,
                               rtol=2e-5, atol=2e-5)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "cannon" in out and "intrinsic_scatter" in out
