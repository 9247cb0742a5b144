"""Tests of jaxpayne.io: the Spectrum container, air/vacuum, and every reader (real and synthetic)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from jaxpayne.io import (
    APOGEE_BAD_PIXMASK_BITS,
    APOGEE_PIXMASK,
    FORMATS,
    Spectrum,
    SpectrumFormatError,
    SpectrumReadWarning,
    air_to_vacuum,
    apogee_pixmask_value,
    combine,
    detect_format,
    from_specutils,
    load_wavelength,
    read_apstar,
    read_galah_star,
    read_spectra,
    read_spectrum,
    vacuum_to_air,
)

APSTAR_MULTI = "apStar-dr17-2M17335483-2753043.fits"  # NVISITS = 3
APSTAR_SINGLE = "apStar-dr17-2M19485057+5005279.fits"  # NVISITS = 1
APVISITS = ("apVisit-r13-5095-55844-128.fits", "apVisit-r13-9518-57729-104.fits")
GALAH_PREFIX = "131216002601003"
#: GALAH CCD ranges [Å] from shared/README.md
GALAH_RANGES = {1: (4714, 4903), 2: (5650, 5874), 3: (6478, 6736), 4: (7586, 7887)}


def simple(n=50, lo=5000.0, hi=5010.0, **kw):
    wave = np.linspace(lo, hi, n)
    return Spectrum(wave, 1.0 + 0.01 * np.sin(wave), np.full(n, 1e4), **kw)


def assert_one_line(exc_info, path):
    msg = str(exc_info.value)
    assert msg.startswith(str(path)), msg
    assert "\n" not in msg and "Traceback" not in msg, msg
    assert isinstance(exc_info.value, ValueError)
    return msg


# =============================================================================== container


class TestSpectrum:
    def test_basic_and_from_error(self):
        w = np.linspace(5000, 5010, 6)
        s = Spectrum.from_error(w, np.ones(6), np.full(6, 0.01), id="star", segment=np.zeros(6, int))
        assert s.n_good == 6 and len(s) == 6
        np.testing.assert_allclose(s.ivar, 1e4)
        np.testing.assert_allclose(s.error, 0.01)
        assert s.medium == "vacuum" and s.id == "star" and s.meta["n_bad_input"] == 0
        assert s.wavelength.dtype == np.float64 and s.segment.dtype == np.int32 and s.mask.dtype == bool
        assert abs(s.snr - 100) < 1e-9
        assert "n=6" in repr(s)

    def test_float32_input_stored_float64(self):
        w = np.linspace(5000, 5010, 5, dtype=np.float32)
        s = Spectrum(w, np.ones(5, np.float32), np.ones(5, np.float32))
        assert s.flux.dtype == np.float64 and s.ivar.dtype == np.float64

    @pytest.mark.parametrize("field,size", [("flux", 4), ("ivar", 6), ("mask", 3), ("segment", 7)])
    def test_length_mismatch_names_the_array(self, field, size):
        kw = dict(wavelength=np.arange(5.0) + 5000, flux=np.ones(5), ivar=np.ones(5))
        kw[field] = np.zeros(size, dtype=bool if field == "mask" else float if field != "segment" else int)
        with pytest.raises(SpectrumFormatError, match=f"{field} has {size} pixels but wavelength has 5"):
            Spectrum(**kw)

    def test_bad_values_are_masked_and_counted(self):
        w = np.arange(6.0) + 5000
        flux = np.array([1, np.nan, 1, np.inf, 1, 1.0])
        ivar = np.array([1, 1, -1, 1, np.nan, 0.0])
        s = Spectrum(w, flux, ivar)
        assert s.meta["n_bad_input"] == 4  # NaN flux, inf flux, negative ivar, NaN ivar (ivar 0 is legal)
        np.testing.assert_array_equal(s.mask, [False, True, True, True, True, True])
        assert np.all(np.isfinite(s.flux)) and np.all(np.isfinite(s.ivar))
        np.testing.assert_array_equal(s.ivar[1:], 0)
        np.testing.assert_array_equal(s.good, ~s.mask)
        assert np.all(np.isfinite(s.weights))

    def test_from_error_bad_uncertainties(self):
        err = np.array([0.1, 0.0, -0.1, np.nan, np.inf, 1e-200])
        s = Spectrum.from_error(np.arange(6.0) + 5000, np.ones(6), err)
        np.testing.assert_array_equal(s.good, [True, False, False, False, False, False])
        assert s.meta["n_bad_input"] == 5
        both = Spectrum.from_error([5000.0, 5001.0], [np.nan, 1.0], [np.nan, 1.0])
        assert both.meta["n_bad_input"] == 1  # a pixel with NaN flux and NaN error is counted once

    def test_masked_pixel_keeps_ivar_but_has_zero_weight(self):
        s = Spectrum(np.arange(4.0) + 5000, np.ones(4), np.ones(4), mask=[False, True, False, False])
        assert s.ivar[1] == 1 and s.weights[1] == 0 and s.n_good == 3

    def test_unsorted_input_is_sorted_with_all_arrays(self):
        w = np.array([5003.0, 5001.0, 5002.0, 5000.0, 6001.0, 6000.0])
        flux = w * 2
        seg = np.array([1, 1, 1, 1, 0, 0])  # red chip labelled 0 by the caller
        mask = w == 5001.0
        s = Spectrum(w, flux, np.ones(6), mask=mask, segment=seg)
        assert np.all(np.diff(s.wavelength) > 0)
        np.testing.assert_array_equal(s.flux, s.wavelength * 2)
        assert s.mask[s.wavelength == 5001.0].all() and s.mask.sum() == 1
        np.testing.assert_array_equal(s.segment, [0, 0, 0, 0, 1, 1])  # renumbered from the blue end
        assert s.meta["sorted_on_input"]

    def test_duplicate_wavelengths_rejected(self):
        with pytest.raises(SpectrumFormatError, match="duplicated wavelength"):
            Spectrum([5000.0, 5001.0, 5001.0], np.ones(3), np.ones(3))

    def test_all_bad_rejected(self):
        with pytest.raises(SpectrumFormatError, match="all 3 pixels are bad"):
            Spectrum.from_error([5000.0, 5001.0, 5002.0], np.ones(3), [0.0, -1.0, np.nan])
        with pytest.raises(SpectrumFormatError, match="all 2 pixels are bad"):
            Spectrum([5000.0, 5001.0], np.ones(2), np.ones(2), mask=[True, True])

    @pytest.mark.parametrize(
        "wave,match",
        [([5000.0, np.nan], "NaN or infinite"), ([-1.0, 5000.0], "positive"), (np.ones((2, 2)), "1-D")],
    )
    def test_bad_wavelengths(self, wave, match):
        n = np.size(wave) if np.ndim(wave) == 1 else 2
        with pytest.raises(SpectrumFormatError, match=match):
            Spectrum(wave, np.ones(n), np.ones(n))

    def test_bad_medium_and_mask_dtype(self):
        with pytest.raises(SpectrumFormatError, match="medium"):
            simple(medium="water")
        with pytest.raises(SpectrumFormatError, match="mask must be boolean"):
            simple(n=3, mask=np.array([0.5, 0, 0]))

    def test_inputs_not_mutated_and_result_read_only(self):
        w = np.array([5002.0, 5000.0, 5001.0])
        f = np.array([1.0, np.nan, 3.0])
        iv = np.array([1.0, 1.0, -1.0])
        copies = [a.copy() for a in (w, f, iv)]
        s = Spectrum(w, f, iv)
        for a, c in zip((w, f, iv), copies):
            np.testing.assert_array_equal(a, c)
        with pytest.raises(ValueError):
            s.flux[0] = 5.0
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.id = "other"

    def test_quantity_wavelength_converted_to_angstrom(self):
        u = pytest.importorskip("astropy.units")
        s = Spectrum(np.array([500.0, 500.1, 500.2]) * u.nm, np.ones(3), np.ones(3))
        np.testing.assert_allclose(s.wavelength, [5000.0, 5001.0, 5002.0])

    def test_replace_and_select_segment(self):
        s = combine([simple(lo=6000, hi=6010, id="a"), simple(id="a")])
        assert s.n_segments == 2
        blue = s.select_segment(0)
        assert blue.wavelength.max() < 5100 and blue.n_segments == 1
        t = s.replace(mask=s.wavelength > 6005)
        assert t.n_good < s.n_good and t.id == "a"
        with pytest.raises(IndexError):
            s.select_segment(2)


class TestCombine:
    def test_segments_renumbered_and_meta(self):
        a = simple(lo=6000, hi=6010, id="star", source="red.fits", meta={"OBJECT": "mu Leo", "ccd": 2})
        b = simple(id="star", source="blue.fits", meta={"OBJECT": "mu Leo", "ccd": 1})
        c = combine([a, b])
        assert c.id == "star" and c.n_segments == 2 and len(c) == 100
        assert np.all(c.segment[c.wavelength < 5500] == 0) and np.all(c.segment[c.wavelength > 5500] == 1)
        assert c.meta["OBJECT"] == "mu Leo" and "ccd" not in c.meta
        assert [p["ccd"] for p in c.meta["parts"]] == [2, 1]
        assert c.meta["sources"] == ["red.fits", "blue.fits"]

    def test_multi_segment_parts_keep_distinct_segments(self):
        a = Spectrum(np.arange(4.0) + 5000, np.ones(4), np.ones(4), segment=[0, 0, 1, 1])
        b = Spectrum(np.arange(4.0) + 6000, np.ones(4), np.ones(4), segment=[0, 0, 1, 1])
        np.testing.assert_array_equal(combine([b, a], id="x").segment, [0, 0, 1, 1, 2, 2, 3, 3])

    def test_mixed_media_and_overlap_errors(self):
        with pytest.raises(SpectrumFormatError, match="different media"):
            combine([simple(), simple(lo=6000, hi=6010, medium="air")])
        with pytest.raises(SpectrumFormatError, match="duplicated"):
            combine([simple(), simple()])
        with pytest.raises(ValueError):
            combine([])

    def test_ids_joined_when_different(self):
        assert combine([simple(id="a"), simple(lo=6000, hi=6010, id="b")]).id == "a+b"


class TestAirVacuum:
    def test_reference_lines(self):
        # H-alpha and Ca II K: NIST air / vacuum wavelengths [Å]
        assert abs(vacuum_to_air(6564.614) - 6562.801) < 0.003
        assert abs(air_to_vacuum(3933.663) - 3934.777) < 0.003
        # APOGEE H band: ~4.4 Å shift at 16000 Å
        assert 4.2 < 16000 - vacuum_to_air(16000.0) < 4.6

    def test_round_trip_and_uv_untouched(self):
        w = np.geomspace(2000.5, 25000, 1001)
        np.testing.assert_allclose(air_to_vacuum(vacuum_to_air(w)), w, rtol=0, atol=1e-8)
        np.testing.assert_array_equal(vacuum_to_air([1200.0, 1500.0]), [1200.0, 1500.0])

    def test_same_formula_as_the_forward_model(self):
        """io converts data with the forward model's formula (jaxpayne.forward.media), as numpy float64."""
        from jaxpayne.forward import media

        w = np.geomspace(1990.0, 25000.0, 257)
        np.testing.assert_array_equal(vacuum_to_air(w), media.vacuum_to_air(w))
        np.testing.assert_array_equal(air_to_vacuum(w), media.air_to_vacuum(w))
        assert vacuum_to_air(w.astype(np.float32)).dtype == np.float64
        assert isinstance(air_to_vacuum([5000.0]), np.ndarray)

    def test_spectrum_methods(self):
        s = simple()
        assert s.to_vacuum() is s
        a = s.to_air()
        assert a.medium == "air" and np.all(a.wavelength < s.wavelength)
        np.testing.assert_allclose(a.to_vacuum().wavelength, s.wavelength, atol=1e-8)
        assert s.to_medium("air").medium == "air"
        np.testing.assert_array_equal(a.flux, s.flux)


