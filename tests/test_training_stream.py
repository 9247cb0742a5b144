"""Training on an HDF5 set streamed from disk block by block (sets larger than memory)."""

import numpy as np
import pytest

from jaxpayne.grids import GridFormatError, StreamedTrainingSet, TrainingSet, read_training_set
from jaxpayne.training import train_emulator


def _write(path, n=400, n_pix=120, seed=0, nan_row=None):
    import h5py

    rng = np.random.default_rng(seed)
    labels = rng.uniform([4000.0, 1.0, -1.0], [6000.0, 5.0, 0.5], (n, 3))
    wave = np.linspace(5000.0, 5100.0, n_pix)
    x = (labels - labels.mean(0)) / labels.std(0)
    depth = 0.3 * (1.0 + 0.3 * x[:, 2:3])
    flux = 1.0 - depth * np.exp(-0.5 * ((wave[None] - 5050.0 - 8.0 * x[:, :1]) / (3.0 + 0.5 * x[:, 1:2])) ** 2)
    flux = flux.astype(np.float32)
    if nan_row is not None:
        flux[nan_row, 5] = np.nan
    with h5py.File(path, "w") as f:
        f["wavelength"] = wave
        f["labels"] = labels
        f["flux"] = flux
        f.attrs["label_names"] = ["teff", "logg", "feh"]
    return path


def test_streamed_set_reads_like_the_set_in_memory(tmp_path):
    path = _write(tmp_path / "grid.h5")
    memory = read_training_set(path)
    streamed = read_training_set(path, stream=True)
    assert isinstance(memory, TrainingSet) and isinstance(streamed, StreamedTrainingSet)
    assert (streamed.n_spectra, streamed.n_pixels, streamed.label_names) == (400, 120, ("teff", "logg", "feh"))
    # the same digest block by block (also with a last block of one row), the same split
    assert streamed.fingerprint(block=133) == memory.fingerprint()
    train, val = memory.split(0.1, seed=3)
    index_train, index_val = streamed.split_index(0.1, seed=3)
    np.testing.assert_array_equal(streamed.rows(index_val).flux, val.flux)
    np.testing.assert_array_equal(train.labels, memory.labels[index_train])
    with pytest.raises(GridFormatError, match="only HDF5"):
        read_training_set(memory.save(tmp_path / "grid.npz"), stream=True)


def test_streamed_training_matches_memory_and_reads_one_block_at_a_time(tmp_path, monkeypatch):
    """Same recipe, same data: the streamed run (blocks of 96 spectra, shuffled within) reaches the
    in-memory run's validation error, and never reads more than one block of training spectra at
    once."""
    path = _write(tmp_path / "grid.h5")
    options = dict(epochs=200, emulator="mlp", hidden=(64, 64), batch_size=16, learning_rate=3e-3, progress=False)
    memory = train_emulator(read_training_set(path), **options)
    streamed_set = read_training_set(path, stream=True)
    sizes = []
    rows = StreamedTrainingSet.rows

    def spy(self, index):
        sizes.append(len(index))
        return rows(self, index)

    monkeypatch.setattr(StreamedTrainingSet, "rows", spy)
    streamed = train_emulator(streamed_set, block_rows=100, **options)
    rms_memory = memory.model.validation["summary"]["rms"]
    rms_streamed = streamed.model.validation["summary"]["rms"]
    flux = read_training_set(path).flux
    trivial = float(np.sqrt(np.mean((flux - flux.mean(axis=0)) ** 2)))  # the mean spectrum's error
    assert rms_memory < 0.5 * trivial and rms_streamed < 0.5 * trivial, (rms_memory, rms_streamed, trivial)
    assert 0.5 < rms_streamed / rms_memory < 2.0
    # validation once, then blocks of 6 minibatches; last the provenance digest (blocks of 4096)
    assert sizes[0] == 40 and max(sizes[1:-1]) == 96 and sizes[-1] == 400
    assert streamed.model.provenance["dataset_sha256"] == memory.model.provenance["dataset_sha256"]
    assert streamed.model.provenance["n_train"] == 360


def test_bad_block_names_the_file_and_rows(tmp_path):
    path = _write(tmp_path / "bad.h5", nan_row=250)
    streamed = read_training_set(path, stream=True)  # the spectra are not read yet
    with pytest.raises(GridFormatError, match=r"bad\.h5 rows .*NaN/inf flux"):
        train_emulator(streamed, epochs=2, emulator="mlp", hidden=(16,), batch_size=32, progress=False,
                       block_rows=64)
