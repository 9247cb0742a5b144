"""Likelihood terms beside the spectrum's (issue #15): the seismic scaling relations against the
Sun, gradients, and posteriors that shrink as the terms' Fisher information predicts."""

import numpy as np
import pytest

from _sampling_setup import OPTIONS, batch_of, emulator, simulate  # noqa: F401 (fixture)


def test_seismic_scaling_relations_reproduce_the_sun_and_scale():
    import jax.numpy as jnp

    from jaxpayne.sampling.terms import DNU_SUN, LOGG_SUN, NUMAX_SUN, TEFF_SUN, Seismic

    term = Seismic(dnu_correction=(1.0, 0.02))
    sun = {"teff": jnp.asarray(TEFF_SUN), "logg": jnp.asarray(LOGG_SUN), "mass": jnp.asarray(1.0),
           "f_dnu": jnp.asarray(1.0)}
    out = term.predict(sun)
    np.testing.assert_allclose([float(out["numax"]), float(out["dnu"])], [NUMAX_SUN, DNU_SUN], rtol=1e-6)
    # a red giant (Teff 4800 K, log g 2.5, 1.2 Msun): numax ∝ g Teff^-1/2, dnu ∝ sqrt(M / R^3)
    giant = {"teff": jnp.asarray(4800.0), "logg": jnp.asarray(2.5), "mass": jnp.asarray(1.2), "f_dnu": jnp.asarray(1.0)}
    g = 10 ** (2.5 - LOGG_SUN)
    radius = np.sqrt(1.2 / g)
    out = term.predict(giant)
    np.testing.assert_allclose(float(out["numax"]), NUMAX_SUN * g * (4800.0 / TEFF_SUN) ** -0.5, rtol=1e-6)
    np.testing.assert_allclose(float(out["dnu"]), DNU_SUN * np.sqrt(1.2 / radius**3), rtol=1e-6)
    # the mass a term starts from: the scaling-relation mass of the measured pair
    start = term.start({"teff": np.array([4800.0]), "logg": np.array([2.4])},
                       {"numax": np.array([float(out["numax"])]), "dnu": np.array([float(out["dnu"])])})
    np.testing.assert_allclose(start["mass"], [1.2], rtol=1e-6)
    with pytest.raises(ValueError, match="numax, dnu or both"):
        Seismic(numax=False, dnu=False)


def test_term_gradients_and_missing_data(x64):
    import jax.numpy as jnp
    from jax.test_util import check_grads

    from jaxpayne.sampling.terms import LabelMeasurement, Seismic

    term = Seismic()
    data = {"numax": jnp.asarray(35.0), "numax_err": jnp.asarray(0.7), "dnu": jnp.asarray(4.2),
            "dnu_err": jnp.asarray(0.05)}

    def f(t):
        return term.log_likelihood({"teff": t[0], "logg": t[1], "mass": t[2]}, data)

    check_grads(f, (jnp.array([4800.0, 2.5, 1.3]),), order=2, modes=["fwd", "rev"], eps=1e-4)
    missing = dict(data, dnu=jnp.asarray(jnp.nan))  # no Δν for this star: only ν_max counts
    only_numax = Seismic(dnu=False).log_likelihood({"teff": 4800.0, "logg": 2.5}, data)
    assert float(term.log_likelihood({"teff": 4800.0, "logg": 2.5, "mass": 9.0}, missing)) == pytest.approx(
        float(only_numax))
    labels = LabelMeasurement(["logg"])
    assert float(labels.log_likelihood({"logg": 2.6}, {"logg": 2.5, "logg_err": 0.05})) == pytest.approx(-2.0)
    assert float(labels.log_likelihood({"logg": 2.6}, {"logg": jnp.nan, "logg_err": 0.05})) == 0.0


@pytest.fixture(scope="module")
def star(emulator):
    from jaxpayne.fitting import Fitter

    fitter = Fitter(emulator, **OPTIONS)
    truth = np.array([5400.0, 3.1, -0.4, 12.0])
    # S/N 400: the spectrum's log g to ~0.03 dex, so the ν_max term below (~7 % errors) is nearly
    # linear over the posterior and the Fisher prediction applies
    spectra = simulate(fitter.forward, truth[None], seed=11, snr=400.0)
    return fitter, truth, spectra


