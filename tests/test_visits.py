"""Multi-visit models and joint visit fits (SB1 / SB2 orbits) on binspec's networks and the three
real APOGEE visits of 2M06133561+2433362."""

import numpy as np
import pytest

import jaxpayne

LABELS = "teff,logg,feh,mg_fe,vmacro"
VISITS = "spectra_visit_2M06133561+2433362.npz"


@pytest.fixture(scope="module")
def binspec(need_data_module):
    folder = need_data_module("binspec_apogee")
    model = jaxpayne.load_model(folder / "NN_normalized_spectra.npz", label_names=LABELS,
                                wavelength=folder / "apogee_wavelength.npz")
    from jaxpayne.payne_format import load_binspec_networks

    return folder, model, load_binspec_networks(folder, model.label_names)


def _forward(model, **options):
    from jaxpayne.forward import ForwardModel

    options = {"continuum": "cheb:4", **options}
    return ForwardModel(model, rotation=False, macroturbulence=False, n_segments=3, max_rv=200.0, **options)


def _visits(fm, folder, model, pixels=slice(None)):
    with np.load(folder / VISITS) as data:
        spectra, errors = data["spectra"], data["spec_errs"]
    wave = np.asarray(model.wavelength)[pixels]
    return [fm.observation(wave, f[pixels], error=np.where(e < 0.1, e, np.inf)[pixels], segment="gaps",
                           outside="mask") for f, e in zip(spectra, errors)]


def test_stitched_likelihood_is_the_sum_over_visits(binspec):
    """The log-likelihood of the stitched visits is the sum of the visits' own, with each visit
    at the velocities the rule gives it: per-visit (one star), constant, and an orbit
    (rv₂ = γ − (rv₁ − γ)/q_dyn) of a tied binary; stitch/unstitch round-trip."""
    import jax

    from jaxpayne.forward import CompositeModel, MultiVisitModel, orbit_secondary_velocity

    folder, model, nets = binspec
    fm = _forward(model)
    visits = _visits(fm, folder, model)
    star = dict(teff=4900.0, logg=4.6, feh=-0.2, mg_fe=0.1, vmacro=10.0)
    rvs = [15.0, -67.8, -57.6]

    mv = MultiVisitModel(fm, 3, velocities="per-visit")
    assert mv.param_names == ("teff", "logg", "feh", "mg_fe", "vmacro", "rv_v0", "rv_v1", "rv_v2")
    assert mv.velocity_names == ("rv_v0", "rv_v1", "rv_v2")
    obs = mv.stitch(visits)
    assert obs.flux.shape == (3 * 7214,) and int(obs.segment.max()) == 8
    back = mv.unstitch(obs)
    for v in range(3):
        np.testing.assert_array_equal(np.asarray(back.flux[v]), np.asarray(visits[v].flux))
        np.testing.assert_array_equal(np.asarray(back.segment[v]), np.asarray(visits[v].segment))
    joint = float(mv.loglike(mv.pack(dict(star, **{f"rv_v{v}": rv for v, rv in enumerate(rvs)})), obs))
    each = sum(float(fm.loglike(fm.pack(dict(star, rv=rv)), o)) for rv, o in zip(rvs, visits))
    assert joint == pytest.approx(each, rel=1e-5)

    constant = MultiVisitModel(fm, 3, velocities="constant")
    assert "rv" in constant.param_names and constant.velocity_names == ("rv",)
    joint = float(constant.loglike(constant.pack(dict(star, rv=-40.0)), obs))
    each = sum(float(fm.loglike(fm.pack(dict(star, rv=-40.0)), o)) for o in visits)
    assert joint == pytest.approx(each, rel=1e-5)

    cm = CompositeModel(fm, weights="tied", **nets)
    orbit = MultiVisitModel(cm, 3, velocities="orbit")
    assert orbit.param_names[-5:] == ("gamma", "q_dyn", "rv_1_v0", "rv_1_v1", "rv_1_v2")
    assert orbit.derived_names == ("rv_2_v0", "rv_2_v1", "rv_2_v2", "teff_2", "logg_2")
    labels = dict(teff_1=4870.0, logg_1=4.6, feh=-0.2, mg_fe=0.1, vmacro_1=12.0, vmacro_2=11.0, q=0.92)
    values = dict(labels, gamma=-40.4, q_dyn=0.9, **{f"rv_1_v{v}": rv for v, rv in enumerate(rvs)})
    joint = float(orbit.loglike(orbit.pack(values), orbit.stitch(visits)))
    rv2 = [float(orbit_secondary_velocity(rv, -40.4, 0.9)) for rv in rvs]
    each = sum(float(cm.loglike(cm.pack(dict(labels, rv_1=a, rv_2=b)), o)) for a, b, o in zip(rvs, rv2, visits))
    assert joint == pytest.approx(each, rel=1e-5)
    derived = orbit.derived_values(orbit.space.unflatten(orbit.pack(values)))
    for v in range(3):  # momentum: q_dyn (rv₂ − γ) = −(rv₁ − γ)
        assert 0.9 * (float(derived[f"rv_2_v{v}"]) + 40.4) == pytest.approx(-(rvs[v] + 40.4), abs=1e-4)
    companion = cm.derived_values(cm.space.unflatten(cm.pack(dict(labels, rv_1=0.0, rv_2=0.0))))
    assert float(derived["teff_2"]) == pytest.approx(float(companion["teff_2"]))
    # a multi-visit model is a pytree: copies with other weights share the compiled likelihood
    leaves, tree = jax.tree_util.tree_flatten(orbit)
    assert jax.tree_util.tree_unflatten(tree, leaves).param_names == orbit.param_names


