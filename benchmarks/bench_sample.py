"""Posterior sampling throughput: NUTS on one real APOGEE star, and on many mock stars at once.

Two modes (each configuration runs in its own Python process, so the whole-process wall time —
interpreter start, imports, model load, mock spectra, fit, compile, sampling — is measured too;
``--in-process`` runs them in this process instead):

* ``one``: the real APOGEE spectrum 2M13012770+5754582 (``binspec_apogee``) with the binspec
  network (5 labels + rv; continuum="filter", rv=True, max_rv=100, n_segments=3), sampled by the
  one-liner :func:`jaxpayne.sampling.sample` — the timed call includes the start fit and every
  compilation — once per ``--chain-methods`` entry.
* ``many``: N mock stars simulated through the sampler's own forward model (labels uniform in the
  inner 60 % of the model's box, rv uniform in ±30 km/s or fixed at 0 with ``--no-rv``, S/N 100
  Gaussian noise, emulator error off), sampled in ONE :meth:`Sampler.sample` call, for ``--model
  binspec`` (the published network) or ``--model mlp25`` (The Payne's 25-label 2×300 MLP with
  random weights, from ``bench_fit.py``). ``--pixels START:STOP`` restricts the model itself to
  that range of the 7,214-pixel APOGEE grid (weights sliced), so the network's cost shrinks with
  it; the mock spectra live on the same range (pixels within the rv margin of its ends masked).

Printed per configuration: wall time of the timed call, gradient evaluations (leapfrog steps
summed over stars, chains and iterations, warmup included) and per second, mean leapfrog steps
per iteration, lockstep efficiency (vectorized only: mean steps / mean of each iteration's
largest over the batch; the computed-but-wasted share is 1 − efficiency; ``lockstep_if_vectorized``
is the same ratio from the kept draws' step counts, for any chain method: what one vmapped
batch of these stars and chains would reach), the r_hat / ess_bulk
figures of :func:`jaxpayne.sampling.summarize`, divergences and, for mocks, the coverage of the
truths by the 68 % central intervals.

    python benchmarks/bench_sample.py one [--chain-methods sequential,parallel,vectorized]
    python benchmarks/bench_sample.py many --model binspec --stars 64,256 --chains 2 --warmup 150 \\
        --samples 150 --pixels 0:600 [--chain-methods sequential,vectorized] [--repeat]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

T_PROCESS = time.perf_counter()
HERE = Path(__file__).resolve().parent
SEGMENT_SIZES = (2920, 2400, 1894)  # APOGEE's three chips on the 7214-pixel grid
STAR = "2M13012770+5754582"


# ------------------------------------------------------------------------------------- models
def load_binspec():
    import jaxpayne
    from jaxpayne.datasets import data_file

    wave = data_file("binspec_apogee", "apogee_wavelength.npz")
    model = jaxpayne.load_model(data_file("binspec_apogee", "NN_normalized_spectra.npz"), format="binspec",
                                label_names="teff,logg,feh,mg_fe,vmacro", wavelength=wave)
    return model, wave


def load_model(name: str):
    if name == "binspec":
        return load_binspec()[0]
    sys.path.insert(0, str(HERE))
    from bench_fit import payne_mlp_25  # noqa: E402 - the benchmark's 25-label MLP

    from jaxpayne.datasets import data_file

    return payne_mlp_25(np.load(data_file("binspec_apogee", "apogee_wavelength.npz"))["wavelength"])


# ------------------------------------------------------------------------------------- figures
def diagnostics(idata, truth=None) -> dict:
    """r_hat / ESS / divergence figures of a run (per-star rows of ``summarize``)."""
    from jaxpayne.sampling import summarize

    rows = summarize(idata)
    names = idata.posterior.attrs["parameters"].split(",")
    r_hat = np.array([[r[f"{n}_r_hat"] for n in names] for r in rows])
    ess = np.array([[r[f"{n}_ess_bulk"] for n in names] for r in rows])
    div = np.array([r["divergence_rate"] for r in rows])
    cap = np.array([r["max_depth_rate"] for r in rows])
    attrs = idata.posterior.attrs
    steps = np.asarray(idata.sample_stats["n_steps"].values, np.float64)  # (C, S, B), after warmup
    # what a vmapped batch of all these chains would waste: mean steps / mean of each draw's largest
    lockstep_draws = float(steps.mean() / steps.max(axis=(0, 2)).mean())
    n_draws = idata.posterior.sizes["chain"] * idata.posterior.sizes["draw"]
    out = {
        "stars": len(rows), "draws_per_star": int(n_draws),
        "gradient_evaluations": int(attrs["gradient_evaluations"]),
        "mean_leapfrog_steps": float(attrs["mean_leapfrog_steps"]),
        "lockstep_efficiency": float(attrs["lockstep_efficiency"]),
        "lockstep_if_vectorized": lockstep_draws,
        "sampler_wall_s": float(attrs["wall_seconds"]),
        "max_r_hat": float(np.nanmax(r_hat)), "min_ess_bulk": float(np.nanmin(ess)),
        "share_r_hat_lt_1.01": float(np.mean(np.all(r_hat < 1.01, axis=1))),
        "share_r_hat_lt_1.05": float(np.mean(np.all(r_hat < 1.05, axis=1))),
        "share_ess_gt_400": float(np.mean(np.all(ess > 400, axis=1))),
        "share_ess_gt_100": float(np.mean(np.all(ess > 100, axis=1))),
        "median_min_ess": float(np.median(np.nanmin(ess, axis=1))),
        "median_min_ess_per_draw": float(np.median(np.nanmin(ess, axis=1)) / n_draws),
        "divergence_rate": float(np.nanmean(div)), "share_stars_divergent": float(np.mean(div > 0)),
        "max_depth_rate": float(np.nanmean(cap)),
        "flags": sorted({f for r in rows for f in r["message"].split("; ")[0].split(",") if f}),
    }
    if len(rows) == 1:
        row = rows[0]
        out["posterior"] = {n: [row[f"{n}_mean"], row[f"{n}_sd"]] for n in names}
        out["r_hat"] = {n: row[f"{n}_r_hat"] for n in names}
        out["ess_bulk"] = {n: row[f"{n}_ess_bulk"] for n in names}
        fit = idata.constant_data["fit_theta"].values[0]
        cov = idata.constant_data["fit_covariance"].values[0]
        out["fit"] = {n: [float(fit[j]), float(np.sqrt(cov[j, j]))] for j, n in enumerate(names)}
    if truth is not None:
        inside = []
        for j, n in enumerate(names):
            flat = idata.posterior[n].values.reshape(-1, len(rows))
            lo, hi = np.percentile(flat, [16, 84], axis=0)
            inside.append((truth[:, j] >= lo) & (truth[:, j] <= hi))
        out["coverage68"] = float(np.mean(inside))
    return out


# ------------------------------------------------------------------------------------- jobs
def job_one(job: dict) -> dict:
    """The real star, the whole one-liner ``sample(...)`` call timed."""
    from jaxpayne.datasets import data_file
    from jaxpayne.io import read_spectrum
    from jaxpayne.sampling import sample

    model, wave = load_binspec()
    spectrum = read_spectrum(data_file("binspec_apogee", f"spectrum_combined_{STAR}.npz"), wavelength=wave)[0]
    if job["binspec_mask"]:
        exclude = np.load(data_file("binspec_apogee", "apogee_mask.npz"))["apogee_mask"].astype(bool)
        spectrum = spectrum.replace(mask=np.asarray(spectrum.mask, bool) | exclude)
    t0 = time.perf_counter()
    idata = sample(model, spectrum, chains=job["chains"], warmup=job["warmup"], samples=job["samples"],
                   seed=job["seed"], progress=False, chain_method=job["chain_method"], rv=True, max_rv=100.0,
                   continuum="filter", n_segments=3, max_tree_depth=job["max_tree_depth"])
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, **diagnostics(idata)}
    out["grads_per_s"] = out["gradient_evaluations"] / wall
    out["n_pixels"] = int(np.sum(spectrum.good))
    return out


def restrict(model, pixels: slice):
    """The model on the pixel range ``pixels`` of its grid only (its weights sliced; the emulator-error
    table dropped): the network then costs in proportion to the range."""
    import jax

    index = np.arange(model.n_pixels)[pixels]
    if index.size == model.n_pixels:
        return model
    sl = slice(int(index[0]), int(index[-1]) + 1)
    if model.kind == "perpixel":
        params = jax.tree_util.tree_map(lambda a: np.asarray(a)[sl], model.params)
    elif model.kind == "mlp":
        params = jax.tree_util.tree_map(np.asarray, model.params)
        out = params["params"]["output"]
        out["kernel"], out["bias"] = out["kernel"][:, sl], out["bias"][sl]
    else:
        raise ValueError(f"cannot restrict a {model.kind!r} model")
    return model.replace(params=params, wavelength=np.asarray(model.wavelength)[sl],
                         config={**model.config, "n_pixels": index.size}, validation={})


def mock_batch(sampler, n: int, segment, seed: int):
    """n mock stars from the sampler's forward model on the model's grid; (observations, truth
    (n, n_free), usable pixels)."""
    from jaxpayne.forward import make_observation, pad_observations

    fm, space = sampler.forward, sampler.space
    wave = np.asarray(sampler.model.wavelength, np.float64)
    # pixels modelled at every rv of ±max_rv (or at the fixed rv), judged on the float32 wavelengths
    # the observations store (an edge pixel can cross the boundary in the rounding)
    ok = np.asarray(fm.valid_wavelength(np.asarray(wave.astype(np.float32), np.float64)))
    template = make_observation(wave, np.ones_like(wave), np.where(ok, 1.0, 0.0), segment)
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(sampler.model.bounds[0], np.float64), np.asarray(sampler.model.bounds[1], np.float64)
    labels = lo + (hi - lo) * rng.uniform(0.2, 0.8, (n, lo.size))
    rv = rng.uniform(-30.0, 30.0, n)
    with_rv = "rv" in space.free_names  # else rv is fixed at 0
    truth = np.column_stack([labels, rv]) if with_rv else labels
    assert tuple(space.free_names) == tuple(sampler.model.label_names) + (("rv",) if with_rv else ()), space.free_names
    err = np.full(wave.size, 0.01)  # S/N 100 on a unit continuum
    observations = []
    for t in truth:
        clean = np.asarray(fm.model_flux(t, template), np.float64)
        flux = clean + rng.normal(size=clean.size) * err
        observations.append(sampler.observation(wave, np.where(ok, flux, 0.0), np.where(ok, err**-2, 0.0),
                                                segment=segment))
    return pad_observations(observations), truth, int(np.sum(ok))


def job_many(job: dict) -> dict:
    from jaxpayne.sampling import Sampler

    full = load_model(job["model"])
    start, stop = (int(v) if v else None for v in job["pixels"].split(":"))
    pixels = slice(start, stop)
    segment = np.zeros(full.n_pixels, np.int32)
    if full.n_pixels == sum(SEGMENT_SIZES):  # the APOGEE grid: its three chips
        segment = np.repeat(np.arange(len(SEGMENT_SIZES)), SEGMENT_SIZES).astype(np.int32)
    segment = np.unique(segment[pixels], return_inverse=True)[1].astype(np.int32)
    model = restrict(full, pixels)
    wave = np.asarray(model.wavelength)
    options = dict(rv=job.get("rv", True), max_rv=100.0, continuum=job["continuum"], n_segments=int(segment.max()) + 1,
                   emulator_error=False)
    sampler = Sampler(model, chains=job["chains"], warmup=job["warmup"], samples=job["samples"],
                      chain_method=job["chain_method"], max_tree_depth=job["max_tree_depth"], seed=job["seed"],
                      **options)
    t0 = time.perf_counter()
    batch, truth, n_pix = mock_batch(sampler, job["stars"], segment, seed=job["seed"] + 1)
    t_mock = time.perf_counter() - t0
    t0 = time.perf_counter()
    idata = sampler.sample(batch, ids=[f"mock{i}" for i in range(job["stars"])], progress=False)
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "mock_s": t_mock, "n_pixels": n_pix, "model_pixels": int(model.n_pixels),
           "wave_range": [float(wave[0]), float(wave[-1])], **diagnostics(idata, truth)}
    out["grads_per_s"] = out["gradient_evaluations"] / wall
    out["stars_per_min"] = job["stars"] / wall * 60.0
    if job["repeat"]:  # the same shapes again: compiled programs reused (steady state)
        t0 = time.perf_counter()
        again = sampler.sample(batch, progress=False, seed=job["seed"] + 100)
        steady = time.perf_counter() - t0
        grads = int(again.posterior.attrs["gradient_evaluations"])
        out.update(steady_wall_s=steady, steady_stars_per_min=job["stars"] / steady * 60.0,
                   steady_grads_per_s=grads / steady)
    return out


def run_job(job: dict) -> dict:
    if job["chain_method"] == "parallel":  # one CPU host device per core, before JAX starts
        import os

        import numpyro

        numpyro.set_host_device_count(os.cpu_count())
    result = job_one(job) if job["mode"] == "one" else job_many(job)
    result["process_wall_s"] = time.perf_counter() - T_PROCESS
    return result


# ------------------------------------------------------------------------------------- driver
def jobs_of(args) -> list[dict]:
    common = dict(chains=args.chains, warmup=args.warmup, samples=args.samples, seed=args.seed,
                  max_tree_depth=args.max_tree_depth)
    if args.mode == "one":
        return [dict(mode="one", chain_method=m, binspec_mask=args.binspec_mask, **common)
                for m in args.chain_methods.split(",")]
    return [dict(mode="many", model=args.model, stars=int(n), chain_method=m, pixels=args.pixels,
                 continuum=args.continuum, repeat=args.repeat, rv=not args.no_rv, **common)
            for n in args.stars.split(",") for m in args.chain_methods.split(",")]


def print_table(results: list[tuple[dict, dict]]) -> None:
    one = results[0][0]["mode"] == "one"
    head = ["chain_method"] if one else ["model", "rv", "stars", "chain_method"]
    cols = ["wall_s", "process_wall_s", "gradient_evaluations", "grads_per_s", "mean_leapfrog_steps",
            "lockstep_efficiency", "min_ess_bulk", "max_r_hat", "divergence_rate"]
    if not one:
        cols = ["wall_s", "process_wall_s", "stars_per_min", "gradient_evaluations", "grads_per_s",
                "mean_leapfrog_steps", "lockstep_efficiency", "lockstep_if_vectorized", "share_r_hat_lt_1.01", "share_r_hat_lt_1.05",
                "share_ess_gt_400", "share_ess_gt_100", "median_min_ess", "divergence_rate",
                "share_stars_divergent", "max_depth_rate", "coverage68", "steady_wall_s",
                "steady_stars_per_min", "steady_grads_per_s"]
    print("\n| " + " | ".join(head + cols) + " |")
    print("|" + "---|" * (len(head) + len(cols)))
    for job, res in results:
        cells = [str(job[h]) for h in head]
        for c in cols:
            v = res.get(c, float("nan"))
            cells.append(f"{v:.0f}" if c == "gradient_evaluations" else f"{v:.4g}")
        print("| " + " | ".join(cells) + " |")
    for job, res in results:
        extra = {k: res[k] for k in ("n_pixels", "model_pixels", "wave_range", "mock_s", "sampler_wall_s", "draws_per_star",
                                     "flags") if k in res}
        print(f"\n{job}: {extra}")
        for key in ("posterior", "fit", "r_hat", "ess_bulk"):
            if key in res:
                print(f"  {key}: " + ", ".join(
                    f"{n}={v[0]:.4g}±{v[1]:.3g}" if isinstance(v, list) else f"{n}={v:.4g}"
                    for n, v in res[key].items()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["one", "many"], help="the real star, or N mock stars in one call")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--max-tree-depth", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chain-methods", default=None,
                        help="comma-separated: sequential, parallel (one CPU device per core), vectorized "
                        "(default: all three for 'one', vectorized for 'many')")
    parser.add_argument("--binspec-mask", action="store_true", help="one: apply binspec's pixel mask")
    parser.add_argument("--model", choices=["binspec", "mlp25"], default="binspec", help="many: the emulator")
    parser.add_argument("--stars", default="64,256", help="many: comma-separated star counts")
    parser.add_argument("--pixels", default=":", help="many: pixel range START:STOP of the 7214-pixel grid")
    parser.add_argument("--continuum", default="filter", help="many: continuum treatment")
    parser.add_argument("--no-rv", action="store_true", help="many: rv fixed at 0 (mocks at rest)")
    parser.add_argument("--repeat", action="store_true",
                        help="many: sample the batch a second time (compiled programs reused: steady state)")
    parser.add_argument("--in-process", action="store_true", help="run every configuration in this process")
    parser.add_argument("--json", default=None, help="also write the results (JSON) here")
    parser.add_argument("--job", default=None, help=argparse.SUPPRESS)  # internal: one configuration, JSON
    args = parser.parse_args()
    if args.job is not None:
        print("RESULT " + json.dumps(run_job(json.loads(args.job))), flush=True)
        return
    if args.chain_methods is None:
        args.chain_methods = "sequential,parallel,vectorized" if args.mode == "one" else "vectorized"
    import jax

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), "
          f"{args.chains} chains x ({args.warmup} warmup + {args.samples} draws), max_tree_depth {args.max_tree_depth}")
    results = []
    for job in jobs_of(args):
        print(f"running {job} ...", flush=True)
        if args.in_process:
            t0 = time.perf_counter()
            res = run_job(job)
            res["process_wall_s"] = float("nan")
        else:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), args.mode, "--job", json.dumps(job)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"configuration {job} failed (exit {proc.returncode})")
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
            res = json.loads(line[len("RESULT "):])
            res["process_wall_s"] = time.perf_counter() - t0
        print(f"  done: {res['wall_s']:.1f} s timed call, {res['process_wall_s']:.1f} s process", flush=True)
        results.append((job, res))
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps([{"job": j, "result": r} for j, r in results], indent=1))


if __name__ == "__main__":
    main()
