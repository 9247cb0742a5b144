"""Several devices: the sampler's chains split over two CPU host devices give the draws one
device gives (the test session has one device, so this runs in a subprocess with two)."""

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
import numpyro
numpyro.set_host_device_count(2)
import jax
import numpy as np
sys.path.insert(0, sys.argv[1])
from _sampling_setup import OPTIONS, batch_of, make_emulator, simulate
from jaxpayne.fitting import Fitter
from jaxpayne.sampling import Sampler

assert jax.local_device_count() == 2
emulator = make_emulator()
fitter = Fitter(emulator, **OPTIONS)
out = {"auto": Sampler(emulator, fitter=fitter).chain_method}
draws = {}
for method in ("sequential", "parallel"):
    # 1 star x 3 chains: an odd grid, padded to split over the two devices
    sampler = Sampler(emulator, chains=3, warmup=30, samples=20, chain_method=method, fitter=fitter)
    spectra = simulate(sampler.forward, np.array([[5400.0, 3.1, -0.4, 12.0]]), seed=3)
    idata = sampler.sample(batch_of(sampler, spectra), progress=False)
    draws[method] = np.stack([idata.posterior[n].values for n in sampler.space.free_names])
out["max_diff"] = float(np.max(np.abs(draws["sequential"] - draws["parallel"])))
out["scale"] = float(np.max(np.abs(draws["sequential"])))
out["shape"] = list(draws["parallel"].shape)
print(json.dumps(out))
"""


def test_parallel_chains_over_two_devices_equal_one_device():
    env = dict(os.environ, XLA_FLAGS="")  # the session's one-device flag must not reach the child
    here = str(Path(__file__).resolve().parent)
    run = subprocess.run([sys.executable, "-c", SCRIPT, here], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["auto"] == "parallel"  # a CPU with several devices runs the chains in parallel
    assert out["shape"] == [4, 3, 20, 1]  # parameters, chains, draws, star
    assert out["max_diff"] <= 1e-4 * out["scale"], out


FIT_SCRIPT = r"""
import json, sys
import jax
import numpy as np
sys.path.insert(0, sys.argv[1])
from _sampling_setup import OPTIONS, make_emulator, simulate
from jaxpayne.fitting import Fitter, fit_spectra

emulator = make_emulator()
fitter = Fitter(emulator, **OPTIONS)
lo, hi = emulator.bounds
rng = np.random.default_rng(0)
truth = np.column_stack([lo + (hi - lo) * rng.uniform(0.2, 0.8, (21, 3)), rng.uniform(-30, 30, 21)])
table = fit_spectra(emulator, simulate(fitter.forward, truth, seed=1), fitter=fitter, batch_size=8, progress=False)
names = list(fitter.param_names)
print(json.dumps({"devices": jax.local_device_count(), "theta": np.array([table[n] for n in names]).tolist(),
                  "flags": [int(f) for f in table["flags"]]}))
"""


def _fit_rows(n_devices: int) -> dict:
    flags = f"--xla_force_host_platform_device_count={n_devices}" if n_devices > 1 else ""
    env = dict(os.environ, XLA_FLAGS=flags)
    here = str(Path(__file__).resolve().parent)
    run = subprocess.run([sys.executable, "-c", FIT_SCRIPT, here], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_fit_batches_sharded_over_two_devices_give_the_same_rows():
    """The fitter splits each batch over the local devices (jax.sharding); 21 spectra in batches
    of 8 (the last padded) give the rows one device gives."""
    import numpy as np

    one, two = _fit_rows(1), _fit_rows(2)
    assert one["devices"] == 1 and two["devices"] == 2
    np.testing.assert_allclose(np.array(two["theta"]), np.array(one["theta"]), rtol=1e-5, atol=1e-4)
    assert one["flags"] == two["flags"]
