"""Posterior sampling runs: the one-liner, sequential chains, resumable runs with failures, the
CLI, float64."""

import json

import numpy as np
import pytest

from _sampling_setup import emulator, fitter, simulate  # noqa: F401 (fixtures)
from jaxpayne.fitting import Flags
from jaxpayne.io import Spectrum
from jaxpayne.sampling import Sampler, sample, sample_spectra


def test_sequential_chains_and_one_liner(emulator, fitter):
    """``chain_method="sequential"`` and the ``sample`` one-liner on a Spectrum, with ln L."""
    spectrum = simulate(fitter.forward, [5000.0, 3.0, 0.0, 0.0], seed=9)[0]
    ivar = np.zeros_like(spectrum.ivar)
    ivar[100:106] = spectrum.ivar[100:106]
    few = Spectrum(spectrum.wavelength, spectrum.flux, ivar, id="few")  # too few pixels: no posterior
    idata = sample(emulator, [spectrum, few], chains=2, warmup=120, samples=120, progress=False,
                   chain_method="sequential", log_likelihood=True, noise_scale=True, fitter=fitter)
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
def test_sample_spectra_resume_failures_and_netcdf(emulator, fitter, tmp_path, monkeypatch):
    import arviz as az

    from jaxpayne.io import ReadFailure

    spectra = simulate(fitter.forward, [[5000.0, 3.0, 0.0, 1.0], [5200.0, 3.3, -0.2, -3.0],
                                      [4900.0, 2.8, 0.1, 5.0]], seed=3)
    import dataclasses

    spectra = [dataclasses.replace(s, source=f"{name}.fits") for s, name in zip(spectra, "abc")]
    outside = Spectrum.from_error(np.linspace(6000, 6010, 50), np.ones(50), np.full(50, 0.01), id="far",
                                  source="far.fits")
    stream = [spectra[0], ReadFailure("junk.fits", "junk.fits: not a FITS file"), spectra[1], outside, spectra[2]]
    out, summary = tmp_path / "post.nc", tmp_path / "summary.ecsv"
    # one compiled sampler for every call (a sample_spectra of options would build its own)
    options = dict(batch_size=2, progress=False, sampler=Sampler(emulator, chains=2, warmup=60, samples=60,
                                                                  fitter=fitter))
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
        other = Sampler(emulator, chains=2, warmup=60, samples=61, fitter=fitter)
        sample_spectra(emulator, stream, out=out, resume=True, **{**options, "sampler": other})
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
    assert main(["train", str(grid), "--out", str(tmp_path / "m.h5"), "--epochs", "200", "--emulator", "mlp", "--hidden", "16,16",
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


def test_float64_on_request(emulator, fitter, x64):
    spectrum = simulate(fitter.forward, [5000.0, 3.0, 0.0, 0.0], seed=9)[0]
    idata = sample(emulator, spectrum, chains=1, warmup=30, samples=30, progress=False, dtype="float64",
                   chain_method="sequential", fitter=fitter)
    assert json.loads(idata.posterior.attrs["setup"])["dtype"] == "float64"
    assert np.all(np.isfinite(idata.posterior["teff"].values))
    assert idata.sample_stats["step_size"].dtype == np.float64


def test_binary_posterior_covers_the_truth(emulator):
    """``Sampler(binary="ratio")``: the posterior of a mock SB2 (the composite model, started from
    the binary fit) covers the true labels, both velocities and the flux ratio, its widths agree
    with the Laplace errors of the binary fit at S/N 100, and the summary carries every
    composite parameter."""
    from _sampling_setup import OPTIONS, batch_of, obs_wave

    from jaxpayne.forward import make_observation
    from jaxpayne.sampling import summarize

    sampler = Sampler(emulator, binary="ratio", rv_span=40.0, chains=2, warmup=200, samples=200,
                      chain_method="sequential", **OPTIONS)
    truth = dict(teff_1=5200.0, logg_1=3.2, feh=0.1, rv_1=-8.0, teff_2=4700.0, logg_2=3.8, rv_2=22.0,
                 flux_ratio_2=0.55)
    rng = np.random.default_rng(4)
    w = obs_wave()
    clean = np.asarray(sampler.forward.model_flux(truth, make_observation(w, np.ones_like(w))), np.float64)
    star = Spectrum.from_error(w, clean + rng.normal(size=w.size) / 100.0, np.full(w.size, 0.01), id="sb2")
    assert sampler.velocity_names == ("rv_1", "rv_2")
    idata = sampler.sample(batch_of(sampler, [star]), progress=False)
    row = summarize(idata)[0]
    fit = idata.constant_data
    laplace = np.sqrt(np.diag(np.asarray(fit["fit_covariance"].values[0])))
    assert not row["flags"] & int(Flags.FAILED | Flags.DIVERGENT), row["message"]
    for j, name in enumerate(sampler.space.free_names):
        mean, sd = row[f"{name}_mean"], row[f"{name}_sd"]
        assert abs(mean - truth[name]) < 4 * sd, (name, mean, sd, truth[name])
        assert 0.6 < sd / laplace[j] < 1.6, (name, sd, laplace[j])
    assert row["rv_1_r_hat"] < 1.05 and row["rv_2_r_hat"] < 1.05
    setup = json.loads(idata.posterior.attrs["setup"])
    assert setup["velocities"] == ["rv_1", "rv_2"] and "binary" in setup["fit"]
    window = idata.constant_data["rv_window"].values[0]
    assert window[0] < truth["rv_1"] and truth["rv_2"] < window[1]
    # a derived label piled up on the emulator's box edge (a tied companion clipped to the
    # box) flags the row AT_BOUND, as a sampled label there does
    clipped = idata.posterior["teff_1"].copy(data=np.full(idata.posterior["teff_1"].shape, 4000.0))
    idata.posterior["teff_c"] = clipped
    idata.posterior.attrs["derived"] = "teff_c"
    setup["bounds"]["teff_c"] = [4000.0, 7000.0]
    idata.posterior.attrs["setup"] = json.dumps(setup)
    assert summarize(idata)[0]["flags"] & int(Flags.AT_BOUND)
