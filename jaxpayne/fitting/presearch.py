"""Template pre-search: radial velocity by cross-correlation and a start from a template library.

Before Levenberg–Marquardt starts, every spectrum is compared with a library of K model spectra
(the box centre and scrambled Sobol points of the label box, broadened with the forward model's
start values) on the forward model's log-uniform working grid:

1. the pseudo-continuum-normalised data ``d`` and weights ``w`` (50 Å ivar-weighted filter,
   :func:`~jaxpayne.forward.smooth_continuum`) are deposited onto the working grid at their
   rest-frame positions with the four cubic B-spline weights (the adjoint of evaluating a cubic
   spline there, so the template is interpolated as accurately as in the forward model);
2. the χ² against template T (its spline coefficients c, and those of T²) at a shift of s nodes,
   :math:`\\chi^2(s) = \\sum w d^2 - 2\\sum_j (wd)_j c_{j-s} + \\sum_j w_j c^{(2)}_{j-s}`, is two
   cross-correlations, computed for all shifts at once by FFT (Tonry & Davis 1979, AJ 84, 1511,
   with χ² weights instead of a normalised correlation);
3. with the data deposited at the best (parabola-refined) shift of the box-centre template, all K
   templates are scored with two dot products each (one matrix product for the whole batch);
4. the best few are cross-correlated again, each minimum refined by a parabola through three
   shifts, and the lowest χ² wins: its labels and velocity are the optimiser's start.

This costs a few FFTs per spectrum whatever the velocity range, and replaces a χ² scan through
the full forward model. The library does not depend on the spectra: it is built once per
:class:`~jaxpayne.fitting.Fitter`. Its accuracy (a pixel's fraction in rv, the nearest library
point in labels) only needs to put the optimiser in the right basin.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpayne.forward.continuum import DEFAULT_FILTER_WIDTH, smooth_continuum
from jaxpayne.forward.doppler import SPEED_OF_LIGHT
from jaxpayne.forward.resample import bspline_prefilter, cubic_bspline_weights

__all__ = ["TemplateLibrary", "build_library", "presearch"]

#: Upper limit on the library's memory [bytes] (templates and their squares, float32).
LIBRARY_MEMORY = 256 * 2**20
#: Templates evaluated at once while the library is built.
BUILD_CHUNK = 16
#: Best-scoring templates whose velocity is refined before the final choice.
CANDIDATES = 2


class TemplateLibrary(NamedTuple):
    """Model spectra the pre-search compares every spectrum with (a pytree of arrays).

    Attributes:
        u: (K, n) parameters of the templates in the fitter's working coordinates (row 0: the box
            centre).
        spectra: (K, n_pieces, N) cubic B-spline coefficients of the continuum-normalised
            templates on the working grid.
        squares: (K, n_pieces, N) B-spline coefficients of their squares.
    """

    u: jax.Array
    spectra: jax.Array
    squares: jax.Array


def build_library(forward, theta: np.ndarray, u: np.ndarray, dtype=np.float32) -> TemplateLibrary:
    """Evaluate and normalise the templates (eager; once per fitter).

    Args:
        forward: the :class:`~jaxpayne.forward.ForwardModel`.
        theta: (K, n) template parameters, physical units.
        u: (K, n) the same in the fitter's working coordinates.
        dtype: float dtype of the library.

    Returns:
        The :class:`TemplateLibrary`.
    """
    import scipy.ndimage

    grid = forward.grid
    width = forward.continuum.width if forward.continuum.kind == "filter" else DEFAULT_FILTER_WIDTH
    prefilter = bspline_prefilter(grid.fft_length)
    # w = exp(−Δλ²/L²) is a Gaussian of σ = L/√2, here in working-grid nodes at each piece's centre
    sigmas = [width / math.sqrt(2.0) / (math.exp(grid.starts[p] + 0.5 * grid.log_step * grid.lengths[p])
                                        * grid.log_step) for p in range(grid.n_pieces)]

    @jax.jit
    @jax.vmap
    def samples(t):
        return forward._broadened(forward.parameters(t), jnp.float32, spline=False)

    def coefficients(x):
        return np.fft.irfft(np.fft.rfft(x, axis=-1) * prefilter, n=grid.fft_length, axis=-1)

    spectra = np.empty((theta.shape[0], grid.n_pieces, grid.fft_length), dtype)
    squares = np.empty_like(spectra)
    for start in range(0, theta.shape[0], BUILD_CHUNK):  # bounded host and device memory
        part = np.asarray(samples(jnp.asarray(theta[start : start + BUILD_CHUNK], jnp.float32)), np.float64)
        part = part.reshape(-1, grid.n_pieces, grid.fft_length)
        for p, sigma in enumerate(sigmas):
            # the padded piece is periodic (ramp padding), hence mode "wrap"
            smooth = scipy.ndimage.gaussian_filter1d(part[:, p], sigma, axis=-1, mode="wrap", truncate=5.0)
            part[:, p] = part[:, p] / np.where(np.abs(smooth) > 0, smooth, 1.0)
        part = np.nan_to_num(part, nan=0.0, posinf=0.0, neginf=0.0)
        spectra[start : start + BUILD_CHUNK] = coefficients(part)
        squares[start : start + BUILD_CHUNK] = coefficients(part**2)
    return TemplateLibrary(jnp.asarray(u, dtype), jnp.asarray(spectra), jnp.asarray(squares))


def library_size(requested: int, n_nodes: int) -> int:
    """Templates that fit in :data:`LIBRARY_MEMORY` (at least 1, at most ``requested``)."""
    per_template = 2 * 4 * n_nodes
    return max(1, min(int(requested), LIBRARY_MEMORY // per_template))


def _correlate(deposit_ft, template, template_square, n: int):
    """χ² − Σwd² for every circular shift: −2 corr(wd, T) + corr(w, T²), summed over pieces."""
    t_ft = jnp.fft.rfft(template, axis=-1)
    s_ft = jnp.fft.rfft(template_square, axis=-1)
    cross = jnp.fft.irfft(deposit_ft[0] * jnp.conj(t_ft), n=n, axis=-1)
    power = jnp.fft.irfft(deposit_ft[1] * jnp.conj(s_ft), n=n, axis=-1)
    return jnp.sum(power - 2.0 * cross, axis=0)


def presearch(forward, library: TemplateLibrary, obs, *, fit_rv: bool, rv_index: int | None,
              rv_to_u, n_best: int = 1, prepared: dict | None = None):
    """Radial velocity and label start(s) of one spectrum (pure; vmap over spectra).

    Args:
        forward: the :class:`~jaxpayne.forward.ForwardModel`.
        library: the :class:`TemplateLibrary` (not batched).
        obs: one :class:`~jaxpayne.forward.Observation`.
        fit_rv: search the velocity (else the shift is 0 or the fixed rv).
        rv_index: column of rv in the working coordinates (None when rv is fixed).
        rv_to_u: function rv [km/s] → working coordinate of rv.
        n_best: number of starts returned (the best templates, best first).
        prepared: the forward model's data side (:meth:`~jaxpayne.forward.ForwardModel._prepare`),
            computed here when not given; its running mean of the data is used when it has one.

    Returns:
        (n_best, n) starts in working coordinates, and the (n_best,) pre-search χ² of each.
    """
    grid = forward.grid
    n_pieces, n = grid.n_pieces, grid.fft_length
    dtype = library.spectra.dtype

    if prepared is None:
        prepared = forward._prepare(obs, dtype)
    valid = prepared["valid"]
    ivar, flux, wavelength = (prepared[key].astype(dtype) for key in ("ivar", "data", "wavelength"))
    smooth = prepared.get("smooth_data")
    if smooth is None:  # another continuum treatment: the filter of the default width
        smooth = smooth_continuum(flux, ivar, wavelength, prepared["segment"], width=DEFAULT_FILTER_WIDTH,
                                  n_segments=forward.n_segments, wavelength_range=forward._filter_range())
    smooth = smooth.astype(dtype)
    smooth = jnp.where(valid & (jnp.abs(smooth) > 0), smooth, 1.0)
    data = flux / smooth
    weight = ivar * smooth**2

    # rest-frame positions on the working grid and the cubic B-spline deposit there
    fixed_rv = forward.fixed.get("rv", 0.0) if not fit_rv else 0.0
    which, offset = forward._positions(wavelength, jnp.asarray(0.0, dtype), dtype)
    lower = jnp.asarray(grid.spline_lower, dtype)[which]
    upper = jnp.asarray(grid.spline_upper, dtype)[which]
    base = jnp.asarray(grid.anchor_flat)[which]  # integer part kept apart: float32 precision
    offset = jnp.clip(offset, lower, upper)
    values = jnp.stack([weight * data, weight])  # (2, n_pix)
    last = n_pieces * n - 1

    def deposit_at(shift):
        """Σ_i v_i T(p_i − shift) = Σ_j D_j T_j: the data deposited at their shifted positions."""
        where = offset - shift
        whole = jnp.floor(where)
        taps = cubic_bspline_weights(where - whole)  # (n_pix, 4): nodes p−1 … p+2
        # pixels the model can reach stay inside their piece; clipping guards the others
        first = jnp.clip(base + whole.astype(jnp.int32) - 1, 0, last - 3)
        grid_values = jnp.zeros((2, n_pieces * n), dtype)
        for k in range(4):
            grid_values = grid_values.at[:, first + k].add(values * taps[:, k])
        return grid_values.reshape(2, n_pieces, n)

    deposit = deposit_at(jnp.zeros((), dtype))
    constant = jnp.sum(weight * data * data)

    max_shift = int(math.floor(math.atanh(forward.max_rv / SPEED_OF_LIGHT) / grid.log_step))
    max_shift = min(max_shift, n // 2 - 2)
    shifts = jnp.arange(-max_shift, max_shift + 1)

    deposit_ft = jnp.fft.rfft(deposit, axis=-1) if fit_rv else None

    def best_shift(template, template_square):
        curve = _correlate(deposit_ft, template, template_square, n)
        along = curve[shifts % n]
        k = jnp.argmin(jnp.where(jnp.isfinite(along), along, jnp.inf))
        k = jnp.clip(k, 1, shifts.size - 2)
        left, mid, right = along[k - 1], along[k], along[k + 1]
        curvature = left - 2.0 * mid + right
        positive = curvature > 0
        step = jnp.where(positive, 0.5 * (left - right) / jnp.where(positive, curvature, 1.0), 0.0)
        return shifts[k].astype(dtype) + jnp.clip(step, -0.5, 0.5)

    if fit_rv:
        shift = best_shift(library.spectra[0], library.squares[0])
        shifted = deposit_at(shift)
    else:
        shift = math.atanh(fixed_rv / SPEED_OF_LIGHT) / grid.log_step
        shifted = deposit_at(jnp.asarray(shift, dtype)) if shift else deposit
    # score every template at that (fractional) shift
    chi2 = (constant - 2.0 * jnp.einsum("pn,kpn->k", shifted[0], library.spectra)
            + jnp.einsum("pn,kpn->k", shifted[1], library.squares))
    chi2 = jnp.where(jnp.isfinite(chi2), chi2, jnp.inf)
    if not fit_rv:
        order = jnp.argsort(chi2)[:n_best]
        return library.u[order], chi2[order]
    # the best few, each at its own best velocity (a template unlike the star can pull the first
    # velocity off by a fraction of a node, enough to favour a wrong neighbour)
    n_candidates = min(max(CANDIDATES, n_best), chi2.shape[0])
    candidates = jnp.argsort(chi2)[:n_candidates]
    refined = jax.vmap(best_shift)(library.spectra[candidates], library.squares[candidates])

    def rescore(k, a):
        at = deposit_at(a)
        return constant - 2.0 * jnp.sum(at[0] * library.spectra[k]) + jnp.sum(at[1] * library.squares[k])

    lowest = jax.vmap(rescore)(candidates, refined)
    lowest = jnp.where(jnp.isfinite(lowest), lowest, jnp.inf)
    order = jnp.argsort(lowest)[:n_best]
    starts = library.u[candidates[order]]
    rv = SPEED_OF_LIGHT * jnp.tanh(refined[order] * grid.log_step)
    starts = starts.at[:, rv_index].set(rv_to_u(rv).astype(starts.dtype))
    return starts, lowest[order]