# =============================================================================== real files


class TestApStar:
    def test_combined_default(self, need_data):
        path = need_data("apogee_dr17", APSTAR_MULTI)
        (s,) = read_spectrum(path)
        assert detect_format(path) == "apstar"
        assert s.id == "2M17335483-2753043" and s.medium == "vacuum" and s.meta["kind"] == "combined"
        assert 15100 < s.wavelength[0] and s.wavelength[-1] < 17000
        # log-uniform 6e-6 dex steps inside each chip, gaps between chips
        for k in range(3):
            steps = np.diff(np.log10(s.wavelength[s.segment == k]))
            np.testing.assert_allclose(steps, 6e-6, rtol=1e-6)
        assert s.n_segments == 3
        assert s.wavelength[s.segment == 0].max() < 15833 < s.wavelength[s.segment == 1].min()
        assert s.wavelength[s.segment == 1].max() < 16454 < s.wavelength[s.segment == 2].min()
        # header S/N agrees with the flux/error arrays; flagged pixels masked
        assert abs(s.snr / s.meta["SNR"] - 1) < 0.05
        assert s.meta["n_flagged"] > 0 and s.n_good == len(s) - s.meta["n_flagged"]
        assert s.meta["NVISITS"] == 3 and s.meta["rv_frame"] == "rest"
        assert abs(s.meta["VHELIO"] - 15.68) < 0.01

    def test_full_grid_and_visits(self, need_data):
        path = need_data("apogee_dr17", APSTAR_MULTI)
        spectra = read_apstar(path, visits=True, keep_gaps=True)
        assert len(spectra) == 4
        full = spectra[0]
        assert len(full) == 8575
        np.testing.assert_allclose(full.wavelength[[0, -1]], [10**4.179, 10 ** (4.179 + 6e-6 * 8574)])
        np.testing.assert_allclose(np.diff(np.log10(full.wavelength)), 6e-6, rtol=1e-6)
        assert full.meta["n_no_data"] == 784 and not full.good[:200].any()
        assert [s.meta["visit"] for s in spectra[1:]] == [1, 2, 3]
        assert spectra[2].id.endswith("_visit2") and abs(spectra[2].meta["JD"] - 2456433.88234) < 1e-6
        for s in spectra[1:]:
            assert abs(s.snr / s.meta["SNR"] - 1) < 0.1

    def test_single_visit_star(self, need_data):
        path = need_data("apogee_dr17", APSTAR_SINGLE)
        spectra = read_spectrum(path, visits=True)  # row 1 is all zeros: the combined row is the visit
        assert len(spectra) == 1 and spectra[0].meta["NVISITS"] == 1

    def test_pixmask_bits_configurable(self, need_data):
        path = need_data("apogee_dr17", APSTAR_MULTI)
        (default,) = read_spectrum(path)
        (none,) = read_spectrum(path, pixmask_bits=0)
        strict_bits = list(APOGEE_BAD_PIXMASK_BITS) + ["PERSIST_HIGH", "SIG_SKYLINE"]
        (strict,) = read_spectrum(path, pixmask_bits=strict_bits)
        assert none.meta["n_flagged"] == 0 < default.meta["n_flagged"] < strict.meta["n_flagged"]
        assert apogee_pixmask_value(["BADPIX", "NOSKY"]) == 1 | 1 << 7 == apogee_pixmask_value([0, 7])
        with pytest.raises(ValueError, match="unknown APOGEE_PIXMASK bit"):
            read_spectrum(path, pixmask_bits=["NOT_A_BIT"])
        assert APOGEE_PIXMASK["NOT_ENOUGH_PSF"] == 14

    def test_medium_contradiction(self, need_data):
        path = need_data("apogee_dr17", APSTAR_MULTI)
        with pytest.raises(SpectrumFormatError, match="vacuum"):
            read_spectrum(path, medium="air")


