import json

import numpy as np
import pytest

import jaxpayne
from jaxpayne.grids import TrainingSet
from jaxpayne.model import FORMAT_VERSION, Model, ModelFileError
from jaxpayne.training import train_emulator


def toy_set(n=64, npix=40):
    rng = np.random.default_rng(0)
    wave = np.linspace(5000, 5010, npix)
    labels = np.column_stack([rng.uniform(4000, 7000, n), rng.uniform(1, 5, n)])
    depth = 0.2 + 0.5 * (7000 - labels[:, :1]) / 3000
    width = 0.3 + 0.1 * labels[:, 1:]
    flux = 1 - depth * np.exp(-0.5 * ((wave - 5005) / width) ** 2)
    return TrainingSet(wave, labels, flux, ("teff", "logg"))


@pytest.fixture(scope="module")
def trained():
    return train_emulator(toy_set(), epochs=30, hidden=(16, 16), batch_size=16, progress=False)


@pytest.mark.parametrize("kind", ["mlp", "resmlp", "perpixel"])
def test_every_architecture_trains_and_roundtrips(tmp_path, kind):
    res = train_emulator(toy_set(), epochs=3, emulator=kind, hidden=(8,), width=8, n_blocks=1, n_hidden=3, batch_size=16, progress=False)
    m = res.model
    path = m.save(tmp_path / "m.h5")
    m2 = jaxpayne.load_model(path)
    x = np.array([[5000.0, 3.0], [6000.0, 4.0]])
    np.testing.assert_array_equal(np.asarray(m.predict(x)), np.asarray(m2.predict(x)))
    assert m2.kind == kind and m2.config == m.config


def test_model_file_contents(tmp_path, trained):
    m = trained.model
    path = m.save(tmp_path / "m.h5")
    m2 = Model.load(path)
    assert m2.label_names == ("teff", "logg")
    assert m2.label_units == ("K", "dex")
    np.testing.assert_array_equal(m2.wavelength, m.wavelength)
    lo, hi = m2.bounds
    np.testing.assert_allclose(lo, toy_set().labels.min(0))
    np.testing.assert_allclose(hi, toy_set().labels.max(0))
    assert m2.medium == "vacuum"
    assert m2.emulator_error.shape == (40,)
    summary = m2.validation["summary"]
    assert {"rms", "median_abs", "p99_abs"} <= set(summary)
    prov = m2.provenance
    assert prov["n_train"] + prov["n_validation"] == 64
    assert len(prov["dataset_sha256"]) == 64
    assert prov["versions"]["jax"]
    import h5py

    with h5py.File(path) as f:
        assert f.attrs["format"] == "jaxpayne-model" and f.attrs["format_version"] == FORMAT_VERSION


def test_model_loads_without_training_code(tmp_path, trained):
    """The file is self-describing: h5py + json alone recover labels, grid and weights."""
    import h5py

    path = trained.model.save(tmp_path / "m.h5")
    with h5py.File(path) as f:
        meta = json.loads(f.attrs["metadata"])
        assert meta["labels"]["names"] == ["teff", "logg"]
        assert meta["emulator"]["kind"] == "mlp"
        assert "weights/params/hidden_0/kernel" in f


def test_bad_model_files(tmp_path, trained):
    with pytest.raises(ModelFileError, match="no such model file"):
        jaxpayne.load_model(tmp_path / "nope.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(ModelFileError, match="junk.h5: not a model file"):
        jaxpayne.load_model(junk)
    import h5py

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.ones(3)
    with pytest.raises(ModelFileError, match="not a jaxpayne model"):
        jaxpayne.load_model(foreign)
    good = trained.model.save(tmp_path / "good.h5")
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(ModelFileError, match="truncated.h5"):
        jaxpayne.load_model(truncated)
    newer = tmp_path / "newer.h5"
    newer.write_bytes(good.read_bytes())
    with h5py.File(newer, "r+") as f:
        f.attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ModelFileError, match="upgrade jaxpayne"):
        jaxpayne.load_model(newer)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(good.read_bytes())
    with h5py.File(broken, "r+") as f:
        del f["weights/params/output/kernel"]
        f["weights/params/output/kernel"] = np.ones((3, 3), np.float32)
    with pytest.raises(ModelFileError, match="broken.h5: inconsistent"):
        jaxpayne.load_model(broken)


