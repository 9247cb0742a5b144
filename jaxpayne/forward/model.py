"""The forward model: emulator → broadened, shifted, resampled, continuum-normalised spectrum.

:class:`ForwardModel` composes an emulator (anything with ``wavelength``, ``medium``,
``label_names``, ``bounds``, ``predict`` and ``emulator_error``) with the pure steps of
:mod:`jaxpayne.forward`:

1. ``model.predict(labels)`` on the emulator grid;
2. onto the log-uniform working grid (:mod:`~jaxpayne.forward.grid`), ramp-padded per piece;
3. one FFT per piece; multiply by the rotational, macroturbulent and constant-R Gaussian transfer
   functions (:mod:`~jaxpayne.forward.broadening`) and by the cubic B-spline prefilter; inverse FFT;
4. evaluate at each observed pixel's rest-frame position
   :math:`\\ln\\lambda_{obs} - \\operatorname{artanh}(v/c)` (:mod:`~jaxpayne.forward.doppler`) —
   the Doppler shift and the resampling in one C² spline evaluation, or, with a per-pixel LSF, a
   Gaussian window of that pixel's width (:mod:`~jaxpayne.forward.resample`);
5. the continuum treatment, applied identically to model and data
   (:mod:`~jaxpayne.forward.continuum`).

Every method is a pure function of ``(theta, obs)`` — jit, vmap (over theta and/or obs) and grad
work, in float32 and float64 (the dtype of ``theta``/``obs.flux`` is kept).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpayne.forward.broadening import (
    DEFAULT_LIMB_DARKENING,
    FWHM_TO_SIGMA,
    broadening_transfer,
)
from jaxpayne.forward.continuum import (
    DEFAULT_FILTER_WIDTH,
    _smooth_continuum,
    chebyshev_continuum,
    chebyshev_design,
)
from jaxpayne.forward.doppler import SPEED_OF_LIGHT
from jaxpayne.forward.grid import DEFAULT_GAP_FACTOR, WorkingGrid, working_grid
from jaxpayne.forward.observation import Observation, make_observation
from jaxpayne.forward.resample import _gaussian_at, _spline_at, bspline_prefilter

__all__ = ["ContinuumSpec", "ForwardModel", "parse_continuum"]

#: Default largest |radial velocity| [km/s].
DEFAULT_MAX_RV = 500.0
#: Default upper bound on vsini [km/s].
DEFAULT_MAX_VSINI = 300.0
#: Default upper bound on the macroturbulence ζ [km/s].
DEFAULT_MAX_VMACRO = 30.0
#: Kernel half-width kept as margin, in units of ζ (the RT kernel is < 1e-5 of its peak at 3ζ).
MACRO_EXTENT = 3.0
#: Kernel half-width kept as margin, in units of the Gaussian σ.
GAUSSIAN_EXTENT = 5.0
#: Window half-width of the per-pixel Gaussian LSF, in units of its σ.
LSF_WINDOW_SIGMAS = 6.0
#: Smallest per-pixel LSF σ, in working-grid steps, for which the default step is refined.
LSF_MIN_SAMPLING = 1.0
#: Start values of the broadening parameters [km/s]; vsini starts off 0, where its gradient is 0.
INITIAL_VSINI = 5.0
INITIAL_VMACRO = 3.0
#: Default bounds of a free resolving power, as factors of the given resolution.
RESOLUTION_BOUND_FACTORS = (0.5, 2.0)
#: Names the forward model reserves for its own parameters.
RESERVED_NAMES = ("rv", "vsini", "vmacro", "R")


class ContinuumSpec(NamedTuple):
    """Parsed continuum option (see :func:`parse_continuum`).

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


def parse_continuum(spec: str) -> ContinuumSpec:
    """Parse ``"filter"``, ``"filter:WIDTH"``, ``"cheb:N"``, ``"cheb:N:free"`` or ``"none"``.

    Raises:
        ValueError: for anything else.
    """
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


def _piece_slices(grid: WorkingGrid):
    """``[(first, count, ramp)]`` per piece when each piece is a contiguous run of emulator pixels
    followed by a linear ramp from its last pixel back to its first (a direct grid), else None."""
    index, weight = grid.gather_index, grid.gather_weight
    out = []
    for k, count in enumerate(grid.lengths):
        count = int(count)
        first = int(index[k, 0, 0])
        body_ok = (
            np.array_equal(index[k, :count, 0], first + np.arange(count))
            and np.all(weight[k, :count, 0] == 1.0)
            and np.all(weight[k, :count, 1:] == 0.0)
        )
        tail_ok = (
            index.shape[2] >= 2
            and np.all(index[k, count:, 0] == first + count - 1)
            and np.all(index[k, count:, 1] == first)
            and np.allclose(weight[k, count:, 0] + weight[k, count:, 1], 1.0)
            and np.all(weight[k, count:, 2:] == 0.0)
        )
        if not (body_ok and tail_ok):
            return None
        out.append((first, count, np.asarray(weight[k, count:, 1])))
    return out


