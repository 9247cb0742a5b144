"""The built-in end-to-end demonstration behind ``jaxpayne demo`` (no downloads).

1. A mock training grid (:mod:`jaxpayne.testing.mock`; a mock, not a synthesis code) of Teff,
   logg, [Fe/H] and [Mg/Fe] on a log-uniform 15,200–15,400 Å grid (vacuum, 2 km/s pixels).
2. A residual-MLP emulator trained on it, saved as one model file.
3. Mock observed stars: the *true* mock spectra (not the emulator's) Doppler shifted, convolved
   with an R = 22,500 Gaussian LSF, resampled to APOGEE-like 4.1 km/s pixels, multiplied by a
   tilted continuum and given Gaussian noise.
   Each star rotates (vsini 2–25 km/s) and moves (|rv| < 30 km/s).
4. A batched fit of labels, rv and vsini (template pre-search for rv and start,
   Levenberg–Marquardt, 50 Å continuum filter), compared with the truth.
5. The NumPyro posterior of one star (NUTS, started and whitened by its fit), saved as netCDF.
6. The Cramér–Rao bounds of that star at its best fit, beside the fit's errors.
7. Figures: the fit with its residuals, the corner plot, the training curve and the emulator's
   validation error against wavelength.

Everything is composed from the public functions (:func:`jaxpayne.training.train_emulator`,
:class:`jaxpayne.fitting.Fitter`, :func:`jaxpayne.fitting.fit_spectra`,
:func:`jaxpayne.sampling.sample`, :func:`jaxpayne.information.crlb`, :mod:`jaxpayne.plotting`);
one :class:`~jaxpayne.fitting.Fitter` serves the fit, the posterior and the bounds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from jaxpayne.forward.doppler import SPEED_OF_LIGHT

__all__ = ["run_demo", "DEMO_BOX", "DEMO_RESOLUTION", "DEMO_VSINI", "simulate_observations"]

#: Label box of the demo grid: name → (lower, upper).
DEMO_BOX = {"teff": (4500.0, 6500.0), "logg": (1.5, 5.0), "feh": (-1.0, 0.4), "mg_fe": (-0.2, 0.4)}
#: Instrumental resolving power of the mock observations.
DEMO_RESOLUTION = 22_500.0
#: Model grid: wavelength range [Å] and pixel step [km/s].
MODEL_RANGE, MODEL_STEP_KMS = (15200.0, 15400.0), 2.0
#: Observed pixels: range [Å] and step [km/s] (APOGEE: 6e-6 dex ≈ 4.14 km/s).
OBS_RANGE, OBS_STEP_KMS = (15215.0, 15385.0), 4.14
#: Largest |rv| of the mock stars [km/s].
DEMO_MAX_RV = 60.0
#: Range of the mock stars' projected rotation velocities [km/s].
DEMO_VSINI = (2.0, 25.0)
#: Largest vsini of the fit [km/s] (sets the forward model's broadening margin).
DEMO_MAX_VSINI = 40.0


def _log_grid(lo: float, hi: float, step_kms: float) -> np.ndarray:
    n = int(np.floor(np.log(hi / lo) / (step_kms / SPEED_OF_LIGHT))) + 1
    return lo * np.exp(np.arange(n) * step_kms / SPEED_OF_LIGHT)


class _Tabulated:
    """Duck-typed emulator returning row ``index`` of a table: lets the forward model shift,
    broaden and resample the true mock spectra."""

    label_names = ("index",)
    medium = "vacuum"
    emulator_error = None

    def __init__(self, wavelength, table):
        self.wavelength = wavelength
        self.table = np.asarray(table, np.float32)

    @property
    def bounds(self):
        return np.array([0.0]), np.array([float(len(self.table) - 1)])

    def predict(self, labels):
        import jax.numpy as jnp

        index = jnp.clip(jnp.round(labels[..., 0]).astype(jnp.int32), 0, len(self.table) - 1)
        return jnp.asarray(self.table)[index]


def simulate_observations(wavelength, flux, rv, snr, rng, vsini=None):
    """Observed spectra from true model-grid spectra: rotation, shift, LSF, resample, continuum,
    noise (through the same :class:`~jaxpayne.forward.ForwardModel` as the fit).

    Args:
        wavelength: the model grid [Å], vacuum.
        flux: true spectra ``(n_stars, n_pixels)`` on it.
        rv: radial velocities [km/s], ``(n_stars,)``.
        snr: signal-to-noise per observed pixel.
        rng: a ``numpy.random.Generator``.
        vsini: optional projected rotation velocities [km/s], ``(n_stars,)``.

    Returns:
        (obs_wavelength (n,), observed flux (n_stars, n), error (n_stars, n)).
    """
    from jaxpayne.forward import ForwardModel, make_observation

    fm = ForwardModel(_Tabulated(wavelength, flux), resolution=DEMO_RESOLUTION, rotation=vsini is not None,
                      macroturbulence=False, continuum="none", max_rv=DEMO_MAX_RV, max_vsini=DEMO_MAX_VSINI)
    obs_wave = _log_grid(*OBS_RANGE, OBS_STEP_KMS)
    template = make_observation(obs_wave, np.ones_like(obs_wave))
    values = [{"index": i, "rv": v, **({} if vsini is None else {"vsini": vsini[i]})} for i, v in enumerate(rv)]
    clean = np.stack([np.asarray(fm.model_flux(fm.pack(v), template)) for v in values])
    x = (obs_wave - obs_wave.mean()) / np.ptp(obs_wave)
    tilt = rng.uniform(-0.2, 0.2, (len(rv), 1))
    continuum = 1.0 + tilt * x[None, :]
    error = continuum / snr
    observed = clean * continuum + rng.normal(size=clean.shape) * error
    return obs_wave, observed, error


def run_demo(out: Path, *, n_train: int = 800, n_stars: int = 24, epochs: int = 1500, snr: float = 100.0,
             seed: int = 0, progress: bool | None = True, draws: int = 500, figures: bool = True):
    """Run the demonstration, print a report, write the model, tables, posterior and figures.

    Files written into ``out``: ``model.h5`` (the emulator), ``results.ecsv`` (the fits with
    ``<label>_true`` columns), ``posterior.nc`` (ArviZ InferenceData of one star),
    ``crlb.ecsv`` (its Cramér–Rao bounds) and, with ``figures``, ``fit.png``, ``corner.png``,
    ``training.png`` and ``emulator_error.png``.

    Args:
        out: output folder (created).
        n_train: training spectra of the mock grid.
        n_stars: mock observed stars.
        epochs: training epochs.
        snr: signal-to-noise per observed pixel.
        seed: random seed (grid, stars, noise, chains).
        progress: progress bars (None: only on a terminal).
        draws: NUTS warm-up steps and draws per chain of the posterior (2 chains).
        figures: write the figures (needs matplotlib).

    Returns:
        The results table (astropy Table) with ``<label>_true`` columns added.
    """
    from jaxpayne.fitting import Fitter, fit_spectra
    from jaxpayne.fitting.run import spectrum_observation
    from jaxpayne.grids import TrainingSet
    from jaxpayne.information import bounds_table, crlb
    from jaxpayne.io import Spectrum
    from jaxpayne.sampling import sample
    from jaxpayne.testing import mock_grid
    from jaxpayne.training import train_emulator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = tuple(DEMO_BOX)
    lower = [DEMO_BOX[n][0] for n in names]
    upper = [DEMO_BOX[n][1] for n in names]
    wave = _log_grid(*MODEL_RANGE, MODEL_STEP_KMS)
    print(f"[1/7] mock training grid: {n_train} spectra x {wave.size} pixels, labels {list(names)} "
          "(a mock, not a synthesis code)", flush=True)
    labels, flux = mock_grid(n_train, wave, names, lower, upper, seed=seed, sampling="sobol")
    grid = TrainingSet(wave, labels, flux, names, source="jaxpayne.testing.mock")

    print(f"[2/7] training a residual-MLP emulator for {epochs} epochs", flush=True)
    result = train_emulator(grid, emulator="resmlp", width=128, n_blocks=2, epochs=epochs, patience=None,
                            batch_size=64, learning_rate=2e-3, seed=seed, progress=progress)
    model = result.model
    model_path = model.save(out / "model.h5")
    s = model.validation["summary"]
    print(f"      validation rms {s['rms']:.2e}, median |df| {s['median_abs']:.2e} ({result.seconds:.0f} s) "
          f"-> {model_path}", flush=True)

    rng = np.random.default_rng(seed + 1)
    margin = 0.05 * (np.asarray(upper) - np.asarray(lower))
    truth, true_flux = mock_grid(n_stars, wave, names, np.asarray(lower) + margin, np.asarray(upper) - margin,
                                 seed=seed + 1)
    rv = rng.uniform(-DEMO_MAX_RV / 2, DEMO_MAX_RV / 2, n_stars)
    vsini = rng.uniform(*DEMO_VSINI, n_stars)
    print(f"[3/7] {n_stars} mock stars: rotation (vsini {DEMO_VSINI[0]:g}-{DEMO_VSINI[1]:g} km/s), rv shift, "
          f"R={DEMO_RESOLUTION:,.0f} LSF, tilted continuum, S/N {snr:g}", flush=True)
    obs_wave, observed, error = simulate_observations(wave, true_flux, rv, snr, rng, vsini=vsini)
    spectra = [Spectrum.from_error(obs_wave, observed[i], error[i], id=f"star{i:03d}", source="demo")
               for i in range(n_stars)]

    print("[4/7] batched fit of labels, rv and vsini: template pre-search (rv + start), "
          "Levenberg-Marquardt, 50 A continuum filter", flush=True)
    fitter = Fitter(model, rv=True, vsini=True, max_rv=DEMO_MAX_RV, max_vsini=DEMO_MAX_VSINI, resolution=DEMO_RESOLUTION, continuum="filter")
    table_path = out / "results.ecsv"
    for stale in (table_path, table_path.with_name(table_path.name + ".journal.jsonl")):
        stale.unlink(missing_ok=True)
    table = fit_spectra(model, spectra, out=table_path, fitter=fitter, batch_size=n_stars, progress=progress)
    order = [int(i[len("star"):]) for i in table["id"]]  # join the truth on the id
    for j, name in enumerate(names):
        table[f"{name}_true"] = truth[order, j]
    table["rv_true"] = rv[order]
    table["vsini_true"] = vsini[order]
    print(f"\n{'label':<8s}{'median(fit-true)':>18s}{'scatter':>10s}{'median err':>12s}{'pull std':>10s}")
    for name in names + ("rv", "vsini"):
        diff = np.asarray(table[name]) - np.asarray(table[f"{name}_true"])
        err = np.asarray(table[f"{name}_err"])
        print(f"{name:<8s}{np.median(diff):18.4g}{np.std(diff):10.4g}{np.median(err):12.4g}{np.std(diff / err):10.3g}")
    print(f"median reduced chi2 {np.median(table['chi2_red']):.3f}; flagged "
          f"{int(np.sum(np.asarray(table['flags']) != 0))} of {len(table)}")
    table.write(table_path, format="ascii.ecsv", overwrite=True)

    star = spectra[0]
    row = table[order.index(0)]
    params = fitter.forward.param_names
    theta = np.array([row[p] for p in params], np.float64)
    print(f"\n[5/7] posterior of {star.id}: NUTS, 2 chains x {draws} draws, started and whitened by its fit",
          flush=True)
    idata = sample(model, star, fitter=fitter, chains=2, warmup=draws, samples=draws, seed=seed, progress=progress)
    posterior_path = out / "posterior.nc"
    idata.to_netcdf(posterior_path)
    post = idata.posterior
    print(f"{'param':<8s}{'true':>10s}{'fit':>12s}{'fit err':>10s}{'post mean':>12s}{'post sd':>10s}")
    truths = {**dict(zip(names, truth[0])), "rv": rv[0], "vsini": vsini[0]}
    for p in params:
        values = np.asarray(post[p]).ravel()
        print(f"{p:<8s}{truths[p]:10.4g}{row[p]:12.4g}{row[p + '_err']:10.3g}{values.mean():12.4g}{values.std():10.3g}")

    print(f"[6/7] Cramer-Rao bounds of {star.id} at its best fit (the noise it was fitted with)", flush=True)
    obs, _ = spectrum_observation(fitter, star)
    bounds = crlb(fitter.forward, theta, obs)
    crlb_table = bounds_table(bounds, {"MODEL": str(model_path), "STAR": star.id, "SNR": snr})
    crlb_path = out / "crlb.ecsv"
    crlb_table.write(crlb_path, format="ascii.ecsv", overwrite=True)
    for j, p in enumerate(bounds.names):
        print(f"  {p:>6s}: CRLB {bounds.sigma[j]:.3g} {bounds.units[j]}  (fit error {row[p + '_err']:.3g}, "
              f"posterior sd {np.asarray(post[p]).std():.3g})")

    written = [("model", model_path), ("fits with truth", table_path), ("posterior (netCDF)", posterior_path),
               ("Cramer-Rao bounds", crlb_path)]
    if figures and importlib.util.find_spec("matplotlib") is None:
        print("[7/7] figures skipped: matplotlib is not installed (pip install 'jaxpayne[plot]')", flush=True)
    elif figures:
        print("[7/7] figures", flush=True)
        written += _figures(out, fitter, theta, obs, row, idata, truths, result, model)
    print("\nwritten:")
    for what, path in written:
        print(f"  {what:<24s} {path}")
    print("next: train on your own grid with `jaxpayne train GRID --out MODEL.h5`, fit your spectra with\n"
          "`jaxpayne fit --model MODEL.h5 SPECTRA... --out TABLE.fits`, sample posteriors with\n"
          "`jaxpayne sample --model MODEL.h5 SPECTRUM --out POST.nc`; see README.md, docs/ and notebooks/")
    return table


def _figures(out, fitter, theta, obs, row, idata, truths, result, model):
    import matplotlib.pyplot as plt

    from jaxpayne.plotting import plot_corner, plot_emulator_error, plot_fit, plot_training_history

    paths = []
    figures = [
        ("fit and residuals", "fit.png",
         lambda: plot_fit(fitter, theta, obs, title=f"{row['id']}: chi2/dof = {row['chi2_red']:.2f}")),
        ("corner plot", "corner.png", lambda: plot_corner(idata, truths=truths)),
        ("training curve", "training.png", lambda: plot_training_history(result.history, best_epoch=result.best_epoch)),
        ("emulator error", "emulator_error.png", lambda: plot_emulator_error(model)),
    ]
    for what, name, make in figures:
        fig = make()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append((what, out / name))
    return paths
