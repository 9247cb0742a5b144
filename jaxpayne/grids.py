"""Training sets: spectra with known labels on one wavelength grid.

A :class:`TrainingSet` holds a wavelength grid [Å], labels ``(n_spectra, n_labels)`` in physical
units, flux ``(n_spectra, n_pixels)`` and optionally inverse variances (data-driven sets). It is
read from

- ``.npz``: arrays ``wavelength``, ``labels``, ``flux`` [, ``ivar``], ``label_names`` [, ``label_units``]
  [, ``label_errors``];
- ``.h5``/``.hdf5``: datasets of the same names (``label_names`` may also be a root attribute);
- ``.fits``: HDU ``FLUX`` (image, n_spectra × n_pixels), ``WAVELENGTH`` (image), ``LABELS``
  (binary table, one column per label with its unit, and optionally ``<label>_err`` columns of
  their uncertainties), optional ``IVAR``;
- a directory with ``parameters.npy``, ``normalized_flux.npy``, ``wavelength.npy`` and an optional
  ``metadata.json`` naming the columns (the astro-emulators-toolkit / Korg layout).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jaxpayne.labels import LabelSpec, default_unit

__all__ = ["GridFormatError", "StreamedTrainingSet", "TrainingSet", "read_training_set"]

#: Size [bytes] of an HDF5 training set's flux (and ivar) above which :func:`read_training_set`
#: streams it from disk instead of reading it into memory (``stream=None``).
STREAM_BYTES = 4 * 2**30


class GridFormatError(ValueError):
    """A training-set file is unreadable or inconsistent."""


@dataclass(frozen=True)
class TrainingSet:
    """Spectra with known labels, for training an emulator.

    Attributes:
        wavelength: pixel wavelengths [Å], ``(n_pixels,)``, strictly increasing.
        labels: ``(n_spectra, n_labels)`` physical labels.
        flux: ``(n_spectra, n_pixels)``.
        label_names: names of the label columns.
        label_units: units of the label columns (guessed from the names when empty).
        ivar: optional inverse variance of ``flux`` [flux⁻²] (0 = pixel unusable), same shape: the
            noise of observed spectra (data-driven sets). Training weights the loss with it, and
            the validation error stored in the model is the excess over this noise (see
            :func:`jaxpayne.training.validation_errors`).
        medium: ``"vacuum"`` or ``"air"``.
        source: where it was read from (for provenance).
        label_errors: optional ``(n_spectra, n_labels)`` 1σ uncertainties of the reference labels
            [label units] (0: exact; NaN where the label is missing).

    Missing labels are NaN in ``labels`` (a spectrum needs at least one label); see
    :attr:`n_missing`.
    """

    wavelength: np.ndarray
    labels: np.ndarray
    flux: np.ndarray
    label_names: tuple[str, ...]
    label_units: tuple[str, ...] = ()
    ivar: np.ndarray | None = None
    medium: str = "vacuum"
    source: str = ""
    meta: dict = field(default_factory=dict)
    label_errors: np.ndarray | None = None

    def __post_init__(self):
        where = f"{self.source}: " if self.source else ""
        wave = np.asarray(self.wavelength, dtype=np.float64).reshape(-1)
        labels = np.asarray(self.labels, dtype=np.float64)
        flux = np.asarray(self.flux, dtype=np.float32)
        names = tuple(str(n) for n in self.label_names)
        if labels.ndim == 1:
            labels = labels[:, None]
        if flux.ndim != 2:
            raise GridFormatError(f"{where}flux must be 2-D (n_spectra, n_pixels), got shape {flux.shape}")
        if labels.ndim != 2 or labels.shape[0] != flux.shape[0]:
            raise GridFormatError(
                f"{where}labels shape {labels.shape} does not match flux shape {flux.shape} (one row per spectrum)"
            )
        if flux.shape[1] != wave.size:
            raise GridFormatError(f"{where}flux has {flux.shape[1]} pixels but wavelength has {wave.size}")
        if len(names) != labels.shape[1]:
            raise GridFormatError(f"{where}{labels.shape[1]} label columns but {len(names)} names {list(names)}")
        if flux.shape[0] < 2:
            raise GridFormatError(f"{where}need at least 2 spectra, got {flux.shape[0]}")
        if not np.all(np.isfinite(wave)) or np.any(np.diff(wave) <= 0):
            raise GridFormatError(f"{where}wavelength grid must be finite and strictly increasing")
        if np.any(np.isinf(labels)):
            raise GridFormatError(f"{where}infinite labels (first row {np.argmax(np.any(np.isinf(labels), axis=1))}); "
                                  "a missing label is NaN")
        no_labels = ~np.any(np.isfinite(labels), axis=1)
        if np.any(no_labels):
            raise GridFormatError(f"{where}{no_labels.sum()} spectra have no label at all (first row "
                                  f"{np.argmax(no_labels)}): drop them")
        if not np.all(np.any(np.isfinite(labels), axis=0)):
            raise GridFormatError(f"{where}a label column is missing in every spectrum")
        errors = None
        if self.label_errors is not None:
            errors = np.asarray(self.label_errors, dtype=np.float64)
            if errors.ndim == 1 and labels.shape[1] == 1:
                errors = errors[:, None]
            if errors.shape != labels.shape:
                raise GridFormatError(f"{where}label_errors shape {errors.shape} differs from labels {labels.shape}")
            measured = np.isfinite(labels)
            if np.any(measured & ~(np.isfinite(errors) & (errors >= 0))):
                raise GridFormatError(f"{where}label errors must be finite and >= 0 where a label is given")
            errors = np.where(measured, errors, np.nan)
        ivar = None if self.ivar is None else np.asarray(self.ivar, dtype=np.float32)
        if ivar is not None:
            if ivar.shape != flux.shape:
                raise GridFormatError(f"{where}ivar shape {ivar.shape} differs from flux shape {flux.shape}")
            if np.any(~np.isfinite(ivar)) or np.any(ivar < 0):
                raise GridFormatError(f"{where}ivar must be finite and non-negative")
            bad = ~np.isfinite(flux)
            if np.any(bad & (ivar > 0)):
                raise GridFormatError(f"{where}NaN/inf flux at pixels with ivar > 0")
            flux = np.where(bad, 0.0, flux).astype(np.float32)
        elif not np.all(np.isfinite(flux)):
            rows = np.flatnonzero(~np.all(np.isfinite(flux), axis=1))
            raise GridFormatError(
                f"{where}{rows.size} spectra contain NaN/inf flux (first row {rows[0]}); "
                "drop them or give an ivar with 0 there"
            )
        if self.medium not in ("vacuum", "air"):
            raise GridFormatError(f"{where}medium must be 'vacuum' or 'air', got {self.medium!r}")
        units = tuple(self.label_units) if self.label_units else tuple(default_unit(n) for n in names)
        object.__setattr__(self, "wavelength", wave)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "flux", flux)
        object.__setattr__(self, "ivar", ivar)
        object.__setattr__(self, "label_names", names)
        object.__setattr__(self, "label_units", units)
        object.__setattr__(self, "label_errors", errors)

    @property
    def n_missing(self) -> int:
        """Number of missing (NaN) labels."""
        return int(np.sum(np.isnan(self.labels)))

    def require_complete(self, what: str = "this training") -> None:
        """Raise a :class:`GridFormatError` naming the set if some labels are missing."""
        if self.n_missing:
            rows = np.flatnonzero(np.any(np.isnan(self.labels), axis=1))
            where = f"{self.source}: " if self.source else ""
            raise GridFormatError(
                f"{where}{rows.size} spectra have missing labels (first row {rows[0]}); {what} needs every "
                "label: drop them, or treat them as latent (jaxpayne.datadriven.train_with_latent_labels, "
                "jaxpayne train --latent-labels)")

    @property
    def n_spectra(self) -> int:
        """Number of spectra."""
        return self.flux.shape[0]

    @property
    def n_pixels(self) -> int:
        """Number of pixels."""
        return self.flux.shape[1]

    def label_spec(self) -> LabelSpec:
        """Label spec whose bounds are this set's label ranges."""
        labels = self.labels
        return LabelSpec(self.label_names, np.nanmin(labels, axis=0), np.nanmax(labels, axis=0), self.label_units)

    def subset(self, index) -> "TrainingSet":
        """The spectra selected by an index array or boolean mask."""
        return TrainingSet(
            self.wavelength,
            self.labels[index],
            self.flux[index],
            self.label_names,
            self.label_units,
            None if self.ivar is None else self.ivar[index],
            self.medium,
            self.source,
            dict(self.meta),
            None if self.label_errors is None else self.label_errors[index],
        )

    def split(self, val_fraction: float = 0.1, seed: int = 0) -> tuple["TrainingSet", "TrainingSet"]:
        """Reproducible random split into training and validation sets.

        Args:
            val_fraction: fraction of spectra held out for validation, in (0, 1).
            seed: seed of the permutation; the same seed gives the same split.

        Returns:
            ``(train, validation)``.
        """
        train, val = split_index(self.n_spectra, val_fraction, seed)
        return self.subset(train), self.subset(val)

    def fingerprint(self) -> str:
        """SHA-256 of wavelength, labels, flux (and ivar): identifies the data in provenance."""
        h = hashlib.sha256()
        for arr in (self.wavelength, self.labels, self.flux) + (() if self.ivar is None else (self.ivar,)):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write as ``.npz`` (readable by :func:`read_training_set`)."""
        path = Path(path)
        arrays = dict(
            wavelength=self.wavelength,
            labels=self.labels,
            flux=self.flux,
            label_names=np.array(self.label_names),
            label_units=np.array(self.label_units),
            medium=np.array(self.medium),
        )
        if self.ivar is not None:
            arrays["ivar"] = self.ivar
        if self.label_errors is not None:
            arrays["label_errors"] = self.label_errors
        np.savez(path, **arrays)
        return path


def split_index(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, validation) row indices of a reproducible random split of n spectra."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(val_fraction * n)))
    if n_val >= n:
        raise ValueError(f"val_fraction {val_fraction} leaves no training spectra")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


class StreamedTrainingSet:
    """An HDF5 training set whose flux (and ivar) stay on disk and are read in blocks of rows.

    The wavelength grid and the labels are held in memory (small); :meth:`rows` reads any set of
    spectra as an in-memory :class:`TrainingSet`, checked like one (so a bad block names the file
    and the problem). :func:`jaxpayne.training.train_emulator` trains on it block by block, with
    peak memory set by the block size rather than the number of spectra.

    Args:
        path: the ``.h5`` file (layout as in the module docstring).
        label_names: override or supply the label names.
        medium: override the wavelength medium.

    Raises:
        GridFormatError: for a file that is not such an HDF5 training set.
    """

    def __init__(self, path: str | os.PathLike, *, label_names=None, medium: str | None = None):
        self.path = Path(path)
        self.source = str(self.path)
        if not self.path.exists():
            raise GridFormatError(f"{path}: no such file or directory")
        head, shape = _read_hdf5(self.path, rows=slice(0, 2))
        if len(shape) != 2:
            raise GridFormatError(f"{path}: flux must be 2-D (n_spectra, n_pixels), got shape {shape}")
        self.has_ivar = head["ivar"] is not None
        names = _label_names(label_names)
        if names is not None:
            head["label_names"] = names
        if head["label_names"] is None:
            raise GridFormatError(f"{path}: the file names no labels; pass label_names")
        if medium is not None:
            head["medium"] = medium
        labels = np.asarray(head["labels"], np.float64)
        labels = labels[:, None] if labels.ndim == 1 else labels
        if labels.shape[0] != shape[0]:
            raise GridFormatError(f"{path}: labels shape {labels.shape} does not match flux shape {shape} "
                                  "(one row per spectrum)")
        # the first two rows checked now (names, units, grid, labels); the others as they are read
        if head.pop("label_errors", None) is not None:
            raise GridFormatError(f"{path}: a streamed training set cannot carry label errors (read it into memory)")
        first = TrainingSet(source=self.source, **{**head, "labels": labels[:2]})
        bad = ~np.all(np.isfinite(labels), axis=1)
        if np.any(bad):
            raise GridFormatError(f"{path}: {bad.sum()} spectra have NaN/inf labels (first row {np.argmax(bad)}); "
                                  "missing labels need the set in memory (no --stream)")
        self.wavelength = first.wavelength
        self.labels = labels
        self.label_names = first.label_names
        self.label_units = first.label_units
        self.medium = first.medium
        self.meta: dict = {}
        self._shape = shape

    @property
    def n_spectra(self) -> int:
        """Number of spectra."""
        return int(self._shape[0])

    @property
    def n_pixels(self) -> int:
        """Number of pixels."""
        return int(self._shape[1])

    @property
    def nbytes(self) -> int:
        """Size [bytes] of the flux (and ivar) in memory, float32."""
        return 4 * self.n_spectra * self.n_pixels * (2 if self.has_ivar else 1)

    def label_spec(self) -> LabelSpec:
        """Label spec whose bounds are this set's label ranges."""
        return LabelSpec.from_data(self.label_names, self.labels, self.label_units)

    def split_index(self, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Sorted (train, validation) row indices: the split :meth:`TrainingSet.split` makes."""
        return split_index(self.n_spectra, val_fraction, seed)

    def rows(self, index) -> TrainingSet:
        """The spectra ``index`` (increasing row numbers, at least 2) read into memory, checked."""
        import h5py

        index = np.asarray(index, dtype=np.int64)
        with h5py.File(self.path, "r") as f:
            flux = f["flux"][index]
            ivar = f["ivar"][index] if self.has_ivar else None
        return TrainingSet(self.wavelength, self.labels[index], flux, self.label_names, self.label_units, ivar,
                           self.medium, f"{self.source} rows {index[0]}–{index[-1]}")

    def fingerprint(self, block: int = 4096) -> str:
        """SHA-256 of wavelength, labels, flux (and ivar), read block by block: the same digest as
        :meth:`TrainingSet.fingerprint` of the whole set in memory."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.wavelength).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        starts = range(0, self.n_spectra, block)
        blocks = [np.arange(a, min(a + block, self.n_spectra)) for a in starts]
        if len(blocks) > 1 and blocks[-1].size < 2:  # a block of one row is no TrainingSet
            blocks[-2:] = [np.concatenate(blocks[-2:])]
        for which in ("flux", "ivar") if self.has_ivar else ("flux",):
            for rows in blocks:
                h.update(np.ascontiguousarray(getattr(self.rows(rows), which)).tobytes())
        return h.hexdigest()


def read_training_set(path: str | os.PathLike, *, label_names=None, medium: str | None = None,
                      stream: bool | None = False) -> TrainingSet | StreamedTrainingSet:
    """Read a training set from npz, HDF5, FITS or a Korg-style directory (see module docstring).

    Args:
        path: file or directory.
        label_names: override or supply the label names (sequence or comma-separated string).
        medium: override the wavelength medium (``"vacuum"``/``"air"``).
        stream: for an HDF5 file, leave the spectra on disk (a :class:`StreamedTrainingSet`);
            None: only when they would take more than :data:`STREAM_BYTES` in memory.

    Raises:
        GridFormatError: with the path and the problem (also for ``stream=True`` with another
            format).
    """
    path = Path(path)
    label_names = _label_names(label_names)
    if not path.exists():
        raise GridFormatError(f"{path}: no such file or directory")
    hdf5 = path.is_file() and path.suffix.lower() in (".h5", ".hdf5", ".hdf")
    if stream and not hdf5:
        raise GridFormatError(f"{path}: only HDF5 training sets (.h5) can be streamed from disk")
    if hdf5 and stream is not False:
        streamed = StreamedTrainingSet(path, label_names=label_names, medium=medium)
        if stream or streamed.nbytes > STREAM_BYTES:
            return streamed
    try:
        if path.is_dir():
            parts = _read_directory(path)
        else:
            suffix = path.suffix.lower()
            if suffix == ".npz":
                parts = _read_npz(path)
            elif suffix in (".h5", ".hdf5", ".hdf"):
                parts, _ = _read_hdf5(path)
            elif suffix in (".fits", ".fit"):
                parts = _read_fits(path)
            else:
                raise GridFormatError(f"{path}: unknown training-set format (use .npz, .h5, .fits or a directory)")
    except GridFormatError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise GridFormatError(f"{path}: cannot read training set ({type(err).__name__}: {err})") from None
    if label_names is not None:
        parts["label_names"] = tuple(label_names)
    if parts.get("label_names") is None:
        n = np.asarray(parts["labels"]).reshape(len(parts["flux"]), -1).shape[1]
        raise GridFormatError(f"{path}: the file names no labels; pass label_names ({n} columns)")
    if medium is not None:
        parts["medium"] = medium
    return TrainingSet(source=str(path), **parts)


def _label_names(value) -> tuple[str, ...] | None:
    """Label names given as a sequence or a comma-separated string (None: not given)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [n.strip() for n in value.split(",") if n.strip()]
    return tuple(value)


def _strs(values) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(values).reshape(-1))


def _read_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as d:
        missing = {"wavelength", "labels", "flux"} - set(d.files)
        if missing:
            raise GridFormatError(f"{path}: training-set npz lacks {sorted(missing)} (has {d.files})")
        return dict(
            wavelength=d["wavelength"],
            labels=d["labels"],
            flux=d["flux"],
            ivar=d["ivar"] if "ivar" in d.files else None,
            label_names=_strs(d["label_names"]) if "label_names" in d.files else None,
            label_units=_strs(d["label_units"]) if "label_units" in d.files else (),
            medium=str(d["medium"]) if "medium" in d.files else "vacuum",
            label_errors=d["label_errors"] if "label_errors" in d.files else None,
        )


def _read_hdf5(path: Path, rows: slice = slice(None)) -> dict:
    """The parts of an HDF5 training set, with the spectra ``rows`` only (all labels), and the
    full ``shape`` of its flux."""
    import h5py

    if not h5py.is_hdf5(path):
        raise GridFormatError(f"{path}: not an HDF5 file")
    with h5py.File(path, "r") as f:
        missing = {"wavelength", "labels", "flux"} - set(f.keys())
        if missing:
            raise GridFormatError(f"{path}: training-set HDF5 lacks datasets {sorted(missing)}")
        names = f["label_names"][()] if "label_names" in f else f.attrs.get("label_names")
        units = f["label_units"][()] if "label_units" in f else f.attrs.get("label_units", ())
        return dict(
            wavelength=f["wavelength"][()],
            labels=f["labels"][()],
            flux=f["flux"][rows],
            ivar=f["ivar"][rows] if "ivar" in f else None,
            label_names=None if names is None else _strs(names),
            label_units=_strs(units) if len(np.atleast_1d(units)) else (),
            medium=str(f.attrs.get("medium", "vacuum")),
            label_errors=f["label_errors"][()] if "label_errors" in f else None,
        ), f["flux"].shape


def _read_fits(path: Path) -> dict:
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
    except OSError as err:
        raise GridFormatError(f"{path}: not a readable FITS file ({err})") from None
    with hdul:
        names = [h.name for h in hdul]
        missing = {"FLUX", "WAVELENGTH", "LABELS"} - set(names)
        if missing:
            raise GridFormatError(f"{path}: training-set FITS lacks HDUs {sorted(missing)} (has {names})")
        table = hdul["LABELS"]
        cols = [c for c in table.columns if c.name not in {f"{n}_err" for n in table.columns.names}]
        labels = np.stack([np.asarray(table.data[c.name], dtype=np.float64) for c in cols], axis=1)
        error_names = [f"{c.name}_err" for c in cols]
        errors = None
        if any(n in table.columns.names for n in error_names):
            errors = np.stack([np.asarray(table.data[n], dtype=np.float64) if n in table.columns.names
                               else np.zeros(len(labels)) for n in error_names], axis=1)
        return dict(
            wavelength=np.asarray(hdul["WAVELENGTH"].data),
            labels=labels,
            flux=np.asarray(hdul["FLUX"].data),
            ivar=np.asarray(hdul["IVAR"].data) if "IVAR" in names else None,
            label_names=tuple(c.name for c in cols),
            label_units=tuple((c.unit or "") for c in cols),
            medium=str(hdul[0].header.get("MEDIUM", "vacuum")).lower(),
            label_errors=errors,
        )


def _read_directory(path: Path) -> dict:
    files = {p.name for p in path.iterdir()}
    flux_name = next((n for n in ("normalized_flux.npy", "flux.npy") if n in files), None)
    label_name = next((n for n in ("parameters.npy", "labels.npy") if n in files), None)
    if flux_name is None or label_name is None or "wavelength.npy" not in files:
        raise GridFormatError(
            f"{path}: a training-set directory needs parameters.npy (or labels.npy), "
            "normalized_flux.npy (or flux.npy) and wavelength.npy"
        )
    names, units, medium = None, (), "vacuum"
    if "metadata.json" in files:
        meta = json.loads((path / "metadata.json").read_text())
        columns = meta.get("files", {}).get(label_name, {}).get("columns")
        if columns:
            names = tuple(c["name"] for c in columns)
            units = tuple(c.get("unit", "") for c in columns)
        medium = meta.get("medium", medium)
    return dict(
        wavelength=np.load(path / "wavelength.npy"),
        labels=np.load(path / label_name),
        flux=np.load(path / flux_name),
        ivar=np.load(path / "ivar.npy") if "ivar.npy" in files else None,
        label_names=names,
        label_units=units,
        medium=medium,
    )
