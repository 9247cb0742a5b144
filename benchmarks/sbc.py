"""Simulation-based calibration (Talts et al. 2018, arXiv:1804.06788) of the NUTS sampler.

N mock stars: parameters θ* drawn from the prior P — exactly the prior the sampler uses, truncated
to the box by :meth:`Prior.sample` as the sampler truncates it — and spectra simulated through the
sampler's own forward model with Gaussian noise of the stated errors (so the likelihood is exact).
The emulator is the small :class:`~jaxpayne.forward.synthetic.SyntheticLineEmulator` of
``tests/test_sampling.py`` (3 labels, 14 lines, 360 px; observed 260 px) with rv free. All stars
are sampled in one batched :meth:`Sampler.sample` call (or ``--chunk`` stars per call).

The prior: teff ~ N(5500, 500) K, logg ~ N(3.0, 0.4), [Fe/H] uniform over the box [−2, 0.5]
(the walls are part of the test), rv ~ N(0, 10) km/s; all truncated to the box.

If the sampler is right, the rank of θ* among (thinned) posterior draws is uniform for every
parameter. Printed: per parameter the coverage of the 68 % and 95 % central intervals (±
binomial σ), the KS statistic and p-value of the normalised ranks (randomised to break ties,
so uniform on (0, 1) under the null), the rank-ECDF's largest departure against the 95 %
simultaneous band 1.358/√N; the share of stars with r_hat < 1.01 and ess_bulk > 400 in every
parameter, and the divergence rate. ``--out`` gets the figure: per parameter the ECDF of the
normalised ranks minus the uniform CDF with the 95 % band (top), and the rank histogram with
its 99 % binomial band (bottom).

Draws are thinned before ranking (``--thin``; default auto = total draws / median min-ess_bulk)
so autocorrelation does not bend the rank distribution into a ∪ shape.

    python benchmarks/sbc.py --stars 256 --chains 4 --warmup 300 --samples 300 --out /tmp/sbc.png

``--terms seismic,photometry`` adds the joint-likelihood terms (issue #15): ν_max and Δν
(``Seismic``; measured to 2 % and 1 %), and a parallax with G and Ks (``Photometry``, MIST
bolometric corrections; σ 0.02 mas, 0.01 and 0.02 mag, no magnitude floor), simulated from the
true labels and latent parameters with those errors. The latent parameters get priors in the
same ``Prior`` the truths are drawn from: mass ~ N(1.3, 0.3) M☉, distance ~ N(800, 150) pc,
A_V ~ N(0.3, 0.1) mag (truncated to their boxes), and are ranked like the labels.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

OPTIONS = dict(rv=True, max_rv=50.0, continuum="none", emulator_error=False, templates=32)


def emulator():
    from jaxpayne.forward.synthetic import SyntheticLineEmulator

    wave = np.exp(np.linspace(np.log(5000.0), np.log(5030.0), 360))
    return SyntheticLineEmulator(wave, n_lines=14, seed=5)


def obs_wave():
    return np.exp(np.linspace(np.log(5004.0), np.log(5026.0), 260))


def the_prior(terms=()):
    import numpyro.distributions as dist

    from jaxpayne.sampling import Prior

    priors = {"teff": dist.Normal(5500.0, 500.0), "logg": dist.Normal(3.0, 0.4), "rv": dist.Normal(0.0, 10.0)}
    latent = {lat.name for term in terms for lat in term.latent}
    extra = {"mass": dist.Normal(1.3, 0.3), "distance": dist.Normal(800.0, 150.0), "av": dist.Normal(0.3, 0.1)}
    priors.update({k: v for k, v in extra.items() if k in latent})
    return Prior(priors, name="sbc" + ("+" + "+".join(t.name for t in terms) if terms else ""))


def make_terms(names):
    """The terms of ``--terms`` and the relative/absolute errors of their simulated data."""
    terms, errors = [], {}
    for name in filter(None, names.split(",")):
        if name == "seismic":
            from jaxpayne.sampling import Seismic

            terms.append(Seismic())
            errors.update(numax=("relative", 0.02), dnu=("relative", 0.01))
        elif name == "photometry":
            from jaxpayne.photometry import Photometry

            terms.append(Photometry(["G", "Ks"], distance_length=None, magnitude_floor=0.0))
            errors.update(parallax=("absolute", 0.02), phot_g_mean_mag=("absolute", 0.01), ks_m=("absolute", 0.02))
        else:
            raise SystemExit(f"unknown term {name!r}: seismic, photometry")
    return terms, errors


def simulate_constraints(sampler, truth, errors, seed: int) -> dict:
    """Each term's measurements of the true parameters, with Gaussian noise of the stated errors."""
    import jax
    import jax.numpy as jnp

    space = sampler.space
    rng = np.random.default_rng(seed)

    def predict(t):
        values = space.unflatten(t)
        out = {}
        for term in sampler.posterior.terms:
            out.update(term.predict(values))
        return out

    predicted = {k: np.asarray(v, np.float64) for k, v in jax.jit(jax.vmap(predict))(jnp.asarray(truth)).items()}
    constraints = {}
    for name, value in predicted.items():
        kind, size = errors[name]
        sigma = size * np.abs(value) if kind == "relative" else np.full(value.shape, size)
        constraints[name] = value + rng.normal(size=value.shape) * sigma
        constraints[f"{name}_err"] = sigma
    return constraints


