"""Emulator accuracy on real Korg/MARCS spectra: The Payne's MLP against a residual MLP.

Trains on 90 % of the 1000 Korg spectra in ``korg_marcs_5000`` (5000–5010 Å, 500 pixels, labels
Teff, logg, [Fe/H]) and reports, on the 10 % never seen in training, the rms and median |Δf| —
the reference: a published Flax MLP distributed with these spectra reproduces all 1000 (its own
training data) with rms 1.3e-3; target rms ≤ 1.5e-3 on unseen spectra in ≤ 10 min on 2 CPU cores.

    python benchmarks/bench_emulator.py [--epochs 4000] [--archs mlp,resmlp]
"""

from __future__ import annotations

import argparse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4000)
    parser.add_argument("--archs", default="mlp,resmlp")
    parser.add_argument("--n-train", type=int, default=None, help="use only this many spectra (smoke runs)")
    args = parser.parse_args()

    import jax

    from jaxpayne.datasets import data_file
    from jaxpayne.grids import read_training_set
    from jaxpayne.training import TrainingConfig, train_emulator

    grid = read_training_set(data_file("korg_marcs_5000"))
    if args.n_train:
        grid = grid.subset(slice(0, args.n_train))
    train, val = grid.split(0.1, seed=0)
    print(f"device {jax.devices()[0].device_kind}; {train.n_spectra} training / {val.n_spectra} held-out spectra, "
          f"{grid.n_pixels} pixels")
    configs = {
        "mlp": TrainingConfig(emulator="mlp", hidden=(300, 300), epochs=args.epochs, batch_size=64, patience=None),
        "resmlp": TrainingConfig(emulator="resmlp", width=256, n_blocks=2, epochs=args.epochs, batch_size=64,
                                 patience=None),
        "resmlp-wide": TrainingConfig(emulator="resmlp", width=512, n_blocks=2, epochs=args.epochs, batch_size=64,
                                      patience=None),
        "resmlp-lr3": TrainingConfig(emulator="resmlp", width=256, n_blocks=2, epochs=args.epochs, batch_size=64,
                                     learning_rate=3e-3, patience=None),
    }
    print(f"{'emulator':<12s}{'weights':>9s}{'epochs':>8s}{'train s':>9s}{'val rms':>10s}{'interior':>10s}"
          f"{'edge':>10s}{'n_edge':>7s}{'median|df|':>12s}{'p99|df|':>10s}")
    for arch in args.archs.split(","):
        result = train_emulator(train, configs[arch], validation=val, progress=False)
        s = result.model.validation["summary"]
        print(f"{arch:<12s}{result.model.n_parameters:9d}{args.epochs:8d}{result.seconds:9.1f}{s['rms']:10.2e}"
              f"{s['rms_interior']:10.2e}{s['rms_edge']:10.2e}{s['n_edge']:7d}{s['median_abs']:12.2e}"
              f"{s['p99_abs']:10.2e}", flush=True)
    print("reference: published Flax MLP, rms 1.3e-3 on its own training spectra")


if __name__ == "__main__":
    main()