def test_predict_shapes_bounds_and_transforms(trained, x64):
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    m = trained.model
    assert m.predict(np.zeros((5, 3, 2)) + [5000, 3]).shape == (5, 3, 40)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        m.predict(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="teff = 9000 is outside"):
        m.predict([[9000.0, 3.0]], check_bounds=True)
    x = jnp.array([[5000.0, 3.0], [6000.0, 4.0]])
    eager = m.apply(m.params, x)
    np.testing.assert_allclose(jax.jit(m.apply)(m.params, x), eager, rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lambda r: m.predict(r))(x), eager, rtol=1e-6)
    # gradients with respect to physical labels, float64
    params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), m.params)
    check_grads(lambda lab: m.apply(params64, lab), (jnp.array([5500.0, 3.5]),), order=1, modes=["rev", "fwd"], eps=1e-3)


def test_training_reduces_error_and_early_stops():
    ts = toy_set(128)
    short = train_emulator(ts, epochs=2, hidden=(32, 32), batch_size=16, progress=False)
    long = train_emulator(ts, epochs=300, hidden=(32, 32), batch_size=16, progress=False, patience=20)
    assert long.model.validation["summary"]["rms"] < 0.5 * short.model.validation["summary"]["rms"]
    h = long.history
    assert h["val_rms"].min() == pytest.approx(long.model.validation["summary"]["rms"], rel=1e-4)
    if len(h["epoch"]) < 300:
        assert len(h["epoch"]) - long.best_epoch == 20
    # the same seed gives the same model
    again = train_emulator(ts, epochs=2, hidden=(32, 32), batch_size=16, progress=False)
    np.testing.assert_array_equal(np.asarray(again.model.predict([[5000.0, 3.0]])), np.asarray(short.model.predict([[5000.0, 3.0]])))


def test_l1_and_ivar_weighted_training():
    ts = toy_set()
    ivar = np.full_like(ts.flux, 1e4)
    ivar[:, :5] = 0.0
    flux = ts.flux.copy()
    flux[:, :5] = np.nan
    weighted = TrainingSet(ts.wavelength, ts.labels, flux, ts.label_names, ivar=ivar)
    res = train_emulator(weighted, epochs=5, hidden=(8,), loss="l1", batch_size=16, progress=False)
    assert np.isfinite(res.model.validation["summary"]["rms"])
    assert np.all(np.isnan(res.model.validation["rms"][:5]))


def test_validation_reports_interior_and_edges_separately():
    from jaxpayne.training import edge_of_box, validation_errors

    labels = np.array([[0.5, 0.5], [0.05, 0.5], [0.5, 0.97], [0.3, 0.6]])
    edge = edge_of_box(labels, [0.0, 0.0], [1.0, 1.0])
    np.testing.assert_array_equal(edge, [False, True, True, False])
    flux = np.ones((4, 3))
    predicted = flux + np.array([[0.001], [0.01], [0.01], [0.001]])
    summary = validation_errors(predicted, flux, edge=edge)["summary"]
    assert summary["rms_interior"] == pytest.approx(0.001) and summary["rms_edge"] == pytest.approx(0.01)
    assert summary["n_edge"] == 2
    # training stores both, and `jaxpayne info` (Model.describe) shows them
    result = train_emulator(toy_set(64), epochs=3, hidden=(8,), batch_size=16, progress=False)
    stored = result.model.validation["summary"]
    assert {"rms_interior", "rms_edge", "n_edge"} <= set(stored)
    assert "validation rms interior" in result.model.describe()
