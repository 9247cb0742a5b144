"""Fit throughput: jaxpayne's batched fitter against The Payne's way of fitting.

Baseline (The Payne, Ting et al. 2019): scipy ``curve_fit``, method "trf", finite-difference
Jacobian, ftol = xtol = 5e-4, one spectrum at a time, in The Payne's scaled labels (−0.5…0.5)
and rv [km/s], starting at the centre of the label box — here calling the *same* compiled forward
model (emulator → Doppler shift → resampling → 50 Å continuum filter) in float64 (as The Payne's
numpy model; finite differences of a float32 model are noise), so the only difference is the
optimiser, the precision and batching. jaxpayne fits in float32.

Spectra: mock APOGEE spectra drawn from the model itself (random labels in the central 80 % of its
box, rv uniform in ±50 km/s, S/N 100), so both fitters have a known truth. Models:

* ``--model binspec`` (default): the published binspec network (5 labels, per-pixel networks);
* ``--model mlp25``: The Payne's architecture at survey size — 25 labels, two hidden layers of 300,
  7214 APOGEE pixels — with random weights scaled to give spectra of unit continuum with
  percent-level label dependence (for throughput, e.g. the GPU target of ≥ 5000 spectra/s; the
  labels mean nothing).

Prints time per spectrum and median χ² for the baseline and for jaxpayne at several batch sizes
and restart counts (fastest of ``--repeat`` passes, after a compiling pass), the χ² difference on
the spectra both fitted, and the speed ratios. The baseline is run three ways: as The Payne does it (box
centre, rv 0); from the true rv (an oracle start the real baseline does not have); and from the
true rv with tight tolerances (ftol = xtol = 1e-8), which shows what the baseline needs to reach
the χ² of a converged fit.

    python benchmarks/bench_fit.py [--n 64] [--baseline-n 16] [--batches 8,32,64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def payne_mlp_25(wavelength, seed=0):
    """A 25-label, 2×300 Payne MLP on ``wavelength`` with random weights (see module docstring)."""
    import jax
    import jax.numpy as jnp

    from jaxpayne import LabelSpec, Model
    from jaxpayne.emulators import build_emulator

    elements = ["c", "n", "o", "na", "mg", "al", "si", "p", "s", "k", "ca", "ti", "v", "cr", "mn", "co", "ni",
                "cu", "ce", "nd", "rb"]
    names = ["teff", "logg", "vmic", "feh"] + [f"{e}_fe" for e in elements]
    lower = np.array([3500.0, 0.0, 0.5, -2.5] + [-0.5] * len(elements))
    upper = np.array([7000.0, 5.0, 3.0, 0.5] + [0.5] * len(elements))
    config = {"n_pixels": int(wavelength.size), "hidden": [300, 300], "activation": "leaky_relu"}
    module = build_emulator("mlp", config)
    params = module.init(jax.random.PRNGKey(seed), jnp.zeros((1, len(names))))
    params = jax.tree_util.tree_map(np.asarray, params)
    params["params"]["output"]["kernel"] = params["params"]["output"]["kernel"] * 0.05
    params["params"]["output"]["bias"] = np.ones_like(params["params"]["output"]["bias"])
    labels = LabelSpec(tuple(names), lower, upper, tuple("K" if n == "teff" else "km/s" if n == "vmic" else "dex"
                                                         for n in names))
    return Model("mlp", config, params, labels, wavelength)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="spectra for jaxpayne")
    parser.add_argument("--baseline-n", type=int, default=16, help="spectra for the curve_fit baseline")
    parser.add_argument("--batches", default="8,32,64", help="batch sizes to time")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes over the spectra; the fastest counts")
    parser.add_argument("--model", choices=["binspec", "mlp25"], default="binspec", help="emulator (see above)")
    parser.add_argument("--restarts", default="1,4", help="restart counts to time (starts from the best templates)")
    args = parser.parse_args()

    import jax

    previous_x64 = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)  # the baseline's model runs in float64
    try:
        run(args)
    finally:
        jax.config.update("jax_enable_x64", previous_x64)


def run(args):
    import jax
    from scipy.optimize import curve_fit

    import jaxpayne
    from jaxpayne.datasets import data_file
    from jaxpayne.fitting import Fitter, LMOptions
    from jaxpayne.forward import make_observation, pad_observations

    wave_file = data_file("binspec_apogee", "apogee_wavelength.npz")
    if args.model == "binspec":
        model = jaxpayne.load_model(data_file("binspec_apogee", "NN_normalized_spectra.npz"),
                                    label_names="teff,logg,feh,mg_fe,vmacro", wavelength=wave_file)
    else:
        model = payne_mlp_25(np.load(wave_file)["wavelength"])
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

    observations64 = observations
    observations = [jax.tree_util.tree_map(lambda a: a.astype(np.float32) if a.dtype == np.float64 else a, o)
                    for o in observations]

    def new_fitter(restarts, ftol=LMOptions().ftol):
        return Fitter(model, rv=True, max_rv=100.0, continuum="filter", restarts=restarts, n_segments=3,
                      emulator_error=False, lm_options=LMOptions(ftol=ftol))

    # ---------------------------------------------------------------- baseline: curve_fit
    fitter = new_fitter(1)
    fm = fitter.forward
    from jaxpayne.forward import LikelihoodSettings, residuals

    no_error = LikelihoodSettings(emulator_error=False)
    residual = jax.jit(lambda theta, obs: residuals(fm, theta, obs, settings=no_error))
    residual(fm.initial, observations64[0]).block_until_ready()
    rv_col = fm.param_names.index("rv")
    n_lab = lo.size

    def physical(p):  # The Payne's scaled labels (and rv in km/s) → forward-model parameters
        return np.r_[lo + (np.asarray(p[:n_lab]) + 0.5) * (hi - lo), p[n_lab:]]

    p_lower = np.r_[np.full(n_lab, -0.5), fm.lower[n_lab:]]
    p_upper = np.r_[np.full(n_lab, 0.5), fm.upper[n_lab:]]
    variants = {
        "box centre, rv 0 (The Payne)": 5e-4,
        "box centre, true rv (oracle start)": 5e-4,
        "box centre, true rv, ftol=xtol=1e-8 (oracle, converged)": 1e-8,
    }
    for variant, tol in variants.items():
      times, chi2_base, n_calls = [], [], []
      for k, obs in enumerate(observations64[: args.baseline_n]):
        calls = [0]

        def f(_, *p, obs=obs, calls=calls):
            calls[0] += 1
            return -np.asarray(residual(physical(p), obs), np.float64)

        t0 = time.perf_counter()
        p0 = np.zeros(fm.n_params)
        if "true rv" in variant:
            p0[rv_col] = rv[k]
        try:
            popt, _ = curve_fit(f, None, np.zeros(wave.size), p0=p0, bounds=(p_lower, p_upper), method="trf",
                                ftol=tol, xtol=tol)
        except RuntimeError:
            popt = p0
        times.append(time.perf_counter() - t0)
        chi2_base.append(float(np.sum(np.asarray(residual(physical(popt), obs)) ** 2)))
        n_calls.append(calls[0])
      if "rv 0" in variant:
          base_time = float(np.mean(times))
          base_chi2 = np.array(chi2_base)
      if "converged" in variant:
          converged_time = float(np.mean(times))
      print(f"\nbaseline curve_fit(trf, FD Jacobian), {variant}, {args.baseline_n} spectra, one at a time:")
      print(f"  {1e3 * np.mean(times):8.1f} ms/spectrum  median chi2 {np.median(chi2_base):9.1f}  "
            f"median model calls {np.median(n_calls):.0f}")

    # ---------------------------------------------------------------- jaxpayne batched LM
    print(f"\njaxpayne Fitter (template pre-search + LM, autodiff Jacobian), {args.n} spectra:")
    print(f"  {'restarts':>8s} {'ftol':>7s} {'batch':>6s} {'ms/spectrum':>12s} {'spectra/s':>10s} {'median chi2':>12s} "
          f"{'dchi2 med':>10s} {'dchi2 max':>10s} {'vs Payne':>9s} {'vs converged':>12s}")
    settings = [(int(r), LMOptions().ftol) for r in args.restarts.split(",")] + [(1, 5e-4)]
    for restarts, ftol in settings:
        fitter = new_fitter(restarts, ftol)
        for batch in [int(b) for b in args.batches.split(",")]:
            batches = [pad_observations(observations[i : i + batch]) for i in range(0, args.n - batch + 1, batch)]
            for b in batches:  # compile every shape once (steady state of a long survey run)
                fitter.fit(b)
            per = np.inf
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                results = [fitter.fit(b) for b in batches]
                per = min(per, (time.perf_counter() - t0) / (len(batches) * batch))
            chi2 = np.concatenate([r.chi2 for r in results])
            theta = np.concatenate([r.theta for r in results])
            # both fits' χ² in float64 on the spectra both fitted: jaxpayne − baseline
            m = min(args.baseline_n, theta.shape[0])
            delta = [float(np.sum(np.asarray(residual(theta[k], observations64[k])) ** 2)) - base_chi2[k]
                     for k in range(m)]
            print(f"  {restarts:8d} {ftol:7.0e} {batch:6d} {1e3 * per:12.2f} {1 / per:10.1f} {np.median(chi2):12.1f} "
                  f"{np.median(delta):10.2f} {np.max(delta):10.2f} {base_time / per:8.1f}x {converged_time / per:11.1f}x")
    print(f"\n(speed-ups against the first and the last baseline; dchi2 = jaxpayne − The Payne baseline on "
          f"the first {args.baseline_n} spectra, both in float64; pixels per spectrum ~{int(np.sum(ok))})")


if __name__ == "__main__":
    main()
