"""End to end: N mock APOGEE spectra streamed through ``fit_spectra`` into a table on disk.

Like ``bench_survey.py`` (spectra drawn from the published binspec network, random labels in the
central 80 % of its box, rv ±50 km/s, S/N 100, 7214 pixels in three chips), but the spectra are
made one batch at a time by a generator and go through the whole run: conversion to
observations, batched fits, rows, the fsynced journal and the output table (``--out``). Prints
the spectra per second over the whole run (the first batch's compile included) and the peak
memory (``ru_maxrss``), which shows what the run keeps per finished row.

    python benchmarks/bench_end_to_end.py --n 100000 --batch 256 --out /tmp/e2e.fits
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", default="/tmp/e2e.fits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import numpy as np

    import jaxpayne
    from jaxpayne.datasets import data_file
    from jaxpayne.fitting import Fitter, fit_spectra
    from jaxpayne.forward import make_observation
    from jaxpayne.io import Spectrum

    out = Path(args.out)
    for stale in (out, out.with_name(out.name + ".journal.jsonl")):
        stale.unlink(missing_ok=True)
    wave_file = data_file("binspec_apogee", "apogee_wavelength.npz")
    model = jaxpayne.load_model(data_file("binspec_apogee", "NN_normalized_spectra.npz"), format="binspec",
                                label_names="teff,logg,feh,mg_fe,vmacro", wavelength=wave_file)
    fitter = Fitter(model, rv=True, max_rv=100.0, continuum="filter", n_segments=3)
    fm = fitter.forward
    wave = np.asarray(model.wavelength)
    chip = np.repeat([0, 1, 2], [2920, 2400, 1894]).astype(np.int32)  # APOGEE's chips
    lo, hi = model.bounds
    ok = fm.valid_wavelength(wave)  # the pixels the model covers at every velocity (as bench_survey)
    template = make_observation(wave, np.ones_like(wave), np.where(ok, 1.0, 0.0), chip)
    render = jax.jit(jax.vmap(lambda t: fm.model_flux(t, template)))
    rng = np.random.default_rng(args.seed)

    def spectra():
        for a in range(0, args.n, args.batch):
            k = min(args.batch, args.n - a)
            labels = lo + (hi - lo) * rng.uniform(0.1, 0.9, (k, len(lo)))
            theta = np.column_stack([labels, rng.uniform(-50.0, 50.0, k)])
            flux = np.asarray(render(theta.astype(np.float32)), np.float64)
            for i in range(k):
                f = flux[i] + rng.normal(size=wave.size) * 0.01
                yield Spectrum(wave, np.where(ok, f, 0.0), np.where(ok, 1e4, 0.0), segment=chip,
                               id=f"mock{a + i:07d}", source="mock")

    start = time.perf_counter()
    table = fit_spectra(model, spectra(), fitter=fitter, out=out, batch_size=args.batch, progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
    print(f"{len(table)} spectra in {seconds:.1f} s = {len(table) / seconds:.0f} spectra/s end to end "
          f"(compile included); peak memory {peak:.2f} GiB; {int(np.sum(table['flags'] != 0))} flagged; "
          f"table {out} {out.stat().st_size / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
