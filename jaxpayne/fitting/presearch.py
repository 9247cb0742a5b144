"""Template pre-search: radial velocity by cross-correlation and a start from a template library.

Before Levenberg–Marquardt starts, every spectrum is compared with a library of K model spectra
(the box centre and scrambled Sobol points of the label box, broadened with the forward model's
start values) on the forward model's log-uniform working grid:

1. the pseudo-continuum-normalised data ``d`` and weights ``w`` (the ivar-weighted running mean
   :func:`~jaxpayne.forward.smooth_continuum`, of the fit's width for the filter continuum, else
   50 Å; the templates are normalised by the same filter) are deposited onto the working grid at their
   rest-frame positions with the four cubic B-spline weights (the adjoint of evaluating a cubic
   spline there, so the template is interpolated as accurately as in the forward model);
2. the velocity is where the template's line depths :math:`L = T - 1` (zero outside its pieces)
   best explain the data's, ``d − 1``, with a free depth scale α ≥ 0: at a shift of s nodes
   :math:`\\chi^2_{min}(s) = \\sum w (d-1)^2 - \\max(X(s), 0)^2 / P(s)` with the cross-correlation
   :math:`X(s) = \\sum_j (w(d-1))_j\\,c_{j-s}` and :math:`P(s) = \\sum_j w_j\\,c^{(2)}_{j-s}` (c, c⁽²⁾
   the spline coefficients of L and L²), both computed for all shifts at once by FFT (Tonry &
   Davis 1979, AJ 84, 1511, with χ² weights). Scaling the depths makes the score a correlation:
   a plain χ² of a template unlike the star is lowest where the most pixels fall off the
   template's ends (no lines, so no mismatch), which drags the velocity to ±max_rv;
3. with the data deposited at the best (parabola-refined) shift of a few probe templates (the
   box centre and the first Sobol points: the shift any of them explains best), all K
   templates are scored by their plain χ², :math:`\\sum w (d - 1 - L)^2`, with two dot products
   each (one matrix product for the whole batch);
4. the best few get their own velocities as in step 2 within two nodes of the first (a
   template may fit worse than no lines at all, and its own velocity is then meaningless), each
   minimum refined by a parabola through three shifts, and the lowest plain χ² wins: its labels and velocity are the optimiser's start.

This costs a few FFTs per spectrum whatever the velocity range, and replaces a χ² scan through
the full forward model. Everything here is a composition of the forward model's public functions
(:func:`~jaxpayne.forward.working_spectrum`, :func:`~jaxpayne.forward.grid_positions`,
:func:`~jaxpayne.forward.prepare_data`, :func:`~jaxpayne.forward.smooth_continuum`). The library does not depend on the spectra: it is built once per
:class:`~jaxpayne.fitting.Fitter`. Its accuracy (a pixel's fraction in rv, the nearest library
point in labels) only needs to put the optimiser in the right basin.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpayne.forward.continuum import DEFAULT_FILTER_WIDTH, smooth_continuum
from jaxpayne.forward.doppler import SPEED_OF_LIGHT
from jaxpayne.forward.likelihood import PreparedData, prepare_data
from jaxpayne.forward.resample import bspline_prefilter, cubic_bspline_weights
from jaxpayne.forward.spectrum import grid_positions, working_spectrum

__all__ = ["TemplateLibrary", "build_library", "presearch"]

#: Upper limit on the library's memory [bytes] (templates and their squares, float32).
LIBRARY_MEMORY = 256 * 2**20
#: Templates evaluated at once while the library is built.
BUILD_CHUNK = 16
#: Best-scoring templates whose velocity is refined before the final choice.
CANDIDATES = 2
#: Library templates (the box centre and the first Sobol points) whose correlations find the
#: first velocity: a single template may have almost no lines (a hot star, or a network whose
#: box centre is featureless), so the shift that any of them explains best is taken.
PROBES = 4
#: Nodes either side of the first velocity within which each candidate template refines it.
REFINE_NODES = 2


class TemplateLibrary(NamedTuple):
    """Model spectra the pre-search compares every spectrum with (a pytree of arrays).

    Attributes:
        u: (K, n) parameters of the templates in the fitter's working coordinates (row 0: the box
            centre).
        spectra: (K, n_pieces, N) cubic B-spline coefficients of the line depths T − 1 of the
            continuum-normalised templates on the working grid (zero in the padding between a
            piece's ends).
        squares: (K, n_pieces, N) B-spline coefficients of the squared line depths.
    """

    u: jax.Array
    spectra: jax.Array
    squares: jax.Array


def _filter_width(forward) -> float:
    return forward.continuum.width if forward.continuum.kind == "filter" else DEFAULT_FILTER_WIDTH


def build_library(forward, theta: np.ndarray, u: np.ndarray, dtype=np.float32) -> TemplateLibrary:
    """Evaluate and normalise the templates (once per fitter; chunked to bound memory).

    Each template is broadened on the working grid with :func:`~jaxpayne.forward.working_spectrum`
    and divided, piece by piece, by its running mean (:func:`~jaxpayne.forward.smooth_continuum`,
    the filter the data get); the library holds the line depths T − 1, zero in the padding
    between a piece's ends, so a pixel shifted off a piece meets no lines.

    Args:
        forward: the :class:`~jaxpayne.forward.ForwardModel`.
        theta: (K, n) template parameters, physical units.
        u: (K, n) the same in the fitter's working coordinates.
        dtype: float dtype of the library.

    Returns:
        The :class:`TemplateLibrary`.
    """
    grid = forward.grid
    n_fft = grid.fft_length
    width = _filter_width(forward)
    prefilter = jnp.asarray(bspline_prefilter(n_fft), jnp.result_type(dtype, jnp.complex64))
    nodes = [grid.wavelength(p) for p in range(grid.n_pieces)]

    def depths(samples):
        """Line depths T − 1 of the filter-normalised template, piece by piece; zero in the padding."""
        rows = []
        for p, wave in enumerate(nodes):
            n = wave.size
            body = samples[p * n_fft : p * n_fft + n]
            smooth = smooth_continuum(body, jnp.ones_like(body), jnp.asarray(wave, dtype), width=width,
                                      wavelength_range=(float(wave[0]), float(wave[-1])))
            body = body / jnp.where(jnp.abs(smooth) > 0, smooth, 1.0) - 1.0
            rows.append(jnp.concatenate([body, jnp.zeros(n_fft - n, dtype)]))
        out = jnp.stack(rows)
        return jnp.where(jnp.isfinite(out), out, 0.0)

    def coefficients(x):
        return jnp.fft.irfft(jnp.fft.rfft(x, axis=-1) * prefilter, n=n_fft, axis=-1).astype(dtype)

    @jax.jit
    @functools.partial(jax.vmap, in_axes=(None, 0))
    def template(fm, t):  # the model an argument: its weights are not folded into the program
        values = fm.space.unflatten(t, dtype=dtype)
        part = depths(working_spectrum(fm, values, dtype, spline=False))
        return coefficients(part), coefficients(part * part)

    spectra, squares = [], []
    for start in range(0, theta.shape[0], BUILD_CHUNK):  # bounded host and device memory
        a, b = template(forward, jnp.asarray(theta[start : start + BUILD_CHUNK], dtype))
        spectra.append(np.asarray(a))
        squares.append(np.asarray(b))
    return TemplateLibrary(jnp.asarray(u, dtype), jnp.asarray(np.concatenate(spectra)),
                           jnp.asarray(np.concatenate(squares)))


def library_size(requested: int, n_nodes: int) -> int:
    """Templates that fit in :data:`LIBRARY_MEMORY` (at least 1, at most ``requested``)."""
    per_template = 2 * 4 * n_nodes
    return max(1, min(int(requested), LIBRARY_MEMORY // per_template))


def _correlate(deposit_ft, template, template_square, n: int):
    """(X, P) for every circular shift, summed over pieces: the cross-correlation of w(d − 1)
    with the depths L, and of w with L²."""
    t_ft = jnp.fft.rfft(template, axis=-1)
    s_ft = jnp.fft.rfft(template_square, axis=-1)
    cross = jnp.fft.irfft(deposit_ft[0] * jnp.conj(t_ft), n=n, axis=-1)
    power = jnp.fft.irfft(deposit_ft[1] * jnp.conj(s_ft), n=n, axis=-1)
    return jnp.sum(cross, axis=0), jnp.sum(power, axis=0)


def _scaled_gain(cross, power):
    """The χ² drop max(X, 0)²/P of the best depth scale α = max(X, 0)/P ≥ 0 (0 without overlap)."""
    tiny = jnp.finfo(power.dtype).tiny
    positive = power > tiny
    return jnp.where(positive, jnp.maximum(cross, 0.0) ** 2 / jnp.where(positive, power, 1.0), 0.0)


def presearch(forward, library: TemplateLibrary, obs, *, fit_rv: bool, rv_index: int | None,
              rv_to_u, n_best: int = 1, prepared: PreparedData | None = None, rv=0.0):
    """Radial velocity and label start(s) of one spectrum (pure; vmap over spectra).

    Args:
        forward: the :class:`~jaxpayne.forward.ForwardModel`.
        library: the :class:`TemplateLibrary` (not batched).
        obs: one :class:`~jaxpayne.forward.Observation`.
        fit_rv: search the velocity (else the shift is ``rv``).
        rv_index: column of rv in the working coordinates (None when rv is fixed).
        rv_to_u: function rv [km/s] → working coordinate of rv.
        n_best: number of starts returned (the best templates, best first).
        prepared: the data side of the likelihood (:func:`~jaxpayne.forward.prepare_data`),
            computed here when not given; its running mean of the data is used when it has one.
        rv: the (fixed) velocity [km/s] when ``fit_rv`` is False (traced allowed).

    Returns:
        (n_best, n) starts in working coordinates, the (n_best,) pre-search χ² of each, and the
        (n_best,) velocities [km/s] of the starts.
    """
    grid = forward.grid
    n_pieces, n = grid.n_pieces, grid.fft_length
    dtype = library.spectra.dtype

    if prepared is None:
        prepared = prepare_data(forward, obs, dtype)
    valid = prepared.valid
    ivar, flux, wavelength = (x.astype(dtype) for x in (prepared.ivar, prepared.data, prepared.wavelength))
    smooth = prepared.smooth_data
    if smooth is None:  # another continuum treatment: the filter of the default width
        smooth = smooth_continuum(flux, ivar, wavelength, prepared.segment, width=DEFAULT_FILTER_WIDTH,
                                  n_segments=forward.n_segments, wavelength_range=forward.filter_range)
    smooth = smooth.astype(dtype)
    smooth = jnp.where(valid & (jnp.abs(smooth) > 0), smooth, 1.0)
    depth = flux / smooth - 1.0  # the data's line depths
    weight = ivar * smooth**2

    # rest-frame positions on the working grid and the cubic B-spline deposit there
    which, offset = grid_positions(forward, wavelength, jnp.asarray(0.0, dtype), dtype,
                                   getattr(obs, "wavelength_lo", None))
    lower = jnp.asarray(grid.spline_lower, dtype)[which]
    upper = jnp.asarray(grid.spline_upper, dtype)[which]
    base = jnp.asarray(grid.anchor_flat)[which]  # integer part kept apart: float32 precision
    offset = jnp.clip(offset, lower, upper)
    values = jnp.stack([weight * depth, weight])  # (2, n_pix)
    last = n_pieces * n - 1

    def deposit_at(shift):
        """Σ_i v_i L(p_i − shift) = Σ_j D_j L_j: the data deposited at their shifted positions."""
        where = offset - shift
        whole = jnp.floor(where)
        taps = cubic_bspline_weights(where - whole)  # (n_pix, 4): nodes p−1 … p+2
        # pixels the model can reach stay inside their piece; clipping guards the others
        first = jnp.clip(base + whole.astype(jnp.int32) - 1, 0, last - 3)
        grid_values = jnp.zeros((2, n_pieces * n), dtype)
        for k in range(4):
            grid_values = grid_values.at[:, first + k].add(values * taps[:, k])
        return grid_values.reshape(2, n_pieces, n)

    constant = jnp.sum(weight * depth * depth)

    # one node beyond ±max_rv: the extreme shifts are never chosen (the parabola needs both
    # neighbours), so ±max_rv itself stays reachable on coarse (low-resolution) grids
    max_shift = int(math.ceil(math.atanh(forward.max_rv / SPEED_OF_LIGHT) / grid.log_step)) + 1
    max_shift = min(max_shift, n // 2 - 2)
    shifts = jnp.arange(-max_shift, max_shift + 1)

    deposit_ft = jnp.fft.rfft(deposit_at(jnp.zeros((), dtype)), axis=-1) if fit_rv else None

    def refine(along, allowed=True):
        """Shift [nodes] of the lowest value of a curve over ``shifts`` (where ``allowed``),
        refined by a parabola."""
        k = jnp.argmin(jnp.where(jnp.isfinite(along) & allowed, along, jnp.inf))
        k = jnp.clip(k, 1, shifts.size - 2)
        left, mid, right = along[k - 1], along[k], along[k + 1]
        curvature = left - 2.0 * mid + right
        positive = curvature > 0
        step = jnp.where(positive, 0.5 * (left - right) / jnp.where(positive, curvature, 1.0), 0.0)
        return shifts[k].astype(dtype) + jnp.clip(step, -0.5, 0.5)

    def score(template, template_square):
        """−(χ² drop) of the best depth scale at every shift of ``shifts``."""
        cross, power = _correlate(deposit_ft, template, template_square, n)
        return -_scaled_gain(cross[shifts % n], power[shifts % n])

    def best_shift_near(template, template_square, first):
        """The template's own best shift within REFINE_NODES of the first one (the first one
        where it explains no lines there)."""
        along = score(template, template_square)
        near = jnp.abs(shifts - jnp.round(first)) <= REFINE_NODES
        explains = jnp.any(near & (along < 0))
        return jnp.where(explains, refine(along, near), first)

    if fit_rv:
        probes = min(PROBES, library.spectra.shape[0])
        shift = refine(jnp.min(jax.vmap(score)(library.spectra[:probes], library.squares[:probes]), axis=0))
        shifted = deposit_at(shift)
    else:
        shift = jnp.arctanh(jnp.asarray(rv, dtype) / SPEED_OF_LIGHT) / grid.log_step
        shifted = deposit_at(shift)
    # score every template at that (fractional) shift
    chi2 = (constant - 2.0 * jnp.einsum("pn,kpn->k", shifted[0], library.spectra)
            + jnp.einsum("pn,kpn->k", shifted[1], library.squares))
    chi2 = jnp.where(jnp.isfinite(chi2), chi2, jnp.inf)
    if not fit_rv:
        order = jnp.argsort(chi2)[:n_best]
        return library.u[order], chi2[order], jnp.full(order.shape, rv, dtype)
    # the best few, each at its own best velocity (a template unlike the star can pull the first
    # velocity off by a fraction of a node, enough to favour a wrong neighbour)
    n_candidates = min(max(CANDIDATES, n_best), chi2.shape[0])
    candidates = jnp.argsort(chi2)[:n_candidates]
    refined = jax.vmap(best_shift_near, in_axes=(0, 0, None))(library.spectra[candidates],
                                                             library.squares[candidates], shift)

    def rescore(k, a):
        at = deposit_at(a)
        return constant - 2.0 * jnp.sum(at[0] * library.spectra[k]) + jnp.sum(at[1] * library.squares[k])

    lowest = jax.vmap(rescore)(candidates, refined)
    lowest = jnp.where(jnp.isfinite(lowest), lowest, jnp.inf)
    order = jnp.argsort(lowest)[:n_best]
    starts = library.u[candidates[order]]
    velocity = jnp.clip(SPEED_OF_LIGHT * jnp.tanh(refined[order] * grid.log_step), -forward.max_rv, forward.max_rv)
    starts = starts.at[:, rv_index].set(rv_to_u(velocity).astype(starts.dtype))
    return starts, lowest[order], velocity
