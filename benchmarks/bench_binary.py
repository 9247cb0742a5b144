"""Binary (SB2) fits on binspec's networks: the real 2M13012770+5754582 and a batch of mocks.

Prints the single-star and binary fits of the real APOGEE combined spectrum (with binspec's own
result on the same file for comparison), then fits ``--n`` mock binaries (tied weights, S/N 80)
in one batch and reports the pulls and the time per binary fit next to the single-star fit of
the same batch (the compile excluded: every call is made twice, the second timed).

    python benchmarks/bench_binary.py [--n 16] [--weights tied]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import jaxpayne
from jaxpayne.datasets import data_file

#: binspec's ``fitting.py`` (github.com/kareemelbadry/binspec, commit 537b62c) on the same file,
#: run on this machine: single fit_normalized_spectrum_single_star_model, binary
#: fit_normalized_spectrum_binary_model (num_p0=10), seeds 0 (see benchmarks/README.md).
BINSPEC = {"single": dict(teff=4921.4, logg=4.498, feh=-0.193, mg_fe=0.096, vmacro=16.22, rv=0.97),
           "binary": dict(teff_1=5073.0, logg_1=4.453, feh=-0.152, mg_fe=0.094, q=0.817, vmacro_1=1.76,
                          vmacro_2=5.32, rv_1=3.37, rv_2=-12.43, teff_2=4249.5, logg_2=4.646),
           "delta_chi2": 15441.2, "seconds_single": 1.14, "seconds_binary": 7.17}


def _timed(fn, *args):
    fn(*args)
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="mock binaries in the batch")
    parser.add_argument("--weights", default="tied", choices=["ratio", "physical", "tied"])
    args = parser.parse_args()

    from jaxpayne.fitting.binary import BinaryFitter
    from jaxpayne.fitting.run import pad_batch
    from jaxpayne.payne_format import load_binspec_networks

    folder = data_file("binspec_apogee")
    model = jaxpayne.load_model(folder / "NN_normalized_spectra.npz", label_names="teff,logg,feh,mg_fe,vmacro",
                                wavelength=folder / "apogee_wavelength.npz")
    nets = load_binspec_networks(folder, model.label_names)
    fitter = BinaryFitter(model, weights=args.weights, networks=nets, continuum="cheb:4", n_segments=3,
                          max_rv=200.0)
    cm = fitter.forward
    wave = np.asarray(model.wavelength)
    segment = np.repeat([0, 1, 2], [2920, 2400, 1894])

    with np.load(folder / "spectrum_combined_2M13012770+5754582.npz") as data:
        flux, error = data["spectrum"], data["spec_err"]
    real = fitter.observation(wave, flux, error=np.where(error < 0.1, error, np.inf), segment=segment)
    result, seconds = _timed(fitter.fit, pad_batch([real], 1))
    row = dict(zip(fitter.param_names, result.theta[0]))
    row.update({k: v[0] for k, v in result.extra.items()})
    print("2M13012770+5754582 (real APOGEE combined spectrum), weights", args.weights)
    print("  single  jaxpayne:", {n: round(float(row[f"single_{n}"]), 3) for n in fitter.single.param_names})
    print("  single  binspec: ", BINSPEC["single"])
    print("  binary  jaxpayne:", {n: round(float(row[n]), 3) for n in (*fitter.param_names, *fitter.derived)})
    print("  binary  binspec: ", BINSPEC["binary"])
    print(f"  delta_chi2 {row['delta_chi2']:.1f} (binspec {BINSPEC['delta_chi2']}), delta_bic "
          f"{row['delta_bic']:.1f}, chi2_red {result.chi2[0] / result.dof[0]:.3f}, flags {result.flags[0]}")
    print(f"  one star, single + binary: {seconds:.2f} s (binspec, numpy, one thread: "
          f"{BINSPEC['seconds_single'] + BINSPEC['seconds_binary']:.2f} s)")

    rng = np.random.default_rng(1)
    template = fitter.observation(wave, np.ones_like(wave), np.ones_like(wave), segment=segment)
    truths, batch = [], []
    for _ in range(args.n):
        rv_1 = rng.uniform(-20, 20)
        truth = dict(teff_1=rng.uniform(5400, 6200), logg_1=rng.uniform(4.2, 4.45), feh=rng.uniform(-0.4, 0.2),
                     mg_fe=rng.uniform(0.0, 0.15), vmacro_1=rng.uniform(3, 7), rv_1=rv_1, vmacro_2=rng.uniform(3, 7),
                     rv_2=rv_1 + rng.choice([-1, 1]) * rng.uniform(25, 50))
        if args.weights == "tied":
            truth["q"] = rng.uniform(0.65, 0.85)
        else:
            truth.update(teff_2=truth["teff_1"] - rng.uniform(400, 900), logg_2=min(4.8, truth["logg_1"] + 0.15))
            truth.update({n: rng.uniform(0.3, 0.7) for n in cm.param_names if n.startswith("flux_ratio")})
        model_flux = np.asarray(cm.model_flux({k: v for k, v in truth.items() if k in cm.param_names}, template))
        continuum = 1.0 + 0.1 * np.sin(wave / 300.0)
        noisy = (model_flux + rng.normal(size=wave.size) / 80.0) * continuum
        batch.append(fitter.observation(wave, noisy, error=continuum / 80.0, segment=segment))
        truths.append(cm.pack({k: v for k, v in truth.items() if k in cm.param_names}))
    padded = pad_batch(batch, args.n)
    result, seconds = _timed(fitter.fit, padded)
    _, seconds_single = _timed(fitter.single.fit, padded)
    clean = result.flags == 0
    pulls = (result.theta - np.array(truths)) / np.sqrt(np.einsum("bii->bi", result.covariance))
    print(f"\n{args.n} mock binaries ({args.weights}, S/N 80): {clean.sum()} unflagged")
    for j, name in enumerate(fitter.param_names):
        p = pulls[clean, j]
        print(f"  {name:16s} pull mean {p.mean():+.2f}  rms {np.sqrt(np.mean(p**2)):.2f}  max |{np.abs(p).max():.2f}|")
    print(f"  binary fits (single + pre-search + LM): {seconds:.2f} s = {seconds / args.n:.3f} s/star "
          f"({args.n / seconds:.2f} binaries/s)")
    print(f"  single-star fits alone:                 {seconds_single:.2f} s = {seconds_single / args.n:.3f} s/star "
          f"({args.n / seconds_single:.2f} stars/s)")


if __name__ == "__main__":
    main()