class TestApVisit:
    @pytest.mark.parametrize("name", APVISITS)
    def test_sorted_three_chips(self, need_data, name):
        path = need_data("apogee_dr17", name)
        (s,) = read_spectrum(path)
        assert detect_format(path) == "apvisit" and s.meta["format"] == "apvisit"
        assert len(s) == 3 * 4096 and np.all(np.diff(s.wavelength) > 0)
        np.testing.assert_array_equal(np.bincount(s.segment), [4096] * 3)
        assert s.wavelength[s.segment == 0].max() < s.wavelength[s.segment == 1].min()
        assert 15100 < s.wavelength[0] < 15200 and 16900 < s.wavelength[-1] < 17000
        assert s.meta["rv_frame"] == "observed" and "VHELIO" in s.meta and "SNR" in s.meta
        assert abs(s.meta["VHELIO"] - (s.meta["VRAD"] + s.meta["BC"])) < 0.01
        assert s.medium == "vacuum" and s.meta["n_flagged"] > 0

    def test_id_names_the_visit(self, need_data):
        (s,) = read_spectrum(need_data("apogee_dr17", APVISITS[0]))
        assert s.id == "2M01183798+8403419_5095-55844-128"


class TestGalah:
    def test_single_ccds(self, need_data):
        folder = need_data("galah_benchmark")
        for ccd, (lo, hi) in GALAH_RANGES.items():
            path = folder / f"{GALAH_PREFIX}{ccd}.fits"
            (s,) = read_spectrum(path)
            assert detect_format(path) == "galah"
            assert s.medium == "air" and s.meta["ccd"] == ccd and s.id == GALAH_PREFIX
            assert abs(s.wavelength[0] - lo) < 1 and abs(s.wavelength[-1] - hi) < 1
            assert len(s) == 4096 and s.n_segments == 1

    def test_sigma_is_relative(self, need_data):
        """input_sigma ∝ F^-1/2 (relative Poisson noise); an absolute sigma would grow as F^+1/2."""
        from astropy.io import fits

        folder = need_data("galah_benchmark")
        for ccd in (1, 2, 3):
            path = folder / f"{GALAH_PREFIX}{ccd}.fits"
            with fits.open(path) as hdul:
                flux = hdul[0].data.astype(float)
                rel = hdul["input_sigma"].data.astype(float)
            slope = np.polyfit(np.log(flux), np.log(rel), 1)[0]
            assert -0.7 < slope < -0.3
            gain = 1 / np.median(rel * np.sqrt(flux)) ** 2  # e-/ADU implied by Poisson noise
            assert 1.5 < gain < 3.5
            (s,) = read_spectrum(path)
            np.testing.assert_allclose(s.error, rel * flux, rtol=1e-6)
            assert 50 < s.snr < 500

    def test_air_wavelengths_put_lines_at_air_positions(self, need_data):
        """Line cores sit within a few km/s of their air lab wavelengths (vacuum would be +82 km/s)."""
        from jaxpayne.forward.doppler import SPEED_OF_LIGHT as c_kms

        star = read_galah_star(need_data("galah_benchmark") / GALAH_PREFIX)
        for lab in (6562.797, 7698.974, 6494.980):  # H-alpha, K I, Fe I (air, NIST)
            near = np.abs(star.wavelength - lab) < 1.0
            i = np.flatnonzero(near)[np.argmin(star.flux[near])]
            x, y = star.wavelength[i - 2 : i + 3], star.flux[i - 2 : i + 3]
            a, b, _ = np.polyfit(x - x[2], y, 2)
            velocity = (x[2] - b / (2 * a)) / lab * c_kms - c_kms
            assert -10 < velocity < 5  # measured ≈ -3 km/s in this frame (see docs/spectra_io.md)

    def test_star_from_prefix_and_batch_grouping(self, need_data):
        folder = need_data("galah_benchmark")
        star = read_galah_star(folder / GALAH_PREFIX)
        assert star.n_segments == 4 and len(star) == 4 * 4096 and star.meta["ccds"] == [1, 2, 3, 4]
        for ccd, (lo, hi) in GALAH_RANGES.items():
            w = star.wavelength[star.segment == ccd - 1]
            assert abs(w[0] - lo) < 1 and abs(w[-1] - hi) < 1
        paths = [folder / f"{GALAH_PREFIX}{k}.fits" for k in (3, 1, 4, 2)]
        batch = read_spectra(paths)
        assert len(batch) == 1 and batch[0].n_segments == 4 and batch.failures == []
        np.testing.assert_array_equal(batch[0].wavelength, star.wavelength)
        assert len(read_spectra(paths, group_galah=False)) == 4

    def test_mixed_batch_keeps_order(self, need_data):
        folder = need_data("galah_benchmark")
        apstar = need_data("apogee_dr17", APSTAR_SINGLE)
        paths = [folder / f"{GALAH_PREFIX}1.fits", apstar, folder / f"{GALAH_PREFIX}2.fits"]
        batch = read_spectra(paths)
        assert [s.meta["format"] for s in batch] == ["galah", "apstar"]
        assert batch[0].meta["ccds"] == [1, 2]

    def test_duplicate_ccd_is_a_failure_not_a_crash(self, need_data):
        path = need_data("galah_benchmark", f"{GALAH_PREFIX}1.fits")
        with pytest.raises(SpectrumFormatError, match="more than once"):
            read_spectra([path, path])
        out = read_spectra([path, path], on_error="skip")
        assert len(out) == 0 and len(out.failures) == 2


