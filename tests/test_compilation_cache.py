"""The persistent compilation cache: where it goes, the opt-out, and a second process reusing it."""

import json
import os
import subprocess
import sys

SCRIPT = """
import json, time, jax, jax.numpy as jnp
from jaxpayne.compilation_cache import enable
events = []
jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
folder = enable(min_compile_seconds=0.0)
f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + jnp.linalg.inv(x @ x.T + 3 * jnp.eye(x.shape[0])))
t = time.perf_counter(); f(jnp.ones((64, 64))).block_until_ready(); seconds = time.perf_counter() - t
print(json.dumps({"folder": None if folder is None else str(folder), "seconds": seconds,
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "dir": jax.config.jax_compilation_cache_dir}))
"""


def run(env):
    # the test session's fast unoptimised compiles would leave little for the cache to save
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("JAXPAYNE_", "JAX_COMPILATION", "JAX_DISABLE_MOST_OPTIMIZATIONS"))}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env={**clean, "JAX_PLATFORMS": "cpu", **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cache_location_reuse_and_opt_out(tmp_path):
    folder = tmp_path / "xla"
    first = run({"JAXPAYNE_CACHE_DIR": str(folder)})
    assert first["folder"] == str(folder) and first["dir"] == str(folder)
    assert any(folder.iterdir())  # the compiled program is on disk
    second = run({"JAXPAYNE_CACHE_DIR": str(folder)})
    # read back, not compiled again (JAX's own cache-hit event; a timing comparison of one small
    # compile is noise on a busy machine)
    assert first["hits"] == 0 and second["hits"] >= 1
    default = run({"XDG_CACHE_HOME": str(tmp_path / "home")})
    assert default["folder"] == str(tmp_path / "home" / "jaxpayne" / "xla")
    off = run({"JAXPAYNE_CACHE_DIR": str(tmp_path / "never"), "JAXPAYNE_COMPILATION_CACHE": "0"})
    assert off["folder"] is None and not off["dir"] and not (tmp_path / "never").exists()
    chosen = run({"JAX_COMPILATION_CACHE_DIR": str(tmp_path / "theirs"), "JAXPAYNE_CACHE_DIR": str(folder)})
    assert chosen["folder"] == str(tmp_path / "theirs")  # the user's own JAX setting wins