def simulate(sampler, truth, snr: float, seed: int):
    """Noisy spectra from the sampler's forward model, as a padded batch of observations."""
    import jax
    import jax.numpy as jnp

    from jaxpayne.forward import make_observation, pad_observations

    rng = np.random.default_rng(seed)
    w = obs_wave()
    template = make_observation(w, np.ones_like(w))
    fm = sampler.forward
    clean = np.asarray(jax.jit(jax.vmap(lambda t: fm.model_flux(t, template)))(jnp.asarray(truth, jnp.float32)),
                       np.float64)
    err = np.full(w.size, 1.0 / snr)
    flux = clean + rng.normal(size=clean.shape) * err
    return pad_observations([sampler.observation(w, f, err**-2) for f in flux])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=0, help="stars per Sampler.sample call (0: all in one)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--chain-method", default="auto", choices=["vectorized", "sequential", "auto"])
    parser.add_argument("--max-tree-depth", type=int, default=8)
    parser.add_argument("--snr", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--thin", default="auto", help="keep every k-th draw of each chain before ranking")
    parser.add_argument("--out", default="/tmp/sbc.png", help="the figure (PNG)")
    parser.add_argument("--json", default=None, help="also write ranks and figures here")
    parser.add_argument("--terms", default="", help="joint-likelihood terms: seismic, photometry (comma-separated)")
    args = parser.parse_args()

    import jax

    from jaxpayne.sampling import Sampler, summarize

    t_start = time.perf_counter()
    terms, errors = make_terms(args.terms)
    prior = the_prior(terms)
    sampler = Sampler(emulator(), prior=prior, chains=args.chains, warmup=args.warmup, samples=args.samples,
                      chain_method=args.chain_method, max_tree_depth=args.max_tree_depth, seed=args.seed,
                      terms=terms, **OPTIONS)
    space = sampler.space
    names = list(space.free_names)
    truth = prior.sample(jax.random.PRNGKey(args.seed + 1), space, args.stars)
    batch = simulate(sampler, truth[:, :sampler.forward.space.n_free], args.snr, seed=args.seed + 2)
    constraints = simulate_constraints(sampler, truth, errors, seed=args.seed + 4) if terms else None
    print(f"device: {jax.devices()[0].device_kind}; {args.stars} stars, S/N {args.snr:g}, parameters {names}; "
          f"prior: {prior.describe()}")
    print(f"{args.chains} chains x ({args.warmup} + {args.samples}), {args.chain_method}, "
          f"max_tree_depth {args.max_tree_depth}")

    chunk = args.chunk or args.stars
    draws = {n: [] for n in names}
    rows, walls, grads, lockstep, steps = [], [], [], [], []
    for start in range(0, args.stars, chunk):
        part = jax.tree_util.tree_map(lambda a: a[start:start + chunk], batch)
        t0 = time.perf_counter()
        part_constraints = None if constraints is None else {k: v[start:start + chunk] for k, v in constraints.items()}
        idata = sampler.sample(part, ids=[f"s{i}" for i in range(start, start + int(part.flux.shape[0]))],
                               progress=False, constraints=part_constraints)
        walls.append(time.perf_counter() - t0)
        attrs = idata.posterior.attrs
        grads.append(int(attrs["gradient_evaluations"]))
        lockstep.append(float(attrs["lockstep_efficiency"]))
        steps.append(float(attrs["mean_leapfrog_steps"]))
        for n in names:
            draws[n].append(np.asarray(idata.posterior[n].values, np.float64))  # (C, S, B)
        rows += summarize(idata)
        print(f"  stars {start}..{start + part.flux.shape[0] - 1}: {walls[-1]:.1f} s, {grads[-1]} gradients, "
              f"lockstep {lockstep[-1]:.3f}", flush=True)
    draws = {n: np.concatenate(v, axis=2) for n, v in draws.items()}
    n_chain, n_draw = draws[names[0]].shape[:2]
    total = n_chain * n_draw

    r_hat = np.array([[r[f"{n}_r_hat"] for n in names] for r in rows])
    ess = np.array([[r[f"{n}_ess_bulk"] for n in names] for r in rows])
    div = np.array([r["divergence_rate"] for r in rows])
    cap = np.array([r["max_depth_rate"] for r in rows])
    ok = np.all(np.isfinite(np.stack([draws[n][0, 0] for n in names])), axis=0)  # stars with a posterior
    n_ok = int(ok.sum())
    if args.thin == "auto":
        thin = max(1, int(math.floor(total / max(np.median(np.nanmin(ess[ok], axis=1)), 1.0))))
    else:
        thin = max(1, int(args.thin))

    rng = np.random.default_rng(args.seed + 3)
    ranks, table = {}, []
    from scipy.stats import kstest

    for j, n in enumerate(names):
        d = draws[n][:, ::thin, :][:, :, ok].reshape(-1, n_ok)  # (L, N)
        t = truth[ok, j]
        below = np.sum(d < t, axis=0)
        ties = np.sum(d == t, axis=0)
        rank = below + rng.integers(0, ties + 1)  # ties broken at random
        level = d.shape[0]
        u = (rank + rng.uniform(size=n_ok)) / (level + 1)  # randomised: uniform on (0, 1) under the null
        ranks[n] = u
        full = draws[n][:, :, ok].reshape(-1, n_ok)
        lo68, hi68, lo95, hi95 = np.percentile(full, [16, 84, 2.5, 97.5], axis=0)
        c68 = float(np.mean((t >= lo68) & (t <= hi68)))
        c95 = float(np.mean((t >= lo95) & (t <= hi95)))
        grid = np.linspace(0, 1, 201)
        ecdf = np.searchsorted(np.sort(u), grid, side="right") / n_ok
        ks = kstest(u, "uniform")
        table.append(dict(parameter=n, coverage68=c68, coverage95=c95, ks=float(ks.statistic), ks_p=float(ks.pvalue),
                          max_ecdf_diff=float(np.max(np.abs(ecdf - grid))), band=1.358 / math.sqrt(n_ok),
                          mean_z=float(np.mean((np.mean(full, axis=0) - t) / np.std(full, axis=0, ddof=1))),
                          sd_z=float(np.std((np.mean(full, axis=0) - t) / np.std(full, axis=0, ddof=1))),
                          r_hat_max=float(np.nanmax(r_hat[ok, j])), ess_min=float(np.nanmin(ess[ok, j])),
                          ess_median=float(np.nanmedian(ess[ok, j]))))

    wall = float(np.sum(walls))
    s68 = math.sqrt(0.68 * 0.32 / n_ok)
    s95 = math.sqrt(0.95 * 0.05 / n_ok)
    print(f"\nsampling wall {wall:.1f} s ({', '.join(f'{w:.1f}' for w in walls)}), whole run "
          f"{time.perf_counter() - t_start:.1f} s; gradient evaluations {sum(grads)} "
          f"({sum(grads) / wall:.0f}/s); mean leapfrog steps {np.mean(steps):.2f}; "
          f"lockstep efficiency {np.mean(lockstep):.3f}")
    print(f"stars with a posterior: {n_ok} of {args.stars}; draws per star {total}, thinned by {thin} to "
          f"{n_chain * len(range(0, n_draw, thin))} for the ranks")
    print(f"\n| parameter | coverage 68 % (±{s68:.3f}) | coverage 95 % (±{s95:.3f}) | KS D | KS p | "
          f"max |ECDF−u| (95 % band {1.358 / math.sqrt(n_ok):.3f}) | mean z | sd z | max r_hat | min ess_bulk | "
          f"median ess_bulk |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['parameter']} | {r['coverage68']:.3f} | {r['coverage95']:.3f} | {r['ks']:.3f} | {r['ks_p']:.3f} | "
              f"{r['max_ecdf_diff']:.3f} | {r['mean_z']:+.3f} | {r['sd_z']:.3f} | {r['r_hat_max']:.4f} | "
              f"{r['ess_min']:.0f} | {r['ess_median']:.0f} |")
    pooled68 = float(np.mean([r["coverage68"] for r in table]))
    pooled95 = float(np.mean([r["coverage95"] for r in table]))
    n_all = n_ok * len(names)
    print(f"| all (pooled, ±{math.sqrt(0.68 * 0.32 / n_all):.3f} / ±{math.sqrt(0.95 * 0.05 / n_all):.3f}) | "
          f"{pooled68:.3f} | {pooled95:.3f} | | | | | | | | |")
    good_r = float(np.mean(np.all(r_hat[ok] < 1.01, axis=1)))
    good_e = float(np.mean(np.all(ess[ok] > 400, axis=1)))
    good_both = float(np.mean(np.all(r_hat[ok] < 1.01, axis=1) & np.all(ess[ok] > 400, axis=1)))
    print(f"\nstars with r_hat < 1.01 in every parameter: {good_r:.3f}; ess_bulk > 400 in every parameter: "
          f"{good_e:.3f}; both: {good_both:.3f}")
    print(f"divergence rate (after warmup): {np.nanmean(div[ok]):.5f}; stars with any divergence: "
          f"{np.mean(div[ok] > 0):.3f}; transitions at max tree depth: {np.nanmean(cap[ok]):.5f}")

    plot(ranks, names, table, args, n_ok, thin, n_chain * len(range(0, n_draw, thin)))
    print(f"figure -> {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "table": table, "share_r_hat": good_r, "share_ess": good_e, "share_both": good_both,
            "divergence_rate": float(np.nanmean(div[ok])), "wall_s": wall, "walls": walls, "thin": thin,
            "gradient_evaluations": grads, "lockstep": lockstep, "ranks": {n: u.tolist() for n, u in ranks.items()},
        }, indent=1))