def _posterior_sd(sampler, batch, **kw):
    idata = sampler.sample(batch, progress=False, **kw)
    post = idata.posterior
    return idata, {n: float(post[n].values.std()) for n in sampler.space.free_names}


def test_a_numax_measurement_shrinks_logg_as_its_fisher_information_predicts(emulator, star):
    """Spectrum alone, then with ν_max of the same information on log g as the spectrum: the
    posterior sd of log g falls to what (F_spectrum + F_numax)⁻¹ predicts (F_numax at the true
    labels, F_spectrum the fit's inverse covariance), within 15 %; [Fe/H], correlated with log g
    in the spectrum, shrinks with it."""
    import jax.numpy as jnp

    from jaxpayne.sampling import Sampler
    from jaxpayne.sampling.terms import NUMAX_SUN, Seismic

    fitter, truth, spectra = star
    common = dict(chains=2, warmup=300, samples=500, seed=3, fitter=fitter)
    alone = Sampler(emulator, **common)
    batch = batch_of(alone, spectra)
    fit = fitter.fit(batch)
    cov = np.asarray(fit.covariance[0], np.float64)
    j = alone.space.index("logg")
    _, sd0 = _posterior_sd(alone, batch, fit=fit)
    assert sd0["logg"] == pytest.approx(np.sqrt(cov[j, j]), rel=0.2)

    term = Seismic(dnu=False)
    joint = Sampler(emulator, terms=[term], **common)
    numax = float(term.predict({"teff": jnp.asarray(truth[0]), "logg": jnp.asarray(truth[1])})["numax"])
    sigma = numax * np.log(10.0) * np.sqrt(cov[j, j])  # as much information on log g as the spectrum
    constraints = {"numax": np.array([numax]), "numax_err": np.array([sigma])}
    fisher = np.asarray(joint.posterior.constraint_fisher(jnp.asarray(truth), None,
                                                          {k: v[0] for k, v in constraints.items()}))
    joint_cov = np.linalg.inv(np.linalg.inv(cov) + fisher)
    predicted = np.sqrt(joint_cov[j, j])
    assert predicted < 0.8 * np.sqrt(cov[j, j])  # the term does carry information
    idata, sd1 = _posterior_sd(joint, batch, fit=fit, constraints=constraints)
    assert sd1["logg"] == pytest.approx(predicted, rel=0.15)
    k = joint.space.index("feh")
    assert sd1["feh"] == pytest.approx(np.sqrt(joint_cov[k, k]), rel=0.15) and sd1["feh"] < sd0["feh"]
    assert abs(float(idata.posterior["logg"].values.mean()) - truth[1]) < 3 * predicted
    assert numax / NUMAX_SUN < 1  # a subgiant-like star: ν_max below the Sun's
    with pytest.raises(ValueError, match="read by no term"):
        joint.sample(batch, fit=fit, constraints={"parallax": np.array([1.0])}, progress=False)


def test_numax_and_dnu_give_the_mass(emulator, star):
    """With ν_max and Δν the latent mass is sampled too and its posterior holds the true mass."""
    import jax.numpy as jnp

    from jaxpayne.sampling import Sampler
    from jaxpayne.sampling.terms import Seismic

    fitter, truth, spectra = star
    term = Seismic()
    sampler = Sampler(emulator, terms=[term], chains=2, warmup=300, samples=400, seed=4, fitter=fitter)
    assert sampler.space.free_names[-1] == "mass"
    values = {"teff": jnp.asarray(truth[0]), "logg": jnp.asarray(truth[1]), "mass": jnp.asarray(1.4)}
    pred = term.predict(values)
    constraints = {"numax": np.array([float(pred["numax"])]), "numax_err": np.array([0.01 * float(pred["numax"])]),
                   "dnu": np.array([float(pred["dnu"])]), "dnu_err": np.array([0.005 * float(pred["dnu"])])}
    idata = sampler.sample(batch_of(sampler, spectra), constraints=constraints, progress=False)
    mass = idata.posterior["mass"].values.ravel()
    assert abs(np.mean(mass) - 1.4) < 3 * np.std(mass) and np.std(mass) < 0.3
    assert "mass" in idata.posterior and np.all(np.isnan(idata.constant_data["fit_theta"].values[:, -1]))
