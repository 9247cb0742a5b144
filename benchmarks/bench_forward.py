"""Cost of one forward-model evaluation and of its Jacobian, after compilation.

Two cases:

* 7,214 pixels — the published binspec APOGEE network (El-Badry et al. 2018) on APOGEE's three
  chips, with a real APOGEE spectrum, rotation, Chebyshev continuum marginalised per chip;
* 150,001 pixels — the Doppler "coolstars" cubic Cannon model, 3000–18000 Å at 0.1 Å, observed
  on its own grid split into three arms, with rotation, macroturbulence, R = 20,000 and the
  running-mean continuum filter.

When the reference data (``JAXPAYNE_DATA`` / ``../shared/data``) are absent, analytic stand-in
emulators with the same pixel counts are used. ``--quick`` runs tiny sizes (a smoke test).

Usage::

    python benchmarks/bench_forward.py [--quick] [--repeat N] [--float64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

#: Resolving power and number of arms of the wide-band (150k-pixel) case.
WIDE_RESOLUTION = 20_000.0
WIDE_ARM_EDGES = (8000.0, 13000.0)
#: Spectra per batch in the vmap timing, and the largest spectrum it is run for.
BATCH = 32
BATCH_MAX_PIXELS = 20_000
#: Velocity step of APOGEE's log-λ grid [km/s] (Δlog10 λ = 6e-6).
APOGEE_VELOCITY_STEP = 4.14
#: APOGEE chip lengths on the 7214-pixel binspec grid.
APOGEE_CHIPS = (2920, 2400, 1894)


def binspec_network(network_path, wavelength_path):
    """The published binspec APOGEE network (El-Badry et al. 2018) through the Payne-format import.

    Its macroturbulence label is renamed so it does not collide with the forward model's ``vmacro``.
    """
    import jaxpayne

    return jaxpayne.load_model(network_path, format="binspec", wavelength=wavelength_path,
                               label_names=("teff", "logg", "feh", "mgfe", "vmacro_label"))


class CubicCannon:
    """Doppler's polynomial Cannon model: flux = theta @ v, v_j = Π_k x_k^powers[j, k]."""

    medium = "vacuum"  # not documented by the source; irrelevant for timing
    emulator_error = None

    def __init__(self, path):
        with np.load(path) as data:
            self.wavelength = np.asarray(data["wavelength"], dtype=np.float64)
            self.theta = np.asarray(data["theta"], dtype=np.float32)
            self.powers = np.asarray(data["powers"], dtype=np.int32)
            self.fiducial = np.asarray(data["fiducial"], dtype=np.float64)
            self.scale = np.asarray(data["scale"], dtype=np.float64)
            self.label_names = tuple(str(n).lower() for n in data["label_names"])
            training = np.asarray(data["training_set_labels"], dtype=np.float64)
        self.bounds = (training.min(axis=0), training.max(axis=0))

    def predict(self, labels):
        import jax.numpy as jnp

        dtype = labels.dtype
        x = (labels - jnp.asarray(self.fiducial, dtype)) / jnp.asarray(self.scale, dtype)
        v = jnp.prod(x[None, :] ** jnp.asarray(self.powers, labels.dtype), axis=-1)
        return jnp.asarray(self.theta, labels.dtype) @ v


def _data(*parts):
    try:
        from jaxpayne.datasets import data_file

        return data_file(*parts)
    except FileNotFoundError:
        return None


def _time(fn, *args, repeat):
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times)), compile_s