def _is_concrete(*arrays) -> bool:
    try:
        for a in arrays:
            np.asarray(a)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    return True


class ForwardModel:
    """Differentiable model of the spectrum an instrument records, built around an emulator.

    Args:
        model: the emulator (duck-typed): ``wavelength`` (n_pix,) [Å] sorted, ``medium``
            (``"vacuum"``/``"air"``), ``label_names``, ``bounds`` → (lower, upper),
            ``predict(labels (n_labels,)) → flux (n_pix,)`` (traceable), ``emulator_error`` →
            (n_pix,) rms or None.
        resolution: constant resolving power R of a Gaussian LSF (FWHM = λ/R); None = no
            instrumental broadening (R → ∞, e.g. an emulator already at the instrument's R).
        lsf_sigma: per-pixel Gaussian LSF σ [Å] for instruments whose resolution varies: a float,
            a table ``(wavelength [Å], sigma [Å])`` interpolated linearly, or a traceable callable
            ``wavelength → sigma``; an observation's own ``lsf_sigma`` overrides it. None = no
            per-pixel LSF. Combines with ``resolution`` if both are given.
        rotation: include rotational broadening (parameter ``vsini`` [km/s]).
        macroturbulence: include radial–tangential macroturbulence (parameter ``vmacro`` [km/s]).
        continuum: ``"filter"`` / ``"filter:WIDTH"`` (running-mean pseudo-continuum, L [Å]),
            ``"cheb:N"`` (degree-N Chebyshev per segment, fitted by linear least squares and
            marginalised), ``"cheb:N:free"`` (coefficients are parameters) or ``"none"``.
        n_segments: number of segments (chips/arms) in the observations.
        limb_darkening: linear limb-darkening coefficient ε of the rotational kernel.
        max_rv: largest |rv| [km/s]; bounds of ``rv`` and the Doppler margin of the working grid.
        max_vsini: upper bound of ``vsini`` [km/s] (and the rotational kernel margin).
        max_vmacro: upper bound of ``vmacro`` [km/s].
        fixed: parameter name → value for parameters held fixed (labels, ``rv``, ``vsini``,
            ``vmacro``, ``R``, continuum coefficients); they are left out of ``theta``.
        obs_wavelength_range: (lo, hi) [Å, model medium] of the observed pixels to be modelled;
            default the largest range the emulator allows after the margins.
        fit_resolution: make ``R`` a free parameter (start value ``resolution``).
        resolution_bounds: (lower, upper) bounds of a free R; default (R/2, 2R).
        velocity_step: working-grid step [km/s]; default from the emulator grid (see
            :func:`~jaxpayne.forward.grid.working_grid`).
        max_lsf_sigma: largest per-pixel LSF σ [Å] that observations may carry (sets the
            window); default the largest value of ``lsf_sigma`` over the range.
        gap_factor: step ratio marking a gap in the emulator grid.

    Raises:
        ValueError: for an invalid option, a label name that collides with a forward-model
            parameter, unknown ``fixed`` names, or an observed range the emulator cannot cover.

    Example:
        >>> fm = ForwardModel(emulator, resolution=22_500, continuum="cheb:3", n_segments=3)
        >>> obs = fm.observation(wavelength, flux, error=error, segment=chip)
        >>> loss = jax.jit(jax.value_and_grad(lambda t: -fm.loglike(t, obs)))
        >>> value, gradient = loss(fm.initial)
    """

    def __init__(
        self,
        model: Any,
        *,
        resolution: float | None = None,
        lsf_sigma: float | tuple | Callable | None = None,
        rotation: bool = True,
        macroturbulence: bool = True,
        continuum: str = "filter",
        n_segments: int = 1,
        limb_darkening: float = DEFAULT_LIMB_DARKENING,
        max_rv: float = DEFAULT_MAX_RV,
        max_vsini: float = DEFAULT_MAX_VSINI,
        max_vmacro: float = DEFAULT_MAX_VMACRO,
        fixed: Mapping[str, float] | None = None,
        obs_wavelength_range: tuple[float, float] | None = None,
        fit_resolution: bool = False,
        resolution_bounds: tuple[float, float] | None = None,
        velocity_step: float | None = None,
        max_lsf_sigma: float | None = None,
        gap_factor: float = DEFAULT_GAP_FACTOR,
    ):
        self.model = model
        self.medium = str(getattr(model, "medium", "vacuum")).lower()
        self.label_names = tuple(str(n) for n in model.label_names)
        self.continuum = parse_continuum(continuum)
        self.n_segments = int(n_segments)
        self.rotation = bool(rotation)
        self.macroturbulence = bool(macroturbulence)
        self.limb_darkening = float(limb_darkening)
        self.max_rv = float(max_rv)
        self.resolution = None if resolution is None else float(resolution)
        self.fit_resolution = bool(fit_resolution)
        fixed = dict(fixed or {})
        self._check_options(max_vsini, max_vmacro)

        # --- parameters --------------------------------------------------------------------
        lower_l, upper_l = (np.asarray(b, dtype=np.float64).reshape(-1) for b in model.bounds)
        names, lower, upper, initial = [], [], [], []

        def add(name, lo, hi, start):
            names.append(name)
            lower.append(lo)
            upper.append(hi)
            initial.append(start)

        for name, lo, hi in zip(self.label_names, lower_l, upper_l):
            add(name, lo, hi, 0.5 * (lo + hi))
        add("rv", -self.max_rv, self.max_rv, 0.0)
        if self.rotation:
            add("vsini", 0.0, float(max_vsini), min(INITIAL_VSINI, float(max_vsini)))
        if self.macroturbulence:
            add("vmacro", 0.0, float(max_vmacro), min(INITIAL_VMACRO, float(max_vmacro)))
        if self.fit_resolution:
            lo_r, hi_r = resolution_bounds or tuple(
                f * self.resolution for f in RESOLUTION_BOUND_FACTORS
            )
            add("R", float(lo_r), float(hi_r), self.resolution)
        self.continuum_names: tuple[str, ...] = ()
        if self.continuum.kind == "cheb" and self.continuum.free:
            cont = []
            for s in range(self.n_segments):
                for k in range(self.continuum.degree + 1):
                    cont.append(f"cont_s{s}_c{k}")
                    add(cont[-1], -np.inf, np.inf, 1.0 if k == 0 else 0.0)
            self.continuum_names = tuple(cont)
        unknown = set(fixed) - set(names)
        if unknown:
            raise ValueError(f"unknown fixed parameter(s) {sorted(unknown)}; known: {names}")
        self.fixed = {k: float(v) for k, v in fixed.items()}
        self.all_names = tuple(names)
        free = [i for i, n in enumerate(names) if n not in self.fixed]
        self.param_names = tuple(names[i] for i in free)
        self.lower = np.array([lower[i] for i in free], dtype=np.float64)
        self.upper = np.array([upper[i] for i in free], dtype=np.float64)
        self.initial = np.array([initial[i] for i in free], dtype=np.float64)
        self._free_index = {names[i]: j for j, i in enumerate(free)}

        # --- LSF and kernel margins --------------------------------------------------------
        model_wavelength = np.asarray(model.wavelength, dtype=np.float64).reshape(-1)
        self._lsf = self._lsf_function(lsf_sigma)
        kernel = 0.0
        if self.rotation:
            kernel += self.fixed.get("vsini", float(max_vsini))
        if self.macroturbulence:
            kernel += MACRO_EXTENT * self.fixed.get("vmacro", float(max_vmacro))
        if self.resolution is not None:
            r_min = self.fixed.get("R", self.lower[self._free_index["R"]] if "R" in self._free_index
                                   else self.resolution)
            kernel += GAUSSIAN_EXTENT * SPEED_OF_LIGHT * FWHM_TO_SIGMA / r_min
        max_step = None
        self._lsf_range = None
        if self._lsf is not None:
            probe = np.linspace(model_wavelength[0], model_wavelength[-1], 2048)
            sigma = np.asarray(self._lsf(probe), dtype=np.float64) / probe * SPEED_OF_LIGHT
            if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
                raise ValueError("lsf_sigma must be finite and > 0 over the model's range")
            sigma_max = float(sigma.max())
            if max_lsf_sigma is not None:
                sigma_max = max(sigma_max, float(max_lsf_sigma) / probe[0] * SPEED_OF_LIGHT)
            self._lsf_range = (float(sigma.min()), sigma_max)  # [km/s]
            kernel += LSF_WINDOW_SIGMAS * sigma_max
            max_step = float(sigma.min()) / LSF_MIN_SAMPLING
        self.kernel_velocity = kernel

        self.grid: WorkingGrid = working_grid(
            model_wavelength,
            observed_range=obs_wavelength_range,
            max_rv=self.max_rv,
            kernel_velocity=kernel,
            velocity_step=velocity_step,
            max_velocity_step=max_step,
            gap_factor=gap_factor,
        )
        if self._lsf_range is not None:
            window = self._lsf_range[1] * LSF_WINDOW_SIGMAS / self.grid.velocity_step
            self._lsf_window = int(math.ceil(window))
        self._slices = _piece_slices(self.grid)
        self._frequency = self.grid.frequency()
        self._prefilter = bspline_prefilter(self.grid.fft_length)
        self._error_coefficients = self._emulator_error_coefficients()
        # Compiled cores (nested inside a caller's jit/vmap/grad they are simply inlined); the
        # public methods add the eager range check in front.
        self._model_flux_core = jax.jit(self._model_flux_impl)
        self._normalized_core = jax.jit(self._normalized_impl, static_argnums=(2,))
        self._residuals_core = jax.jit(self._residuals_impl, static_argnums=(2,))
        self._loglike_core = jax.jit(self._loglike_impl, static_argnums=(2, 4))

    # ------------------------------------------------------------------ construction helpers
    def _check_options(self, max_vsini, max_vmacro):
        if self.n_segments < 1:
            raise ValueError(f"n_segments must be ≥ 1, got {self.n_segments}")
        if not 0.0 <= self.limb_darkening <= 1.0:
            raise ValueError(f"limb_darkening must be in [0, 1], got {self.limb_darkening}")
        if not 0.0 < self.max_rv < SPEED_OF_LIGHT:
            raise ValueError(f"max_rv must be in (0, c), got {self.max_rv}")
        if max_vsini <= 0 or max_vmacro <= 0:
            raise ValueError("max_vsini and max_vmacro must be > 0")
        if self.resolution is not None and not self.resolution > 0:
            raise ValueError(f"resolution must be > 0 or None, got {self.resolution}")
        if self.fit_resolution and self.resolution is None:
            raise ValueError("fit_resolution=True needs a starting resolution=R")
        if self.medium not in ("vacuum", "air"):
            raise ValueError(f"model.medium must be 'vacuum' or 'air', got {self.medium!r}")
        enabled = {"rv": True, "vsini": self.rotation, "vmacro": self.macroturbulence,
                   "R": self.fit_resolution}
        for name in self.label_names:
            for reserved in RESERVED_NAMES:
                if name.lower() == reserved.lower() and enabled[reserved]:
                    hint = {"vsini": "rotation=False", "vmacro": "macroturbulence=False",
                            "R": "fit_resolution=False"}.get(reserved, "a different label name")
                    raise ValueError(
                        f"emulator label {name!r} collides with the forward-model parameter "
                        f"{reserved!r}; the emulator already models it, so pass {hint}"
                    )

    @staticmethod
    def _lsf_function(spec):
        if spec is None:
            return None
        if callable(spec):
            return spec
        if isinstance(spec, tuple) and len(spec) == 2:
            nodes = np.asarray(spec[0], dtype=np.float64)
            values = np.asarray(spec[1], dtype=np.float64)
            if nodes.shape != values.shape or nodes.ndim != 1 or np.any(np.diff(nodes) <= 0):
                raise ValueError(
                    "lsf_sigma table must be (sorted wavelengths, sigmas) of equal size"
                )

            def table(wavelength):
                if isinstance(wavelength, np.ndarray):
                    return np.interp(wavelength, nodes, values)
                dtype = wavelength.dtype
                return jnp.interp(wavelength, jnp.asarray(nodes, dtype), jnp.asarray(values, dtype))

            return table
        value = float(spec)

        def constant(wavelength):
            return value + 0.0 * wavelength

        return constant

    def _emulator_error_coefficients(self):
        error = getattr(self.model, "emulator_error", None)
        if error is None:
            return None
        error = np.asarray(error, dtype=np.float64).reshape(-1)
        padded = np.sum(error[self.grid.gather_index] * self.grid.gather_weight, axis=-1)
        spectrum = np.fft.rfft(padded, axis=-1) * self._prefilter
        return np.fft.irfft(spectrum, n=self.grid.fft_length, axis=-1).reshape(-1)

    # ------------------------------------------------------------------ parameters
    @property
    def n_params(self) -> int:
        """Number of free parameters."""
        return len(self.param_names)

    def parameters(self, theta) -> dict[str, jax.Array]:
        """All parameters (free and fixed) by name, in physical units.

        Args:
            theta: (n_params,) free parameters in the order of :attr:`param_names`.

        Returns:
            dict name → scalar array (dtype of ``theta``).
        """
        theta = jnp.asarray(theta)
        if theta.shape != (self.n_params,):
            raise ValueError(
                f"theta must have shape ({self.n_params},) for parameters {self.param_names}, "
                f"got {theta.shape}"
            )
        values = {}
        for name in self.all_names:
            if name in self.fixed:
                values[name] = jnp.asarray(self.fixed[name], dtype=theta.dtype)
            else:
                values[name] = theta[self._free_index[name]]
        return values

    def pack(self, values: Mapping[str, float] | None = None) -> np.ndarray:
        """Free-parameter vector from named values (missing ones take :attr:`initial`).

        Raises:
            ValueError: for unknown or fixed names.
        """
        theta = self.initial.copy()
        for name, value in (values or {}).items():
            if name not in self._free_index:
                raise ValueError(f"{name!r} is not a free parameter; free: {self.param_names}")
            theta[self._free_index[name]] = float(value)
        return theta

    # ------------------------------------------------------------------ observations
    def valid_wavelength(self, wavelength) -> np.ndarray:
        """Whether observed wavelengths [Å, model medium] can be modelled (numpy bool)."""
        wavelength = np.asarray(wavelength, dtype=np.float64)
        ok = np.zeros(wavelength.shape, bool)
        for lo, hi in self.grid.allowed:
            ok |= (wavelength >= lo) & (wavelength <= hi)
        return ok

    def check_observation(self, obs: Observation) -> None:
        """Raise a ValueError if an unmasked pixel cannot be modelled (eager; any batch shape).

        Raises:
            ValueError: for unmasked pixels outside the modelled range (beyond the emulator's
                range after ``max_rv`` and the kernel margin, or in a gap of the emulator grid),
                segment indices outside [0, n_segments), or LSF widths beyond the window.
        """
        wavelength = np.asarray(obs.wavelength, dtype=np.float64)
        active = np.asarray(obs.ivar) > 0
        bad = active & ~self.valid_wavelength(wavelength)
        if np.any(bad):
            ranges = ", ".join(f"{lo:.2f}–{hi:.2f}" for lo, hi in self.grid.allowed)
            raise ValueError(
                f"{int(bad.sum())} unmasked pixel(s) (e.g. {wavelength[bad].min():.2f} Å) lie "
                f"outside the range this forward model covers ({ranges} Å, {self.medium}): the "
                f"emulator has no flux within max_rv={self.max_rv:g} km/s plus the "
                f"{self.kernel_velocity:.1f} km/s broadening margin of them. Mask them (ivar=0, "
                "e.g. ForwardModel.observation(..., outside='mask')) or build the model with a "
                "smaller max_rv / max_vsini / max_vmacro"
            )
        segment = np.asarray(obs.segment)
        if np.any(active & ((segment < 0) | (segment >= self.n_segments))):
            raise ValueError(
                f"segment indices must lie in [0, {self.n_segments}) (n_segments="
                f"{self.n_segments}), got values {np.unique(segment[active]).tolist()}"
            )
        if obs.lsf_sigma is not None and self._lsf_range is not None:
            sigma = np.asarray(obs.lsf_sigma, dtype=np.float64) / wavelength * SPEED_OF_LIGHT
            if np.any(active & ~(sigma > 0)) or np.any(
                active & (sigma > self._lsf_range[1] * (1 + 1e-9))
            ):
                raise ValueError(
                    "observation lsf_sigma must be > 0 and ≤ the forward model's max_lsf_sigma "
                    f"({self._lsf_range[1]:.3f} km/s); rebuild it with a larger max_lsf_sigma"
                )

    def observation(
        self,
        wavelength,
        flux,
        ivar=None,
        *,
        error=None,
        segment=None,
        medium: str | None = None,
        lsf_sigma=None,
        outside: str = "error",
    ) -> Observation:
        """Build a checked :class:`Observation` in this model's medium (eager).

        Args:
            wavelength: (n,) observed wavelengths [Å] in ``medium``.
            flux: (n,) flux.
            ivar: (n,) inverse variance (or give ``error``).
            error: (n,) 1σ uncertainty.
            segment: (n,) segment indices, ``"gaps"``, or None (one segment).
            medium: medium of ``wavelength``; default the model's.
            lsf_sigma: optional (n,) per-pixel LSF σ [Å].
            outside: ``"error"`` (raise for unmasked pixels that cannot be modelled) or
                ``"mask"`` (set their ivar to 0).

        Returns:
            The :class:`Observation`.
        """
        obs = make_observation(
            wavelength, flux, ivar, segment, error=error, medium=medium or self.medium,
            model_medium=self.medium, lsf_sigma=lsf_sigma,
        )
        if outside == "mask":
            ok = self.valid_wavelength(np.asarray(obs.wavelength))
            obs = obs._replace(ivar=jnp.where(ok, obs.ivar, 0.0), flux=jnp.where(ok, obs.flux, 0.0))
        elif outside != "error":
            raise ValueError(f"outside must be 'error' or 'mask', got {outside!r}")
        self.check_observation(obs)
        return obs

    # ------------------------------------------------------------------ model evaluation
    def _dtype(self, theta, obs):
        return jnp.result_type(jnp.asarray(theta).dtype, jnp.asarray(obs.flux).dtype)

    def _broadened(self, values, dtype, spline: bool):
        """Broadened working-grid spectrum, flat (n_pieces·N,): spline coefficients or samples."""
        labels = jnp.stack([values[n] for n in self.label_names]).astype(dtype)
        flux = jnp.asarray(self.model.predict(labels)).astype(dtype).reshape(-1)
        padded = self._to_working_grid(flux)  # (n_pieces, N)
        frequency = jnp.asarray(self._frequency, dtype)
        transfer = broadening_transfer(
            frequency,
            vsini=values.get("vsini") if self.rotation else None,
            vmacro=values.get("vmacro") if self.macroturbulence else None,
            resolution=(values.get("R", self.resolution) if self.resolution is not None else None),
            limb_darkening=self.limb_darkening,
        )
        if spline:
            transfer = transfer * jnp.asarray(self._prefilter, dtype)
        spectrum = jnp.fft.rfft(padded, axis=-1) * transfer
        out = jnp.fft.irfft(spectrum, n=self.grid.fft_length, axis=-1).astype(dtype)
        return out.reshape(-1)

    def _to_working_grid(self, flux):
        """Emulator flux (n_pix,) → ramp-padded working-grid pieces (n_pieces, N).

        When the nodes are the emulator's own pixels this is slicing (XLA gathers are slow on
        CPUs, above all for the Jacobian's tangents); otherwise the fixed interpolation weights.
        """
        dtype = flux.dtype
        if self._slices is None:
            index, weight = self.grid.gather_index, self.grid.gather_weight
            # one gather per tap (XLA's CPU gather with a trailing tap axis is ~20x slower)
            return sum(flux[jnp.asarray(index[..., k])] * jnp.asarray(weight[..., k], dtype)
                       for k in range(index.shape[-1]))
        rows = []
        for first, count, ramp in self._slices:
            tail = (1.0 - ramp.astype(dtype)) * flux[first + count - 1] + ramp.astype(dtype) * flux[first]
            rows.append(jnp.concatenate([flux[first : first + count], tail]))
        return jnp.stack(rows)

    def _positions(self, wavelength, rv, dtype):
        """Anchor (flat index) and offset [nodes] of each pixel's rest-frame position."""
        grid = self.grid
        wavelength = wavelength.astype(dtype)
        anchor_lambda = np.exp(grid.anchor_log).astype(dtype)
        correction = (np.log(anchor_lambda.astype(np.float64)) - grid.anchor_log) / grid.log_step
        edges = jnp.asarray(grid.anchor_edges, dtype)
        which = jnp.clip(jnp.searchsorted(edges, wavelength, side="right") - 1, 0, edges.size - 1)
        reference = jnp.asarray(anchor_lambda)[which]
        offset = (
            jnp.log1p((wavelength - reference) / reference) / grid.log_step
            + jnp.asarray(correction, dtype)[which]
            - jnp.arctanh(rv / SPEED_OF_LIGHT) / grid.log_step
        )
        return which, offset

    def _evaluate(self, values, obs, dtype, with_error: bool):
        """Model flux (n,) on the observed pixels and, optionally, the emulator σ there."""
        grid = self.grid
        which, offset = self._positions(jnp.asarray(obs.wavelength), values["rv"], dtype)
        base = jnp.asarray(grid.anchor_flat)[which]
        lower = jnp.asarray(grid.spline_lower, dtype)[which]
        upper = jnp.asarray(grid.spline_upper, dtype)[which]
        if self._lsf is None:
            coefficients = self._broadened(values, dtype, spline=True)
            flux = _spline_at(coefficients, base, offset, lower, upper)
        else:
            samples = self._broadened(values, dtype, spline=False)
            wavelength = jnp.asarray(obs.wavelength).astype(dtype)
            sigma = obs.lsf_sigma if obs.lsf_sigma is not None else self._lsf(wavelength)
            sigma_nodes = jnp.asarray(sigma, dtype) / wavelength / grid.log_step
            flux = _gaussian_at(
                samples, base, jnp.clip(offset, lower, upper), sigma_nodes, self._lsf_window,
                jnp.asarray(grid.piece_first)[which], jnp.asarray(grid.piece_last)[which],
            )
        error = None
        if with_error:
            if self._error_coefficients is None:
                raise ValueError("emulator_error=True but the emulator has no emulator_error")
            error = _spline_at(
                jnp.asarray(self._error_coefficients, dtype), base, offset, lower, upper
            )
        return flux, error

    def model_flux(self, theta, obs: Observation):
        """Broadened, Doppler-shifted model resampled onto the observed pixels (no continuum).

        Args:
            theta: (n_params,) free parameters (physical units, order :attr:`param_names`).
            obs: the observation (only ``wavelength`` and, if present, ``lsf_sigma`` are used;
                masked pixels get a finite value).

        Returns:
            (n,) model flux in the emulator's units.

        Raises:
            ValueError: (eagerly, when ``obs`` is concrete) for unmasked pixels that cannot be
                modelled; see :meth:`check_observation`.
        """
        self._check_if_concrete(theta, obs)
        return self._model_flux_core(jnp.asarray(theta), obs)

    def _model_flux_impl(self, theta, obs):
        dtype = self._dtype(theta, obs)
        flux, _ = self._evaluate(self.parameters(theta), obs, dtype, with_error=False)
        return flux

    def _check_if_concrete(self, theta, obs):
        if jnp.shape(theta) != (self.n_params,):
            raise ValueError(
                f"theta must have shape ({self.n_params},) for parameters {self.param_names}, "
                f"got {jnp.shape(theta)}"
            )
        if _is_concrete(obs.wavelength, obs.ivar):
            self.check_observation(obs)

    def _prepare(self, obs, dtype) -> dict:
        """Data-side quantities of :meth:`_normalize` that do not depend on theta.

        A fitter computes them once per spectrum instead of at every evaluation.

        Returns:
            dict with ``valid`` (usable pixels), ``ivar``, ``data`` (zeroed where not valid),
            ``wavelength``, ``segment`` and, for the filter continuum, ``smooth_data`` (the
            data's running mean) and ``smooth_weight`` (the filter's denominator, shared with
            the model's running mean).
        """
        ivar_raw = jnp.asarray(obs.ivar).astype(dtype)
        flux_raw = jnp.asarray(obs.flux).astype(dtype)
        valid = (ivar_raw > 0) & jnp.isfinite(ivar_raw) & jnp.isfinite(flux_raw)
        prepared = dict(
            valid=valid,
            ivar=jnp.where(valid, ivar_raw, 0.0),
            data=jnp.where(valid, flux_raw, 0.0),
            wavelength=jnp.asarray(obs.wavelength).astype(dtype),
            segment=jnp.asarray(obs.segment, jnp.int32),
        )
        if self.continuum.kind == "filter":
            prepared["smooth_data"], prepared["smooth_weight"] = self._smooth(prepared["data"], prepared)
        return prepared

    def _used(self, prepared) -> jax.Array:
        """Pixels that enter the likelihood (as in :meth:`_normalize`): the data-valid ones, less,
        for the filter continuum, those whose running mean is 0 (normalised ivar 0)."""
        if self.continuum.kind == "filter":
            return prepared["valid"] & (prepared["smooth_data"] != 0)
        return prepared["valid"]

    def _smooth(self, flux, prepared):
        """The running mean of ``flux`` with the data's weights, and the filter's denominator."""
        return _smooth_continuum(flux, prepared["ivar"], prepared["wavelength"], prepared["segment"],
                                 width=self.continuum.width, n_segments=self.n_segments,
                                 wavelength_range=self._filter_range(),
                                 denominator=prepared.get("smooth_weight"))

    def _normalize(self, theta, obs, emulator_error: bool, inflation, prepared: dict | None = None):
        """Shared core of normalized / residuals / loglike.

        ``prepared`` (from :meth:`_prepare`) skips recomputing the data side.

        Returns (model_norm, data_norm, ivar_norm, valid, log_continuum, marginal) where
        ``log_continuum`` (n,) is log|continuum| of the data-space model (0 unless cheb) and
        ``marginal`` the log-marginalisation term of the analytic Chebyshev fit (scalar).
        """
        dtype = self._dtype(theta, obs)
        values = self.parameters(theta)
        model, error = self._evaluate(values, obs, dtype, with_error=emulator_error)
        if prepared is None:
            prepared = self._prepare(obs, dtype)
        valid, ivar, data = prepared["valid"], prepared["ivar"], prepared["data"]
        wavelength, segment = prepared["wavelength"], prepared["segment"]
        zero = jnp.zeros((), dtype)
        log_continuum = jnp.zeros_like(data)
        marginal = zero
        model_error = error
        kind = self.continuum.kind
        if kind == "none":
            model_norm, data_norm, ivar_norm = model, data, ivar
        elif kind == "filter":
            smooth_data = prepared["smooth_data"]
            smooth_model = self._smooth(model, prepared)[0]
            model_norm = model / smooth_model
            data_norm = data / smooth_data
            ivar_norm = ivar * smooth_data**2
            if error is not None:
                model_error = error / smooth_model
        else:  # Chebyshev
            design = chebyshev_design(
                wavelength, segment, ivar, n_segments=self.n_segments,
                degree=self.continuum.degree,
            )
            if self.continuum.free:
                coefficients = jnp.stack([values[n] for n in self.continuum_names]).astype(dtype)
                continuum = design @ coefficients
            else:
                fit = chebyshev_continuum(model, data, ivar / inflation**2, design)
                continuum = fit.continuum
                marginal = 0.5 * fit.rank * jnp.log(2.0 * jnp.pi) - 0.5 * fit.logdet
            magnitude = jnp.abs(continuum)
            safe = jnp.where(valid & (magnitude > 0), continuum, 1.0)
            model_norm = model
            data_norm = data / safe
            ivar_norm = jnp.where(valid, ivar * safe**2, 0.0)
            log_continuum = jnp.where(valid, jnp.log(jnp.abs(safe)), 0.0)
        if model_error is not None:
            ivar_norm = ivar_norm / (1.0 + ivar_norm * model_error**2)
        valid = valid & (ivar_norm > 0)
        ivar_norm = jnp.where(valid, ivar_norm, 0.0)
        data_norm = jnp.where(valid, data_norm, 0.0)
        return model_norm, data_norm, ivar_norm, valid, log_continuum, marginal

    def _filter_range(self):
        allowed = self.grid.allowed
        return float(allowed[:, 0].min()), float(allowed[:, 1].max())

    def normalized(self, theta, obs: Observation, emulator_error: bool = False):
        """Model and data with the continuum treatment applied identically to both.

        * ``filter``: both divided by their ivar-weighted running means (computed with the
          observation's ivar and mask); ``ivar_norm = ivar · smooth(data)²``.
        * ``cheb``: data divided by the Chebyshev continuum c (fitted to data ≈ model·c, or from
          the free coefficients); ``ivar_norm = ivar · c²``; model unchanged.
        * ``none``: unchanged.

        Args:
            theta: (n_params,) free parameters.
            obs: the observation.
            emulator_error: add the emulator's rms error (resampled to the observed pixels and
                normalised like the model) in quadrature to the data variance.

        Returns:
            (model_norm, data_norm, ivar_norm), each (n,); ivar_norm = 0 and data_norm = 0 at
            masked pixels.
        """
        self._check_if_concrete(theta, obs)
        return self._normalized_core(jnp.asarray(theta), obs, bool(emulator_error))

    def _normalized_impl(self, theta, obs, emulator_error):
        model_norm, data_norm, ivar_norm, *_ = self._normalize(theta, obs, emulator_error, 1.0)
        return model_norm, data_norm, ivar_norm

    def residuals(self, theta, obs: Observation, emulator_error: bool = False, inflation=1.0):
        """Whitened residuals (data_norm − model_norm)·sqrt(ivar_norm)/inflation.

        Args:
            theta: (n_params,) free parameters.
            obs: the observation.
            emulator_error: include the emulator error (see :meth:`normalized`).
            inflation: factor (> 0) by which all uncertainties are scaled.

        Returns:
            (n,) residuals, exactly 0 at masked pixels.
        """
        self._check_if_concrete(theta, obs)
        return self._residuals_core(jnp.asarray(theta), obs, bool(emulator_error), inflation)

    def _residuals_impl(self, theta, obs, emulator_error, inflation, prepared=None):
        model_norm, data_norm, ivar_norm, valid, *_ = self._normalize(
            theta, obs, emulator_error, inflation, prepared
        )
        root = jnp.sqrt(jnp.where(valid, ivar_norm, 1.0))
        return jnp.where(valid, (data_norm - model_norm) * root / inflation, 0.0)

    def loglike(
        self, theta, obs: Observation, emulator_error: bool = False, inflation=1.0,
        marginalize: bool = True,
    ):
        """Gaussian log-likelihood of the observed spectrum, normalisation term included.

        .. math:: \\ln L = -\\tfrac12\\sum_i r_i^2
                  + \\tfrac12\\sum_i \\ln\\frac{w_i}{2\\pi\\,s^2} - \\sum_i \\ln|c_i|
                  \\;[+\\ \\tfrac{K}{2}\\ln 2\\pi - \\tfrac12\\ln\\det A]

        over unmasked pixels, with r the :meth:`residuals`, w = ivar_norm, s = ``inflation``, c
        the Chebyshev continuum (the Jacobian that makes this the likelihood of the *observed*
        flux; absent for ``filter``/``none``, whose likelihood is that of the normalised flux),
        and, for ``cheb:N`` with ``marginalize``, the analytic marginalisation over the K
        continuum coefficients under a flat prior (A = DᵀWD the normal matrix).

        Args:
            theta: (n_params,) free parameters.
            obs: the observation.
            emulator_error: include the emulator error.
            inflation: uncertainty inflation factor s > 0.
            marginalize: include the Chebyshev marginalisation term (else the profile
                likelihood at the least-squares continuum).

        Returns:
            Scalar log-likelihood.
        """
        self._check_if_concrete(theta, obs)
        return self._loglike_core(
            jnp.asarray(theta), obs, bool(emulator_error), inflation, bool(marginalize)
        )

    def _loglike_impl(self, theta, obs, emulator_error, inflation, marginalize):
        model_norm, data_norm, ivar_norm, valid, log_continuum, marginal = self._normalize(
            theta, obs, emulator_error, inflation
        )
        weight = jnp.where(valid, ivar_norm, 1.0) / inflation**2
        chi2 = jnp.sum(jnp.where(valid, (data_norm - model_norm) ** 2 * weight, 0.0))
        norm = jnp.sum(jnp.where(valid, jnp.log(weight / (2.0 * jnp.pi)), 0.0))
        result = -0.5 * chi2 + 0.5 * norm - jnp.sum(log_continuum)
        if marginalize:
            result = result + marginal
        return result
