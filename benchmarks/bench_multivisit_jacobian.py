"""What a Jacobian of a stitched multi-visit spectrum costs, and why the code does what it does.

Two measurements on binspec's networks and the three real visits of 2M06133561+2433362 (tied
binary, orbit velocities, cheb:4 on 3 chips per visit → 9 segments, 21,642 pixels, 12
parameters), compiled, median of 5 calls:

1. the marginalised Chebyshev continuum's forward-mode Jacobian with respect to the model flux
   direction (12 tangents), solved as one dense (n, S·K) design (the one-block case of
   :func:`~jaxpayne.forward.chebyshev_continuum`) against the block-diagonal
   :class:`~jaxpayne.forward.SegmentedDesign` the likelihood uses;
2. ``jax.jacfwd`` of the whitened residuals of the multi-visit model with the visits evaluated
   by ``jax.lax.map`` (what :meth:`~jaxpayne.forward.MultiVisitModel.spectrum` does) against
   ``jax.vmap``, next to one visit of the composite alone.

    python benchmarks/bench_multivisit_jacobian.py
"""

from __future__ import annotations

import time

import numpy as np

import jaxpayne
from jaxpayne.datasets import data_file


def _median_seconds(fn, *args, repeats: int = 5) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    import jax
    import jax.numpy as jnp

    from jaxpayne.forward import (
        CompositeModel,
        ForwardModel,
        MultiVisitModel,
        chebyshev_basis,
        chebyshev_continuum,
        prepare_data,
        residuals,
    )
    from jaxpayne.forward.likelihood import DEFAULT_SETTINGS
    from jaxpayne.payne_format import load_binspec_networks

    folder = data_file("binspec_apogee")
    model = jaxpayne.load_model(folder / "NN_normalized_spectra.npz", label_names="teff,logg,feh,mg_fe,vmacro",
                                wavelength=folder / "apogee_wavelength.npz")
    nets = load_binspec_networks(folder, model.label_names)
    fm = ForwardModel(model, rotation=False, macroturbulence=False, continuum="cheb:4", n_segments=3, max_rv=200.0)
    cm = CompositeModel(fm, weights="tied", **nets)
    mv = MultiVisitModel(cm, 3, velocities="orbit")
    wave = np.asarray(model.wavelength)
    with np.load(folder / "spectra_visit_2M06133561+2433362.npz") as data:
        visits = [fm.observation(wave, f, error=np.where(e < 0.1, e, np.inf), segment="gaps", outside="mask")
                  for f, e in zip(data["spectra"], data["spec_errs"])]
    obs = mv.stitch(visits)
    n_par = mv.n_params

    # 1. the continuum solve
    design = chebyshev_basis(obs.wavelength, obs.segment, obs.ivar, n_segments=mv.n_segments, degree=4)
    dense = design.dense()
    model_flux = jnp.asarray(mv.model_flux(mv.initial, obs))
    directions = jnp.asarray(np.random.default_rng(0).normal(size=(n_par, model_flux.size)), model_flux.dtype)

    def tangents(d):
        return jax.jit(jax.vmap(lambda t: jax.jvp(lambda m: chebyshev_continuum(m, obs.flux, obs.ivar, d).continuum,
                                                  (model_flux,), (t,))[1]))

    t_dense = _median_seconds(tangents(dense), directions)
    t_block = _median_seconds(tangents(design), directions)
    print(f"continuum Jacobian ({model_flux.size} pixels, {mv.n_segments} segments x 5 terms, {n_par} tangents): "
          f"dense {t_dense * 1e3:.1f} ms, block-diagonal {t_block * 1e3:.1f} ms ({t_dense / t_block:.1f}x)")

    # 2. the visits: lax.map (the code) against vmap
    theta = jnp.asarray(mv.initial, jnp.float32)
    data = prepare_data(mv, obs, jnp.float32)
    mapped = jax.jit(jax.jacfwd(lambda t: residuals(mv, t, obs, None, DEFAULT_SETTINGS, data)))
    t_map = _median_seconds(mapped, theta)

    class VmappedVisits(MultiVisitModel):
        def spectrum(self, values, obs, *, emulator_error=False):
            per_visit, batch = self.visit_values(values), self.unstitch(obs)
            out = jax.vmap(lambda v, o: self.base.spectrum(v, o, emulator_error=emulator_error))(per_visit, batch)
            return jax.tree_util.tree_map(lambda x: jnp.reshape(x, (-1,)), out)

    vm = jax.tree_util.register_pytree_node_class(VmappedVisits)(cm, 3, velocities="orbit")
    vmapped = jax.jit(jax.jacfwd(lambda t: residuals(vm, t, obs, None, DEFAULT_SETTINGS, data)))
    t_vmap = _median_seconds(vmapped, theta)
    one_data = prepare_data(cm, visits[0], jnp.float32)
    one = jax.jit(jax.jacfwd(lambda t: residuals(cm, t, visits[0], None, DEFAULT_SETTINGS, one_data)))
    t_one = _median_seconds(one, jnp.asarray(cm.initial, jnp.float32))
    print(f"residual Jacobian, 3 visits, {n_par} parameters: lax.map {t_map * 1e3:.0f} ms, vmap {t_vmap * 1e3:.0f} ms "
          f"({t_vmap / t_map:.1f}x slower); one visit of the composite ({cm.n_params} parameters) {t_one * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
