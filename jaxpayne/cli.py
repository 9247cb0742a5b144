"""The ``jaxpayne`` command line.

Subcommands::

    jaxpayne demo                      # train + fit on built-in mock spectra, no downloads
    jaxpayne train GRID --out MODEL    # train an emulator on a training set
    jaxpayne info MODEL                # labels, bounds, wavelengths, architecture, validation error
    jaxpayne convert NN.npz --format payne|binspec --labels A,B --wavelength W --out MODEL
    jaxpayne fit --model MODEL SPECTRUM... --out TABLE
    jaxpayne sample --model MODEL SPECTRUM... --out POST.nc [--summary TABLE] [--prior FILE.py:NAME]

Errors in the input are reported as one line ``jaxpayne: error: <file>: <problem>`` with exit
status 2; no Python traceback (set ``JAXPAYNE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import argparse
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
    p = sub.add_parser(
        "train",
        help="train an emulator on a training set",
        description="Train an emulator on GRID (.npz, .h5, .fits or a directory of .npy files).",
    )
    p.add_argument("grid", help="training set: .npz, .h5, .fits, or a directory with parameters.npy etc.")
    p.add_argument("--out", required=True, help="model file to write (.h5)")
    p.add_argument("--labels", help="label names, comma-separated (if the file does not name them)")
    p.add_argument("--emulator", default="mlp", choices=["mlp", "resmlp", "perpixel"], help="architecture (default mlp, The Payne's)")
    p.add_argument("--hidden", type=_int_list, default=[300, 300], help="mlp hidden widths (default 300,300)")
    p.add_argument("--width", type=int, default=256, help="resmlp width (default 256)")
    p.add_argument("--blocks", type=int, default=2, help="resmlp residual blocks (default 2)")
    p.add_argument("--activation", help="hidden activation (default leaky_relu / silu / sigmoid by emulator)")
    p.add_argument("--epochs", type=int, default=2000, help="maximum epochs (default 2000)")
    p.add_argument("--batch-size", type=int, default=128, help="minibatch size (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--loss", choices=["l1", "l2"], default="l2", help="loss (default l2)")
    p.add_argument("--patience", type=int, default=500, help="early-stopping patience in epochs (default 500; 0 = off)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--air", action="store_true", help="the grid's wavelengths are in air (default vacuum)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from jaxpayne.grids import read_training_set
    from jaxpayne.training import TrainingConfig, train_emulator

    ts = read_training_set(args.grid, label_names=args.labels, medium="air" if args.air else None)
    config = TrainingConfig(
        emulator=args.emulator,
        hidden=tuple(args.hidden),
        width=args.width,
        n_blocks=args.blocks,
        activation=args.activation,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        loss=args.loss,
        patience=args.patience or None,
        val_fraction=args.val_fraction,
        seed=args.seed,
    )
    print(f"training {args.emulator} on {ts.n_spectra} spectra x {ts.n_pixels} pixels, labels {list(ts.label_names)}")
    result = train_emulator(ts, config, progress=not args.quiet)
    out = result.model.save(args.out)
    s = result.model.validation["summary"]
    print(
        f"best epoch {result.best_epoch} of {len(result.history['epoch'])} in {result.seconds:.1f} s; "
        f"validation rms {s['rms']:.3e}, median |df| {s['median_abs']:.3e}, p99 |df| {s['p99_abs']:.3e}"
    )
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

    def opt(name):
        return getattr(args, prefix + name, None)

    kwargs = {}
    if opt("labels") or opt("wavelength") or opt("format") in ("payne", "binspec"):
        kwargs = dict(label_names=opt("labels"), wavelength=opt("wavelength"), units=opt("units"),
                      medium="air" if opt("air") else "vacuum")
    return load_model(args.model, format=opt("format"), **kwargs)


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
    p.add_argument("--rv", dest="rv", action="store_true", default=True, help="fit the radial velocity (default)")
    p.add_argument("--no-rv", dest="rv", action="store_false", help="hold rv at 0 (rest-frame spectra)")
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
    p.add_argument("--templates", type=int, default=128,
                   help="model spectra in the rv/label pre-search library (default 128)")
    p.add_argument("--restarts", type=int, default=1,
                   help="optimiser starts from the best-matching templates, best kept (default 1)")
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


def _forward_kwargs(args) -> dict:
    """Fitter / Sampler keyword arguments from the shared options."""
    return dict(
        rv=args.rv, max_rv=args.max_rv, vsini=args.vsini, vmacro=args.vmacro, max_vsini=args.max_vsini,
        max_vmacro=args.max_vmacro, limb_darkening=args.limb_darkening, resolution=args.resolution,
        continuum=args.continuum, templates=args.templates, restarts=args.restarts,
        **({"n_segments": args.segments} if args.segments else {}),
        emulator_error=not args.no_emulator_error, inflation=args.inflate,
    )


def _report(source, message):
    """One warning line per bad input (file or spectrum), when met."""
    from tqdm.auto import tqdm

    line = message.splitlines()[0] if message else "failed"
    tqdm.write(f"jaxpayne: warning: {line if source in line else f'{source}: {line}'}", file=sys.stderr)


def _first_spectra(args, verb: str):
    from itertools import chain

    from jaxpayne.io import iter_spectra

    spectra = iter_spectra(args.spectra, on_error="skip", wavelength=args.wavelength)
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
    p.add_argument("spectra", nargs="+", metavar="SPECTRUM", help="spectrum files")
    p.add_argument("--model", required=True, help="model file (.h5), or an npz network with --model-format")
    p.add_argument("--out", required=True, help="output table: .fits, .ecsv or .parquet")
    _add_model_options(p)
    p.add_argument("--batch", type=int, default=64, help="spectra per compiled batch (default 64)")
    p.add_argument("--error-floor", metavar="NAME=VALUE,...",
                   help="systematic error floors added in quadrature in the <name>_err_scaled columns, "
                   "e.g. teff=50,logg=0.1")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run: skip spectra already in --out")
    _add_model_file_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fit)


def _cmd_fit(args) -> int:
    from jaxpayne.fitting import fit_spectra

    model = _load_model_args(args, prefix="model_")
    table = fit_spectra(
        model,
        _first_spectra(args, "fit"),
        out=args.out,
        resume=args.resume,
        batch_size=args.batch,
        progress=not args.quiet,
        error_floor=_parse_floor(args.error_floor),
        report=_report,
        **_forward_kwargs(args),
    )
    n_bad = int(sum(1 for f in table["flags"] if f))
    print(f"wrote {len(table)} rows to {args.out} ({n_bad} flagged; flag bits in the table header)")
    return 0


def _add_sample(sub):
    p = sub.add_parser(
        "sample",
        help="sample the posteriors of spectra (NUTS); write InferenceData and a summary table",
        description="Fit SPECTRUM files for a start, then draw posterior samples with NUTS (NumPyro), "
        "many stars in one compiled call; write ArviZ InferenceData (netCDF, --out) and a per-star "
        "summary (--summary).",
    )
    p.add_argument("spectra", nargs="+", metavar="SPECTRUM", help="spectrum files")
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
    p.add_argument("--chain-method", choices=["auto", "vectorized", "sequential"], default="auto",
                   help="chains and stars in lockstep (vectorized: GPUs) or one after another (sequential); "
                   "auto (default) picks vectorized on a GPU/TPU, sequential on a CPU")
    p.add_argument("--algorithm", choices=["NUTS", "HMC"], default="NUTS",
                   help="NUTS (default) or fixed-length HMC in the whitened coordinates (even lockstep)")
    p.add_argument("--trajectory-length", type=float, default=2.5,
                   help="integration time of --algorithm HMC, whitened units (default 2.5)")
    p.add_argument("--noise-scale", action="store_true", help="also sample a factor on every uncertainty")
    p.add_argument("--float64", action="store_true", help="sample in double precision")
    p.add_argument("--log-likelihood", action="store_true", help="store ln L of every draw (log_likelihood group)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--batch", type=int, default=16, help="spectra per compiled call (default 16)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run: keep the stars already sampled")
    _add_model_file_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_sample)


def _cmd_sample(args) -> int:
    if args.float64:
        import jax

        jax.config.update("jax_enable_x64", True)
    from jaxpayne.sampling import load_prior, sample_spectra

    prior = load_prior(args.prior) if args.prior else None
    model = _load_model_args(args, prefix="model_")
    table = sample_spectra(
        model,
        _first_spectra(args, "sample"),
        out=args.out,
        summary=args.summary,
        resume=args.resume,
        batch_size=args.batch,
        progress=not args.quiet,
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
        **_forward_kwargs(args),
    )
    from jaxpayne.fitting import Flags

    failed = int(sum(1 for f in table["flags"] if int(f) & int(Flags.FAILED)))
    flagged = int(sum(1 for f in table["flags"] if f)) - failed
    where = f"; summary of all in {args.summary}" if args.summary else ""
    print(f"wrote posteriors of {len(table) - failed} spectra to {args.out}{where} "
          f"({flagged} flagged, {failed} failed; flag bits in the summary header)")
    return 0


def _parse_floor(text: str | None) -> dict[str, float]:
    """``"teff=50,logg=0.1"`` → ``{"teff": 50.0, "logg": 0.1}``."""
    floor = {}
    for part in filter(None, (text or "").split(",")):
        name, sep, value = part.partition("=")
        try:
            floor[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or floor[name.strip()] < 0:
            raise CLIError(f"--error-floor expects NAME=VALUE,... with values >= 0, got {part!r}")
    return floor


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
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from jaxpayne.demo import run_demo

    run_demo(Path(args.out), n_train=args.n_train, n_stars=args.n_stars, epochs=args.epochs, snr=args.snr,
             seed=args.seed, progress=not args.quiet)
    return 0


_SUBCOMMANDS = [_add_demo, _add_train, _add_info, _add_convert, _add_fit, _add_sample]


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
