"""Composite (SB2) spectra and binary fits on binspec's published networks and real APOGEE data."""

import numpy as np
import pytest

import jaxpayne
from jaxpayne.fitting import Flags

LABELS = "teff,logg,feh,mg_fe,vmacro"
STAR = "spectrum_combined_2M13012770+5754582.npz"
#: binspec's own numpy code (github.com/kareemelbadry/binspec, fitting.py) on this spectrum, run
#: here (benchmarks/README.md "Binary fits"): [Teff1, logg1, [Fe/H], [Mg/Fe], q, vmacro1, vmacro2,
#: dv1, dv2] and Teff2.
BINSPEC_RESULT = dict(teff_1=5072.95, logg_1=4.453, feh=-0.152, q=0.817, rv_1=3.37, rv_2=-12.43, teff_2=4249.5)


@pytest.fixture(scope="module")
def binspec(need_data_module):
    folder = need_data_module("binspec_apogee")
    model = jaxpayne.load_model(folder / "NN_normalized_spectra.npz", label_names=LABELS,
                                wavelength=folder / "apogee_wavelength.npz")
    from jaxpayne.payne_format import load_binspec_networks

    return folder, model, load_binspec_networks(folder, model.label_names)


def _forward(model, **options):
    from jaxpayne.forward import ForwardModel

    return ForwardModel(model, rotation=False, macroturbulence=False, continuum="cheb:4", n_segments=3,
                        max_rv=150.0, **options)


def _observation(fm, folder, model):
    with np.load(folder / STAR) as data:
        flux, error = data["spectrum"], data["spec_err"]
    return fm.observation(model.wavelength, flux, error=np.where(error < 0.1, error, np.inf), segment="gaps",
                          outside="mask")


@pytest.mark.parametrize("weights", ["ratio", "physical", "tied"])
def test_twin_components_reproduce_the_single_star(binspec, weights):
    """Two identical stars at one velocity are one star: the composite's likelihood equals the
    single-star likelihood for every weighting (ratio, flux × radius², tied at q = 1 up to the
    companion network's error)."""
    from jaxpayne.forward import CompositeModel

    folder, model, nets = binspec
    fm = _forward(model)
    obs = _observation(fm, folder, model)
    kwargs = {} if weights == "ratio" else {k: v for k, v in nets.items() if weights == "tied" or k != "companion"}
    cm = CompositeModel(fm, weights=weights, **kwargs)
    star = dict(teff=5000.0, logg=4.5, feh=-0.2, mg_fe=0.05, vmacro=5.0, rv=1.0)
    values = {n: star[cm.base_name(n)] for n in cm.param_names if cm.base_name(n) in star}
    values.update({n: 0.37 for n in cm.param_names if n.startswith("flux_ratio")}, **({"q": 1.0} if weights == "tied" else {}))
    single = float(fm.loglike(fm.pack(star), obs))
    composite = float(cm.loglike(cm.pack(values), obs))
    tolerance = 1e-5 * abs(single) if weights != "tied" else 0.02 * abs(single)
    assert composite == pytest.approx(single, abs=tolerance)
    if weights == "ratio":
        # a zero flux ratio hides the secondary whatever it is
        other = dict(values, teff_2=6500.0, rv_2=-40.0, **{n: 0.0 for n in cm.param_names if n.startswith("flux_ratio")})
        assert float(cm.loglike(cm.pack(other), obs)) == pytest.approx(single, abs=1e-5 * abs(single))


