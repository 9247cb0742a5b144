"""Peak memory and time of training on an HDF5 set read into memory vs streamed from disk.

Writes (once) a synthetic training set of N spectra x P pixels (Gaussian absorption lines whose
positions, widths and depths follow three labels) to an HDF5 file, then trains an ``mlp`` on it
for a few epochs, either read into memory or streamed block by block, and prints the training
time and the process's peak resident memory. Run each mode in its own process:

    python benchmarks/bench_stream_training.py /tmp/big.h5 --n 40000 --mode memory
    python benchmarks/bench_stream_training.py /tmp/big.h5 --n 40000 --mode stream
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np


def write(path: Path, n: int, n_pix: int, seed: int = 0, chunk: int = 128) -> None:
    import h5py

    rng = np.random.default_rng(seed)
    labels = rng.uniform([4000.0, 1.0, -1.0], [6000.0, 5.0, 0.5], (n, 3))
    wave = np.linspace(15100.0, 17000.0, n_pix)
    centres = np.linspace(15150.0, 16950.0, 60)
    x = (labels - [5000.0, 3.0, -0.25]) / [577.0, 1.15, 0.43]
    with h5py.File(path, "w") as f:
        f["wavelength"] = wave
        f["labels"] = labels
        flux = f.create_dataset("flux", (n, n_pix), dtype="f4", chunks=(min(chunk, n), n_pix))
        f.attrs["label_names"] = ["teff", "logg", "feh"]
        for a in range(0, n, chunk):
            xb = x[a : a + chunk]
            shift = 0.5 * xb[:, :1, None]
            width = 0.6 + 0.1 * xb[:, 1:2, None]
            depth = 0.3 * (1.0 + 0.3 * xb[:, 2:3, None])
            lines = depth * np.exp(-0.5 * ((wave[None, None] - centres[None, :, None] - shift) / width) ** 2)
            flux[a : a + chunk] = (1.0 - lines.sum(axis=1)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="HDF5 file (written when missing)")
    parser.add_argument("--n", type=int, default=40_000, help="spectra (default 40000)")
    parser.add_argument("--pixels", type=int, default=7214, help="pixels (default 7214)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--mode", choices=["memory", "stream"], required=True)
    args = parser.parse_args()
    if not args.path.exists():  # write it in its own run: the peak memory below is per process
        t = time.perf_counter()
        write(args.path, args.n, args.pixels)
        print(f"wrote {args.path} ({args.path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.1f} s")

    from jaxpayne.grids import read_training_set
    from jaxpayne.training import train_emulator

    t = time.perf_counter()
    ts = read_training_set(args.path, stream=args.mode == "stream")
    result = train_emulator(ts, epochs=args.epochs, emulator="mlp", hidden=(300, 300), batch_size=64,
                            progress=False)
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    s = result.model.validation["summary"]
    print(f"{args.mode}: {ts.n_spectra} spectra x {ts.n_pixels} pixels, {args.epochs} epochs: "
          f"read + train {wall:.1f} s (training {result.seconds:.1f} s), peak RSS {peak:.2f} GiB, "
          f"validation rms {s['rms']:.3e}")


if __name__ == "__main__":
    main()
