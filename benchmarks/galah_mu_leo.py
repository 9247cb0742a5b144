"""The GALAH Gaia-benchmark giant mu Leo: four CCD files fitted as one star from a manifest.

The emulator is trained on a grid made from the Doppler package's cubic Cannon
(``doppler_cannon/coolstars_cubic_cannon.npz``, a Cannon of synthetic spectra) convolved to
R = 28,000 on the star's own four CCD pixel grids (4714–4903, 5650–5874, 6478–6736, 7586–7887 Å,
air): ``--n-grid`` labels drawn uniformly in Teff 3800–5600 K, log g 1.0–3.8, [Fe/H] −1.0–+0.5
(seed 0), and a cubic Cannon trained on them (the grid's own functional form, so the emulator adds
no error of its own; the grid's own error, the Doppler Cannon's intrinsic scatter s, is carried
over as the model's error, interpolated onto the pixels). Then, through the command line,

    jaxpayne fit --model OUT/galah_cannon.h5 --manifest OUT/mu_leo.csv --continuum filter:50 --max-rv 100

for all four CCDs, for CCDs 1–3 only (CCD 4 holds the telluric O₂ A band, 7590–7700 Å), and for
all four without the model error in the likelihood (``--no-emulator-error``), and for CCDs 1–3
with macroturbulence free (``--vmacro``), and the labels are compared with the benchmark's literature values
(``galah_benchmark/gaia_benchmark_literature_parameters.csv``).

    python benchmarks/galah_mu_leo.py OUT [--n-grid 1500]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np

NAMES = ("teff", "logg", "feh")
BOX = {"teff": (3800.0, 5600.0), "logg": (1.0, 3.8), "feh": (-1.0, 0.5)}
RESOLUTION = 28_000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--n-grid", type=int, default=1500)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import jax
    import jax.numpy as jnp
    from astropy.table import Table

    from jaxpayne import load_model
    from jaxpayne.datasets import data_file
    from jaxpayne.emulators.cannon import train_cannon
    from jaxpayne.forward import forward_model_from_options, model_spectrum
    from jaxpayne.io.manifest import iter_manifest

    folder = data_file("galah_benchmark")
    files = sorted(str(p) for p in Path(folder).glob("131216002601003*.fits"))
    Table({"id": ["mu_Leo"], "files": [";".join(files)]}).write(out / "mu_leo.csv", overwrite=True)
    Table({"id": ["mu_Leo"], "files": [";".join(files[:3])]}).write(out / "mu_leo_ccd123.csv", overwrite=True)
    (star,) = list(iter_manifest(out / "mu_leo.csv"))
    wave, segment = np.asarray(star.wavelength), np.asarray(star.segment)

    t0 = time.perf_counter()
    cannon = load_model(data_file("doppler_cannon", "coolstars_cubic_cannon.npz"),
                        wavelength_range=(wave[0] - 20.0, wave[-1] + 20.0))
    fm = forward_model_from_options(cannon, rv=False, resolution=RESOLUTION, continuum="none", n_segments=4)
    obs = fm.observation(wave, np.ones_like(wave), np.ones_like(wave), segment=segment, medium="air")

    @jax.jit
    def spectra(labels):
        return jax.vmap(lambda l: model_spectrum(fm, {**dict(zip(NAMES, l)), "rv": 0.0}, obs).flux)(labels)

    rng = np.random.default_rng(0)
    labels = np.column_stack([rng.uniform(*BOX[k], args.n_grid) for k in NAMES])
    flux = np.concatenate([np.asarray(spectra(jnp.asarray(labels[a:a + 64], jnp.float32)))
                           for a in range(0, len(labels), 64)])
    sane = np.all(np.isfinite(flux), axis=1) & (flux.min(axis=1) > 0) & (flux.max(axis=1) < 1.3)
    grid_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = train_cannon(labels[sane], flux[sane], None, label_names=NAMES, wavelength=wave, order=3, medium="air")
    # the grid's own model error: the Doppler Cannon's intrinsic scatter s on these pixels (at
    # its native sampling, interpolated: an approximation of s after the convolution)
    scatter = np.interp(wave, cannon.wavelength, np.nan_to_num(cannon.emulator_error))
    model = model.replace(validation={"rms": scatter.astype(np.float32), "summary": {
        "rms_kind": "synthetic grid's intrinsic scatter (Doppler Cannon s, interpolated)"}})
    model.save(out / "galah_cannon.h5")
    print(f"grid: {sane.sum()} of {len(labels)} Doppler-Cannon spectra at R={RESOLUTION:g} on mu Leo's "
          f"{wave.size} pixels ({grid_seconds:.1f} s); cubic Cannon trained in {time.perf_counter() - t0:.1f} s")

    literature = Table.read(Path(folder) / "gaia_benchmark_literature_parameters.csv")
    names = [str(n).strip() for n in literature[literature.colnames[0]]]
    row = literature[[i for i, n in enumerate(names) if n.replace(" ", "").lower() in ("muleo", "mu_leo")][0]]
    reference = {"teff": float(row["teff"]), "logg": float(row["logg"]), "feh": float(row["mh"])}
    print(f"literature (Gaia benchmark): Teff {reference['teff']:.0f} K, log g {reference['logg']:.2f}, "
          f"[M/H] {reference['feh']:+.2f}")
    print("| CCDs | Teff [K] | log g | [Fe/H] | rv [km/s] | vmacro [km/s] | chi2_red | pixels | flags | fit s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    runs = (("1–4", "mu_leo.csv", []), ("1–3", "mu_leo_ccd123.csv", []),
            ("1–4, no model error", "mu_leo.csv", ["--no-emulator-error"]),
            ("1–3, vmacro free", "mu_leo_ccd123.csv", ["--vmacro"]))
    for k, (name, manifest, extra) in enumerate(runs):
        table = out / f"fit{k}.ecsv"
        table.unlink(missing_ok=True)
        t0 = time.perf_counter()
        subprocess.run(["jaxpayne", "fit", "--model", str(out / "galah_cannon.h5"), "--manifest", str(out / manifest),
                        "--continuum", "filter:50", "--max-rv", "100", "--quiet", "--out", str(table), *extra],
                       check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        fit = Table.read(table)[0]
        print(f"| {name} | {fit['teff']:.0f} ± {fit['teff_err']:.0f} | {fit['logg']:.2f} ± {fit['logg_err']:.2f} | "
              f"{fit['feh']:+.2f} ± {fit['feh_err']:.2f} | {fit['rv']:.2f} | "
              f"{fit['vmacro'] if 'vmacro' in fit.colnames else float('nan'):.1f} | {fit['chi2_red']:.0f} | "
              f"{fit['n_pixels']} | {fit['message'] or 0} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