def test_binary_fits_mock_binaries_and_the_real_sb2(binspec):
    """One batch: mock binaries with known truth (labels, q and both rvs recovered within their
    errors) and the real combined spectrum 2M13012770+5754582, which binspec fits as a binary."""
    from jaxpayne.fitting.binary import BinaryFitter
    from jaxpayne.fitting.run import pad_batch

    folder, model, nets = binspec
    fitter = BinaryFitter(model, weights="tied", networks=nets, continuum="cheb:4", n_segments=3, max_rv=200.0)
    cm = fitter.forward
    wave = np.asarray(model.wavelength)
    segment = np.repeat([0, 1, 2], [2920, 2400, 1894])
    template = fitter.observation(wave, np.ones_like(wave), np.ones_like(wave), segment=segment)
    rng = np.random.default_rng(3)
    snr, truths, batch = 80.0, [], []
    for _ in range(4):
        rv_1 = rng.uniform(-20, 20)
        truth = dict(teff_1=rng.uniform(5400, 6200), logg_1=rng.uniform(4.2, 4.45), feh=rng.uniform(-0.4, 0.2),
                     mg_fe=rng.uniform(0.0, 0.15), vmacro_1=rng.uniform(3, 7), rv_1=rv_1, vmacro_2=rng.uniform(3, 7),
                     rv_2=rv_1 + rng.choice([-1, 1]) * rng.uniform(25, 50), q=rng.uniform(0.65, 0.85))
        covered = fitter.single.forward.valid_wavelength(wave, tuple(sorted((truth["rv_1"], truth["rv_2"]))))
        at_truth = template._replace(ivar=np.where(covered, 1.0, 0.0))  # the composite checks its pixels
        flux = np.asarray(cm.model_flux(truth, at_truth), np.float64)
        continuum = 1.0 + 0.1 * np.sin(wave / 300.0)
        noisy = (flux + rng.normal(size=wave.size) / snr) * continuum
        batch.append(fitter.observation(wave, noisy, error=continuum / snr, segment=segment))
        truths.append(cm.pack(truth))
    real = _observation(fitter.single.forward, folder, model)
    batch.append(fitter.observation(np.asarray(real.wavelength), np.asarray(real.flux), np.asarray(real.ivar),
                                    segment=np.asarray(real.segment)))
    result = fitter.fit(pad_batch(batch, len(batch)))

    mocks = slice(0, 4)
    error = np.sqrt(np.einsum("bii->bi", result.covariance[mocks]))
    pulls = (result.theta[mocks] - np.array(truths)) / error
    # the companion of a cool low-q mock may sit on the emulator's Teff bound (AT_BOUND, fine);
    # a fit caught in the exchanged minimum (q → 1) must say so; the others recover the truth
    q = result.theta[mocks, fitter.param_names.index("q")]
    trouble = int(Flags.NOT_CONVERGED | Flags.COV_SINGULAR | Flags.FAILED)
    clean = ((result.flags[mocks] & trouble) == 0) & (q < 0.99)
    assert np.all((result.flags[mocks][~clean] & (trouble | int(Flags.AT_BOUND))) != 0)
    assert clean.sum() >= 3, result.flags
    assert np.all(np.isfinite(pulls[clean]))
    assert np.max(np.abs(pulls[clean])) < 5.0, dict(zip(fitter.param_names, np.round(np.max(np.abs(pulls[clean]), axis=0), 2)))
    assert np.sqrt(np.mean(pulls[clean] ** 2)) < 2.0
    red = result.chi2[mocks] / result.dof[mocks]
    assert np.all(np.abs(red[clean] - 1.0) < 0.05)
    assert np.all(result.extra["delta_bic"][mocks] > 100)  # all clearly binaries at S/N 80

    # the real SB2: single vs binary on the same pixels, compared with binspec's own fit
    row = {n: result.theta[4, j] for j, n in enumerate(fitter.param_names)}
    row.update({k: v[4] for k, v in result.extra.items()})
    assert row["delta_chi2"] > 10_000 and row["delta_bic"] > 10_000  # binspec: Δχ² = 15441
    assert abs(row["rv_1"] - BINSPEC_RESULT["rv_1"]) < 1.0
    assert abs(row["rv_2"] - BINSPEC_RESULT["rv_2"]) < 2.0
    assert abs(row["q"] - BINSPEC_RESULT["q"]) < 0.15  # ours 0.72, Teff₂ on the box edge (4200 K, AT_BOUND)
    assert abs(row["teff_1"] - BINSPEC_RESULT["teff_1"]) < 250
    assert abs(row["teff_2"] - BINSPEC_RESULT["teff_2"]) < 150
    assert abs(row["single_rv"] - 0.97) < 1.0 and abs(row["single_teff"] - 4921) < 100  # binspec's single fit
    assert not result.flags[4] & (Flags.NOT_CONVERGED | Flags.FAILED | Flags.COV_SINGULAR)