def test_orbit_gradients_float64(binspec, x64):
    """check_grads of an orbit's log-likelihood (tied binary, 3 visits of 600 pixels) in float64:
    the composite's gradients (physical weights, the companion network, both stars' Doppler
    shifts and broadening) through the multi-visit wrapper, forward and reverse mode."""
    import jax.numpy as jnp
    from jax.test_util import check_grads

    from jaxpayne.forward import CompositeModel, MultiVisitModel, loglike

    folder, model, nets = binspec
    fm = _forward(model)
    visits = _visits(fm, folder, model, slice(400, 1000))
    visits = [o._replace(flux=o.flux.astype(jnp.float64), ivar=o.ivar.astype(jnp.float64),
                         wavelength=o.wavelength.astype(jnp.float64)) for o in visits]
    mv = MultiVisitModel(CompositeModel(fm, weights="tied", **nets), 3, velocities="orbit")
    obs = mv.stitch(visits)
    theta = jnp.asarray(mv.pack(dict(teff_1=4870.0, logg_1=4.6, feh=-0.2, mg_fe=0.1, vmacro_1=12.0, vmacro_2=11.0,
                                     q=0.92, gamma=-40.0, q_dyn=0.9, rv_1_v0=15.0, rv_1_v1=-67.0, rv_1_v2=-57.0)),
                        jnp.float64)
    scale = jnp.asarray(np.where(np.isfinite(mv.upper - mv.lower), mv.upper - mv.lower, 1.0))
    check_grads(lambda u: loglike(mv, theta + u * scale, obs) / 1e3, (jnp.zeros_like(theta),), order=1,
                modes=["fwd", "rev"], eps=1e-6, atol=2e-3, rtol=2e-3)


def test_orbit_start_untangles_exchanged_pairs():
    """Per-visit fits may call either star 1: the assignment that puts the pairs on one line
    gives γ and q_dyn exactly."""
    from jaxpayne.fitting.visits import orbit_start

    gamma, q = -12.0, 0.7
    rv_1 = np.array([30.0, -50.0, 5.0, -70.0, 60.0])
    rv_2 = gamma - (rv_1 - gamma) / q
    swap = np.array([False, True, False, True, True])
    primary, g, qd, rms = orbit_start(np.where(swap, rv_2, rv_1), np.where(swap, rv_1, rv_2))
    assert g == pytest.approx(gamma) and qd == pytest.approx(q) and rms < 1e-9
    np.testing.assert_allclose(primary, rv_1)
    # no separation: the default q, γ the light-weighted mean
    _, g, qd, _ = orbit_start(np.full(3, 4.0), np.full(3, 4.0), q_default=0.8)
    assert qd == 0.8 and g == pytest.approx(4.0)


