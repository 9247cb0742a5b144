"""Training emulators on a :class:`~jaxpayne.grids.TrainingSet` with optax.

Minibatch gradient descent (AdamW, cosine-decayed learning rate) on The Payne's scaled labels,
validation after every epoch, early stopping that keeps the weights with the best validation
error, L1 or L2 loss (ivar-weighted when the training set has inverse variances), a progress bar
and a fixed seed. The returned :class:`~jaxpayne.model.Model` stores its per-pixel validation
error (median abs(Δf), rms, 99th percentile) and its provenance.

When the validation spectra carry inverse variances (observed spectra of a data-driven set), their
photon noise is part of every residual, so the stored rms — the emulator's own error, which the
fitter adds in quadrature to the noise of the spectrum being fitted — is the excess over that noise
(:func:`validation_errors`); the raw rms is kept as ``rms_raw``.

Reference: Ting, Conroy, Rix & Cargile 2019, ApJ 879, 69 (The Payne).
"""

from __future__ import annotations

import datetime
import time
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from jaxpayne.grids import StreamedTrainingSet, TrainingSet
from jaxpayne.model import Model

__all__ = ["EDGE_MARGIN", "RECOMMENDED", "TrainingConfig", "TrainingResult", "edge_of_box", "train_emulator", "validation_errors"]


@dataclass(frozen=True)
class TrainingConfig:
    """How to train an emulator.

    Attributes:
        emulator: ``"mlp"`` (The Payne), ``"resmlp"`` or ``"perpixel"`` (binspec-style).
        hidden: hidden-layer widths of the ``mlp``.
        activation: hidden activation (default: LeakyReLU for mlp, SiLU for resmlp, sigmoid for
            perpixel).
        width: residual-stream width of the ``resmlp``.
        n_blocks: residual blocks of the ``resmlp``.
        n_hidden: hidden units per pixel of the ``perpixel`` network.
        epochs: maximum number of epochs.
        batch_size: minibatch size (capped at the number of training spectra).
        learning_rate: peak learning rate of the cosine schedule.
        weight_decay: AdamW weight decay.
        loss: ``"l2"`` (mean squared) or ``"l1"`` (mean absolute) error.
        patience: stop after this many epochs without a better validation rms (None: never).
        val_fraction: fraction held out when no validation set is given.
        seed: seed of the split, the initial weights and the minibatch order.
        subtract_noise: when the validation spectra have ``ivar`` (observed spectra), store as the
            emulator error the rms in excess of their noise (see :func:`validation_errors`). Set
            False when ``ivar`` only weights or masks noiseless spectra.
        gradient_weight: weight λ of the DD-Payne gradient term (needs ``gradient_model`` in
            :func:`train_emulator`; 0: none).
    """

    emulator: str = "mlp"
    hidden: Sequence[int] = (300, 300)
    activation: str | None = None
    width: int = 256
    n_blocks: int = 2
    n_hidden: int = 10
    epochs: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    loss: str = "l2"
    patience: int | None = 500
    val_fraction: float = 0.1
    seed: int = 0
    subtract_noise: bool = True
    gradient_weight: float = 0.0

    def emulator_config(self, n_pixels: int, n_labels: int) -> dict[str, Any]:
        """The JSON config of the emulator this training builds."""
        if self.emulator == "mlp":
            return {"n_pixels": n_pixels, "hidden": [int(h) for h in self.hidden], "activation": self.activation or "leaky_relu"}
        if self.emulator == "resmlp":
            return {"n_pixels": n_pixels, "width": int(self.width), "n_blocks": int(self.n_blocks), "activation": self.activation or "silu"}
        if self.emulator == "perpixel":
            return {"n_pixels": n_pixels, "n_hidden": int(self.n_hidden), "n_labels": n_labels, "activation": self.activation or "sigmoid"}
        raise ValueError(f"unknown emulator {self.emulator!r}; choose mlp, resmlp or perpixel")



