"""Continuum normalisation applied identically to model and observed spectra.

Two treatments, both pure and differentiable:

* :func:`smooth_continuum` — the running-mean "pseudo-continuum" of Ho et al. (2017, ApJ 836, 5)
  used by DD-Payne (Xiang et al. 2019, ApJS 245, 34): an inverse-variance-weighted Gaussian smooth

  .. math:: \\bar f(\\lambda_i) = \\frac{\\sum_j w_{ij}\\, \\sigma_j^{-2} f_j}{\\sum_j w_{ij}\\,\\sigma_j^{-2}},
            \\qquad w_{ij} = \\exp\\!\\left(-\\frac{(\\lambda_i-\\lambda_j)^2}{L^2}\\right),

  restricted to pixels of the same segment (chip / arm), with L = 50 Å by default. The same
  observed ivar and mask weight the model and the data, so both are normalised the same way.
  The sums are computed by depositing the weighted pixels onto a uniform grid of bins of width
  ``L/16`` (linear, "cloud-in-cell"), a banded Gaussian convolution on that grid, and linear
  interpolation back to the pixels — O(n) for any number of pixels. The Gaussian on the bins is
  narrowed so that, with the two linear steps, the effective kernel has exactly the variance
  L²/2 of :math:`w_{ij}`; the remaining difference from the direct sum is ~1e-4 relative in the
  weights.
* :func:`chebyshev_basis` / :func:`chebyshev_design` and :func:`chebyshev_continuum` — a
  Chebyshev polynomial per segment, either free parameters or fitted by weighted linear least
  squares of the data against model × polynomial (binspec, El-Badry et al. 2018, MNRAS 476, 528,
  fits degree 4 per chip). The polynomials of different segments share no pixel, so the normal
  matrix is block diagonal: :func:`chebyshev_continuum` solves one (K×K) block per segment, which
  costs O(n·K²) for n pixels and K = degree + 1 terms however many segments there are (a
  stitched multi-visit spectrum has a segment per chip per visit), against O(n·S²·K²) for the
  dense (n, S·K) design matrix.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np

__all__ = [
    "DEFAULT_FILTER_WIDTH",
    "ContinuumFit",
    "ContinuumSpec",
    "SegmentedDesign",
    "parse_continuum",
    "chebyshev_basis",
    "chebyshev_continuum",
    "chebyshev_design",
    "smooth_continuum",
]

#: Default smoothing length L [Å] of the running-mean filter (Ho et al. 2017).
DEFAULT_FILTER_WIDTH = 50.0
#: Bins per smoothing length L in :func:`smooth_continuum`.
FILTER_BINS_PER_WIDTH = 16
#: Half-width of the binned Gaussian, in its σ.
FILTER_TRUNCATION = 5.0


class ContinuumSpec(NamedTuple):
    """A continuum treatment (see :func:`parse_continuum`).

    Attributes:
        kind: ``"filter"``, ``"cheb"`` or ``"none"``.
        width: smoothing length L [Å] (filter).
        degree: polynomial degree (cheb).
        free: whether Chebyshev coefficients are free parameters (cheb).
    """

    kind: str
    width: float = DEFAULT_FILTER_WIDTH
    degree: int = 0
    free: bool = False

    def __str__(self) -> str:
        if self.kind == "filter":
            return f"filter:{self.width:g}"
        if self.kind == "cheb":
            return f"cheb:{self.degree}" + (":free" if self.free else "")
        return "none"


def parse_continuum(spec) -> ContinuumSpec:
    """Parse ``"filter"``, ``"filter:WIDTH"``, ``"cheb:N"``, ``"cheb:N:free"`` or ``"none"``.

    A :class:`ContinuumSpec` is returned unchanged.

    Raises:
        ValueError: for anything else.
    """
    if isinstance(spec, ContinuumSpec):
        return spec
    text = str(spec).strip().lower()
    parts = text.split(":")
    try:
        if parts[0] == "none" and len(parts) == 1:
            return ContinuumSpec("none")
        if parts[0] == "filter" and len(parts) <= 2:
            width = float(parts[1]) if len(parts) == 2 else DEFAULT_FILTER_WIDTH
            if width > 0:
                return ContinuumSpec("filter", width=width)
        if parts[0] == "cheb" and len(parts) in (2, 3) and (len(parts) == 2 or parts[2] == "free"):
            degree = int(parts[1])
            if degree >= 0:
                return ContinuumSpec("cheb", degree=degree, free=len(parts) == 3)
    except ValueError:
        pass
    raise ValueError(
        f"continuum must be 'filter', 'filter:WIDTH', 'cheb:N', 'cheb:N:free' or 'none', "
        f"got {spec!r}"
    )


def _concrete_range(wavelength) -> tuple[float, float]:
    try:
        values = np.asarray(wavelength, dtype=np.float64)
    except Exception as error:  # a tracer
        raise ValueError(
            "smooth_continuum needs a static wavelength_range=(lo, hi) under jit/vmap"
        ) from error
    return float(values.min()), float(values.max())


def smooth_continuum(
    flux,
    ivar,
    wavelength,
    segment=None,
    *,
    width: float = DEFAULT_FILTER_WIDTH,
    n_segments: int = 1,
    wavelength_range: tuple[float, float] | None = None,
    bin_width: float | None = None,
    denominator=None,
    return_denominator: bool = False,
):
    """Inverse-variance-weighted Gaussian running mean of a spectrum, per segment.

    Args:
        flux: (n,) flux.
        ivar: (n,) inverse variance used as weights; 0 (or non-finite) = masked, zero weight.
        wavelength: (n,) wavelengths [Å].
        segment: (n,) int segment index in [0, n_segments); default all 0. Pixels of different
            segments never mix.
        width: smoothing length L [Å] in w = exp(−Δλ²/L²) (static).
        n_segments: number of segments (static).
        wavelength_range: (lo, hi) [Å] covering all pixels (static); required under jit/vmap,
            taken from ``wavelength`` otherwise. Pixels outside are clamped to its ends.
        bin_width: bin width [Å] of the internal grid (static), default L/16.
        denominator: (n,) the smoothed weights returned earlier for the same ``ivar`` (the
            denominator depends on the weights only): smoothing another spectrum with the same
            weights then costs half.
        return_denominator: also return the denominator.

    Returns:
        (n,) smoothed flux (and the (n,) denominator if ``return_denominator``). Where no unmasked pixel lies within ~5 L in the same segment the
        result is 1.

    Example:
        >>> pseudo = smooth_continuum(flux, ivar, wavelength, width=50.0)
        >>> normalized = flux / pseudo
    """
    flux = jnp.asarray(flux)
    dtype = flux.dtype
    ivar = jnp.asarray(ivar, dtype=dtype)
    wavelength = jnp.asarray(wavelength)
    segment = (
        jnp.zeros(flux.shape, jnp.int32) if segment is None else jnp.asarray(segment, jnp.int32)
    )
    if wavelength_range is None:
        lo, hi = _concrete_range(wavelength)
    else:
        lo, hi = (float(v) for v in wavelength_range)
    h = float(bin_width) if bin_width is not None else float(width) / FILTER_BINS_PER_WIDTH
    n_bins = int(math.ceil((hi - lo) / h)) + 2
    sigma_bins = math.sqrt(max(width**2 / 2.0 - h**2 / 3.0, (0.25 * h) ** 2)) / h
    taps = int(math.ceil(FILTER_TRUNCATION * sigma_bins))
    kernel = np.exp(-0.5 * (np.arange(-taps, taps + 1) / sigma_bins) ** 2)

    valid = (ivar > 0) & jnp.isfinite(ivar) & jnp.isfinite(flux)
    weight = jnp.where(valid, ivar, 0.0)
    value = weight * jnp.where(valid, flux, 0.0)
    u = jnp.clip((wavelength.astype(dtype) - lo) / h, 0.0, n_bins - 2.0)
    cell = jnp.floor(u)
    t = u - cell
    cell = cell.astype(jnp.int32)
    segment = jnp.clip(segment, 0, n_segments - 1)

    # flat (segment, bin) indices: 1-D gathers/scatters are much faster than 2-D ones on XLA's CPU
    # backend
    flat_cell = segment * n_bins + cell

    def deposit(x):
        grid = jnp.zeros((n_segments * n_bins,), dtype)
        grid = grid.at[flat_cell].add(x * (1.0 - t)).at[flat_cell + 1].add(x * t)
        return grid.reshape(n_segments, n_bins)

    stacked = deposit(value) if denominator is not None else jnp.concatenate([deposit(value), deposit(weight)])
    # Linear convolution with the centred kernel by FFT (XLA's CPU convolution is ~20x slower
    # for these shapes): zero padding of at least `taps` bins keeps wrap-around out.
    n_fft = 1 << int(math.ceil(math.log2(n_bins + 2 * taps + 1)))
    wrapped = np.zeros(n_fft)
    wrapped[np.arange(-taps, taps + 1) % n_fft] = kernel
    kernel_ft = jnp.asarray(np.fft.rfft(wrapped), jnp.result_type(dtype, jnp.complex64))
    smoothed = jnp.fft.irfft(jnp.fft.rfft(stacked, n=n_fft, axis=-1) * kernel_ft, n=n_fft, axis=-1)[:, :n_bins]
    smoothed = smoothed.astype(dtype)
    def back(grid):
        flat = grid.reshape(-1)
        return flat[flat_cell] * (1.0 - t) + flat[flat_cell + 1] * t

    num = back(smoothed[:n_segments])
    den = back(smoothed[n_segments:]) if denominator is None else jnp.asarray(denominator, dtype)
    floor = jnp.finfo(dtype).eps * jnp.max(den)
    good = den > floor
    smooth = jnp.where(good, num / jnp.where(good, den, 1.0), 1.0)
    return (smooth, den) if return_denominator else smooth


@jax.tree_util.register_pytree_node_class
class SegmentedDesign:
    """A design matrix whose columns are K functions on each of S segments (block structure).

    Column ``s·K + k`` of the equivalent dense (n, S·K) matrix holds ``basis[:, k]`` on the
    pixels of segment s and 0 elsewhere (:meth:`dense`). A pytree (``basis``, ``segment``
    leaves; ``n_segments`` static), so it passes through ``jit`` and ``vmap``.

    Attributes:
        basis: (n, K) the functions at every pixel (of the pixel's own segment).
        segment: (n,) int32 segment index in [0, n_segments).
        n_segments: S (static).
    """

    def __init__(self, basis, segment, n_segments: int):
        self.basis = basis
        self.segment = segment
        self.n_segments = int(n_segments)

    def tree_flatten(self):
        return (self.basis, self.segment), self.n_segments

    @classmethod
    def tree_unflatten(cls, n_segments, children):
        return cls(*children, n_segments)

    @property
    def n_columns(self) -> int:
        """Columns S·K of the dense design."""
        return self.n_segments * int(jnp.shape(self.basis)[-1])

    def onehot(self, dtype=None) -> jax.Array:
        """(n, S) membership of every pixel in every segment."""
        dtype = self.basis.dtype if dtype is None else dtype
        return (self.segment[:, None] == jnp.arange(self.n_segments)).astype(dtype)

    def dense(self) -> jax.Array:
        """The (n, S·K) design matrix."""
        n = jnp.shape(self.basis)[0]
        return (self.onehot()[:, :, None] * self.basis[:, None, :]).reshape(n, -1)

    def evaluate(self, coefficients) -> jax.Array:
        """(n,) Σ_k a[s(i), k] · basis[i, k] for (S·K,) coefficients (``dense() @ a``)."""
        a = jnp.reshape(coefficients, (self.n_segments, -1))
        return jnp.sum(self.basis * a[self.segment], axis=-1)

    def touched(self, used) -> jax.Array:
        """(S·K,) bool: the columns that are non-zero at some pixel where ``used``."""
        hit = (self.basis != 0) & jnp.asarray(used, bool)[:, None]  # (n, K)
        return (self.onehot(jnp.float32).T @ hit.astype(jnp.float32) > 0).reshape(-1)


def chebyshev_basis(wavelength, segment=None, ivar=None, *, n_segments: int = 1, degree: int = 4) -> SegmentedDesign:
    """Chebyshev polynomials T_0 … T_degree per segment, as a :class:`SegmentedDesign`.

    Each segment's wavelengths are mapped onto [−1, 1] using the range of its unmasked pixels
    (all pixels if ``ivar`` is None).

    Args:
        wavelength: (n,) wavelengths [Å].
        segment: (n,) int segment index; default all 0.
        ivar: (n,) inverse variance, 0 = masked (masked pixels do not set the domain).
        n_segments: number of segments (static).
        degree: polynomial degree (static) ≥ 0.

    Returns:
        The design: ``basis`` (n, degree+1), ``segment``, ``n_segments``.
    """
    wavelength = jnp.asarray(wavelength)
    segment = (
        jnp.zeros(wavelength.shape, jnp.int32)
        if segment is None
        else jnp.clip(jnp.asarray(segment, jnp.int32), 0, n_segments - 1)
    )
    valid = jnp.ones(wavelength.shape, bool) if ivar is None else jnp.asarray(ivar) > 0
    lo = jax.ops.segment_min(jnp.where(valid, wavelength, jnp.inf), segment, n_segments)
    hi = jax.ops.segment_max(jnp.where(valid, wavelength, -jnp.inf), segment, n_segments)
    ok = jnp.isfinite(lo) & jnp.isfinite(hi) & (hi > lo)
    lo = jnp.where(ok, lo, 0.0)
    hi = jnp.where(ok, hi, 1.0)
    x = 2.0 * (wavelength - lo[segment]) / (hi[segment] - lo[segment]) - 1.0
    terms = [jnp.ones_like(x)]
    if degree >= 1:
        terms.append(x)
    for _ in range(2, degree + 1):
        terms.append(2.0 * x * terms[-1] - terms[-2])
    return SegmentedDesign(jnp.stack(terms, axis=-1), segment, n_segments)


def chebyshev_design(wavelength, segment=None, ivar=None, *, n_segments: int = 1, degree: int = 4):
    """Dense design matrix of a Chebyshev polynomial continuum per segment.

    :func:`chebyshev_basis` as the (n, n_segments·(degree+1)) matrix: column
    ``s·(degree+1) + k`` holds T_k on segment s and 0 elsewhere. The likelihood uses the
    block form (:class:`SegmentedDesign`), which is cheaper for many segments.

    Args:
        wavelength: (n,) wavelengths [Å].
        segment: (n,) int segment index; default all 0.
        ivar: (n,) inverse variance, 0 = masked (masked pixels do not set the domain).
        n_segments: number of segments (static).
        degree: polynomial degree (static) ≥ 0.

    Returns:
        (n, n_segments·(degree+1)) design matrix.
    """
    return chebyshev_basis(wavelength, segment, ivar, n_segments=n_segments, degree=degree).dense()


class ContinuumFit(NamedTuple):
    """Result of :func:`chebyshev_continuum`.

    Attributes:
        continuum: (n,) fitted polynomial continuum (multiplies the model).
        coefficients: (n_coefficients,) Chebyshev coefficients.
        logdet: log det of the normal matrix DᵀWD (D = model × design) over the columns that
            carry weight, for the marginal likelihood.
        rank: number of columns that carry weight (float, same dtype).
    """

    continuum: jax.Array
    coefficients: jax.Array
    logdet: jax.Array
    rank: jax.Array


def chebyshev_continuum(model, data, ivar, design) -> ContinuumFit:
    """Weighted least-squares continuum c = D·a with data ≈ model × c.

    Minimises Σ ivar (data − model · D a)² in closed form (normal equations, Cholesky), which is
    differentiable in every input. Columns without any weight (e.g. a segment whose pixels are
    all masked) get coefficient 0. A :class:`SegmentedDesign` is solved block by block (its
    segments share no pixel); a dense (n, m) matrix is the one-block case.

    Args:
        model: (n,) model flux before continuum.
        data: (n,) observed flux (non-finite values must carry ivar = 0).
        ivar: (n,) inverse variance, 0 = masked.
        design: a :class:`SegmentedDesign` (:func:`chebyshev_basis`) or an (n, m) design matrix
            (:func:`chebyshev_design`).

    Returns:
        :class:`ContinuumFit`; ``coefficients`` are ordered as the dense design's columns.
    """
    model = jnp.asarray(model)
    dtype = model.dtype
    if not isinstance(design, SegmentedDesign):
        design = jnp.asarray(design)
        design = SegmentedDesign(design, jnp.zeros(design.shape[:1], jnp.int32), 1)
    valid = jnp.asarray(ivar) > 0
    weight = jnp.where(valid, ivar, 0.0).astype(dtype)
    data = jnp.where(valid, data, 0.0).astype(dtype)
    basis = model[:, None] * design.basis.astype(dtype)  # (n, K)
    weighted = basis * weight[:, None]
    n, k = basis.shape
    onehot = design.onehot(dtype)  # (n, S)
    # per-segment normal matrices Σ_i w b_k b_l and right-hand sides Σ_i w b_k d
    normal = (onehot.T @ (weighted[:, :, None] * basis[:, None, :]).reshape(n, k * k)).reshape(-1, k, k)
    rhs = onehot.T @ (weighted * data[:, None])  # (S, K)
    diagonal = jnp.diagonal(normal, axis1=1, axis2=2)  # (S, K)
    scale = jnp.maximum(jnp.max(diagonal), jnp.finfo(dtype).tiny)
    empty = diagonal <= jnp.finfo(dtype).eps * scale
    jitter = 10.0 * jnp.finfo(dtype).eps * scale + jnp.where(empty, scale, 0.0)
    normal = normal + jitter[:, :, None] * jnp.eye(k, dtype=dtype)
    factor = jnp.linalg.cholesky(normal)
    coefficients = jax.vmap(lambda c, b: jax.scipy.linalg.cho_solve((c, True), b))(factor, rhs)
    logdet = 2.0 * jnp.sum(jnp.where(empty, 0.0, jnp.log(jnp.diagonal(factor, axis1=1, axis2=2))))
    rank = jnp.sum(~empty).astype(dtype)
    coefficients = coefficients.reshape(-1)
    return ContinuumFit(design.evaluate(coefficients), coefficients, logdet, rank)
