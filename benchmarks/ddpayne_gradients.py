"""DD-Payne's gradient regularisation: what it does to labels outside the well-sampled region.

A data-driven network learns the flux's label dependence from its training stars only; where
they are few it extrapolates. DD-Payne (Xiang et al. 2019, ApJS 245, 34) ties the network's
label gradients to those of a synthetic-spectrum model (``train_emulator(...,
gradient_model=..., gradient_weight=λ)``). The set-up, on the low-resolution grid of
``lowres_workflow.py`` (R = 2000, 3700–9800 Å, 4231 pixels):

- the *synthetic* model: a cubic Cannon fitted to noise-free spectra of the Doppler package's
  Cannon convolved to R = 2000 (2000 stars across the box Teff 4000–6500 K, log g 1.5–4.8,
  [Fe/H] −2.0–+0.4), i.e. the synthetic grid's model on the survey's pixels;
- the *observed* stars: the same spectra with every line 20 % deeper (real stars are not the
  synthetic ones), with noise at S/N 100;
- the *training set*: 600 observed stars with Teff in 4800–5600 K (the well-sampled region) and
  12 spread over the whole box (which they define);
- networks (resmlp width 128, 1 block, 800 epochs) for each λ of ``--weights``;
- 300 test stars across the box, fitted by the ordinary ``Fitter`` (rv 0, no continuum): bias and
  scatter inside the well-sampled Teff range and outside it.

    python benchmarks/ddpayne_gradients.py [--weights 0,0.001,0.01,0.1,1] [--epochs 800]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from lowres_workflow import BOX, NAMES, grid_wavelength, lowres_spectra  # noqa: E402

DEPTH = 1.2
WELL_SAMPLED = (4800.0, 5600.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="0,0.001,0.01,0.1,1")
    parser.add_argument("--epochs", type=int, default=800)
    parser.add_argument("--snr", type=float, default=100.0)
    args = parser.parse_args()

    from jaxpayne.datadriven import recovery_summary
    from jaxpayne.emulators.cannon import train_cannon
    from jaxpayne.fitting import Fitter, Flags
    from jaxpayne.forward import pad_observations
    from jaxpayne.grids import TrainingSet
    from jaxpayne.training import TrainingConfig, train_emulator

    rng = np.random.default_rng(0)
    wave = grid_wavelength()

    def draw(n, teff=None):
        labels = np.column_stack([rng.uniform(*BOX[k], n) for k in NAMES])
        if teff is not None:
            labels[:, 0] = rng.uniform(*teff, n)
        return labels

    def observed(labels):
        flux = 1.0 - DEPTH * (1.0 - lowres_spectra(labels))
        sigma = np.full_like(flux, 1.0 / args.snr)
        return flux + rng.normal(size=flux.shape) * sigma, sigma**-2.0

    t0 = time.perf_counter()
    grid_labels = draw(2000)
    synthetic_flux = lowres_spectra(grid_labels)
    keep = np.all(np.isfinite(synthetic_flux), axis=1) & (synthetic_flux.min(axis=1) > 0) & (synthetic_flux.max(axis=1) < 1.3)
    synthetic = train_cannon(grid_labels[keep], synthetic_flux[keep], None, label_names=NAMES, wavelength=wave,
                             order=3, medium="air")
    print(f"synthetic model: cubic Cannon on {keep.sum()} noise-free R=2000 spectra, {time.perf_counter() - t0:.1f} s")

    train_labels = np.vstack([draw(600, WELL_SAMPLED), draw(12)])
    train_flux, train_ivar = observed(train_labels)
    ts = TrainingSet(wave, train_labels, train_flux, NAMES, ivar=train_ivar, medium="air")
    test_labels = draw(300)
    test_flux, test_ivar = observed(test_labels)
    inside = (test_labels[:, 0] >= WELL_SAMPLED[0]) & (test_labels[:, 0] <= WELL_SAMPLED[1])
    print(f"training set: {len(train_labels)} stars ({np.mean((train_labels[:, 0] >= WELL_SAMPLED[0]) & (train_labels[:, 0] <= WELL_SAMPLED[1])):.0%} "
          f"with Teff in {WELL_SAMPLED[0]:.0f}–{WELL_SAMPLED[1]:.0f} K); test: {inside.sum()} inside, {(~inside).sum()} outside")
    print("| λ | training s | region | Teff bias / scatter [K] | log g bias / scatter | [Fe/H] bias / scatter |")
    print("|---|---|---|---|---|---|")
    for weight in (float(w) for w in args.weights.split(",")):
        config = TrainingConfig(emulator="resmlp", width=128, n_blocks=1, epochs=args.epochs, batch_size=64,
                                learning_rate=3e-3, patience=None, gradient_weight=weight)
        t0 = time.perf_counter()
        model = train_emulator(ts, config, progress=False, gradient_model=synthetic if weight > 0 else None).model
        seconds = time.perf_counter() - t0
        fitter = Fitter(model, rv=False, continuum="none")
        result = fitter.fit(pad_observations([fitter.observation(wave, f, i, medium="air")
                                              for f, i in zip(test_flux, test_ivar)]))
        ok = (result.flags & int(Flags.NOT_CONVERGED | Flags.FAILED)) == 0
        for name, rows in (("inside", inside), ("outside", ~inside)):
            s = recovery_summary(result.theta[:, :3], test_labels, NAMES, ok & rows)
            print(f"| {weight:g} | {seconds:.0f} | {name} | " + " | ".join(
                f"{s[n]['bias']:+.3g} / {s[n]['scatter']:.3g}" for n in NAMES) + " |", flush=True)


if __name__ == "__main__":
    main()
