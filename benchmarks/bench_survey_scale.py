"""Survey scale: N mock APOGEE spectra in files, fitted into a partitioned Parquet folder by
``fit_survey``, in this process or on a local Dask cluster of 1 or 2 worker processes.

The spectra are those of ``bench_end_to_end.py`` (the published binspec network, random labels
in the central 80 % of its box, rv ±50 km/s, S/N 100, 7214 pixels in three chips), written
``--per-file`` to a file (npz: 2-D float32 flux, ivar, the chip of each pixel, ids), so the run
is end to end: reading files, observations, batched fits, rows, journals, one Parquet file per
partition. Prints spectra per second (compile included) and the peak memory of every process
(``ru_maxrss``: this one, and each Dask worker's).

    python benchmarks/bench_survey_scale.py make /tmp/mock --n 100000 --per-file 1000
    python benchmarks/bench_survey_scale.py run /tmp/mock /tmp/rows --workers 0   # this process
    python benchmarks/bench_survey_scale.py run /tmp/mock /tmp/rows --workers 2   # Dask, 2 workers
    python benchmarks/bench_survey_scale.py run /tmp/mock /tmp/rows --workers 1 --files 8
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

LABELS = "teff,logg,feh,mg_fe,vmacro"


def _model_args():
    from jaxpayne.datasets import data_file

    wave_file = data_file("binspec_apogee", "apogee_wavelength.npz")
    return str(data_file("binspec_apogee", "NN_normalized_spectra.npz")), {
        "format": "binspec", "label_names": LABELS, "wavelength": str(wave_file)}


def make(args):
    import jax
    import numpy as np

    import jaxpayne
    from jaxpayne.fitting import Fitter
    from jaxpayne.forward import make_observation

    path, options = _model_args()
    model = jaxpayne.load_model(path, **options)
    fm = Fitter(model, rv=True, max_rv=100.0, continuum="filter", n_segments=3).forward
    wave = np.asarray(model.wavelength)
    chip = np.repeat([0, 1, 2], [2920, 2400, 1894]).astype(np.int8)  # APOGEE's chips
    ok = fm.valid_wavelength(wave)
    template = make_observation(wave, np.ones_like(wave), np.where(ok, 1.0, 0.0), chip)
    render = jax.jit(jax.vmap(lambda t: fm.model_flux(t, template)))
    lo, hi = model.bounds
    rng = np.random.default_rng(args.seed)
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for f, a in enumerate(range(0, args.n, args.per_file)):
        k = min(args.per_file, args.n - a)
        labels = lo + (hi - lo) * rng.uniform(0.1, 0.9, (k, len(lo)))
        theta = np.column_stack([labels, rng.uniform(-50.0, 50.0, k)])
        flux = np.array(render(theta.astype(np.float32)), np.float32)
        flux += rng.normal(size=flux.shape).astype(np.float32) * 0.01
        np.savez(folder / f"mock{f:05d}.npz", wavelength=wave, flux=np.where(ok, flux, 0.0).astype(np.float32),
                 ivar=np.broadcast_to(np.where(ok, 1e4, 0.0).astype(np.float32), flux.shape), segment=chip,
                 id=np.array([f"mock{a + i:07d}" for i in range(k)]))
    print(f"wrote {args.n} spectra in {f + 1} files to {folder} in {time.perf_counter() - start:.0f} s")


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB


def run(args):
    from jaxpayne.fitting import FitJob, fit_survey

    files = sorted(str(p) for p in Path(args.folder).glob("mock*.npz"))[: args.files or None]
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    path, options = _model_args()
    job = FitJob(path, model_options=options, batch_size=args.batch,
                 fitter_options={"rv": True, "max_rv": 100.0, "continuum": "filter", "n_segments": 3})
    if args.workers == 0:
        start = time.perf_counter()
        result = fit_survey(job, files, out, partition_size=args.partition_size, progress=not args.quiet)
        seconds = time.perf_counter() - start
        peaks = f"peak memory {_peak_gib():.2f} GiB (this process)"
    else:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=40) as cluster, Client(cluster) as client:
            start = time.perf_counter()
            result = fit_survey(job, files, out, partition_size=args.partition_size, client=client,
                                progress=not args.quiet)
            seconds = time.perf_counter() - start
            workers = sorted(client.run(_peak_gib).values())
        peaks = (f"peak memory {_peak_gib():.2f} GiB (driver), workers "
                 + ", ".join(f"{w:.2f}" for w in workers) + " GiB")
    print(f"{result.n_rows} spectra from {len(files)} files, {result.n_partitions} partitions, workers={args.workers}: "
          f"{seconds:.1f} s = {result.n_rows / seconds:.1f} spectra/s end to end (compile included); {peaks}; "
          f"{result.n_flagged} flagged; folder {sum(p.stat().st_size for p in out.glob('part-*')) / 2**20:.0f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make", help="write mock spectrum files")
    p.add_argument("folder")
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--per-file", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=make)
    p = sub.add_parser("run", help="fit the files into a partitioned folder")
    p.add_argument("folder")
    p.add_argument("out")
    p.add_argument("--workers", type=int, default=0, help="0: this process; N: a local Dask cluster of N workers")
    p.add_argument("--files", type=int, help="only the first FILES files")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--partition-size", type=int, default=1, help="files per partition (default 1)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)
    args = parser.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    args.func(args)


if __name__ == "__main__":
    main()