def apogee_case(quick: bool):
    """(name, forward model, theta, observation) for the 7214-pixel APOGEE case."""
    from jaxpayne.forward import ForwardModel, log_uniform_wavelength
    from jaxpayne.forward.synthetic import SyntheticLineEmulator

    network = _data("binspec_apogee", "NN_normalized_spectra.npz")
    spectrum = _data("binspec_apogee", "spectrum_combined_2M13012770+5754582.npz")
    if quick or network is None or spectrum is None:
        n = 600 if quick else sum(APOGEE_CHIPS)
        wavelength = log_uniform_wavelength(15100.0, 17000.0, APOGEE_VELOCITY_STEP)[:n]
        emulator = SyntheticLineEmulator(wavelength, n_lines=40)
        flux = np.ones(emulator.wavelength.size)
        error = np.full(flux.size, 0.01)
        chip = np.minimum(np.arange(flux.size) * 3 // flux.size, 2)
        name = f"synthetic stand-in, {flux.size} px"
        labels = {"teff": 5500.0, "logg": 4.4, "feh": 0.0}
    else:
        emulator = binspec_network(network, _data("binspec_apogee", "apogee_wavelength.npz"))
        with np.load(spectrum) as data:
            flux, error = data["spectrum"], data["spec_err"]
        chip = np.repeat(np.arange(3), APOGEE_CHIPS)
        name = "binspec APOGEE network, 7214 px"
        labels = {"teff": 5500.0, "logg": 4.5, "feh": 0.0, "mgfe": 0.05, "vmacro_label": 5.0}
    fm = ForwardModel(emulator, macroturbulence=False, continuum="cheb:4", n_segments=3,
                      max_rv=100.0, max_vsini=50.0)
    ivar = np.where(error < 0.1, 1.0 / error**2, 0.0)
    obs = fm.observation(emulator.wavelength, flux, ivar, segment=chip, outside="mask")
    theta = fm.pack({**labels, "rv": 3.0, "vsini": 5.0})
    return name, fm, theta, obs


def wide_case(quick: bool):
    """(name, forward model, theta, observation) for the 150k-pixel wide-band case."""
    from jaxpayne.forward import ForwardModel
    from jaxpayne.forward.synthetic import SyntheticLineEmulator

    path = _data("doppler_cannon", "coolstars_cubic_cannon.npz")
    if quick or path is None:
        step = 5.0 if quick else 0.1
        emulator = SyntheticLineEmulator(np.arange(3000.0, 18000.0 + step / 2, step), n_lines=50)
        name = f"synthetic stand-in, {emulator.wavelength.size} px"
        labels = {"teff": 5500.0, "logg": 4.4, "feh": 0.0}
    else:
        emulator = CubicCannon(path)
        name = f"Doppler cubic Cannon, {emulator.wavelength.size} px"
        labels = dict(zip(emulator.label_names, (5500.0, 4.4, 0.0)))
    fm = ForwardModel(emulator, resolution=WIDE_RESOLUTION, continuum="filter",
                      n_segments=len(WIDE_ARM_EDGES) + 1, max_rv=300.0, max_vsini=100.0,
                      max_vmacro=15.0)
    wavelength = emulator.wavelength
    arm = np.searchsorted(np.asarray(WIDE_ARM_EDGES), wavelength).astype(np.int32)
    flux = np.ones(wavelength.size)
    obs = fm.observation(wavelength, flux, np.full(wavelength.size, 1e4), segment=arm,
                         outside="mask")
    theta = fm.pack({**labels, "rv": 12.0, "vsini": 8.0, "vmacro": 4.0})
    return name, fm, theta, obs


CASES = {"apogee": apogee_case, "wide": wide_case}


def run(quick: bool = False, repeat: int = 10, float64: bool = False,
        cases: tuple[str, ...] = tuple(CASES)) -> list[dict]:
    """Time the cases; returns one dict of results per case and prints a table."""
    import jax
    import jax.numpy as jnp

    if float64:
        jax.config.update("jax_enable_x64", True)
    results = []
    for case in cases:
        name, fm, theta, obs = CASES[case](quick)
        theta = jnp.asarray(theta)
        row = {"case": name, "pixels": int(obs.flux.shape[0]), "params": fm.n_params,
               "working_nodes": int(fm.grid.lengths.sum()), "fft_length": fm.grid.fft_length,
               "dtype": str(theta.dtype)}
        functions = {
            "model_flux": jax.jit(fm.model_flux),
            "loglike": jax.jit(fm.loglike),
            "grad_loglike": jax.jit(jax.grad(fm.loglike)),
            "jacobian_residuals": jax.jit(jax.jacfwd(fm.residuals)),
        }
        if quick:  # smoke test: the cheapest and the most expensive evaluation only
            functions = {k: functions[k] for k in ("model_flux", "jacobian_residuals")}
        for label, fn in functions.items():
            ms, compile_s = _time(fn, theta, obs, repeat=repeat)
            row[f"{label}_ms"] = ms
            row[f"{label}_compile_s"] = compile_s
        if not quick and row["pixels"] < BATCH_MAX_PIXELS:
            # a batch of spectra in one call, as the batched fitter evaluates them
            thetas = jnp.broadcast_to(theta, (BATCH, theta.size))
            batch = jax.tree_util.tree_map(
                lambda x: jnp.broadcast_to(x, (BATCH,) + x.shape), obs
            )
            label = f"vmap{BATCH}_grad_loglike"
            ms, compile_s = _time(jax.jit(jax.vmap(jax.grad(fm.loglike))), thetas, batch,
                                  repeat=repeat)
            row[f"{label}_ms"], row[f"{label}_compile_s"] = ms, compile_s
            functions[label] = None
        results.append(row)
        print(f"{row['case']}: {row['pixels']} observed px, {row['params']} free params, "
              f"{row['working_nodes']} working nodes (FFT {row['fft_length']}), {row['dtype']}")
        for label in functions:
            print(f"  {label:20s} {row[label + '_ms']:9.2f} ms   "
                  f"(compile {row[label + '_compile_s']:.1f} s)")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--repeat", type=int, default=10, help="timed repetitions (median)")
    parser.add_argument("--float64", action="store_true", help="enable float64")
    parser.add_argument("--case", choices=sorted(CASES), action="append",
                        help="case(s) to run (default all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    print(f"python {sys.version.split()[0]}, ", end="")
    import jax

    print(f"jax {jax.__version__} on {jax.devices()[0].platform}")
    run(quick=args.quick, repeat=args.repeat, float64=args.float64,
        cases=tuple(args.case or CASES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
