"""The model spectrum: emulator → broadened, Doppler-shifted flux on the observed pixels.

Pure functions of a :class:`~jaxpayne.forward.ForwardModel` (a pytree whose leaves are the
emulator's weights), the named parameter values and an :class:`~jaxpayne.forward.Observation`:

1. :func:`emulator_flux` — the emulator on its own grid, with the forward model's weights;
2. :func:`working_spectrum` — onto the log-uniform working grid (ramp-padded per piece), one FFT
   per piece times the rotational, macroturbulent and constant-R Gaussian transfer functions
   (and the cubic B-spline prefilter), inverse FFT;
3. :func:`grid_positions` — each observed pixel's rest-frame position
   :math:`\\ln\\lambda_{obs} - \\operatorname{artanh}(v/c)` on that grid;
4. :func:`model_spectrum` — the spline (or per-pixel Gaussian LSF) evaluated there, and the
   emulator's own error resampled the same way: a :class:`ModelSpectrum`.

No continuum is applied here (see :mod:`~jaxpayne.forward.likelihood`), so model spectra can be
combined — e.g. two stars summed with light ratios — before the one continuum step.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpayne.forward.broadening import broadening_transfer
from jaxpayne.forward.doppler import SPEED_OF_LIGHT
from jaxpayne.forward.observation import Observation
from jaxpayne.forward.resample import gaussian_window_at, spline_at

__all__ = [
    "ModelSpectrum",
    "emulator_flux",
    "grid_positions",
    "model_spectrum",
    "usable_pixels",
    "working_spectrum",
]


class ModelSpectrum(NamedTuple):
    """A model spectrum on the observed pixels, before any continuum treatment (a pytree).

    Attributes:
        flux: (n,) model flux in the emulator's units.
        sigma: (n,) the emulator's own rms error resampled to the pixels, or None.
    """

    flux: jax.Array
    sigma: jax.Array | None = None


def emulator_flux(fm, values: Mapping[str, jax.Array], dtype=None) -> jax.Array:
    """Emulator flux (n_emulator_pixels,) for the labels in ``values`` (traceable).

    The forward model's :attr:`~jaxpayne.forward.ForwardModel.weights` (a pytree leaf, so
    ``jax.grad`` with respect to them works) are passed to the emulator's pure ``apply``; an
    emulator without weights is called through its ``predict``.
    """
    labels = jnp.stack([jnp.asarray(values[n]) for n in fm.label_names])
    dtype = dtype or labels.dtype
    labels = labels.astype(dtype)
    if fm.weights is not None:
        flux = fm.emulator.apply(fm.weights, labels)
    else:
        flux = fm.emulator.predict(labels)
    return jnp.asarray(flux).astype(dtype).reshape(-1)


def _to_working_grid(fm, flux):
    """Emulator flux (n_pix,) → ramp-padded working-grid pieces (n_pieces, N).

    When the nodes are the emulator's own pixels this is slicing (XLA gathers are slow on CPUs,
    above all for the Jacobian's tangents); otherwise the fixed interpolation weights.
    """
    dtype = flux.dtype
    grid = fm.grid
    if fm.piece_slices is None:
        index, weight = grid.gather_index, grid.gather_weight
        # one gather per tap (XLA's CPU gather with a trailing tap axis is ~20x slower)
        return sum(flux[jnp.asarray(index[..., k])] * jnp.asarray(weight[..., k], dtype)
                   for k in range(index.shape[-1]))
    rows = []
    for first, count, ramp in fm.piece_slices:
        tail = ((1.0 - ramp.astype(dtype)) * flux[first + count - 1]
                + ramp.astype(dtype) * flux[first])
        rows.append(jnp.concatenate([flux[first : first + count], tail]))
    return jnp.stack(rows)


def working_spectrum(fm, values: Mapping[str, jax.Array], dtype=None, *, spline: bool = True):
    """The broadened rest-frame spectrum on the working grid, flat (n_pieces · N,) (traceable).

    Args:
        fm: the forward model.
        values: every parameter by name (labels, ``vsini``, ``vmacro``, ``R`` where modelled).
        dtype: float dtype of the computation (default that of the labels).
        spline: return cubic B-spline coefficients (for :func:`model_spectrum`'s spline
            evaluation) instead of samples.

    Returns:
        (n_pieces · N,) flat array, piece p at ``[p·N, (p+1)·N)``.
    """
    flux = emulator_flux(fm, values, dtype)
    dtype = flux.dtype
    padded = _to_working_grid(fm, flux)  # (n_pieces, N)
    frequency = jnp.asarray(fm.grid.frequency(), dtype)
    transfer = broadening_transfer(
        frequency,
        vsini=values.get("vsini") if fm.rotation else None,
        vmacro=values.get("vmacro") if fm.macroturbulence else None,
        resolution=(values.get("R", fm.resolution) if fm.resolution is not None else None),
        limb_darkening=fm.limb_darkening,
    )
    if spline:
        transfer = transfer * jnp.asarray(fm.prefilter, dtype)
    spectrum = jnp.fft.rfft(padded, axis=-1) * transfer
    out = jnp.fft.irfft(spectrum, n=fm.grid.fft_length, axis=-1).astype(dtype)
    return out.reshape(-1)


def grid_positions(fm, wavelength, rv, dtype=None, wavelength_lo=None):
    """Anchor index and offset [nodes] of each pixel's rest-frame position on the working grid.

    The position is :math:`(\\ln\\lambda - \\ln\\lambda_a)/\\Delta - \\operatorname{artanh}(v/c)/\\Delta`
    relative to the pixel's anchor node a, computed as ``log1p`` of a small difference so that
    float32 keeps ~1e-4 node precision.

    Args:
        fm: the forward model.
        wavelength: (n,) observed wavelengths [Å, model medium].
        rv: radial velocity [km/s] (scalar), > 0 receding.
        dtype: float dtype (default that of ``wavelength``).
        wavelength_lo: optional (n,) remainder λ − float(λ) of a float64 wavelength stored in
            ``dtype`` (see :attr:`Observation.wavelength_lo`), restoring float64 accuracy.

    Returns:
        (which, offset): (n,) int32 anchor indices and (n,) offsets [nodes] from the anchors.
    """
    grid = fm.grid
    wavelength = jnp.asarray(wavelength)
    dtype = dtype or wavelength.dtype
    wavelength = wavelength.astype(dtype)
    anchor_lambda = np.exp(grid.anchor_log).astype(dtype)
    correction = (np.log(anchor_lambda.astype(np.float64)) - grid.anchor_log) / grid.log_step
    edges = jnp.asarray(grid.anchor_edges, dtype)
    which = jnp.clip(jnp.searchsorted(edges, wavelength, side="right") - 1, 0, edges.size - 1)
    reference = jnp.asarray(anchor_lambda)[which]
    difference = wavelength - reference
    if wavelength_lo is not None:
        difference = difference + jnp.asarray(wavelength_lo).astype(dtype)
    offset = (
        jnp.log1p(difference / reference) / grid.log_step
        + jnp.asarray(correction, dtype)[which]
        - jnp.arctanh(jnp.asarray(rv, dtype) / SPEED_OF_LIGHT) / grid.log_step
    )
    return which, offset


def model_spectrum(fm, values: Mapping[str, jax.Array], obs: Observation, *,
                   emulator_error: bool = False) -> ModelSpectrum:
    """Broadened, Doppler-shifted model resampled onto the observed pixels (traceable).

    Args:
        fm: the forward model (a pytree: jit/grad with respect to its weights).
        values: every parameter by name, physical units (see
            :meth:`~jaxpayne.forward.ParameterSpace.unflatten`).
        obs: the observation (``wavelength``, ``wavelength_lo`` and ``lsf_sigma`` are used;
            masked pixels get a finite value).
        emulator_error: also resample the emulator's own rms error (static); requires an
            emulator with ``emulator_error``.

    Returns:
        A :class:`ModelSpectrum` (sigma None unless ``emulator_error``).

    Raises:
        ValueError: for ``emulator_error=True`` with an emulator that has none.
    """
    dtype = jnp.result_type(*(jnp.asarray(v).dtype for v in values.values()),
                            jnp.asarray(obs.flux).dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.float32
    grid = fm.grid
    wavelength = jnp.asarray(obs.wavelength).astype(dtype)
    which, offset = grid_positions(fm, wavelength, values["rv"], dtype,
                                   getattr(obs, "wavelength_lo", None))
    base = jnp.asarray(grid.anchor_flat)[which]
    lower = jnp.asarray(grid.spline_lower, dtype)[which]
    upper = jnp.asarray(grid.spline_upper, dtype)[which]
    if fm.lsf is None:
        coefficients = working_spectrum(fm, values, dtype, spline=True)
        flux = spline_at(coefficients, base, offset, lower, upper)
    else:
        samples = working_spectrum(fm, values, dtype, spline=False)
        sigma = obs.lsf_sigma if obs.lsf_sigma is not None else fm.lsf(wavelength)
        sigma_nodes = jnp.asarray(sigma, dtype) / wavelength / grid.log_step
        flux = gaussian_window_at(
            samples, base, jnp.clip(offset, lower, upper), sigma_nodes, fm.lsf_window,
            jnp.asarray(grid.piece_first)[which], jnp.asarray(grid.piece_last)[which],
        )
    error = None
    if emulator_error:
        if fm.error_coefficients is None:
            raise ValueError("emulator_error=True but the emulator has no emulator_error")
        error = spline_at(jnp.asarray(fm.error_coefficients, dtype), base, offset, lower, upper)
    return ModelSpectrum(flux, error)


def usable_pixels(fm, wavelength, rv_lower, rv_upper) -> jax.Array:
    """Pixels the model covers for every radial velocity in [rv_lower, rv_upper] (traceable).

    A pixel is usable when its rest-frame wavelength λ·D(−v), for each v in the range, lies in a
    piece of the working grid at least the broadening kernel's half-width (and the spline taps)
    inside the emulator's range.

    Args:
        fm: the forward model.
        wavelength: (n,) observed wavelengths [Å, model medium].
        rv_lower, rv_upper: velocity range [km/s] (scalars, traced allowed).

    Returns:
        (n,) bool.
    """
    wavelength = jnp.asarray(wavelength)
    dtype = wavelength.dtype
    log_wave = jnp.log(wavelength)
    low_rest = log_wave - jnp.arctanh(jnp.asarray(rv_upper, dtype) / SPEED_OF_LIGHT)
    high_rest = log_wave - jnp.arctanh(jnp.asarray(rv_lower, dtype) / SPEED_OF_LIGHT)
    ok = jnp.zeros(wavelength.shape, bool)
    for lo, hi in np.log(fm.rest_ranges):
        ok = ok | ((low_rest >= lo) & (high_rest <= hi))
    return ok
