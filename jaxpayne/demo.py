"""The built-in end-to-end demonstration behind ``jaxpayne demo`` (no downloads).

1. A mock training grid (:mod:`jaxpayne.testing.mock`; a mock, not a synthesis code) of Teff,
   logg, [Fe/H] and [Mg/Fe] on a log-uniform 15,200–15,400 Å grid (vacuum, 2 km/s pixels).
2. A residual-MLP emulator trained on it, saved as one model file.
3. Mock observed stars: the *true* mock spectra (not the emulator's) Doppler shifted, convolved
   with an R = 22,500 Gaussian LSF, resampled to APOGEE-like 4.1 km/s pixels, multiplied by a
   tilted continuum and given Gaussian noise.
4. A batched fit (template pre-search for rv and start, Levenberg–Marquardt, continuum filter),
   compared with the truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxpayne.forward.doppler import SPEED_OF_LIGHT

__all__ = ["run_demo", "DEMO_BOX", "DEMO_RESOLUTION"]

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


def simulate_observations(wavelength, flux, rv, snr, rng):
    """Observed spectra from true model-grid spectra: shift, LSF, resample, continuum, noise.

    Returns:
        (obs_wavelength (n,), observed flux (n_stars, n), error (n_stars, n)).
    """
    from jaxpayne.forward import ForwardModel, make_observation

    fm = ForwardModel(_Tabulated(wavelength, flux), resolution=DEMO_RESOLUTION, rotation=False,
                      macroturbulence=False, continuum="none", max_rv=DEMO_MAX_RV)
    obs_wave = _log_grid(*OBS_RANGE, OBS_STEP_KMS)
    template = make_observation(obs_wave, np.ones_like(obs_wave))
    clean = np.stack([np.asarray(fm.model_flux(np.array([i, v]), template)) for i, v in enumerate(rv)])
    x = (obs_wave - obs_wave.mean()) / np.ptp(obs_wave)
    tilt = rng.uniform(-0.2, 0.2, (len(rv), 1))
    continuum = 1.0 + tilt * x[None, :]
    error = continuum / snr
    observed = clean * continuum + rng.normal(size=clean.shape) * error
    return obs_wave, observed, error


def run_demo(out: Path, *, n_train: int = 800, n_stars: int = 24, epochs: int = 1500, snr: float = 100.0,
             seed: int = 0, progress: bool = True):
    """Run the demonstration, print a report, write the model and tables into ``out``.

    Returns:
        The results table (astropy Table) with ``<label>_true`` columns added.
    """
    from jaxpayne.fitting import fit_spectra
    from jaxpayne.grids import TrainingSet
    from jaxpayne.io import Spectrum
    from jaxpayne.testing import mock_grid
    from jaxpayne.training import train_emulator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = tuple(DEMO_BOX)
    lower = [DEMO_BOX[n][0] for n in names]
    upper = [DEMO_BOX[n][1] for n in names]
    wave = _log_grid(*MODEL_RANGE, MODEL_STEP_KMS)
    print(f"[1/4] mock training grid: {n_train} spectra x {wave.size} pixels, labels {list(names)} (a mock, not a synthesis code)")
    labels, flux = mock_grid(n_train, wave, names, lower, upper, seed=seed, sampling="sobol")
    grid = TrainingSet(wave, labels, flux, names, source="jaxpayne.testing.mock")

    print(f"[2/4] training a residual-MLP emulator for {epochs} epochs")
    result = train_emulator(grid, emulator="resmlp", width=128, n_blocks=2, epochs=epochs, patience=None,
                            batch_size=64, learning_rate=2e-3, seed=seed, progress=progress)
    model = result.model
    model_path = model.save(out / "model.h5")
    s = model.validation["summary"]
    print(f"      validation rms {s['rms']:.2e}, median |df| {s['median_abs']:.2e} ({result.seconds:.0f} s) -> {model_path}")

    rng = np.random.default_rng(seed + 1)
    margin = 0.05 * (np.asarray(upper) - np.asarray(lower))
    truth, true_flux = mock_grid(n_stars, wave, names, np.asarray(lower) + margin, np.asarray(upper) - margin, seed=seed + 1)
    rv = rng.uniform(-DEMO_MAX_RV / 2, DEMO_MAX_RV / 2, n_stars)
    print(f"[3/4] {n_stars} mock stars: rv shift, R={DEMO_RESOLUTION:,.0f} LSF, tilted continuum, S/N {snr:g}")
    obs_wave, observed, error = simulate_observations(wave, true_flux, rv, snr, rng)
    spectra = [Spectrum.from_error(obs_wave, observed[i], error[i], id=f"star{i:03d}", source="demo") for i in range(n_stars)]

    print("[4/4] batched fit: template pre-search (rv + start), Levenberg-Marquardt, 50 A continuum filter")
    table_path = out / "results.ecsv"
    for stale in (table_path, table_path.with_name(table_path.name + ".journal.jsonl")):
        stale.unlink(missing_ok=True)
    table = fit_spectra(model, spectra, out=table_path, rv=True, max_rv=DEMO_MAX_RV, resolution=DEMO_RESOLUTION,
                        continuum="filter", batch_size=n_stars, progress=progress)
    order = [int(i[len("star"):]) for i in table["id"]]  # join the truth on the id
    for j, name in enumerate(names):
        table[f"{name}_true"] = truth[order, j]
    table["rv_true"] = rv[order]
    print(f"\n{'label':<8s}{'median(fit-true)':>18s}{'scatter':>10s}{'median err':>12s}{'pull std':>10s}")
    for name in names + ("rv",):
        diff = np.asarray(table[name]) - np.asarray(table[f"{name}_true"])
        err = np.asarray(table[f"{name}_err"])
        print(f"{name:<8s}{np.median(diff):18.4g}{np.std(diff):10.4g}{np.median(err):12.4g}{np.std(diff / err):10.3g}")
    print(f"median reduced chi2 {np.median(table['chi2_red']):.3f}; flagged {int(np.sum(np.asarray(table['flags']) != 0))} of {len(table)}")
    table.write(table_path, format="ascii.ecsv", overwrite=True)
    print(f"results with truth -> {table_path}")
    return table