def test_multi_visit_rejects_bad_set_ups(binspec):
    from jaxpayne.fitting.visits import VisitFitter
    from jaxpayne.forward import MultiVisitModel

    folder, model, _ = binspec
    fm = _forward(model)
    with pytest.raises(ValueError, match="velocities must be one of"):
        MultiVisitModel(fm, 2, velocities="wobbly")
    with pytest.raises(ValueError, match="two-star CompositeModel"):
        MultiVisitModel(fm, 2, velocities="orbit")
    with pytest.raises(ValueError, match="n_visits must be"):
        MultiVisitModel(fm, 0)
    with pytest.raises(ValueError, match="not modelled per visit"):
        MultiVisitModel(_forward(model, continuum="cheb:2:free"), 2)
    with pytest.raises(ValueError, match="need a visit model with a free rv"):
        MultiVisitModel(_forward(model, fixed={"rv": 0.0}), 2)
    with pytest.raises(ValueError, match="not parameters of the multi-visit model"):
        MultiVisitModel(fm, 2, fixed={"gamma": 1.0})
    mv = MultiVisitModel(fm, 3)
    visits = _visits(fm, folder, model)
    with pytest.raises(ValueError, match="has 3 visits, got 2 spectra"):
        mv.stitch(visits[:2])
    with pytest.raises(ValueError, match="multiple of 3 pixels"):
        mv.unstitch(visits[0]._replace(flux=visits[0].flux[:-1]))
    with pytest.raises(ValueError, match="an orbit needs two stars"):
        VisitFitter(model, 3, velocities="orbit")


