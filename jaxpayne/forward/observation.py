"""One observed spectrum as a pytree of arrays, and helpers to build and batch them.

Conventions: wavelengths are in Å **in the emulator's medium** (vacuum or air; convert with
:func:`make_observation` or :meth:`ForwardModel.observation
<jaxpayne.forward.model.ForwardModel.observation>`), in the observer's frame (not shifted to rest;
the forward model applies the radial velocity). A pixel with ``ivar == 0`` is masked: it carries
no weight anywhere, and its flux may be anything (NaN included — it is ignored). Spectra of
different lengths are batched by padding with masked pixels (:func:`pad_observations`).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxpayne.forward.grid import DEFAULT_GAP_FACTOR, find_gaps
from jaxpayne.forward.media import convert_medium

__all__ = ["Observation", "make_observation", "pad_observations", "segments_from_gaps"]


class Observation(NamedTuple):
    """One observed spectrum (a pytree: jit/vmap-able; batch by stacking every field).

    Attributes:
        wavelength: (n,) observed-frame wavelength [Å] in the *model's* medium.
        flux: (n,) flux (any units; normalised or not, matching the continuum treatment).
        ivar: (n,) inverse variance [flux⁻²]; 0 = masked or padding pixel.
        segment: (n,) int32 segment index 0..n_segments−1 (detector chip / spectrograph arm);
            continuum normalisation never mixes segments.
        lsf_sigma: optional (n,) Gaussian LSF σ [Å] per pixel, overriding the forward model's
            default per-pixel LSF (used only by a forward model built with ``lsf_sigma``).
        wavelength_lo: optional (n,) remainder λ − λ_stored [Å] of the float64 wavelengths when
            ``wavelength`` is stored in float32 (float32 alone rounds λ by up to 3e-8 relative,
            0.009 km/s; the forward model adds the remainder back when it forms positions).
    """

    wavelength: jax.Array
    flux: jax.Array
    ivar: jax.Array
    segment: jax.Array
    lsf_sigma: jax.Array | None = None
    wavelength_lo: jax.Array | None = None


def segments_from_gaps(wavelength, gap_factor: float = DEFAULT_GAP_FACTOR) -> np.ndarray:
    """Segment index of each pixel, starting a new segment at every gap in the wavelengths.

    Args:
        wavelength: (n,) sorted wavelengths [Å].
        gap_factor: a step larger than this times the local median step is a gap.

    Returns:
        numpy int32 (n,) segment indices 0, 1, ...
    """
    wavelength = np.asarray(wavelength, dtype=np.float64)
    segment = np.zeros(wavelength.shape, dtype=np.int32)
    for cut in find_gaps(wavelength, gap_factor):
        segment[cut + 1 :] += 1
    return segment


def make_observation(
    wavelength,
    flux,
    ivar=None,
    segment=None,
    *,
    error=None,
    medium: str = "vacuum",
    model_medium: str = "vacuum",
    lsf_sigma=None,
) -> Observation:
    """Build an :class:`Observation` from numpy-like arrays (eager; not for use under jit).

    Non-finite flux, non-finite or negative ivar (or error ≤ 0) mark a pixel as masked
    (ivar = 0, flux = 0).

    Args:
        wavelength: (n,) wavelengths [Å] in medium ``medium``.
        flux: (n,) flux.
        ivar: (n,) inverse variance; alternatively give ``error``. Default 1 for finite pixels.
        segment: (n,) int segment indices, ``"gaps"`` to split at wavelength gaps
            (:func:`segments_from_gaps`), or None for a single segment.
        error: (n,) 1σ uncertainty, used when ``ivar`` is None.
        medium: medium of ``wavelength``: ``"vacuum"`` or ``"air"``.
        model_medium: medium of the emulator; wavelengths are converted to it.
        lsf_sigma: optional (n,) per-pixel Gaussian LSF σ [Å].

    Returns:
        An :class:`Observation` of JAX arrays (default float dtype; int32 segments).

    Raises:
        ValueError: for arrays of mismatched shape.
    """
    wavelength = np.asarray(wavelength, dtype=np.float64).reshape(-1)
    flux = np.asarray(flux, dtype=np.float64).reshape(-1)
    n = wavelength.size
    if ivar is None:
        if error is None:
            ivar = np.ones(n)
        else:
            error = np.asarray(error, dtype=np.float64).reshape(-1)
            with np.errstate(divide="ignore", invalid="ignore"):
                ivar = np.where(np.isfinite(error) & (error > 0), 1.0 / error**2, 0.0)
    ivar = np.asarray(ivar, dtype=np.float64).reshape(-1)
    if isinstance(segment, str):
        if segment != "gaps":
            raise ValueError(f"segment must be an array, None or 'gaps', got {segment!r}")
        segment = segments_from_gaps(wavelength)
    segment = np.zeros(n, np.int32) if segment is None else np.asarray(segment).reshape(-1)
    shapes = {"wavelength": n, "flux": flux.size, "ivar": ivar.size, "segment": segment.size}
    if lsf_sigma is not None:
        lsf_sigma = np.broadcast_to(np.asarray(lsf_sigma, dtype=np.float64), (n,)).copy()
    if len(set(shapes.values())) != 1:
        raise ValueError(f"observation arrays must have equal lengths, got {shapes}")
    good = np.isfinite(flux) & np.isfinite(ivar) & (ivar > 0) & np.isfinite(wavelength)
    wavelength = convert_medium(wavelength, medium, model_medium)
    stored = jnp.asarray(wavelength)
    remainder = None
    if stored.dtype != np.float64:  # keep what the float32 wavelengths round away (on the host)
        remainder = jnp.asarray(wavelength - np.asarray(stored, dtype=np.float64), stored.dtype)
    return Observation(
        wavelength=stored,
        wavelength_lo=remainder,
        flux=jnp.asarray(np.where(good, flux, 0.0)),
        ivar=jnp.asarray(np.where(good, ivar, 0.0)),
        segment=jnp.asarray(segment.astype(np.int32)),
        lsf_sigma=None if lsf_sigma is None else jnp.asarray(lsf_sigma),
    )


def pad_observations(observations: Sequence[Observation], length: int | None = None) -> Observation:
    """Stack observations of different lengths into one batched :class:`Observation`.

    Each spectrum is padded at its end with masked pixels (ivar = 0, flux = 0) that repeat its
    last wavelength, segment and LSF width, so they stay inside the modelled range.

    Args:
        observations: sequence of single (1-D) observations.
        length: common length (default the longest).

    Returns:
        Observation whose fields have shape (n_observations, length).

    Raises:
        ValueError: if ``length`` is shorter than a spectrum, or only some carry ``lsf_sigma``.
    """
    observations = list(observations)
    if not observations:
        raise ValueError("no observations to pad")
    sizes = [int(np.shape(o.wavelength)[0]) for o in observations]
    length = max(sizes) if length is None else int(length)
    if length < max(sizes):
        raise ValueError(f"length {length} is shorter than the longest spectrum ({max(sizes)})")
    has_lsf = {o.lsf_sigma is not None for o in observations}
    if len(has_lsf) > 1:
        raise ValueError("either all or none of the observations must carry lsf_sigma")
    has_lo = {getattr(o, "wavelength_lo", None) is not None for o in observations}

    def pad(x, fill=None):
        x = jnp.asarray(x)
        extra = length - x.shape[0]
        tail = jnp.full((extra,), x[-1] if fill is None else fill, dtype=x.dtype)
        return jnp.concatenate([x, tail])

    return Observation(
        wavelength=jnp.stack([pad(o.wavelength) for o in observations]),
        flux=jnp.stack([pad(o.flux, 0) for o in observations]),
        ivar=jnp.stack([pad(o.ivar, 0) for o in observations]),
        segment=jnp.stack([pad(jnp.asarray(o.segment, jnp.int32)) for o in observations]),
        lsf_sigma=(
            jnp.stack([pad(o.lsf_sigma) for o in observations]) if True in has_lsf else None
        ),
        wavelength_lo=(
            jnp.stack([pad(o.wavelength_lo, 0) if o.wavelength_lo is not None
                       else jnp.zeros(length, jnp.asarray(o.wavelength).dtype)
                       for o in observations]) if True in has_lo else None
        ),
    )