def test_composite_rejects_bad_set_ups(binspec):
    from jaxpayne.forward import CompositeModel

    _, model, nets = binspec
    fm = _forward(model)
    with pytest.raises(ValueError, match="weights must be one of"):
        CompositeModel(fm, weights="magic")
    with pytest.raises(ValueError, match="need a flux emulator"):
        CompositeModel(fm, weights="physical")
    with pytest.raises(ValueError, match="companion emulator"):
        CompositeModel(fm, weights="tied", flux=nets["flux"])
    with pytest.raises(ValueError, match="must be free"):
        CompositeModel(_forward(model, fixed={"rv": 0.0}))
    with pytest.raises(ValueError, match="not labels of the emulator"):
        CompositeModel(fm, shared=("alpha",))
    # an unmasked pixel beyond what the components can model: one clear error, not garbage
    folder = binspec[0]
    obs = _observation(fm, folder, model)
    cm = CompositeModel(fm)
    bad = obs._replace(ivar=np.asarray(obs.ivar).copy())
    bad.ivar[0] = 1.0  # 15168 Å: outside the emulator's range at every velocity
    for call in (cm.loglike, cm.normalized, cm.model_flux, cm.jacobian):
        with pytest.raises(ValueError, match="outside the range"):
            call(cm.initial, bad)
    assert np.isfinite(float(cm.loglike(cm.initial, obs)))


def test_cli_binary_needs_its_networks(binspec, capsys, tmp_path):
    """`fit --binary tied` without --binary-networks: one clear line, no traceback."""
    from jaxpayne.cli import main

    folder, _, _ = binspec
    code = main(["fit", "--model", str(folder / "NN_normalized_spectra.npz"), "--model-format", "binspec",
                 "--model-labels", LABELS, "--model-wavelength", str(folder / "apogee_wavelength.npz"),
                 str(folder / STAR), "--wavelength", str(folder / "apogee_wavelength.npz"), "--binary", "tied",
                 "--out", str(tmp_path / "b.ecsv"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "--binary-networks" in err and "Traceback" not in err


def test_cli_restarts_go_to_the_single_star_fit(binspec):
    """`fit --binary ... --restarts N`: N starts for the single-star fit; the binary keeps its own
    (the nested start and the best of its grid), in `fit --binary` and in `fit --visits`."""
    from jaxpayne.cli import _binary_fitter, _visit_fitter, build_parser
    from jaxpayne.fitting.binary import DEFAULT_RESTARTS, DEFAULT_RV_SPAN
    from jaxpayne.fitting.run import StarVisits
    from jaxpayne.fitting.visits import VISIT_RV_SPAN
    from jaxpayne.io import Spectrum

    folder, model, _ = binspec
    args = build_parser().parse_args(["fit", "--model", "m.npz", "--out", "t.fits", "x.npz", "--binary", "ratio",
                                      "--restarts", "3", "--segments", "3"])
    fitter, _ = _binary_fitter(args, model, iter(()))
    assert (fitter.restarts, fitter.single.restarts, fitter.rv_span) == (DEFAULT_RESTARTS, 3, DEFAULT_RV_SPAN)
    wave = np.asarray(model.wavelength)
    visit = Spectrum(wave, np.ones_like(wave), np.ones_like(wave), id="s", source="s.npz")
    args.visits, args.visits_by = "per-visit", "file"
    fitter, stars = _visit_fitter(args, model, iter([visit, visit]))
    assert isinstance(next(stars), StarVisits)
    assert (fitter.visit_fitter.restarts, fitter.single.restarts, fitter.visit_fitter.rv_span) == (
        DEFAULT_RESTARTS, 3, VISIT_RV_SPAN)
