import numpy as np
import pytest

from jaxpayne.grids import GridFormatError, TrainingSet, read_training_set
from jaxpayne.labels import LabelSpec


def test_scale_roundtrip_and_payne_convention():
    spec = LabelSpec(("teff", "logg", "feh"), [4000, 1.0, -1.0], [7000, 5.0, 0.5])
    assert spec.units == ("K", "dex", "dex")
    x = np.array([[4000, 1.0, -1.0], [7000, 5.0, 0.5], [5500, 3.0, -0.25]])
    s = spec.scale(x)
    np.testing.assert_allclose(s[0], -0.5)
    np.testing.assert_allclose(s[1], 0.5)
    np.testing.assert_allclose(s[2], 0.0)
    np.testing.assert_allclose(spec.unscale(s), x)


def test_scale_jax_dtype_preserved():
    import jax.numpy as jnp

    spec = LabelSpec(("a", "b"), [0, 0], [1, 2])
    s = spec.scale(jnp.ones((3, 2), jnp.float32))
    assert s.dtype == jnp.float32


def test_spec_validation():
    with pytest.raises(ValueError, match="unique"):
        LabelSpec(("a", "a"), [0, 0], [1, 1])
    with pytest.raises(ValueError, match="exceed"):
        LabelSpec(("a",), [1], [0])
    spec = LabelSpec(("teff",), [4000], [7000])
    with pytest.raises(ValueError, match="teff = 8000 is outside the training box"):
        spec.check_inside([[8000.0]])
    assert spec.inside([[5000.0], [3000.0]]).tolist() == [True, False]
    assert LabelSpec.from_dict(spec.to_dict()) == spec


def _toy(n=20, npix=30, seed=1):
    rng = np.random.default_rng(seed)
    wave = np.linspace(5000, 5010, npix)
    labels = rng.uniform(0, 1, (n, 2))
    flux = 1 - 0.3 * labels[:, :1] * np.exp(-0.5 * ((wave - 5005) / 0.5) ** 2)
    return TrainingSet(wave, labels, flux, ("a", "b"))


def test_split_reproducible_and_disjoint():
    ts = _toy(50)
    tr1, va1 = ts.split(0.2, seed=3)
    tr2, va2 = ts.split(0.2, seed=3)
    assert va1.n_spectra == 10 and tr1.n_spectra == 40
    np.testing.assert_array_equal(va1.labels, va2.labels)
    rows = {tuple(r) for r in tr1.labels} & {tuple(r) for r in va1.labels}
    assert not rows
    _, va3 = ts.split(0.2, seed=4)
    assert not np.array_equal(va1.labels, va3.labels)


def test_training_set_errors():
    wave = np.linspace(1, 2, 5)
    with pytest.raises(GridFormatError, match="pixels"):
        TrainingSet(wave, np.zeros((3, 1)), np.ones((3, 4)), ("a",))
    with pytest.raises(GridFormatError, match="one row per spectrum"):
        TrainingSet(wave, np.zeros((2, 1)), np.ones((3, 5)), ("a",))
    flux = np.ones((3, 5))
    flux[1, 2] = np.nan
    with pytest.raises(GridFormatError, match="NaN/inf flux.*first row 1"):
        TrainingSet(wave, np.zeros((3, 1)), flux, ("a",))
    ivar = np.ones((3, 5))
    ivar[1, 2] = 0
    ts = TrainingSet(wave, np.zeros((3, 1)), flux, ("a",), ivar=ivar)
    assert np.isfinite(ts.flux).all()
    with pytest.raises(GridFormatError, match="strictly increasing"):
        TrainingSet(wave[::-1], np.zeros((3, 1)), np.ones((3, 5)), ("a",))


@pytest.mark.parametrize("fmt", ["npz", "h5", "fits", "dir"])
def test_readers_roundtrip(tmp_path, fmt):
    ts = _toy()
    if fmt == "npz":
        path = ts.save(tmp_path / "grid.npz")
    elif fmt == "h5":
        import h5py

        path = tmp_path / "grid.h5"
        with h5py.File(path, "w") as f:
            f["wavelength"], f["labels"], f["flux"] = ts.wavelength, ts.labels, ts.flux
            f.attrs["label_names"] = ["a", "b"]
    elif fmt == "fits":
        from astropy.io import fits
        from astropy.table import Table

        path = tmp_path / "grid.fits"
        table = Table({"a": ts.labels[:, 0], "b": ts.labels[:, 1]})
        fits.HDUList(
            [fits.PrimaryHDU(), fits.ImageHDU(ts.flux, name="FLUX"), fits.ImageHDU(ts.wavelength, name="WAVELENGTH"),
             fits.table_to_hdu(table)]
        ).writeto(path)
        with fits.open(path, mode="update") as h:
            h[3].name = "LABELS"
    else:
        path = tmp_path / "grid"
        path.mkdir()
        np.save(path / "wavelength.npy", ts.wavelength)
        np.save(path / "parameters.npy", ts.labels)
        np.save(path / "normalized_flux.npy", ts.flux)
    got = read_training_set(path, label_names=None if fmt != "dir" else "a,b")
    assert got.label_names == ("a", "b")
    np.testing.assert_allclose(got.flux, ts.flux)
    np.testing.assert_allclose(got.labels, ts.labels)
    np.testing.assert_allclose(got.wavelength, ts.wavelength)


def test_reader_errors(tmp_path):
    with pytest.raises(GridFormatError, match="no such file"):
        read_training_set(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("this is not a zip")
    with pytest.raises(GridFormatError, match="bad.npz: cannot read"):
        read_training_set(bad)
    np.savez(tmp_path / "nolabels.npz", wavelength=np.arange(3.0), labels=np.zeros((2, 1)), flux=np.ones((2, 3)))
    with pytest.raises(GridFormatError, match="pass label_names"):
        read_training_set(tmp_path / "nolabels.npz")


def test_korg_directory(need_data):
    ts = read_training_set(need_data("korg_marcs_5000"))
    assert ts.label_names == ("teff", "logg", "feh")
    assert ts.label_units == ("K", "dex", "dex")
    assert ts.flux.shape == (1000, 500)
    assert 4500 <= ts.labels[:, 0].min() and ts.labels[:, 0].max() <= 7000