#: The default recipe of ``jaxpayne train``: the most accurate measured within a few minutes on
#: this project's 2-core CPU (``benchmarks/bench_emulator.py`` on the 1000 Korg/MARCS spectra:
#: held-out rms 3.0e-4, edges of the label box 3.3e-4, in 80 s; The Payne's 300×300 MLP with the
#: same schedule 1.8e-3 / 2.0e-3). ``TrainingConfig()`` itself stays The Payne's MLP.
#: No early stopping: under the cosine schedule most of the gain comes late, as the rate decays
#: (with patience 500 the Korg run stopped at epoch 1077 at rms 1.7e-3).
RECOMMENDED = TrainingConfig(emulator="resmlp", width=256, n_blocks=2, epochs=4000, batch_size=64,
                             learning_rate=3e-3, patience=None)


class TrainingResult(NamedTuple):
    """What :func:`train_emulator` returns.

    Attributes:
        model: the trained model with its best validation weights.
        history: per-epoch ``{"epoch", "train_loss", "val_rms"}`` arrays.
        best_epoch: epoch of the kept weights.
        seconds: wall-clock training time [s].
    """

    model: Model
    history: dict
    best_epoch: int
    seconds: float


#: A spectrum whose label lies within this fraction of the range from a bound is on the box's edge.
EDGE_MARGIN = 0.1
#: Pixels per block of the validation statistics (bounds their float64 scratch memory).
VALIDATION_PIXEL_BLOCK = 512
#: Spectra per chunk of the validation predictions (bounds the network's scratch memory).
VALIDATION_ROW_CHUNK = 512
#: Spectra per block read from disk when training on a streamed (HDF5) set.
STREAM_BLOCK_ROWS = 4096


def edge_of_box(labels, lower, upper, margin: float = EDGE_MARGIN) -> np.ndarray:
    """(n,) bool: spectra with some label within ``margin`` × its range of a bound of the box
    (the edges and corners, where emulators fail first)."""
    labels = np.atleast_2d(np.asarray(labels, np.float64))
    lower, upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
    pad = margin * (upper - lower)
    return np.any((labels <= lower + pad) | (labels >= upper - pad), axis=1)