class TestBinspec:
    def test_combined(self, need_data):
        folder = need_data("binspec_apogee")
        path = folder / "spectrum_combined_2M13012770+5754582.npz"
        with pytest.raises(SpectrumFormatError, match="wavelength="):
            read_spectrum(path)
        (s,) = read_spectrum(path, wavelength=folder / "apogee_wavelength.npz")
        assert detect_format(path) == "binspec" and s.id == "2M13012770+5754582"
        assert abs(np.median(s.flux) - 1) < 0.05  # pseudo-continuum normalized
        np.testing.assert_array_equal(np.bincount(s.segment), [2920, 2400, 1894])
        # spec_err >= 0.1 marks bad pixels: kept unmasked with their real (tiny) ivar
        inflated = s.error >= 0.1
        assert inflated.sum() == 269 and s.good[inflated].all() and s.ivar[inflated].max() <= 100

    def test_visits_with_array_grid(self, need_data):
        folder = need_data("binspec_apogee")
        with np.load(folder / "apogee_wavelength.npz") as z:
            grid = z["wavelength"]
        spectra = read_spectrum(folder / "spectra_visit_2M06133561+2433362.npz", wavelength=grid)
        assert len(spectra) == 3
        assert [s.meta["visit"] for s in spectra] == [1, 2, 3]
        assert abs(spectra[0].meta["VHELIO"] - 17.6236) < 1e-3 and abs(spectra[0].meta["SNR"] - 101.267) < 1e-3
        assert "HJD" in spectra[2].meta
        for s in spectra:
            assert abs(np.median(s.flux) - 1) < 0.05 and s.medium == "vacuum"

    def test_segments_from_an_unsorted_grid(self, need_data):
        folder = need_data("binspec_apogee")
        with np.load(folder / "apogee_wavelength.npz") as z:
            grid = z["wavelength"]
        (s,) = read_spectrum(folder / "spectrum_combined_2M13012770+5754582.npz", wavelength=grid[::-1])
        np.testing.assert_array_equal(np.bincount(s.segment), [2920, 2400, 1894])  # chips found all the same

    def test_wrong_grid_length(self, need_data):
        folder = need_data("binspec_apogee")
        with pytest.raises(SpectrumFormatError, match="7214 pixels but the wavelength grid has 12288"):
            read_spectrum(
                folder / "spectrum_combined_2M13012770+5754582.npz", wavelength=folder / "apogee_visit_wavelength.npz"
            )


