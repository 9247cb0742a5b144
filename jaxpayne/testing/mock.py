"""Mock stellar spectra: a fast, deterministic, physically motivated toy generator.

**This is a mock, not a spectral-synthesis code.** There is no model atmosphere, no radiative
transfer, no molecules, no hydrogen lines and no continuum shape: a seeded random line list is
turned into a continuum-normalised spectrum with textbook scalings (Saha, Boltzmann, H⁻
continuum opacity, a saturating curve of growth and pseudo-Voigt profiles) evaluated at a single
"photospheric" temperature equal to Teff. The spectra *behave* like stellar spectra: Fe lines
deepen with [Fe/H], only Mg lines react to [Mg/Fe], low-excitation neutral lines strengthen in
cool stars, ionised lines weaken with gravity, strong lines grow with microturbulence and develop
damping wings at high gravity. They are smooth in every label and strictly deterministic for a
seed, which is what training grids for tests and the demo need. Never use them for science.

Model, for a star with labels Teff, log g, [Fe/H], vmic and [X/Fe] (see ``docs/mock_spectra.md``):

1. Line list (:class:`LineList`). For every element, lines are drawn in fixed 50 Å chunks of
   wavelength, each chunk from its own random stream seeded by ``(seed, element, chunk)``. So the
   list depends only on the seed, the configured elements/density and the wavelength range, and
   two ranges agree on their overlap.
2. Integrated line strength (Gray 2005, *The Observation and Analysis of Stellar Photospheres*,
   3rd ed., ch. 13 and 16; weak-line limit W/λ ∝ gf ε N_r,s / κ)

   .. math:: \\log_{10}(S/\\lambda) = Z + \\log gf + A_\\odot(X) - 12 + [X/H]
              + \\log_{10} f_r(T, P_e) - \\theta\\chi - \\log_{10}(\\kappa/\\kappa_\\odot)

   with θ = 5040 K / T, f_r the Saha fraction of the line's ionisation stage, P_e a power-law
   photospheric electron pressure in g and T, and κ ∝ P_e θ^{5/2} 10^{0.754 θ} the H⁻ bound-free
   opacity. Z is fixed so that Fe I 6151.6 Å has log(S/λ) = −5.0 in the Sun.
3. Profile: an area-normalised pseudo-Voigt φ (Thompson, Cox & Hastings 1987, J. Appl. Cryst. 20,
   79; Voigt FWHM of Olivero & Longbothum 1977, JQSRT 17, 233) with Gaussian width from
   sqrt(2kT/m + vmic²) and a Lorentzian (van der Waals-like) width ∝ P_gas ∝ g^{2/3}, tapered to
   zero at a fixed ±``profile_halfwidth_kms`` window.
4. Flux: the line-to-continuum opacity ratio η(λ) = Σ_l S_l φ_l(λ − λ_l) enters the
   Milne–Eddington residual flux F = 1 − D_max η/(1 + η) (Mihalas 1978, *Stellar Atmospheres*,
   2nd ed., ch. 10), whose curve of growth runs linear → flat → damping; F ∈ [1 − D_max, 1].

Everything is vectorised numpy; :class:`MockSpectrumGenerator` renders thousands of spectra per
second. Wavelengths are in Å (vacuum or air: the mock does not care), velocities in km/s.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Sequence

import numpy as np

from jaxpayne.forward.doppler import SPEED_OF_LIGHT  # [km/s]

__all__ = [
    "DEFAULT_ELEMENTS",
    "DEFAULT_LABELS",
    "DEFAULT_LINES_PER_ANGSTROM",
    "DEFAULT_VMIC",
    "LineList",
    "LineParameters",
    "MockSpectrumGenerator",
    "SPECIES",
    "Species",
    "canonical_label_name",
    "mock_grid",
    "mock_spectra",
    "pseudo_voigt",
]

# ---------------------------------------------------------------------------------------------
# Physical constants (CODATA 2018, cgs unless stated).
# ---------------------------------------------------------------------------------------------
#: Boltzmann constant [eV/K].
BOLTZMANN_EV = 8.617_333_262e-5
#: Boltzmann constant [erg/K].
BOLTZMANN_CGS = 1.380_649e-16
#: Planck constant [erg s].
PLANCK_CGS = 6.626_070_15e-27
#: Electron mass [g].
ELECTRON_MASS_CGS = 9.109_383_7015e-28
#: Atomic mass unit [g].
ATOMIC_MASS_UNIT_CGS = 1.660_539_066_60e-24
#: ln of the Saha constant 2 (2π m_e)^{3/2} k^{5/2} / h^3 so that, with P_e in dyn cm⁻² and T in
#: K, N_II P_e / N_I = SAHA · T^{5/2} e^{−χ/kT} (partition-function ratio set to 1; this is
#: log10 = −0.1762 of Gray 2005 eq. 1.20).
LN_SAHA_CONSTANT = math.log(
    2.0 * (2.0 * math.pi * ELECTRON_MASS_CGS) ** 1.5 * BOLTZMANN_CGS**2.5 / PLANCK_CGS**3
)
#: θ = THETA_TEMPERATURE / T converts χ [eV] to log10 of the Boltzmann factor: 1 eV / k · log10 e.
THETA_TEMPERATURE = math.log10(math.e) / BOLTZMANN_EV
#: Solar reference point of the mock photosphere.
SOLAR_TEFF = 5772.0  # [K], IAU 2015 Resolution B3 nominal value
SOLAR_LOGG = 4.438  # [dex, cgs]

# ---------------------------------------------------------------------------------------------
# Mock photosphere (power laws anchored at the Sun; see docs/mock_spectra.md).
# ---------------------------------------------------------------------------------------------
#: log10 P_e [dyn cm⁻²] of the solar line-forming layer (τ_500 ≈ 0.1–1; Gray 2005 ch. 9).
LOG_ELECTRON_PRESSURE_SUN = 1.3
#: d log P_e / d log g: P_e ∝ g^{1/3} for a metal-electron H⁻ photosphere (Gray 2005 ch. 9).
ELECTRON_PRESSURE_GRAVITY_EXPONENT = 1.0 / 3.0
#: d log P_e / d log T: P_e rises by ~2 dex from 4000 K to 7000 K (onset of H ionisation).
ELECTRON_PRESSURE_TEMPERATURE_EXPONENT = 8.0
#: H⁻ bound-free opacity per H atom ∝ P_e θ^{5/2} 10^{H_MINUS_THETA_COEFFICIENT θ} (Gray 2005
#: eq. 8.12; 0.754 eV is the H⁻ binding energy).
H_MINUS_THETA_EXPONENT = 2.5
H_MINUS_THETA_COEFFICIENT = 0.754
#: Lorentzian (damping) half width at half maximum of a typical line in the Sun, as a velocity
#: [km/s]: van der Waals γ_6 ~ 10^8.5 s⁻¹ gives λγ/(4πc) ≈ 0.05 km/s.
DAMPING_HWHM_SUN_KMS = 0.05
#: γ_6 ∝ N_H T^{0.3} ∝ P_gas T^{−0.7} with P_gas ∝ g^{2/3} (Gray 2005 ch. 11 and 9).
DAMPING_GRAVITY_EXPONENT = 2.0 / 3.0
DAMPING_TEMPERATURE_EXPONENT = -0.7
#: Central depth of a fully saturated line in the Milne–Eddington model, D = (2b/3)/(a + 2b/3)
#: for a source function a + bτ; 0.9 leaves a 10% residual flux in the darkest cores.
MAX_LINE_DEPTH = 0.9

# ---------------------------------------------------------------------------------------------
# Line-strength calibration: Fe I 6151.62 Å (χ = 2.176 eV, log gf = −3.299) has a solar
# equivalent width of ≈ 50 mÅ, i.e. log(W/λ) ≈ −5.1 on the knee of the curve of growth.
# ---------------------------------------------------------------------------------------------
REFERENCE_LINE_LOG_GF = -3.299
REFERENCE_LINE_EXCITATION_EV = 2.176
#: log10(S/λ) of the reference line in the Sun.
REFERENCE_LINE_LOG_REDUCED_STRENGTH = -5.0

# ---------------------------------------------------------------------------------------------
# Line-list generation.
# ---------------------------------------------------------------------------------------------
#: Default number of lines per Å over all elements (in the Sun ~70% of them are deeper than 10%;
#: mean normalised flux ≈ 0.96 at 5000 Å and ≈ 0.89 at 16000 Å, ≈ 0.91 and ≈ 0.74 for a
#: 4000 K, log g = 1.5 giant).
DEFAULT_LINES_PER_ANGSTROM = 1.5
#: Lines are drawn in chunks of this width [Å], each from its own seeded stream, so that the line
#: list in a wavelength interval does not depend on the requested range around it.
LINELIST_CHUNK_ANGSTROM = 50.0
#: Each line's *solar* reduced strength r_☉ = log10(S/λ) in the Sun is drawn as
#: SOLAR_STRENGTH_MAX + (species offset) − Exponential(SOLAR_STRENGTH_SCALE) — many weak lines, few
#: strong ones, every species visible — and log gf is the value that gives this r_☉ in the Sun.
SOLAR_STRENGTH_MAX = -4.3
SOLAR_STRENGTH_SCALE = 1.2
#: Per-line damping enhancement, log-uniform in ±DAMPING_SPREAD_DEX.
DAMPING_SPREAD_DEX = 0.3
#: Half width of the window over which a line profile is evaluated [km/s]; the profile is tapered
#: smoothly to zero from half this width to the full width (label independent, so the spectrum
#: stays smooth in the labels).
PROFILE_HALFWIDTH_KMS = 30.0
#: Default microturbulence when no "vmic" label is given [km/s].
DEFAULT_VMIC = 1.0

# Pseudo-Voigt coefficients.
#: Olivero & Longbothum (1977) Voigt FWHM: Γ_V = c1 Γ_L + sqrt(c2 Γ_L² + Γ_G²), 0.02% accurate.
OLIVERO_LORENTZ_COEFFICIENT = 0.5346
OLIVERO_QUADRATURE_COEFFICIENT = 0.2166
#: Thompson, Cox & Hastings (1987) mixing η = Σ c_k (Γ_L/Γ_V)^k.
TCH_MIXING_COEFFICIENTS = (1.36603, -0.47719, 0.11116)
LN2 = math.log(2.0)

#: Default demo label box (physical units): Teff [K], log g [dex], [Fe/H] [dex], vmic [km/s],
#: [Mg/Fe] [dex].
DEFAULT_LABELS: dict[str, tuple[float, float]] = {
    "teff": (4000.0, 7000.0),
    "logg": (1.0, 5.0),
    "feh": (-1.0, 0.5),
    "vmic": (0.5, 2.5),
    "mg_fe": (-0.2, 0.4),
}


@dataclass(frozen=True)
class Species:
    """Atomic data of one element of the mock.

    Attributes:
        symbol: element symbol, e.g. ``"Fe"``.
        mass_amu: atomic mass [u] (sets the thermal Doppler width).
        ionization_energy_ev: first ionisation energy [eV] (NIST ASD).
        solar_abundance: A(X) = log10(N_X/N_H) + 12 [dex] (Asplund et al. 2009, ARA&A 47, 481).
        line_share: relative number of lines of this element in the mock line list.
        excitation_range_ev: (min, max) lower-level excitation potential of its lines [eV],
            typical of its optical/IR lines.
        ionized_fraction: fraction of its lines that belong to the singly ionised stage.
        solar_strength_offset: shift of the solar line-strength distribution [dex] (keeps the
            implied log gf of species with few strong optical/IR lines, e.g. N I, realistic).
    """

    symbol: str
    mass_amu: float
    ionization_energy_ev: float
    solar_abundance: float
    line_share: float
    excitation_range_ev: tuple[float, float] = (0.0, 6.0)
    ionized_fraction: float = 0.1
    solar_strength_offset: float = 0.0


#: Elements the mock knows. Line shares loosely follow the optical/IR line census of a solar-type
#: star (Fe dominates, then the iron-peak and α elements); excitation ranges are typical of each
#: species' optical/IR lines (0–6 eV for the metals; C, N, O and S show only high-excitation
#: lines there, their low-χ lines lie in the UV); alkali and Al lines are neutral only.
SPECIES: dict[str, Species] = {
    s.symbol: s
    for s in (
        # symbol, mass [u], χ_ion [eV], A(X), line share, χ range [eV], ionised fraction, offset
        Species("C", 12.011, 11.2603, 8.43, 3.0, (7.5, 9.5), 0.0),
        Species("N", 14.007, 14.5341, 7.83, 1.0, (10.3, 12.0), 0.0, -1.5),
        Species("O", 15.999, 13.6181, 8.69, 1.0, (9.0, 11.0), 0.0),
        Species("Na", 22.990, 5.1391, 6.24, 1.0, (0.0, 4.0), 0.0),
        Species("Mg", 24.305, 7.6462, 7.60, 3.0, (2.7, 6.5), 0.05),
        Species("Al", 26.982, 5.9858, 6.45, 1.0, (3.0, 4.7), 0.0),
        Species("Si", 28.085, 8.1517, 7.51, 4.0, (4.5, 6.5), 0.1),
        Species("S", 32.06, 10.3600, 7.12, 1.0, (6.5, 8.5), 0.0),
        Species("K", 39.098, 4.3407, 5.03, 0.5, (0.0, 3.0), 0.0),
        Species("Ca", 40.078, 6.1132, 6.34, 4.0, (1.5, 5.0), 0.1),
        Species("Ti", 47.867, 6.8281, 4.95, 8.0, (0.0, 3.5), 0.3),
        Species("V", 50.942, 6.7462, 3.93, 4.0, (0.0, 3.0), 0.15),
        Species("Cr", 51.996, 6.7665, 5.64, 6.0, (0.0, 4.0), 0.15),
        Species("Mn", 54.938, 7.4340, 5.43, 3.0, (0.0, 5.0), 0.05),
        Species("Fe", 55.845, 7.9024, 7.50, 40.0, (0.0, 6.0), 0.1),
        Species("Co", 58.933, 7.8810, 4.99, 3.0, (0.0, 4.0), 0.05),
        Species("Ni", 58.693, 7.6399, 6.22, 7.0, (1.5, 6.0), 0.05),
    )
}

#: Elements with lines in a default generator: every element the mock knows.
DEFAULT_ELEMENTS: tuple[str, ...] = tuple(SPECIES)

_LABEL_ALIASES = {
    "teff": "teff",
    "t_eff": "teff",
    "logg": "logg",
    "log_g": "logg",
    "feh": "feh",
    "fe_h": "feh",
    "[fe/h]": "feh",
    "vmic": "vmic",
    "vmicro": "vmic",
    "vturb": "vmic",
}
_SYMBOL_BY_LOWER = {s.lower(): s for s in SPECIES}


def canonical_label_name(name: str) -> str:
    """Canonical form of a label name understood by the mock.

    ``"teff"``, ``"logg"``, ``"feh"`` (also ``"[Fe/H]"``, ``"fe_h"``) and ``"vmic"`` are matched
    case-insensitively; abundance ratios may be written ``"mg_fe"``, ``"Mg_Fe"`` or ``"[Mg/Fe]"``
    and come back as ``"mg_fe"``.

    Args:
        name: a label name.

    Returns:
        One of ``"teff"``, ``"logg"``, ``"feh"``, ``"vmic"`` or ``"<x>_fe"`` with ``<x>`` the
        lower-case symbol of an element in :data:`SPECIES` other than Fe.

    Raises:
        ValueError: if the name is not one of those.

    Example:
        >>> canonical_label_name("[Mg/Fe]"), canonical_label_name("TEFF")
        ('mg_fe', 'teff')
    """
    if not isinstance(name, str):
        raise ValueError(f"label names must be strings, got {name!r}")
    key = name.strip().lower().replace(" ", "")
    if key in _LABEL_ALIASES:
        return _LABEL_ALIASES[key]
    if key.startswith("[") and key.endswith("/fe]"):
        element = key[1:-4]
    elif key.endswith("_fe"):
        element = key[:-3]
    else:
        element = None
    if element is not None and element in _SYMBOL_BY_LOWER and element != "fe":
        return f"{element}_fe"
    known = ", ".join(f"{s.lower()}_fe" for s in SPECIES if s != "Fe")
    raise ValueError(
        f"unknown label name {name!r}: the mock understands teff [K], logg [dex], feh [dex], "
        f"vmic [km/s] and [X/Fe] ratios written 'x_fe' or '[X/Fe]' with X one of: {known}"
    )


class LineList(NamedTuple):
    """A mock atomic line list, sorted by wavelength. Every field has shape ``(n_lines,)``.

    Attributes:
        wavelength: line centre [Å].
        element: element symbol (``"Fe"``, ``"Mg"``, ...).
        ion: ionisation stage, 0 = neutral (Fe I), 1 = singly ionised (Fe II).
        excitation_potential: lower-level excitation potential χ [eV].
        log_gf: log10 of the oscillator strength times the statistical weight [dex].
        log_damping: log10 of the line's damping enhancement over the typical line [dex].
    """

    wavelength: np.ndarray
    element: np.ndarray
    ion: np.ndarray
    excitation_potential: np.ndarray
    log_gf: np.ndarray
    log_damping: np.ndarray


class LineParameters(NamedTuple):
    """Label-dependent parameters of every line; each field has shape ``(..., n_lines)``.

    Attributes:
        strength: integrated line-to-continuum opacity ratio S = ∫ η dλ [Å]; a weak line has
            equivalent width D_max · S, and a pure Doppler line has η = S / (sqrt(π) Δλ_D) at
            its centre.
        gaussian_fwhm: FWHM of the Doppler (thermal + microturbulent) core [Å].
        lorentzian_fwhm: FWHM of the damping (pressure + radiative-like) component [Å].
    """

    strength: np.ndarray
    gaussian_fwhm: np.ndarray
    lorentzian_fwhm: np.ndarray


def pseudo_voigt(delta_wavelength, gaussian_fwhm, lorentzian_fwhm):
    """Area-normalised pseudo-Voigt profile.

    .. math:: \\phi(x) = \\eta\\, L(x; \\Gamma_V) + (1-\\eta)\\, G(x; \\Gamma_V),\\quad
              \\Gamma_V = 0.5346\\,\\Gamma_L + \\sqrt{0.2166\\,\\Gamma_L^2 + \\Gamma_G^2},

    with G and L the unit-area Gaussian and Lorentzian of FWHM Γ_V and
    η = 1.36603 r − 0.47719 r² + 0.11116 r³, r = Γ_L/Γ_V (Olivero & Longbothum 1977, JQSRT 17,
    233; Thompson, Cox & Hastings 1987, J. Appl. Cryst. 20, 79; ~1% accurate against Voigt).

    Args:
        delta_wavelength: distance from line centre [Å], any shape.
        gaussian_fwhm: Gaussian FWHM Γ_G [Å], broadcastable, ≥ 0.
        lorentzian_fwhm: Lorentzian FWHM Γ_L [Å], broadcastable, ≥ 0 (not both zero).

    Returns:
        φ [1/Å], the broadcast shape of the inputs; ∫ φ dλ = 1.

    Example:
        >>> x = np.linspace(-5.0, 5.0, 100001)
        >>> area = np.sum(pseudo_voigt(x, 0.2, 0.01)) * (x[1] - x[0])
        >>> bool(abs(area - 1.0) < 1e-3)
        True
    """
    dx = np.asarray(delta_wavelength)
    fwhm, mixing = _voigt_fwhm_and_mixing(np.asarray(gaussian_fwhm), np.asarray(lorentzian_fwhm))
    u2 = (dx / fwhm) ** 2
    gauss = 2.0 * math.sqrt(LN2 / math.pi) / fwhm * np.exp(-4.0 * LN2 * u2)
    lorentz = 2.0 / (math.pi * fwhm) / (1.0 + 4.0 * u2)
    return mixing * lorentz + (1.0 - mixing) * gauss


def _voigt_fwhm_and_mixing(gaussian_fwhm, lorentzian_fwhm):
    """Voigt FWHM (Olivero & Longbothum 1977) and TCH Lorentzian fraction η."""
    fwhm = OLIVERO_LORENTZ_COEFFICIENT * lorentzian_fwhm + np.sqrt(
        OLIVERO_QUADRATURE_COEFFICIENT * lorentzian_fwhm**2 + gaussian_fwhm**2
    )
    ratio = lorentzian_fwhm / fwhm
    c1, c2, c3 = TCH_MIXING_COEFFICIENTS
    mixing = ratio * (c1 + ratio * (c2 + ratio * c3))
    return fwhm, mixing


def _profile_taper(x):
    """Window applied to every profile: 1 for x ≤ 1/2, cos² roll-off to 0 at x = 1 (C¹)."""
    rolled = np.cos(math.pi * (x - 0.5)) ** 2
    return np.where(x <= 0.5, 1.0, np.where(x < 1.0, rolled, 0.0))


def _log10_electron_pressure(teff, logg):
    """log10 P_e [dyn cm⁻²] of the mock line-forming layer (power law anchored at the Sun)."""
    return (
        LOG_ELECTRON_PRESSURE_SUN
        + ELECTRON_PRESSURE_GRAVITY_EXPONENT * (logg - SOLAR_LOGG)
        + ELECTRON_PRESSURE_TEMPERATURE_EXPONENT * np.log10(teff / SOLAR_TEFF)
    )


def _log10_continuum_opacity(teff, log_pe):
    """log10 of the H⁻ bound-free opacity per H atom, up to a constant: P_e θ^{5/2} 10^{0.754θ}."""
    theta = THETA_TEMPERATURE / teff
    return log_pe + H_MINUS_THETA_EXPONENT * np.log10(theta) + H_MINUS_THETA_COEFFICIENT * theta


def _log10_stage_fractions(teff, log_pe, ionization_energy_ev):
    """log10 of the neutral and singly-ionised fractions from the Saha equation.

    N_II/N_I = SAHA T^{5/2} e^{−χ_ion/kT} / P_e; doubly-ionised and higher stages are ignored and
    the partition-function ratio is 1. Broadcasts ``teff``/``log_pe`` against
    ``ionization_energy_ev``.

    Returns:
        (log10 f_I, log10 f_II).
    """
    ln_ratio = (
        LN_SAHA_CONSTANT
        + 2.5 * np.log(teff)
        - ionization_energy_ev / (BOLTZMANN_EV * teff)
        - log_pe * math.log(10.0)
    )
    ln_neutral = -np.logaddexp(0.0, ln_ratio)
    return ln_neutral / math.log(10.0), (ln_neutral + ln_ratio) / math.log(10.0)


def _log_strength_zero_point() -> float:
    """Z of the strength formula, fixed by the reference Fe I line in the Sun."""
    fe = SPECIES["Fe"]
    log_pe = _log10_electron_pressure(SOLAR_TEFF, SOLAR_LOGG)
    log_neutral, _ = _log10_stage_fractions(SOLAR_TEFF, log_pe, fe.ionization_energy_ev)
    theta = THETA_TEMPERATURE / SOLAR_TEFF
    return float(
        REFERENCE_LINE_LOG_REDUCED_STRENGTH
        - REFERENCE_LINE_LOG_GF
        - (fe.solar_abundance - 12.0)
        - log_neutral
        + theta * REFERENCE_LINE_EXCITATION_EV
    )


#: Z in log10(S/λ) = Z + log gf + A(X) − 12 + [X/H] + log f_r − θχ − log(κ/κ_sun).
LOG_STRENGTH_ZERO_POINT = _log_strength_zero_point()
#: log10 κ_H⁻ of the Sun, subtracted so that κ/κ_sun = 1 there.
_LOG_CONTINUUM_OPACITY_SUN = float(
    _log10_continuum_opacity(SOLAR_TEFF, _log10_electron_pressure(SOLAR_TEFF, SOLAR_LOGG))
)
#: Target number of (spectrum, line, pixel) profile evaluations per block (memory ~ 8 B each).
_BLOCK_EVALUATIONS = 1 << 20


class _Roles(NamedTuple):
    """Column of each stellar label (None if absent) and of each [X/Fe] label."""

    teff: int
    logg: int
    feh: int
    vmic: int | None
    x_fe: dict  # element symbol -> column


@dataclass(frozen=True)
class MockSpectrumGenerator:
    """Deterministic mock-spectrum generator for a wavelength range (a mock, not a synthesis code).

    The configuration is frozen; the line list is drawn once (lazily) and is a function of
    ``seed``, ``wavelength_range``, ``lines_per_angstrom`` and ``elements`` only. Calling the
    generator renders continuum-normalised spectra for any labels on any strictly increasing
    wavelength grid inside ``wavelength_range``; lines outside the range are not included, so pad
    the range by :attr:`profile_halfwidth_kms` if edge pixels should see their wings (as
    :func:`mock_spectra` does).

    Args:
        wavelength_range: (min, max) wavelength covered by the line list [Å].
        seed: non-negative integer seed of the line list.
        lines_per_angstrom: mean number of lines per Å, all elements together.
        elements: element symbols with lines (case-insensitive, see :data:`SPECIES`). Elements
            without an [X/Fe] label scale with [Fe/H].
        max_depth: central depth of a fully saturated line, in (0, 1).
        profile_halfwidth_kms: half width of the window over which each profile is evaluated
            [km/s]; the profile is tapered to zero between half and all of it.

    Example:
        >>> gen = MockSpectrumGenerator((5000.0, 5100.0), seed=1)
        >>> wl = np.linspace(5000.0, 5100.0, 2001)
        >>> flux = gen(wl, [[5772.0, 4.44, 0.0], [4500.0, 2.0, -0.5]], ["teff", "logg", "feh"])
        >>> flux.shape
        (2, 2001)
    """

    wavelength_range: tuple[float, float]
    seed: int = 0
    lines_per_angstrom: float = DEFAULT_LINES_PER_ANGSTROM
    elements: tuple[str, ...] = DEFAULT_ELEMENTS
    max_depth: float = MAX_LINE_DEPTH
    profile_halfwidth_kms: float = PROFILE_HALFWIDTH_KMS

    def __init__(
        self,
        wavelength_range: tuple[float, float],
        *,
        seed: int = 0,
        lines_per_angstrom: float = DEFAULT_LINES_PER_ANGSTROM,
        elements: Sequence[str] = DEFAULT_ELEMENTS,
        max_depth: float = MAX_LINE_DEPTH,
        profile_halfwidth_kms: float = PROFILE_HALFWIDTH_KMS,
    ):
        try:
            lo, hi = (float(v) for v in wavelength_range)
        except (TypeError, ValueError):
            raise ValueError(
                f"wavelength_range must be (min, max) in Å, got {wavelength_range!r}"
            ) from None
        if not (np.isfinite(lo) and np.isfinite(hi) and 0.0 < lo < hi):
            raise ValueError(f"wavelength_range must satisfy 0 < min < max [Å], got ({lo}, {hi})")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not (np.isfinite(lines_per_angstrom) and lines_per_angstrom > 0):
            raise ValueError(f"lines_per_angstrom must be > 0, got {lines_per_angstrom!r}")
        if isinstance(elements, str):
            elements = (elements,)
        symbols = []
        for element in elements:
            symbol = _SYMBOL_BY_LOWER.get(str(element).strip().lower())
            if symbol is None:
                raise ValueError(f"unknown element {element!r}; known: {list(SPECIES)}")
            if symbol in symbols:
                raise ValueError(f"element {symbol!r} listed twice in {list(elements)}")
            symbols.append(symbol)
        if not symbols:
            raise ValueError("elements must name at least one element")
        if not (0.0 < max_depth < 1.0):
            raise ValueError(f"max_depth must lie in (0, 1), got {max_depth!r}")
        if not (np.isfinite(profile_halfwidth_kms) and profile_halfwidth_kms > 0):
            raise ValueError(f"profile_halfwidth_kms must be > 0, got {profile_halfwidth_kms!r}")
        object.__setattr__(self, "wavelength_range", (lo, hi))
        object.__setattr__(self, "seed", int(seed))
        object.__setattr__(self, "lines_per_angstrom", float(lines_per_angstrom))
        object.__setattr__(self, "elements", tuple(symbols))
        object.__setattr__(self, "max_depth", float(max_depth))
        object.__setattr__(self, "profile_halfwidth_kms", float(profile_halfwidth_kms))

    # ------------------------------------------------------------------------------- line list
    @cached_property
    def linelist(self) -> LineList:
        """The mock line list inside :attr:`wavelength_range`, sorted by wavelength (read-only).

        Each element's lines are a Poisson process of rate ``lines_per_angstrom × share /
        Σ shares``, drawn chunk by chunk (``LINELIST_CHUNK_ANGSTROM`` wide) with the stream
        ``SeedSequence([seed, crc32(symbol), chunk index])``: χ uniform in the element's
        excitation range, ionisation stage Bernoulli(ionised fraction), damping enhancement
        log-uniform in ±0.3 dex, and a solar reduced strength r_☉ = log10(S/λ)_☉ =
        ``SOLAR_STRENGTH_MAX`` + offset − Exponential(``SOLAR_STRENGTH_SCALE``) from which

        .. math:: \\log gf = r_\\odot - Z - (A_\\odot(X) - 12) - \\log_{10} f_{r,\\odot}
                  + \\theta_\\odot \\chi

        so that the line has strength r_☉ at solar labels. Low-χ lines therefore get small gf,
        as in real optical/IR line lists.
        """
        lo, hi = self.wavelength_range
        total_share = sum(SPECIES[s].line_share for s in self.elements)
        first, last = int(lo // LINELIST_CHUNK_ANGSTROM), int(hi // LINELIST_CHUNK_ANGSTROM)
        log_pe_sun = _log10_electron_pressure(SOLAR_TEFF, SOLAR_LOGG)
        theta_sun = THETA_TEMPERATURE / SOLAR_TEFF
        parts = {name: [] for name in LineList._fields}
        for symbol in self.elements:
            species = SPECIES[symbol]
            rate = self.lines_per_angstrom * species.line_share / total_share
            tag = zlib.crc32(symbol.encode("ascii"))
            chi_lo, chi_hi = species.excitation_range_ev
            # log gf = r_☉ − (log gf offset of this species and stage) + θ_☉ χ
            log_fractions = _log10_stage_fractions(
                SOLAR_TEFF, log_pe_sun, species.ionization_energy_ev
            )
            gf_offset = [
                LOG_STRENGTH_ZERO_POINT + species.solar_abundance - 12.0 + float(log_fraction)
                for log_fraction in log_fractions
            ]
            for chunk in range(first, last + 1):
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, tag, chunk]))
                n = rng.poisson(rate * LINELIST_CHUNK_ANGSTROM)
                start = chunk * LINELIST_CHUNK_ANGSTROM
                wavelength = start + LINELIST_CHUNK_ANGSTROM * rng.random(n)
                excitation = chi_lo + (chi_hi - chi_lo) * rng.random(n)
                solar_strength = (
                    SOLAR_STRENGTH_MAX
                    + species.solar_strength_offset
                    - rng.exponential(SOLAR_STRENGTH_SCALE, n)
                )
                ion = (rng.random(n) < species.ionized_fraction).astype(np.int8)
                log_gf = solar_strength - np.take(gf_offset, ion) + theta_sun * excitation
                log_damping = DAMPING_SPREAD_DEX * (2.0 * rng.random(n) - 1.0)
                keep = (wavelength >= lo) & (wavelength <= hi)
                parts["wavelength"].append(wavelength[keep])
                parts["element"].append(np.full(int(keep.sum()), symbol, dtype="<U2"))
                parts["ion"].append(ion[keep])
                parts["excitation_potential"].append(excitation[keep])
                parts["log_gf"].append(log_gf[keep])
                parts["log_damping"].append(log_damping[keep])
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        order = np.argsort(arrays["wavelength"], kind="stable")
        out = {}
        for key, value in arrays.items():
            value = np.ascontiguousarray(value[order])
            value.setflags(write=False)
            out[key] = value
        return LineList(**out)

    @cached_property
    def _line_constants(self):
        """Label-independent per-line arrays used by the renderer (float64)."""
        lines = self.linelist
        index = {s: i for i, s in enumerate(self.elements)}
        element_index = np.array([index[s] for s in lines.element], dtype=np.intp)
        abundance = np.array([SPECIES[s].solar_abundance for s in self.elements])
        base = (
            LOG_STRENGTH_ZERO_POINT
            + lines.log_gf
            + abundance[element_index]
            - 12.0
            + _LOG_CONTINUUM_OPACITY_SUN
        )
        return {
            "element_index": element_index,
            # column of the (element, stage) table for each line
            "stage_index": 2 * element_index + lines.ion.astype(np.intp),
            "ln_base": math.log(10.0) * base + np.log(lines.wavelength),
            "excitation": np.asarray(lines.excitation_potential, dtype=np.float64),
            # Lorentzian FWHM of each line per unit of the star's damping velocity [Å/(km/s)]
            "lorentz_per_kms": 2.0 * lines.wavelength / SPEED_OF_LIGHT
            * 10.0**lines.log_damping,
            # Gaussian FWHM per unit of Doppler velocity [Å/(km/s)]: Γ_G = 2 sqrt(ln 2) λ ξ / c
            "gauss_per_kms": 2.0 * math.sqrt(LN2) * lines.wavelength / SPEED_OF_LIGHT,
            "mass_amu": np.array([SPECIES[s].mass_amu for s in self.elements]),
            "ionization_energy": np.array([SPECIES[s].ionization_energy_ev for s in self.elements]),
        }

    # ----------------------------------------------------------------------------- labels
    def _roles(self, label_names: Sequence[str]) -> _Roles:
        if isinstance(label_names, str):
            raise ValueError(
                f"label_names must be a sequence of names, got the single string {label_names!r}"
            )
        canonical = [canonical_label_name(n) for n in label_names]
        seen = {}
        for given, name in zip(label_names, canonical):
            if name in seen:
                raise ValueError(
                    f"labels {seen[name]!r} and {given!r} both mean {name!r}; give each once"
                )
            seen[name] = given
        missing = [n for n in ("teff", "logg", "feh") if n not in seen]
        if missing:
            raise ValueError(
                f"the mock needs labels {missing} (got {list(label_names)}); vmic defaults to "
                f"{DEFAULT_VMIC} km/s and every [X/Fe] to 0"
            )
        x_fe = {}
        for column, name in enumerate(canonical):
            if name.endswith("_fe"):
                symbol = _SYMBOL_BY_LOWER[name[:-3]]
                if symbol not in self.elements:
                    raise ValueError(
                        f"label {label_names[column]!r} refers to {symbol}, which has no lines in "
                        f"this generator (elements={list(self.elements)})"
                    )
                x_fe[symbol] = column
        return _Roles(
            teff=canonical.index("teff"),
            logg=canonical.index("logg"),
            feh=canonical.index("feh"),
            vmic=canonical.index("vmic") if "vmic" in seen else None,
            x_fe=x_fe,
        )

    def _prepare_labels(self, labels, label_names):
        """Validate labels → (flat (N, n_labels) float64 array, batch shape, roles)."""
        names = list(label_names) if not isinstance(label_names, str) else label_names
        roles = self._roles(names)
        labels = np.asarray(labels)
        if labels.ndim == 0 or labels.shape[-1] != len(names):
            raise ValueError(
                f"labels must have shape (..., {len(names)}) to match label_names {names}, "
                f"got shape {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.number) or np.iscomplexobj(labels):
            raise ValueError(f"labels must be real numbers, got dtype {labels.dtype}")
        flat = labels.reshape(-1, len(names)).astype(np.float64)
        if not np.all(np.isfinite(flat)):
            raise ValueError("labels must be finite")
        if np.any(flat[:, roles.teff] <= 0):
            raise ValueError("teff must be > 0 K")
        if roles.vmic is not None and np.any(flat[:, roles.vmic] < 0):
            raise ValueError("vmic must be >= 0 km/s")
        return flat, labels.shape[:-1], roles

    def _star_terms(self, flat, roles):
        """Per-star quantities, all float64 with leading axis N (number of stars)."""
        const = self._line_constants
        n_star = flat.shape[0]
        teff = flat[:, roles.teff]
        logg = flat[:, roles.logg]
        feh = flat[:, roles.feh]
        vmic = flat[:, roles.vmic] if roles.vmic is not None else np.full(n_star, DEFAULT_VMIC)
        log_pe = _log10_electron_pressure(teff, logg)
        log_kappa = _log10_continuum_opacity(teff, log_pe)
        # [X/H] per (star, element)
        x_h = np.repeat(feh[:, None], len(self.elements), axis=1)
        for symbol, column in roles.x_fe.items():
            x_h[:, self.elements.index(symbol)] += flat[:, column]
        log_neutral, log_ion = _log10_stage_fractions(
            teff[:, None], log_pe[:, None], const["ionization_energy"][None, :]
        )
        # ln of the (element, stage) part of the strength: [X/H] + log f_r − log κ, interleaved
        stage = np.empty((n_star, 2 * len(self.elements)))
        stage[:, 0::2] = x_h + log_neutral
        stage[:, 1::2] = x_h + log_ion
        stage -= log_kappa[:, None]
        stage *= math.log(10.0)
        # Doppler velocity per (star, element) [km/s]: sqrt(2kT/m + vmic²)
        thermal2 = 2.0 * BOLTZMANN_CGS * teff[:, None] / (
            const["mass_amu"][None, :] * ATOMIC_MASS_UNIT_CGS
        ) * 1e-10  # (cm/s)² → (km/s)²
        doppler = np.sqrt(thermal2 + vmic[:, None] ** 2)
        damping_kms = (
            DAMPING_HWHM_SUN_KMS
            * 10.0 ** (DAMPING_GRAVITY_EXPONENT * (logg - SOLAR_LOGG))
            * (teff / SOLAR_TEFF) ** DAMPING_TEMPERATURE_EXPONENT
        )
        return {
            "ln_stage": stage,
            "inv_kt": 1.0 / (BOLTZMANN_EV * teff),
            "doppler": doppler,
            "damping": damping_kms,
        }

    def _line_terms(self, star, rows=slice(None)):
        """(S, Γ_G, Γ_L) for stars ``rows`` and every line, shape (n_lines, n_rows), float64."""
        const = self._line_constants
        ln_strength = (
            const["ln_base"][:, None]
            + star["ln_stage"][rows].T[const["stage_index"]]
            - const["excitation"][:, None] * star["inv_kt"][rows][None, :]
        )
        strength = np.exp(ln_strength)
        gauss = const["gauss_per_kms"][:, None] * star["doppler"][rows].T[const["element_index"]]
        lorentz = const["lorentz_per_kms"][:, None] * star["damping"][rows][None, :]
        return strength, gauss, lorentz

    def line_parameters(self, labels, label_names: Sequence[str]) -> LineParameters:
        """Strength and widths of every line of :attr:`linelist` for the given labels.

        Args:
            labels: array ``(..., n_labels)`` in physical units (K, dex, km/s).
            label_names: names of the label columns (see :func:`canonical_label_name`).

        Returns:
            :class:`LineParameters` with fields of shape ``(..., n_lines)``, float64.
        """
        flat, batch, roles = self._prepare_labels(labels, label_names)
        strength, gauss, lorentz = self._line_terms(self._star_terms(flat, roles))
        n_lines = strength.shape[0]
        return LineParameters(
            *(a.T.reshape(*batch, n_lines).copy() for a in (strength, gauss, lorentz))
        )

    # ------------------------------------------------------------------------------ rendering
    def _geometry(self, wavelength):
        """Label-independent (line, pixel) pairs: returns (lines kept, dx² (L, K), S^T sparse)."""
        from scipy import sparse

        centres = self.linelist.wavelength
        halfwidth = centres * (self.profile_halfwidth_kms / SPEED_OF_LIGHT)
        first = np.searchsorted(wavelength, centres - halfwidth, side="left")
        stop = np.searchsorted(wavelength, centres + halfwidth, side="right")
        kept = np.flatnonzero(stop > first)
        first, stop = first[kept], stop[kept]
        n_slots = int((stop - first).max()) if kept.size else 0
        pixel = first[:, None] + np.arange(n_slots)[None, :]
        valid = pixel < stop[:, None]
        pixel = np.where(valid, pixel, 0)
        dx = np.where(valid, wavelength[pixel] - centres[kept][:, None], 0.0)
        taper = _profile_taper(np.abs(dx) / halfwidth[kept][:, None]) * valid
        nonzero = taper > 0
        pairs = np.flatnonzero(nonzero.ravel())
        transfer = sparse.csr_matrix(
            (taper.ravel()[pairs], (pixel.ravel()[pairs], pairs)),
            shape=(wavelength.size, kept.size * n_slots),
        )
        return kept, dx**2, transfer

    def __call__(self, wavelength, labels, label_names: Sequence[str]) -> np.ndarray:
        """Render continuum-normalised mock spectra.

        .. math:: F(\\lambda) = 1 - D_{max}\\,\\frac{\\eta(\\lambda)}{1 + \\eta(\\lambda)},\\quad
                  \\eta(\\lambda) = \\sum_l S_l\\, \\phi_l(\\lambda - \\lambda_l)\\, w_l(\\lambda)

        with S_l, φ_l from :meth:`line_parameters` and :func:`pseudo_voigt` and w_l the fixed
        window taper. The flux is sampled at the pixel wavelengths (not pixel-integrated), so the
        grid should resolve the Doppler width (~λ/10⁵) if the line shapes matter.

        Args:
            wavelength: strictly increasing pixel wavelengths [Å], shape ``(n_pix,)``, inside
                :attr:`wavelength_range`.
            labels: array ``(..., n_labels)`` in physical units (Teff [K], log g [dex],
                [Fe/H] [dex], vmic [km/s], [X/Fe] [dex]).
            label_names: names of the label columns, e.g. ``["teff", "logg", "feh", "mg_fe"]``;
                teff, logg and feh are required, vmic defaults to :data:`DEFAULT_VMIC`.

        Returns:
            Flux in [1 − max_depth, 1], shape ``(..., n_pix)``, dtype
            ``result_type(wavelength, labels, float32)`` (float32 inputs give float32 output).

        Raises:
            ValueError: on an unknown, duplicated or missing label name, a label array whose last
                axis does not match ``label_names``, non-finite or unphysical labels, or a
                wavelength grid that is not 1-D, finite, strictly increasing and inside the range.
        """
        wl_in = np.asarray(wavelength)
        wl = self._check_wavelength(wl_in)
        flat, batch, roles = self._prepare_labels(labels, label_names)
        dtype = np.result_type(wl_in.dtype, np.asarray(labels).dtype, np.float32)
        if not np.issubdtype(dtype, np.floating):
            dtype = np.dtype(np.float64)
        flux = np.empty((flat.shape[0], wl.size), dtype=dtype)
        if flat.shape[0] == 0:
            return flux.reshape(*batch, wl.size)
        kept, dx2, transfer = self._geometry(wl)
        if kept.size == 0:
            flux[...] = 1.0
            return flux.reshape(*batch, wl.size)
        star = self._star_terms(flat, roles)
        n_slots = dx2.shape[1]
        dx2 = dx2.astype(dtype)[:, :, None]
        block = max(1, _BLOCK_EVALUATIONS // (kept.size * n_slots))
        for start in range(0, flat.shape[0], block):
            rows = slice(start, min(start + block, flat.shape[0]))
            strength, gauss, lorentz = (a[kept] for a in self._line_terms(star, rows))
            fwhm, mixing = _voigt_fwhm_and_mixing(gauss, lorentz)
            # η_pair = A exp(k dx²) + B ln2 / (ln2 − k dx²), with k = −4 ln2 / Γ_V²
            amp_gauss = (strength * (1.0 - mixing) * (2.0 * math.sqrt(LN2 / math.pi)) / fwhm)
            amp_lorentz = strength * mixing * (2.0 * LN2 / math.pi) / fwhm
            rate = -4.0 * LN2 / fwhm**2
            work = dx2 * rate.astype(dtype)[:, None, :]  # (L, K, n)
            eta = np.exp(work)
            eta *= amp_gauss.astype(dtype)[:, None, :]
            np.subtract(LN2, work, out=work)
            np.divide(amp_lorentz.astype(dtype)[:, None, :], work, out=work)
            eta += work
            ratio = transfer @ eta.reshape(kept.size * n_slots, -1)  # η(λ), (n_pix, n)
            out = flux[rows]
            # Milne–Eddington: F = 1 − D η/(1 + η) = (1 − D) + D/(1 + η)
            ratio += 1.0
            np.divide(self.max_depth, ratio.T, out=out, casting="unsafe")
            out += 1.0 - self.max_depth
        return flux.reshape(*batch, wl.size)

    def _check_wavelength(self, wavelength):
        wl = np.asarray(wavelength)
        if wl.ndim != 1 or wl.size == 0:
            raise ValueError(f"wavelength must be a non-empty 1-D array [Å], got shape {wl.shape}")
        if not np.issubdtype(wl.dtype, np.number) or np.iscomplexobj(wl):
            raise ValueError(f"wavelength must be real numbers [Å], got dtype {wl.dtype}")
        wl = wl.astype(np.float64)
        if not np.all(np.isfinite(wl)):
            raise ValueError("wavelength must be finite")
        if wl.size > 1 and np.any(np.diff(wl) <= 0):
            raise ValueError("wavelength must be strictly increasing")
        lo, hi = self.wavelength_range
        if wl[0] < lo or wl[-1] > hi:
            raise ValueError(
                f"wavelength grid [{wl[0]:g}, {wl[-1]:g}] Å extends outside this generator's "
                f"wavelength_range ({lo:g}, {hi:g}) Å"
            )
        return wl


def _padded_range(wavelength, profile_halfwidth_kms: float) -> tuple[float, float]:
    """Range of a grid widened by the profile window so that edge pixels see outside wings."""
    wl = np.asarray(wavelength, dtype=np.float64)
    if wl.ndim != 1 or wl.size == 0 or not np.all(np.isfinite(wl)):
        raise ValueError(f"wavelength must be a non-empty, finite 1-D array [Å], got {wl.shape}")
    factor = profile_halfwidth_kms / SPEED_OF_LIGHT
    return float(wl.min() * (1.0 - factor)), float(wl.max() * (1.0 + factor))


def mock_spectra(wavelength, labels, label_names: Sequence[str], *, seed: int = 0, **kwargs):
    """Mock continuum-normalised spectra (a mock, not a synthesis code) on any grid.

    Builds a :class:`MockSpectrumGenerator` whose range is the grid's range padded by the profile
    window, and renders. Because the line list is drawn in fixed wavelength chunks, the same seed
    gives the same lines at a given wavelength whatever the grid.

    Args:
        wavelength: strictly increasing pixel wavelengths [Å], shape ``(n_pix,)``.
        labels: array ``(..., n_labels)`` in physical units.
        label_names: names of the label columns (see :func:`canonical_label_name`).
        seed: line-list seed.
        **kwargs: other :class:`MockSpectrumGenerator` options (``lines_per_angstrom``,
            ``elements``, ``max_depth``, ``profile_halfwidth_kms``).

    Returns:
        Flux of shape ``(..., n_pix)``.

    Example:
        >>> wl = np.linspace(15200.0, 15300.0, 1000)
        >>> mock_spectra(wl, [4800.0, 2.5, -0.2, 1.2, 0.1],
        ...              ["teff", "logg", "feh", "vmic", "mg_fe"]).shape
        (1000,)
    """
    halfwidth = kwargs.get("profile_halfwidth_kms", PROFILE_HALFWIDTH_KMS)
    generator = MockSpectrumGenerator(_padded_range(wavelength, halfwidth), seed=seed, **kwargs)
    return generator(wavelength, labels, label_names)


def _resolve_bounds(names, lower, upper):
    """Lower/upper bounds per label, taking DEFAULT_LABELS for those not given."""
    defaults = {canonical_label_name(k): v for k, v in DEFAULT_LABELS.items()}
    out = []
    for bound, position in ((lower, 0), (upper, 1)):
        if bound is None:
            missing = [n for n in names if canonical_label_name(n) not in defaults]
            if missing:
                raise ValueError(
                    f"no default bounds for labels {missing}; pass lower and upper "
                    f"(DEFAULT_LABELS covers {list(DEFAULT_LABELS)})"
                )
            bound = [defaults[canonical_label_name(n)][position] for n in names]
        bound = np.asarray(bound, dtype=np.float64)
        if bound.shape != (len(names),):
            raise ValueError(
                f"bounds must have shape ({len(names)},) to match label_names {list(names)}, "
                f"got {bound.shape}"
            )
        out.append(bound)
    lower, upper = out
    if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))) or np.any(upper < lower):
        raise ValueError(f"need finite bounds with lower <= upper, got {lower} and {upper}")
    return lower, upper


def mock_grid(
    n_spectra: int,
    wavelength,
    label_names: Sequence[str] | None = None,
    lower=None,
    upper=None,
    *,
    seed: int = 0,
    line_seed: int = 0,
    sampling: str = "uniform",
    noise=None,
    dtype=np.float64,
    **generator_kwargs,
):
    """A training/test set of mock spectra with labels drawn in a box.

    Labels are drawn uniformly (``sampling="uniform"``) or from a scrambled Sobol sequence
    (``"sobol"``, :class:`scipy.stats.qmc.Sobol`, first ``n_spectra`` points of a 2^m block) in
    ``[lower, upper]``, both streams seeded by ``seed``. The *line list* is seeded separately by
    ``line_seed``, so grids with different ``seed`` share the same mock "physics" and
    ``mock_spectra(..., seed=line_seed)`` renders the same stars.

    Args:
        n_spectra: number of spectra (≥ 0).
        wavelength: strictly increasing pixel wavelengths [Å], shape ``(n_pix,)``.
        label_names: label columns; default ``tuple(DEFAULT_LABELS)``.
        lower: lower bound per label (physical units), shape ``(n_labels,)``; default from
            :data:`DEFAULT_LABELS`.
        upper: upper bound per label, as ``lower``.
        seed: seed of the label draws and of the noise.
        line_seed: seed of the line list (same meaning as ``seed`` in :func:`mock_spectra`).
        sampling: ``"uniform"`` or ``"sobol"``.
        noise: None for noiseless spectra, or the Gaussian 1σ flux error, a scalar or an array
            broadcastable to ``(n_spectra, n_pix)``.
        dtype: floating dtype of the returned arrays.
        **generator_kwargs: other :class:`MockSpectrumGenerator` options.

    Returns:
        ``(labels, flux)``: arrays ``(n_spectra, n_labels)`` and ``(n_spectra, n_pix)``.

    Example:
        >>> wl = np.linspace(15200.0, 15300.0, 500)
        >>> labels, flux = mock_grid(8, wl, sampling="sobol", noise=0.01)
        >>> labels.shape, flux.shape
        ((8, 5), (8, 500))
    """
    if isinstance(n_spectra, bool) or not isinstance(n_spectra, (int, np.integer)) or n_spectra < 0:
        raise ValueError(f"n_spectra must be a non-negative integer, got {n_spectra!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    names = tuple(DEFAULT_LABELS) if label_names is None else tuple(label_names)
    if not names:
        raise ValueError("label_names must not be empty")
    for name in names:
        canonical_label_name(name)
    lower, upper = _resolve_bounds(names, lower, upper)
    rng = np.random.default_rng(seed)
    n = int(n_spectra)
    if sampling == "uniform":
        unit = rng.random((n, len(names)))
    elif sampling == "sobol":
        from scipy.stats import qmc

        sobol = qmc.Sobol(len(names), scramble=True, rng=rng)
        unit = sobol.random_base2(max(0, math.ceil(math.log2(max(n, 1)))))[:n]
    else:
        raise ValueError(f"sampling must be 'uniform' or 'sobol', got {sampling!r}")
    labels = (lower + unit * (upper - lower)).astype(dtype)
    halfwidth = generator_kwargs.get("profile_halfwidth_kms", PROFILE_HALFWIDTH_KMS)
    generator = MockSpectrumGenerator(
        _padded_range(wavelength, halfwidth), seed=line_seed, **generator_kwargs
    )
    flux = generator(np.asarray(wavelength, dtype=dtype), labels, names)
    if noise is not None:
        sigma = np.asarray(noise, dtype=np.float64)
        if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
            raise ValueError("noise must be finite and >= 0")
        try:
            sigma = np.broadcast_to(sigma, flux.shape)
        except ValueError:
            raise ValueError(
                f"noise of shape {sigma.shape} does not broadcast to the flux shape {flux.shape}"
            ) from None
        flux = (flux + sigma * rng.standard_normal(flux.shape)).astype(dtype)
    return labels, flux
