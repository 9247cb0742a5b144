"""Fit throughput: jaxpayne's batched fitter against The Payne's way of fitting.

Baseline (The Payne, Ting et al. 2019): scipy ``curve_fit``, method "trf", finite-difference
Jacobian, ftol = xtol = 5e-4, one spectrum at a time, starting at the centre of the label box —
here calling the *same* compiled forward model (emulator → Doppler shift → resampling → 50 Å
continuum filter), so the only difference is the optimiser and batching.

Spectra: mock APOGEE spectra drawn from the binspec network itself (random labels in the central
80 % of its box, rv uniform in ±50 km/s, S/N 100), so both fitters have a known truth.

Prints time per spectrum and median χ² for the baseline and for jaxpayne at several batch sizes
and restart counts, and the speed ratio. The baseline is run three ways: as The Payne does it (box
centre, rv 0); from the true rv (an oracle start the real baseline does not have); and from the
true rv with tight tolerances (ftol = xtol = 1e-8), which shows what the baseline needs to reach
the χ² of a converged fit.

    python benchmarks/bench_fit.py [--n 64] [--baseline-n 16] [--batches 8,32,64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="spectra for jaxpayne")
    parser.add_argument("--baseline-n", type=int, default=16, help="spectra for the curve_fit baseline")
    parser.add_argument("--batches", default="8,32,64", help="batch sizes to time")
    parser.add_argument("--restarts", default="1,4", help="restart counts to time (starts from the best templates)")
    args = parser.parse_args()

    import jax
    from scipy.optimize import curve_fit

    import jaxpayne
    from jaxpayne.datasets import data_file
    from jaxpayne.fitting import Fitter, LMOptions
    from jaxpayne.forward import make_observation, pad_observations

    wave_file = data_file("binspec_apogee", "apogee_wavelength.npz")
    model = jaxpayne.load_model(data_file("binspec_apogee", "NN_normalized_spectra.npz"),
                                label_names="teff,logg,feh,mg_fe,vmacro", wavelength=wave_file)
    print(f"device: {jax.devices()[0].device_kind}; model {model.kind}, {model.n_pixels} pixels")

    rng = np.random.default_rng(42)
    lo, hi = model.bounds
    n = max(args.n, args.baseline_n)
    truth = lo + (hi - lo) * rng.uniform(0.1, 0.9, (n, lo.size))
    rv = rng.uniform(-50, 50, n)
    maker = Fitter(model, rv=True, max_rv=100.0, continuum="none", restarts=1, n_segments=3, emulator_error=False)
    fm_make = maker.forward
    wave = np.asarray(model.wavelength)
    segment = np.repeat([0, 1, 2], [2920, 2400, 1894]).astype(np.int32)
    ok = fm_make.valid_wavelength(wave)
    template = make_observation(wave, np.ones_like(wave), np.where(ok, 1.0, 0.0), segment)
    observations = []
    for i in range(n):
        clean = np.asarray(fm_make.model_flux(np.r_[truth[i], rv[i]], template))
        err = np.full(clean.size, 0.01)
        flux = clean + rng.normal(size=clean.size) * err
        observations.append(make_observation(wave, np.where(ok, flux, 0), np.where(ok, err**-2, 0), segment))

    def new_fitter(restarts, ftol=LMOptions().ftol):
        return Fitter(model, rv=True, max_rv=100.0, continuum="filter", restarts=restarts, n_segments=3,
                      emulator_error=False, lm_options=LMOptions(ftol=ftol))

    # ---------------------------------------------------------------- baseline: curve_fit
    fitter = new_fitter(1)
    fm = fitter.forward
    residual = jax.jit(lambda theta, obs: fm._residuals_impl(theta, obs, False, 1.0))
    residual(fm.initial, observations[0]).block_until_ready()
    rv_col = fm.param_names.index("rv")
    variants = {
        "box centre, rv 0 (The Payne)": 5e-4,
        "box centre, true rv (oracle start)": 5e-4,
        "box centre, true rv, ftol=xtol=1e-8 (oracle, converged)": 1e-8,
    }
    for variant, tol in variants.items():
      times, chi2_base, n_calls = [], [], []
      for k, obs in enumerate(observations[: args.baseline_n]):
        calls = [0]

        def f(_, *theta, obs=obs, calls=calls):
            calls[0] += 1
            return -np.asarray(residual(np.asarray(theta), obs), np.float64)

        t0 = time.perf_counter()
        p0 = fm.initial.copy()
        if "true rv" in variant:
            p0[rv_col] = rv[k]
        try:
            popt, _ = curve_fit(f, None, np.zeros(wave.size), p0=p0, bounds=(fm.lower, fm.upper), method="trf",
                                ftol=tol, xtol=tol)
        except RuntimeError:
            popt = p0
        times.append(time.perf_counter() - t0)
        chi2_base.append(float(np.sum(np.asarray(residual(popt, obs)) ** 2)))
        n_calls.append(calls[0])
      if "rv 0" in variant:
          base_time = float(np.mean(times))
      if "converged" in variant:
          converged_time = float(np.mean(times))
      print(f"\nbaseline curve_fit(trf, FD Jacobian), {variant}, {args.baseline_n} spectra, one at a time:")
      print(f"  {1e3 * np.mean(times):8.1f} ms/spectrum  median chi2 {np.median(chi2_base):9.1f}  "
            f"median model calls {np.median(n_calls):.0f}")

    # ---------------------------------------------------------------- jaxpayne batched LM
    print(f"\njaxpayne Fitter (template pre-search + LM, autodiff Jacobian), {args.n} spectra:")
    print(f"  {'restarts':>8s} {'ftol':>7s} {'batch':>6s} {'ms/spectrum':>12s} {'spectra/s':>10s} {'median chi2':>12s} "
          f"{'vs Payne':>9s} {'vs converged':>12s}")
    settings = [(int(r), LMOptions().ftol) for r in args.restarts.split(",")] + [(1, 5e-4)]
    for restarts, ftol in settings:
        fitter = new_fitter(restarts, ftol)
        for batch in [int(b) for b in args.batches.split(",")]:
            batches = [pad_observations(observations[i : i + batch]) for i in range(0, args.n - batch + 1, batch)]
            for b in batches:  # compile every shape once (steady state of a long survey run)
                fitter.fit(b)
            t0 = time.perf_counter()
            results = [fitter.fit(b) for b in batches]
            per = (time.perf_counter() - t0) / (len(batches) * batch)
            chi2 = np.concatenate([r.chi2 for r in results])
            print(f"  {restarts:8d} {ftol:7.0e} {batch:6d} {1e3 * per:12.2f} {1 / per:10.1f} {np.median(chi2):12.1f} "
                  f"{base_time / per:8.1f}x {converged_time / per:11.1f}x")
    print(f"\n(speed-up relative to the first baseline; pixels per spectrum ~{int(np.sum(ok))})")


if __name__ == "__main__":
    main()
