"""Binary (SB2) fits on binspec's networks: the real 2M13012770+5754582 and a batch of mocks.

Prints the single-star and binary fits of the real APOGEE combined spectrum (with binspec's own
result on the same file for comparison), then fits ``--n`` mock binaries (tied weights, S/N 80)
in one batch and reports the pulls and the time per binary fit next to the single-star fit of
the same batch (the compile excluded: every call is made twice, the second timed). With
``--visits``, instead, the joint orbit fit of the three real visits of 2M06133561+2433362 (tied
weights), its per-visit fits and the joint SB1 comparison, with binspec's result on the same
visits.

    python benchmarks/bench_binary.py [--n 16] [--weights tied] [--plot binary_fit.png]
    python benchmarks/bench_binary.py --visits
    python benchmarks/bench_binary.py --sample [--chains 2 --warmup 300 --samples 300]

``--sample`` draws the NUTS posterior of the tied binary of 2M13012770+5754582 (the posterior of
q, and of the companion's Teff₂ and log g₂ derived at every draw) next to the fit's Laplace errors.
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
#: binspec's ``fit_visit_spectra_sb2_model`` on the three visits of 2M06133561+2433362, started
#: (as its tutorial does) from its binary fit of visit 0, run here (benchmarks/README.md).
BINSPEC_VISITS = dict(teff_1=5017.0, logg_1=4.84, q=0.80, q_dyn=0.56, gamma=-29.3, chi2=189602.0,
                      chi2_sb1=292827.0, seconds_sb2=26.0, seconds_sb1=12.8)


def _timed(fn, *args):
    fn(*args)
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="mock binaries in the batch")
    parser.add_argument("--weights", default="tied", choices=["ratio", "physical", "tied"])
    parser.add_argument("--plot", metavar="PNG", help="draw the real star's data, single and binary fits, residuals")
    parser.add_argument("--visits", action="store_true", help="the joint fit of three real visits instead")
    parser.add_argument("--sample", action="store_true", help="the NUTS posterior of the real binary instead")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    if args.visits:
        return visits(args.weights)
    if args.sample:
        return posterior(args)

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
    if args.plot:
        plot_fits(fitter, real, result, args.plot)

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
        # the model is evaluated on every pixel; the range check wants those covered at both velocities
        covered = fitter.single.forward.valid_wavelength(wave, tuple(sorted((truth["rv_1"], truth["rv_2"]))))
        at_truth = template._replace(ivar=np.where(covered, 1.0, 0.0))
        model_flux = np.asarray(cm.model_flux({k: v for k, v in truth.items() if k in cm.param_names}, at_truth))
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


def plot_fits(fitter, obs, result, path) -> None:
    """The real star's data, single-star and binary fits and residuals (:func:`plot_binary_fit`)."""
    import matplotlib

    matplotlib.use("Agg")
    from jaxpayne.plotting import plot_binary_fit

    plot_binary_fit(fitter, obs, result, title="2M13012770+5754582").savefig(path, dpi=110)
    print(f"  wrote {path}")