# =============================================================================== synthetic files


def _fits():
    return pytest.importorskip("astropy.io.fits")


@pytest.fixture
def wave():
    return np.linspace(5000.0, 5100.0, 200)


@pytest.fixture
def flux(wave):
    return 1.0 - 0.3 * np.exp(-0.5 * ((wave - 5050) / 0.5) ** 2)


class TestFitsTable:
    def test_scalar_columns_units_and_case(self, tmp_path, wave, flux):
        fits = _fits()
        cols = [
            fits.Column(name="Wave", format="D", array=wave / 10, unit="nm"),
            fits.Column(name="FLUX", format="D", array=flux, unit="erg/s/cm2/AA"),
            fits.Column(name="Sigma", format="D", array=np.full(wave.size, 0.01)),
            fits.Column(name="mask", format="L", array=wave > 5090),
        ]
        path = tmp_path / "table.fits"
        hdr = fits.Header({"OBJECT": "HD 1", "SNR": 100.0})
        fits.HDUList([fits.PrimaryHDU(header=hdr), fits.BinTableHDU.from_columns(cols)]).writeto(path)
        (s,) = read_spectrum(path)
        assert detect_format(path) == "fits-table"
        np.testing.assert_allclose(s.wavelength, wave)
        np.testing.assert_allclose(s.ivar, 1e4)
        assert s.id == "HD 1" and s.meta["SNR"] == 100.0 and s.meta["flux_unit"] == "erg/s/cm2/AA"
        assert s.mask.sum() == np.sum(wave > 5090)
        assert s.meta["medium_assumed"] and s.medium == "vacuum"
        (a,) = read_spectrum(path, medium="air")
        assert a.medium == "air" and a.meta["medium_source"] == "argument"

    def test_sdss_like_loglam_ivar(self, tmp_path, wave, flux):
        fits = _fits()
        cols = [
            fits.Column(name="flux", format="E", array=flux),
            fits.Column(name="loglam", format="E", array=np.log10(wave)),
            fits.Column(name="ivar", format="E", array=np.full(wave.size, 400.0)),
            fits.Column(name="and_mask", format="J", array=np.where(wave < 5001, 16, 0)),
        ]
        path = tmp_path / "spec-lite.fits"
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
        hdr_vac = fits.Header({"VACUUM": True})
        path2 = tmp_path / "spec-lite-vac.fits"
        fits.HDUList([fits.PrimaryHDU(header=hdr_vac), fits.BinTableHDU.from_columns(cols)]).writeto(path2)
        (s,) = read_spectrum(path)
        np.testing.assert_allclose(s.wavelength, wave, rtol=1e-6)
        np.testing.assert_allclose(s.ivar, 400.0)
        assert s.mask.sum() == np.sum(wave < 5001)
        (v,) = read_spectrum(path2)
        assert v.medium == "vacuum" and v.meta["medium_source"] == "file"

    def test_vector_rows_are_several_spectra_and_air_column(self, tmp_path, wave, flux):
        fits = _fits()
        n = wave.size
        cols = [
            fits.Column(name="WAVELENGTH_AIR", format=f"{n}D", array=np.stack([wave, wave + 1])),
            fits.Column(name="FLUX", format=f"{n}D", array=np.stack([flux, flux * 2])),
            fits.Column(name="IVAR", format=f"{n}D", array=np.ones((2, n))),
            fits.Column(name="OBJID", format="10A", array=np.array(["star1", "star2"])),
        ]
        path = tmp_path / "rows.fits"
        fits.BinTableHDU.from_columns(cols).writeto(path)
        spectra = read_spectrum(path, format="fits-table")
        assert [s.id for s in spectra] == ["star1", "star2"]
        assert all(s.medium == "air" for s in spectra)
        np.testing.assert_allclose(spectra[1].flux, 2 * flux)

    def test_table_without_flux_is_not_recognised(self, tmp_path):
        fits = _fits()
        path = tmp_path / "catalog.fits"
        fits.BinTableHDU.from_columns([fits.Column(name="teff", format="D", array=[5000.0])]).writeto(path)
        with pytest.raises(SpectrumFormatError, match="not a recognised spectrum file") as info:
            read_spectrum(path)
        assert "teff" in assert_one_line(info, path)