def test_joint_orbit_fit_of_three_real_visits(binspec, tmp_path, capsys):
    """The three real visits of 2M06133561+2433362 fitted jointly as an SB2 orbit (tied weights)
    from the command line, one row per star: every per-visit fit's velocities, fitted on their
    own, lie on the joint orbit (rv₂ − γ = −(rv₁ − γ)/q_dyn) within their errors; the dynamical
    and spectroscopic mass ratios agree; the binary beats the joint SB1 fit (free rv per visit) by
    Δχ² ≫ 10⁴, and χ²/dof ≈ 1. A star with another number of visits is one FAILED row."""
    from astropy.table import Table

    from jaxpayne.cli import main
    from jaxpayne.fitting import Flags

    folder, _, _ = binspec
    with np.load(folder / VISITS) as data:  # a second "star" with only two of the visits
        np.savez(tmp_path / "spectra_visit_two.npz", spectra=data["spectra"][:2], spec_errs=data["spec_errs"][:2])
    out = tmp_path / "orbit.fits"
    code = main(["fit", "--model", str(folder / "NN_normalized_spectra.npz"), "--model-labels", LABELS,
                 "--model-wavelength", str(folder / "apogee_wavelength.npz"),
                 "--wavelength", str(folder / "apogee_wavelength.npz"), "--visits", "orbit", "--binary", "tied",
                 "--binary-networks", str(folder), "--continuum", "cheb:4", "--max-rv", "200", "--quiet",
                 "--out", str(out), str(folder / VISITS), str(tmp_path / "spectra_visit_two.npz")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "star has 2 visits but this run fits 3" in captured.err
    table = Table.read(out)
    assert list(table["id"]) == ["2M06133561+2433362", "two"]  # the file name without its prefix
    assert table["flags"][1] == int(Flags.FAILED) and "2 visits" in table["message"][1]
    row = {c: table[c][0] for c in table.colnames}
    assert row["flags"] & int(Flags.NOT_CONVERGED | Flags.FAILED | Flags.COV_SINGULAR) == 0
    assert 0.8 < row["chi2"] / row["dof"] < 1.1
    for v in range(3):
        joint_1, joint_2 = row[f"rv_1_v{v}"], row[f"rv_2_v{v}"]
        # the orbit's own constraint, then the independent per-visit fits against it
        assert row["q_dyn"] * (joint_2 - row["gamma"]) == pytest.approx(-(joint_1 - row["gamma"]), abs=1e-3)
        for star, joint in ((1, joint_1), (2, joint_2)):
            alone, sigma = row[f"visit_rv_{star}_v{v}"], row[f"visit_rv_{star}_v{v}_err"]
            assert abs(alone - joint) < 3 * np.hypot(sigma, 0.1), (v, star, alone, joint)
    # measured: γ = −40.36 ± 0.03 km/s, q_dyn = 0.905, q_spec = 0.925, visit 0 rv₁ = 15.0, rv₂ = −101.6
    assert row["gamma"] == pytest.approx(-40.4, abs=0.5) and row["gamma_err"] < 0.2
    assert abs(row["q_dyn"] - row["q"]) < 0.05
    assert row["rv_2_v0"] - row["rv_1_v0"] < -100.0
    assert 4500 < row["teff_2"] < row["teff_1"] < 5000
    assert row["delta_chi2"] > 5e4 and row["delta_bic"] > 5e4
    assert {"chi2_single", "single_rv_v0", "teff_2_err", "visit_rv_2_v2_err"} <= set(table.colnames)


def test_visit_grouping_frames_and_counts(monkeypatch):
    """Spectra become stars by file or by object; topocentric visits move to the barycentric
    frame; rest-frame visits (apStar rows) and wrong visit counts are refused with a reason."""
    from types import SimpleNamespace

    import jaxpayne.fitting.run as run
    from jaxpayne.forward.doppler import SPEED_OF_LIGHT
    from jaxpayne.io import ReadFailure, Spectrum

    wave = np.linspace(15200.0, 15300.0, 50)

    def spectrum(id_, source, **options):
        return Spectrum(wave, np.ones(50), np.ones(50), id=id_, source=source, **options)

    items = [spectrum("a", "f1", meta={"kind": "combined"}), spectrum("a_visit1", "f1"), spectrum("a_visit2", "f1"),
             ReadFailure("bad.fits", "not FITS"), spectrum("b_visit1", "f2")]
    stars = list(run.group_visits(iter(items)))
    assert [type(s).__name__ for s in stars] == ["StarVisits", "ReadFailure", "StarVisits"]
    assert (stars[0].id, stars[0].source, [v.id for v in stars[0].spectra]) == ("a", "f1", ["a_visit1", "a_visit2"])
    by_object = [spectrum("x_1", "v1.fits", meta={"OBJID": "2M1"}), spectrum("y", "v2.fits", meta={"OBJID": "2M2"}),
                 spectrum("x_2", "v3.fits", meta={"OBJID": "2M1"})]
    stars = list(run.group_visits(by_object, by="object"))
    assert [(s.id, s.source, len(s.spectra)) for s in stars] == [("2M1", "v1.fits;v3.fits", 2), ("2M2", "v2.fits", 1)]
    with pytest.raises(ValueError, match="by 'file' or 'object'"):
        list(run.group_visits(items, by="night"))

    seen = []
    monkeypatch.setattr(run, "spectrum_observation",
                        lambda fitter, s: (seen.append(s) or s, {"n_good": 50, "n_masked": 1}))
    fitter = SimpleNamespace(n_visits=2, velocities="orbit", visit_fitter=None)
    bc = 20.0
    topo = run.StarVisits("s", "f", (spectrum("s1", "f", frame="topocentric", barycentric_correction=bc),
                                     spectrum("s2", "f", frame="barycentric")))
    observations, extra = run.visits_observations(fitter, topo)
    beta = bc / SPEED_OF_LIGHT
    np.testing.assert_allclose(seen[0].wavelength, wave * np.sqrt((1 + beta) / (1 - beta)), rtol=1e-14)
    assert seen[0].frame == "barycentric" and seen[0].barycentric_correction is None
    assert extra == {"n_good": 100, "n_masked": 2, "frame": "barycentric", "bc": extra["bc"]} and np.isnan(extra["bc"])
    rest = run.StarVisits("r", "apStar.fits", (spectrum("r1", "apStar.fits", frame="rest"),) * 2)
    with pytest.raises(ValueError, match="rest frame"):
        run.visits_observations(fitter, rest)
    run.visits_observations(SimpleNamespace(n_visits=2, velocities="constant", visit_fitter=None), rest)
    with pytest.raises(ValueError, match="star has 1 visits but this run fits 2"):
        run.visits_observations(fitter, run.StarVisits("t", "f", (spectrum("t1", "f"),)))
    mixed = run.StarVisits("m", "f", (spectrum("m1", "f", frame="barycentric"), spectrum("m2", "f")))
    with pytest.raises(ValueError, match="different velocity frames"):
        run.visits_observations(fitter, mixed)