def validation_errors(
    predicted: np.ndarray, flux: np.ndarray, ivar: np.ndarray | None = None, *, subtract_noise: bool = False,
    edge: np.ndarray | None = None,
) -> dict:
    r"""Per-pixel and overall emulator errors on a validation set.

    Residuals of observed (noisy) validation spectra hold their photon noise as well as the
    emulator's error. With ``subtract_noise`` the rms is the excess over the noise, per pixel
    ``j`` over the spectra ``i`` where the pixel is usable (``ivar > 0``):

    .. math:: \mathrm{rms}_j^2 = \max\bigl(0,\ \langle (f^{\rm emu}_{ij} - f_{ij})^2 \rangle_i
              - \langle 1/\mathrm{ivar}_{ij} \rangle_i\bigr)

    (overall: the same means over all usable pixels). The raw rms stays under ``rms_raw``.
    ``median_abs``, ``p99_abs`` and ``max_abs`` are always of the raw residuals.

    Args:
        predicted: ``(n_spectra, n_pixels)`` emulated flux.
        flux: ``(n_spectra, n_pixels)`` validation flux.
        ivar: optional inverse variance of ``flux`` [flux⁻²]; pixels with ``ivar == 0`` are
            ignored (a pixel unusable in every spectrum gets NaN errors).
        subtract_noise: subtract the noise variance ``1/ivar`` as above (needs ``ivar``).
        edge: optional (n_spectra,) bool, the spectra on the edges of the label box
            (:func:`edge_of_box`); the summary then also has ``rms_interior``, ``rms_edge`` and
            ``n_edge``.

    Returns:
        ``{"rms", "rms_raw", "median_abs", "p99_abs"}`` per-pixel float32 arrays and
        ``"summary"``, a dict of overall ``rms``, ``rms_raw``, ``noise_rms`` (rms of the noise σ;
        0 without ``ivar``), ``median_abs``, ``p99_abs``, ``max_abs``, ``n_spectra`` and
        ``rms_kind``: ``"excess_over_noise"`` or ``"raw"``, saying what ``rms`` is.

    Example:
        >>> errors = validation_errors(model.predict(val.labels), val.flux, val.ivar, subtract_noise=True)
    """
    import warnings

    if subtract_noise and ivar is None:
        raise ValueError("subtract_noise needs the validation spectra's ivar")
    predicted, flux = np.asarray(predicted), np.asarray(flux)
    n_spectra, n_pixels = flux.shape
    rows_of = {"all": np.ones(n_spectra, bool)}
    if edge is not None:
        edge = np.asarray(edge, bool).reshape(-1)
        rows_of.update(interior=~edge, edge=edge)
    # per-pixel statistics in float64 over blocks of pixels (a few blocks' worth of memory beyond
    # the inputs, whatever the number of validation spectra); the float32 |residuals| are kept for
    # the overall quantiles
    absolute = np.empty((n_spectra, n_pixels), np.float32)
    per_pixel = {k: np.empty(n_pixels) for k in ("rms", "rms_raw", "median_abs", "p99_abs")}
    sums = {name: np.zeros(3) for name in rows_of}  # Σ diff², Σ noise variance, usable count
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (pixels masked everywhere)
        for a in range(0, n_pixels, VALIDATION_PIXEL_BLOCK):
            cols = slice(a, a + VALIDATION_PIXEL_BLOCK)
            diff = np.abs(predicted[:, cols].astype(np.float64) - flux[:, cols].astype(np.float64))
            noise_var = np.zeros_like(diff)
            if ivar is not None:
                block_ivar = np.asarray(ivar[:, cols], np.float64)
                usable = block_ivar > 0
                diff = np.where(usable, diff, np.nan)
                noise_var = np.where(usable, 1.0 / block_ivar, np.nan)
            absolute[:, cols] = diff
            square = diff**2
            mean_square, mean_noise = np.nanmean(square, axis=0), np.nanmean(noise_var, axis=0)
            per_pixel["rms"][cols] = np.sqrt(np.maximum(0.0, mean_square - mean_noise) if subtract_noise
                                             else mean_square)
            per_pixel["rms_raw"][cols] = np.sqrt(mean_square)
            per_pixel["median_abs"][cols], per_pixel["p99_abs"][cols] = np.nanpercentile(diff, [50, 99], axis=0)
            for name, rows in rows_of.items():
                sums[name] += [np.nansum(square[rows]), np.nansum(noise_var[rows]), np.sum(np.isfinite(diff[rows]))]

        def overall(name):
            """rms over the given spectra: the excess over the noise, or raw."""
            square, noise, count = sums[name]
            if count == 0:
                return float("nan")
            square, noise = square / count, noise / count
            return float(np.sqrt(max(0.0, square - noise) if subtract_noise else square))

        square, noise, count = sums["all"]
        summary = {
            "rms": overall("all"),
            "rms_raw": float(np.sqrt(square / count)) if count else float("nan"),
            "noise_rms": float(np.sqrt(noise / count)) if count else float("nan"),
            "rms_kind": "excess_over_noise" if subtract_noise else "raw",
            "max_abs": float(np.nanmax(absolute)),
            "n_spectra": int(n_spectra),
        }
        # in place: the array is ours and not used again
        median, p99 = np.nanpercentile(absolute.reshape(-1), [50, 99], overwrite_input=True)
        summary.update(median_abs=float(median), p99_abs=float(p99))
        if edge is not None:
            for name in ("interior", "edge"):
                summary[f"rms_{name}"] = overall(name) if np.any(rows_of[name]) else float("nan")
            summary["n_edge"] = int(edge.sum())
    return {**{k: v.astype(np.float32) for k, v in per_pixel.items()}, "summary": summary}


