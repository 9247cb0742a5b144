"""Doppler shift, air/vacuum conversion and smooth resampling."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxpayne.forward import (
    SPEED_OF_LIGHT,
    air_to_vacuum,
    convert_medium,
    doppler_factor,
    doppler_log_shift,
    doppler_shift,
    evaluate_gaussian,
    evaluate_spline,
    spline_coefficients,
    vacuum_to_air,
)


def test_doppler_factor_relativistic_and_sign():
    assert float(doppler_factor(0.0)) == 1.0
    for v in [-300.0, 12.5, 250_000.0]:
        beta = v / SPEED_OF_LIGHT
        expected = np.sqrt((1 + beta) / (1 - beta))
        assert float(doppler_factor(v)) == pytest.approx(expected, rel=1e-14)
    assert float(doppler_shift(6000.0, 30.0)) > 6000.0  # receding → redshift
    assert float(doppler_factor(30.0)) == pytest.approx(1 + 30.0 / SPEED_OF_LIGHT, rel=1e-8)
    assert float(doppler_log_shift(30.0)) == pytest.approx(np.log(float(doppler_factor(30.0))))
    assert isinstance(doppler_factor(np.float64(3.0)), np.floating)  # numpy in → numpy out
    assert isinstance(doppler_factor(jnp.float32(3.0)), jax.Array)


def test_air_vacuum_reference_values_and_round_trip(x64):
    # Na D1 and Hα: vacuum ↔ standard-air wavelengths (Morton 2000)
    assert float(vacuum_to_air(np.float64(5897.558))) == pytest.approx(5895.924, abs=2e-3)
    assert float(air_to_vacuum(np.float64(6562.80))) == pytest.approx(6564.61, abs=2e-2)
    vacuum = np.linspace(2000.0, 30_000.0, 20_001)
    np.testing.assert_allclose(air_to_vacuum(vacuum_to_air(vacuum)), vacuum, rtol=0, atol=1e-9)
    air = np.linspace(2000.0, 30_000.0, 2001)
    np.testing.assert_allclose(vacuum_to_air(air_to_vacuum(air)), air, rtol=0, atol=1e-9)
    far_uv = np.linspace(900.0, 1999.0, 11)
    np.testing.assert_array_equal(vacuum_to_air(far_uv), far_uv)  # IAU: vacuum below 2000 Å
    assert convert_medium(vacuum, "vacuum", "vacuum") is vacuum
    np.testing.assert_allclose(convert_medium(vacuum, "vacuum", "air"), vacuum_to_air(vacuum))
    with pytest.raises(ValueError, match="medium"):
        convert_medium(vacuum, "vacuum", "glass")
    # JAX in, JAX out, differentiable: dλ_air/dλ_vac ≈ 1/n
    jx = jnp.asarray([5000.0, 16000.0])
    assert isinstance(vacuum_to_air(jx), jax.Array)
    check_grads(vacuum_to_air, (jx,), order=1, modes=["fwd", "rev"])
    check_grads(air_to_vacuum, (jx,), order=1, modes=["fwd", "rev"])


def test_air_vacuum_float32_round_trip():
    vacuum = jnp.linspace(4000.0, 17_000.0, 101, dtype=jnp.float32)
    back = air_to_vacuum(vacuum_to_air(vacuum))
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(back, vacuum, rtol=2e-7)


def _smooth_signal(n=300):
    x = np.arange(n, dtype=np.float64)
    return np.sin(x / 7.0) + 0.3 * np.cos(x / 3.1) + 1.0


def test_spline_interpolates_samples(x64):
    samples = jnp.asarray(_smooth_signal())
    coefficients = spline_coefficients(samples)
    nodes = jnp.arange(2, 296, dtype=jnp.float64)
    np.testing.assert_allclose(evaluate_spline(coefficients, nodes), samples[2:296], atol=1e-12)
    # between nodes: a cubic spline of a well-sampled signal is accurate to ~(h/λ)^4
    x = jnp.linspace(10.0, 280.0, 1001)
    exact = np.sin(x / 7.0) + 0.3 * np.cos(x / 3.1) + 1.0
    np.testing.assert_allclose(evaluate_spline(coefficients, x), exact, atol=2e-4)


def test_spline_derivative_continuous_across_nodes(x64):
    """No kinks at pixel boundaries: left and right derivatives agree at every node."""
    coefficients = spline_coefficients(jnp.asarray(_smooth_signal()))
    value = jax.jit(lambda p: evaluate_spline(coefficients, p))
    d1 = jax.jit(jax.vmap(jax.grad(value)))
    d2 = jax.jit(jax.vmap(jax.grad(jax.grad(value))))
    nodes = jnp.arange(5.0, 290.0)
    for derivative, tol in [(d1, 1e-9), (d2, 1e-7)]:
        left, right = derivative(nodes - 1e-9), derivative(nodes + 1e-9)
        np.testing.assert_allclose(left, right, atol=tol)
    # at, between and just below a node
    positions = jnp.array([10.0, 10.5, 11.0 - 1e-12, 11.0])
    check_grads(value, (positions,), order=2, modes=["fwd", "rev"])


def test_gaussian_window_widens_in_quadrature(x64):
    n = 400
    x = np.arange(n, dtype=np.float64)
    line = 1.0 - 0.5 * np.exp(-0.5 * ((x - 200.0) / 3.0) ** 2)
    positions = jnp.linspace(150.0, 250.0, 4001)
    sigma = 2.0
    out = jax.jit(evaluate_gaussian, static_argnums=3)(jnp.asarray(line), positions, sigma, 12)
    width = np.hypot(3.0, sigma)
    expected = 1.0 - 0.5 * 3.0 / width * np.exp(-0.5 * ((positions - 200.0) / width) ** 2)
    np.testing.assert_allclose(out, expected, atol=1e-8)
    # per-position width, differentiable in position and width
    fn = jax.jit(lambda p, s: evaluate_gaussian(jnp.asarray(line), p, s, half_width=12))
    args = (jnp.array([199.0, 200.0, 203.7]), jnp.array([1.2, 2.0, 1.7]))
    check_grads(fn, args, order=1, modes=["fwd", "rev"])
