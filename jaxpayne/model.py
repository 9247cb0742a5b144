"""The :class:`Model`: an emulator with its labels, wavelength grid, provenance and own error.

A model is everything needed to predict a spectrum from physical labels, in one object and one
file. The file is HDF5 with this layout (``FORMAT_NAME``, version ``FORMAT_VERSION``):

- root attributes ``format`` (= ``"jaxpayne-model"``), ``format_version`` and ``metadata``, a
  JSON document with the emulator kind and config, the label spec (names, units, bounds), the
  wavelength medium, the flux kind, provenance and a validation summary;
- dataset ``wavelength`` [Å];
- group ``weights``: the network weights, one dataset per leaf of the Flax variable tree
  (``weights/params/<layer>/<name>``);
- group ``validation`` (optional): per-pixel validation error spectra ``rms`` (the emulator's own
  error: for observed, noisy validation spectra the excess over their noise), ``rms_raw`` (as
  measured; absent in older files), ``median_abs``, ``p99_abs``.

It loads with h5py and numpy alone, without the training code. :func:`load_model` also reads
foreign formats (The Payne's and binspec's ``.npz`` networks) through a registry,
:func:`register_format`, filled by the modules named in :data:`FORMAT_MODULES`.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from jaxpayne.labels import LabelSpec

__all__ = [
    "FORMAT_MODULES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "Model",
    "ModelFileError",
    "ModelFormat",
    "load_model",
    "register_format",
]

FORMAT_NAME = "jaxpayne-model"
FORMAT_VERSION = 1
_MEDIA = ("vacuum", "air")
#: Per-pixel validation error spectra written to the file's ``validation`` group.
_VALIDATION_SPECTRA = ("rms", "rms_raw", "median_abs", "p99_abs")
#: First bytes of every HDF5 file (the jaxpayne model format).
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: Bytes read from the start of a file for format detection.
_MAGIC_LENGTH = 8

#: Foreign model formats that ship with jaxpayne: format name → module that registers it with
#: :func:`register_format` when imported. :func:`load_model` imports these modules on demand, so
#: this module depends on none of them.
FORMAT_MODULES = {"cannon": "jaxpayne.emulators.cannon", "payne": "jaxpayne.payne_format",
                  "binspec": "jaxpayne.payne_format"}


class ModelFileError(ValueError):
    """A model file is missing, corrupt, foreign or of an unsupported version."""


class Model:
    """An emulator bound to its weights, label spec and wavelength grid.

    Args:
        kind: emulator kind (``"mlp"``, ``"resmlp"``, ``"perpixel"``, ``"cannon"``; see
            :mod:`jaxpayne.emulators`).
        config: JSON-serialisable emulator config (``n_pixels`` and architecture attributes).
        params: Flax parameter pytree (``{"params": {...}}``).
        labels: the label spec (names, units, training bounds).
        wavelength: pixel wavelengths [Å], shape ``(n_pixels,)``, strictly increasing.
        medium: ``"vacuum"`` or ``"air"`` wavelengths.
        flux_kind: what the network predicts, e.g. ``"normalized"``.
        validation: optional per-pixel validation errors: ``{"rms": (n_pixels,), "rms_raw": ...,
            "median_abs": ..., "p99_abs": ...}`` plus scalar summaries under ``"summary"``
            (see :func:`jaxpayne.training.validation_errors`).
        provenance: optional JSON-serialisable provenance (dataset hash, sizes, epochs, versions).

    Example:
        >>> model = jaxpayne.load_model("korg.h5")
        >>> flux = model.predict([[5777.0, 4.44, 0.0]])   # (1, n_pixels)
    """

    def __init__(
        self,
        kind: str,
        config: dict[str, Any],
        params: Any,
        labels: LabelSpec,
        wavelength,
        *,
        medium: str = "vacuum",
        flux_kind: str = "normalized",
        validation: dict | None = None,
        provenance: dict | None = None,
    ):
        from jaxpayne.emulators import build_emulator

        wavelength = np.array(wavelength, dtype=np.float64).reshape(-1)
        if medium not in _MEDIA:
            raise ValueError(f"medium must be one of {_MEDIA}, got {medium!r}")
        if not np.all(np.isfinite(wavelength)) or np.any(np.diff(wavelength) <= 0):
            raise ValueError("model wavelength grid must be finite and strictly increasing")
        self.kind = kind
        self.config = dict(config)
        self.module = build_emulator(kind, self.config)
        n_pix = int(self.config.get("n_pixels", wavelength.size))
        if n_pix != wavelength.size:
            raise ValueError(f"emulator has {n_pix} pixels but the wavelength grid has {wavelength.size}")
        self.params = params
        self.labels = labels
        self._wavelength = wavelength
        self._wavelength.setflags(write=False)
        self.medium = medium
        self.flux_kind = flux_kind
        self.validation = validation or {}
        self.provenance = provenance or {}
        self._jit_apply = None

    # ----------------------------------------------------------------------------------- API
    @property
    def label_names(self) -> tuple[str, ...]:
        """Label names in the order :meth:`predict` expects them."""
        return self.labels.names

    @property
    def label_units(self) -> tuple[str, ...]:
        """Unit of each label."""
        return self.labels.units

    @property
    def n_labels(self) -> int:
        """Number of labels."""
        return self.labels.n_labels

    @property
    def wavelength(self) -> np.ndarray:
        """Pixel wavelengths [Å] (read-only array), in :attr:`medium`."""
        return self._wavelength

    @property
    def n_pixels(self) -> int:
        """Number of pixels."""
        return self._wavelength.size

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) training bounds of the labels, each ``(n_labels,)``, physical units."""
        return self.labels.bounds

    @property
    def emulator_error(self) -> np.ndarray | None:
        """Per-pixel rms validation error of the emulator ``(n_pixels,)``, or None if unknown.

        For a model trained on observed spectra this is the rms in excess of their noise
        (``validation["summary"]["rms_kind"]``); the fitter adds it in quadrature to the noise.
        """
        rms = self.validation.get("rms")
        return None if rms is None else np.asarray(rms)

    def apply(self, params, labels):
        """Pure forward pass: physical labels ``(..., n_labels)`` → flux ``(..., n_pixels)``.

        Safe under ``jit``, ``vmap`` and ``grad`` with respect to both arguments.
        """
        import jax.numpy as jnp

        labels = jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.floating):
            labels = labels.astype(jnp.float32)
        return self.module.apply(params, self.labels.scale(labels))

    def predict(self, labels, *, check_bounds: bool = False):
        """Predict spectra for physical labels.

        Args:
            labels: array-like ``(..., n_labels)`` in the units of :attr:`label_units`, in the order
                of :attr:`label_names`. JAX tracers are accepted (use inside jit/vmap/grad).
            check_bounds: if True and ``labels`` is concrete, raise a ValueError naming the first
                label outside the training box (the emulator extrapolates there).

        Returns:
            Flux ``(..., n_pixels)`` as a JAX array.
        """
        import jax

        if isinstance(labels, jax.core.Tracer):
            return self.apply(self.params, labels)
        arr = np.asarray(labels)
        if arr.ndim == 0 or arr.shape[-1] != self.n_labels:
            raise ValueError(
                f"labels must have shape (..., {self.n_labels}) for {list(self.label_names)}, "
                f"got shape {arr.shape}"
            )
        if check_bounds:
            self.labels.check_inside(arr.reshape(-1, self.n_labels))
        if self._jit_apply is None:
            self._jit_apply = jax.jit(self.apply)
        dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
        return self._jit_apply(self.params, jax.numpy.asarray(arr, dtype=jax.dtypes.canonicalize_dtype(dtype)))

    __call__ = predict

    def replace(self, **changes) -> "Model":
        """A copy with some attributes replaced (``params``, ``labels``, ``provenance``...)."""
        kwargs = dict(
            kind=self.kind,
            config=self.config,
            params=self.params,
            labels=self.labels,
            wavelength=self._wavelength,
            medium=self.medium,
            flux_kind=self.flux_kind,
            validation=self.validation,
            provenance=self.provenance,
        )
        kwargs.update(changes)
        return Model(**kwargs)

    def describe(self) -> str:
        """Human-readable multi-line summary (what ``jaxpayne info`` prints)."""
        lines = [
            f"emulator       {self.kind} {json.dumps(self.config)}",
            f"parameters     {self.n_parameters:,}",
            f"pixels         {self.n_pixels} ({self.medium} wavelengths "
            f"{self.wavelength[0]:.3f}-{self.wavelength[-1]:.3f} Å)",
            f"flux           {self.flux_kind}",
            "labels",
        ]
        for name, unit, lo, hi in zip(self.label_names, self.label_units, *self.bounds):
            lines.append(f"  {name:<12s} [{lo:12.5g}, {hi:12.5g}] {unit}")
        summary = self.validation.get("summary")
        regions = ("rms_interior", "rms_edge", "n_edge")  # their own line below
        if summary:
            lines.append(
                "validation     "
                + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()
                            if k not in regions)
            )
            if "rms_edge" in summary:
                lines.append(
                    f"validation rms interior {summary['rms_interior']:.3g}, edges and corners "
                    f"{summary['rms_edge']:.3g} ({summary.get('n_edge', 0)} of {summary.get('n_spectra', 0)} "
                    "validation spectra within 10 % of a bound)"
                )
        else:
            lines.append("validation     none stored")
        prov = self.provenance
        if prov:
            lines.append("provenance     " + ", ".join(f"{k}={v}" for k, v in prov.items() if not isinstance(v, dict)))
        return "\n".join(lines)

    @property
    def n_parameters(self) -> int:
        """Number of trainable weights."""
        import jax

        return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(self.params)))

    def __repr__(self) -> str:
        return (
            f"Model(kind={self.kind!r}, labels={list(self.label_names)}, n_pixels={self.n_pixels}, "
            f"wavelength=[{self.wavelength[0]:.2f}, {self.wavelength[-1]:.2f}] Å {self.medium})"
        )

    # ---------------------------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to one HDF5 file (atomically: a temporary file, then a rename).

        Args:
            path: destination; conventionally ``*.h5``.

        Returns:
            The path written.
        """
        import h5py
        from flax import traverse_util

        path = Path(path)
        metadata = {
            "emulator": {"kind": self.kind, "config": self.config},
            "labels": self.labels.to_dict(),
            "medium": self.medium,
            "flux_kind": self.flux_kind,
            "provenance": self.provenance,
            "validation_summary": self.validation.get("summary", {}),
        }
        flat = traverse_util.flatten_dict(_unfreeze(self.params), sep="/")
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["metadata"] = json.dumps(metadata, default=_json_default)
            f.create_dataset("wavelength", data=self._wavelength)
            for key, value in flat.items():
                f.create_dataset(f"weights/{key}", data=np.asarray(value), compression="gzip", shuffle=True)
            for key in _VALIDATION_SPECTRA:
                if key in self.validation:
                    f.create_dataset(f"validation/{key}", data=np.asarray(self.validation[key], dtype=np.float32))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Model":
        """Read a model written by :meth:`save`.

        Raises:
            ModelFileError: the file is missing, not HDF5, not a jaxpayne model, of a newer format
                version, or incomplete; the message names the file.
        """
        import h5py
        import jax.numpy as jnp
        from flax import traverse_util

        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such model file")
        if not h5py.is_hdf5(path):
            raise ModelFileError(f"{path}: not a jaxpayne model file (not HDF5)")
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("format") != FORMAT_NAME:
                    raise ModelFileError(f"{path}: HDF5 file is not a jaxpayne model (no format={FORMAT_NAME!r})")
                version = int(f.attrs.get("format_version", -1))
                if version < 1 or version > FORMAT_VERSION:
                    raise ModelFileError(
                        f"{path}: model format version {version} is not supported by this jaxpayne "
                        f"(reads 1..{FORMAT_VERSION}); upgrade jaxpayne"
                    )
                meta = json.loads(f.attrs["metadata"])
                wavelength = f["wavelength"][()]
                flat = {}
                f["weights"].visititems(
                    lambda name, obj: flat.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
                )
                validation = {k: f["validation"][k][()] for k in f["validation"]} if "validation" in f else {}
        except ModelFileError:
            raise
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as err:
            raise ModelFileError(f"{path}: corrupt or incomplete jaxpayne model file ({err})") from None
        params = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
        if meta.get("validation_summary"):
            validation["summary"] = meta["validation_summary"]
        try:
            model = cls(
                meta["emulator"]["kind"],
                meta["emulator"]["config"],
                params,
                LabelSpec.from_dict(meta["labels"]),
                wavelength,
                medium=meta.get("medium", "vacuum"),
                flux_kind=meta.get("flux_kind", "normalized"),
                validation=validation,
                provenance=meta.get("provenance", {}),
            )
            model._check_params()
        except (KeyError, ValueError, TypeError) as err:
            raise ModelFileError(f"{path}: inconsistent jaxpayne model file ({err})") from None
        return model

    def _check_params(self) -> None:
        """Verify that the weights fit the architecture (shapes and names)."""
        import jax

        expected = jax.eval_shape(self.module.init, jax.random.PRNGKey(0), np.zeros((1, self.n_labels), np.float32))
        exp_struct = jax.tree_util.tree_structure(_unfreeze(expected))
        got_struct = jax.tree_util.tree_structure(_unfreeze(self.params))
        if exp_struct != got_struct:
            raise ValueError("weights do not match the emulator architecture")
        for e, g in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(self.params)):
            if tuple(e.shape) != tuple(np.shape(g)):
                raise ValueError(f"weight of shape {np.shape(g)} where the architecture needs {e.shape}")


def _unfreeze(tree):
    try:
        from flax.core import unfreeze

        return unfreeze(tree)
    except Exception:  # pragma: no cover - plain dicts
        return tree


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


class ModelFormat(NamedTuple):
    """A foreign model format that :func:`load_model` reads (see :func:`register_format`).

    Attributes:
        name: the format name, the value of ``load_model(format=...)``.
        detect: ``detect(path, head) -> bool``: whether the file ``path``, whose first bytes are
            ``head``, is in this format. It may raise :class:`ModelFileError` for a file that has
            the format's container but not its content (e.g. an ``.npz`` of other arrays).
        load: ``load(path, *, label_names=None, wavelength=None, **options) -> Model``.
        description: what such a file is, for error messages (e.g. ``"a Payne-format .npz"``).
    """

    name: str
    detect: Callable[[Path, bytes], bool]
    load: Callable[..., Model]
    description: str


_FORMATS: dict[str, ModelFormat] = {}


def register_format(name: str, detect: Callable[[Path, bytes], bool], load: Callable[..., Model], *,
                    description: str = "") -> None:
    """Teach :func:`load_model` a foreign model format.

    The modules of :data:`FORMAT_MODULES` call this when imported; other code may register more.
    Registering a name again replaces the earlier entry. Formats are tried in registration order
    when :func:`load_model` detects a format.

    Args:
        name: format name (``load_model(format=name)``); not ``"jaxpayne"``.
        detect: ``detect(path, head) -> bool``, see :class:`ModelFormat`.
        load: ``load(path, *, label_names=None, wavelength=None, **options) -> Model``.
        description: what such a file is, for the "not a model file" error.

    Example:
        >>> register_format("payne", is_payne_npz, load_payne_npz, description="a Payne-format .npz")
    """
    if name == "jaxpayne":
        raise ValueError("'jaxpayne' is the built-in model format and cannot be registered")
    _FORMATS[name] = ModelFormat(name, detect, load, description or f"a {name!r} model")


def _known_formats() -> dict[str, ModelFormat]:
    """All registered formats, after importing the modules of :data:`FORMAT_MODULES`."""
    for module in dict.fromkeys(FORMAT_MODULES.values()):
        importlib.import_module(module)
    return _FORMATS


def load_model(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    label_names=None,
    wavelength=None,
    **options,
) -> Model:
    """Load a model: a jaxpayne model file, or a Payne-family network with its metadata.

    Args:
        path: model file. jaxpayne HDF5 files are recognised; for ``.npz`` networks the format is
            detected from the weight shapes when ``format`` is None.
        format: ``"jaxpayne"``, ``"payne"`` (The Payne's MLP npz: ``w_array_0..L``,
            ``b_array_0..L``, ``x_min``, ``x_max``, LeakyReLU hidden layers) or ``"binspec"``
            (per-pixel sigmoid networks, ``w_array_0`` of shape (n_pix, n_hidden, n_labels)) or
            ``"cannon"`` (the Doppler package's Cannon ``.npz``, which carries its labels and
            wavelengths; ``wavelength_range=(lo, hi)`` keeps part of it).
        label_names: label names for npz networks (required there; a sequence or a comma-separated
            string), in the network's input order.
        wavelength: pixel wavelengths [Å] for npz networks: an array, or a path to ``.npy``,
            ``.npz`` (key ``wavelength``/``wave``/``lambda`` or its only array), ``.txt``, or a
            FITS file (read by :func:`jaxpayne.io.load_wavelength`).
        **options: for npz networks: ``units``, ``medium`` (default ``"vacuum"``), ``activation``
            (default LeakyReLU for ``payne`` and sigmoid for ``binspec``), ``flux_kind``.

    Returns:
        A :class:`Model`.

    Raises:
        ModelFileError: unreadable, corrupt or foreign files, or missing metadata for npz networks.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    fmt = format or _detect_format(path)
    if fmt == "jaxpayne":
        if label_names is not None or wavelength is not None:
            raise ValueError("label_names and wavelength are stored in jaxpayne model files; do not pass them")
        return Model.load(path)
    if fmt in FORMAT_MODULES:
        importlib.import_module(FORMAT_MODULES[fmt])
    foreign = _FORMATS.get(fmt)
    if foreign is None:
        names = ["jaxpayne", *dict.fromkeys([*FORMAT_MODULES, *_FORMATS])]
        choices = ", ".join(map(repr, names[:-1])) + f" or {names[-1]!r}"
        raise ModelFileError(f"{path}: unknown model format {fmt!r}; use {choices}")
    return foreign.load(path, label_names=label_names, wavelength=wavelength, **options)


def _detect_format(path: Path) -> str:
    """The format name of a model file, from its first bytes and the registered detectors."""
    with open(path, "rb") as fh:
        head = fh.read(_MAGIC_LENGTH)
    if head == _HDF5_MAGIC:
        return "jaxpayne"
    formats = _known_formats()
    for foreign in formats.values():
        if foreign.detect(path, head):
            return foreign.name
    kinds = ["a jaxpayne HDF5 model", *dict.fromkeys(f.description for f in formats.values())]
    raise ModelFileError(f"{path}: not a model file (neither {' nor '.join(kinds)})")
