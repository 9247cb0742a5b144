"""Broadening kernels: closed forms vs numerical references, conservation, identities, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
from jax.test_util import check_grads

from jaxpayne.forward import (
    SPEED_OF_LIGHT,
    broaden,
    instrumental_broadening,
    macroturbulent_broadening,
    macroturbulent_kernel,
    macroturbulent_transfer,
    rotational_broadening,
    rotational_kernel,
    rotational_transfer,
)
from jaxpayne.forward._special import j1_over_x_minus_half, spherical_j1_over_x_minus_third

STEP = 1.0  # km/s per pixel of the test grid
N_PIX = 1200
LINE_SIGMA = 5.0  # km/s
LINE_DEPTH = 0.6


def _velocity():
    return (np.arange(N_PIX) - N_PIX // 2) * STEP


def _line(sigma=LINE_SIGMA, depth=LINE_DEPTH):
    v = _velocity()
    return 1.0 - depth * np.exp(-0.5 * (v / sigma) ** 2)


def _moments(flux):
    """Equivalent width [km/s] and rms width [km/s] of the absorption 1 − f."""
    v = _velocity()
    absorption = 1.0 - np.asarray(flux, dtype=np.float64)
    ew = absorption.sum() * STEP
    mean = (absorption * v).sum() * STEP / ew
    return ew, np.sqrt((absorption * (v - mean) ** 2).sum() * STEP / ew)


def test_special_functions_match_scipy(x64):
    x = np.concatenate([np.linspace(-4, 4, 4001), np.geomspace(4, 3000, 4000)])
    xs = np.where(x == 0, 1.0, x)
    j1 = np.where(x == 0, 0.0, scipy.special.j1(xs) / xs - 0.5)
    sj1 = np.where(x == 0, 0.0, scipy.special.spherical_jn(1, xs) / xs - 1 / 3)
    np.testing.assert_allclose(j1_over_x_minus_half(x), j1, atol=1e-14)
    np.testing.assert_allclose(spherical_j1_over_x_minus_third(x), sj1, atol=1e-13)
    assert float(j1_over_x_minus_half(0.0)) == 0.0
    assert float(spherical_j1_over_x_minus_third(0.0)) == 0.0


@pytest.mark.parametrize("eps", [0.0, 0.6, 1.0])
def test_rotational_kernel_and_transfer_agree(x64, eps):
    """The closed-form transfer function is the Fourier transform of Gray's kernel."""
    vsini = 40.0
    phi = np.linspace(-np.pi / 2, np.pi / 2, 20001)
    u = vsini * np.sin(phi)
    kernel = rotational_kernel(u, vsini, eps) * vsini * np.cos(phi)  # dv = vsini cos φ dφ
    assert np.trapezoid(kernel, phi) == pytest.approx(1.0, abs=1e-8)
    for f in [0.0, 0.003, 0.01, 0.05, 0.2]:
        numeric = np.trapezoid(kernel * np.cos(2 * np.pi * f * u), phi)
        assert float(rotational_transfer(f, vsini, eps)) == pytest.approx(numeric, abs=1e-8)


def test_macroturbulent_kernel_and_transfer_agree(x64):
    zeta = 8.0
    v = np.linspace(-15 * zeta, 15 * zeta, 600001)
    kernel = macroturbulent_kernel(v, zeta)
    assert np.trapezoid(kernel, v) == pytest.approx(1.0, abs=1e-5)  # cusp at 0 limits trapezoid
    for f in [0.0, 0.01, 0.05, 0.2]:
        numeric = np.trapezoid(kernel * np.cos(2 * np.pi * f * v), v)
        assert float(macroturbulent_transfer(f, zeta)) == pytest.approx(numeric, abs=2e-5)


@pytest.mark.parametrize("vsini,eps", [(3.0, 0.6), (30.0, 0.6), (120.0, 0.0), (60.0, 1.0)])
def test_rotation_matches_direct_convolution(x64, vsini, eps):
    """FFT result = ∫ G(u) f(v − u) du computed by quadrature in numpy (u = vsini sin φ)."""
    nodes, weights = np.polynomial.legendre.leggauss(400)
    phi = 0.5 * np.pi * nodes
    u = vsini * np.sin(phi)
    kernel_weight = 0.5 * np.pi * weights * rotational_kernel(u, vsini, eps) * vsini * np.cos(phi)
    v = _velocity()
    line = lambda x: 1.0 - LINE_DEPTH * np.exp(-0.5 * (x / LINE_SIGMA) ** 2)  # noqa: E731
    reference = np.sum(kernel_weight[None, :] * line(v[:, None] - u[None, :]), axis=1)
    result = rotational_broadening(_line(), vsini, velocity_step=STEP, limb_darkening=eps)
    inner = slice(200, N_PIX - 200)
    np.testing.assert_allclose(np.asarray(result)[inner], reference[inner], atol=2e-7)


