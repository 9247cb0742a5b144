"""Import and export of The Payne family's ``.npz`` networks.

Two layouts are read:

``payne``
    The Payne (Ting et al. 2019, ApJ 879, 69): ``w_array_k`` of shape (n_out, n_in) and
    ``b_array_k`` for k = 0..L, and ``x_min``/``x_max``. With ``s = (x − x_min)/(x_max − x_min) − 0.5``
    each hidden layer is ``h = a(W h + b)`` (a = LeakyReLU, slope 0.01) and the last is linear.
``binspec``
    binspec (El-Badry et al. 2018, MNRAS 476, 528): one network per pixel, ``w_array_0``
    (n_pix, n_hidden, n_labels), ``b_array_0`` (n_pix, n_hidden), ``w_array_1`` (n_pix, n_hidden),
    ``b_array_1`` (n_pix,), sigmoid hidden units.

The networks store neither label names nor wavelengths: the caller supplies both. The result is
an ordinary :class:`jaxpayne.Model`; MLPs can be written back with :func:`export_payne`.

Importing this module registers both layouts with :func:`jaxpayne.model.register_format`, which is
how :func:`jaxpayne.load_model` reads them (it imports this module through
:data:`jaxpayne.model.FORMAT_MODULES`; nothing in :mod:`jaxpayne.model` imports it by name).
"""

from __future__ import annotations

import os
import zipfile
from functools import partial
from pathlib import Path

import numpy as np

from jaxpayne.labels import LabelSpec
from jaxpayne.model import Model, ModelFileError, register_format

__all__ = ["BINSPEC_FILES", "detect_npz_format", "export_payne", "load_binspec_networks", "load_npz_network"]

#: binspec's auxiliary networks and files in a folder laid out like its repository's
#: ``neural_nets``/``other_data`` (and ``../shared/data/binspec_apogee``).
BINSPEC_FILES = {
    "flux": "NN_unnormalized_spectra.npz",
    "radius": "NN_radius.npz",
    "companion": "NN_Teff2_logg2.npz",
    "continuum_pixels": "cannon_cont_pixels_apogee.npz",
    "wavelength": "apogee_wavelength.npz",
}

#: Description of the npz networks in "not a model file" errors.
_DESCRIPTION = "a Payne-format .npz"
#: First bytes of a zip archive (every ``.npz``).
_ZIP_MAGIC = b"PK"


def _open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ModelFileError(f"{path}: cannot read as .npz ({err})") from None


def detect_npz_format(path: str | os.PathLike) -> str:
    """``"payne"`` or ``"binspec"`` from the weight shapes of a Payne-family ``.npz``."""
    path = Path(path)
    with _open_npz(path) as data:
        keys = set(data.files)
        if not {"w_array_0", "b_array_0", "x_min", "x_max"} <= keys:
            raise ModelFileError(
                f"{path}: not a Payne-family network (needs w_array_0, b_array_0, x_min, x_max; "
                f"found {sorted(keys)[:8]})"
            )
        return "binspec" if data["w_array_0"].ndim == 3 else "payne"


def _network_wavelength(source) -> np.ndarray:
    """A network's pixel wavelengths [Å], float64 ``(n,)``.

    Files go to :func:`jaxpayne.io.load_wavelength` (``.npy``, ``.npz``, text, FITS column, image
    or WCS); an array is taken as given, unchecked, because some Payne-layout networks predict
    quantities other than spectra on a placeholder grid (binspec's ``NN_radius.npz``: one "pixel").
    """
    if isinstance(source, (str, os.PathLike)):
        from jaxpayne.io import load_wavelength

        return load_wavelength(source)
    return np.asarray(source, dtype=np.float64).reshape(-1)


