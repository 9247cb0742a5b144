"""Cramér–Rao bounds and gradient spectra: the Fisher matrix against finite differences, the
algebra of bounds (S/N scaling, Schur complements, prior curvature, information shares), flags
for what a spectrum cannot constrain, the fitter's efficiency, set-ups, the Cannon emulator, CLI."""

import numpy as np
import pytest

from jaxpayne.forward import LikelihoodSettings, forward_model_from_options
from jaxpayne.forward.synthetic import SyntheticLineEmulator
from jaxpayne.information import (SETUPS, bounds_table, crlb, crlb_vs_resolution, gradient_spectra,
                                  information_shares, instrument_wavelength, mock_observation, pixel_snr,
                                  ranked_pixels)

NO_EMU = LikelihoodSettings(emulator_error=False)
TRUTH = {"teff": 5200.0, "logg": 3.0, "feh": -0.3, "rv": 1.0, "vsini": 6.0}
RANGE = [(5004.0, 5026.0)]


@pytest.fixture(scope="module")
def emulator():
    return SyntheticLineEmulator(np.exp(np.linspace(np.log(5000.0), np.log(5030.0), 1500)), n_lines=14, seed=5)


def forward(emulator, **options):
    kwargs = dict(rv=True, vsini=True, resolution=20_000.0, continuum="cheb:2", max_rv=20.0, max_vsini=30.0)
    return forward_model_from_options(emulator, **{**kwargs, **options})


def star(fm, snr=100.0, truth=TRUTH, dtype=np.float64):
    wave, segment = instrument_wavelength(RANGE, 20_000.0)
    return mock_observation(fm, truth, wave, snr, segment=segment, dtype=dtype)


def test_fisher_with_nuisances_and_prior_matches_finite_differences(emulator, x64):
    import numpyro.distributions as dist

    import jax

    from jaxpayne.sampling import Prior

    fm = forward(emulator)
    obs = star(fm)
    prior = Prior({"logg": dist.Normal(3.1, 0.05)},
                  log_density=lambda v: -0.5 * ((v["feh"] + 0.1 * v["logg"]) / 0.05) ** 2)
    bounds = crlb(fm, TRUTH, obs, settings=NO_EMU, prior=prior)
    theta = fm.pack(TRUTH)
    steps = np.array([1.0, 2e-3, 2e-3, 0.02, 0.02])
    jac = np.stack([(np.asarray(fm.residuals(theta + np.eye(5)[j] * h, obs, settings=NO_EMU))
                     - np.asarray(fm.residuals(theta - np.eye(5)[j] * h, obs, settings=NO_EMU))) / (2 * h)
                    for j, h in enumerate(steps)], axis=1)
    expected = jac.T @ jac
    # the prior's curvature by finite differences of ln P
    names = fm.param_names

    jitted = jax.jit(lambda t: prior.log_prob({n: t[i] for i, n in enumerate(names)}))

    def log_prior(t):
        return float(jitted(t))

    hessian = np.zeros((5, 5))
    for i in range(5):
        for k in range(5):
            ei, ek = np.eye(5)[i] * steps[i], np.eye(5)[k] * steps[k]
            hessian[i, k] = (log_prior(theta + ei + ek) - log_prior(theta + ei - ek) - log_prior(theta - ei + ek)
                             + log_prior(theta - ei - ek)) / (4 * steps[i] * steps[k])
    expected = expected - hessian
    np.testing.assert_allclose(bounds.fisher, expected, rtol=1e-2, atol=1e-6 * np.abs(expected).max())
    np.testing.assert_allclose(bounds.fisher_prior[1, 1], 1 / 0.05**2 + 0.1**2 / 0.05**2, rtol=1e-9)