def train_emulator(
    training_set: TrainingSet | StreamedTrainingSet,
    config: TrainingConfig | None = None,
    *,
    validation: TrainingSet | None = None,
    progress: bool = True,
    block_rows: int | None = None,
    gradient_model=None,
    **overrides,
) -> TrainingResult:
    r"""Train an emulator on a training set.

    With ``gradient_model`` and ``config.gradient_weight`` λ > 0 (DD-Payne; Xiang et al. 2019,
    ApJS 245, 34) the loss has a second term that ties the network's label gradients to those of
    a synthetic-spectrum model on the same pixels,

    .. math:: \lambda \,\bigl\langle (\partial f_{\rm net}/\partial s_k
              - \partial f_{\rm syn}/\partial s_k)^2 \bigr\rangle

    (mean over pixels, labels and points; s the scaled labels, so each gradient is the flux change
    across the label's training range), at every minibatch's labels and at as many points drawn
    uniformly in the label box, where a data-driven set has no stars. The data term is the
    ivar-weighted mean squared residual, in flux² at the median noise: λ ≈ 1 weighs a gradient
    error like a flux error of the same size.

    Args:
        training_set: spectra with labels. Unless ``validation`` is given, a reproducible
            ``config.val_fraction`` of it is held out (:meth:`TrainingSet.split`). A
            :class:`~jaxpayne.grids.StreamedTrainingSet` (an HDF5 file too large for memory) is
            read block by block: each epoch visits contiguous blocks of ``block_rows`` training
            spectra in a random order and shuffles the spectra within each block, so memory holds
            one block (and the validation spectra, read once) whatever the size of the set.
        config: training settings; keyword ``overrides`` replace its fields.
        validation: an explicit validation set on the same wavelength grid (not with a streamed
            set, which holds out its own).
        progress: show a tqdm progress bar with the losses.
        block_rows: spectra per block of a streamed set (default :data:`STREAM_BLOCK_ROWS`,
            rounded down to whole minibatches).
        gradient_model: the synthetic-spectrum model (a :class:`~jaxpayne.Model` with the same
            label names and pixels) of the gradient term; not with a streamed set.

    Returns:
        A :class:`TrainingResult`; ``result.model`` carries the best validation weights, the
        per-pixel validation errors (``validation["rms"]``: in excess of the noise when the
        validation spectra have ``ivar`` and ``config.subtract_noise``; ``validation["rms_raw"]``:
        as measured) and provenance.

    Example:
        >>> ts = jaxpayne.read_training_set("../shared/data/korg_marcs_5000")
        >>> result = jaxpayne.train_emulator(ts, epochs=200, hidden=(128, 128))
        >>> result.model.save("korg.h5")
    """
    import jax
    import jax.numpy as jnp
    import optax
    from jaxpayne._progress import progress_bar

    config = config or TrainingConfig()
    if overrides:
        config = TrainingConfig(**{**asdict(config), **overrides})
    if config.loss not in ("l1", "l2"):
        raise ValueError(f"loss must be 'l1' or 'l2', got {config.loss!r}")
    if config.epochs < 1:
        raise ValueError("epochs must be >= 1")
    if config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {config.batch_size}")
    if config.patience is not None and config.patience < 1:
        raise ValueError(f"patience must be >= 1 (or None for no early stopping), got {config.patience}")
    full = training_set
    streamed = isinstance(training_set, StreamedTrainingSet)
    if not streamed:
        training_set.require_complete("training a network")
        if validation is not None:
            validation.require_complete("a validation set")
    if streamed:
        if validation is not None:
            raise ValueError("a streamed training set holds out its own validation spectra; drop validation=")
        train_index, val_index = training_set.split_index(config.val_fraction, seed=config.seed)
        train, val = None, training_set.rows(val_index)
    elif validation is None:
        train, val = training_set.split(config.val_fraction, seed=config.seed)
    else:
        train, val = training_set, validation
        if val.n_pixels != train.n_pixels or not np.allclose(val.wavelength, train.wavelength):
            raise ValueError("validation set must share the training set's wavelength grid")
        if val.label_names != train.label_names:
            raise ValueError("validation set must have the training set's labels")
    spec = full.label_spec()
    if validation is not None:
        spec = type(spec).from_data(full.label_names, np.concatenate([train.labels, val.labels]), full.label_units)

    emulator_config = config.emulator_config(full.n_pixels, len(spec.names))
    proto = Model(config.emulator, emulator_config, None, spec, full.wavelength, medium=full.medium)
    module = proto.module

    x_val = jnp.asarray(spec.scale(val.labels), jnp.float32)
    y_val = jnp.asarray(val.flux, jnp.float32)
    w_val = jnp.asarray(val.ivar > 0) if val.ivar is not None else jnp.ones(val.flux.shape, bool)
    # Per-pixel weights: ivar normalised to unit median, so the loss keeps the scale of the flux
    # (a streamed set takes the median of its validation spectra's)
    reference = val if streamed else train
    ivar_scale = None
    if reference.ivar is not None and np.any(reference.ivar > 0):
        ivar_scale = float(np.median(reference.ivar[reference.ivar > 0]))

    def weights(ts):
        if ts.ivar is None or ivar_scale is None:
            return np.ones_like(ts.flux)
        return ts.ivar / ivar_scale

    n_train = train_index.size if streamed else train.n_spectra
    batch = int(min(config.batch_size, n_train))
    if streamed:
        per_block = max(1, int(block_rows or STREAM_BLOCK_ROWS) // batch) * batch
        blocks = [train_index[i : i + per_block] for i in range(0, n_train, per_block)]
        blocks = [b for b in blocks if b.size // batch > 0]
        n_batches = sum(b.size // batch for b in blocks)
    else:
        x_train = jnp.asarray(spec.scale(train.labels), jnp.float32)
        y_train = jnp.asarray(train.flux, jnp.float32)
        w_train = jnp.asarray(weights(train), jnp.float32)
        n_batches = n_train // batch
    total_steps = config.epochs * n_batches
    schedule = optax.cosine_decay_schedule(config.learning_rate, decay_steps=total_steps, alpha=1e-2)
    optimizer = optax.adamw(schedule, weight_decay=config.weight_decay)

    key = jax.random.PRNGKey(config.seed)
    key, init_key = jax.random.split(key)
    params = module.init(init_key, x_val[:1])
    opt_state = optimizer.init(params)

    gradient_term = _gradient_term(config, gradient_model, spec, module, full, streamed)
    if gradient_term is not None:
        box_points = jnp.asarray(np.random.default_rng(config.seed + 1).uniform(-0.5, 0.5, (n_train, len(spec.names))),
                                 jnp.float32)

    def loss_fn(p, x, y, w, box=None):
        r = module.apply(p, x) - y
        if config.loss == "l2":
            loss = jnp.sum(w * r**2) / jnp.sum(w > 0)
        else:
            loss = jnp.sum(jnp.sqrt(w) * jnp.abs(r)) / jnp.sum(w > 0)
        if gradient_term is not None:
            loss = loss + gradient_term(p, jnp.concatenate([x, box]))
        return loss

    def update(carry, x, y, w, box=None):
        p, s = carry
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y, w, box)
        updates, s = optimizer.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    if streamed:
        @jax.jit
        def run_block(p, s, x, y, w):
            """Minibatches (n, batch, ...) already on the device, in order."""
            (p, s), losses = jax.lax.scan(lambda c, b: update(c, *b), (p, s), (x, y, w))
            return p, s, jnp.mean(losses)

        x_all = np.asarray(spec.scale(full.labels), np.float32)

        def run_epoch(p, s, k):
            rng = np.random.default_rng(np.asarray(k).ravel().astype(np.uint64))  # from the epoch's key
            total = 0.0
            for b in rng.permutation(len(blocks)):
                rows = blocks[b]
                ts = training_set.rows(rows)
                order = rng.permutation(rows.size)[: (rows.size // batch) * batch]
                shape = (-1, batch)
                p, s, loss = run_block(p, s, jnp.asarray(x_all[rows][order].reshape(*shape, x_all.shape[1])),
                                       jnp.asarray(ts.flux[order].reshape(*shape, ts.n_pixels)),
                                       jnp.asarray(weights(ts)[order].reshape(*shape, ts.n_pixels), jnp.float32))
                total += float(loss) * (rows.size // batch)
            return p, s, total / n_batches
    else:
        def step(carry, idx):
            box = None if gradient_term is None else box_points[idx]
            return update(carry, x_train[idx], y_train[idx], w_train[idx], box)

        @jax.jit
        def run_epoch(p, s, k):
            order = jax.random.permutation(k, n_train)[: n_batches * batch].reshape(n_batches, batch)
            (p, s), losses = jax.lax.scan(step, (p, s), order)
            return p, s, jnp.mean(losses)

    # the validation spectra in chunks: scratch memory of one chunk, whatever their number
    def predict(p, x):
        return jax.lax.map(lambda xi: module.apply(p, xi), x, batch_size=VALIDATION_ROW_CHUNK)

    n_usable = float(jnp.sum(w_val))

    @jax.jit
    def val_rms(p):
        def square(args):
            x, y, w = args
            return jnp.sum(jnp.where(w, module.apply(p, x) - y, 0.0) ** 2)

        squares = jax.lax.map(square, (x_val, y_val, w_val), batch_size=VALIDATION_ROW_CHUNK)
        return jnp.sqrt(jnp.sum(squares) / n_usable)

    history = {"epoch": [], "train_loss": [], "val_rms": []}
    best = (np.inf, params, 0)
    t0 = time.perf_counter()
    bar = progress_bar(range(1, config.epochs + 1), desc="training", unit="epoch", progress=progress, leave=False)
    for epoch in bar:
        key, sub = jax.random.split(key)
        params, opt_state, train_loss = run_epoch(params, opt_state, sub)
        rms = float(val_rms(params))
        history["epoch"].append(epoch)
        history["train_loss"].append(float(train_loss))
        history["val_rms"].append(rms)
        if not np.isfinite(rms):
            raise FloatingPointError(f"training diverged at epoch {epoch} (validation rms {rms}); lower the learning rate")
        if rms < best[0]:
            best = (rms, params, epoch)
        if epoch % 10 == 0 or epoch == 1:
            bar.set_postfix(loss=f"{float(train_loss):.3e}", val_rms=f"{rms:.3e}", best=f"{best[0]:.3e}")
        if config.patience is not None and epoch - best[2] >= config.patience:
            break
    bar.close()
    seconds = time.perf_counter() - t0
    _, params, best_epoch = best

    predicted = np.asarray(jax.jit(predict)(params, x_val))
    errors = validation_errors(
        predicted, val.flux, val.ivar, subtract_noise=config.subtract_noise and val.ivar is not None,
        edge=edge_of_box(val.labels, spec.lower, spec.upper),
    )
    provenance = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "training_source": training_set.source,
        "dataset_sha256": full.fingerprint(),
        "n_train": int(n_train),
        "n_validation": int(val.n_spectra),
        "epochs_run": int(history["epoch"][-1]),
        "best_epoch": int(best_epoch),
        "training_seconds": round(seconds, 2),
        "training_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        **({"gradient_model": {"kind": gradient_model.kind, "source": str(gradient_model.provenance.get(
            "training_source", gradient_model.provenance.get("source", "")))}} if gradient_model is not None else {}),
        "versions": _versions(),
    }
    model = proto.replace(params=params, validation=errors, provenance=provenance)
    return TrainingResult(model, {k: np.asarray(v) for k, v in history.items()}, int(best_epoch), seconds)


