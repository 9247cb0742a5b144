"""The working grid: the emulator's spectrum on a grid uniform in ln λ, ready for FFT broadening.

The working grid has a constant velocity step :math:`c\\,\\Delta\\ln\\lambda`. It is built once, in
numpy, from the emulator's wavelengths and the range of observed wavelengths to be modelled:

* the emulator grid is split into *pieces* at gaps (a step more than ``gap_factor`` times the local
  median step, e.g. between APOGEE's detector chips); each piece gets its own log-uniform grid and
  is broadened independently (the FFTs are batched);
* when every piece is already log-uniform with a common step (APOGEE's apStar grid), its pixels
  are used directly; otherwise the emulator flux is interpolated onto the working grid with
  4-point Lagrange weights (a fixed linear map applied to the predicted flux);
* the grid covers the observed range widened by the largest Doppler shift (``max_rv``) and the
  half-width of the widest broadening kernel, so an observed pixel never sees the unknown flux
  beyond the emulator's range; observed pixels closer than that to an emulator edge or gap cannot
  be modelled (:class:`~jaxpayne.forward.model.ForwardModel` raises a ValueError for them);
* each piece is ramp-padded to a common FFT length (see :func:`~jaxpayne.forward.broadening.broaden`).

Positions of observed pixels on the grid are computed relative to *anchors* every
``anchor_spacing`` nodes, as an integer anchor index plus a small floating-point offset, so that
float32 keeps ~1e-4 pixel (< 0.001 km/s) precision even on 300 000-pixel grids.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.fft
import scipy.ndimage

from jaxpayne.forward.doppler import SPEED_OF_LIGHT

__all__ = ["WorkingGrid", "find_gaps", "is_log_uniform", "log_uniform_wavelength", "working_grid"]

#: Default step ratio above which consecutive emulator pixels are treated as a gap.
DEFAULT_GAP_FACTOR = 3.0
#: Relative tolerance on Δln λ for a grid to count as log-uniform (used directly).
LOG_UNIFORM_RTOL = 1e-5
#: Largest offset [steps] of emulator pixels from a log-uniform grid for them to be used directly.
DIRECT_NODE_TOLERANCE = 1e-3
#: Extra working-grid nodes kept beyond the Doppler + kernel margin (spline taps, safety).
TAP_MARGIN = 3
#: Minimum number of ramp-padding samples between the two ends of a piece in the FFT.
MIN_PAD = 32
#: Working-grid nodes per position anchor.
DEFAULT_ANCHOR_SPACING = 256
#: Lagrange interpolation order (number of emulator pixels per working node).
LAGRANGE_TAPS = 4


class WorkingGrid(NamedTuple):
    """Static description of the working grid (numpy metadata, built once; never traced).

    Attributes:
        log_step: grid step Δln λ.
        velocity_step: c·Δln λ [km/s per node].
        starts: (n_pieces,) ln λ [ln Å] of the first node of each piece.
        lengths: (n_pieces,) number of nodes in each piece.
        fft_length: common padded FFT length N.
        gather_index: (n_pieces, N, taps) int32 emulator-pixel indices building each padded
            piece (4 taps when interpolating, 2 when the nodes are the emulator's pixels).
        gather_weight: (n_pieces, N, taps) float64 weights of those pixels.
        direct: whether the nodes are the emulator's own pixels (no interpolation).
        allowed: (n_pieces, 2) observed-frame wavelength range [Å] that each piece can model.
        emulator_range: (n_pieces, 2) wavelength range [Å] of the emulator pixels of each piece.
        anchor_edges: (n_anchors,) observed wavelength [Å] at which each anchor's cell starts.
        anchor_flat: (n_anchors,) int32 flat node index (piece·N + node) of each anchor.
        anchor_log: (n_anchors,) float64 ln λ of each anchor node.
        spline_lower: (n_anchors,) lowest offset [nodes] from the anchor keeping 4 spline taps
            inside the piece.
        spline_upper: (n_anchors,) highest such offset.
        piece_first: (n_anchors,) int32 flat index of the first node of the anchor's piece.
        piece_last: (n_anchors,) int32 flat index of the last node of the anchor's piece.
        margin_velocity: Doppler + kernel margin [km/s] kept at each end of every piece.
    """

    log_step: float
    velocity_step: float
    starts: np.ndarray
    lengths: np.ndarray
    fft_length: int
    gather_index: np.ndarray
    gather_weight: np.ndarray
    direct: bool
    allowed: np.ndarray
    emulator_range: np.ndarray
    anchor_edges: np.ndarray
    anchor_flat: np.ndarray
    anchor_log: np.ndarray
    spline_lower: np.ndarray
    spline_upper: np.ndarray
    piece_first: np.ndarray
    piece_last: np.ndarray
    margin_velocity: float

    @property
    def n_pieces(self) -> int:
        """Number of contiguous pieces."""
        return len(self.lengths)

    def wavelength(self, piece: int = 0) -> np.ndarray:
        """Wavelengths [Å] of the nodes of one piece (model medium, rest frame)."""
        return np.exp(self.starts[piece] + self.log_step * np.arange(self.lengths[piece]))

    def frequency(self) -> np.ndarray:
        """rfft velocity frequencies [cycles per km/s] of the padded pieces."""
        return np.fft.rfftfreq(self.fft_length, d=self.velocity_step)


def log_uniform_wavelength(lower: float, upper: float, velocity_step: float) -> np.ndarray:
    """A wavelength grid uniform in ln λ.

    Args:
        lower: first wavelength [Å].
        upper: wavelength [Å] the grid must reach.
        velocity_step: step c·Δln λ [km/s].

    Returns:
        numpy float64 wavelengths [Å] from ``lower`` to ≥ ``upper``.
    """
    step = velocity_step / SPEED_OF_LIGHT
    n = int(math.ceil(math.log(upper / lower) / step - 1e-9)) + 1
    return lower * np.exp(step * np.arange(n))


def find_gaps(wavelength, gap_factor: float = DEFAULT_GAP_FACTOR) -> np.ndarray:
    """Indices i where the step wavelength[i] → wavelength[i+1] is a gap.

    A step is a gap when it exceeds ``gap_factor`` times the median of the surrounding steps in
    ln λ.

    Args:
        wavelength: sorted wavelengths [Å].
        gap_factor: threshold ratio.

    Returns:
        numpy int array of indices (possibly empty).
    """
    step = np.diff(np.log(np.asarray(wavelength, dtype=np.float64)))
    if step.size < 3:
        return np.zeros(0, dtype=int)
    local = scipy.ndimage.median_filter(step, size=min(17, step.size), mode="nearest")
    return np.flatnonzero(step > gap_factor * local)


def is_log_uniform(wavelength, rtol: float = LOG_UNIFORM_RTOL) -> bool:
    """Whether a wavelength grid has a constant step in ln λ (to relative tolerance ``rtol``)."""
    step = np.diff(np.log(np.asarray(wavelength, dtype=np.float64)))
    return bool(step.size > 0 and np.ptp(step) <= rtol * np.mean(step))


def _max_node_offset(log_wave: np.ndarray, log_step: float) -> float:
    """Largest offset [in steps] of grid nodes from x0 + i·log_step."""
    ideal = log_wave[0] + log_step * np.arange(log_wave.size)
    return float(np.max(np.abs(log_wave - ideal)) / log_step)


def _lagrange(x_nodes: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-point Lagrange interpolation indices/weights from sorted ``x_nodes`` to ``x``."""
    n = x_nodes.size
    first = np.clip(np.searchsorted(x_nodes, x) - LAGRANGE_TAPS // 2, 0, n - LAGRANGE_TAPS)
    index = first[:, None] + np.arange(LAGRANGE_TAPS)
    nodes = x_nodes[index]
    weight = np.ones_like(nodes)
    for j in range(LAGRANGE_TAPS):
        for m in range(LAGRANGE_TAPS):
            if m != j:
                weight[:, j] *= (x - nodes[:, m]) / (nodes[:, j] - nodes[:, m])
    return index, weight


def working_grid(
    model_wavelength,
    *,
    observed_range: tuple[float, float] | None = None,
    max_rv: float = 500.0,
    kernel_velocity: float = 0.0,
    velocity_step: float | None = None,
    max_velocity_step: float | None = None,
    gap_factor: float = DEFAULT_GAP_FACTOR,
    anchor_spacing: int = DEFAULT_ANCHOR_SPACING,
) -> WorkingGrid:
    """Build the working grid for an emulator and a range of observed wavelengths.

    Args:
        model_wavelength: emulator wavelengths [Å], sorted (model medium).
        observed_range: (lo, hi) observed wavelengths [Å] (model medium) to be modelled; default
            the largest range the emulator allows.
        max_rv: largest absolute radial velocity [km/s] to allow for.
        kernel_velocity: half-width [km/s] of the widest broadening kernel (rotation +
            macroturbulence + LSF) to allow for at each end.
        velocity_step: working step [km/s]; default the emulator's own step if it is log-uniform,
            else its smallest step over the used range.
        max_velocity_step: upper limit on the default step [km/s] (e.g. the narrowest LSF σ).
        gap_factor: step ratio marking a gap in the emulator grid (see :func:`find_gaps`).
        anchor_spacing: nodes per position anchor.

    Returns:
        A :class:`WorkingGrid`.

    Raises:
        ValueError: for an unsorted emulator grid, or an ``observed_range`` that cannot be modelled
            (too close to the emulator's range after ``max_rv`` and the kernel margin).
    """
    wave = np.asarray(model_wavelength, dtype=np.float64).reshape(-1)
    if wave.size < 2 * LAGRANGE_TAPS or np.any(np.diff(wave) <= 0) or wave[0] <= 0:
        raise ValueError("model wavelength must be a strictly increasing positive array (≥ 8 px)")
    if max_rv < 0 or kernel_velocity < 0:
        raise ValueError("max_rv and kernel_velocity must be ≥ 0")
    log_wave = np.log(wave)
    cuts = find_gaps(wave, gap_factor)
    bounds = np.concatenate([[0], cuts + 1, [wave.size]])
    emu_pieces = [
        (int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= 2 * LAGRANGE_TAPS
    ]
    margin_velocity = float(max_rv) + float(kernel_velocity)

    # Choose the step.
    direct = False
    if velocity_step is None:
        steps = [np.diff(log_wave[a:b]) for a, b in emu_pieces]
        common_step = float(np.mean(np.concatenate(steps)))
        uniform = all(
            _max_node_offset(log_wave[a:b], common_step) < DIRECT_NODE_TOLERANCE
            for a, b in emu_pieces
        )
        log_step = common_step if uniform else float(min(s.min() for s in steps))
        direct = bool(uniform)
        if max_velocity_step is not None and log_step * SPEED_OF_LIGHT > max_velocity_step:
            log_step = float(max_velocity_step) / SPEED_OF_LIGHT
            direct = False
    else:
        log_step = float(velocity_step) / SPEED_OF_LIGHT
    margin_log = math.atanh(max_rv / SPEED_OF_LIGHT) + kernel_velocity / SPEED_OF_LIGHT
    margin_log += TAP_MARGIN * log_step

    # Allowed observed range per emulator piece.
    emu_allowed = np.array(
        [[log_wave[a] + margin_log, log_wave[b - 1] - margin_log] for a, b in emu_pieces]
    )
    usable = emu_allowed[:, 1] > emu_allowed[:, 0]
    if not np.any(usable):
        raise ValueError(
            f"the emulator range {wave[0]:.2f}–{wave[-1]:.2f} Å is too short for max_rv={max_rv} "
            f"km/s plus a {kernel_velocity:.1f} km/s broadening margin"
        )
    allowed_lo = float(np.exp(emu_allowed[usable, 0].min()))
    allowed_hi = float(np.exp(emu_allowed[usable, 1].max()))
    if observed_range is None:
        lo, hi = allowed_lo, allowed_hi
    else:
        lo, hi = (float(v) for v in observed_range)
        if not hi > lo:
            raise ValueError(f"observed wavelength range must have lo < hi, got ({lo}, {hi})")
        if lo < allowed_lo * (1 - 1e-12) or hi > allowed_hi * (1 + 1e-12):
            raise ValueError(
                f"observed wavelength range {lo:.2f}–{hi:.2f} Å cannot be modelled: the emulator "
                f"covers {wave[0]:.2f}–{wave[-1]:.2f} Å, and with max_rv={max_rv:g} km/s and a "
                f"{kernel_velocity:.1f} km/s broadening margin only {allowed_lo:.2f}–"
                f"{allowed_hi:.2f} Å can be modelled (reduce max_rv / max_vsini / max_vmacro, or "
                "the observed range)"
            )

    # Working nodes per piece: the needed range ∩ the emulator piece.
    need_lo, need_hi = math.log(lo) - margin_log, math.log(hi) + margin_log
    pieces = []  # (emu_first, emu_last, x0, n, node→emulator map)
    for (a, b), ok in zip(emu_pieces, usable):
        x_first, x_last = log_wave[a], log_wave[b - 1]
        piece_lo, piece_hi = max(x_first, need_lo), min(x_last, need_hi)
        if not ok or piece_hi - piece_lo < 2 * margin_log:
            continue
        if direct:
            i0 = max(a, int(np.searchsorted(log_wave[a:b], piece_lo, side="right")) - 1 + a)
            i1 = min(b - 1, int(np.searchsorted(log_wave[a:b], piece_hi, side="left")) + a)
            n = i1 - i0 + 1
            x0 = log_wave[i0]
            index = np.zeros((n, LAGRANGE_TAPS), dtype=np.int64)
            index[:] = np.arange(i0, i1 + 1)[:, None]
            weight = np.zeros((n, LAGRANGE_TAPS))
            weight[:, 0] = 1.0
        else:
            # anchor the grid on the emulator's first pixel so nodes are reproducible
            k0 = math.ceil((piece_lo - x_first) / log_step - 1e-9)
            x0 = x_first + k0 * log_step
            n = int(math.floor((piece_hi - x0) / log_step + 1e-9)) + 1
            x_nodes = x0 + log_step * np.arange(n)
            index, weight = _lagrange(log_wave[a:b], x_nodes)
            index = index + a
        pieces.append((index, weight, x0, n))
    if not pieces:
        raise ValueError("no part of the emulator grid covers the observed range")
    lengths = np.array([p[3] for p in pieces])
    starts = np.array([p[2] for p in pieces])
    kernel_nodes = int(math.ceil(kernel_velocity / (log_step * SPEED_OF_LIGHT)))
    pad = max(MIN_PAD, kernel_nodes + 2 * TAP_MARGIN)
    fft_length = int(scipy.fft.next_fast_len(int(lengths.max()) + pad, real=True))

    gather_index = np.zeros((len(pieces), fft_length, LAGRANGE_TAPS), dtype=np.int32)
    gather_weight = np.zeros((len(pieces), fft_length, LAGRANGE_TAPS))
    for k, (index, weight, _, n) in enumerate(pieces):
        gather_index[k, :n] = index
        gather_weight[k, :n] = weight
        # ramp from the last node's nearest emulator pixel back to the first node's
        last = index[-1, np.argmax(weight[-1])]
        first = index[0, np.argmax(weight[0])]
        extra = fft_length - n
        ramp = np.arange(1, extra + 1) / (extra + 1)
        gather_index[k, n:, 0] = last
        gather_index[k, n:, 1:] = first
        gather_weight[k, n:, 0] = 1.0 - ramp
        gather_weight[k, n:, 1] = ramp

    if direct:  # nodes are emulator pixels: one tap per node, two for the ramp
        gather_index = gather_index[:, :, :2]
        gather_weight = gather_weight[:, :, :2]

    # Observed-frame ranges each piece can model, and where one piece hands over to the next.
    allowed = np.array(
        [[np.exp(x0 + margin_log), np.exp(x0 + (n - 1) * log_step - margin_log)]
         for x0, n in zip(starts, lengths)]
    )
    emulator_range = np.array(
        [[np.exp(x0), np.exp(x0 + (n - 1) * log_step)] for x0, n in zip(starts, lengths)]
    )
    handover = [-np.inf] + [
        0.5 * (emulator_range[k - 1, 1] + emulator_range[k, 0]) for k in range(1, len(pieces))
    ]

    edges, flat, logs, lower, upper, first, last = [], [], [], [], [], [], []
    spacing = int(anchor_spacing)
    for k, (x0, n) in enumerate(zip(starts, lengths)):
        for m in range(int(math.ceil(n / spacing))):
            node = min(m * spacing + spacing // 2, n - 1)
            edges.append(handover[k] if m == 0 else np.exp(x0 + m * spacing * log_step))
            flat.append(k * fft_length + node)
            logs.append(x0 + node * log_step)
            lower.append(1.0 - node)
            upper.append(n - 3.0 - node)
            first.append(k * fft_length)
            last.append(k * fft_length + n - 1)
    return WorkingGrid(
        log_step=log_step,
        velocity_step=log_step * SPEED_OF_LIGHT,
        starts=starts,
        lengths=lengths,
        fft_length=fft_length,
        gather_index=gather_index,
        gather_weight=gather_weight,
        direct=direct,
        allowed=allowed,
        emulator_range=emulator_range,
        anchor_edges=np.array(edges),
        anchor_flat=np.array(flat, dtype=np.int32),
        anchor_log=np.array(logs),
        spline_lower=np.array(lower),
        spline_upper=np.array(upper),
        piece_first=np.array(first, dtype=np.int32),
        piece_last=np.array(last, dtype=np.int32),
        margin_velocity=margin_velocity,
    )
