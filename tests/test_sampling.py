"""Posterior sampling: priors, the posterior density (against NumPyro's own), NUTS calibration
(small SBC), agreement with the Laplace covariance, prior response."""

import json

import numpy as np
import pytest

from _sampling_setup import batch_of, emulator, fitter, simulate  # noqa: F401 (fixtures)
from jaxpayne.sampling import Posterior, Prior, Sampler, as_prior, load_prior


# ------------------------------------------------------------------------------------ priors
def test_prior_forms_and_errors(emulator, fitter, tmp_path):
    import numpyro.distributions as dist

    sampler = Sampler(emulator, chains=1, warmup=10, samples=10, fitter=fitter)
    space = sampler.space
    with pytest.raises(ValueError, match="64-bit"):
        Sampler(emulator, dtype="float64", fitter=sampler.fitter)
    with pytest.raises(ValueError, match="chain_method"):
        Sampler(emulator, chain_method="threads", fitter=sampler.fitter)
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
def test_density_matches_numpyro_and_gradients(emulator, fitter, x64):
    """ln p(z) equals NumPyro's potential of the generated model; gradients check in float64."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from jax.test_util import check_grads
    from numpyro.infer.util import potential_energy

    sampler = Sampler(emulator, chains=1, warmup=10, samples=10, fitter=fitter)
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
def calibration_run(emulator, fitter):
    """A small SBC: 16 mock stars drawn from the prior, sampled in one batched call."""
    import jax
    import numpyro.distributions as dist

    prior = Prior({"logg": dist.Normal(3.0, 0.4)})
    sampler = Sampler(emulator, prior=prior, chains=2, warmup=200, samples=200, seed=3,
                      chain_method="vectorized", fitter=fitter)
    space = sampler.space
    truth = prior.sample(jax.random.PRNGKey(11), space.replace(bounds={"rv": (-20.0, 20.0)}), 16)
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
    assert post["teff"].shape == (2, 200, 16)
    assert list(post["star"].values[:2]) == ["s0", "s1"]
    for name in ("diverging", "n_steps", "tree_depth", "step_size", "acceptance_rate", "energy", "lp"):
        assert idata.sample_stats[name].dims == ("chain", "draw", "star"), name
    assert idata.observed_data["flux"].dims == ("star", "pixel")
    assert idata.constant_data["fit_theta"].shape == (16, 4)
    attrs = post.attrs
    assert 0 < attrs["lockstep_efficiency"] <= 1 and attrs["gradient_evaluations"] > 16 * 2 * 400
    assert json.loads(attrs["setup"])["chains"] == 2
    rows = summarize(idata)
    assert len(rows) == 16
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


def test_posterior_sd_matches_laplace_at_high_snr(emulator, fitter):
    sampler = Sampler(emulator, chains=4, warmup=300, samples=500, seed=1, fitter=fitter)
    truth = np.array([[5300.0, 3.2, -0.4, 4.0], [4800.0, 2.6, 0.1, -9.0]])
    spectra = simulate(sampler.forward, truth, seed=4, snr=400.0)
    idata = sampler.sample(batch_of(sampler, spectra), progress=False)
    laplace = np.sqrt(np.diagonal(idata.constant_data["fit_covariance"].values, axis1=1, axis2=2))
    for j, name in enumerate(sampler.space.free_names):
        sd = idata.posterior[name].values.reshape(-1, 2).std(axis=0)
        np.testing.assert_allclose(sd, laplace[:, j], rtol=0.10, err_msg=name)


def test_tight_prior_moves_the_posterior(emulator, fitter):
    """A tight logg prior combines with the likelihood as Gaussians do (1/σ² add): the likelihood's
    own width and centre are the fit's Laplace ones (the posterior sd matches them, tested above)."""
    import numpyro.distributions as dist

    truth = np.array([5100.0, 3.0, -0.2, 2.0])
    spectra = simulate(fitter.forward, truth, seed=7, snr=60.0)
    free = fitter.fit(batch_of(fitter, spectra))
    j = fitter.space.index("logg")
    sd_free, mean_free = float(np.sqrt(free.covariance[0, j, j])), float(free.theta[0, j])
    centre, width = mean_free + 2 * sd_free, 0.5 * sd_free
    tight = Sampler(emulator, prior={"logg": dist.Normal(centre, width)}, chains=2, warmup=200, samples=300,
                    seed=2, fitter=fitter)
    post = tight.sample(batch_of(tight, spectra), progress=False)
    sd = float(post.posterior["logg"].std())
    mean = float(post.posterior["logg"].mean())
    expect_sd = (sd_free**-2 + width**-2) ** -0.5
    expect_mean = expect_sd**2 * (mean_free / sd_free**2 + centre / width**2)
    assert sd == pytest.approx(expect_sd, rel=0.2)
    assert mean == pytest.approx(expect_mean, abs=0.3 * sd_free)