def test_bound_algebra(emulator, x64):
    fm = forward(emulator)
    b100 = crlb(fm, TRUTH, star(fm, 100.0), settings=NO_EMU)
    b400 = crlb(fm, TRUTH, star(fm, 400.0), settings=NO_EMU)
    assert b100.status == ("ok",) * 5
    np.testing.assert_allclose(b100.sigma / b400.sigma, 4.0, rtol=1e-9)  # σ ∝ 1/(S/N)
    # marginal bound = the Schur complement; the conditional one is never larger
    F = b100.fisher
    for j in range(5):
        rest = [k for k in range(5) if k != j]
        schur = F[j, j] - F[j, rest] @ np.linalg.solve(F[np.ix_(rest, rest)], F[rest, j])
        assert b100.sigma[j] == pytest.approx(schur**-0.5, rel=1e-8)
        assert b100.sigma_conditional[j] <= b100.sigma[j]
    np.testing.assert_allclose(np.diag(b100.correlation), 1.0)
    # a nuisance parameter made known can only tighten the labels' bounds
    fixed_rv = forward(emulator, rv=False, fixed={"rv": 1.0})
    no_rv = {k: v for k, v in TRUTH.items() if k != "rv"}
    b_fixed = crlb(fixed_rv, no_rv, star(fixed_rv, 100.0, truth=no_rv), settings=NO_EMU)
    assert np.all(b_fixed.sigma[:3] <= b100.sigma[:3] * (1 + 1e-9))
    # free continuum coefficients marginalised in F ≡ the continuum the likelihood fits itself
    # (linear nuisance parameters: marginalising = projecting out)
    profiled = forward(emulator, continuum="cheb:1")
    free_cont = forward(emulator, continuum="cheb:1:free")
    b_profiled = crlb(profiled, TRUTH, star(profiled, 100.0), settings=NO_EMU)
    b_free_cont = crlb(free_cont, TRUTH, star(free_cont, 100.0), settings=NO_EMU)
    assert b_free_cont.names[-2:] == ("cont_s0_c0", "cont_s0_c1")
    np.testing.assert_allclose(b_free_cont.sigma[:5], b_profiled.sigma, rtol=1e-6)
    # R as a nuisance parameter: named, and it can only widen the others' bounds
    with_r = forward(emulator, fit_resolution=True, continuum="cheb:1")
    b_r = crlb(with_r, TRUTH, star(with_r, 100.0), settings=NO_EMU)
    assert b_r.names[-1] == "R" and set(b_r.status) == {"ok"}
    assert np.all(b_r.sigma[:5] >= b_profiled.sigma * (1 - 1e-9))
    # information shares sum to one; |J̃|² is the marginal information
    shares = information_shares(b100)
    np.testing.assert_allclose(np.nansum(shares, axis=0), 1.0, rtol=1e-9)
    table = ranked_pixels(b100, top=5)
    assert len(table) == 25 and np.all(np.diff(table["share"][:5]) <= 0)
    assert table["cumulative"][4] == pytest.approx(np.sum(np.sort(shares[:, 0])[::-1][:5]))
    # a Gaussian prior of width w adds 1/w² to the conditional information
    b_prior = crlb(fm, TRUTH, star(fm, 100.0), settings=NO_EMU, prior={"logg": __import__(
        "numpyro.distributions", fromlist=["Normal"]).Normal(3.0, 0.01)})
    assert b_prior.sigma_conditional[1] ** -2 == pytest.approx(b100.sigma_conditional[1] ** -2 + 1e4, rel=1e-9)
    rows = bounds_table(b100, {"SNR": 100.0})
    assert list(rows["name"]) == list(fm.param_names) and rows.meta["SNR"] == 100.0
    assert rows["corr_teff"][0] == pytest.approx(1.0)


def test_gradient_spectrum_is_the_model_derivative(emulator, x64):
    """With no continuum step the gradient spectrum is ∂(model flux)/∂θ; normalised, ×σ."""
    fm = forward(emulator, continuum="none")
    obs = star(fm)
    bounds = crlb(fm, TRUTH, obs, settings=NO_EMU)
    raw, scaled = gradient_spectra(bounds, normalize=False), gradient_spectra(bounds)
    theta = fm.pack(TRUTH)
    h = 1e-3
    fd = (np.asarray(fm.model_flux(theta + [0, 0, h, 0, 0], obs))
          - np.asarray(fm.model_flux(theta - [0, 0, h, 0, 0], obs))) / (2 * h)
    np.testing.assert_allclose(raw[:, 2], fd, rtol=1e-5, atol=1e-7 * np.abs(fd).max())
    np.testing.assert_allclose(scaled, raw * bounds.sigma, rtol=1e-12)


def test_what_a_spectrum_cannot_constrain_is_flagged(emulator, x64):
    fm = forward(emulator)
    zero = crlb(fm, {**TRUTH, "vsini": 0.0}, star(fm, truth={**TRUTH, "vsini": 0.0}), settings=NO_EMU)
    assert zero.status[4] == "no information" and np.isnan(zero.sigma[4]) and np.isinf(zero.sigma_raw[4])
    assert zero.status[:4] == ("ok",) * 4  # a zero column leaves the others' bounds alone
    with pytest.raises(ValueError, match="logg = 7 lies outside the model's box"):
        crlb(fm, {**TRUTH, "logg": 7.0}, star(fm))
    noisy = crlb(fm, TRUTH, star(fm, 0.05), settings=NO_EMU)
    assert noisy.status[0] == "unconstrained" and np.isnan(noisy.sigma[0]) and noisy.sigma_raw[0] > 3000
    # two labels that enter only through their sum: a degenerate direction
    degenerate = forward(SumEmulator(), resolution=None, vsini=False, continuum="none")
    wave = np.linspace(5002.0, 5008.0, 300)
    obs = mock_observation(degenerate, {"a": 0.2, "b": 0.1}, wave, 100.0, dtype=np.float64)
    bounds = crlb(degenerate, {"a": 0.2, "b": 0.1}, obs, settings=NO_EMU)
    assert bounds.status == ("degenerate", "degenerate", "ok") and np.all(np.isnan(bounds.sigma[:2]))
    assert np.isfinite(bounds.sigma[2])
    rows = bounds_table(bounds)
    assert list(rows["status"]) == ["degenerate", "degenerate", "ok"]


