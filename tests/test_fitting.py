"""Batched fitting: optimiser, label recovery with calibrated errors, flags, tables, resume, CLI."""

import numpy as np
import pytest

from jaxpayne.fitting import Fitter, Flags, LMOptions, fit_spectra, levenberg_marquardt
from jaxpayne.forward.synthetic import SyntheticLineEmulator
from jaxpayne.io import Spectrum

SNR = 50.0


def test_lm_rosenbrock_and_bounds():
    import jax.numpy as jnp

    def residuals(x):
        return jnp.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])

    res = levenberg_marquardt(residuals, jnp.array([-1.2, 1.0]), jnp.array([-5.0, -5.0]), jnp.array([5.0, 5.0]),
                              LMOptions(max_iter=200, ftol=1e-12, cost_atol=0.0, xtol=1e-12))
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-4)
    assert bool(res.converged)
    # the unconstrained minimum (1, 1) lies outside the box: the fit stops on the bound x0 <= 0.5
    res = levenberg_marquardt(residuals, jnp.array([0.0, 0.0]), jnp.array([-5.0, -5.0]), jnp.array([0.5, 5.0]),
                              LMOptions(max_iter=200))
    assert float(res.x[0]) == pytest.approx(0.5)
    assert float(res.x[1]) == pytest.approx(0.25, abs=1e-3)


@pytest.fixture(scope="module")
def emulator():
    wave = np.exp(np.linspace(np.log(5000.0), np.log(5100.0), 1200))
    return SyntheticLineEmulator(wave, n_lines=40, seed=3)


def simulate(emulator, n, seed, rv_range=30.0, resolution=None):
    """Noisy spectra drawn from the exact forward model (so the fit's error model is correct)."""
    from jaxpayne.forward import ForwardModel, make_observation

    rng = np.random.default_rng(seed)
    lo, hi = emulator.bounds
    labels = lo + (hi - lo) * rng.uniform(0.2, 0.8, (n, 3))
    rv = rng.uniform(-rv_range, rv_range, n)
    fm = ForwardModel(emulator, rotation=False, macroturbulence=False, continuum="none", max_rv=100.0,
                      resolution=resolution)
    obs_wave = np.exp(np.linspace(np.log(5010.0), np.log(5090.0), 900))
    template = make_observation(obs_wave, np.ones_like(obs_wave))
    spectra = []
    for i in range(n):
        clean = np.asarray(fm.model_flux(np.r_[labels[i], rv[i]], template), np.float64)
        err = np.full_like(clean, 1.0 / SNR)
        spectra.append(Spectrum.from_error(obs_wave, clean + rng.normal(size=clean.size) * err, err, id=f"s{i}"))
    return spectra, labels, rv


def test_label_recovery_pulls_are_unit_normal(emulator):
    spectra, labels, rv = simulate(emulator, 48, seed=1)
    table = fit_spectra(emulator, spectra, rv=True, max_rv=100.0, continuum="none", restarts=2,
                        batch_size=16, progress=False, emulator_error=False)
    truth = np.column_stack([labels, rv])
    names = ["teff", "logg", "feh", "rv"]
    pulls = np.column_stack([(np.asarray(table[n]) - truth[:, j]) / np.asarray(table[f"{n}_err"]) for j, n in enumerate(names)])
    assert np.all(np.asarray(table["converged"]))
    assert np.all(np.isfinite(pulls))
    # pulls ~ N(0, 1): mean within 4 standard errors of 0, std within 25% of 1 (48 draws)
    assert np.all(np.abs(pulls.mean(axis=0)) < 4 / np.sqrt(48)), pulls.mean(axis=0)
    assert np.all(np.abs(pulls.std(axis=0) - 1) < 0.25), pulls.std(axis=0)
    red = np.asarray(table["chi2_red"])
    assert abs(np.median(red) - 1) < 0.1
    cov = np.asarray(table["covariance"])
    assert cov.shape == (48, 4, 4)
    np.testing.assert_allclose(np.sqrt(cov[:, 0, 0]), table["teff_err"], rtol=1e-6)


