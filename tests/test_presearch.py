"""Template pre-search: rv by cross-correlation over the full range, and the best library start."""

import numpy as np
import pytest

from jaxpayne.fitting import Fitter
from jaxpayne.forward import pad_observations
from jaxpayne.forward.synthetic import SyntheticLineEmulator


@pytest.fixture(scope="module")
def emulator():
    wave = np.exp(np.linspace(np.log(5000.0), np.log(5100.0), 1200))
    return SyntheticLineEmulator(wave, n_lines=40, seed=3)


def _observations(fitter, labels, rv, noise, seed):
    from jaxpayne.forward import make_observation

    fm = fitter.forward
    rng = np.random.default_rng(seed)
    wave = np.exp(np.linspace(np.log(5010.0), np.log(5090.0), 900))
    template = make_observation(wave, np.ones_like(wave))
    out = []
    for lab, v in zip(labels, rv):
        values = dict(zip(fm.label_names, lab), **({"rv": v} if "rv" in fm.param_names else {}))
        clean = np.asarray(fm.model_flux(fm.pack(values), template))
        out.append(make_observation(wave, clean + noise * rng.normal(size=clean.size), np.full(clean.size, noise**-2)))
    return pad_observations(out)


def _presearch(fitter, batch, n_best=1):
    import jax

    from jaxpayne.fitting.presearch import presearch

    k = fitter._rv_index

    def one(obs, library):
        return presearch(fitter.forward, library, obs, fit_rv=k is not None, rv_index=k, n_best=n_best,
                         rv_to_u=lambda v: (v - fitter._offset[k]) / fitter._scale[k])

    starts, chi2, _ = jax.jit(jax.vmap(one, in_axes=(0, None)))(batch, fitter._library)
    return fitter.to_physical(np.asarray(starts, np.float64)), np.asarray(chi2)


def _rv_errors(fitter, emulator, rv, label_seed, noise_seed):
    """Pre-search rv minus the truth [km/s] for mock spectra at velocities ``rv`` with labels in
    the central 70 % of the box."""
    lo, hi = emulator.bounds
    rng = np.random.default_rng(label_seed)
    labels = lo + (hi - lo) * rng.uniform(0.15, 0.85, (len(rv), 3))
    batch = _observations(fitter, labels, rv, noise=0.02, seed=noise_seed)
    starts, _ = _presearch(fitter, batch)
    return starts[:, 0, fitter.param_names.index("rv")] - rv


def test_rv_found_across_the_whole_range(emulator):
    """Velocities up to ±280 km/s (beyond a few line widths of 0) come out within a fraction of a
    working-grid step, for labels away from the box centre (the template that finds them)."""
    fitter = Fitter(emulator, rv=True, max_rv=300.0, continuum="filter", templates=64, emulator_error=False)
    error = _rv_errors(fitter, emulator, np.linspace(-280.0, 280.0, 12), label_seed=5, noise_seed=1)
    step = fitter.forward.grid.velocity_step
    assert np.max(np.abs(error)) < 0.3 * step, (error, step)


def test_best_template_is_the_nearest_in_chi2(emulator):
    """A spectrum made from one library template picks that template, and scores are sorted."""
    fitter = Fitter(emulator, rv=True, max_rv=100.0, continuum="none", templates=32, emulator_error=False)
    names = fitter.forward.label_names
    u = np.asarray(fitter._library.u, np.float64)
    pick = [5, 17, 30]
    labels = fitter.to_physical(u[pick])[:, : len(names)]
    batch = _observations(fitter, labels, [12.0, -40.0, 75.0], noise=1e-3, seed=2)
    starts, chi2 = _presearch(fitter, batch, n_best=3)
    np.testing.assert_allclose(starts[:, 0, : len(names)], labels, rtol=1e-5)
    assert np.all(np.diff(chi2, axis=1) >= 0)


def test_fixed_rv_uses_no_velocity_search(emulator):
    fitter = Fitter(emulator, rv=False, continuum="none", templates=16, emulator_error=False)
    lo, hi = emulator.bounds
    batch = _observations(fitter, [0.5 * (lo + hi)], [0.0], noise=0.01, seed=3)
    starts, _ = _presearch(fitter, batch)
    assert "rv" not in fitter.param_names
    assert np.all(np.isfinite(starts))


def test_library_is_capped_by_memory(emulator, monkeypatch):
    from jaxpayne.fitting import presearch

    monkeypatch.setattr(presearch, "LIBRARY_MEMORY", 1)
    fitter = Fitter(emulator, rv=True, max_rv=50.0, continuum="none", templates=64, restarts=4, emulator_error=False)
    assert fitter.n_templates == 1 and fitter.restarts == 1


def test_rv_found_when_the_box_centre_template_has_no_lines(emulator):
    """A featureless box-centre template (a hot star; a network whose centre is flat) that fits
    better than every other template (here: their lines exaggerated threefold) neither sets the
    velocity nor drags it to ±max_rv: the probe templates' correlations find it."""
    fitter = Fitter(emulator, rv=True, max_rv=300.0, continuum="filter", templates=64, emulator_error=False)
    library = fitter._library
    fitter._library = library._replace(spectra=(3.0 * library.spectra).at[0].set(0.0),
                                       squares=(9.0 * library.squares).at[0].set(0.0))
    error = _rv_errors(fitter, emulator, np.linspace(-150.0, 150.0, 6), label_seed=8, noise_seed=4)
    assert np.max(np.abs(error)) < 0.5 * fitter.forward.grid.velocity_step, error


def test_rv_reaches_max_rv_on_a_coarse_low_resolution_grid():
    """On a LAMOST-like grid (69 km/s pixels, lines of R ≈ 2000) velocities out to ±max_rv
    = 200 km/s are found and fitted: the shifts around ±max_rv are searched, and the optimiser's
    window is at least a grid step wide (before: every |rv| > 133.5 km/s stuck there, flagged
    RV_AT_LIMIT)."""
    from jaxpayne.fitting import Flags

    wave = 10.0 ** np.arange(np.log10(4000.0), np.log10(5500.0), 1e-4)
    coarse = SyntheticLineEmulator(wave, n_lines=120, line_width=60.0, seed=4)
    fitter = Fitter(coarse, rv=True, max_rv=200.0, continuum="filter", templates=64, emulator_error=False)
    assert fitter.forward.grid.velocity_step > 60.0
    rv = np.array([-195.0, -160.0, -140.0, 0.0, 150.0, 190.0])
    lo, hi = coarse.bounds
    labels = lo + (hi - lo) * np.random.default_rng(2).uniform(0.2, 0.8, (len(rv), 3))
    from jaxpayne.forward import make_observation

    fm = fitter.forward
    obs_wave = wave[40:-40]
    template = make_observation(obs_wave, np.ones_like(obs_wave))
    rng = np.random.default_rng(3)
    batch = []
    for lab, v in zip(labels, rv):
        clean = np.asarray(fm.model_flux(fm.pack(dict(zip(fm.label_names, lab), rv=v)), template))
        batch.append(make_observation(obs_wave, clean + 0.01 * rng.normal(size=clean.size), np.full(clean.size, 1e4)))
    result = fitter.fit(pad_observations(batch))
    found = result.theta[:, fitter.param_names.index("rv")]
    assert np.max(np.abs(found - rv)) < 3.0, found
    assert not np.any(result.flags & int(Flags.RV_AT_LIMIT))