class SumEmulator:
    """One line whose depth depends on a + b only."""

    label_names = ("a", "b")
    medium = "vacuum"
    bounds = (np.array([0.0, 0.0]), np.array([1.0, 1.0]))
    wavelength = np.linspace(5000.0, 5010.0, 500)
    emulator_error = None

    def predict(self, labels):
        import jax.numpy as jnp

        labels = jnp.asarray(labels)
        depth = 0.3 + 0.4 * (labels[..., 0] + labels[..., 1])
        return 1.0 - depth[..., None] * jnp.exp(-0.5 * ((jnp.asarray(self.wavelength) - 5005.0) / 0.3) ** 2)


def test_fitter_reaches_the_bound(emulator):
    """Best fits of many noise realisations scatter as the bound says; the Laplace errors agree."""
    from jaxpayne.fitting import Fitter
    from jaxpayne.forward import pad_observations

    fitter = Fitter(emulator, rv=True, max_rv=20.0, continuum="cheb:2", emulator_error=False, templates=32,
                    resolution=20_000.0)
    truth = {k: v for k, v in TRUTH.items() if k != "vsini"}
    clean = star(fitter.forward, 100.0, truth=truth, dtype=None)
    bounds = crlb(fitter.forward, truth, clean, settings=NO_EMU)
    rng = np.random.default_rng(3)
    n = 128
    flux, sigma = np.asarray(clean.flux), np.asarray(clean.ivar) ** -0.5
    batch = pad_observations([clean._replace(flux=flux + rng.normal(size=flux.size) * sigma) for _ in range(n)])
    result = fitter.fit(batch)
    assert not np.any(result.flags & 1)
    scatter = result.theta.std(axis=0, ddof=1)
    laplace = np.sqrt(np.median(np.diagonal(result.covariance, axis1=1, axis2=2), axis=0))
    # 128 realisations: the sample sd has a 6 % standard error
    np.testing.assert_allclose(scatter, bounds.sigma, rtol=0.2)
    np.testing.assert_allclose(laplace, bounds.sigma, rtol=0.05)
    bias = np.abs(result.theta.mean(axis=0) - fitter.forward.pack(truth)) / (bounds.sigma / np.sqrt(n))
    assert np.all(bias < 4)


def test_setups_and_resolution_at_fixed_exposure(emulator, x64):
    wave, segment = instrument_wavelength([(5000.0, 5010.0), (5020.0, 5030.0)], 10_000.0, sampling=2.0)
    step = np.diff(np.log(wave[segment == 0]))
    np.testing.assert_allclose(step, 1 / 20_000.0, rtol=1e-9)
    assert set(segment.tolist()) == {0, 1}
    apogee = SETUPS["apogee"].wavelength()
    assert np.unique(apogee[1]).size == 3 and 7000 < apogee[0].size < 8000
    np.testing.assert_allclose(pixel_snr(wave, 100.0, "angstrom", segment), 100.0 * np.sqrt(wave / 20_000.0),
                               rtol=1e-4)
    with pytest.raises(ValueError, match="increasing"):
        instrument_wavelength([(5010.0, 5000.0)], 1000.0)
    curves = crlb_vs_resolution(emulator, {"teff": 5200.0, "logg": 3.0, "feh": -0.3}, [3_000.0, 10_000.0, 30_000.0],
                                ranges=RANGE, snr=300.0, rv=False, continuum="cheb:1", settings=NO_EMU,
                                dtype=np.float64)
    sigma = np.array([c.sigma for c in curves])
    assert np.all(np.diff(sigma, axis=0) < 0)  # narrow lines: resolution buys precision
    assert curves[0].n_pixels < curves[-1].n_pixels