class TestFitsImage:
    def test_linear_wcs_with_error_hdu(self, tmp_path, wave, flux):
        fits = _fits()
        hdr = fits.Header(
            {"CRVAL1": 5000.0, "CDELT1": wave[1] - wave[0], "CRPIX1": 1, "CTYPE1": "LINEAR", "OBJECT": "sun"}
        )
        path = tmp_path / "image.fits"
        fits.HDUList([fits.PrimaryHDU(flux, header=hdr), fits.ImageHDU(np.full(wave.size, 0.02))]).writeto(path)
        (s,) = read_spectrum(path)
        assert detect_format(path) == "fits-image" and s.id == "sun"
        np.testing.assert_allclose(s.wavelength, wave)
        np.testing.assert_allclose(s.error, 0.02)

    def test_crpix_and_cd_and_air(self, tmp_path, wave, flux):
        fits = _fits()
        step = wave[1] - wave[0]
        hdr = fits.Header({"CRVAL1": wave[10], "CD1_1": step, "CRPIX1": 11, "CTYPE1": "AWAV", "CUNIT1": "Angstrom"})
        path = tmp_path / "air.fits"
        fits.HDUList([fits.PrimaryHDU(flux, header=hdr), fits.ImageHDU(np.full(wave.size, 1e4), name="IVAR")]).writeto(
            path
        )
        (s,) = read_spectrum(path)
        np.testing.assert_allclose(s.wavelength, wave)
        assert s.medium == "air" and s.meta["medium_source"] == "file"
        np.testing.assert_allclose(s.ivar, 1e4)

    def test_log_linear_wcs_and_mask_hdu(self, tmp_path):
        fits = _fits()
        loglam = 3.7 + 1e-4 * np.arange(300)
        f = np.ones(300) + 0.01 * np.sin(np.arange(300))
        hdr = fits.Header({"CRVAL1": 3.7, "CDELT1": 1e-4, "CRPIX1": 1, "DC-FLAG": 1})
        mask = np.zeros(300, np.int16)
        mask[:5] = 1
        path = tmp_path / "loglin.fits"
        fits.HDUList(
            [
                fits.PrimaryHDU(f, header=hdr),
                fits.ImageHDU(np.full(300, 0.01), name="ERROR"),
                fits.ImageHDU(mask, name="MASK"),
            ]
        ).writeto(path)
        (s,) = read_spectrum(path)
        np.testing.assert_allclose(s.wavelength, 10**loglam)
        assert s.mask.sum() == 5

    def test_missing_errors_estimated_or_refused(self, tmp_path):
        fits = _fits()
        rng = np.random.default_rng(1)
        f = 1 + rng.normal(0, 0.01, 2000)
        path = tmp_path / "noerr.fits"
        fits.PrimaryHDU(f, header=fits.Header({"CRVAL1": 5000.0, "CDELT1": 0.05})).writeto(path)
        (s,) = read_spectrum(path)
        assert s.meta["ivar_estimated"] == "DER_SNR"
        assert abs(s.meta["noise_estimate"] / 0.01 - 1) < 0.1
        with pytest.raises(SpectrumFormatError, match="no uncertainties") as info:
            read_spectrum(path, estimate_missing_errors=False)
        assert_one_line(info, path)

    def test_log10_axis_without_flag_is_refused(self, tmp_path):
        fits = _fits()
        path = tmp_path / "nolog.fits"
        fits.PrimaryHDU(np.ones(50), header=fits.Header({"CRVAL1": 3.7, "CDELT1": 1e-4})).writeto(path)
        with pytest.raises(SpectrumFormatError, match="log10") as info:
            read_spectrum(path)
        assert_one_line(info, path)

    def test_no_wavelength_solution(self, tmp_path, wave):
        fits = _fits()
        path = tmp_path / "nowcs.fits"
        fits.HDUList([fits.PrimaryHDU(np.ones(wave.size)), fits.ImageHDU(np.ones(wave.size))]).writeto(path)
        with pytest.raises(SpectrumFormatError, match="no wavelength solution"):
            read_spectrum(path)
        (s,) = read_spectrum(path, wavelength=wave)
        assert s.meta["wavelength_source"] == "argument"

    def test_hdu_argument(self, tmp_path, wave, flux):
        fits = _fits()
        hdr = fits.Header({"CRVAL1": 5000.0, "CDELT1": wave[1] - wave[0]})
        path = tmp_path / "ext.fits"
        fits.HDUList(
            [
                fits.PrimaryHDU(),
                fits.ImageHDU(np.zeros(3), name="JUNK"),
                fits.ImageHDU(flux, header=hdr, name="SPEC"),
                fits.ImageHDU(np.full(wave.size, 0.1), name="SPEC_ERR"),
            ]
        ).writeto(path)
        for s in read_spectrum(path, hdu="SPEC") + read_spectrum(path):  # named like flux: found either way
            np.testing.assert_allclose(s.flux, flux)
            np.testing.assert_allclose(s.wavelength, wave)
        np.testing.assert_allclose(s.error, 0.1)
        with pytest.raises(SpectrumFormatError, match="no HDU 'NOPE'"):
            read_spectrum(path, hdu="NOPE")


