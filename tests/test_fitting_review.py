"""Fitter behaviour found in review: undetected rotation, pixel margins, flags, per-spectrum fixed
values, scaled errors, table provenance and resume refusal, inputs outside the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxpayne.fitting import Fitter, Flags, fit_spectra
from jaxpayne.forward import ForwardModel, make_observation, pad_observations
from jaxpayne.forward.synthetic import SyntheticLineEmulator
from jaxpayne.io import Spectrum

SNR = 100.0


@pytest.fixture(scope="module")
def emulator():
    wave = np.exp(np.linspace(np.log(5000.0), np.log(5100.0), 1500))
    return SyntheticLineEmulator(wave, n_lines=40, line_width=3.0, seed=5)


def _spectra(emulator, n, seed, vsini=None, lo=5008.0, hi=5092.0):
    rng = np.random.default_rng(seed)
    low, high = emulator.bounds
    labels = low + (high - low) * rng.uniform(0.3, 0.7, (n, 3))
    rv = rng.uniform(-20, 20, n)
    rotation = vsini is not None
    fm = ForwardModel(emulator, rotation=rotation, macroturbulence=False, continuum="none", max_rv=60.0,
                      resolution=40_000.0, max_vsini=50.0)
    wave = np.exp(np.linspace(np.log(lo), np.log(hi), 1200))
    template = make_observation(wave, np.ones_like(wave))
    out = []
    for i in range(n):
        theta = np.r_[labels[i], rv[i]] if not rotation else np.r_[labels[i], rv[i], vsini]
        clean = np.asarray(fm.model_flux(theta, template), np.float64)
        err = np.full_like(clean, 1.0 / SNR)
        out.append(Spectrum.from_error(wave, clean + rng.normal(size=clean.size) * err, err, id=f"s{i}"))
    return out, labels, rv


def test_non_rotating_star_gets_a_normal_row_with_an_upper_limit(emulator):
    spectra, labels, rv = _spectra(emulator, 4, seed=1, vsini=0.0)
    opts = dict(rv=True, max_rv=60.0, continuum="none", resolution=40_000.0, emulator_error=False, templates=16)
    rotating = Fitter(emulator, vsini=True, max_vsini=50.0, **opts)  # compiled once, used twice
    with_rotation = fit_spectra(emulator, spectra, fitter=rotating, progress=False)
    without = fit_spectra(emulator, spectra, progress=False, **opts)
    flags = np.asarray(with_rotation["flags"])
    assert not np.any(flags & int(Flags.COV_SINGULAR)), with_rotation["message"]
    # most of these are not detected; every undetected one has an upper limit and the flag
    undetected = np.isnan(np.asarray(with_rotation["vsini_err"]))
    assert undetected.sum() >= 2
    assert np.all(flags[undetected] & int(Flags.UPPER_LIMIT))
    upper = np.asarray(with_rotation["vsini_upper"])[undetected]
    assert np.all((upper > 0) & (upper < 20.0))  # a few km/s at R = 40 000 and S/N 100
    # the other parameters' errors are as without rotation (vsini held at its best value ≈ 0)
    for name in ("teff", "logg", "feh", "rv"):
        np.testing.assert_allclose(np.asarray(with_rotation[f"{name}_err"])[undetected],
                                   np.asarray(without[f"{name}_err"])[undetected], rtol=0.15)
        assert np.all(np.isfinite(with_rotation[f"{name}_err"]))
    # a detected rotator keeps its error and no upper limit
    fast, _, _ = _spectra(emulator, 2, seed=2, vsini=15.0)
    detected = fit_spectra(emulator, fast, fitter=rotating, progress=False)
    assert np.all(np.isfinite(detected["vsini_err"])) and np.all(np.isnan(detected["vsini_upper"]))
    np.testing.assert_allclose(detected["vsini"], 15.0, atol=1.5)
    assert not np.any(np.asarray(detected["flags"]) & int(Flags.UPPER_LIMIT))


def test_default_fit_raises_no_flag_and_counts_clipped_pixels(emulator):
    # observed range reaching the emulator's edges: a few pixels beyond the model at any rv
    spectra, _, _ = _spectra(emulator, 3, seed=3, lo=5000.9, hi=5099.1)
    table = fit_spectra(emulator, spectra, rv=True, max_rv=60.0, continuum="filter", resolution=40_000.0,
                        progress=False, templates=16)
    assert np.all(np.asarray(table["n_clipped"]) > 0)
    # a few per cent of the pixels lost is no reason to look at a spectrum
    assert not np.any(np.asarray(table["flags"]) & int(Flags.PIXELS_CLIPPED))
    assert "good pixels outside the model's range" in table["message"][0]
    # the velocity window recovers pixels the ±max_rv margin would have lost
    fm = ForwardModel(emulator, rotation=False, macroturbulence=False, max_rv=60.0, resolution=40_000.0)
    strict = int(np.sum(fm.valid_wavelength(spectra[0].wavelength)))
    assert np.all(np.asarray(table["n_pixels"]) > strict)


def test_fixed_rv_recovers_the_margin_and_per_spectrum_rv_is_data(emulator):
    spectra, labels, rv = _spectra(emulator, 4, seed=4, lo=5000.9, hi=5099.1)
    free = Fitter(emulator, rv=True, max_rv=60.0, continuum="none", resolution=40_000.0, templates=16,
                  emulator_error=False)
    fixed = Fitter(emulator, rv=False, max_rv=60.0, continuum="none", resolution=40_000.0, templates=16,
                   emulator_error=False)
    assert fixed.forward.rv_margin == 0.0
    s = spectra[0]
    n_free = int(np.sum(np.asarray(free.forward.observation(s.wavelength, s.flux, s.ivar, outside="mask").ivar) > 0))
    n_fixed = int(np.sum(np.asarray(fixed.forward.observation(s.wavelength, s.flux, s.ivar, outside="mask").ivar) > 0))
    assert n_fixed > n_free
    # per-spectrum catalogue rv with rv not fitted: a fitter built for the range, values as data
    catalogue = Fitter(emulator, rv=False, fixed={"rv": 0.0}, max_rv=60.0, continuum="none",
                       resolution=40_000.0, templates=16, emulator_error=False)
    catalogue_margin = ForwardModel(emulator, rotation=False, macroturbulence=False, max_rv=60.0,
                                    fixed={"rv": 25.0}, resolution=40_000.0)
    assert catalogue_margin.rv_margin == 25.0
    with pytest.raises(ValueError, match="Doppler margin"):
        catalogue.fit(pad_observations([free.observation(s.wavelength, s.flux, s.ivar)]), fixed={"rv": [rv[0]]})
    fitter = Fitter(emulator, rv=False, fixed={"rv": 25.0}, max_rv=60.0, continuum="none",
                    resolution=40_000.0, templates=16, emulator_error=False)
    obs = [fitter.observation(x.wavelength, x.flux, x.ivar, rv_range=(-25.0, 25.0)) for x in spectra]
    result = fitter.fit(pad_observations(obs), fixed={"rv": rv})
    assert result.theta.shape == (4, 3)
    pulls = (result.theta - labels) / np.sqrt(np.diagonal(result.covariance, axis1=1, axis2=2))
    assert np.all(np.abs(pulls) < 5)
    wrong = fitter.fit(pad_observations(obs), fixed={"rv": rv - 8.0 * np.sign(rv)})
    assert np.all(wrong.chi2 > result.chi2 + 100)


def test_scaled_errors_floor_provenance_and_resume_refusal(emulator, tmp_path):
    spectra, _, _ = _spectra(emulator, 3, seed=5)
    out = tmp_path / "fit.ecsv"
    opts = dict(rv=True, max_rv=60.0, continuum="none", resolution=40_000.0, progress=False, templates=16)
    table = fit_spectra(emulator, spectra, out=out, error_floor={"teff": 50.0}, **opts)
    red = np.maximum(np.asarray(table["chi2_red"]), 1.0)
    np.testing.assert_allclose(table["teff_err_scaled"], np.hypot(table["teff_err"] * np.sqrt(red), 50.0))
    np.testing.assert_allclose(table["logg_err_scaled"], table["logg_err"] * np.sqrt(red))
    setup = json.loads(table.meta["FITSETUP"])
    assert setup["model"]["sha256"] == table.meta["MODELSHA"] and len(table.meta["MODELSHA"]) == 64
    assert setup["fit"]["continuum"] == "none" and setup["fit"]["max_rv"] == 60.0
    assert "relativistic" in table.meta["RVDEF"]
    # resuming with other settings, another model, or another floor refuses with one line
    with pytest.raises(ValueError, match=r"other settings \(continuum\)"):
        fit_spectra(emulator, spectra, out=out, resume=True, error_floor={"teff": 50.0},
                    **{**opts, "continuum": "filter"})
    other = SyntheticLineEmulator(emulator.wavelength, n_lines=40, line_width=3.0, seed=6)
    with pytest.raises(ValueError, match="existing results come from model"):
        fit_spectra(other, spectra, out=out, resume=True, error_floor={"teff": 50.0}, **opts)
    with pytest.raises(ValueError, match="error_floor"):
        fit_spectra(emulator, spectra, out=out, resume=True, **opts)
    again = fit_spectra(emulator, spectra, out=out, resume=True, error_floor={"teff": 50.0}, **opts)
    assert len(again) == 3


def test_spectrum_outside_the_model_is_named(emulator):
    spectra, _, _ = _spectra(emulator, 2, seed=6)
    far = Spectrum.from_error(np.linspace(6000.0, 6100.0, 500), np.ones(500), np.full(500, 0.01), id="far",
                              source="far.fits")
    told = []
    table = fit_spectra(emulator, [spectra[0], far, spectra[1]], rv=True, max_rv=60.0, continuum="none",
                        resolution=40_000.0, progress=False, templates=16,
                        report=lambda source, message: told.append((source, message)))
    row = table[1]
    assert row["flags"] == int(Flags.FAILED) and "entirely outside the model's range" in row["message"]
    assert told and told[0][0] == "far.fits" and "outside" in told[0][1]
    assert table[0]["flags"] & int(Flags.FAILED) == 0 and table[2]["flags"] & int(Flags.FAILED) == 0


def test_rv_frame_columns(emulator):
    spectra, _, rv = _spectra(emulator, 2, seed=7)
    spectra = [spectra[0].replace(frame="topocentric", barycentric_correction=12.5),
               spectra[1].replace(frame="barycentric")]
    table = fit_spectra(emulator, spectra, rv=True, max_rv=60.0, continuum="none", resolution=40_000.0,
                        progress=False, templates=16)
    assert list(table["rv_frame"]) == ["topocentric", "barycentric"]
    assert table["bc"][0] == 12.5 and np.isnan(table["bc"][1])
    v, bc, c = table["rv"][0], 12.5, 299_792.458
    assert table["rv_bary"][0] == pytest.approx((v + bc) / (1 + v * bc / c**2))
    assert table["rv_bary"][1] == pytest.approx(table["rv"][1])