def test_cannon_emulator_matches_numpy_and_has_exact_gradients(need_data, x64):
    import jax
    from jax.test_util import check_grads

    from jaxpayne import load_model
    from jaxpayne.model import ModelFileError

    path = need_data("doppler_cannon", "coolstars_cubic_cannon.npz")
    model = load_model(path, wavelength_range=(6540.0, 6590.0))
    raw = np.load(path)
    labels = np.array([[5772.0, 4.44, 0.0], [4500.0, 2.0, -1.0]])
    x = (labels[:, None, :] - raw["fiducial"]) / raw["scale"]
    design = np.prod(x ** raw["powers"][None], axis=-1)
    keep = (raw["wavelength"] >= 6540.0) & (raw["wavelength"] <= 6590.0)
    reference = design @ raw["theta"][keep].astype(np.float64).T
    np.testing.assert_allclose(np.asarray(model.predict(labels)), reference, rtol=1e-6, atol=1e-6)
    assert model.medium == "air" and model.label_names == ("teff", "logg", "feh")
    assert abs(model.wavelength[np.argmin(np.asarray(model.predict(labels[0])))] - 6562.80) < 0.1  # Hα in air
    check_grads(lambda t: model.predict(t)[::50], (np.array([5000.0, 3.0, -0.5]),), order=2, modes=["fwd", "rev"],
                eps=1e-3)
    np.testing.assert_allclose(model.emulator_error, np.sqrt(raw["s2"][keep]), rtol=1e-6)
    with pytest.raises(ModelFileError, match="no pixels"):
        load_model(path, wavelength_range=(1000.0, 1100.0))
    # it is an emulator like any other: a forward model and its bounds
    fm = forward_model_from_options(model, rv=False, resolution=20_000.0, continuum="filter:10",
                                    obs_wavelength_range=(6550.0, 6580.0))
    wave = np.linspace(6552.0, 6578.0, 800)
    obs = mock_observation(fm, {"teff": 5772.0, "logg": 4.44, "feh": 0.0}, wave, 100.0, medium="air",
                           dtype=np.float64)
    assert crlb(fm, {"teff": 5772.0, "logg": 4.44, "feh": 0.0}, obs).status == ("ok",) * 3
    assert model.kind == "cannon" and jax.numpy.isfinite(model.predict(labels)).all()


def test_cli_crlb(tmp_path, capsys):
    from astropy.table import Table

    from jaxpayne.cli import main
    from jaxpayne.grids import TrainingSet

    rng = np.random.default_rng(0)
    wave = np.linspace(5000, 5010, 200)
    labels = rng.uniform(0, 1, (300, 2))
    flux = 1 - (0.2 + 0.4 * labels[:, :1]) * np.exp(-0.5 * ((wave - 5004 - 2 * labels[:, 1:]) / 0.3) ** 2)
    grid = TrainingSet(wave, labels, flux, ("teff", "feh")).save(tmp_path / "grid.npz")
    assert main(["train", str(grid), "--out", str(tmp_path / "m.h5"), "--epochs", "150", "--emulator", "mlp", "--hidden", "16,16",
                 "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "bounds.ecsv"
    argv = ["crlb", "--model", str(tmp_path / "m.h5"), "--labels", "teff=0.5,feh=0.5", "--snr", "50",
            "--resolution", "20000", "--wavelength-range", "5002-5008", "--rv", "--continuum", "cheb:1", "--no-emulator-error",
            "--out", str(out), "--gradients", str(tmp_path / "g.ecsv"), "--plot", str(tmp_path / "g.png")]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "sigma" in printed and "wrote" in printed
    table = Table.read(out)
    assert list(table["name"]) == ["teff", "feh", "rv"] and table.meta["SNR"] == 50.0
    assert np.all(table["sigma"] > 0) and (tmp_path / "g.png").stat().st_size > 1000
    assert set(Table.read(tmp_path / "g.ecsv")["parameter"]) == {"teff", "feh", "rv"}
    # S/N 4x higher: bounds 4x smaller
    assert main(argv[:5] + ["--snr", "200"] + argv[7:-6] + ["--out", str(tmp_path / "b2.ecsv")]) == 0
    np.testing.assert_allclose(table["sigma"] / Table.read(tmp_path / "b2.ecsv")["sigma"], 4.0, rtol=1e-6)
    assert main(argv[:-6] + ["--out", str(tmp_path / "r.ecsv"), "--plot", str(tmp_path / "r.png"), "--plot-kind",
                             "resolution", "--resolutions", "5000,20000"]) == 0
    capsys.readouterr()
    code = main(["crlb", "--model", str(tmp_path / "m.h5"), "--labels", "teff=0.5,nope=1", "--snr", "50",
                 "--out", str(tmp_path / "x.ecsv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope" in err
    code = main(["crlb", "--model", str(tmp_path / "m.h5"), "--snr", "50", "--wavelength-range", "6000-6100",
                 "--out", str(tmp_path / "x.ecsv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no pixel" in err