def _gradient_term(config, gradient_model, spec, module, full, streamed):
    """λ ⟨(∂f_net/∂s − ∂f_syn/∂s)²⟩ at scaled labels (n, L), or None (see :func:`train_emulator`)."""
    import jax
    import jax.numpy as jnp

    weight = float(config.gradient_weight)
    if gradient_model is None:
        if weight > 0:
            raise ValueError("gradient_weight > 0 needs a gradient_model (the synthetic-spectrum model)")
        return None
    if streamed:
        raise ValueError("the gradient term needs the training set in memory (not streamed)")
    if tuple(gradient_model.label_names) != tuple(spec.names):
        raise ValueError(f"gradient_model labels {list(gradient_model.label_names)} differ from the set's {list(spec.names)}")
    if gradient_model.n_pixels != full.n_pixels or not np.allclose(gradient_model.wavelength, full.wavelength):
        raise ValueError("gradient_model must predict the training set's pixels")
    if not weight > 0:
        return None
    span = jnp.asarray(spec.upper - spec.lower, jnp.float32)
    synthetic_params = gradient_model.params

    def term(p, scaled):
        jac_net = jax.vmap(jax.jacfwd(lambda x: module.apply(p, x)))(scaled)  # (n, P, L)
        physical = spec.unscale(scaled)
        jac_syn = jax.vmap(jax.jacfwd(lambda l: gradient_model.apply(synthetic_params, l)))(physical) * span
        return weight * jnp.mean((jac_net - jax.lax.stop_gradient(jac_syn)) ** 2)

    return term


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("jaxpayne", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out
