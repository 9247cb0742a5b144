"""Payne-family network import: predictions against independent numpy forward passes."""

import numpy as np
import pytest

import jaxpayne
from jaxpayne.model import ModelFileError

BINSPEC_LABELS = "teff,logg,feh,mg_fe,vmacro"


def numpy_binspec(path, labels):
    d = np.load(path)
    s = (labels - d["x_min"]) / (d["x_max"] - d["x_min"]) - 0.5
    h = 1.0 / (1.0 + np.exp(-(np.einsum("pij,j->pi", d["w_array_0"], s) + d["b_array_0"])))
    return np.einsum("pi,pi->p", d["w_array_1"], h) + d["b_array_1"]


def numpy_payne(arrays, labels, act):
    s = (labels - arrays["x_min"]) / (arrays["x_max"] - arrays["x_min"]) - 0.5
    n = sum(k.startswith("w_array_") for k in arrays)
    for k in range(n):
        s = arrays[f"w_array_{k}"] @ s + arrays[f"b_array_{k}"]
        if k < n - 1:
            s = act(s)
    return s


def leaky(z):
    return np.where(z > 0, z, 0.01 * z)


@pytest.mark.parametrize("folder", ["binspec_apogee", "binspec_plus_apogee"])
def test_binspec_matches_numpy(need_data, folder):
    path = need_data(folder, "NN_normalized_spectra.npz")
    wave = need_data("binspec_apogee", "apogee_wavelength.npz")
    model = jaxpayne.load_model(path, label_names=BINSPEC_LABELS, wavelength=wave)
    assert model.kind == "perpixel" and model.n_pixels == 7214
    lo, hi = model.bounds
    rng = np.random.default_rng(0)
    labels = lo + (hi - lo) * rng.uniform(0.1, 0.9, (4, 5))
    got = np.asarray(model.predict(labels))
    for row, lab in zip(got, labels):
        np.testing.assert_allclose(row, numpy_binspec(path, lab), atol=1e-5)


def test_payne_mlp_matches_numpy(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "w_array_0": rng.normal(size=(16, 3)),
        "b_array_0": rng.normal(size=16),
        "w_array_1": rng.normal(size=(16, 16)) / 4,
        "b_array_1": rng.normal(size=16),
        "w_array_2": rng.normal(size=(40, 16)) / 4,
        "b_array_2": rng.normal(size=40),
        "x_min": np.array([4000.0, 1.0, -1.0]),
        "x_max": np.array([7000.0, 5.0, 0.5]),
    }
    np.savez(tmp_path / "payne.npz", **arrays)
    wave = np.linspace(15000, 15100, 40)
    model = jaxpayne.load_model(tmp_path / "payne.npz", label_names=["teff", "logg", "feh"], wavelength=wave)
    assert model.kind == "mlp" and model.config["hidden"] == [16, 16]
    labels = np.array([[5000.0, 2.5, -0.3], [6500.0, 4.5, 0.2]])
    got = np.asarray(model.predict(labels))
    for row, lab in zip(got, labels):
        np.testing.assert_allclose(row, numpy_payne(arrays, lab, leaky), rtol=1e-5, atol=1e-5)
    # export round trip reproduces the original arrays
    out = jaxpayne.export_payne(model, tmp_path / "back.npz")
    back = np.load(out)
    for k, v in arrays.items():
        np.testing.assert_allclose(back[k], v, rtol=1e-6, atol=1e-6)


def test_sigmoid_mlp_radius_network(need_data):
    """binspec's NN_radius: a Payne-layout MLP with sigmoid hidden layers, one output."""
    path = need_data("binspec_apogee", "NN_radius.npz")
    model = jaxpayne.load_model(path, format="payne", label_names="teff,logg,feh", wavelength=[1.0], activation="sigmoid", flux_kind="radius")
    arrays = dict(np.load(path))
    lab = np.array([5777.0, 4.44, 0.0])
    ref = numpy_payne(arrays, lab, lambda z: 1 / (1 + np.exp(-z)))
    np.testing.assert_allclose(np.asarray(model.predict(lab[None]))[0], ref, rtol=1e-5)
    assert 0.7 < ref[0] < 1.3  # the Sun's radius in R_sun, roughly


def test_import_errors(need_data, tmp_path):
    path = need_data("binspec_apogee", "NN_normalized_spectra.npz")
    wave = need_data("binspec_apogee", "apogee_wavelength.npz")
    with pytest.raises(ModelFileError, match="pass label_names"):
        jaxpayne.load_model(path, wavelength=wave)
    with pytest.raises(ModelFileError, match="takes 5 labels but 3"):
        jaxpayne.load_model(path, label_names="a,b,c", wavelength=wave)
    with pytest.raises(ModelFileError, match="7214 pixels but the wavelength grid has 10"):
        jaxpayne.load_model(path, label_names=BINSPEC_LABELS, wavelength=np.arange(10.0) + 1)
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(ModelFileError, match="not a Payne-family network"):
        jaxpayne.load_model(tmp_path / "other.npz", label_names="a", wavelength=[1.0])


def test_per_pixel_network_hand_written_jvp_matches_autodiff(x64):
    """binspec's per-pixel networks have a hand-written JVP (for speed); it must equal autodiff's,
    for the labels and for every weight (training), in forward and reverse mode."""
    import jax
    from jax.test_util import check_grads

    from jaxpayne.emulators.networks import _per_pixel, _per_pixel_forward

    rng = np.random.default_rng(0)
    args = [rng.normal(size=shape) for shape in [(30, 4, 3), (30, 4), (30, 4), (30,), (3,)]]
    for activation in ("sigmoid", "leaky_relu", "tanh"):
        check_grads(lambda *a: _per_pixel(*a, activation), args, order=2, modes=["fwd", "rev"])
        mine = jax.jacfwd(lambda *a: _per_pixel(*a, activation), argnums=(0, 1, 2, 3, 4))(*args)
        reference = jax.jacfwd(lambda *a: _per_pixel_forward(*a, activation), argnums=(0, 1, 2, 3, 4))(*args)
        for a, b in zip(mine, reference):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