def visits(weights: str) -> None:
    """The joint orbit fit of the three real visits of 2M06133561+2433362."""
    from jaxpayne.fitting.visits import VisitFitter
    from jaxpayne.payne_format import load_binspec_networks

    folder = data_file("binspec_apogee")
    model = jaxpayne.load_model(folder / "NN_normalized_spectra.npz", label_names="teff,logg,feh,mg_fe,vmacro",
                                wavelength=folder / "apogee_wavelength.npz")
    nets = load_binspec_networks(folder, model.label_names)
    t0 = time.perf_counter()
    fitter = VisitFitter(model, 3, velocities="orbit", binary=weights, networks=nets, continuum="cheb:4",
                         n_segments=3, max_rv=200.0)
    wave = np.asarray(model.wavelength)
    with np.load(folder / "spectra_visit_2M06133561+2433362.npz") as data:
        stars = [[fitter.observation(wave, f, error=np.where(e < 0.1, e, np.inf), segment="gaps")
                  for f, e in zip(data["spectra"], data["spec_errs"])]]
        vhelio = data["vhelios"]
    batch = fitter.batch(stars)
    result = fitter.fit(batch)
    first = time.perf_counter() - t0
    result, seconds = _timed(fitter.fit, batch)
    row = dict(zip(fitter.param_names, result.theta[0]))
    err = dict(zip(fitter.param_names, np.sqrt(np.diag(result.covariance[0]))))
    extra = {k: float(np.asarray(v)[0]) for k, v in result.extra.items()}
    print(f"2M06133561+2433362, 3 real APOGEE visits, orbit ({weights}); APOGEE vhelio {np.round(vhelio, 2)}")
    for name in fitter.param_names:
        print(f"  {name:10s} {row[name]:10.3f} ± {err[name]:.3f}")
    for name in fitter.derived:
        print(f"  {name:10s} {extra[name]:10.3f} ± {extra[name + '_err']:.3f}")
    print("  visit   rv_1 joint  rv_1 alone   rv_2 joint  rv_2 alone")
    for v in range(3):
        print(f"  {v:5d} {row[f'rv_1_v{v}']:11.2f} {extra[f'visit_rv_1_v{v}']:11.2f} "
              f"{extra[f'rv_2_v{v}']:12.2f} {extra[f'visit_rv_2_v{v}']:11.2f}")
    print(f"  chi2 {result.chi2[0]:.0f} / dof {result.dof[0]} ({result.chi2[0] / result.dof[0]:.3f}), flags "
          f"{result.flags[0]}; joint SB1 chi2 {extra['chi2_single']:.0f}, delta_chi2 {extra['delta_chi2']:.0f}, "
          f"delta_bic {extra['delta_bic']:.0f}")
    print(f"  binspec (fit_visit_spectra_sb2_model): {BINSPEC_VISITS}")
    print(f"  time: {seconds:.1f} s compiled (per-visit fits, joint orbit and joint SB1 fits); first call with "
          f"compiles {first:.1f} s; binspec {BINSPEC_VISITS['seconds_sb2'] + BINSPEC_VISITS['seconds_sb1']:.1f} s "
          "(SB2 + SB1 visit fits, after its per-visit fit)")


def posterior(args) -> None:
    """The NUTS posterior of the binary 2M13012770+5754582 next to its fit's Laplace errors."""
    from jaxpayne.forward import pad_observations
    from jaxpayne.payne_format import load_binspec_networks
    from jaxpayne.sampling import Sampler, summarize

    folder = data_file("binspec_apogee")
    model = jaxpayne.load_model(folder / "NN_normalized_spectra.npz", label_names="teff,logg,feh,mg_fe,vmacro",
                                wavelength=folder / "apogee_wavelength.npz")
    nets = load_binspec_networks(folder, model.label_names)
    sampler = Sampler(model, binary=args.weights, networks=nets, continuum="cheb:4", n_segments=3, max_rv=200.0,
                      chains=args.chains, warmup=args.warmup, samples=args.samples, chain_method="sequential")
    wave = np.asarray(model.wavelength)
    with np.load(folder / "spectrum_combined_2M13012770+5754582.npz") as data:
        flux, error = data["spectrum"], data["spec_err"]
    obs = sampler.observation(wave, flux, error=np.where(error < 0.1, error, np.inf), segment="gaps")
    batch = pad_observations([obs])
    t0 = time.perf_counter()
    fit = sampler.fitter.fit(batch)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    idata = sampler.sample(batch, fit=fit, progress=False)
    t_sample = time.perf_counter() - t0
    row = summarize(idata)[0]
    laplace = np.sqrt(np.diag(fit.covariance[0]))
    print(f"2M13012770+5754582, {args.weights} binary: NUTS {args.chains} chains x ({args.warmup} warmup + "
          f"{args.samples} draws), sequential")
    print("  parameter        fit ± laplace           posterior mean ± sd      p16 .. p84        r_hat  ess_bulk")
    for j, name in enumerate(sampler.space.free_names):
        print(f"  {name:12s} {fit.theta[0, j]:10.3f} ± {laplace[j]:8.3f}   {row[name + '_mean']:10.3f} ± "
              f"{row[name + '_sd']:8.3f}   {row[name + '_p16']:8.3f} .. {row[name + '_p84']:8.3f}  "
              f"{row[name + '_r_hat']:.3f}  {row[name + '_ess_bulk']:7.0f}")
    for name in sampler.derived:
        print(f"  {name:12s} {fit.extra[name][0]:10.3f} ± {fit.extra[name + '_err'][0]:8.3f}   "
              f"{row[name + '_mean']:10.3f} ± {row[name + '_sd']:8.3f}   {row[name + '_p16']:8.3f} .. "
              f"{row[name + '_p84']:8.3f}  {row[name + '_r_hat']:.3f}  {row[name + '_ess_bulk']:7.0f}")
    print(f"  divergences {row['n_divergent']}, mean leapfrog steps {row['mean_steps']:.1f}, flags {row['message']!r}")
    print(f"  time: fit {t_fit:.1f} s, sampling {t_sample:.1f} s (both with their compiles)")


if __name__ == "__main__":
    main()