def load_npz_network(
    path: str | os.PathLike,
    format: str,
    *,
    label_names=None,
    wavelength=None,
    units=None,
    medium: str = "vacuum",
    activation: str | None = None,
    flux_kind: str = "normalized",
) -> Model:
    """Load a Payne-family ``.npz`` network as a :class:`Model` (see the module docstring).

    Args:
        path: the ``.npz`` file.
        format: ``"payne"`` or ``"binspec"``.
        label_names: the network's input labels in order (sequence or comma-separated string).
        wavelength: pixel wavelengths [Å]: an array (taken as given), or a file read by
            :func:`jaxpayne.io.load_wavelength`.
        units: optional label units (guessed from the names otherwise).
        medium: ``"vacuum"`` or ``"air"``.
        activation: hidden activation; defaults to ``"leaky_relu"`` (payne) or ``"sigmoid"`` (binspec).
        flux_kind: what the network outputs (e.g. ``"normalized"``).
    """
    path = Path(path)
    if label_names is None:
        raise ModelFileError(f"{path}: Payne-format networks store no label names; pass label_names (CLI: --labels)")
    if isinstance(label_names, str):
        label_names = [n.strip() for n in label_names.split(",") if n.strip()]
    if isinstance(units, str):
        units = [u.strip() for u in units.split(",")]
    if wavelength is None:
        raise ModelFileError(f"{path}: Payne-format networks store no wavelengths; pass wavelength (CLI: --wavelength)")
    wave = _network_wavelength(wavelength)
    with _open_npz(path) as data:
        arrays = {k: np.asarray(data[k]) for k in data.files}
    try:
        x_min = arrays["x_min"].astype(np.float64).reshape(-1)
        x_max = arrays["x_max"].astype(np.float64).reshape(-1)
    except KeyError as err:
        raise ModelFileError(f"{path}: missing {err.args[0]} (not a Payne-family network)") from None
    if len(label_names) != x_min.size:
        raise ModelFileError(
            f"{path}: network takes {x_min.size} labels but {len(label_names)} names were given "
            f"({list(label_names)})"
        )
    spec = LabelSpec(tuple(label_names), x_min, x_max, tuple(units or ()))
    provenance = {"imported_from": str(path), "import_format": format}
    if format == "binspec":
        kind, config, params = _binspec_params(path, arrays, spec.n_labels, activation or "sigmoid")
    elif format == "payne":
        kind, config, params = _payne_params(path, arrays, spec.n_labels, activation or "leaky_relu")
    else:
        raise ModelFileError(f"{path}: unknown npz network format {format!r}")
    if config["n_pixels"] != wave.size:
        raise ModelFileError(
            f"{path}: network predicts {config['n_pixels']} pixels but the wavelength grid has {wave.size}"
        )
    return Model(kind, config, params, spec, wave, medium=medium, flux_kind=flux_kind, provenance=provenance)


def load_binspec_networks(folder: str | os.PathLike, label_names, *, wavelength=None) -> dict:
    """binspec's networks for binary models (El-Badry et al. 2018, MNRAS 476, 528) from a folder.

    binspec orders labels [Teff, logg, [Fe/H], [Mg/Fe], ...]: the unnormalised-flux network takes
    the first four, the radius network the first three, the companion network the first three and
    the mass ratio q and predicts [Teff₂/1000, logg₂]. ``label_names`` are the spectral
    emulator's names in that order (e.g. ``("teff", "logg", "feh", "mg_fe", "vmacro")``), so the
    networks' inputs are named alike.

    Args:
        folder: the folder holding :data:`BINSPEC_FILES` (the continuum pixels are optional).
        label_names: the spectral emulator's label names, binspec's order.
        wavelength: the flux network's pixel wavelengths [Å] (default the folder's
            ``apogee_wavelength.npz``).

    Returns:
        dict with ``flux`` (a :class:`Model` of 1e6·f_ν), ``radius`` (R_sun), ``companion``
        (a :class:`~jaxpayne.forward.CompanionEmulator`) and ``continuum_pixels`` ((n,) bool or
        None): the keyword arguments of :class:`~jaxpayne.forward.CompositeModel`.

    Raises:
        ModelFileError: for a missing or foreign file.
    """
    from jaxpayne.forward.composite import CompanionEmulator

    folder = Path(folder)
    names = [n.strip() for n in label_names.split(",")] if isinstance(label_names, str) else list(label_names)
    if len(names) < 4:
        raise ModelFileError(f"{folder}: binspec's networks need ≥ 4 labels (Teff, logg, [Fe/H], [Mg/Fe]); "
                             f"got {names}")

    def need(key):
        path = folder / BINSPEC_FILES[key]
        if not path.is_file():
            raise ModelFileError(f"{path}: binspec network file not found")
        return path

    wave = wavelength if wavelength is not None else need("wavelength")
    flux = load_npz_network(need("flux"), "binspec", label_names=names[:4], wavelength=wave,
                            flux_kind="unnormalized")
    radius = load_npz_network(need("radius"), "payne", label_names=names[:3], wavelength=[1.0],
                              activation="sigmoid", flux_kind="radius", units=["K", "dex", "dex"][:3])
    network = load_npz_network(need("companion"), "payne", label_names=names[:3] + ["q"],
                               wavelength=[1.0, 2.0], activation="sigmoid", flux_kind="labels")
    companion = CompanionEmulator(network, outputs=(names[0], names[1]), scales=(1000.0, 1.0))
    pixels = None
    path = folder / BINSPEC_FILES["continuum_pixels"]
    if path.is_file():
        with _open_npz(path) as data:
            pixels = np.asarray(data[data.files[0]], bool).reshape(-1)
    return {"flux": flux, "radius": radius, "companion": companion, "continuum_pixels": pixels}


