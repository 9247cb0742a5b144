"""Bolometric corrections (MIST, packaged) and the parallax + photometry term (issue #15)."""

import numpy as np
import pytest

from _sampling_setup import OPTIONS, batch_of, emulator, simulate  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def table():
    from jaxpayne.photometry import load_bolometric_corrections

    return load_bolometric_corrections()


def test_interpolation_returns_the_grid_at_its_nodes(table):
    """Every band at 200 random nodes equals the HDF5 file's own row."""
    import h5py

    with h5py.File(table.source, "r") as f:
        group = f["UBVRIplus"]
        names = [b.decode() if isinstance(b, bytes) else str(b) for b in group["band_names"][:]]
        fehs = np.asarray(group["feh_values"][:])
        data = {k: np.asarray(group["data"][k]) for k in range(len(fehs))}
    from jaxpayne.photometry import BANDS

    rng = np.random.default_rng(0)
    for _ in range(200):
        t, g, k, a = (rng.integers(n) for n in (table.teff.size, table.logg.size, table.feh.size, table.av.size))
        rows = data[k]
        row = rows[(rows[:, 0] == table.teff[t]) & (rows[:, 1] == table.logg[g]) & (rows[:, 3] == table.av[a])][0]
        expected = [row[5 + names.index(BANDS[b])] for b in table.bands]
        got = np.asarray(table(table.teff[t], table.logg[g], table.feh[k], table.av[a]))
        np.testing.assert_allclose(got, expected, atol=2e-6)


def test_solar_absolute_magnitudes_against_the_literature(table):
    """The Sun (5772 K, log g 4.438, [Fe/H] 0, no extinction, 1 R☉): M_G 4.647 against 4.66 ± 0.02
    (Creevey et al. 2023, Gaia DR3 FLAME; 4.67 in Andrae et al. 2018) and M_Ks 3.287 against 3.27
    (Willmer 2018, Vega)."""
    from jaxpayne.sampling.terms import LOGG_SUN, TEFF_SUN

    m = dict(zip(table.bands, np.asarray(table.absolute_magnitudes(TEFF_SUN, LOGG_SUN, 0.0, 0.0, 1.0), float)))
    assert m["G"] == pytest.approx(4.66, abs=0.03)
    assert m["Ks"] == pytest.approx(3.27, abs=0.03)
    assert 0.7 < m["BP"] - m["RP"] < 0.9  # a G2 star's colour
    # reddening: A_V = 1 dims G by ~0.8-0.9 mag and Ks by ~0.1
    red = dict(zip(table.bands, np.asarray(table.absolute_magnitudes(TEFF_SUN, LOGG_SUN, 0.0, 1.0, 1.0), float)))
    assert 0.7 < red["G"] - m["G"] < 1.0 and 0.05 < red["Ks"] - m["Ks"] < 0.15


def test_bc_gradients(table, x64):
    import jax.numpy as jnp
    from jax.test_util import check_grads

    def f(x):  # inside one cell of the grid (piecewise linear: smooth there)
        return table.absolute_magnitudes(x[0], x[1], x[2], x[3], x[4])

    check_grads(f, (jnp.array([4810.0, 2.61, -0.33, 0.27, 11.0]),), order=1, modes=["fwd", "rev"], eps=1e-3,
                atol=1e-4, rtol=1e-4)


def test_photometric_predictions_and_unknown_bands(table):
    import jax.numpy as jnp

    from jaxpayne.photometry import Photometry
    from jaxpayne.sampling.terms import LOGG_SUN, TEFF_SUN

    term = Photometry(table=table, distance_length=None)
    sun = {"teff": jnp.asarray(TEFF_SUN), "logg": jnp.asarray(LOGG_SUN), "feh": jnp.asarray(0.0),
           "mass": jnp.asarray(1.0), "distance": jnp.asarray(10.0), "av": jnp.asarray(0.0)}
    out = term.predict(sun)
    absolute = np.asarray(table.absolute_magnitudes(TEFF_SUN, LOGG_SUN, 0.0, 0.0, 1.0))
    np.testing.assert_allclose([float(out[c]) for c in term.magnitudes], absolute, atol=1e-5)
    assert float(out["parallax"]) == pytest.approx(100.0)
    far = term.predict(dict(sun, distance=jnp.asarray(1000.0)))
    assert float(far["phot_g_mean_mag"]) - float(out["phot_g_mean_mag"]) == pytest.approx(10.0, abs=1e-4)
    with pytest.raises(ValueError, match="unknown band"):
        Photometry(["W1"])


def test_parallax_and_photometry_with_a_mass_prior_shrink_logg_as_predicted(emulator, table):
    """Mock star at 500 pc: with its parallax, G and Ks, and a mass prior N(1.1, 0.05) M☉, the
    log g posterior shrinks to what the Fisher information (spectrum + photometry + the latent
    priors) predicts, within 20 %."""
    import jax.numpy as jnp
    import numpyro.distributions as dist

    from jaxpayne.fitting import Fitter
    from jaxpayne.photometry import Photometry
    from jaxpayne.sampling import Sampler

    fitter = Fitter(emulator, **OPTIONS)
    truth = np.array([5400.0, 3.9, -0.4, 12.0])
    spectra = simulate(fitter.forward, truth[None], seed=5, snr=100.0)
    term = Photometry(["G", "Ks"], table=table, mass_prior=dist.Normal(1.1, 0.05), av_prior=dist.Normal(0.1, 0.02),
                      distance_length=None, magnitude_floor=0.0)
    sampler = Sampler(emulator, terms=[term], chains=2, warmup=300, samples=500, seed=2, fitter=fitter)
    assert sampler.space.free_names[-3:] == ("mass", "distance", "av")
    values = dict(zip(("teff", "logg", "feh"), map(jnp.asarray, truth[:3])), mass=jnp.asarray(1.1),
                  distance=jnp.asarray(500.0), av=jnp.asarray(0.1))
    pred = {k: float(v) for k, v in term.predict(values).items()}
    constraints = {"parallax": [pred["parallax"]], "parallax_err": [0.02],
                   "phot_g_mean_mag": [pred["phot_g_mean_mag"]], "phot_g_mean_mag_err": [0.01],
                   "ks_m": [pred["ks_m"]], "ks_m_err": [0.02]}
    constraints = {k: np.array(v) for k, v in constraints.items()}
    batch = batch_of(sampler, spectra)
    fit = fitter.fit(batch)
    n_fm = fitter.space.n_free
    theta = np.r_[truth, 1.1, 500.0, 0.1]
    fisher = np.asarray(sampler.posterior.constraint_fisher(jnp.asarray(theta), None,
                                                            {k: v[0] for k, v in constraints.items()}))
    total = fisher.copy()
    total[:n_fm, :n_fm] += np.linalg.inv(np.asarray(fit.covariance[0], np.float64))
    total[n_fm, n_fm] += 1 / 0.05**2
    total[n_fm + 2, n_fm + 2] += 1 / 0.02**2
    predicted = np.sqrt(np.linalg.inv(total)[1, 1])
    alone = np.sqrt(float(fit.covariance[0][1, 1]))
    assert predicted < 0.7 * alone
    idata = sampler.sample(batch, fit=fit, constraints=constraints, progress=False)
    post = idata.posterior
    assert float(post["logg"].values.std()) == pytest.approx(predicted, rel=0.2)
    assert abs(float(post["logg"].values.mean()) - truth[1]) < 3 * predicted
    assert abs(float(post["distance"].values.mean()) - 500.0) < 3 * float(post["distance"].values.std())
