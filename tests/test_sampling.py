"""Posterior sampling: priors, the posterior density (against NumPyro's own), NUTS calibration
(small SBC), agreement with the Laplace covariance, prior response, outputs, resume, CLI."""

import json

import numpy as np
import pytest

from jaxpayne.fitting import Flags
from jaxpayne.forward.synthetic import SyntheticLineEmulator
from jaxpayne.io import Spectrum
from jaxpayne.sampling import Posterior, Prior, Sampler, as_prior, load_prior, sample, sample_spectra

SNR = 100.0


@pytest.fixture(scope="module")
def emulator():
    wave = np.exp(np.linspace(np.log(5000.0), np.log(5030.0), 360))
    return SyntheticLineEmulator(wave, n_lines=14, seed=5)


def obs_wave():
    return np.exp(np.linspace(np.log(5004.0), np.log(5026.0), 260))


def simulate(fm, theta, seed, snr=SNR):
    """Noisy spectra drawn from the exact forward model (the sampler's error model is exact)."""
    from jaxpayne.forward import make_observation

    rng = np.random.default_rng(seed)
    w = obs_wave()
    template = make_observation(w, np.ones_like(w))
    out = []
    for i, t in enumerate(np.atleast_2d(theta)):
        clean = np.asarray(fm.model_flux(np.asarray(t), template), np.float64)
        err = np.full_like(clean, 1.0 / snr)
        out.append(Spectrum.from_error(w, clean + rng.normal(size=clean.size) * err, err, id=f"s{i}"))
    return out


def batch_of(sampler, spectra):
    from jaxpayne.forward import pad_observations

    return pad_observations([sampler.observation(s.wavelength, s.flux, s.ivar) for s in spectra])


OPTIONS = dict(rv=True, max_rv=50.0, continuum="none", emulator_error=False, templates=32)


# ------------------------------------------------------------------------------------ priors
def test_prior_forms_and_errors(emulator, tmp_path):
    import numpyro.distributions as dist

    sampler = Sampler(emulator, chains=1, warmup=10, samples=10, **OPTIONS)
    space = sampler.space
    with pytest.raises(ValueError, match="64-bit"):
        Sampler(emulator, dtype="float64", fitter=sampler.fitter)
    with pytest.raises(ValueError, match="chain_method"):
        Sampler(emulator, chain_method="parallel", fitter=sampler.fitter)
    assert as_prior(None).is_uniform
    assert as_prior({"logg": dist.Normal(3.0, 0.1)}).distributions["logg"].loc == 3.0
    joint = as_prior(lambda v: -v["feh"] ** 2)
    assert joint.log_density is not None
    with pytest.raises(ValueError, match="unknown parameter"):
        Prior({"nope": dist.Normal(0, 1)}).check(space)
    with pytest.raises(TypeError):
        Prior({"logg": 3.0})
    # draws: truncated to the box, from the given distribution inside it
    import jax

    draws = Prior({"logg": dist.Normal(3.0, 0.1)}).sample(jax.random.PRNGKey(0), space, 2000)
    lo, hi = space.free_lower, space.free_upper
    assert np.all((draws >= lo) & (draws <= hi))
    j = space.index("logg")
    assert abs(draws[:, j].mean() - 3.0) < 0.01 and abs(draws[:, j].std() - 0.1) < 0.01
    with pytest.raises(ValueError, match="joint"):
        joint.sample(jax.random.PRNGKey(0), space, 10)
    # FILE.py:NAME in its three forms, and one-line errors
    path = tmp_path / "priors.py"
    path.write_text(
        "import numpyro.distributions as dist\n"
        "from jaxpayne.sampling import Prior\n"
        "tight = {'logg': dist.Normal(3.0, 0.05)}\n"
        "def alpha(values):\n    return -0.5 * ((values['feh'] + 0.5) / 0.1) ** 2\n"
        "def build():\n    return Prior({'teff': dist.Normal(5000.0, 100.0)})\n"
    )
    assert "logg" in load_prior(f"{path}:tight").distributions
    assert load_prior(f"{path}:alpha").log_density is not None
    assert "teff" in load_prior(f"{path}:build").distributions
    for spec, message in [(f"{path}:missing", "defines no 'missing'"), (str(path), "FILE.py:NAME"),
                          (f"{tmp_path}/none.py:x", "not found")]:
        with pytest.raises(ValueError, match=message):
            load_prior(spec)
    bad = tmp_path / "broken.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match="broken.py: cannot load the prior"):
        load_prior(f"{bad}:x")


