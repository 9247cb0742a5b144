"""K-fold cross-validated label recovery of The Cannon on the 671 real APOGEE giants.

The set is ``cannon_apogee_giants/apogee_giants_100px.npz`` (100 normalised pixels, Teff, log g,
[M/H]); its ``ivar`` array holds flux uncertainties σ (a 0.005 floor, ~16 on bad pixels), so
ivar = σ⁻². The split: star i is in fold ``numpy.random.default_rng(SEED).permutation(671)[i] % K``.
Each fold is held out in turn; a quadratic Cannon (``train_cannon``) is trained on the others and
the held-out stars are fitted by the ordinary :class:`~jaxpayne.fitting.Fitter` (rv fixed, no
continuum step, the Cannon's s² as the emulator's error). Prints the bias and scatter of every
label over all held-out stars.

    python benchmarks/cannon_cv.py [--folds 5] [--order 2] [--l1 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SEED = 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--l1", type=float, default=0.0)
    args = parser.parse_args()

    from jaxpayne.datasets import data_file
    from jaxpayne.emulators.cannon import train_cannon
    from jaxpayne.fitting import Fitter, Flags
    from jaxpayne.forward import pad_observations

    d = np.load(data_file("cannon_apogee_giants", "apogee_giants_100px.npz"))
    labels, flux, ivar = d["labels"], d["flux"], d["ivar"] ** -2.0
    names = ["teff", "logg", "m_h"]
    fold = np.random.default_rng(SEED).permutation(len(labels)) % args.folds
    wave = 15100.0 + 0.3 * np.arange(flux.shape[1])  # the file has no grid: any increasing one
    found = np.full(labels.shape, np.nan)
    flags = np.zeros(len(labels), np.int64)
    t_train = t_fit = 0.0
    for k in range(args.folds):
        train, test = fold != k, fold == k
        t0 = time.perf_counter()
        model = train_cannon(labels[train], flux[train], ivar[train], label_names=names, wavelength=wave,
                             order=args.order, l1=args.l1)
        t_train += time.perf_counter() - t0
        t0 = time.perf_counter()
        fitter = Fitter(model, rv=False, continuum="none")
        batch = pad_observations([fitter.observation(wave, f, i) for f, i in zip(flux[test], ivar[test])])
        result = fitter.fit(batch)
        t_fit += time.perf_counter() - t0
        found[test], flags[test] = result.theta[:, :3], result.flags
    ok = (flags & int(Flags.NOT_CONVERGED | Flags.FAILED)) == 0
    diff = found[ok] - labels[ok]
    print(f"The Cannon (order {args.order}, l1 {args.l1:g}), {args.folds}-fold CV on {len(labels)} giants, "
          f"100 pixels: training {t_train:.2f} s, fitting {t_fit:.1f} s (all folds, compiles included); "
          f"{(~ok).sum()} not converged/failed, {np.sum((flags & int(Flags.AT_BOUND)) != 0)} at the box edge")
    print("| label | bias | scatter (std) | robust scatter (1.4826 MAD) |")
    print("|---|---|---|---|")
    for j, name in enumerate(names):
        mad = 1.4826 * np.median(np.abs(diff[:, j] - np.median(diff[:, j])))
        print(f"| {name} | {diff[:, j].mean():+.3g} | {diff[:, j].std():.3g} | {mad:.3g} |")


if __name__ == "__main__":
    main()
