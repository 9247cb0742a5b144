"""Continuum treatments: running-mean filter and Chebyshev polynomials."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxpayne.forward import chebyshev_continuum, chebyshev_design, smooth_continuum

N_PIX = 3000
RANGE = (15000.0, 17000.0)


def _wavelength():
    return np.linspace(*RANGE, N_PIX)


def _normalized_spectrum(wavelength, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(*RANGE, 60)
    depth = rng.uniform(0.05, 0.5, 60)
    lines = depth[:, None] * np.exp(-0.5 * ((wavelength[None, :] - centers[:, None]) / 0.4) ** 2)
    return 1.0 - lines.sum(axis=0)


def _direct_filter(flux, ivar, wavelength, segment, width):
    """O(n²) reference: Σ_j w_ij ivar_j f_j / Σ_j w_ij ivar_j, same segment only."""
    weight = np.exp(-(((wavelength[:, None] - wavelength[None, :]) / width) ** 2))
    weight *= segment[:, None] == segment[None, :]
    return (weight @ (ivar * flux)) / (weight @ ivar)


@jax.jit
def _filter(flux, ivar, wavelength, segment):
    return smooth_continuum(flux, ivar, wavelength, segment, width=50.0, n_segments=2,
                            wavelength_range=RANGE)


def test_filter_matches_direct_sum(x64):
    wavelength = _wavelength()
    rng = np.random.default_rng(1)
    flux = _normalized_spectrum(wavelength) * (1 + 0.2 * np.sin(wavelength / 150.0))
    ivar = rng.uniform(0.5, 2.0, N_PIX) * 1e4
    ivar[rng.random(N_PIX) < 0.1] = 0.0
    segment = (wavelength > 16000.0).astype(np.int32)
    reference = _direct_filter(flux, ivar, wavelength, segment, 50.0)
    result = _filter(jnp.asarray(flux), jnp.asarray(ivar), jnp.asarray(wavelength),
                     jnp.asarray(segment))
    np.testing.assert_allclose(result, reference, rtol=2e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_filter_normalizes_continuum_times_spectrum(x64, dtype):
    """f = c·n with c smooth ⇒ f/S(f) ≈ n/S(n): the filter removes the continuum."""
    wavelength = _wavelength()
    normalized = _normalized_spectrum(wavelength)
    continuum = 1e3 * (1.0 + 0.3 * (wavelength - 16000.0) / 1000.0) ** 2
    ivar = np.full(N_PIX, 1.0)
    segment = np.zeros(N_PIX, np.int32)
    wave = jnp.asarray(wavelength, dtype=dtype)

    def smooth(f):
        return _filter(jnp.asarray(f, dtype), jnp.asarray(ivar, dtype), wave, jnp.asarray(segment))

    observed = continuum * normalized
    ratio = np.asarray(observed / smooth(observed)) / np.asarray(normalized / smooth(normalized))
    assert smooth(observed).dtype == jnp.dtype(dtype)
    # the running mean of a curved continuum is biased within ~2 L of the ends
    inner = slice(200, N_PIX - 200)
    np.testing.assert_allclose(ratio[inner], 1.0, atol=1e-3)


def test_filter_masks_and_segments(x64):
    wavelength = _wavelength()
    segment = (wavelength > 16000.0).astype(np.int32)
    flux = np.where(segment == 0, 1.0, 10.0)
    ivar = np.ones(N_PIX)
    flux[::7] = np.nan  # masked pixels may hold anything
    ivar[::7] = 0.0
    ivar[10:20] = np.inf  # non-finite ivar is treated as masked too
    result = np.asarray(_filter(jnp.asarray(flux), jnp.asarray(ivar), jnp.asarray(wavelength),
                                jnp.asarray(segment)))
    assert np.all(np.isfinite(result))
    good = ivar > 0
    # never smoothed across the segment boundary
    np.testing.assert_allclose(result[good & (segment == 0)], 1.0, rtol=1e-12)
    np.testing.assert_allclose(result[good & (segment == 1)], 10.0, rtol=1e-12)


def test_filter_gradients(x64):
    wavelength = jnp.asarray(_wavelength()[:400])
    flux = jnp.asarray(_normalized_spectrum(np.asarray(wavelength)))
    ivar = jnp.linspace(1.0, 2.0, 400)
    mask = jnp.ones(400).at[::9].set(0.0)  # masking (ivar → 0) itself is a discrete choice
    fn = jax.jit(lambda f, w: smooth_continuum(f, w * mask, wavelength, width=20.0,
                                               wavelength_range=(15000.0, 15300.0)))
    check_grads(fn, (flux, ivar), order=1, modes=["fwd", "rev"])


def _design_and_truth(n_segments=3, degree=3):
    wavelength = _wavelength()
    segment = np.minimum((np.arange(N_PIX) * n_segments) // N_PIX, n_segments - 1)
    ivar = np.full(N_PIX, 1e4)
    design = chebyshev_design(jnp.asarray(wavelength), jnp.asarray(segment), jnp.asarray(ivar),
                              n_segments=n_segments, degree=degree)
    rng = np.random.default_rng(2)
    coefficients = rng.normal(0, 0.1, n_segments * (degree + 1))
    coefficients[:: degree + 1] = rng.uniform(50.0, 200.0, n_segments)  # constant terms
    return wavelength, segment, ivar, design, coefficients


def test_chebyshev_design_structure(x64):
    wavelength, segment, ivar, design, _ = _design_and_truth()
    assert design.shape == (N_PIX, 3 * 4)
    design = np.asarray(design)
    for s in range(3):
        block = design[segment == s][:, 4 * s : 4 * s + 4]
        np.testing.assert_allclose(block[:, 0], 1.0)
        assert block[:, 1].min() == pytest.approx(-1.0) and block[:, 1].max() == pytest.approx(1.0)
        np.testing.assert_allclose(block[:, 3], 4 * block[:, 1] ** 3 - 3 * block[:, 1])  # T3
        assert np.all(design[segment != s][:, 4 * s : 4 * s + 4] == 0.0)


def test_chebyshev_recovers_injected_continuum(x64):
    wavelength, segment, ivar, design, truth = _design_and_truth()
    model = _normalized_spectrum(wavelength)
    continuum = np.asarray(design) @ truth
    rng = np.random.default_rng(3)
    data = model * continuum + rng.normal(0, 1e-2, N_PIX) * np.sqrt(continuum)
    fit = chebyshev_continuum(jnp.asarray(model), jnp.asarray(data), jnp.asarray(ivar / continuum),
                              design)
    np.testing.assert_allclose(fit.continuum, continuum, rtol=2e-4)
    exact = chebyshev_continuum(jnp.asarray(model), jnp.asarray(model * continuum),
                                jnp.asarray(ivar), design)
    np.testing.assert_allclose(exact.coefficients, truth, rtol=1e-8, atol=1e-8)
    assert float(exact.rank) == design.shape[1]


def test_chebyshev_empty_segment_and_gradients(x64):
    wavelength, segment, ivar, design, truth = _design_and_truth(n_segments=2, degree=2)
    ivar = np.where(segment == 1, 0.0, ivar)  # segment 1 entirely masked
    design = chebyshev_design(jnp.asarray(wavelength), jnp.asarray(segment), jnp.asarray(ivar),
                              n_segments=2, degree=2)
    model = jnp.asarray(_normalized_spectrum(wavelength))
    data = model * (design @ truth)
    fit = chebyshev_continuum(model, data, jnp.asarray(ivar), design)
    assert np.all(np.isfinite(fit.coefficients))
    np.testing.assert_allclose(fit.coefficients[3:], 0.0, atol=1e-12)
    np.testing.assert_allclose(fit.coefficients[:3], truth[:3], rtol=1e-8)
    assert float(fit.rank) == 3.0
    fn = jax.jit(lambda m, d: chebyshev_continuum(m, d, jnp.asarray(ivar), design)[::2])
    check_grads(fn, (model[:], data), order=1, modes=["fwd", "rev"])