# ------------------------------------------------------------------------------------ density
def test_density_matches_numpyro_and_gradients(emulator, x64):
    """ln p(z) equals NumPyro's potential of the generated model; gradients check in float64."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from jax.test_util import check_grads
    from numpyro.infer.util import potential_energy

    sampler = Sampler(emulator, chains=1, warmup=10, samples=10, **OPTIONS)
    fm, space = sampler.forward, sampler.space
    spectrum = simulate(fm, [5200.0, 3.0, -0.3, 7.0], seed=1)[0]
    obs = sampler.observation(spectrum.wavelength, spectrum.flux, spectrum.ivar)
    obs = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, obs)
    prior = Prior({"logg": dist.Normal(3.1, 0.2)}, log_density=lambda v: -0.5 * ((v["feh"] + 0.3) / 0.3) ** 2)
    for noise_scale in (False, True):
        post = Posterior(fm, prior, sampler.settings, noise_scale=noise_scale)
        theta = np.r_[5150.0, 2.9, -0.25, 7.2] if not noise_scale else np.r_[5150.0, 2.9, -0.25, 7.2, 1.3]
        z = post.space.to_unconstrained(jnp.asarray(theta))
        model = post.numpyro_model(obs)
        params = dict(zip(post.space.free_names, z))
        ours = post.log_density_unconstrained(z, obs)
        theirs = -potential_energy(model, (), {}, params)
        np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-10)
        # the physical density: prior + likelihood
        expected = (dist.Normal(3.1, 0.2).log_prob(theta[1]) - 0.5 * ((theta[2] + 0.3) / 0.3) ** 2
                    + post.log_likelihood(jnp.asarray(theta), obs))
        np.testing.assert_allclose(float(post.log_density(jnp.asarray(theta), obs)), float(expected), rtol=1e-12)
        check_grads(lambda zz: post.log_density_unconstrained(zz, obs), (z,), order=1, modes=["rev"],
                    atol=1e-4, rtol=1e-4)
    assert space.free_names == ("teff", "logg", "feh", "rv")
    # outside the rv window or at a non-finite value: −inf, never NaN
    post = Posterior(fm, None, sampler.settings)
    bad = obs._replace(flux=obs.flux.at[3].set(jnp.nan), ivar=obs.ivar.at[3].set(jnp.inf))
    assert np.isfinite(float(post.log_density_unconstrained(z[:4], bad)))  # masked, not NaN


# ------------------------------------------------------------------------------------ NUTS
@pytest.fixture(scope="module")
def calibration_run(emulator):
    """A small SBC: 24 mock stars drawn from the prior, sampled in one batched call."""
    import jax
    import numpyro.distributions as dist

    prior = Prior({"logg": dist.Normal(3.0, 0.4)})
    sampler = Sampler(emulator, prior=prior, chains=2, warmup=250, samples=250, seed=3,
                      chain_method="vectorized", **OPTIONS)
    space = sampler.space
    truth = prior.sample(jax.random.PRNGKey(11), space.replace(bounds={"rv": (-20.0, 20.0)}), 24)
    lo, hi = space.free_lower, space.free_upper
    truth = np.clip(truth, lo + 0.08 * (hi - lo), hi - 0.08 * (hi - lo))  # away from the box walls
    spectra = simulate(sampler.forward, truth, seed=12, snr=40.0)
    idata = sampler.sample(batch_of(sampler, spectra), ids=[s.id for s in spectra], progress=False)
    return sampler, truth, idata


def test_sbc_small_ranks_and_coverage(calibration_run):
    sampler, truth, idata = calibration_run
    names = sampler.space.free_names
    inside68 = inside95 = 0
    ranks = []
    for j, name in enumerate(names):
        draws = idata.posterior[name].values  # (chain, draw, star)
        flat = draws.reshape(-1, draws.shape[-1])
        lo68, hi68 = np.percentile(flat, [16, 84], axis=0)
        lo95, hi95 = np.percentile(flat, [2.5, 97.5], axis=0)
        inside68 += np.sum((truth[:, j] >= lo68) & (truth[:, j] <= hi68))
        inside95 += np.sum((truth[:, j] >= lo95) & (truth[:, j] <= hi95))
        ranks.append(np.mean(flat < truth[:, j], axis=0))
    n = truth.size
    # nominal rates within 3 binomial standard errors
    assert abs(inside68 / n - 0.68) < 3 * np.sqrt(0.68 * 0.32 / n), inside68 / n
    assert abs(inside95 / n - 0.95) < 3 * np.sqrt(0.95 * 0.05 / n) + 1 / n, inside95 / n
    from scipy.stats import kstest

    assert kstest(np.concatenate(ranks), "uniform").pvalue > 0.001


def test_inference_data_layout_and_diagnostics(calibration_run):
    from jaxpayne.sampling import summarize

    sampler, truth, idata = calibration_run
    post = idata.posterior
    assert post["teff"].dims == ("chain", "draw", "star")
    assert post["teff"].shape == (2, 250, 24)
    assert list(post["star"].values[:2]) == ["s0", "s1"]
    for name in ("diverging", "n_steps", "tree_depth", "step_size", "acceptance_rate", "energy", "lp"):
        assert idata.sample_stats[name].dims == ("chain", "draw", "star"), name
    assert idata.observed_data["flux"].dims == ("star", "pixel")
    assert idata.constant_data["fit_theta"].shape == (24, 4)
    attrs = post.attrs
    assert 0 < attrs["lockstep_efficiency"] <= 1 and attrs["gradient_evaluations"] > 24 * 2 * 500
    assert json.loads(attrs["setup"])["chains"] == 2
    rows = summarize(idata)
    assert len(rows) == 24
    r_hat = np.array([[r[f"{n}_r_hat"] for n in sampler.space.free_names] for r in rows])
    ess = np.array([[r[f"{n}_ess_bulk"] for n in sampler.space.free_names] for r in rows])
    assert np.median(r_hat) < 1.01 and np.median(ess) > 200
    div = np.mean([r["divergence_rate"] for r in rows])
    assert div < 0.01
    row = rows[0]
    j = 0
    draws = post["teff"].values[:, :, 0].reshape(-1)
    assert row["teff_mean"] == pytest.approx(draws.mean()) and row["teff_p50"] == pytest.approx(np.median(draws))
    assert np.asarray(row["covariance"]).shape == (4, 4)
    assert row["covariance"][j, j] == pytest.approx(draws.var(ddof=1), rel=1e-6)


def test_posterior_sd_matches_laplace_at_high_snr(emulator):
    sampler = Sampler(emulator, chains=4, warmup=300, samples=500, seed=1, **OPTIONS)
    truth = np.array([[5300.0, 3.2, -0.4, 4.0], [4800.0, 2.6, 0.1, -9.0]])
    spectra = simulate(sampler.forward, truth, seed=4, snr=400.0)
    idata = sampler.sample(batch_of(sampler, spectra), progress=False)
    laplace = np.sqrt(np.diagonal(idata.constant_data["fit_covariance"].values, axis1=1, axis2=2))
    for j, name in enumerate(sampler.space.free_names):
        sd = idata.posterior[name].values.reshape(-1, 2).std(axis=0)
        np.testing.assert_allclose(sd, laplace[:, j], rtol=0.10, err_msg=name)


def test_tight_prior_moves_the_posterior(emulator):
    """A tight logg prior combines with the likelihood as Gaussians do (1/σ² add)."""
    import numpyro.distributions as dist

    truth = np.array([5100.0, 3.0, -0.2, 2.0])
    base = Sampler(emulator, chains=2, warmup=200, samples=300, seed=2, **OPTIONS)
    spectra = simulate(base.forward, truth, seed=7, snr=60.0)
    free = base.sample(batch_of(base, spectra), progress=False)
    sd_free = float(free.posterior["logg"].std())
    mean_free = float(free.posterior["logg"].mean())
    centre, width = mean_free + 2 * sd_free, 0.5 * sd_free
    tight = Sampler(emulator, prior={"logg": dist.Normal(centre, width)}, chains=2, warmup=200, samples=300,
                    seed=2, **OPTIONS)
    post = tight.sample(batch_of(tight, spectra), progress=False)
    sd = float(post.posterior["logg"].std())
    mean = float(post.posterior["logg"].mean())
    expect_sd = (sd_free**-2 + width**-2) ** -0.5
    expect_mean = expect_sd**2 * (mean_free / sd_free**2 + centre / width**2)
    assert sd == pytest.approx(expect_sd, rel=0.2)
    assert mean == pytest.approx(expect_mean, abs=0.3 * sd_free)


def test_sequential_chains_and_one_liner(emulator):
    """``chain_method="sequential"`` and the ``sample`` one-liner on a Spectrum, with ln L."""
    base = Sampler(emulator, chains=1, warmup=10, samples=10, **OPTIONS)
    spectrum = simulate(base.forward, [5000.0, 3.0, 0.0, 0.0], seed=9)[0]
    ivar = np.zeros_like(spectrum.ivar)
    ivar[100:106] = spectrum.ivar[100:106]
    few = Spectrum(spectrum.wavelength, spectrum.flux, ivar, id="few")  # too few pixels: no posterior
    idata = sample(emulator, [spectrum, few], chains=2, warmup=120, samples=120, progress=False,
                   chain_method="sequential", log_likelihood=True, noise_scale=True, **OPTIONS)
    from jaxpayne.sampling import summarize

    rows = summarize(idata)
    assert rows[1]["flags"] & int(Flags.FAILED) and rows[1]["flags"] & int(Flags.FEW_PIXELS)
    assert np.all(np.isnan(idata.posterior["teff"].values[:, :, 1]))
    assert not rows[0]["flags"] & int(Flags.FAILED)
    idata = idata.isel(star=[0])
    assert idata.posterior["rv"].shape == (2, 120, 1)
    # the simulated errors are right: the noise scale is 1 within its posterior width (~1/√(2n))
    assert abs(float(idata.posterior["noise_scale"].mean()) - 1.0) < 4 / np.sqrt(2 * 260)
    assert list(idata.posterior["star"].values) == ["s0"]
    assert idata.posterior.attrs["lockstep_efficiency"] == 1.0
    ll = idata.log_likelihood["spectrum"].values
    assert ll.shape == (2, 120, 1) and np.all(np.isfinite(ll))
    assert abs(float(idata.posterior["rv"].mean())) < 0.5


# ------------------------------------------------------------------------------------ runs
def test_sample_spectra_resume_failures_and_netcdf(emulator, tmp_path, monkeypatch):
    import arviz as az

    from jaxpayne.io import ReadFailure

    base = Sampler(emulator, chains=1, warmup=10, samples=10, **OPTIONS)
    spectra = simulate(base.forward, [[5000.0, 3.0, 0.0, 1.0], [5200.0, 3.3, -0.2, -3.0],
                                      [4900.0, 2.8, 0.1, 5.0]], seed=3)
    import dataclasses

    spectra = [dataclasses.replace(s, source=f"{name}.fits") for s, name in zip(spectra, "abc")]
    outside = Spectrum.from_error(np.linspace(6000, 6010, 50), np.ones(50), np.full(50, 0.01), id="far",
                                  source="far.fits")
    stream = [spectra[0], ReadFailure("junk.fits", "junk.fits: not a FITS file"), spectra[1], outside, spectra[2]]
    out, summary = tmp_path / "post.nc", tmp_path / "summary.ecsv"
    options = dict(chains=2, warmup=60, samples=60, batch_size=2, progress=False, **OPTIONS)
    calls = []
    real = Sampler.sample

    def interrupted(self, *args, **kwargs):
        calls.append(kwargs.get("ids"))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Sampler, "sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample_spectra(emulator, stream, out=out, summary=summary, **options)
    assert not out.exists() and (tmp_path / "post.nc.parts").exists()
    with pytest.raises(FileExistsError):
        sample_spectra(emulator, stream, out=out, **options)
    with pytest.raises(ValueError, match="other settings"):
        sample_spectra(emulator, stream, out=out, resume=True, **{**options, "samples": 61})
    calls.clear()
    monkeypatch.setattr(Sampler, "sample", real)
    reported = []
    table = sample_spectra(emulator, stream, out=out, summary=summary, resume=True,
                           report=lambda source, message: reported.append(source), **options)
    assert not (tmp_path / "post.nc.parts").exists()
    idata = az.from_netcdf(out)
    assert sorted(idata.posterior["star"].values) == ["s0", "s1", "s2"]
    assert idata.posterior["teff"].shape == (2, 60, 3)
    by_id = {r["id"]: r for r in table}
    assert set(by_id) == {"s0", "s1", "s2", "", "far"}
    assert by_id[""]["flags"] == int(Flags.FAILED) and by_id[""]["source"] == "junk.fits"
    assert by_id["far"]["flags"] == int(Flags.FAILED) and "outside the model" in by_id["far"]["message"]
    assert "far.fits" in reported
    for i in ("s0", "s1", "s2"):
        assert np.isfinite(by_id[i]["teff_mean"]) and not by_id[i]["flags"] & int(Flags.FAILED)
    from astropy.table import Table

    written = Table.read(summary)
    assert len(written) == 5 and "teff_r_hat" in written.colnames and written.meta["PARAMS"] == "teff,logg,feh,rv"


def test_cli_sample_with_prior(tmp_path, capsys):
    from jaxpayne.cli import main
    from jaxpayne.grids import TrainingSet

    rng = np.random.default_rng(0)
    wave = np.linspace(5000, 5010, 60)
    labels = rng.uniform(0, 1, (200, 2))
    flux = 1 - (0.2 + 0.4 * labels[:, :1]) * np.exp(-0.5 * ((wave - 5004 - 2 * labels[:, 1:]) / 0.4) ** 2)
    grid = TrainingSet(wave, labels, flux, ("teff", "feh")).save(tmp_path / "grid.npz")
    assert main(["train", str(grid), "--out", str(tmp_path / "m.h5"), "--epochs", "200", "--hidden", "16,16",
                 "--quiet"]) == 0
    from jaxpayne.model import load_model

    model = load_model(tmp_path / "m.h5")
    truth = model.predict([[0.5, 0.5]])[0]
    err = np.full(wave.size, 0.01)
    np.savez(tmp_path / "star.npz", wavelength=wave, flux=truth + rng.normal(size=wave.size) * err, error=err)
    (tmp_path / "prior.py").write_text("import numpyro.distributions as dist\nprior = {'feh': dist.Normal(0.5, 0.1)}\n")
    capsys.readouterr()
    argv = ["sample", "--model", str(tmp_path / "m.h5"), str(tmp_path / "star.npz"), "--out", str(tmp_path / "p.nc"),
            "--summary", str(tmp_path / "s.ecsv"), "--no-rv", "--continuum", "none", "--no-emulator-error",
            "--chains", "2", "--warmup", "50", "--samples", "50", "--prior", f"{tmp_path / 'prior.py'}:prior",
            "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "wrote posteriors of 1 spectra" in capsys.readouterr().out
    import arviz as az

    idata = az.from_netcdf(tmp_path / "p.nc")
    assert "Normal" in idata.posterior.attrs["prior"]
    code = main(argv[:-3] + ["--prior", f"{tmp_path / 'prior.py'}:missing", "--resume", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "defines no 'missing'" in err


def test_float64_on_request(emulator, x64):
    base = Sampler(emulator, chains=1, warmup=10, samples=10, **OPTIONS)
    spectrum = simulate(base.forward, [5000.0, 3.0, 0.0, 0.0], seed=9)[0]
    idata = sample(emulator, spectrum, chains=1, warmup=30, samples=30, progress=False, dtype="float64",
                   chain_method="sequential", **OPTIONS)
    assert json.loads(idata.posterior.attrs["setup"])["dtype"] == "float64"
    assert np.all(np.isfinite(idata.posterior["teff"].values))
    assert idata.sample_stats["step_size"].dtype == np.float64