def test_bad_spectrum_never_spoils_batch(emulator, tmp_path):
    spectra, labels, _ = simulate(emulator, 4, seed=2)
    w, f, e = spectra[1].wavelength, np.array(spectra[1].flux), np.array(spectra[1].error)
    f[:] = np.nan  # every pixel bad
    f[:3] = 1.0
    broken = Spectrum.from_error(w, f, e, id="broken")
    outside = Spectrum.from_error(w + 3000.0, spectra[2].flux, spectra[2].error, id="outside")
    mixed = [spectra[0], broken, outside, spectra[3]]
    alone = fit_spectra(emulator, [spectra[0], spectra[3]], rv=True, max_rv=100.0, continuum="none", restarts=1,
                        batch_size=4, progress=False, emulator_error=False)
    table = fit_spectra(emulator, mixed, rv=True, max_rv=100.0, continuum="none", restarts=1, batch_size=4,
                        progress=False, emulator_error=False, failures=[("missing.fits", "missing.fits: no such file")])
    by_id = {r["id"]: r for r in table}
    assert by_id["broken"]["flags"] & Flags.FEW_PIXELS and np.isnan(by_id["broken"]["teff"])
    assert by_id["outside"]["flags"] & (Flags.FEW_PIXELS | Flags.FAILED)
    assert any(r["source"] == "missing.fits" and r["flags"] & Flags.FAILED for r in table)
    for good in ("s0", "s3"):
        ref = alone[alone["id"] == good][0]
        assert by_id[good]["flags"] == 0
        np.testing.assert_allclose(by_id[good]["teff"], ref["teff"], rtol=1e-5)


def test_covariance_flags_degenerate_parameter():
    """A label the spectrum does not depend on gives a singular Fisher matrix: flagged, not NaN."""
    from jaxpayne.fitting.fitter import invert_fisher

    fisher = np.array([[[4.0, 0.0], [0.0, 0.0]], [[4.0, 1.0], [1.0, 1.0]]])
    cov, singular = invert_fisher(fisher, np.array([1.0, 1.0]))
    assert singular.tolist() == [True, False]
    assert np.all(np.isfinite(cov))
    np.testing.assert_allclose(cov[1], np.linalg.inv(fisher[1]))


@pytest.mark.parametrize("ext", [".ecsv", ".fits", ".parquet"])
def test_table_written_incrementally_and_resumed(emulator, tmp_path, ext):
    spectra, _, _ = simulate(emulator, 6, seed=4)
    out = tmp_path / f"res{ext}"
    opts = dict(rv=True, max_rv=100.0, continuum="none", restarts=1, progress=False, emulator_error=False)
    # a run "killed" after the first batches: only the first four spectra were fitted
    first = fit_spectra(emulator, spectra[:4], out=out, batch_size=2, **opts)
    assert out.exists() and len(first) == 4
    with pytest.raises(FileExistsError, match="--resume"):
        fit_spectra(emulator, spectra, out=out, batch_size=2, **opts)
    resumed = fit_spectra(emulator, spectra, out=out, resume=True, batch_size=2, **opts)
    assert sorted(resumed["id"]) == [f"s{i}" for i in range(6)]
    from astropy.table import Table

    from jaxpayne.fitting.run import read_results

    on_disk = read_results(out)
    assert len(on_disk) == 6
    np.testing.assert_allclose(np.sort([r["teff"] for r in on_disk]), np.sort(resumed["teff"]))
    if ext != ".parquet":
        assert Table.read(out).meta["PARAMS"] == "teff,logg,feh,rv"


