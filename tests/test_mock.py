"""Invariants of the mock spectrum generator (jaxpayne.testing.mock).

The mock is not a synthesis code, so these tests check the behaviour it promises: determinism,
bounds, the curve of growth, the response of lines to each label, smoothness in the labels,
independence of the line list from the grid, broadcasting and input validation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxpayne.forward.doppler import SPEED_OF_LIGHT
from jaxpayne.testing import (
    DEFAULT_LABELS,
    MockSpectrumGenerator,
    canonical_label_name,
    mock,
    mock_grid,
    mock_spectra,
    pseudo_voigt,
)

NAMES = ("teff", "logg", "feh", "vmic", "mg_fe")
SUN = np.array([5772.0, 4.438, 0.0, 1.0, 0.0])
#: numpy >= 2 renamed trapz to trapezoid.
_trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")
#: A short optical stretch, sampled finely enough (0.01 Å) to resolve the Doppler cores.
OPTICAL = np.linspace(5000.0, 5060.0, 6001)


def _window(wavelength):
    """Profile half-window of a line at ``wavelength`` [Å]."""
    return wavelength * mock.PROFILE_HALFWIDTH_KMS / SPEED_OF_LIGHT


def _equivalent_width(wavelength, flux):
    """∫ (1 − F) dλ [Å] on a uniform grid, along the last axis."""
    return np.sum(1.0 - flux, axis=-1) * (wavelength[1] - wavelength[0])


def _isolated_line_ews(generator, wavelength, labels, names):
    """Indices of lines with no neighbour within two windows, and their EWs [Å] per star."""
    centres = generator.linelist.wavelength
    half = _window(centres)
    gaps = np.diff(centres)
    isolated = np.ones(centres.size, bool)
    isolated[1:] &= gaps > 2.0 * half[1:]
    isolated[:-1] &= gaps > 2.0 * half[:-1]
    isolated &= (centres - half > wavelength[0]) & (centres + half < wavelength[-1])
    index = np.flatnonzero(isolated)
    flux = generator(wavelength, labels, names)
    step = wavelength[1] - wavelength[0]
    ews = np.stack(
        [
            np.sum(1.0 - flux[..., np.abs(wavelength - centres[i]) <= half[i]], axis=-1) * step
            for i in index
        ],
        axis=-1,
    )
    return index, ews


# ------------------------------------------------------------------------------ determinism


def test_same_seed_is_identical_and_other_seed_differs():
    labels = np.array([SUN, [4500.0, 2.0, -0.5, 1.5, 0.2]])
    a = mock_spectra(OPTICAL, labels, NAMES, seed=3)
    b = mock_spectra(OPTICAL, labels, NAMES, seed=3)
    c = mock_spectra(OPTICAL, labels, NAMES, seed=4)
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 0.1
    lines_a = MockSpectrumGenerator((5000.0, 5100.0), seed=3).linelist
    lines_b = MockSpectrumGenerator((5000.0, 5100.0), seed=3).linelist
    for field_a, field_b in zip(lines_a, lines_b):
        np.testing.assert_array_equal(field_a, field_b)
    other = MockSpectrumGenerator((5000.0, 5100.0), seed=4).linelist
    assert not np.array_equal(lines_a.wavelength[:10], other.wavelength[:10])


def test_linelist_is_read_only_and_generator_frozen():
    generator = MockSpectrumGenerator((5000.0, 5010.0))
    with pytest.raises(ValueError):
        generator.linelist.wavelength[0] = 1.0
    with pytest.raises(AttributeError):
        generator.seed = 2


def test_linelist_independent_of_range_and_sampling():
    wide = MockSpectrumGenerator((5000.0, 5200.0), seed=7).linelist
    narrow = MockSpectrumGenerator((5050.0, 5150.0), seed=7).linelist
    inside = (wide.wavelength >= 5050.0) & (wide.wavelength <= 5150.0)
    for field_wide, field_narrow in zip(wide, narrow):
        np.testing.assert_array_equal(field_wide[inside], field_narrow)
    # The same star on a fine grid and on a coarser sub-grid with other end points.
    fine = np.linspace(5000.0, 5040.0, 4001)
    coarse = fine[150:3700:7]
    f_fine = mock_spectra(fine, SUN, NAMES, seed=7)
    f_coarse = mock_spectra(coarse, SUN, NAMES, seed=7)
    np.testing.assert_allclose(f_coarse, f_fine[150:3700:7], rtol=0, atol=1e-13)


# ----------------------------------------------------------------------------------- bounds


def test_flux_bounded_in_unit_interval():
    lower = [3000.0, 0.0, -3.0, 0.0, -1.0]
    upper = [8000.0, 5.5, 1.0, 4.0, 1.0]
    labels, flux = mock_grid(64, OPTICAL, NAMES, lower, upper, seed=1, lines_per_angstrom=3.0)
    assert np.all(flux > 0.0) and np.all(flux <= 1.0)
    assert np.all(flux >= 1.0 - mock.MAX_LINE_DEPTH - 1e-12)
    assert flux.min() < 0.2  # saturated lines reach the floor
    assert np.all(labels >= lower) and np.all(labels <= upper)


# -------------------------------------------------------------------------- curve of growth


def test_pseudo_voigt_is_normalised_with_exact_limits():
    x = np.linspace(-40.0, 40.0, 400001)
    for gauss, lorentz in [(0.1, 0.0), (0.1, 0.02), (0.05, 0.2)]:
        area = _trapezoid(pseudo_voigt(x, gauss, lorentz), x)
        fwhm, mixing = mock._voigt_fwhm_and_mixing(gauss, lorentz)
        lorentz_tail = mixing * fwhm / (math.pi * x[-1])  # Lorentzian area beyond ±40 Å
        assert area == pytest.approx(1.0 - lorentz_tail, abs=2e-5)
    sigma = 0.1 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    gaussian = np.exp(-0.5 * (x / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
    np.testing.assert_allclose(pseudo_voigt(x, 0.1, 0.0), gaussian, rtol=1e-12, atol=1e-300)
    lorentzian = (0.05 / math.pi) / (x**2 + 0.05**2)
    np.testing.assert_allclose(pseudo_voigt(x, 0.0, 0.1), lorentzian, rtol=1e-4)


def test_weak_lines_follow_linear_curve_of_growth():
    """Weak isolated lines: W = D_max · S (the linear part of the curve of growth)."""
    generator = MockSpectrumGenerator((5000.0, 5060.0), lines_per_angstrom=0.5)
    star = SUN.copy()
    star[2] = -5.0  # every line weak
    index, ews = _isolated_line_ews(generator, OPTICAL, star, NAMES)
    params = generator.line_parameters(star, NAMES)
    assert index.size >= 5
    # ∫ φ w dλ: the profile area kept by the window taper (slightly < 1 through the wings).
    centres = generator.linelist.wavelength[index]
    x = np.linspace(-1.0, 1.0, 200001)
    kept = [
        _trapezoid(
            pseudo_voigt(x * _window(c), params.gaussian_fwhm[i], params.lorentzian_fwhm[i])
            * mock._profile_taper(np.abs(x)),
            x * _window(c),
        )
        for i, c in zip(index, centres)
    ]
    assert 0.99 < min(kept) < max(kept) < 1.0
    expected = mock.MAX_LINE_DEPTH * params.strength[index] * np.array(kept)
    np.testing.assert_allclose(ews, expected, rtol=1e-4)


def test_feh_deepens_fe_lines_monotonically_and_saturates():
    generator = MockSpectrumGenerator((5000.0, 5060.0), elements=("Fe",))
    fehs = np.linspace(-5.0, 0.5, 12)
    labels = np.tile(SUN[:4], (fehs.size, 1))
    labels[:, 2] = fehs
    flux = generator(OPTICAL, labels, NAMES[:4])
    assert np.all(np.diff(flux, axis=0) <= 1e-15)  # every pixel deepens
    ew = _equivalent_width(OPTICAL, flux)
    assert np.all(np.diff(ew) > 0)
    slope = np.diff(np.log10(ew)) / np.diff(fehs)
    assert slope[0] == pytest.approx(1.0, abs=0.01)  # linear regime
    assert slope[-1] < 0.6  # flat / damping regime
    assert np.all(np.diff(slope) < 1e-3)  # the curve of growth bends over


def test_mg_fe_changes_only_mg_lines():
    generator = MockSpectrumGenerator((5000.0, 5060.0), elements=("Fe", "Mg", "Si"))
    labels = np.array([SUN, SUN, SUN])
    labels[:, 4] = [-0.2, 0.1, 0.4]
    flux = generator(OPTICAL, labels, NAMES)
    lines = generator.linelist
    mg = lines.element == "Mg"
    assert mg.sum() >= 3
    distance = np.min(np.abs(OPTICAL[:, None] - lines.wavelength[mg][None, :]), axis=1)
    far = distance > _window(OPTICAL)
    assert far.sum() > 1000
    np.testing.assert_array_equal(flux[1, far], flux[0, far])
    np.testing.assert_array_equal(flux[2, far], flux[0, far])
    assert np.all(np.diff(flux, axis=0) <= 1e-15)
    assert np.all(np.diff(_equivalent_width(OPTICAL, flux)) > 0)
    strength = generator.line_parameters(labels, NAMES).strength
    np.testing.assert_array_equal(strength[1, ~mg], strength[0, ~mg])
    np.testing.assert_allclose(strength[2, mg] / strength[0, mg], 10.0**0.6, rtol=1e-12)


def test_vmic_adds_in_quadrature_and_grows_strong_lines_only():
    generator = MockSpectrumGenerator((5000.0, 5060.0), elements=("Fe",))
    vmics = np.array([0.0, 0.5, 1.0, 2.0, 3.0])
    labels = np.tile(SUN[:4], (vmics.size, 1))
    labels[:, 3] = vmics
    params = generator.line_parameters(labels, NAMES[:4])
    centres = generator.linelist.wavelength
    turbulent = 2.0 * math.sqrt(math.log(2.0)) * centres * vmics[:, None] / SPEED_OF_LIGHT
    np.testing.assert_allclose(
        params.gaussian_fwhm**2 - params.gaussian_fwhm[0] ** 2, turbulent**2, rtol=1e-10, atol=1e-16
    )
    np.testing.assert_array_equal(params.strength, params.strength[[0]].repeat(vmics.size, 0))
    ew_strong = _equivalent_width(OPTICAL, generator(OPTICAL, labels, NAMES[:4]))
    assert np.all(np.diff(ew_strong) > 0)
    weak = labels.copy()
    weak[:, 2] = -5.0
    ew_weak = _equivalent_width(OPTICAL, generator(OPTICAL, weak, NAMES[:4]))
    assert np.ptp(ew_weak) / ew_weak.mean() < 2e-3
    assert ew_strong[-1] / ew_strong[0] > 1.2


def test_cool_stars_strengthen_low_excitation_neutral_lines():
    wavelength = np.linspace(5000.0, 5150.0, 15001)
    generator = MockSpectrumGenerator((5000.0, 5150.0), elements=("Fe",), lines_per_angstrom=0.6)
    labels = np.array([[4500.0, 4.4, 0.0, 1.0], [5500.0, 4.4, 0.0, 1.0]])
    lines = generator.linelist
    low = (lines.ion == 0) & (lines.excitation_potential < 1.5)
    strength = generator.line_parameters(labels, NAMES[:4]).strength
    assert low.sum() >= 5
    assert np.all(strength[0, low] > strength[1, low])
    index, ews = _isolated_line_ews(generator, wavelength, labels, NAMES[:4])
    chosen = low[index] & (ews[1] > 1e-4)  # lines of at least 0.1 mÅ
    assert chosen.sum() >= 3
    assert np.all(ews[0, chosen] > ews[1, chosen])


def test_gravity_weakens_ionised_lines_and_broadens_wings():
    generator = MockSpectrumGenerator((5000.0, 5060.0))
    labels = np.array([[5000.0, 2.5, 0.0, 1.0], [5000.0, 4.5, 0.0, 1.0]])
    params = generator.line_parameters(labels, NAMES[:4])
    ionised = generator.linelist.ion == 1
    assert ionised.sum() >= 5
    assert np.all(params.strength[1, ionised] < params.strength[0, ionised])
    np.testing.assert_allclose(
        params.lorentzian_fwhm[1] / params.lorentzian_fwhm[0], 10.0 ** (2.0 / 3.0 * 2.0), rtol=1e-12
    )


def test_solar_strengths_follow_the_drawn_distribution():
    """At solar labels log10(S/λ) is the drawn r_☉: bounded by the maximum, exponential below it."""
    generator = MockSpectrumGenerator((5000.0, 5400.0))
    sun = [mock.SOLAR_TEFF, mock.SOLAR_LOGG, 0.0]
    lines = generator.linelist
    reduced = np.log10(generator.line_parameters(sun, NAMES[:3]).strength / lines.wavelength)
    offsets = np.array([mock.SPECIES[e].solar_strength_offset for e in lines.element])
    excess = mock.SOLAR_STRENGTH_MAX + offsets - reduced
    assert np.all(excess >= -1e-9)
    # Exponential(scale): mean ≈ scale (in dex) with ~600 lines.
    assert np.mean(excess) == pytest.approx(mock.SOLAR_STRENGTH_SCALE, rel=0.15)
    # Reference line of the calibration (Fe I 6151.6 Å) has log(S/λ) = −5 in the Sun.
    theta = mock.THETA_TEMPERATURE / mock.SOLAR_TEFF
    fe = mock.SPECIES["Fe"]
    log_pe = mock._log10_electron_pressure(mock.SOLAR_TEFF, mock.SOLAR_LOGG)
    log_neutral, _ = mock._log10_stage_fractions(mock.SOLAR_TEFF, log_pe, fe.ionization_energy_ev)
    reference = (
        mock.LOG_STRENGTH_ZERO_POINT
        + mock.REFERENCE_LINE_LOG_GF
        + fe.solar_abundance
        - 12.0
        + log_neutral
        - theta * mock.REFERENCE_LINE_EXCITATION_EV
    )
    assert reference == pytest.approx(-5.0, abs=1e-12)


def test_saha_constant_matches_gray():
    # Gray (2005) eq. 1.20: log10 of the Saha constant with the electron spin factor is −0.1762.
    assert mock.LN_SAHA_CONSTANT / math.log(10.0) == pytest.approx(-0.1762, abs=2e-4)


# ------------------------------------------------------------------------------- smoothness


@pytest.mark.parametrize("column, step", [(0, 40.0), (1, 0.1), (2, 0.1), (3, 0.1), (4, 0.1)])
def test_smooth_in_every_label(column, step):
    """Central differences converge at second order: D2(h) ≈ 4 D2(h/2), gradients agree."""
    wavelength = OPTICAL[:2000]
    generator = MockSpectrumGenerator((wavelength[0], wavelength[-1]))
    star = np.array([5200.0, 3.0, -0.3, 1.2, 0.1])
    offsets = np.array([-1.0, -0.5, 0.0, 0.5, 1.0]) * step
    labels = np.tile(star, (offsets.size, 1))
    labels[:, column] += offsets
    f = generator(wavelength, labels, NAMES)
    second_h = f[4] - 2.0 * f[2] + f[0]
    second_half = f[3] - 2.0 * f[2] + f[1]
    ratio = np.max(np.abs(second_h)) / np.max(np.abs(second_half))
    assert 3.5 < ratio < 4.5
    grad_h = (f[4] - f[0]) / (2.0 * step)
    grad_half = (f[3] - f[1]) / step
    scale = np.max(np.abs(grad_half))
    assert scale > 0
    assert np.max(np.abs(grad_h - grad_half)) < 0.1 * scale


# ---------------------------------------------------------------------- shapes and dtypes


def test_broadcasting_matches_loop():
    generator = MockSpectrumGenerator((5000.0, 5010.0))
    wavelength = np.linspace(5000.0, 5010.0, 300)
    rng = np.random.default_rng(0)
    lower = np.array([v[0] for v in DEFAULT_LABELS.values()])
    upper = np.array([v[1] for v in DEFAULT_LABELS.values()])
    labels = lower + (upper - lower) * rng.random((2, 3, 5))
    flux = generator(wavelength, labels, list(DEFAULT_LABELS))
    assert flux.shape == (2, 3, 300)
    for i in range(2):
        for j in range(3):
            single = generator(wavelength, labels[i, j], list(DEFAULT_LABELS))
            assert single.shape == (300,)
            np.testing.assert_allclose(flux[i, j], single, rtol=0, atol=1e-14)
    assert generator(wavelength, labels[:0, 0], list(DEFAULT_LABELS)).shape == (0, 300)


def test_label_order_and_aliases_do_not_matter():
    wavelength = OPTICAL[:500]
    reference = mock_spectra(wavelength, SUN, NAMES)
    aliases = ["[Mg/Fe]", "[Fe/H]", "TEFF", "vmic", "LogG"]
    permuted = mock_spectra(wavelength, SUN[[4, 2, 0, 3, 1]], aliases)
    np.testing.assert_array_equal(reference, permuted)
    default_vmic = mock_spectra(wavelength, SUN[[0, 1, 2]], ["teff", "logg", "feh"])
    np.testing.assert_array_equal(default_vmic, mock_spectra(wavelength, SUN[:4], NAMES[:4]))


def test_float32_in_float32_out():
    wavelength = OPTICAL[:1000].astype(np.float32)
    labels = np.array([SUN, [4300.0, 1.5, -0.7, 1.8, 0.3]], dtype=np.float32)
    f32 = mock_spectra(wavelength, labels, NAMES)
    f64 = mock_spectra(wavelength.astype(np.float64), labels.astype(np.float64), NAMES)
    assert f32.dtype == np.float32 and f64.dtype == np.float64
    np.testing.assert_allclose(f32, f64, rtol=0, atol=5e-6)


# -------------------------------------------------------------------------------- mock_grid


def test_mock_grid_is_deterministic_and_consistent_with_mock_spectra():
    wavelength = OPTICAL[:800]
    labels, flux = mock_grid(16, wavelength, seed=5, line_seed=2)
    again = mock_grid(16, wavelength, seed=5, line_seed=2)
    np.testing.assert_array_equal(labels, again[0])
    np.testing.assert_array_equal(flux, again[1])
    assert labels.shape == (16, 5) and flux.shape == (16, 800)
    direct = mock_spectra(wavelength, labels, tuple(DEFAULT_LABELS), seed=2)
    np.testing.assert_allclose(flux, direct, rtol=0, atol=1e-14)
    other_labels, _ = mock_grid(16, wavelength, seed=6, line_seed=2)
    assert not np.array_equal(labels, other_labels)


def test_mock_grid_sobol_fills_the_box_and_noise_has_the_requested_sigma():
    wavelength = OPTICAL[:400]
    lower, upper = [4000.0, 1.0, -1.0], [7000.0, 5.0, 0.5]
    names = ["teff", "logg", "feh"]
    labels, clean = mock_grid(64, wavelength, names, lower, upper, sampling="sobol")
    assert np.all(labels >= lower) and np.all(labels <= upper)
    # Each 1-D projection of a scrambled Sobol set of 64 points puts 8 points in each of 8 bins.
    unit = (labels - lower) / (np.array(upper) - lower)
    for column in range(3):
        counts = np.histogram(unit[:, column], bins=8, range=(0.0, 1.0))[0]
        np.testing.assert_array_equal(counts, 8)
    _, noisy = mock_grid(64, wavelength, names, lower, upper, sampling="sobol", noise=0.02)
    residual = noisy - clean
    assert np.std(residual) == pytest.approx(0.02, rel=0.03)
    assert abs(np.mean(residual)) < 1e-3


def test_mock_grid_dtype():
    labels, flux = mock_grid(4, OPTICAL[:100], dtype=np.float32)
    assert labels.dtype == np.float32 and flux.dtype == np.float32


# --------------------------------------------------------------------------------- failures


def test_canonical_label_names():
    assert canonical_label_name("Teff") == "teff"
    assert canonical_label_name("[Fe/H]") == "feh"
    assert canonical_label_name("[Mg/Fe]") == "mg_fe"
    assert canonical_label_name("C_FE") == "c_fe"
    for bad in ("mass", "[Xx/Fe]", "fe_fe", "mg_h"):
        with pytest.raises(ValueError, match="unknown label name"):
            canonical_label_name(bad)


@pytest.mark.parametrize(
    "wavelength, labels, names, message",
    [
        (OPTICAL[:50], SUN, ("teff", "logg", "feh", "vmic", "age"), "unknown label name"),
        (OPTICAL[:50], SUN[:4], NAMES, r"shape \(\.\.\., 5\)"),
        (OPTICAL[:50][::-1], SUN, NAMES, "strictly increasing"),
        (np.array([5001.0, 5001.0, 5002.0]), SUN, NAMES, "strictly increasing"),
        (OPTICAL[:50], SUN[[0, 1, 2, 2]], ("teff", "logg", "feh", "[Fe/H]"), "both mean"),
        (OPTICAL[:50], SUN[[1, 2]], ("logg", "feh"), "needs labels"),
        (OPTICAL[:50], [-5772.0, 4.4, 0.0], ("teff", "logg", "feh"), "teff must be > 0"),
        (OPTICAL[:50], [5772.0, 4.4, np.nan], ("teff", "logg", "feh"), "finite"),
        (np.linspace(4000.0, 5001.0, 20), SUN, NAMES, "outside"),
        (OPTICAL[:50].reshape(5, 10), SUN, NAMES, "1-D"),
    ],
)
def test_bad_inputs_raise_clear_errors(wavelength, labels, names, message):
    generator = MockSpectrumGenerator((5000.0, 5010.0))
    with pytest.raises(ValueError, match=message):
        generator(wavelength, labels, names)


def test_bad_configuration_raises():
    with pytest.raises(ValueError, match="no lines in this generator"):
        MockSpectrumGenerator((5000.0, 5010.0), elements=("Fe",))(OPTICAL[:10], SUN, NAMES)
    with pytest.raises(ValueError, match="unknown element"):
        MockSpectrumGenerator((5000.0, 5010.0), elements=("Fe", "Xx"))
    with pytest.raises(ValueError, match="seed"):
        MockSpectrumGenerator((5000.0, 5010.0), seed=-1)
    with pytest.raises(ValueError, match="wavelength_range"):
        MockSpectrumGenerator((5010.0, 5000.0))
    with pytest.raises(ValueError, match="sampling"):
        mock_grid(4, OPTICAL[:10], sampling="latin")
    with pytest.raises(ValueError, match="no default bounds"):
        mock_grid(4, OPTICAL[:10], ["teff", "logg", "feh", "si_fe"])
    with pytest.raises(ValueError, match="broadcast"):
        mock_grid(4, OPTICAL[:10], noise=np.ones(3))