def _binspec_params(path, arrays, n_labels, activation):
    import jax.numpy as jnp

    try:
        w0, b0, w1, b1 = (arrays[k] for k in ("w_array_0", "b_array_0", "w_array_1", "b_array_1"))
    except KeyError as err:
        raise ModelFileError(f"{path}: binspec network lacks {err.args[0]}") from None
    n_pix, n_hidden, n_in = w0.shape if w0.ndim == 3 else (0, 0, 0)
    if w0.ndim != 3 or n_in != n_labels or b0.shape != (n_pix, n_hidden) or w1.shape != (n_pix, n_hidden) or b1.shape != (n_pix,):
        raise ModelFileError(
            f"{path}: inconsistent binspec weight shapes w0 {w0.shape}, b0 {b0.shape}, w1 {w1.shape}, b1 {b1.shape}"
        )
    config = {"n_pixels": int(n_pix), "n_hidden": int(n_hidden), "n_labels": int(n_labels), "activation": activation}
    params = {"params": {k: jnp.asarray(v, jnp.float32) for k, v in (("w0", w0), ("b0", b0), ("w1", w1), ("b1", b1))}}
    return "perpixel", config, params


def _payne_params(path, arrays, n_labels, activation):
    import jax.numpy as jnp

    n_layers = 0
    while f"w_array_{n_layers}" in arrays:
        n_layers += 1
    if n_layers < 1:
        raise ModelFileError(f"{path}: no w_array_0 in Payne network")
    layers = []
    n_in = n_labels
    for k in range(n_layers):
        w = arrays[f"w_array_{k}"]
        b = arrays.get(f"b_array_{k}")
        if b is None or w.ndim != 2 or w.shape[1] != n_in or b.shape != (w.shape[0],):
            raise ModelFileError(
                f"{path}: layer {k} has inconsistent shapes w {w.shape}, b {None if b is None else b.shape} "
                f"(expected w of shape (n_out, {n_in}))"
            )
        layers.append((w, b))
        n_in = w.shape[0]
    hidden = [int(w.shape[0]) for w, _ in layers[:-1]]
    names = [f"hidden_{i}" for i in range(len(hidden))] + ["output"]
    # The Payne stores (n_out, n_in) matrices; Flax Dense kernels are (n_in, n_out).
    params = {
        "params": {
            name: {"kernel": jnp.asarray(w.T, jnp.float32), "bias": jnp.asarray(b, jnp.float32)}
            for name, (w, b) in zip(names, layers)
        }
    }
    config = {"n_pixels": int(layers[-1][0].shape[0]), "hidden": hidden, "activation": activation}
    return "mlp", config, params


def export_payne(model: Model, path: str | os.PathLike, *, wavelength_file: str | os.PathLike | None = None) -> Path:
    """Write an MLP model as The Payne's ``.npz`` (``w_array_k``, ``b_array_k``, ``x_min``, ``x_max``).

    The Payne's code applies LeakyReLU (slope 0.01) between layers, so only ``"mlp"`` models with
    that activation can be exported faithfully. Label names and wavelengths are not part of the
    format; ``wavelength_file`` optionally writes the grid beside it (``wavelength`` key).

    Args:
        model: the model.
        path: the ``.npz`` to write.
        wavelength_file: optional ``.npz`` to receive the wavelength grid.

    Returns:
        The path written.
    """
    if model.kind != "mlp" or model.config.get("activation", "leaky_relu") != "leaky_relu":
        raise ValueError(
            f"only LeakyReLU MLPs can be exported to The Payne's format (this model is {model.kind} "
            f"with activation {model.config.get('activation')!r})"
        )
    params = model.params["params"]
    hidden = list(model.config.get("hidden", ()))
    names = [f"hidden_{i}" for i in range(len(hidden))] + ["output"]
    out = {"x_min": model.bounds[0], "x_max": model.bounds[1]}
    for k, name in enumerate(names):
        out[f"w_array_{k}"] = np.asarray(params[name]["kernel"]).T
        out[f"b_array_{k}"] = np.asarray(params[name]["bias"])
    path = Path(path)
    np.savez(path, **out)
    if wavelength_file is not None:
        np.savez(wavelength_file, wavelength=model.wavelength)
    return path


def _detector(format: str):
    """``detect(path, head)`` for :func:`register_format`: is ``path`` an npz network of ``format``?"""

    def detect(path: Path, head: bytes) -> bool:
        return head.startswith(_ZIP_MAGIC) and detect_npz_format(path) == format

    return detect


register_format("payne", _detector("payne"), partial(load_npz_network, format="payne"), description=_DESCRIPTION)
register_format("binspec", _detector("binspec"), partial(load_npz_network, format="binspec"), description=_DESCRIPTION)