def test_journal_survives_kill(emulator, tmp_path, monkeypatch):
    """Kill during the second batch: the first batch's rows are on disk and resume completes."""
    import jaxpayne.fitting.run as run

    spectra, _, _ = simulate(emulator, 4, seed=5)
    out = tmp_path / "res.ecsv"
    opts = dict(rv=True, max_rv=100.0, continuum="none", restarts=1, progress=False, emulator_error=False, batch_size=2)
    real_fit, calls = Fitter.fit, []

    def dying_fit(self, batch):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fit(self, batch)

    monkeypatch.setattr(Fitter, "fit", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        fit_spectra(emulator, spectra, out=out, **opts)
    monkeypatch.setattr(Fitter, "fit", real_fit)
    from astropy.table import Table

    assert len(Table.read(out)) == 2
    done = fit_spectra(emulator, spectra, out=out, resume=True, **opts)
    assert len(done) == 4 and not (tmp_path / "res.ecsv.journal.jsonl").exists()
    # a half-written journal line (killed mid-write) is ignored on resume
    journal = tmp_path / "res2.ecsv.journal.jsonl"
    journal.write_text('{"id": "s0", "sou')
    again = fit_spectra(emulator, spectra[:1], out=tmp_path / "res2.ecsv", resume=True, **opts)
    assert len(again) == 1
    assert run.read_results(tmp_path / "res2.ecsv")[0]["id"] == "s0"


def test_real_apogee_with_binspec(need_data):
    """Real APOGEE spectra fitted with the published binspec network (Payne-format import)."""
    import jaxpayne
    from jaxpayne.io import read_spectrum

    d = need_data("binspec_apogee")
    model = jaxpayne.load_model(d / "NN_normalized_spectra.npz", label_names="teff,logg,feh,mg_fe,vmacro",
                                wavelength=d / "apogee_wavelength.npz")
    spectra = read_spectrum(d / "spectrum_combined_2M13012770+5754582.npz", wavelength=d / "apogee_wavelength.npz")
    table = fit_spectra(model, spectra, rv=True, max_rv=100.0, continuum="filter", restarts=2, progress=False)
    row = table[0]
    assert 4500 < row["teff"] < 5400 and 4.2 < row["logg"] < 4.8 and -0.5 < row["feh"] < 0.1
    assert abs(row["rv"]) < 5
    assert row["chi2_red"] < 6
    assert row["n_pixels"] > 6500
    assert not row["flags"] & (Flags.NOT_CONVERGED | Flags.FEW_PIXELS | Flags.COV_SINGULAR)


def test_lm_nan_cost_is_not_converged():
    import jax.numpy as jnp

    res = levenberg_marquardt(lambda x: jnp.nan * x, jnp.array([0.5, 0.5]), jnp.zeros(2), jnp.ones(2))
    assert not bool(res.converged)


def test_degenerate_label_flagged_singular_in_float32():
    """A label the spectrum ignores: JᵀJ is formed in float64, so the singular direction is seen."""
    from jaxpayne.fitting.fitter import invert_fisher

    rng = np.random.default_rng(0)
    jac = rng.normal(size=(8000, 4)).astype(np.float32)
    jac[:, 3] = 0.0
    fisher = np.einsum("pi,pj->ij", jac.astype(np.float64), jac.astype(np.float64))[None]
    _, singular = invert_fisher(fisher, np.ones(4))
    assert singular[0]


def test_resume_keeps_duplicate_ids_and_journal_only_rows(emulator, tmp_path):
    spectra, _, _ = simulate(emulator, 2, seed=6)
    twins = [spectra[0], spectra[0], spectra[1]]  # same source and id twice
    out = tmp_path / "res.ecsv"
    opts = dict(rv=True, max_rv=100.0, continuum="none", restarts=1, progress=False, emulator_error=False, batch_size=2)
    first = fit_spectra(emulator, twins, out=out, **opts)
    assert sorted(first["id"]) == ["s0", "s0#2", "s1"]
    again = fit_spectra(emulator, twins, out=out, resume=True, **opts)
    assert len(again) == 3
    # rows that reached only the journal (killed before the table was rewritten) survive a resume
    import json

    from jaxpayne.fitting.run import read_results

    rows = read_results(out)
    out.unlink()
    journal = tmp_path / "res.ecsv.journal.jsonl"
    journal.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = fit_spectra(emulator, twins, out=out, resume=True, **opts)
    assert len(done) == 3 and len(read_results(out)) == 3 and not journal.exists()


def test_lm_nonfinite_jacobian_is_not_converged():
    """A kink with an infinite derivative at the start: not reported as a converged fit."""
    import jax.numpy as jnp

    res = levenberg_marquardt(lambda x: jnp.array([jnp.sqrt(x[0]) - 1.0, x[1] - 2.0]), jnp.array([0.0, 0.0]),
                              jnp.array([0.0, -jnp.inf]), jnp.array([jnp.inf, jnp.inf]))
    assert not bool(res.converged)


def test_lm_ill_conditioned_problem_reaches_its_minimum(x64):
    """cond(JᵀJ) ~ 1e10: the convergence test must not stop at the start (true minimum χ² = 0)."""
    import jax.numpy as jnp

    res = levenberg_marquardt(lambda x: jnp.array([1e6 * (x[0] + x[1] - 1.0), 10.0 * (x[0] - x[1] - 0.5)]),
                              jnp.array([0.5, 0.5]), jnp.zeros(2), jnp.ones(2))
    assert bool(res.converged) and float(res.cost) < 0.01
    # χ² within cost_atol = 0.01 of 0 puts x₀ − x₁ within 0.01 of 0.5 along the weak direction
    np.testing.assert_allclose(res.x, [0.75, 0.25], atol=5e-3)


def test_lm_kinked_minimum_converges_and_bound_steps_are_resolved(x64):
    """A minimum on a kink (|x|, as in a LeakyReLU emulator) where the Gauss–Newton model keeps
    promising a gain of 1 in χ²: the collapsed trust region ends the fit as converged, before the
    iteration cap. A step pushing one parameter out of the box lands on the bounded minimum."""
    import jax.numpy as jnp

    res = levenberg_marquardt(lambda x: jnp.array([x[0] - 1.0, 3.0 * jnp.abs(x[1] - 0.2) + 1.0]),
                              jnp.array([0.0, 1.5]), jnp.full(2, -5.0), jnp.full(2, 5.0))
    assert bool(res.converged) and int(res.n_iter) < LMOptions().max_iter
    assert float(res.cost) < 1.0 + LMOptions().cost_atol
    np.testing.assert_allclose(res.x, [1.0, 0.2], atol=1e-3)
    # minimum on the bound x₀ = 0.5: then 100 (x₁ − 1.5)² + (0.5 − x₁)² is least at x₁ = 301/202
    res = levenberg_marquardt(lambda x: jnp.array([10.0 * (x[0] + x[1] - 2.0), x[0] - x[1]]), jnp.zeros(2),
                              jnp.full(2, -5.0), jnp.array([0.5, 5.0]))
    assert bool(res.converged) and int(res.n_iter) <= 3
    assert float(res.cost) < 100 * (301 / 202 - 1.5) ** 2 + (0.5 - 301 / 202) ** 2 + LMOptions().cost_atol
    np.testing.assert_allclose(res.x, [0.5, 301 / 202], atol=3e-3)


def test_lm_heavily_damped_small_steps_are_not_convergence(x64):
    """Far down a curved valley every damped step is small; that alone must not end the fit."""
    import jax.numpy as jnp

    opts = LMOptions(max_iter=200)
    res = levenberg_marquardt(lambda x: jnp.array([1000.0 * (x[1] - x[0] ** 2), 1.0 - x[0]]), jnp.array([-1.2, 1.0]),
                              jnp.full(2, -5.0), jnp.full(2, 5.0), opts)
    assert not bool(res.converged) or float(res.cost) < 3 * opts.cost_atol


def test_n_pixels_counts_only_pixels_in_the_likelihood(emulator):
    """With the filter continuum, a segment of exact zeros (running mean 0) carries no weight: it
    must not count in n_pixels or dof."""
    from jaxpayne.forward import pad_observations

    spectra, _, _ = simulate(emulator, 1, seed=4)
    spec = spectra[0]
    half = spec.wavelength.size // 2
    segment = (np.arange(spec.wavelength.size) >= half).astype(np.int32)
    flux = np.where(segment == 1, 0.0, spec.flux)
    fitter = Fitter(emulator, rv=True, max_rv=100.0, continuum="filter", n_segments=2, emulator_error=False,
                    templates=8)
    obs = fitter.forward.observation(spec.wavelength, flux, spec.ivar, segment=segment, outside="mask")
    result = fitter.fit(pad_observations([obs]))
    used = int(np.sum((np.asarray(obs.ivar) > 0) & (segment == 0)))
    assert result.n_pixels[0] == used
    assert result.dof[0] == used - fitter.forward.n_params


def test_lm_continued_at_its_damping_retraces_one_run(x64):
    """A fit stopped after k evaluations and continued from its point at its damping (the
    fitter's straggler passes) follows the uninterrupted run: same point, same cost, the same
    evaluations in all (the restart's re-evaluation of its start aside); the budget is traced."""
    import jax
    import jax.numpy as jnp

    def residuals(x):
        return jnp.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0], 0.3 * x[2] - 0.1 * x[0]])

    lower, upper, x0 = jnp.full(3, -5.0), jnp.full(3, 5.0), jnp.array([-1.2, 1.0, 0.5])
    whole = levenberg_marquardt(residuals, x0, lower, upper, LMOptions(max_iter=60))

    @jax.jit
    def run(x, damping, budget):
        return levenberg_marquardt(residuals, x, lower, upper, LMOptions()._replace(max_iter=budget), damping=damping)

    first = run(x0, jnp.asarray(LMOptions().initial_damping), jnp.int32(6))
    assert int(first.n_iter) == 6 and not bool(first.converged)
    rest = run(first.x, first.damping, jnp.int32(60 - 6 + 1))
    assert bool(whole.converged) and bool(rest.converged)
    np.testing.assert_allclose(rest.x, whole.x, atol=1e-6)
    assert int(first.n_iter) + int(rest.n_iter) - 1 == int(whole.n_iter)
