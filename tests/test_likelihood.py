"""The pure likelihood: parameter space, fixed values as data, weights as pytree leaves, the model
spectrum composed with the continuum step, and the public Fisher matrix."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxpayne.forward import (
    DEFAULT_SETTINGS,
    ForwardModel,
    LikelihoodSettings,
    ModelSpectrum,
    ParameterSpace,
    apply_continuum,
    chebyshev_design,
    fisher_matrix,
    gaussian_loglike,
    log_uniform_wavelength,
    loglike,
    make_observation,
    model_spectrum,
    pad_observations,
    prepare_data,
    residuals,
)
from jaxpayne.forward.synthetic import SyntheticLineEmulator

LO, HI = 5000.0, 5100.0
FAST = dict(max_rv=100.0, max_vsini=40.0, max_vmacro=10.0)
TRUTH = {"teff": 5600.0, "logg": 4.2, "feh": -0.3}


def _emulator(**kw):
    return SyntheticLineEmulator(log_uniform_wavelength(LO, HI, 1.0), **kw)


def _network_model(n_pixels=None):
    """A small Flax emulator (a jaxpayne Model with weights) on the test grid."""
    from jaxpayne import LabelSpec, Model
    from jaxpayne.emulators import build_emulator

    wave = log_uniform_wavelength(LO, HI, 2.0)
    config = {"n_pixels": wave.size, "hidden": [6, 6]}
    module = build_emulator("mlp", config)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
    # a spectrum near 1 that depends smoothly on the labels
    params = jax.tree_util.tree_map(lambda a: 0.3 * a, params)
    labels = LabelSpec(("teff", "logg", "feh"), np.array([4000.0, 1.0, -2.0]), np.array([7000.0, 5.0, 0.5]),
                       ("K", "dex", "dex"))
    return Model("mlp", config, params, labels, wave)


def _obs(fm, n=700, seed=0, lo=5020.0, hi=5080.0):
    wave = np.linspace(lo, hi, n)
    rng = np.random.default_rng(seed)
    return fm.observation(wave, 1.0 + rng.normal(0, 0.01, n), np.full(n, 1e4))


# ------------------------------------------------------------------------------ parameter space
def test_parameter_space_named_flat_and_bijections(x64):
    space = ParameterSpace(("a", "b", "c", "d"), ("K", "", "km/s", ""), [0.0, -1.0, 0.0, -np.inf],
                           [10.0, np.inf, np.inf, np.inf], [5.0, 0.0, 1.0, 0.0], fixed={"b": 2.0})
    assert space.free_names == ("a", "c", "d") and space.n_free == 3
    theta = jnp.array([3.0, 2.5, -7.0])
    values = space.unflatten(theta)
    assert float(values["b"]) == 2.0
    np.testing.assert_array_equal(space.flatten(values), theta)
    # fixed values are data: traced overrides vmap
    override = jax.vmap(lambda v: space.unflatten(theta, fixed={"b": v})["b"])(jnp.array([1.0, 4.0]))
    np.testing.assert_array_equal(override, [1.0, 4.0])
    with pytest.raises(ValueError, match="only fixed parameters"):
        space.unflatten(theta, fixed={"a": 1.0})
    # bijection box ↔ ℝ and its log-Jacobian (checked against autodiff)
    z = space.to_unconstrained(theta)
    np.testing.assert_allclose(space.from_unconstrained(z), theta, rtol=1e-12)
    jac = jax.jacfwd(space.from_unconstrained)(z)
    np.testing.assert_allclose(space.log_abs_det_jacobian(z), np.log(np.abs(np.linalg.det(jac))), rtol=1e-10)
    # unit coordinates of the finite box
    np.testing.assert_allclose(space.to_unit(theta), [0.3, 2.5, -7.0])
    np.testing.assert_allclose(space.from_unit(space.to_unit(theta)), theta)


def test_bijection_gradients_stay_finite_far_out_in_float32():
    # The branches jnp.where discards must not put inf·0 = NaN into the gradient: exp(±z)
    # overflows float32 for |z| ≳ 88, where a sampler's early trajectories do go.
    space = ParameterSpace(("box", "above", "below", "free"), ("",) * 4, [0.0, 1.0, -np.inf, -np.inf],
                           [10.0, np.inf, 2.0, np.inf], [5.0, 2.0, 0.0, 0.0])
    # (the half lines go to the far end where their own branch stays finite, e^−100 ≈ 0)
    for value in (-1e4, -100.0, 0.0, 100.0, 1e4):
        z = jnp.array([value, -100.0, 100.0, value], dtype=jnp.float32)
        grad = jax.grad(lambda z: jnp.sum(space.from_unconstrained(z))
                        + space.log_abs_det_jacobian(z))(z)
        assert np.all(np.isfinite(np.asarray(grad))), (value, grad)
    # to_unconstrained at values where another branch would take log(0)
    theta = jnp.array([5.0, 2.0, 1.0, 0.0], dtype=jnp.float32)
    grad = jax.grad(lambda t: jnp.sum(space.to_unconstrained(t)))(theta)
    assert np.all(np.isfinite(np.asarray(grad))), grad


# ------------------------------------------------------------------------------ jit, vmap, fixed as data
def test_jit_equals_eager_and_vmap_with_per_star_fixed_values_equals_loop(x64):
    fm = ForwardModel(_emulator(), resolution=20_000.0, macroturbulence=False, continuum="cheb:2",
                      fixed={"rv": 0.0}, **FAST)
    assert fm.rv_margin == 0.0
    obs = [_obs(fm, seed=s) for s in range(3)]
    batch = pad_observations(obs)
    thetas = jnp.asarray(np.stack([fm.pack({**TRUTH, "vsini": 3.0 + s}) for s in range(3)]))
    # per-star rv (fixed, not fitted) within the margin of a model built for it
    fm_rv = ForwardModel(_emulator(), resolution=20_000.0, macroturbulence=False, continuum="cheb:2",
                         fixed={"rv": 0.0}, **FAST).space  # same space, checks construction is stable
    assert fm_rv.fixed == {"rv": 0.0}
    eager = [float(loglike(fm, thetas[i], obs[i])) for i in range(3)]
    jitted = jax.jit(loglike)
    np.testing.assert_allclose([float(jitted(fm, thetas[i], obs[i])) for i in range(3)], eager, rtol=1e-12)
    # vmap over stars with a per-star fixed value (here vsini is free; fix logg per star instead)
    fm_fixed = ForwardModel(_emulator(), resolution=20_000.0, macroturbulence=False, continuum="cheb:2",
                            fixed={"logg": 4.0}, **FAST)
    loggs = jnp.array([3.5, 4.0, 4.6])
    th = jnp.asarray(np.stack([fm_fixed.pack({"teff": 5600.0, "feh": -0.3, "rv": 5.0 * s, "vsini": 4.0})
                               for s in range(3)]))
    vmapped = jax.jit(jax.vmap(lambda t, o, g: loglike(fm_fixed, t, o, fixed={"logg": g})))(th, batch, loggs)
    loop = [float(fm_fixed.loglike(th[i], obs[i], fixed={"logg": loggs[i]})) for i in range(3)]
    np.testing.assert_allclose(vmapped, loop, rtol=1e-10)
    # the fixed value matters
    assert abs(loop[0] - float(fm_fixed.loglike(th[0], obs[0]))) > 1e-3


def test_grad_with_respect_to_emulator_weights_matches_finite_differences(x64):
    model = _network_model()
    model = model.replace(params=jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), model.params))
    fm = ForwardModel(model, resolution=15_000.0, continuum="cheb:1", rotation=True, macroturbulence=False,
                      **FAST)
    assert fm.weights is not None
    theta = jnp.asarray(fm.pack({**TRUTH, "rv": 7.0, "vsini": 6.0}))
    wave = np.linspace(5020.0, 5080.0, 500)
    clean = np.asarray(fm.model_flux(theta, make_observation(wave, np.ones_like(wave))))
    rng = np.random.default_rng(2)
    flux = 1.0 + clean + rng.normal(0, 0.01, wave.size)  # a network offset: the continuum absorbs it
    obs = fm.observation(wave, flux, np.full(wave.size, 1e4))

    def of_weights(weights):
        return loglike(fm.with_weights(weights), theta, obs)

    check_grads(of_weights, (fm.weights,), order=1, modes=("rev",), eps=1e-5, atol=1e-4, rtol=1e-4)
    # the forward model is a pytree: its weights are the leaves, a copy with others reuses the
    # compiled function (no retrace)
    leaves = jax.tree_util.tree_leaves(fm)
    assert len(leaves) == len(jax.tree_util.tree_leaves(model.params))
    compiled = jax.jit(lambda f: loglike(f, theta, obs))
    first = compiled(fm)
    scaled = fm.with_weights(jax.tree_util.tree_map(lambda a: 1.01 * a, fm.weights))
    second = compiled(scaled)
    assert compiled._cache_size() == 1 and float(first) != float(second)


def test_two_half_components_equal_one(x64):
    fm = ForwardModel(_emulator(emulator_error=0.002), continuum="filter", macroturbulence=False, **FAST)
    obs = _obs(fm)
    values = fm.parameters(jnp.asarray(fm.pack({**TRUTH, "rv": -12.0, "vsini": 8.0})))
    one = model_spectrum(fm, values, obs, emulator_error=True)
    half = ModelSpectrum(0.5 * one.flux + 0.5 * one.flux, jnp.sqrt(0.5 * one.sigma**2 + 0.5 * one.sigma**2))
    data = prepare_data(fm, obs)
    a = gaussian_loglike(apply_continuum(fm, one, data, values))
    b = gaussian_loglike(apply_continuum(fm, half, data, values))
    np.testing.assert_allclose(a, b, rtol=1e-12)
    # and the composition equals the method
    np.testing.assert_allclose(a, fm.loglike(fm.pack({**TRUTH, "rv": -12.0, "vsini": 8.0}), obs), rtol=1e-12)


def test_fisher_matrix_matches_finite_differences(x64):
    fm = ForwardModel(_emulator(), resolution=20_000.0, continuum="cheb:1", macroturbulence=False, **FAST)
    obs = _obs(fm, n=900)
    theta = jnp.asarray(fm.pack({**TRUTH, "rv": 3.0, "vsini": 7.0}))
    fisher = np.asarray(fisher_matrix(fm, theta, obs, settings=LikelihoodSettings(emulator_error=False)))
    # finite-difference Jacobian of the whitened residuals (central differences, relative steps)
    steps = np.array([2.0, 0.005, 0.005, 0.05, 0.05])
    cols = []
    for j, h in enumerate(steps):
        e = np.zeros(theta.size)
        e[j] = h
        up = np.asarray(residuals(fm, theta + e, obs))
        down = np.asarray(residuals(fm, theta - e, obs))
        cols.append((up - down) / (2 * h))
    jac = np.stack(cols, axis=1)
    np.testing.assert_allclose(fisher, jac.T @ jac, rtol=1e-2, atol=1e-2 * np.abs(fisher).max() * 1e-6)
    np.testing.assert_allclose(np.diag(fisher), np.diag(jac.T @ jac), rtol=1e-2)
    assert fm.fisher_matrix(theta, obs).shape == (5, 5)


def test_one_set_of_defaults():
    """fit, loglike (and the coming sample/crlb) share DEFAULT_SETTINGS: emulator error on."""
    from jaxpayne.fitting import Fitter

    assert DEFAULT_SETTINGS.emulator_error and DEFAULT_SETTINGS.inflation == 1.0
    fitter = Fitter(_emulator(emulator_error=0.003), templates=4, max_rv=50.0)
    assert fitter.settings.emulator_error == DEFAULT_SETTINGS.emulator_error and fitter.emulator_error
    fm = fitter.forward
    obs = _obs(fm, lo=5030.0, hi=5070.0)
    theta = fm.pack(TRUTH)
    with_error = float(fm.loglike(theta, obs))
    assert with_error == pytest.approx(float(fm.loglike(theta, obs, emulator_error=True)))
    assert with_error != pytest.approx(float(fm.loglike(theta, obs, emulator_error=False)))


def test_chebyshev_with_emulator_error_uses_one_set_of_weights(x64):
    """The continuum fit minimises exactly the χ² the likelihood reports (same weights)."""
    fm = ForwardModel(_emulator(emulator_error=0.01), continuum="cheb:2", macroturbulence=False, **FAST)
    wave = np.linspace(5020.0, 5080.0, 800)
    rng = np.random.default_rng(1)
    theta = fm.pack({**TRUTH, "rv": 4.0, "vsini": 5.0})
    template = make_observation(wave, np.ones_like(wave))
    clean = np.asarray(fm.model_flux(theta, template))
    tilt = 2.0 + 0.3 * (wave - 5050.0) / 30.0
    flux = clean * tilt + rng.normal(0, 0.02, wave.size)
    obs = fm.observation(wave, flux, np.full(wave.size, 0.02**-2))
    values = fm.parameters(jnp.asarray(theta))
    norm = apply_continuum(fm, model_spectrum(fm, values, obs, emulator_error=True), prepare_data(fm, obs), values)
    continuum = flux / np.where(np.asarray(norm.valid), np.asarray(norm.data), 1.0)
    weight = np.asarray(norm.ivar) / continuum**2  # w: ivar_norm = w c²
    # weighted least squares of data ≈ model · D a with those weights gives the same continuum
    design = np.asarray(chebyshev_design(obs.wavelength, obs.segment, obs.ivar, degree=2))
    basis = clean[:, None] * design
    a = np.linalg.solve(basis.T @ (weight[:, None] * basis), basis.T @ (weight * flux))
    np.testing.assert_allclose(design @ a, continuum, rtol=1e-6)
    # and w is the total variance of data − model·c: σ² + c²σ_emu²
    np.testing.assert_allclose(weight, 1.0 / (0.02**2 + (continuum * 0.01) ** 2), rtol=2e-3)


def test_float32_wavelengths_keep_float64_positions():
    """Observations keep what float32 rounds away; positions match float64 to ≪ 0.01 km/s."""
    wave = np.linspace(15_100.0, 16_900.0, 4000)
    obs = make_observation(wave, np.ones_like(wave))
    assert obs.wavelength.dtype == jnp.float32 and obs.wavelength_lo is not None
    restored = np.asarray(obs.wavelength, np.float64) + np.asarray(obs.wavelength_lo, np.float64)
    assert np.max(np.abs(restored - wave) / wave) < 1e-11
    assert np.max(np.abs(np.asarray(obs.wavelength, np.float64) - wave) / wave) > 1e-8


def test_margins_follow_fixed_values():
    """A fixed rv or vsini sets the grid margin by its own value: no pixels lost to max_rv."""
    emulator = _emulator()
    wave = np.linspace(LO + 0.2, HI - 0.2, 3000)
    free = ForwardModel(emulator, **FAST)
    fixed_rv = ForwardModel(emulator, fixed={"rv": 0.0}, **FAST)
    fixed_both = ForwardModel(emulator, fixed={"rv": 0.0, "vsini": 2.0, "vmacro": 1.0}, **FAST)
    counts = [int(fm.valid_wavelength(wave).sum()) for fm in (free, fixed_rv, fixed_both)]
    assert counts[0] < counts[1] < counts[2]
    # the rv margin alone: 2 × 100 km/s of a 100 Å grid at 5050 Å ≈ 3.4 Å ≈ 100 pixels here
    assert counts[1] - counts[0] == pytest.approx(2 * 100.0 / 299_792.458 * 5050.0 / (wave[1] - wave[0]), rel=0.05)
    # for a velocity window, "any" keeps more than "all"
    assert free.valid_wavelength(wave, mode="any").sum() > counts[0]
    # the traceable check agrees with the numpy one
    usable = np.asarray(free.usable_pixels(jnp.asarray(wave), -100.0, 100.0))
    assert abs(int(usable.sum()) - counts[0]) <= 2
