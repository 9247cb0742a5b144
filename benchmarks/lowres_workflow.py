"""A low-resolution (LAMOST/DESI-like) workflow, end to end through the command line.

1. ``prepare OUT``: a training set made from the Doppler package's cubic Cannon
   (``doppler_cannon/coolstars_cubic_cannon.npz``, 3000–18000 Å, air) convolved to R = 2000 and
   resampled to a LAMOST-like grid (3700–9800 Å, Δlog₁₀λ = 10⁻⁴, 4231 pixels, air), labels drawn
   uniformly in Teff 4000–6500 K, log g 1.5–4.8, [Fe/H] −2.0–+0.4 (seed 0); and mock observed
   spectra: the same model at other labels, Doppler-shifted by rv ∈ ±150 km/s, multiplied by a
   flux-calibrated continuum (the Cannon's own continuum model, 10^{c(labels)}, times a smooth
   random throughput error of ±10 %), with Gaussian noise at S/N 50 per pixel at the continuum,
   written as ``.npz`` spectrum files with the truth in ``truth.ecsv``.
2. ``jaxpayne train OUT/train.npz --out OUT/lowres.h5 ...``: the emulator (default recipe's
   architecture at fewer epochs; or ``--emulator cannon --order 3``).
3. ``jaxpayne fit --model OUT/lowres.h5 OUT/mocks/*.npz --out OUT/fit.ecsv --continuum filter:50
   --max-rv 200``: the un-normalised spectra fitted with the running-mean filter continuum.
4. ``score OUT/fit.ecsv OUT/truth.ecsv``: bias and scatter of the labels and rv.

``all OUT`` runs the four steps and times them::

    python benchmarks/lowres_workflow.py all /tmp/lowres [--n-train 3000] [--n-mock 200] [--epochs 600]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

#: LAMOST-like pixel grid (air): Δlog10 λ = 1e-4 from 3700 Å.
GRID = (3700.0, 9800.0, 1e-4)
RESOLUTION = 2000.0
BOX = {"teff": (4000.0, 6500.0), "logg": (1.5, 4.8), "feh": (-2.0, 0.4)}
NAMES = ("teff", "logg", "feh")


def grid_wavelength() -> np.ndarray:
    lo, hi, step = GRID
    return 10.0 ** np.arange(np.log10(lo), np.log10(hi), step)


def _labels(n: int, rng) -> np.ndarray:
    return np.column_stack([rng.uniform(*BOX[k], n) for k in NAMES])


def lowres_spectra(labels, rv=None, max_rv: float = 0.0, cannon=None) -> np.ndarray:
    """Normalised spectra of the Doppler Cannon at R = 2000 on :func:`grid_wavelength` (air) for
    (n, 3) labels, Doppler-shifted by ``rv`` [km/s] (the public forward model, vmapped)."""
    import jax
    import jax.numpy as jnp

    from jaxpayne import load_model
    from jaxpayne.datasets import data_file
    from jaxpayne.forward import forward_model_from_options, model_spectrum

    wave = grid_wavelength()
    if cannon is None:
        cannon = load_model(data_file("doppler_cannon", "coolstars_cubic_cannon.npz"),
                            wavelength_range=(wave[0] * 0.99, wave[-1] * 1.01))
    rv = np.zeros(len(labels)) if rv is None else np.asarray(rv)
    fm = forward_model_from_options(cannon, rv=max_rv > 0, resolution=RESOLUTION, continuum="none",
                                    max_rv=max(max_rv, 1.0))
    obs = fm.observation(wave, np.ones_like(wave), np.ones_like(wave), medium="air")

    @jax.jit
    def one(label, v):
        values = dict(zip(NAMES, label))
        values.update(rv=v, **{k: fm.fixed[k] for k in fm.fixed if k not in values and k != "rv"})
        return model_spectrum(fm, values, obs).flux

    return np.concatenate([np.asarray(jax.vmap(one)(jnp.asarray(labels[a:a + 256], jnp.float32),
                                                    jnp.asarray(rv[a:a + 256], jnp.float32)))
                           for a in range(0, len(labels), 256)])


def prepare(out: Path, n_train: int, n_mock: int, snr: float, seed: int = 0) -> None:
    from astropy.table import Table

    from jaxpayne import load_model
    from jaxpayne.datasets import data_file
    from jaxpayne.emulators.cannon import cannon_model
    from jaxpayne.grids import TrainingSet

    out.mkdir(parents=True, exist_ok=True)
    path = data_file("doppler_cannon", "coolstars_cubic_cannon.npz")
    wave = grid_wavelength()
    cannon = load_model(path, wavelength_range=(wave[0] * 0.99, wave[-1] * 1.01))
    rng = np.random.default_rng(seed)

    def spectra(labels, rv, max_rv):
        return lowres_spectra(labels, rv, max_rv, cannon=cannon)

    t0 = time.perf_counter()
    labels = _labels(n_train, rng)
    flux = spectra(labels, np.zeros(n_train), 0.0)
    sane = np.all(np.isfinite(flux), axis=1) & (flux.min(axis=1) > 0.0) & (flux.max(axis=1) < 1.3)
    TrainingSet(wave, labels[sane], flux[sane], NAMES, medium="air",
                source="Doppler Cannon at R=2000 (benchmarks/lowres_workflow.py)").save(out / "train.npz")
    print(f"training set: {sane.sum()} of {n_train} spectra x {wave.size} pixels (others outside 0 < f < 1.3), "
          f"{time.perf_counter() - t0:.1f} s")

    if n_mock == 0:
        return
    # the mock observations: rv, the Cannon's continuum model, a throughput error, noise
    with np.load(path) as d:
        c = {k: d[f"continuum_{k}"] for k in ("wavelength", "theta", "powers", "fiducial", "scale")}
        log10 = bool(d["continuum_is_log10"])
    continuum = cannon_model(c["wavelength"], c["theta"], c["powers"], c["fiducial"], c["scale"], NAMES,
                             (np.array([3500.0, 0.0, -2.5]), np.array([8000.0, 5.0, 0.5])), medium="air")
    truth = _labels(n_mock, rng)
    rv = rng.uniform(-150.0, 150.0, n_mock)
    normalised = spectra(truth, rv, 200.0)
    level = np.asarray(continuum.predict(truth.astype(np.float32)), np.float64)
    level = 10.0**level if log10 else level
    cont = np.stack([np.interp(wave, c["wavelength"], row) for row in level])
    x = (wave - wave.mean()) / np.ptp(wave)
    throughput = 1.0 + 0.1 * np.tanh(rng.normal(size=(n_mock, 3)) @ np.stack([x, x**2 - 1 / 12, x**3]))
    cont = cont / np.median(cont, axis=1, keepdims=True) * throughput * 1e3
    sigma = cont / snr
    observed = normalised * cont + rng.normal(size=cont.shape) * sigma
    (out / "mocks").mkdir(exist_ok=True)
    for k in range(n_mock):
        np.savez(out / "mocks" / f"mock{k:04d}.npz", wavelength=wave, flux=observed[k], error=sigma[k],
                 medium=np.array("air"))
    Table({"id": [f"mock{k:04d}" for k in range(n_mock)], "teff": truth[:, 0], "logg": truth[:, 1],
           "feh": truth[:, 2], "rv": rv}).write(out / "truth.ecsv", overwrite=True)
    print(f"{n_mock} mock spectra (S/N {snr:g}, un-normalised, flux-calibrated continuum x throughput) in {out / 'mocks'}")


def score(fit_path: Path, truth_path: Path) -> None:
    from astropy.table import Table, join

    fit = Table.read(fit_path)
    truth = Table.read(truth_path)
    truth.rename_columns(list(NAMES) + ["rv"], [f"{n}_true" for n in NAMES] + ["rv_true"])
    both = join(fit, truth, keys="id")
    ok = both["flags"] == 0
    print(f"{len(both)} fitted, {ok.sum()} with no flag; fitted − true over those:")
    print("| label | bias | scatter (std) | robust scatter | median formal error |")
    print("|---|---|---|---|---|")
    for name in list(NAMES) + ["rv"]:
        d = np.asarray(both[name] - both[f"{name}_true"])[ok]
        mad = 1.4826 * np.median(np.abs(d - np.median(d)))
        print(f"| {name} | {d.mean():+.3g} | {d.std():.3g} | {mad:.3g} | {np.median(np.asarray(both[f'{name}_err'])[ok]):.3g} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "score", "all"])
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-mock", type=int, default=200)
    parser.add_argument("--snr", type=float, default=50.0)
    parser.add_argument("--epochs", type=int, default=600)
    parser.add_argument("--train-options", default="", help="more jaxpayne train options (quoted)")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(Path(args.paths[0]), args.n_train, args.n_mock, args.snr)
    elif args.step == "score":
        score(Path(args.paths[0]), Path(args.paths[1]))
    else:
        out = Path(args.paths[0])
        t0 = time.perf_counter()
        prepare(out, args.n_train, args.n_mock, args.snr)
        print(f"prepare: {time.perf_counter() - t0:.1f} s")
        commands = [
            ["jaxpayne", "train", str(out / "train.npz"), "--out", str(out / "lowres.h5"), "--epochs", str(args.epochs),
             "--quiet", *args.train_options.split()],
            ["jaxpayne", "fit", "--model", str(out / "lowres.h5"), *sorted(map(str, (out / "mocks").glob("*.npz"))),
             "--out", str(out / "fit.ecsv"), "--continuum", "filter:50", "--max-rv", "200", "--quiet"],
        ]
        for command in commands:
            (out / "fit.ecsv").unlink(missing_ok=True)
            t0 = time.perf_counter()
            subprocess.run(command, check=True)
            print(f"{command[1]}: {time.perf_counter() - t0:.1f} s", flush=True)
        score(out / "fit.ecsv", out / "truth.ecsv")


if __name__ == "__main__":
    sys.exit(main())