class TestNpzAndText:
    def test_generic_npz_single_and_many(self, tmp_path, wave, flux):
        p1 = tmp_path / "one.npz"
        np.savez(p1, wavelength=wave, flux=flux, error=np.full(wave.size, 0.05))
        (s,) = read_spectrum(p1)
        assert detect_format(p1) == "npz" and s.id == "one"
        np.testing.assert_allclose(s.ivar, 400)
        p2 = tmp_path / "many.npz"
        np.savez(
            p2,
            wave=wave,
            flux=np.stack([flux, flux, flux]),
            ivar=np.ones((3, wave.size)),
            id=np.array(["a", "b", "c"]),
            medium=np.array("air"),
        )
        spectra = read_spectrum(p2)
        assert [s.id for s in spectra] == ["a", "b", "c"] and all(s.medium == "air" for s in spectra)

    def test_npz_needs_grid(self, tmp_path, wave, flux):
        path = tmp_path / "nogrid.npz"
        np.savez(path, flux=flux, ivar=np.ones(wave.size))
        with pytest.raises(SpectrumFormatError, match="pass wavelength="):
            read_spectrum(path)
        grid = tmp_path / "grid.npy"
        np.save(grid, wave)
        (s,) = read_spectrum(path, wavelength=grid)
        np.testing.assert_allclose(s.wavelength, wave)

    def test_text_formats(self, tmp_path, wave, flux):
        named = tmp_path / "named.txt"
        np.savetxt(named, np.c_[flux, wave, np.full(wave.size, 0.01)], header="flux wavelength sigma")
        unnamed = tmp_path / "plain.dat"
        np.savetxt(unnamed, np.c_[wave, flux, np.full(wave.size, 0.01)])
        csv = tmp_path / "table.csv"
        np.savetxt(
            csv, np.c_[wave, flux, np.full(wave.size, 1e4)], delimiter=",", header="wave,flux,ivar", comments=""
        )
        for path in (named, unnamed, csv):
            (s,) = read_spectrum(path)
            assert detect_format(path) == "text"
            np.testing.assert_allclose(s.wavelength, wave)
            np.testing.assert_allclose(s.flux, flux)
            np.testing.assert_allclose(s.ivar, 1e4, rtol=1e-6)

    def test_text_errors(self, tmp_path):
        four = tmp_path / "four.txt"
        np.savetxt(four, np.ones((5, 4)) * 5000)
        with pytest.raises(SpectrumFormatError, match="add a header line"):
            read_spectrum(four)
        words = tmp_path / "words.txt"
        words.write_text("wavelength flux\n5000 abc\n")
        with pytest.raises(SpectrumFormatError, match="not a numeric table") as info:
            read_spectrum(words)
        assert_one_line(info, words)

    @pytest.mark.parametrize("suffix", ["npz", "npy", "txt", "fits"])
    def test_wavelength_files(self, tmp_path, wave, suffix):
        path = tmp_path / f"grid.{suffix}"
        if suffix == "npz":
            np.savez(path, wavelength=wave)
        elif suffix == "npy":
            np.save(path, wave)
        elif suffix == "txt":
            np.savetxt(path, wave)
        else:
            _fits().PrimaryHDU(wave).writeto(path)
        np.testing.assert_allclose(load_wavelength(path), wave)


# =============================================================================== specutils


class _Unc:
    def __init__(self, array, kind=None, unit=None):
        self.array = np.asarray(array)
        self.unit = unit
        if kind is not None:
            self.uncertainty_type = kind


class InverseVariance(_Unc):
    """Named like astropy's class; carries no ``uncertainty_type`` so the class name is used."""


class _FakeSpectrum:
    def __init__(self, axis, flux, uncertainty, mask=None, meta=None):
        self.spectral_axis = axis
        self.flux = flux
        self.uncertainty = uncertainty
        self.mask = mask
        self.meta = meta or {}


class TestSpecutils:
    def test_fake_object_std_var_ivar(self):
        u = pytest.importorskip("astropy.units")
        axis = np.linspace(1.50, 1.51, 20) * u.micron
        flux = np.ones(20) * u.Jy
        mask = np.zeros(20, bool)
        mask[3] = True
        s_std = from_specutils(
            _FakeSpectrum(axis, flux, _Unc(np.full(20, 10.0), "std", u.mJy), mask, {"header": {"OBJECT": "fake"}})
        )
        np.testing.assert_allclose(s_std.wavelength, np.linspace(15000, 15100, 20))
        np.testing.assert_allclose(s_std.error, 0.01)  # 10 mJy in Jy
        assert s_std.mask[3] and s_std.id == "fake" and s_std.meta["flux_unit"] == "Jy"
        s_var = from_specutils(_FakeSpectrum(axis, flux, _Unc(np.full(20, 1e-4), "var")))
        np.testing.assert_allclose(s_var.ivar, 1e4)
        s_ivar = from_specutils(_FakeSpectrum(axis, flux, InverseVariance(np.full(20, 4.0))), medium="air")
        np.testing.assert_allclose(s_ivar.ivar, 4.0)
        assert s_ivar.medium == "air" and s_std.meta["medium_assumed"]

    def test_frequency_axis_is_sorted(self):
        u = pytest.importorskip("astropy.units")
        lam = np.linspace(5000, 5010, 11) * u.AA
        nu = lam.to(u.THz, equivalencies=u.spectral())  # decreasing wavelength order
        s = from_specutils(_FakeSpectrum(nu, np.arange(11.0) * u.Jy, _Unc(np.ones(11), "std")))
        np.testing.assert_allclose(s.wavelength, lam.value, rtol=1e-10)
        np.testing.assert_allclose(s.flux, np.arange(11.0))

    def test_missing_or_unknown_uncertainty(self):
        u = pytest.importorskip("astropy.units")
        axis = np.linspace(5000, 5010, 5) * u.AA
        with pytest.raises(SpectrumFormatError, match="no uncertainty"):
            from_specutils(_FakeSpectrum(axis, np.ones(5) * u.Jy, None))
        with pytest.raises(SpectrumFormatError, match="unsupported uncertainty"):
            from_specutils(_FakeSpectrum(axis, np.ones(5) * u.Jy, _Unc(np.ones(5))))
        with pytest.raises(SpectrumFormatError, match="has no 'spectral_axis'"):
            from_specutils(object())

    def test_real_specutils(self):
        specutils = pytest.importorskip("specutils")
        u = pytest.importorskip("astropy.units")
        from astropy.nddata import StdDevUncertainty

        cls = getattr(specutils, "Spectrum", None) or specutils.Spectrum1D
        obj = cls(
            spectral_axis=np.linspace(500, 501, 30) * u.nm,
            flux=np.ones(30) * u.Jy,
            uncertainty=StdDevUncertainty(np.full(30, 0.1)),
        )
        (s,) = read_spectrum(obj)
        np.testing.assert_allclose(s.wavelength, np.linspace(5000, 5010, 30))
        np.testing.assert_allclose(s.ivar, 100)


