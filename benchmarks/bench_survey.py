"""Survey throughput: N mock APOGEE spectra fitted with the binspec network, batch after batch.

Mock spectra are drawn from the published binspec network itself (random labels in the central
80 % of its box, rv uniform in ±50 km/s, S/N 100, APOGEE's 7214 pixels in three chips), then fitted
by the default :class:`jaxpayne.fitting.Fitter` (rv free, filter continuum) in batches. The compile
(the first batch, timed separately) is excluded from the fitting time, which covers every other
batch: device work, the straggler passes and the host-side flags and covariances.

    python benchmarks/bench_survey.py --n 10000 --batch 128
"""

from __future__ import annotations

import argparse
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="spectra (default 10000)")
    parser.add_argument("--batch", type=int, default=128, help="spectra per batch (default 128)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jax
    import numpy as np

    import jaxpayne
    from jaxpayne.datasets import data_file
    from jaxpayne.fitting import Fitter
    from jaxpayne.forward import make_observation

    wave_file = data_file("binspec_apogee", "apogee_wavelength.npz")
    model = jaxpayne.load_model(data_file("binspec_apogee", "NN_normalized_spectra.npz"), format="binspec",
                                label_names="teff,logg,feh,mg_fe,vmacro", wavelength=wave_file)
    start = time.perf_counter()
    fitter = Fitter(model, rv=True, max_rv=100.0, continuum="filter", n_segments=3)
    build = time.perf_counter() - start
    fm = fitter.forward
    wave = np.asarray(model.wavelength)
    segment = np.repeat([0, 1, 2], [2920, 2400, 1894]).astype(np.int32)
    ok = fm.valid_wavelength(wave)
    template = make_observation(wave, np.ones_like(wave), np.where(ok, 1.0, 0.0), segment)
    rng = np.random.default_rng(args.seed)
    lo, hi = model.bounds
    truth = np.c_[lo + (hi - lo) * rng.uniform(0.1, 0.9, (args.n, lo.size)), rng.uniform(-50, 50, args.n)]
    flux_of = jax.jit(jax.vmap(lambda t: fm.model_flux(t, template)))
    error = 0.01
    n_batches = -(-args.n // args.batch)

    def batch(k):
        rows = truth[k * args.batch:(k + 1) * args.batch]
        rows = np.concatenate([rows, rows[:1].repeat(args.batch - rows.shape[0], 0)])  # pad the last
        clean = np.asarray(flux_of(rows.astype(np.float32)))
        flux = clean + rng.normal(size=clean.shape) * error
        ivar = np.where(ok, error**-2, 0.0)
        return template._replace(
            wavelength=np.broadcast_to(np.asarray(template.wavelength), clean.shape),
            flux=np.where(ok, flux, 0.0).astype(np.float32), ivar=np.broadcast_to(ivar, clean.shape).astype(np.float32),
            segment=np.broadcast_to(np.asarray(template.segment), clean.shape),
            wavelength_lo=None if template.wavelength_lo is None
            else np.broadcast_to(np.asarray(template.wavelength_lo), clean.shape))

    first = batch(0)
    start = time.perf_counter()
    fitter.fit(first)
    compile_seconds = time.perf_counter() - start
    fitting, thetas, flags = 0.0, [], []
    for k in range(n_batches):
        observations = first if k == 0 else batch(k)
        start = time.perf_counter()
        result = fitter.fit(observations)
        fitting += time.perf_counter() - start
        size = min(args.batch, args.n - k * args.batch)
        thetas.append(result.theta[:size])
        flags.append(result.flags[:size])
    theta, flags = np.concatenate(thetas), np.concatenate(flags)
    pulls = (theta[:, 0] - truth[:, 0])
    print(f"device: {jax.devices()[0].device_kind}; {args.n} spectra, batches of {args.batch}, binspec network, "
          f"7214 pixels, rv free, filter continuum")
    print(f"fitter build {build:.1f} s, first-batch compile {compile_seconds:.1f} s (excluded)")
    print(f"fitting: {fitting:.1f} s = {1e3 * fitting / args.n:.2f} ms/spectrum = {args.n / fitting:.0f} spectra/s")
    failed = int(np.sum(flags & int(jaxpayne.Flags.FAILED) > 0))
    print(f"failed {failed}; median |Teff − truth| {np.median(np.abs(pulls)):.1f} K; "
          f"median |rv − truth| {np.median(np.abs(theta[:, -1] - truth[:, -1])):.3f} km/s")


if __name__ == "__main__":
    main()
