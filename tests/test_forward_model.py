"""ForwardModel: parameters, identities, RV accuracy, continuum modes, gradients, jit/vmap, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxpayne.forward import (
    SPEED_OF_LIGHT,
    ForwardModel,
    Observation,
    chebyshev_continuum,
    chebyshev_design,
    log_uniform_wavelength,
    make_observation,
    pad_observations,
    resolution_to_sigma,
    vacuum_to_air,
)
from jaxpayne.forward.synthetic import SyntheticLineEmulator

LO, HI = 5000.0, 5100.0
OBS_LO, OBS_HI = 5020.0, 5080.0
TRUTH = {"teff": 5600.0, "logg": 4.2, "feh": -0.3}
FAST = dict(max_rv=200.0, max_vsini=60.0, max_vmacro=15.0)


def _emulator(**kwargs):
    wavelength = kwargs.pop("wavelength", None)
    if wavelength is None:
        wavelength = log_uniform_wavelength(LO, HI, 1.0)
    return SyntheticLineEmulator(wavelength, **kwargs)


_MODELS: dict = {}


def _model(**options) -> ForwardModel:
    """Forward models shared between tests (their compiled functions are reused)."""
    key = tuple(sorted(options.items()))
    if key not in _MODELS:
        _MODELS[key] = ForwardModel(_emulator(), **options, **FAST)
    return _MODELS[key]


def _obs(fm, n=1500, seed=0, flux=None, ivar=None, lo=OBS_LO, hi=OBS_HI):
    wavelength = np.linspace(lo, hi, n)
    rng = np.random.default_rng(seed)
    ivar = np.full(n, 1e4) if ivar is None else ivar
    if flux is None:
        flux = 1.0 + rng.normal(0, 0.01, n)
    segment = (wavelength > 0.5 * (lo + hi)).astype(np.int32) if fm.n_segments == 2 else None
    return fm.observation(wavelength, flux, ivar, segment=segment)


def test_parameter_layout_and_validation():
    emulator = _emulator()
    fm = ForwardModel(emulator, resolution=20_000.0, fit_resolution=True, continuum="cheb:1:free",
                      n_segments=2, fixed={"logg": 4.0}, **FAST)
    assert fm.param_names == ("teff", "feh", "rv", "vsini", "vmacro", "R",
                              "cont_s0_c0", "cont_s0_c1", "cont_s1_c0", "cont_s1_c1")
    np.testing.assert_array_equal(fm.lower[:5], [4000.0, -2.0, -200.0, 0.0, 0.0])
    np.testing.assert_array_equal(fm.upper[:5], [7000.0, 0.5, 200.0, 60.0, 15.0])
    assert fm.lower[5] == 10_000.0 and fm.upper[5] == 40_000.0
    assert np.all(fm.lower <= fm.initial) and np.all(fm.initial <= fm.upper)
    assert fm.initial[3] > 0  # vsini starts off zero, where its gradient vanishes
    theta = fm.pack({"teff": 6000.0, "rv": 12.0})
    values = fm.parameters(jnp.asarray(theta))
    assert float(values["teff"]) == 6000.0 and float(values["logg"]) == 4.0
    assert float(values["rv"]) == 12.0 and float(values["cont_s1_c0"]) == 1.0
    with pytest.raises(ValueError, match="theta must have shape"):
        fm.parameters(jnp.zeros(3))
    with pytest.raises(ValueError, match="unknown fixed"):
        ForwardModel(emulator, fixed={"mass": 1.0}, **FAST)
    with pytest.raises(ValueError, match="continuum must be"):
        ForwardModel(emulator, continuum="poly:3", **FAST)
    with pytest.raises(ValueError, match="fit_resolution"):
        ForwardModel(emulator, fit_resolution=True, **FAST)

    class WithVmacro(SyntheticLineEmulator):
        label_names = ("teff", "logg", "vmacro")

    with pytest.raises(ValueError, match="macroturbulence=False"):
        ForwardModel(WithVmacro(emulator.wavelength), **FAST)
    assert "vmacro" in ForwardModel(WithVmacro(emulator.wavelength), macroturbulence=False,
                                    **FAST).param_names


def _identity_theta(fm):
    return jnp.asarray(fm.pack({**TRUTH, "rv": 0.0, "vsini": 0.0, "vmacro": 0.0}))


@pytest.mark.parametrize("log_uniform", [True, False])
def test_zero_broadening_and_rv_is_identity(x64, log_uniform):
    if log_uniform:
        wavelength = log_uniform_wavelength(LO, HI, 1.0)
    else:  # linear grid: interpolated onto the working grid
        wavelength = np.arange(LO, HI, 0.015)
    emulator = _emulator(wavelength=wavelength)
    fm = ForwardModel(emulator, continuum="none", **FAST)
    assert fm.grid.direct == log_uniform
    inside = (wavelength > OBS_LO) & (wavelength < OBS_HI)
    obs = fm.observation(wavelength[inside], np.ones(inside.sum()))
    flux = fm.model_flux(_identity_theta(fm), obs)
    truth = np.asarray(emulator.predict(jnp.asarray([TRUTH[k] for k in emulator.label_names])))
    np.testing.assert_allclose(flux, truth[inside], atol=1e-10 if log_uniform else 5e-5)


@pytest.mark.parametrize("rv", [-123.4, 0.37, 37.3])
def test_rv_shift_moves_line_by_lambda_v_over_c(x64, rv):
    """Line centre moves by λ·v/c to better than 0.05 km/s, with and without broadening."""
    emulator = _emulator(n_lines=1)
    center = emulator.centers[0]
    for options, theta_extra in [({}, {"vsini": 0.0, "vmacro": 0.0}),
                                 ({"resolution": 20_000.0}, {"vsini": 20.0, "vmacro": 4.0})]:
        fm = ForwardModel(emulator, continuum="none", **options, **FAST)
        wavelength = np.linspace(center - 6.0, center + 6.0, 2401)
        obs = fm.observation(wavelength, np.ones_like(wavelength))
        theta = jnp.asarray(fm.pack({**TRUTH, **theta_extra, "rv": rv}))
        absorption = 1.0 - np.asarray(fm.model_flux(theta, obs))
        centroid = np.sum(absorption * wavelength) / np.sum(absorption)
        measured = SPEED_OF_LIGHT * (centroid - center) / center
        assert abs(measured - rv) < 0.05




@pytest.mark.parametrize(
    "continuum,extra",
    [("filter:20", {"emulator_error": True}), ("cheb:2", {}), ("cheb:1:free", {"lsf": True})],
)
def test_gradients_every_parameter(x64, continuum, extra):
    """check_grads in every free parameter, at vsini = 0 and rv on exact pixel boundaries.

    Covers labels, rv, vsini, vmacro, R, free Chebyshev coefficients, the emulator error, both
    resampling paths (B-spline and per-pixel Gaussian LSF) and every continuum treatment ("none"
    is the common core of the others).
    """
    emulator = _emulator(emulator_error=1e-3 if extra.get("emulator_error") else None)
    options = dict(continuum=continuum, n_segments=2, fit_resolution=True, resolution=25_000.0)
    if extra.get("lsf"):
        options["lsf_sigma"] = (np.array([LO, HI]), np.array([0.08, 0.12]))
    fm = ForwardModel(emulator, **options, **FAST)
    grid_wavelength = fm.grid.wavelength(0)
    pick = (grid_wavelength > OBS_LO) & (grid_wavelength < OBS_HI)
    wavelength = grid_wavelength[pick][::2]  # observed pixels at working-grid nodes: with rv = 0
    rng = np.random.default_rng(1)              # every position sits on a pixel boundary
    flux = 1.0 + rng.normal(0, 0.01, wavelength.size)
    segment = (wavelength > 5050.0).astype(np.int32)
    obs = fm.observation(wavelength, flux, np.full(wavelength.size, 1e4), segment=segment)
    error = extra.get("emulator_error", False)
    loglike = jax.jit(lambda t: fm.loglike(t, obs, emulator_error=error, inflation=1.3))
    gradient = jax.jit(jax.grad(loglike))
    residuals = jax.jit(lambda t: fm.residuals(t, obs, emulator_error=error))
    jacobian = jax.jit(jax.jacfwd(residuals))
    rng = np.random.default_rng(2)
    for vsini in (0.0, 7.0):
        values = {**TRUTH, "rv": 0.0, "vsini": vsini, "vmacro": 3.0, "cont_s0_c0": 1.01,
                  "cont_s1_c1": 0.01}
        theta = jnp.asarray(fm.pack({k: v for k, v in values.items() if k in fm.param_names}))
        check_grads(loglike, (theta,), order=1, modes=["fwd"], eps=1e-4, rtol=1e-5, atol=1e-5)
        # reverse mode (the gradient) and the Jacobian of the residuals (what Gauss–Newton
        # fitters use) against central differences along random directions
        h = 1e-6 * jnp.maximum(jnp.abs(theta), 1.0) * rng.normal(size=theta.size)
        numeric = (loglike(theta + h) - loglike(theta - h)) / 2.0
        assert float(gradient(theta) @ h) == pytest.approx(float(numeric), rel=1e-5, abs=1e-6)
        if continuum == "cheb:2":  # (compiling a Jacobian is slow: one configuration suffices)
            numeric = (residuals(theta + h) - residuals(theta - h)) / 2.0
            np.testing.assert_allclose(jacobian(theta) @ h, numeric, rtol=1e-5, atol=1e-6)
    if continuum == "cheb:2":
        assert jacobian(theta).shape == (wavelength.size, fm.n_params)


def test_rv_derivative_continuous_across_pixel_boundaries(x64):
    """d(model)/d(rv) is the same just below and just above an rv that lands pixels on nodes."""
    fm = _model(resolution=30_000.0, continuum="none")
    grid_wavelength = fm.grid.wavelength(0)
    wavelength = grid_wavelength[(grid_wavelength > OBS_LO) & (grid_wavelength < OBS_HI)]
    obs = fm.observation(wavelength, np.ones(wavelength.size))
    derivative = jax.jit(jax.jacfwd(lambda t: fm.model_flux(t, obs)))
    index = fm.param_names.index("rv")
    for shift in (0.0, 1.0, 2.0):  # whole working-grid steps: every pixel exactly on a node
        rv = SPEED_OF_LIGHT * np.tanh(shift * fm.grid.log_step)
        values = [derivative(jnp.asarray(fm.pack({**TRUTH, "rv": rv + d, "vsini": 0.0})))[:, index]
                  for d in (-1e-7, 1e-7)]
        np.testing.assert_allclose(values[0], values[1], atol=1e-7)


def test_jit_eager_and_dtypes(x64):
    fm = _model(resolution=30_000.0, continuum="cheb:2")
    obs64 = _obs(fm)
    theta64 = jnp.asarray(fm.pack({**TRUTH, "rv": 3.3, "vsini": 11.0}))
    eager = fm.residuals(theta64, obs64)
    np.testing.assert_allclose(jax.jit(fm.residuals)(theta64, obs64), eager, atol=1e-10)
    assert eager.dtype == jnp.float64
    obs32 = Observation(*(None if x is None else (x.astype(jnp.float32) if x.dtype == jnp.float64
                                                   else x) for x in obs64))
    theta32 = theta64.astype(jnp.float32)
    flux32 = jax.jit(fm.model_flux)(theta32, obs32)
    assert flux32.dtype == jnp.float32
    # compare at the float32-rounded wavelengths (rounding 5000 Å to float32 moves a pixel by up
    # to 0.015 km/s, which is a property of the input, not of the computation)
    rounded = obs64._replace(wavelength=obs32.wavelength.astype(jnp.float64))
    np.testing.assert_allclose(flux32, fm.model_flux(theta64, rounded), atol=2e-5)
    loglike32 = jax.jit(fm.loglike)(theta32, obs32)
    assert loglike32.dtype == jnp.float32
    assert float(loglike32) == pytest.approx(float(fm.loglike(theta64, rounded)), rel=1e-5)


def test_float32_without_x64():
    fm = _model(resolution=30_000.0, continuum="filter:10")
    obs = _obs(fm)
    assert obs.flux.dtype == jnp.float32
    theta = jnp.asarray(fm.pack({**TRUTH, "rv": -40.0, "vsini": 11.0}), dtype=jnp.float32)
    value, gradient = jax.jit(jax.value_and_grad(fm.loglike))(theta, obs)
    assert value.dtype == jnp.float32 and np.all(np.isfinite(gradient))


def test_vmap_matches_loop_over_theta_and_padded_obs(x64):
    fm = _model(resolution=30_000.0, continuum="cheb:2", n_segments=2)
    observations = [_obs(fm, n=n, seed=i) for i, n in enumerate([900, 1300])]
    batch = pad_observations(observations)
    assert batch.flux.shape == (2, 1300)
    thetas = jnp.stack([jnp.asarray(fm.pack({**TRUTH, "rv": rv, "vsini": v}))
                        for rv, v in [(-20.0, 5.0), (45.0, 0.0)]])
    both = lambda t, o: (fm.loglike(t, o), fm.residuals(t, o))  # noqa: E731
    loglike, residuals = jax.jit(jax.vmap(both))(thetas, batch)
    for i, obs in enumerate(observations):
        n = obs.flux.shape[0]
        loglike_i, residuals_i = jax.jit(both)(thetas[i], obs)
        assert float(loglike[i]) == pytest.approx(float(loglike_i), rel=1e-10)
        np.testing.assert_allclose(residuals[i, :n], residuals_i, atol=1e-9)
        assert np.all(np.asarray(residuals[i, n:]) == 0.0)
    # one theta against many spectra
    single = jax.vmap(fm.model_flux, in_axes=(None, 0))(thetas[0], batch)
    np.testing.assert_allclose(single[1], fm.model_flux(thetas[0], observations[1]), atol=1e-12)


def test_out_of_range_observations_raise_clear_errors(x64):
    emulator = _emulator()
    fm = _model(resolution=30_000.0, continuum="none")
    lo_allowed, hi_allowed = fm.grid.allowed[0]
    # max_rv + max_vsini + 3 max_vmacro + 5 σ_LSF + 3 spline taps [km/s]
    sigma_r = SPEED_OF_LIGHT / 30_000.0 / (2 * np.sqrt(2 * np.log(2)))
    margin = 200.0 + 60.0 + 3 * 15.0 + 5 * sigma_r + 3 * fm.grid.velocity_step
    assert lo_allowed == pytest.approx(LO * (1 + margin / SPEED_OF_LIGHT), rel=1e-5)
    assert hi_allowed == pytest.approx(HI * (1 - margin / SPEED_OF_LIGHT), rel=1e-5)
    wavelength = np.linspace(LO + 0.5, HI - 0.5, 1000)
    with pytest.raises(ValueError, match="outside the range this forward model covers"):
        fm.observation(wavelength, np.ones(1000))
    obs = fm.observation(wavelength, np.ones(1000), outside="mask")
    masked = np.asarray(obs.ivar) == 0
    assert masked.any() and not masked.all()
    theta = jnp.asarray(fm.initial)
    assert np.all(np.isfinite(fm.model_flux(theta, obs)))
    bad = obs._replace(ivar=jnp.ones(1000))
    with pytest.raises(ValueError, match="max_rv=200"):
        fm.model_flux(theta, bad)
    with pytest.raises(ValueError, match="max_rv"):
        fm.loglike(theta, bad)
    assert np.all(np.isfinite(jax.jit(fm.model_flux)(theta, bad)))  # traced: no check, clamped
    with pytest.raises(ValueError, match="cannot be modelled"):
        ForwardModel(emulator, obs_wavelength_range=(LO + 1.0, HI - 1.0), **FAST)
    with pytest.raises(ValueError, match="segment indices"):
        fm.loglike(theta, _obs(fm)._replace(segment=jnp.full(1500, 3, jnp.int32)))


def test_masked_pixels_give_zero_residuals(x64):
    fm = _model(resolution=30_000.0, continuum="filter:10")
    flux = np.ones(1500)
    flux[::5] = np.nan
    ivar = np.full(1500, 1e4)
    ivar[1::5] = 0.0
    obs = fm.observation(np.linspace(OBS_LO, OBS_HI, 1500), flux, ivar)
    theta = jnp.asarray(fm.initial)
    residuals = np.asarray(fm.residuals(theta, obs))
    assert np.all(residuals[::5] == 0.0) and np.all(residuals[1::5] == 0.0)
    assert np.all(residuals[2::5] != 0.0)
    gradient = jax.grad(fm.loglike)(theta, obs)
    assert np.all(np.isfinite(gradient))


def test_per_pixel_lsf_matches_constant_resolution(x64):
    emulator = _emulator()
    resolution = 30_000.0
    constant = _model(resolution=resolution, continuum="none")
    per_pixel = ForwardModel(emulator, lsf_sigma=lambda w: resolution_to_sigma(w, resolution),
                             max_lsf_sigma=0.3, continuum="none", **FAST)
    obs = _obs(constant)
    theta = jnp.asarray(constant.pack({**TRUTH, "rv": 17.0, "vsini": 8.0}))
    # equal up to the cubic-spline interpolation error of the constant-R path
    np.testing.assert_allclose(per_pixel.model_flux(theta, obs), constant.model_flux(theta, obs),
                               atol=1e-6)
    # an observation's own LSF widths override the model's default
    wider = obs._replace(lsf_sigma=resolution_to_sigma(obs.wavelength, resolution / 2))
    assert np.min(per_pixel.model_flux(theta, wider)) > np.min(per_pixel.model_flux(theta, obs))


def _synthetic_data(fm, theta, continuum_fn, seed=0):
    obs = _obs(fm)
    model = np.asarray(fm.model_flux(theta, obs))
    continuum = continuum_fn(np.asarray(obs.wavelength))
    rng = np.random.default_rng(seed)
    sigma = 1e-3 * continuum
    flux = model * continuum + rng.normal(0, 1, model.size) * sigma
    return obs._replace(flux=jnp.asarray(flux), ivar=jnp.asarray(1 / sigma**2)), continuum


def test_continuum_treatments_recover_truth(x64):
    def poly(w):
        x = (w - 5050.0) / 30.0
        return 800.0 * (1.0 + 0.2 * x - 0.05 * x**2)

    def gentle(w):
        return 800.0 * (1.0 + 0.01 * (w - 5050.0) / 30.0)

    # the running mean follows only continua smooth on scales ≫ L, and is one-sided (biased)
    # within ~L of the ends; the Chebyshev fit is exact for a polynomial continuum
    for continuum, shape, inner in [("cheb:2", poly, slice(None)),
                                    ("filter:10", gentle, slice(300, -300))]:
        fm = _model(resolution=30_000.0, continuum=continuum)
        theta = jnp.asarray(fm.pack({**TRUTH, "rv": 5.0, "vsini": 9.0}))
        obs, _ = _synthetic_data(fm, theta, shape)
        residuals = np.asarray(fm.residuals(theta, obs))[inner]
        assert np.sqrt(np.mean(residuals**2)) == pytest.approx(1.0, abs=0.1)  # just noise
        model_norm, data_norm, ivar_norm = fm.normalized(theta, obs)
        np.testing.assert_allclose(data_norm[inner], model_norm[inner], atol=8e-3)
        # the truth is preferred over a wrong Teff
        wrong = theta.at[0].set(6000.0)
        assert float(fm.loglike(theta, obs)) > float(fm.loglike(wrong, obs)) + 100.0
    # free Chebyshev coefficients at the least-squares values reproduce the marginalised fit
    free = _model(resolution=30_000.0, continuum="cheb:2:free")
    marginal = _model(resolution=30_000.0, continuum="cheb:2")
    theta = jnp.asarray(marginal.pack({**TRUTH, "rv": 5.0, "vsini": 9.0}))
    obs, truth_continuum = _synthetic_data(marginal, theta, poly)
    design = chebyshev_design(obs.wavelength, obs.segment, obs.ivar, degree=2)
    fit = chebyshev_continuum(marginal.model_flux(theta, obs), obs.flux, obs.ivar, design)
    np.testing.assert_allclose(fit.continuum, truth_continuum, rtol=5e-4)  # noise 1e-3/pixel
    theta_free = jnp.concatenate([theta, fit.coefficients])
    np.testing.assert_allclose(free.residuals(theta_free, obs), marginal.residuals(theta, obs),
                               atol=1e-8)
    profile = marginal.loglike(theta, obs, marginalize=False)
    assert float(free.loglike(theta_free, obs)) == pytest.approx(float(profile), rel=1e-10)


def test_air_medium_emulator(x64):
    vacuum = log_uniform_wavelength(LO, HI, 1.0)
    emulator_air = _emulator(wavelength=vacuum_to_air(vacuum), medium="air")
    fm = ForwardModel(emulator_air, continuum="none", **FAST)
    assert fm.medium == "air"
    wavelength_vac = np.linspace(OBS_LO + 3, OBS_HI - 3, 800)
    from_vacuum = fm.observation(wavelength_vac, np.ones(800), medium="vacuum")
    from_air = fm.observation(vacuum_to_air(wavelength_vac), np.ones(800), medium="air")
    np.testing.assert_allclose(from_vacuum.wavelength, from_air.wavelength, rtol=1e-14)
    theta = jnp.asarray(fm.initial)
    np.testing.assert_allclose(fm.model_flux(theta, from_vacuum), fm.model_flux(theta, from_air))


def test_make_observation_sanitizes_and_pads():
    obs = make_observation([5000.0, 5001.0, 5002.0], [1.0, np.nan, 0.9], error=[0.1, 0.1, -1.0])
    np.testing.assert_allclose(obs.ivar, [100.0, 0.0, 0.0])
    assert float(obs.flux[1]) == 0.0 and obs.segment.dtype == jnp.int32
    with pytest.raises(ValueError, match="equal lengths"):
        make_observation([1.0, 2.0], [1.0])
    seg = make_observation(np.r_[np.linspace(5000, 5010, 50), np.linspace(5100, 5110, 50)],
                           np.ones(100), segment="gaps").segment
    assert set(np.asarray(seg).tolist()) == {0, 1}
    batch = pad_observations([obs, make_observation([5000.0], [1.0])])
    assert batch.flux.shape == (2, 3) and float(batch.ivar[1, 2]) == 0.0
    assert float(batch.wavelength[1, 2]) == 5000.0


def _binspec_network(network_path, wavelength_path):
    """The published binspec APOGEE network (El-Badry et al. 2018) through the Payne-format import.

    Its macroturbulence label is renamed so it does not collide with the forward model's ``vmacro``.
    """
    import jaxpayne

    return jaxpayne.load_model(network_path, format="binspec", wavelength=wavelength_path,
                               label_names=("teff", "logg", "feh", "mgfe", "vmacro_label"))


def test_binspec_apogee_network(x64, need_data):
    network = _binspec_network(
        need_data("binspec_apogee", "NN_normalized_spectra.npz"),
        need_data("binspec_apogee", "apogee_wavelength.npz"),
    )
    fm = ForwardModel(network, macroturbulence=False, continuum="cheb:4", n_segments=3,
                      max_rv=100.0, max_vsini=40.0)
    assert fm.grid.direct and fm.grid.n_pieces == 3  # the three detector chips, used as they are
    with np.load(need_data("binspec_apogee", "spectrum_combined_2M13012770+5754582.npz")) as data:
        flux, error = data["spectrum"], data["spec_err"]
    chip = np.repeat([0, 1, 2], [2920, 2400, 1894])
    ivar = np.where(error < 0.1, 1.0 / error**2, 0.0)
    obs = fm.observation(network.wavelength, flux, ivar, segment=chip, outside="mask")
    modelled = np.asarray(obs.ivar) > 0
    assert 0.8 * (ivar > 0).sum() < modelled.sum() < (ivar > 0).sum()  # only chip edges lost
    labels = {"teff": 5500.0, "logg": 4.5, "feh": 0.0, "mgfe": 0.05, "vmacro_label": 5.0}
    theta = jnp.asarray(fm.pack({**labels, "rv": 0.0, "vsini": 0.0}))
    direct = np.asarray(network.predict(jnp.asarray(list(labels.values()))))
    np.testing.assert_allclose(np.asarray(fm.model_flux(theta, obs))[modelled], direct[modelled],
                               atol=1e-9)
    value, gradient = jax.jit(jax.value_and_grad(fm.loglike))(theta.at[-1].set(3.0), obs)
    assert np.isfinite(value) and np.all(np.isfinite(gradient))
    chi2 = np.sum(np.asarray(fm.residuals(theta, obs)) ** 2) / modelled.sum()
    assert chi2 < 50.0  # a sensible dwarf model is close to this real dwarf spectrum