# =============================================================================== bad files


class TestBadFiles:
    def _bad(self, path, match):
        with pytest.raises(SpectrumFormatError, match=match) as info:
            read_spectrum(path)
        return assert_one_line(info, path)

    def test_missing_and_directory(self, tmp_path):
        self._bad(tmp_path / "nope.fits", "file not found")
        self._bad(tmp_path, "is a directory")

    def test_empty_and_text_renamed_fits(self, tmp_path):
        empty = tmp_path / "empty.fits"
        empty.write_bytes(b"")
        self._bad(empty, "empty file")
        text = tmp_path / "text.fits"
        text.write_text("wavelength flux error\n5000 1 0.1\n")
        self._bad(text, "not a FITS file.*text file renamed")

    def test_truncated_fits(self, tmp_path, wave, flux):
        fits = _fits()
        good = tmp_path / "good.fits"
        hdr = fits.Header({"CRVAL1": 5000.0, "CDELT1": 0.5})
        fits.HDUList([fits.PrimaryHDU(np.ones(3000), header=hdr), fits.ImageHDU(np.ones(3000))]).writeto(good)
        data = good.read_bytes()
        second_header = 2880 + 25920  # primary header block + padded 24000-byte primary data
        cuts = {
            "cut_ext_data": len(data) - 4000,
            "cut_ext_header": second_header + 100,
            "cut_primary_data": 2880 * 3 + 100,
            "cut_primary_header": 1000,
        }
        for name, cut in cuts.items():
            path = tmp_path / f"{name}.fits"
            path.write_bytes(data[:cut])
            self._bad(path, "truncated|corrupt")
        unpadded = tmp_path / "unpadded.fits"  # only the final block padding missing: data complete
        unpadded.write_bytes(data[: second_header + 2880 + 24000])
        (s,) = read_spectrum(unpadded)
        assert len(s) == 3000

    def test_fits_with_no_usable_hdu(self, tmp_path):
        fits = _fits()
        path = tmp_path / "header_only.fits"
        fits.PrimaryHDU().writeto(path)
        msg = self._bad(path, "not a recognised spectrum file")
        assert "HDU 0: no data" in msg
        image2d = tmp_path / "image2d.fits"
        fits.PrimaryHDU(np.ones((10, 10))).writeto(image2d)
        assert "(10, 10)" in self._bad(image2d, "not a recognised spectrum file")

    def test_other_unreadable_content(self, tmp_path):
        npy = tmp_path / "bare.npy"
        np.save(npy, np.ones((3, 4)))
        assert "(3, 4)" in self._bad(npy, "bare array")
        junk = tmp_path / "junk.bin"
        junk.write_bytes(bytes(range(256)) * 4)
        self._bad(junk, "not a recognised spectrum file")
        fake_npz = tmp_path / "fake.npz"
        fake_npz.write_text("hello")
        self._bad(fake_npz, "not a valid .npz")
        keys = tmp_path / "keys.npz"
        np.savez(keys, teff=np.ones(3))
        assert "teff" in self._bad(keys, "no flux array")
        broken_zip = tmp_path / "broken.npz"
        broken_zip.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
        self._bad(broken_zip, "corrupt|cannot read")

    def test_argument_errors(self, tmp_path, wave, flux):
        path = tmp_path / "ok.npz"
        np.savez(path, wavelength=wave, flux=flux, ivar=np.ones(wave.size))
        with pytest.raises(ValueError, match="unknown format"):
            read_spectrum(path, format="votable")
        with pytest.raises(TypeError, match="unknown reader option"):
            read_spectrum(path, visit=True)
        with pytest.raises(ValueError, match="medium"):
            read_spectrum(path, medium="water")
        with pytest.raises(SpectrumFormatError, match="hdu= applies"):
            read_spectrum(path, hdu=1)
        with pytest.raises(ValueError, match="on_error"):
            read_spectra([path], on_error="ignore")
        assert "apstar" in FORMATS

    def test_batch_with_bad_file(self, tmp_path, wave, flux):
        good = tmp_path / "good.npz"
        np.savez(good, wavelength=wave, flux=flux, ivar=np.ones(wave.size))
        bad = tmp_path / "bad.fits"
        bad.write_text("not fits")
        with pytest.raises(SpectrumFormatError, match="bad.fits"):
            read_spectra([good, bad])
        with pytest.warns(SpectrumReadWarning) as record:
            out = read_spectra([good, bad, tmp_path / "missing.npz"], on_error="warn")
        assert len(record) == 2 and "bad.fits: not a FITS file" in str(record[0].message)
        assert len(out) == 1 and isinstance(out, list)
        assert [Path(p).name for p, _ in out.failures] == ["bad.fits", "missing.npz"]
        assert all("\n" not in m for _, m in out.failures)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(read_spectra([good, bad], on_error="skip").failures) == 1


def test_import_is_light():
    code = "import sys, jaxpayne.io; sys.exit(int('astropy' in sys.modules or 'jax' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
