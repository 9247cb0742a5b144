"""Fit the real APOGEE spectra of ``binspec_apogee`` with the published binspec network.

Prints the labels, errors, reduced χ² and flags of each spectrum and writes a residual plot per
spectrum into ``--out`` (PNG). binspec's pixel mask (``apogee_mask.npz``: pixels its authors
exclude from fits, e.g. lines the models reproduce poorly) is applied unless ``--no-binspec-mask``.

    python benchmarks/fit_real_apogee.py --out /tmp/apogee_fits
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the residual plots")
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--no-binspec-mask", action="store_true", help="fit all pixels, without binspec's mask")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    import jaxpayne
    from jaxpayne.datasets import data_file
    from jaxpayne.fitting import Fitter, fit_spectra
    from jaxpayne.io import read_spectrum
    from jaxpayne.plotting import plot_fit

    wave = data_file("binspec_apogee", "apogee_wavelength.npz")
    model = jaxpayne.load_model(data_file("binspec_apogee", "NN_normalized_spectra.npz"), format="binspec",
                                label_names="teff,logg,feh,mg_fe,vmacro", wavelength=wave)
    spectra = read_spectrum(data_file("binspec_apogee", "spectrum_combined_2M13012770+5754582.npz"), wavelength=wave)
    spectra += read_spectrum(data_file("binspec_apogee", "spectra_visit_2M06133561+2433362.npz"), wavelength=wave)
    if not args.no_binspec_mask:
        exclude = np.load(data_file("binspec_apogee", "apogee_mask.npz"))["apogee_mask"].astype(bool)
        spectra = [s.replace(mask=np.asarray(s.mask, bool) | exclude) for s in spectra]
        print(f"binspec mask: {int(exclude.sum())} of {exclude.size} pixels excluded")
    fitter = Fitter(model, rv=True, max_rv=100.0, continuum="filter", restarts=args.restarts, n_segments=3)
    table = fit_spectra(model, spectra, fitter=fitter, progress=False)
    names = table.meta["PARAMS"].split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for spectrum, row in zip(spectra, table):
        text = "  ".join(f"{n}={row[n]:.3f}±{row[n + '_err']:.3f}" for n in names)
        print(f"{row['id']}: {text}  chi2_red={row['chi2_red']:.2f}  n_pix={row['n_pixels']}  flags={row['flags']} "
              f"({row['message']})")
        obs = fitter.observation(spectrum.wavelength, np.where(spectrum.good, spectrum.flux, 0.0),
                                 np.where(spectrum.good, spectrum.ivar, 0.0), segment=spectrum.segment,
                                 medium=spectrum.medium)
        theta = np.array([row[n] for n in names])
        fig = plot_fit(fitter, theta, obs, title=f"{row['id']}: {text}, χ²/dof={row['chi2_red']:.2f}")
        path = out / f"{row['id']}.png"
        fig.savefig(path, dpi=110)
        print(f"  residual plot -> {path}")


if __name__ == "__main__":
    main()
