"""The ``jaxpayne`` command line.

Subcommands::

    jaxpayne demo                      # train + fit on built-in mock spectra, no downloads
    jaxpayne train GRID --out MODEL    # train an emulator on a training set
    jaxpayne info MODEL                # labels, bounds, wavelengths, architecture, validation error
    jaxpayne convert NN.npz --format payne|binspec --labels A,B --wavelength W --out MODEL
    jaxpayne fit --model MODEL SPECTRUM... --out TABLE [--binary ratio|physical|tied --binary-networks DIR]
    jaxpayne sample --model MODEL SPECTRUM... --out POST.nc [--summary TABLE] [--prior FILE.py:NAME] [--binary ...]
    jaxpayne crlb --model MODEL --labels NAME=VALUE,... --snr S [--resolution R] --out TABLE

Errors in the input are reported as one line ``jaxpayne: error: <file>: <problem>`` with exit
status 2; no Python traceback (set ``JAXPAYNE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


class CLIError(Exception):
    """An error to report as one line without a traceback."""


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_train(sub):
    from jaxpayne.training import RECOMMENDED

    p = sub.add_parser(
        "train",
        help="train an emulator on a training set",
        description="Train an emulator on GRID (.npz, .h5, .fits or a directory of .npy files), or on "
        "observed spectra: a SPECTRA_TABLE of spectrum files with --labels-from CATALOGUE.",
    )
    p.add_argument("grid", metavar="GRID|SPECTRA_TABLE",
                   help="training set: .npz, .h5, .fits, or a directory with parameters.npy etc.; with "
                   "--labels-from, a table (.csv/.ecsv/.fits) with a 'file' column of spectrum files")
    p.add_argument("--out", required=True, help="model file to write (.h5)")
    p.add_argument("--labels", help="label names, comma-separated (if the file does not name them; with "
                   "--labels-from: the catalogue columns to train on)")
    p.add_argument("--emulator", default=RECOMMENDED.emulator, choices=["mlp", "resmlp", "perpixel", "cannon"],
                   help=f"architecture (default {RECOMMENDED.emulator}, the most accurate measured; mlp is The Payne's "
                   "and the one that exports to its npz; cannon is The Cannon's polynomial)")
    p.add_argument("--order", type=int, default=2, help="cannon: polynomial degree (default 2; 3 = cubic)")
    p.add_argument("--l1", type=float, default=0.0, help="cannon: L1 penalty on the coefficients, in chi2 units "
                   "(default 0)")
    p.add_argument("--labels-from", metavar="CATALOGUE",
                   help="reference labels of the spectra in SPECTRA_TABLE: a table (.csv/.ecsv/.fits) matched on "
                   "--id-column")
    p.add_argument("--id-column", default="id", help="column naming each star in both tables (default id)")
    p.add_argument("--rv-column", help="with --labels-from: catalogue column of radial velocities [km/s] that move "
                   "spectra not in the rest frame there")
    p.add_argument("--wavelength", help="with --labels-from: the model's wavelength grid (.npy/.npz/.txt/.fits; "
                   "default the first spectrum's)")
    p.add_argument("--label-errors", metavar="COLS|NAME=VALUE,...",
                   help="uncertainties of the reference labels: catalogue columns in --labels order (with "
                   "--labels-from), or constant errors per label; a training-set file's own label_errors are used "
                   "otherwise")
    p.add_argument("--latent-labels", dest="latent", action="store_true", default=None,
                   help="treat label errors and missing labels as per-star latent labels (default when the set "
                   "has either)")
    p.add_argument("--no-latent-labels", dest="latent", action="store_false",
                   help="the naive choices: ignore label errors, drop spectra with a missing label")
    p.add_argument("--continuum", metavar="filter:WIDTH",
                   help="divide the training spectra by their running-mean pseudo-continuum first, as the "
                   "likelihood's filter continuum does (DD-Payne normalisation); default: the flux as given")
    p.add_argument("--gradient-model", metavar="MODEL",
                   help="DD-Payne: tie the network's label gradients to this synthetic-spectrum model's (same "
                   "labels and pixels)")
    p.add_argument("--gradient-weight", type=float,
                   help="weight of the gradient term with --gradient-model (default 0.01; see docs/data_driven.md)")
    p.add_argument("--cv", type=int, metavar="K", help="also report K-fold cross-validated label recovery")
    p.add_argument("--cv-out", metavar="TABLE", help="per-spectrum cross-validated labels (.fits/.ecsv/.csv)")
    p.add_argument("--hidden", type=_int_list, default=[300, 300], help="mlp hidden widths (default 300,300)")
    p.add_argument("--width", type=int, default=256, help="resmlp width (default 256)")
    p.add_argument("--blocks", type=int, default=2, help="resmlp residual blocks (default 2)")
    p.add_argument("--activation", help="hidden activation (default leaky_relu / silu / sigmoid by emulator)")
    p.add_argument("--epochs", type=int, default=RECOMMENDED.epochs, help=f"maximum epochs (default {RECOMMENDED.epochs})")
    p.add_argument("--batch-size", type=int, default=RECOMMENDED.batch_size,
                   help=f"minibatch size (default {RECOMMENDED.batch_size})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {RECOMMENDED.learning_rate:g} for resmlp, "
                   "1e-3 otherwise)")
    p.add_argument("--loss", choices=["l1", "l2"], default="l2", help="loss (default l2)")
    p.add_argument("--patience", type=int, default=RECOMMENDED.patience or 0,
                   help="early-stopping patience in epochs (default 0 = off: under the cosine schedule the "
                   "late epochs gain most)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--air", action="store_true", help="the grid's wavelengths are in air (default vacuum)")
    p.add_argument("--stream", action="store_true",
                   help="read an HDF5 training set from disk block by block instead of into memory "
                   "(automatic above 4 GiB of spectra)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (without it a bar is shown only on a terminal, never in a log file)")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from jaxpayne.grids import StreamedTrainingSet, read_training_set
    from jaxpayne.training import RECOMMENDED, TrainingConfig, train_emulator

    if args.gradient_weight is not None and not args.gradient_model:
        raise CLIError("--gradient-weight weighs the gradient term of --gradient-model MODEL: give the model too")
    asked = args.emulator == "cannon" or any(getattr(args, k) for k in ("labels_from", "label_errors", "continuum", "cv"))
    if args.labels_from:
        from jaxpayne.datadriven import training_set_from_spectra

        ts = training_set_from_spectra(args.grid, args.labels_from, label_names=args.labels, id_column=args.id_column,
                                       error_columns=_error_columns(args.label_errors), wavelength=args.wavelength,
                                       medium="air" if args.air else None, rv_column=args.rv_column,
                                       warn=lambda message: print(f"jaxpayne: warning: {message}", file=sys.stderr))
    else:
        ts = read_training_set(args.grid, label_names=args.labels, medium="air" if args.air else None,
                               stream=True if args.stream else (False if asked else None))
    streamed = isinstance(ts, StreamedTrainingSet)
    if (asked or args.latent) and streamed:
        raise CLIError(f"{args.grid}: cannon, --cv, label errors, latent labels and --continuum need the training set "
                       "in memory (no --stream)")
    data_driven = asked or args.latent or (not streamed and (ts.n_missing > 0 or ts.label_errors is not None))
    config = TrainingConfig(
        emulator=args.emulator,
        hidden=tuple(args.hidden),
        width=args.width,
        n_blocks=args.blocks,
        activation=args.activation,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr or (RECOMMENDED.learning_rate if args.emulator == RECOMMENDED.emulator
                                  else TrainingConfig.learning_rate),
        loss=args.loss,
        patience=args.patience or None,
        gradient_weight=(0.01 if args.gradient_weight is None else args.gradient_weight) if args.gradient_model else 0.0,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    if data_driven:
        return _train_data_driven(args, ts, config)
    how = " (streamed from disk)" if isinstance(ts, StreamedTrainingSet) else ""
    print(f"training {args.emulator} on {ts.n_spectra} spectra x {ts.n_pixels} pixels{how}, "
          f"labels {list(ts.label_names)}")
    result = train_emulator(ts, config, progress=_progress(args), gradient_model=_gradient_model(args))
    out = result.model.save(args.out)
    s = result.model.validation["summary"]
    print(
        f"best epoch {result.best_epoch} of {len(result.history['epoch'])} in {result.seconds:.1f} s; "
        f"validation rms {s['rms']:.3e} (interior {s['rms_interior']:.3e}, edges {s['rms_edge']:.3e}), "
        f"median |df| {s['median_abs']:.3e}, p99 |df| {s['p99_abs']:.3e}"
    )
    print(f"wrote {out}")
    return 0


def _gradient_model(args):
    """The synthetic-spectrum model of --gradient-model, or None."""
    if not args.gradient_model:
        return None
    from jaxpayne import load_model

    return load_model(args.gradient_model)


def _error_columns(text):
    """--label-errors as catalogue column names (None for NAME=VALUE constants or nothing)."""
    if not text or "=" in text:
        return None
    return [c.strip() for c in text.split(",") if c.strip()]


def _train_data_driven(args, ts, config) -> int:
    """train for the Cannon, label errors, missing labels, --continuum and --cv."""
    import time

    import numpy as np

    from jaxpayne.datadriven import cross_validate, filter_normalize, train_with_latent_labels, training_function
    from jaxpayne.forward.continuum import parse_continuum
    from jaxpayne.grids import TrainingSet

    if args.label_errors and "=" not in args.label_errors and not args.labels_from:
        raise CLIError("--label-errors COLS names catalogue columns (with --labels-from); for a training-set file "
                       "give constants NAME=VALUE,... or store label_errors in the file")
    if args.label_errors and "=" in args.label_errors:
        constant = _parse_assignments(args.label_errors, "--label-errors", nonnegative=True)
        unknown = sorted(set(constant) - set(ts.label_names))
        if unknown:
            raise CLIError(f"--label-errors names {unknown}, not labels of the set {list(ts.label_names)}")
        errors = np.column_stack([np.full(ts.n_spectra, constant.get(n, 0.0)) for n in ts.label_names])
        ts = TrainingSet(ts.wavelength, ts.labels, ts.flux, ts.label_names, ts.label_units, ts.ivar, ts.medium,
                         ts.source, ts.meta, errors)
    if args.continuum:
        spec = parse_continuum(args.continuum)
        if spec.kind != "filter":
            raise CLIError(f"--continuum: training spectra are normalised with the filter only (filter:WIDTH), "
                           f"got {args.continuum!r}")
        ts = filter_normalize(ts, spec.width)
    has_errors = ts.label_errors is not None and np.any(np.nan_to_num(ts.label_errors) > 0)
    latent = (ts.n_missing > 0 or has_errors) if args.latent is None else args.latent
    if ts.ivar is None and latent:
        raise CLIError(f"{args.grid}: latent labels weigh each spectrum by its noise: the set needs ivar")
    if args.gradient_model and args.emulator == "cannon":
        raise CLIError("--gradient-model ties a network's gradients; the Cannon has no such term")
    train = training_function(ts, args.emulator, order=args.order, l1=args.l1, config=config, progress=_progress(args),
                              gradient_model=_gradient_model(args))
    what = f"cannon (order {args.order}{f', l1 {args.l1:g}' if args.l1 else ''})" if args.emulator == "cannon" \
        else args.emulator
    extras = [f"{ts.n_missing} missing labels"] if ts.n_missing else []
    extras += ["label errors"] if has_errors else []
    how = (f"; {' and '.join(extras)} as latent labels" if latent else f"; {' and '.join(extras)} ignored "
           "(spectra with a missing label dropped)") if extras else ""
    print(f"training {what} on {ts.n_spectra} spectra x {ts.n_pixels} pixels, labels {list(ts.label_names)}{how}"
          + (f", flux divided by a {ts.meta['continuum']} pseudo-continuum" if "continuum" in ts.meta else ""))
    continuum = "none"  # the spectra are normalised (or filter-normalised) already
    if args.cv:
        t0 = time.perf_counter()
        # noiseless synthetic sets (no ivar): equal weights in the held-out fits (labels, not errors)
        fit_ivar = ts.ivar if ts.ivar is not None else np.ones_like(ts.flux)
        cv = cross_validate(train, ts.labels, ts.flux, fit_ivar, wavelength=ts.wavelength, label_names=ts.label_names,
                            folds=args.cv, seed=args.seed, errors=ts.label_errors if latent else None, latent=latent,
                            continuum=continuum)
        print(f"{args.cv}-fold cross-validation (fold of spectrum i: numpy.random.default_rng({args.seed})"
              f".permutation(n)[i] % {args.cv}), {time.perf_counter() - t0:.1f} s; fitted minus reference:")
        print(cv.markdown())
        if args.cv_out:
            from jaxpayne.fitting.run import write_table

            write_table(cv.table(), args.cv_out)
            print(f"wrote {args.cv_out}")
    t0 = time.perf_counter()
    if latent:
        result = train_with_latent_labels(train, ts.labels, ts.flux, ts.ivar, ts.label_errors)
        model = result.model
    else:
        keep = np.all(np.isfinite(ts.labels), axis=1)
        model = train(ts.labels[keep], ts.flux[keep], None if ts.ivar is None else ts.ivar[keep])
    seconds = time.perf_counter() - t0
    model = model.replace(provenance={**model.provenance, "training_source": ts.source,
                                      "dataset_sha256": ts.fingerprint(), "latent_labels": bool(latent),
                                      "training_continuum": ts.meta.get("continuum", "as given"),
                                      **({"cv": cv.summary} if args.cv else {})})
    out = model.save(args.out)
    s = model.validation.get("summary", {})
    print(f"trained in {seconds:.1f} s; " + (f"median intrinsic scatter {s['median_scatter']:.3e}"
                                           if "median_scatter" in s else f"validation rms {s.get('rms', float('nan')):.3e}"))
    if "continuum" in ts.meta:
        print(f"fit with --continuum {ts.meta['continuum']} (the training spectra's normalisation)")
    print(f"wrote {out}")
    return 0


def _add_info(sub):
    p = sub.add_parser("info", help="describe a model file", description="Print a model's labels, bounds, grid and validation error.")
    p.add_argument("model", help="model file (.h5); or a Payne-format .npz with --format etc.")
    _add_import_options(p, required=False)
    p.set_defaults(func=_cmd_info)


def _add_import_options(p, required: bool):
    p.add_argument("--format", choices=["jaxpayne", "payne", "binspec"], required=required,
                   help="model format (payne: The Payne's MLP npz; binspec: per-pixel networks)")
    p.add_argument("--labels", required=required, help="label names of an npz network, comma-separated, in input order")
    p.add_argument("--wavelength", required=required, help="wavelength grid of an npz network (.npy/.npz/.txt/.fits)")
    p.add_argument("--units", help="label units, comma-separated (guessed from names otherwise)")
    p.add_argument("--air", action="store_true", help="the network's wavelengths are in air (default vacuum)")


def _load_model_args(args, prefix: str = ""):
    """The model named by ``--model`` and its import options (``--PREFIXformat`` etc.)."""
    from jaxpayne.model import load_model

    return load_model(args.model, **_model_load_options(args, prefix))


def _model_load_options(args, prefix: str = "") -> dict:
    """:func:`~jaxpayne.load_model` keyword arguments of the import options (``--PREFIXformat`` etc.)."""

    def opt(name):
        return getattr(args, prefix + name, None)

    kwargs = {"format": opt("format")}
    if opt("labels") or opt("wavelength") or opt("format") in ("payne", "binspec"):
        kwargs.update(label_names=opt("labels"), wavelength=opt("wavelength"), units=opt("units"),
                      medium="air" if opt("air") else "vacuum")
    return kwargs


def _cmd_info(args) -> int:
    model = _load_model_args(args)
    print(f"model          {args.model}")
    print(model.describe())
    return 0


def _add_convert(sub):
    p = sub.add_parser(
        "convert",
        help="convert a Payne-family .npz network to a jaxpayne model file",
        description="Convert The Payne's or binspec's .npz network (with its label names and wavelengths) to one model file.",
    )
    p.add_argument("model", metavar="NN.npz", help="the network")
    _add_import_options(p, required=True)
    p.add_argument("--out", required=True, help="model file to write (.h5)")
    p.set_defaults(func=_cmd_convert)


def _cmd_convert(args) -> int:
    model = _load_model_args(args)
    out = model.save(args.out)
    print(model.describe())
    print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``jaxpayne`` command."""
    from jaxpayne import __version__

    parser = argparse.ArgumentParser(prog="jaxpayne", description="Stellar labels from spectra with JAX emulators.")
    parser.add_argument("--version", action="version", version=f"jaxpayne {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def _add_model_options(p):
    """The forward-model, likelihood and start-fit options shared by ``fit`` and ``sample``."""
    p.add_argument("--wavelength", help="wavelength grid for files that carry none (e.g. binspec npz spectra)")
    p.add_argument("--air", action="store_true",
                   help="the spectrum files' wavelengths are in air (generic files; default: what the file says, "
                   "else vacuum)")
    p.add_argument("--rv", dest="rv", action="store_true", default=True, help="fit the radial velocity (default)")
    p.add_argument("--no-rv", dest="rv", action="store_false", help="hold rv at 0 (rest-frame spectra)")
    _add_forward_options(p)
    p.add_argument("--templates", type=int, default=128,
                   help="model spectra in the rv/label pre-search library (default 128)")
    p.add_argument("--restarts", type=int, default=1,
                   help="optimiser starts from the best-matching templates, best kept (default 1)")


def _add_forward_options(p):
    """The forward-model and likelihood options shared by ``fit``, ``sample`` and ``crlb``."""
    p.add_argument("--max-rv", type=float, default=300.0, help="rv search range +-km/s (default 300)")
    p.add_argument("--vsini", action="store_true", help="fit rotational broadening vsini")
    p.add_argument("--vmacro", action="store_true", help="fit macroturbulence vmacro")
    p.add_argument("--max-vsini", type=float, default=300.0,
                   help="upper bound of vsini, km/s; also the rotational margin at the model's edges (default 300)")
    p.add_argument("--max-vmacro", type=float, default=30.0,
                   help="upper bound of vmacro, km/s (default 30)")
    p.add_argument("--limb-darkening", type=float, default=0.6,
                   help="linear limb-darkening coefficient of the rotation kernel (default 0.6, optical; "
                   "use ~0.3-0.4 in the near infrared, e.g. APOGEE)")
    p.add_argument("--resolution", type=float, help="instrumental resolving power R (default: none applied)")
    p.add_argument("--continuum", default="filter", help="none | filter[:WIDTH_A] | cheb:N | cheb:N:free (default filter = 50 A)")
    p.add_argument("--segments", type=int,
                   help="number of segments (chips/arms) per spectrum (default: that of the first spectrum)")
    p.add_argument("--no-emulator-error", action="store_true", help="do not add the model's validation error to the noise")
    p.add_argument("--inflate", type=float, default=1.0, help="factor on all uncertainties (default 1)")


def _add_model_file_options(p):
    """How to read an npz ``--model`` (``fit`` and ``sample``)."""
    p.add_argument("--model-format", choices=["jaxpayne", "payne", "binspec"], help="format of an npz --model")
    p.add_argument("--model-labels", help="label names of an npz --model, comma-separated")
    p.add_argument("--model-wavelength", help="wavelength grid of an npz --model")
    p.add_argument("--model-units", help="label units of an npz --model, comma-separated")
    p.add_argument("--model-air", action="store_true", help="an npz --model's wavelengths are in air (default vacuum)")


def _model_kwargs(args) -> dict:
    """``forward_model_from_options`` arguments of :func:`_add_forward_options` (and ``--rv``),
    less the resolution, which ``crlb`` may take from a set-up."""
    return dict(
        rv=args.rv, max_rv=args.max_rv, vsini=args.vsini, vmacro=args.vmacro, max_vsini=args.max_vsini,
        max_vmacro=args.max_vmacro, limb_darkening=args.limb_darkening, continuum=args.continuum,
        **({"n_segments": args.segments} if args.segments else {}),
    )


def _forward_kwargs(args) -> dict:
    """Fitter / Sampler keyword arguments from the shared options."""
    return dict(
        **_model_kwargs(args), resolution=args.resolution, templates=args.templates, restarts=args.restarts,
        emulator_error=not args.no_emulator_error, inflation=args.inflate,
    )


def _report(source, message):
    """One warning line per bad input (file or spectrum), when met."""
    from tqdm.auto import tqdm

    line = message.splitlines()[0] if message else "failed"
    tqdm.write(f"jaxpayne: warning: {line if source in line else f'{source}: {line}'}", file=sys.stderr)


def _first_spectra(args, verb: str, **options):
    from itertools import chain

    from jaxpayne.io import iter_spectra

    if getattr(args, "air", False):
        options.setdefault("medium", "air")
    if args.manifest:
        from jaxpayne.io.manifest import iter_manifest

        if args.spectra:
            raise CLIError("give spectrum files or --manifest, not both")
        if any(getattr(args, k, None) for k in ("visits", "binary")):
            raise CLIError("--manifest does not combine with --visits or --binary yet")
        spectra = iter_manifest(args.stars, wavelength=args.wavelength, **options)
    elif not args.spectra:
        raise CLIError(f"no spectra to {verb}: give spectrum files or --manifest")
    else:
        spectra = iter_spectra(args.spectra, on_error="skip", wavelength=args.wavelength, **options)
    first = next(spectra, None)  # reads the first file only
    if first is None:
        raise CLIError(f"no spectra to {verb}")
    return chain([first], spectra)


def _add_fit(sub):
    p = sub.add_parser(
        "fit",
        help="fit spectra with a model; write a table of labels",
        description="Fit SPECTRUM files (FITS tables/images, APOGEE apStar/apVisit, GALAH CCDs, npz) "
        "and write one row per spectrum (labels, errors, covariance, chi2, flags) to --out.",
    )
    p.add_argument("spectra", nargs="*", metavar="SPECTRUM", help="spectrum files (or --manifest)")
    p.add_argument("--manifest", metavar="TABLE",
                   help="one row per star: id, files (';'-separated, joined into one multi-segment spectrum) and "
                   "optional fixed_<parameter> columns (e.g. fixed_rv, fixed_R); see docs/spectra_io.md")
    p.add_argument("--model", required=True, help="model file (.h5), or an npz network with --model-format")
    p.add_argument("--out", required=True, help="output table: .fits, .ecsv or .parquet; or a folder (DIR/): "
                   "partitioned Parquet, one file per --partition-size inputs, memory independent of the number "
                   "of spectra (docs/survey_scale.md)")
    _add_model_options(p)
    p.add_argument("--batch", type=int, default=64, help="spectra per compiled batch (default 64)")
    p.add_argument("--partition-size", type=int,
                   help="with --out DIR/: input files (or manifest stars) per partition file (default 1024)")
    p.add_argument("--dask", action="store_true",
                   help="fit the partitions on a local Dask cluster (--workers processes); needs --out DIR/")
    p.add_argument("--workers", type=int, help="with --dask: worker processes (default: one per CPU core)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="fit the partitions on a running Dask cluster (e.g. tcp://host:8786, or a dask-jobqueue "
                   "SLURM/PBS cluster's address); inputs and --out must be on a filesystem its workers share")
    p.add_argument("--error-floor", metavar="NAME=VALUE,...",
                   help="systematic error floors added in quadrature in the <name>_err_scaled columns, "
                   "e.g. teff=50,logg=0.1")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run: skip spectra already in --out")
    _add_binary_options(p, "fit a double-lined binary beside the single star", "Columns teff_1, teff_2, rv_1, "
                        "rv_2, q ..., chi2_single, delta_chi2, delta_bic")
    p.add_argument("--visits", choices=["constant", "per-visit", "orbit"],
                   help="fit each star's visits jointly, one row per star: labels shared, velocities constant, "
                   "per visit (rv_v0, rv_v1 ...; with --binary rv_1_v0, rv_2_v0 ...) or on an SB2 orbit "
                   "(gamma, q_dyn, rv_1_v0 ...; needs --binary). Every star must have the first star's "
                   "number of visits")
    p.add_argument("--visits-by", choices=["file", "object"], default="file",
                   help="with --visits: one file per star (binspec visit files; apStar files, whose visit "
                   "rows are in the rest frame, only with --visits constant), or spectra grouped by object "
                   "across files (apVisit files; default file)")
    _add_model_file_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar (without it a bar is shown only on a terminal, never in a log file)")
    p.set_defaults(func=_cmd_fit)


def _manifest_fixed(args) -> dict:
    """Read --manifest (into ``args.stars``); the fitter options its fixed_ columns need: those
    parameters held fixed (at the value that sets the margins, see
    :func:`~jaxpayne.io.manifest.manifest_fixed`; each star's own value is used in its fit), rv
    not fitted when it is one of them, and R made a (held) parameter for a fixed_R column."""
    from jaxpayne.io.manifest import manifest_fixed, read_manifest

    args.stars = read_manifest(args.manifest)
    fixed = manifest_fixed(args.stars)
    if not fixed:
        return {}
    options = {"fixed": fixed, **({"rv": False} if "rv" in fixed else {})}
    if "R" in fixed:  # a per-star resolving power: R a parameter of the fit, held at each star's
        if args.resolution:
            raise CLIError(f"{args.manifest}: give --resolution or a fixed_R column, not both")
        highest = max(star.fixed["R"] for star in args.stars)
        options.update(resolution=fixed["R"], fit_resolution=True, resolution_bounds=(fixed["R"], highest))
    return options


def _add_binary_options(p, what: str, output: str):
    p.add_argument("--binary", choices=["ratio", "physical", "tied"],
                   help=f"{what}: ratio = free flux ratio per segment; physical = light ratio from flux and radius "
                   f"networks; tied = also Teff2, logg2 from the mass ratio q (binspec). {output}")
    p.add_argument("--binary-networks", metavar="DIR",
                   help="folder with binspec's flux, radius and companion networks (NN_unnormalized_spectra.npz, "
                   "NN_radius.npz, NN_Teff2_logg2.npz; needed by --binary physical|tied)")
    p.add_argument("--rv-span", type=float,
                   help="half-width of the binary's two-velocity pre-search around the single-star rv, km/s "
                   "(default 60; 120 for the visits of --visits)")


def _binary_options(args) -> dict:
    """:func:`~jaxpayne.fitting.binary.binary_fitter` arguments of ``--binary`` (less the
    pre-search span's default, which depends on the run)."""
    if args.binary != "ratio" and not args.binary_networks:
        raise CLIError(f"--binary {args.binary} needs --binary-networks DIR (binspec's flux, radius and "
                       "companion networks)")
    return {"weights": args.binary, "networks": args.binary_networks if args.binary != "ratio" else None}


def _binary_for(args, model, options: dict, rv_span: float):
    """A :class:`~jaxpayne.fitting.binary.BinaryFitter` from the CLI options: ``--restarts`` and
    the other single-star options go to its single-star fit; the binary keeps its own starts."""
    from jaxpayne.fitting.binary import binary_fitter

    if not options.get("rv", True):
        raise CLIError("--binary fits both stars' radial velocities: drop --no-rv")
    return binary_fitter(model, **_binary_options(args), rv_span=rv_span if args.rv_span is None else args.rv_span,
                         **options)


def _binary_fitter(args, model, spectra):
    """The :class:`~jaxpayne.fitting.binary.BinaryFitter` of ``sample --binary`` (segments from
    the first spectrum unless given) and the spectra to fit."""
    from jaxpayne.fitting.binary import DEFAULT_RV_SPAN
    from jaxpayne.fitting.run import peek_spectrum

    options = _forward_kwargs(args)
    if "n_segments" not in options:
        first, spectra = peek_spectrum(spectra)
        options["n_segments"] = first.n_segments if first is not None else 1
    return _binary_for(args, model, options, DEFAULT_RV_SPAN), spectra


def _visit_fitter(args, model, spectra):
    """The :class:`~jaxpayne.fitting.visits.VisitFitter` of ``fit --visits`` (visits per star and
    segments from the first star) and the stars to fit."""
    from jaxpayne.fitting.run import group_visits, peek_spectrum
    from jaxpayne.fitting.visits import VISIT_RV_SPAN, VisitFitter

    if args.visits == "orbit" and not args.binary:
        raise CLIError("--visits orbit is an SB2 orbit: add --binary ratio|physical|tied")
    options = _forward_kwargs(args)
    if args.visits != "constant" and not options.get("rv", True):
        raise CLIError(f"--visits {args.visits} fits velocities: drop --no-rv")
    first, stars = peek_spectrum(group_visits(spectra, by=args.visits_by))
    if first is None:
        raise CLIError("no stars to fit")
    if len(first.spectra) < 2:
        raise CLIError(f"{first.source}: star {first.id!r} has one visit; --visits fits stars of several "
                       "(--visits-by object groups the visit files of one object)")
    options.setdefault("n_segments", first.n_segments)
    try:
        if args.binary:
            fitter = VisitFitter(model, len(first.spectra), velocities=args.visits,
                                 visit_fitter=_binary_for(args, model, options, VISIT_RV_SPAN))
        else:
            fitter = VisitFitter(model, len(first.spectra), velocities=args.visits, **options)
    except ValueError as err:
        raise CLIError(str(err)) from None
    return fitter, stars


def _cmd_fit(args) -> int:
    from jaxpayne.fitting import FitJob, fit_spectra
    from jaxpayne.fitting.survey import is_partitioned

    partitioned = is_partitioned(args.out)
    if (args.dask or args.scheduler) and not partitioned:
        raise CLIError(f"--dask writes a partitioned Parquet folder: give --out a folder (e.g. {Path(args.out).stem}/), "
                       f"not the table {args.out}")
    if args.visits:
        if partitioned:
            raise CLIError("--visits writes one table for now: give --out a .fits, .ecsv or .parquet file")
        model = _load_model_args(args, prefix="model_")
        spectra = _first_spectra(args, "fit", visits=True)
        fitter, spectra = _visit_fitter(args, model, spectra)
        table = fit_spectra(model, spectra, fitter=fitter, out=args.out, resume=args.resume, batch_size=args.batch,
                            progress=_progress(args), error_floor=_parse_floor(args.error_floor), report=_report)
        return _wrote_table(args, table)
    options = _forward_kwargs(args)
    if args.manifest:
        options.update(_manifest_fixed(args))
    binary = None
    if args.binary:
        if not options.get("rv", True):
            raise CLIError("--binary fits both stars' radial velocities: drop --no-rv")
        binary = dict(_binary_options(args), rv_span=args.rv_span)
    read = {"wavelength": args.wavelength, **({"medium": "air"} if args.air else {})}
    job = FitJob(args.model, model_options=_model_load_options(args, "model_"), fitter_options=options,
                 binary=binary, read_options=read, batch_size=args.batch, error_floor=_parse_floor(args.error_floor))
    if partitioned:
        return _fit_partitioned(args, job)
    model = _load_model_args(args, prefix="model_")  # a bad model file is the first error
    spectra = _first_spectra(args, "fit")
    if "n_segments" not in options:
        from jaxpayne.fitting.run import peek_spectrum

        first, spectra = peek_spectrum(spectra)
        job = dataclasses.replace(job, fitter_options={**options, "n_segments": first.n_segments if first else 1})
    model, fitter = job.build(model)
    table = fit_spectra(model, spectra, fitter=fitter, out=args.out, resume=args.resume, batch_size=args.batch,
                        progress=_progress(args), error_floor=dict(job.error_floor), report=_report)
    return _wrote_table(args, table)


def _wrote_table(args, table) -> int:
    n_bad = int(sum(1 for f in table["flags"] if f))
    print(f"wrote {len(table)} rows to {args.out} ({n_bad} flagged; flag bits in the table header)")
    return 0


def _fit_partitioned(args, job) -> int:
    """``fit --out DIR/``: :func:`~jaxpayne.fitting.fit_survey` here, or on Dask with ``--dask`` /
    ``--scheduler``."""
    from jaxpayne.fitting import fit_survey
    from jaxpayne.fitting.survey import PARTITION_SIZE

    inputs = args.stars if args.manifest else list(args.spectra)
    if not inputs:
        raise CLIError("no spectra to fit: give spectrum files or --manifest")
    with _dask_client(args) as client:
        result = fit_survey(job, inputs, args.out, partition_size=args.partition_size or PARTITION_SIZE, client=client,
                            resume=args.resume, progress=_progress(args), report=_report)
    done = f" ({result.n_skipped} finished before)" if result.n_skipped else ""
    print(f"wrote {result.n_rows} rows in {result.n_partitions} partitions{done} to {args.out} "
          f"({result.n_flagged} flagged; one table: pyarrow.parquet.read_table or jaxpayne.fitting.read_partitioned)")
    return 0


@contextlib.contextmanager
def _dask_client(args):
    """The Dask client of ``--scheduler ADDRESS`` or ``--dask [--workers N]`` (a local cluster of
    one-thread worker processes, closed at the end); None without either."""
    if not (args.dask or args.scheduler):
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise CLIError("--dask needs dask.distributed: pip install 'jaxpayne[dask]'") from None
    if args.scheduler:
        with Client(args.scheduler) as client:
            print(f"dask: {len(client.scheduler_info().get('workers', {}))} workers at {args.scheduler}",
                  file=sys.stderr)
            yield client
        return
    workers = args.workers or os.cpu_count() or 1
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        print(f"dask: local cluster of {workers} workers", file=sys.stderr)
        yield client


def _add_sample(sub):
    p = sub.add_parser(
        "sample",
        help="sample the posteriors of spectra (NUTS); write InferenceData and a summary table",
        description="Fit SPECTRUM files for a start, then draw posterior samples with NUTS (NumPyro), "
        "many stars in one compiled call; write ArviZ InferenceData (netCDF, --out) and a per-star "
        "summary (--summary).",
    )
    p.add_argument("spectra", nargs="*", metavar="SPECTRUM", help="spectrum files (or --manifest)")
    p.add_argument("--manifest", metavar="TABLE",
                   help="one row per star: id, files (';'-separated, joined into one multi-segment spectrum) and "
                   "optional fixed_<parameter> columns (e.g. fixed_rv, fixed_R); see docs/spectra_io.md")
    p.add_argument("--model", required=True, help="model file (.h5), or an npz network with --model-format")
    p.add_argument("--out", required=True, help="posterior samples: InferenceData netCDF (.nc)")
    p.add_argument("--summary", help="per-star summary table: .fits, .ecsv or .parquet")
    _add_model_options(p)
    p.add_argument("--chains", type=int, default=4, help="chains per star (default 4)")
    p.add_argument("--warmup", type=int, default=1000, help="warmup iterations per chain (default 1000)")
    p.add_argument("--samples", type=int, default=1000, help="draws kept per chain (default 1000)")
    p.add_argument("--prior", metavar="FILE.py:NAME",
                   help="prior: NAME in FILE.py is a jaxpayne Prior, a dict of NumPyro distributions, or a "
                   "joint log-density f(values) (default: uniform over the model's box)")
    p.add_argument("--max-tree-depth", type=int, default=8, help="cap of the NUTS tree depth (default 8)")
    p.add_argument("--target-accept", type=float, default=0.8, help="target acceptance probability (default 0.8)")
    p.add_argument("--chain-method", choices=["auto", "vectorized", "sequential", "parallel"], default="auto",
                   help="chains and stars in lockstep (vectorized: GPUs), one after another (sequential), or one "
                   "after another on each CPU core (parallel); auto (default) picks vectorized on a GPU/TPU, "
                   "parallel on a CPU")
    p.add_argument("--algorithm", choices=["NUTS", "HMC"], default="NUTS",
                   help="NUTS (default) or fixed-length HMC in the whitened coordinates (even lockstep)")
    p.add_argument("--trajectory-length", type=float, default=2.5,
                   help="integration time of --algorithm HMC, whitened units (default 2.5)")
    p.add_argument("--noise-scale", action="store_true", help="also sample a factor on every uncertainty")
    p.add_argument("--constraints", metavar="TABLE",
                   help="per-star measurements joined to the spectrum's likelihood: a table (.csv/.ecsv/.fits/.parquet) "
                   "with an id column matching the spectrum ids and any of numax, dnu [muHz] (scaling relations), "
                   "parallax [mas] with phot_g_mean_mag, phot_bp_mean_mag, phot_rp_mean_mag, j_m, h_m, ks_m (MIST "
                   "bolometric corrections; latent mass, distance, A_V), or a sampled label (teff, logg ...), each "
                   "with a <column>_err; empty cells are missing; see docs/joint_likelihoods.md")
    p.add_argument("--constraints-id", default="id", help="id column of --constraints (default id)")
    p.add_argument("--dnu-correction", type=float, metavar="SD",
                   help="with a dnu column: sample a correction factor of the Delta-nu scaling relation with prior "
                   "N(1, SD)")
    p.add_argument("--float64", action="store_true", help="sample in double precision")
    p.add_argument("--log-likelihood", action="store_true", help="store ln L of every draw (log_likelihood group)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch", type=int, default=16, help="spectra per compiled call (default 16)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run: keep the stars already sampled")
    _add_binary_options(p, "sample a double-lined binary, started from its binary fit",
                        "Variables teff_1, rv_1, rv_2, q ... and the derived teff_2, logg_2 (tied)")
    _add_model_file_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar (without it a bar is shown only on a terminal, never in a log file)")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args) -> int:
    with _double_precision(args.float64):
        return _sample(args)


def _sample(args) -> int:
    from jaxpayne.sampling import sample_spectra

    prior = _load_prior_arg(args)
    model = _load_model_args(args, prefix="model_")
    options = _forward_kwargs(args)
    if args.manifest:
        options.update(_manifest_fixed(args))
    spectra = _first_spectra(args, "sample")
    if args.binary:
        fitter, spectra = _binary_fitter(args, model, spectra)
        options = {"fitter": fitter}
    constraints, terms = _constraints(args, model)
    table = sample_spectra(
        model,
        spectra,
        out=args.out,
        summary=args.summary,
        resume=args.resume,
        batch_size=args.batch,
        progress=_progress(args),
        report=_report,
        log_likelihood=args.log_likelihood,
        prior=prior,
        chains=args.chains,
        warmup=args.warmup,
        samples=args.samples,
        max_tree_depth=args.max_tree_depth,
        target_accept=args.target_accept,
        chain_method=args.chain_method,
        noise_scale=args.noise_scale,
        algorithm=args.algorithm,
        trajectory_length=args.trajectory_length,
        dtype="float64" if args.float64 else "float32",
        seed=args.seed,
        terms=terms,
        constraints=constraints,
        **options,
    )
    from jaxpayne.fitting import Flags

    failed = int(sum(1 for f in table["flags"] if int(f) & int(Flags.FAILED)))
    flagged = int(sum(1 for f in table["flags"] if f)) - failed
    if constraints is not None:
        matched = sum(1 for i in table["id"] if str(i) in constraints)
        print(f"constraints applied to {matched} of {len(table)} stars"
              + ("" if matched else f" (no spectrum id matches the {args.constraints_id!r} column)"), file=sys.stderr)
    where = f"; summary of all in {args.summary}" if args.summary else ""
    print(f"wrote posteriors of {len(table) - failed} spectra to {args.out}{where} "
          f"({flagged} flagged, {failed} failed; flag bits in the summary header)")
    return 0


def _parse_assignments(text: str | None, option: str, nonnegative: bool = False) -> dict[str, float]:
    """``"teff=50,logg=0.1"`` → ``{"teff": 50.0, "logg": 0.1}`` (one-line CLIError otherwise)."""
    out = {}
    for part in filter(None, (text or "").split(",")):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip() or (nonnegative and out[name.strip()] < 0):
            rule = " with values >= 0" if nonnegative else ""
            raise CLIError(f"{option} expects NAME=VALUE,...{rule}, got {part!r}")
    return out


def _constraints(args, model):
    """``--constraints``: the per-star data (id → column → value) and the terms its columns call
    for (None, () without)."""
    if not args.constraints:
        if args.dnu_correction is not None:
            raise CLIError("--dnu-correction needs --constraints with a dnu column")
        return None, ()
    from jaxpayne.sampling.terms import read_constraints, terms_for_columns

    constraints = read_constraints(args.constraints, args.constraints_id)
    columns = set().union(*(row.keys() for row in constraints.values())) if constraints else set()
    parameters = [*model.label_names, "rv", *(["vsini"] if args.vsini else []), *(["vmacro"] if args.vmacro else [])]
    try:
        terms = terms_for_columns(columns, parameters, dnu_correction=args.dnu_correction)
    except ValueError as err:
        raise CLIError(f"{args.constraints}: {err}") from None
    if not terms:
        raise CLIError(f"{args.constraints}: no constraint columns (numax, dnu, parallax with magnitudes, or a label "
                       f"with its _err) among {', '.join(sorted(columns)) or 'its columns'}")
    names = ", ".join(f"{t.name} ({', '.join(t.observables)})" for t in terms)
    print(f"constraints of {len(constraints)} stars from {args.constraints}: {names}", file=sys.stderr)
    return constraints, terms


def _progress(args) -> bool | None:
    """Progress bars: none with ``--quiet``, else only when standard error is a terminal (a log
    file gets no carriage-return updates); see :func:`jaxpayne._progress.progress_bar`."""
    return False if args.quiet else None


def _parse_floor(text: str | None) -> dict[str, float]:
    """``--error-floor``: ``"teff=50,logg=0.1"`` → ``{"teff": 50.0, "logg": 0.1}``."""
    return _parse_assignments(text, "--error-floor", nonnegative=True)


def _parse_ranges(text: str) -> list[tuple[float, float]]:
    """``"15150-15800,15860-16430"`` → [(15150.0, 15800.0), (15860.0, 16430.0)]."""
    ranges = []
    for part in filter(None, text.split(",")):
        lo, sep, hi = part.partition("-")
        try:
            ranges.append((float(lo), float(hi)))
        except ValueError:
            sep = ""
        if not sep or not 0 < ranges[-1][0] < ranges[-1][1]:
            raise CLIError(f"--wavelength-range expects LO-HI[,LO-HI...] in Angstrom, got {part!r}")
    return ranges


#: Default Doppler margin [km/s] of ``crlb`` around the star's rv.
CRLB_RV_MARGIN = 20.0


def _add_crlb(sub):
    from jaxpayne.information import DEFAULT_SAMPLING, SETUPS

    p = sub.add_parser(
        "crlb",
        help="Cramér–Rao bounds: how precisely a spectrum can measure each label",
        description="Cramér–Rao bounds of every free parameter for a model, instrument and S/N "
        "(free nuisance parameters marginalised), from the Fisher matrix of the same likelihood "
        "fit and sample use. One row per parameter to --out; pixels ranked by information to "
        "--gradients; --plot draws the gradient spectra or precision versus R at fixed exposure.",
    )
    p.add_argument("--model", required=True, help="model file (.h5), or an npz network with --model-format")
    p.add_argument("--labels", metavar="NAME=VALUE,...",
                   help="the star (labels, and rv/vsini/vmacro/R); others take the box centre / start values")
    p.add_argument("--snr", type=float, required=True, help="signal-to-noise at the continuum")
    p.add_argument("--snr-per", choices=["pixel", "angstrom"], default="pixel", help="S/N per pixel (default) or per Angstrom")
    p.add_argument("--noise", choices=["continuum", "photon"], default="continuum",
                   help="sigma = 1/SNR at every pixel (default) or photon noise, sigma ~ sqrt(flux)")
    p.add_argument("--setup", choices=sorted(SETUPS), help="a survey-like resolution, coverage and pixel sampling")
    p.add_argument("--wavelength-range", metavar="LO-HI[,LO-HI...]",
                   help="coverage in Angstrom, one segment per range (default the setup's, or the model's range)")
    p.add_argument("--sampling", type=float, default=DEFAULT_SAMPLING,
                   help=f"pixels per resolution element with --resolution (default {DEFAULT_SAMPLING:g})")
    p.add_argument("--pixels", metavar="SPECTRUM", help="take the pixels and mask of this spectrum file instead")
    p.add_argument("--air", action="store_true", help="--wavelength-range is in air (default: the model's medium)")
    p.add_argument("--rv", dest="rv", action="store_true", default=False, help="rv is a free nuisance parameter")
    p.add_argument("--fit-resolution", action="store_true", help="R is a free nuisance parameter (needs --resolution)")
    _add_forward_options(p)
    p.add_argument("--prior", metavar="FILE.py:NAME", help="a prior whose curvature adds information (as for sample)")
    p.add_argument("--out", required=True, help="table of bounds: .fits, .ecsv, .csv or .parquet")
    p.add_argument("--gradients", metavar="TABLE", help="also write the pixels ranked by their share of each label's information")
    p.add_argument("--top", type=int, default=20, help="pixels per parameter in --gradients (default 20)")
    p.add_argument("--plot", metavar="FILE", help="draw a figure (.png/.pdf)")
    p.add_argument("--plot-kind", choices=["gradients", "resolution"], default="gradients",
                   help="gradient spectra (default) or bounds versus R at fixed exposure (S/N per Angstrom)")
    p.add_argument("--resolutions", metavar="R,...", help="resolving powers for --plot-kind resolution "
                   "(default 8 values from R/10 to 2R)")
    _add_model_file_options(p)
    p.set_defaults(func=_cmd_crlb, wavelength=None, max_rv=None)


@contextlib.contextmanager
def _double_precision(enable: bool = True):
    """JAX's 64-bit mode for one command, restored afterwards (``main`` may run in-process)."""
    import jax

    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", bool(enable) or before)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def _cmd_crlb(args) -> int:
    with _double_precision():  # one star: double precision costs nothing here
        return _crlb(args)


def _crlb(args) -> int:
    import numpy as np

    from jaxpayne.information import (SETUPS, bounds_table, covering_model, crlb, instrument_wavelength,
                                      mock_observation, pixel_snr, ranked_pixels)

    model = _load_model_args(args, prefix="model_")
    point = _parse_assignments(args.labels, "--labels")
    setup = SETUPS[args.setup] if args.setup else None
    resolution = args.resolution or (setup.resolution if setup else None)
    medium = "air" if args.air else (setup.medium if setup else None)
    if args.fit_resolution and resolution is None:
        raise CLIError("--fit-resolution needs --resolution or --setup")
    model_wave = np.asarray(model.wavelength, np.float64)
    segment = mask = None
    if args.pixels:
        from jaxpayne.io import read_spectrum

        spectrum = read_spectrum(args.pixels)[0]  # a file may hold several: the first one's pixels
        wave, segment, medium = np.asarray(spectrum.wavelength, np.float64), spectrum.segment, spectrum.medium
        mask = ~np.asarray(spectrum.good)
        ranges = [(float(wave.min()), float(wave.max()))]
    else:
        ranges = (_parse_ranges(args.wavelength_range) if args.wavelength_range
                  else list(setup.ranges) if setup else None)
        if setup and not args.wavelength_range and not args.resolution:
            wave, segment = setup.wavelength()
        elif resolution is not None:
            ranges = ranges or [(float(model_wave[0]), float(model_wave[-1]))]
            wave, segment = instrument_wavelength(ranges, resolution, sampling=args.sampling)
        else:  # no instrument: the emulator's own pixels
            keep = np.zeros(model_wave.shape, bool)
            for k, (lo, hi) in enumerate(ranges or [(model_wave[0], model_wave[-1])]):
                keep |= (model_wave >= lo) & (model_wave <= hi)
            wave = model_wave[keep]
            segment = None if not ranges else np.searchsorted([r[0] for r in ranges], wave, side="right") - 1
    if wave.size == 0:
        raise CLIError(f"no pixel of {ranges[0][0]:g}-{ranges[-1][1]:g} A lies in the model's wavelength range "
                       f"({model_wave[0]:g}-{model_wave[-1]:g} A)")
    n_segments = args.segments or (int(np.max(segment)) + 1 if segment is not None else 1)
    if args.rv and "rv" not in point:
        point["rv"] = 0.0
    # the bound is local: a free rv needs only a small Doppler margin around the star's own
    max_rv = args.max_rv if args.max_rv is not None else abs(point.get("rv", 0.0)) + CRLB_RV_MARGIN
    options = {**_model_kwargs(args), "max_rv": max_rv, "n_segments": n_segments}
    fm, covered = covering_model(model, wave, medium=medium, resolution=resolution,
                                 fit_resolution=args.fit_resolution, **options)
    fm.pack(point)  # unknown or fixed names: one error line before anything else is said
    if mask is not None:
        covered &= ~mask
        if not np.any(covered):
            raise CLIError(f"{args.pixels}: no unmasked pixel lies in the range the model covers")
    if not np.all(covered):
        print(f"jaxpayne: note: {int((~covered).sum())} of {wave.size} pixels lie outside what the model "
              "covers (or are masked) and are left out", file=sys.stderr)
    wave = wave[covered]
    segment = None if segment is None else np.asarray(segment)[covered]
    settings = _likelihood_settings(args)
    prior = _load_prior_arg(args)
    obs = mock_observation(fm, point, wave, args.snr, per=args.snr_per, noise=args.noise, segment=segment,
                           medium=medium, dtype=np.float64)
    bounds = crlb(fm, point, obs, settings=settings, prior=prior)
    snr_pixel = pixel_snr(wave, args.snr, args.snr_per, segment)
    meta = {"MODEL": str(args.model), "SNR": args.snr, "SNRPER": args.snr_per, "NOISE": args.noise,
            "RESOLVE": resolution if resolution is not None else "none", "WRANGE": f"{wave.min():.2f}-{wave.max():.2f}",
            "SNRPIX": float(np.median(snr_pixel)), "CONTINUU": args.continuum,
            "PRIOR": args.prior or "uniform", "SETUP": setup.name if setup else ""}
    table = bounds_table(bounds, meta)
    from jaxpayne.fitting.run import write_table

    write_table(table, args.out)
    if args.gradients:
        write_table(ranked_pixels(bounds, top=args.top), args.gradients)
    print(f"Cramér–Rao bounds at S/N {args.snr:g} per {args.snr_per}, R = {resolution or 'model'}, "
          f"{bounds.n_pixels} pixels {wave.min():.1f}-{wave.max():.1f} A:")
    for j, name in enumerate(bounds.names):
        unit = f" {bounds.units[j]}" if bounds.units[j] else ""
        sigma = f"{bounds.sigma[j]:.4g}{unit}" if bounds.status[j] == "ok" else bounds.status[j]
        print(f"  {name:>12s} = {bounds.values[j]:<10.5g} sigma {sigma:<18s} "
              f"(all others known: {bounds.sigma_conditional[j]:.3g})")
    if args.plot:
        ranges = ranges or [(float(wave.min()), float(wave.max()))]
        _crlb_plot(args, model, bounds, point, resolution, ranges, options, settings, prior, medium)
    print(f"wrote {args.out}" + (f", {args.gradients}" if args.gradients else "")
          + (f", {args.plot}" if args.plot else ""))
    return 0


def _likelihood_settings(args):
    from jaxpayne.forward import LikelihoodSettings

    if not args.inflate > 0:
        raise CLIError("--inflate must be > 0")
    return LikelihoodSettings(emulator_error=not args.no_emulator_error, inflation=args.inflate)


def _load_prior_arg(args):
    if not args.prior:
        return None
    from jaxpayne.sampling import load_prior

    return load_prior(args.prior)


def _crlb_plot(args, model, bounds, point, resolution, ranges, options, settings, prior, medium):
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from jaxpayne.plotting import plot_gradient_spectra, plot_precision_vs_resolution

    if args.plot_kind == "gradients":
        fig = plot_gradient_spectra(bounds, title=f"gradient spectra, S/N {args.snr:g} per {args.snr_per}")
    else:
        if resolution is None and not args.resolutions:
            raise CLIError("--plot-kind resolution needs --resolution, --setup or --resolutions")
        values = ([float(v) for v in args.resolutions.split(",")] if args.resolutions
                  else np.geomspace(resolution / 10, 2 * resolution, 8))
        from jaxpayne.information import crlb_vs_resolution

        per_angstrom = args.snr if args.snr_per == "angstrom" else None
        if per_angstrom is None:  # hold the exposure: the S/N per Angstrom of the pixels at R
            per_angstrom = float(np.median(args.snr / np.sqrt(np.gradient(bounds.wavelength))))
        curves = crlb_vs_resolution(model, point, values, ranges=ranges, snr=per_angstrom, per="angstrom",
                                    sampling=args.sampling, medium=medium, noise=args.noise, settings=settings,
                                    prior=prior, dtype=np.float64, **options)
        fig = plot_precision_vs_resolution(values, curves, title=f"fixed exposure: S/N {per_angstrom:.3g} per A")
    fig.savefig(args.plot, dpi=120)


def _add_demo(sub):
    p = sub.add_parser(
        "demo",
        help="the whole job on built-in mock spectra: train an emulator, fit mock observations",
        description="Make a mock training grid, train an emulator, simulate observed spectra "
        "(Doppler shift, R=22,500 LSF, noise), fit them, and compare with the truth. No downloads.",
    )
    p.add_argument("--out", default="jaxpayne-demo", help="folder for the model and the results (default ./jaxpayne-demo)")
    p.add_argument("--n-train", type=int, default=800, help="training spectra (default 800)")
    p.add_argument("--n-stars", type=int, default=24, help="mock observed stars to fit (default 24)")
    p.add_argument("--epochs", type=int, default=1500, help="training epochs (default 1500)")
    p.add_argument("--snr", type=float, default=100.0, help="signal-to-noise per pixel (default 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--draws", type=int, default=500, help="NUTS warm-up steps and draws per chain of the posterior (default 500)")
    p.add_argument("--no-figures", action="store_true", help="write no figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar (without it a bar is shown only on a terminal, never in a log file)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    import importlib.util

    from jaxpayne.demo import run_demo

    if importlib.util.find_spec("matplotlib") is not None:
        import matplotlib

        matplotlib.use("Agg")  # the demo writes its figures to files; it never opens a window

    run_demo(Path(args.out), n_train=args.n_train, n_stars=args.n_stars, epochs=args.epochs, snr=args.snr,
             seed=args.seed, progress=_progress(args), draws=args.draws, figures=not args.no_figures)
    return 0


_SUBCOMMANDS = [_add_demo, _add_train, _add_info, _add_convert, _add_fit, _add_sample, _add_crlb]


def _one_device_per_core() -> None:
    """Give JAX one CPU host device per core, so that ``sample`` runs its chains in parallel
    (``chain_method="parallel"``: 4 chains of one APOGEE star, 75 → 49 s on 2 cores) and ``fit``
    splits its batches over the cores (2048 binspec spectra 13.2 → 10.4 s; see
    ``benchmarks/README.md``). Left alone when ``XLA_FLAGS`` already sets a device count; no
    effect on GPUs and TPUs, nor once JAX's CPU backend has started."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import numpyro

    numpyro.set_host_device_count(os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sample" or (args.command == "fit" and not (args.dask or args.scheduler)):
        _one_device_per_core()  # (Dask workers are one process per core instead)
    from jaxpayne.compilation_cache import enable

    enable()  # a second run with the same model and shapes compiles nothing (opt out: JAXPAYNE_COMPILATION_CACHE=0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("jaxpayne: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, OSError, KeyError, FloatingPointError) as err:
        if os.environ.get("JAXPAYNE_DEBUG"):
            raise
        message = str(err) if not isinstance(err, KeyError) else str(err.args[0])
        if isinstance(err, FileNotFoundError) and err.filename and str(err.filename) not in message:
            message = f"{err.filename}: {err.strerror}"
        print(f"jaxpayne: error: {message.splitlines()[0] if message else type(err).__name__}", file=sys.stderr)
        return 2
    except Exception as err:  # anything unforeseen: still one line (JAXPAYNE_DEBUG=1 for the traceback)
        if os.environ.get("JAXPAYNE_DEBUG"):
            raise
        text = str(err).splitlines()[0] if str(err) else ""
        print(f"jaxpayne: error: internal error {type(err).__name__}: {text} (set JAXPAYNE_DEBUG=1 for details)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