def test_macroturbulence_matches_direct_convolution(x64):
    """M = ∫₀¹ 2t · Gaussian(σ = ζt/√2) dt, so M ⊗ Gaussian line is a 1-D quadrature over t."""
    zeta = 12.0
    nodes, weights = np.polynomial.legendre.leggauss(200)
    t, w = 0.5 * (nodes + 1), 0.5 * weights
    v = _velocity()[:, None]
    var = LINE_SIGMA**2 + (zeta * t) ** 2 / 2
    profile = LINE_SIGMA / np.sqrt(var) * np.exp(-0.5 * v**2 / var)
    reference = 1.0 - LINE_DEPTH * np.sum(2 * t * w * profile, axis=1)
    result = macroturbulent_broadening(_line(), zeta, velocity_step=STEP)
    inner = slice(200, N_PIX - 200)
    np.testing.assert_allclose(np.asarray(result)[inner], reference[inner], atol=2e-7)


def test_gaussian_lsf_widens_in_quadrature(x64):
    resolution = 25_000.0
    sigma_lsf = SPEED_OF_LIGHT / resolution / (2 * np.sqrt(2 * np.log(2)))
    ew0, width0 = _moments(_line())
    ew, width = _moments(instrumental_broadening(_line(), resolution, velocity_step=STEP))
    assert width0 == pytest.approx(LINE_SIGMA, rel=1e-9)
    assert width == pytest.approx(np.hypot(LINE_SIGMA, sigma_lsf), rel=1e-9)
    assert ew == pytest.approx(ew0, rel=1e-12)


@pytest.mark.parametrize(
    "options",
    [dict(vsini=35.0), dict(vmacro=9.0), dict(resolution=12_000.0),
     dict(vsini=20.0, vmacro=5.0, resolution=30_000.0, limb_darkening=0.3)],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernels_conserve_flux_and_equivalent_width(x64, options, dtype):
    flux = jnp.asarray(_line(), dtype=dtype)
    result = broaden(flux, STEP, **options)
    assert result.dtype == flux.dtype
    ew0, _ = _moments(flux)
    ew, width = _moments(result)
    tol = 1e-10 if dtype == "float64" else 2e-4
    assert ew == pytest.approx(ew0, rel=tol)
    assert width > LINE_SIGMA


def test_zero_broadening_is_identity(x64):
    flux = jnp.asarray(_line())
    assert broaden(flux, STEP) is flux  # all steps absent: untouched
    out = broaden(flux, STEP, vsini=0.0, vmacro=0.0, resolution=np.inf)
    np.testing.assert_allclose(out, flux, atol=1e-14)
    f = jnp.linspace(0, 0.5, 101)
    assert np.all(np.asarray(rotational_transfer(f, 0.0)) == 1.0)
    assert np.all(np.asarray(macroturbulent_transfer(f, 0.0)) == 1.0)


def test_broadening_batched_and_jit_consistent(x64):
    flux = jnp.stack([jnp.asarray(_line()), jnp.asarray(_line(sigma=8.0))])
    batched = broaden(flux, STEP, vsini=jnp.array([[10.0], [40.0]]))
    single = [broaden(flux[i], STEP, vsini=v) for i, v in enumerate([10.0, 40.0])]
    np.testing.assert_allclose(batched, np.stack(single), atol=1e-13)
    jitted = jax.jit(lambda f, v: rotational_broadening(f, v, velocity_step=STEP))
    np.testing.assert_allclose(jitted(flux[0], 10.0), single[0], atol=1e-13)


def _cut_line():
    return jnp.asarray(_line())[400:800]


@jax.jit
def _rotated(vsini, flux):
    return rotational_broadening(flux, vsini, velocity_step=STEP)


@jax.jit
def _macro(vmacro, flux):
    return macroturbulent_broadening(flux, vmacro, velocity_step=STEP)


@jax.jit
def _instrumental(resolution, flux):
    return broaden(flux, STEP, vmacro=4.0, resolution=resolution)


@pytest.mark.parametrize("vsini", [0.0, 1e-3, 0.7, 25.0])
def test_rotational_gradients(x64, vsini):
    """Gradients in vsini (smooth through 0) and in the flux."""
    args = (jnp.float64(vsini), _cut_line())
    check_grads(_rotated, args, order=1, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6, eps=1e-5)
    check_grads(_rotated, args, order=2, modes=["fwd"], atol=1e-6, rtol=1e-6, eps=1e-5)
    assert np.all(np.isfinite(jax.jacfwd(_rotated)(*args)))


@pytest.mark.parametrize("vmacro", [0.0, 1e-3, 6.0])
def test_macroturbulent_gradients(x64, vmacro):
    args = (jnp.float64(vmacro), _cut_line())
    check_grads(_macro, args, order=1, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6, eps=1e-5)
    check_grads(_macro, args, order=2, modes=["fwd"], atol=1e-6, rtol=1e-6, eps=1e-5)


def test_instrumental_gradients(x64):
    args = (jnp.float64(20_000.0), _cut_line())
    check_grads(_instrumental, args, order=1, modes=["fwd", "rev"], atol=1e-6, rtol=1e-6, eps=1e-5)
    check_grads(_instrumental, args, order=2, modes=["fwd"], atol=1e-6, rtol=1e-6, eps=1e-5)
