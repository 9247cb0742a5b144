"""Is the fitter efficient? Best fits of many noise realisations against the Cramér–Rao bound.

One noise-free mock APOGEE spectrum from the published binspec network (5 labels) on its own
7214-pixel grid, rv free as a nuisance parameter, S/N 100 per pixel; ``--n`` noise realisations
are fitted in batches by the Levenberg–Marquardt fitter and, per parameter, the scatter of the
best fits and the median Laplace error are compared with the CRLB √(F⁻¹)_ii of the same
likelihood. An efficient, unbiased estimator has ratio 1; with n realisations the scatter's
standard error is 1/√(2(n−1)) (4.5 % at n = 250).

    python benchmarks/crlb_efficiency.py --n 500
"""

from __future__ import annotations

import argparse
import time

#: A dwarf inside the binspec network's box (Teff 4200–7000 K, logg 4.0–5.0).
TRUTH = {"teff": 5500.0, "logg": 4.4, "feh": -0.2, "mg_fe": 0.1, "vmacro": 5.0, "rv": 3.0}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="noise realisations (default 500)")
    parser.add_argument("--snr", type=float, default=100.0, help="S/N per pixel (default 100)")
    parser.add_argument("--continuum", default="filter", help="continuum treatment (default filter)")
    parser.add_argument("--batch", type=int, default=125, help="spectra per fitted batch (default 125)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numpy as np

    import jaxpayne
    from jaxpayne.datasets import data_file
    from jaxpayne.fitting import Fitter
    from jaxpayne.forward import LikelihoodSettings, pad_observations
    from jaxpayne.information import crlb, mock_observation

    wave_file = data_file("binspec_apogee", "apogee_wavelength.npz")
    model = jaxpayne.load_model(data_file("binspec_apogee", "NN_normalized_spectra.npz"), format="binspec",
                                label_names="teff,logg,feh,mg_fe,vmacro", wavelength=wave_file)
    fitter = Fitter(model, rv=True, max_rv=50.0, continuum=args.continuum, n_segments=3, emulator_error=False)
    fm = fitter.forward
    wave = np.asarray(model.wavelength)
    from jaxpayne.forward import segments_from_gaps

    covered = fm.valid_wavelength(wave)
    wave = wave[covered]
    clean = mock_observation(fm, TRUTH, wave, args.snr, segment=segments_from_gaps(wave))
    start = time.perf_counter()
    bounds = crlb(fm, TRUTH, clean, settings=LikelihoodSettings(emulator_error=False))
    crlb_seconds = time.perf_counter() - start
    rng = np.random.default_rng(args.seed)
    flux, sigma = np.asarray(clean.flux, np.float64), np.asarray(clean.ivar, np.float64) ** -0.5
    thetas, errors, flags = [], [], []
    start = time.perf_counter()
    for first in range(0, args.n, args.batch):
        size = min(args.batch, args.n - first)
        noisy = [clean._replace(flux=(flux + rng.normal(size=flux.size) * sigma).astype(np.float32))
                 for _ in range(size)]
        result = fitter.fit(pad_observations(noisy + noisy[:1] * (args.batch - size)))
        thetas.append(result.theta[:size])
        errors.append(np.sqrt(np.diagonal(result.covariance, axis1=1, axis2=2))[:size])
        flags.append(result.flags[:size])
    fit_seconds = time.perf_counter() - start
    theta, error, flags = np.concatenate(thetas), np.concatenate(errors), np.concatenate(flags)
    good = (flags & int(jaxpayne.Flags.FAILED)) == 0
    truth = fm.pack(TRUTH)
    print(f"{args.n} realisations, S/N {args.snr:g}/pixel, {bounds.n_pixels} pixels, continuum {args.continuum}, "
          f"rv free; {int((~good).sum())} failed; CRLB {crlb_seconds:.1f} s (compile incl.), fits {fit_seconds:.1f} s")
    se = 1 / np.sqrt(2 * (good.sum() - 1))
    print(f"scatter standard error ±{100 * se:.1f} %")
    print(f"{'param':>8s} {'truth':>9s} {'CRLB':>10s} {'scatter':>10s} {'ratio':>6s} {'Laplace':>10s} {'ratio':>6s} "
          f"{'bias/σ_mean':>11s}")
    worst = 0.0
    for j, name in enumerate(bounds.names):
        scatter = theta[good, j].std(ddof=1)
        laplace = np.median(error[good, j])
        bias = (theta[good, j].mean() - truth[j]) / (scatter / np.sqrt(good.sum()))
        worst = max(worst, abs(scatter / bounds.sigma[j] - 1), abs(laplace / bounds.sigma[j] - 1))
        print(f"{name:>8s} {truth[j]:9.3f} {bounds.sigma[j]:10.4g} {scatter:10.4g} {scatter / bounds.sigma[j]:6.3f} "
              f"{laplace:10.4g} {laplace / bounds.sigma[j]:6.3f} {bias:11.2f}")
    print(f"largest |ratio − 1|: {100 * worst:.1f} % (goal ≤ 10 %)")


if __name__ == "__main__":
    main()