def plot(ranks, names, table, args, n, thin, level):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import binom

    k = len(names)
    fig, axes = plt.subplots(2, k, figsize=(3.6 * k, 6.0), squeeze=False)
    grid = np.linspace(0, 1, 401)
    band = 1.358 / math.sqrt(n)
    bins = 20
    lo, hi = binom.ppf([0.005, 0.995], n, 1.0 / bins)
    for j, name in enumerate(names):
        u = np.sort(ranks[name])
        ecdf = np.searchsorted(u, grid, side="right") / n
        ax = axes[0, j]
        ax.fill_between(grid, -band, band, color="0.85", label="95 % simultaneous (KS)")
        ax.plot(grid, ecdf - grid, color="C0", lw=1.4)
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_xlim(0, 1)
        ax.set_ylim(-max(2.2 * band, 1.2 * np.max(np.abs(ecdf - grid))), max(2.2 * band, 1.2 * np.max(np.abs(ecdf - grid))))
        row = table[j]
        ax.set_title(f"{name}: 68 % {row['coverage68']:.2f}, 95 % {row['coverage95']:.2f}", fontsize=9)
        ax.set_xlabel("normalised rank")
        if j == 0:
            ax.set_ylabel("ECDF − uniform CDF")
            ax.legend(fontsize=7, loc="lower left")
        ax = axes[1, j]
        ax.axhspan(lo, hi, color="0.85", label="99 % binomial, per bin")
        ax.hist(u, bins=bins, range=(0, 1), color="C0", histtype="step", lw=1.4)
        ax.axhline(n / bins, color="0.4", lw=0.6)
        ax.set_xlim(0, 1)
        ax.set_xlabel("normalised rank")
        if j == 0:
            ax.set_ylabel("stars per bin")
            ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"SBC: {n} stars, S/N {args.snr:g}, {args.chains}×({args.warmup}+{args.samples}) NUTS, "
                 f"ranks among {level} draws (thin {thin})", fontsize=10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
