"""K-fold cross-validated label recovery of data-driven models on the 671 real APOGEE giants.

The set is ``cannon_apogee_giants/apogee_giants_100px.npz`` (100 normalised pixels, Teff, log g,
[M/H]); its ``ivar`` array holds flux uncertainties σ (a 0.005 floor, ~16 on bad pixels), so
ivar = σ⁻². The split: star i is in fold ``numpy.random.default_rng(0).permutation(671)[i] % K``
(:func:`jaxpayne.datadriven.cross_validate`; the same folds for every model and experiment).
Each fold is held out in turn, a model is trained on the others, and the held-out stars are
fitted by the ordinary :class:`~jaxpayne.fitting.Fitter` (rv fixed, no continuum step, the
model's own error in the likelihood). Every score is against the file's full reference labels.

Experiments (``--experiments``, comma-separated; default all):

- ``full``: the Cannon (quadratic) and a network (``resmlp`` width 64, 1 block, 1000 epochs) on
  the complete set;
- ``missing``: 30 % of the log g labels removed at random (seed 1) from the training folds:
  dropping those stars vs treating the missing values as latent labels, for both models;
- ``missing-region``: log g removed for every star with [M/H] < −0.4 (a part of label space,
  as when a reference catalogue covers only some populations): dropping vs latent;
- ``errors``: noise added to the reference labels, with known 1σ errors (half the stars 200 K,
  0.4, 0.15 dex; the others a fifth of that; seed 2): ignoring the errors vs errors-in-variables.

For each pair the difference of the scatter (std of fitted − reference) is given with its
paired bootstrap 1σ (500 resamples of the stars).

    python benchmarks/cannon_cv.py [--folds 5] [--experiments full,missing,missing-region,errors]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

NAMES = ("teff", "logg", "m_h")


def bootstrap_scatter_difference(a, b, reference, n_boot: int = 500, seed: int = 0):
    """(difference, 1σ) per label of std(b − ref) − std(a − ref), paired bootstrap over stars."""
    da, db = a - reference, b - reference
    ok = np.all(np.isfinite(da) & np.isfinite(db), axis=1)
    da, db = da[ok], db[ok]
    rng = np.random.default_rng(seed)
    draws = [np.std(db[i], axis=0) - np.std(da[i], axis=0)
             for i in (rng.integers(0, len(da), len(da)) for _ in range(n_boot))]
    return np.std(db, axis=0) - np.std(da, axis=0), np.std(draws, axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--experiments", default="full,missing,missing-region,errors")
    args = parser.parse_args()

    from jaxpayne.datadriven import cross_validate, recovery_summary, training_function
    from jaxpayne.datasets import data_file
    from jaxpayne.grids import TrainingSet
    from jaxpayne.training import TrainingConfig

    d = np.load(data_file("cannon_apogee_giants", "apogee_giants_100px.npz"))
    labels, flux, ivar = d["labels"], d["flux"], d["ivar"] ** -2.0
    wave = 15100.0 + 0.3 * np.arange(flux.shape[1])  # the file has no grid: any increasing one
    ts = TrainingSet(wave, labels, flux, NAMES, ivar=ivar, source="apogee_giants_100px.npz")
    network = TrainingConfig(emulator="resmlp", width=64, n_blocks=1, epochs=1000, batch_size=64,
                             learning_rate=3e-3, patience=None)
    trainers = {"cannon": training_function(ts, "cannon", order=args.order),
                "network": training_function(ts, "resmlp", config=network)}

    def run(name, model, train_labels, **options):
        t0 = time.perf_counter()
        cv = cross_validate(trainers[model], train_labels, flux, ivar, wavelength=wave, label_names=NAMES,
                            folds=args.folds, **options)
        summary = recovery_summary(cv.found, labels, NAMES)
        row = " | ".join(f"{summary[n]['bias']:+.3g} / {summary[n]['scatter']:.3g} / {summary[n]['robust_scatter']:.3g}"
                         for n in NAMES)
        print(f"| {name} | {model} | {row} | {time.perf_counter() - t0:.0f} s |", flush=True)
        return cv.found

    def compare(name, a, b):
        diff, err = bootstrap_scatter_difference(a, b, labels)
        print(f"| {name} | " + " | ".join(f"{x:+.3g} ± {e:.2g}" for x, e in zip(diff, err)) + " |", flush=True)

    print(f"{args.folds}-fold CV on {len(labels)} giants, 100 pixels; bias / scatter / robust scatter of fitted − "
          "reference (Teff [K], log g, [M/H] [dex]); time for all folds")
    print("| experiment | model | Teff | log g | [M/H] | time |")
    print("|---|---|---|---|---|---|")
    experiments = [e.strip() for e in args.experiments.split(",") if e.strip()]
    pairs = []
    if "full" in experiments:
        for model in trainers:
            run("complete labels", model, labels)
    if "missing" in experiments:
        missing = labels.copy()
        missing[np.random.default_rng(1).random(len(labels)) < 0.3, 1] = np.nan
        for model in trainers:
            a = run("30% log g missing: drop", model, missing)
            b = run("30% log g missing: latent", model, missing, latent=True)
            pairs.append((f"30% missing, {model}: latent − drop", a, b))
    if "missing-region" in experiments:
        missing = labels.copy()
        missing[labels[:, 2] < -0.4, 1] = np.nan
        a = run(f"log g missing where [M/H] < -0.4 ({np.mean(labels[:, 2] < -0.4):.0%}): drop", "cannon", missing)
        b = run("log g missing where [M/H] < -0.4: latent", "cannon", missing, latent=True)
        pairs.append(("missing in a region, cannon: latent − drop", a, b))
    if "errors" in experiments:
        rng = np.random.default_rng(2)
        errors = np.where(rng.random((len(labels), 1)) < 0.5, 1.0, 0.2) * np.array([200.0, 0.4, 0.15])
        noisy = labels + rng.normal(size=labels.shape) * errors
        a = run("noisy labels: errors ignored", "cannon", noisy)
        b = run("noisy labels: errors-in-variables", "cannon", noisy, errors=errors, latent=True)
        pairs.append(("noisy labels, cannon: EIV − ignored", a, b))
    if pairs:
        print("\nChange of the scatter (negative: better), paired bootstrap 1σ")
        print("| comparison | Teff | log g | [M/H] |")
        print("|---|---|---|---|")
        for name, a, b in pairs:
            compare(name, a, b)


if __name__ == "__main__":
    main()
