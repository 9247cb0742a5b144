"""The forward model: emulator → broadened, shifted, resampled, continuum-normalised spectrum.

:class:`ForwardModel` holds the static description of the model — the emulator, the
:class:`~jaxpayne.forward.ParameterSpace`, the working grid, the instrument and the continuum
treatment — and, as its only pytree leaves, the emulator's **weights**. It is a registered pytree,
so it is an ordinary argument of jitted, vmapped and differentiated functions: ``jax.grad`` with
respect to the weights through the whole forward model works, and a copy with other weights
(:meth:`ForwardModel.with_weights`) reuses every compiled function.

The computation is a composition of public pure functions (each takes the forward model as its
first argument):

1. :func:`~jaxpayne.forward.model_spectrum` (:mod:`~jaxpayne.forward.spectrum`): emulator →
   working grid → FFT broadening (rotation, macroturbulence, constant-R Gaussian) → Doppler shift
   and resampling onto the observed pixels in one C² spline evaluation (or a per-pixel Gaussian
   LSF), with the emulator's own error resampled alike;
2. :func:`~jaxpayne.forward.prepare_data` and :func:`~jaxpayne.forward.apply_continuum`
   (:mod:`~jaxpayne.forward.likelihood`): the continuum step, identical for model and data;
3. :func:`~jaxpayne.forward.gaussian_loglike`, :func:`~jaxpayne.forward.whitened_residuals`,
   :func:`~jaxpayne.forward.fisher_matrix`.

The methods of :class:`ForwardModel` are conveniences over these: they take the flat vector of
free parameters (or a dict of them), accept per-call values of the fixed parameters (``fixed=``,
traced values allowed, so a per-star rv or resolution vmaps), check concrete observations
eagerly and run compiled.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxpayne.forward import _protocol
from jaxpayne.forward import likelihood as _likelihood
from jaxpayne.forward.broadening import DEFAULT_LIMB_DARKENING
from jaxpayne.forward.continuum import ContinuumSpec, parse_continuum
from jaxpayne.forward.doppler import SPEED_OF_LIGHT
from jaxpayne.forward.grid import DEFAULT_GAP_FACTOR, WorkingGrid, working_grid
from jaxpayne.forward.instrument import LSF_MIN_SAMPLING, LSF_WINDOW_SIGMAS, kernel_margin, lsf_function
from jaxpayne.forward.likelihood import DEFAULT_SETTINGS, LikelihoodSettings
from jaxpayne.forward.observation import Observation, make_observation
from jaxpayne.forward.parameters import ParameterSpace
from jaxpayne.forward.resample import bspline_prefilter
from jaxpayne.forward.spectrum import model_spectrum as _model_spectrum
from jaxpayne.forward.spectrum import usable_pixels

__all__ = ["ContinuumSpec", "ForwardModel", "forward_model_from_options", "parse_continuum"]

#: Default largest absolute radial velocity [km/s].
DEFAULT_MAX_RV = 500.0
#: Default upper bound on vsini [km/s].
DEFAULT_MAX_VSINI = 300.0
#: Default upper bound on the macroturbulence ζ [km/s].
DEFAULT_MAX_VMACRO = 30.0
#: Start values of the broadening parameters [km/s]; vsini starts off 0, where its gradient is 0.
INITIAL_VSINI = 5.0
INITIAL_VMACRO = 3.0
#: Default bounds of a free resolving power, as factors of the given resolution.
RESOLUTION_BOUND_FACTORS = (0.5, 2.0)
#: Names the forward model reserves for its own parameters.
RESERVED_NAMES = ("rv", "vsini", "vmacro", "R")
#: Units of the forward model's own parameters.
PARAMETER_UNITS = {"rv": "km/s", "vsini": "km/s", "vmacro": "km/s", "R": ""}


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


@jax.tree_util.register_pytree_node_class
class ForwardModel:
    """Differentiable model of the spectrum an instrument records, built around an emulator.

    Args:
        model: the emulator (duck-typed): ``wavelength`` (n_pix,) [Å] sorted, ``medium``
            (``"vacuum"``/``"air"``), ``label_names``, ``bounds`` → (lower, upper) and either
            ``params`` with a pure ``apply(params, labels)`` (a :class:`jaxpayne.Model`: the
            weights become this pytree's leaves) or a traceable ``predict(labels)``; optionally
            ``label_units`` and ``emulator_error`` → (n_pix,) rms or None.
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
        limb_darkening: linear limb-darkening coefficient ε of the rotational kernel. The default
            0.6 suits the optical (~5000 Å); in the near infrared (APOGEE's H band) limb darkening
            is weaker, ε ≈ 0.3–0.4 (Claret 2000, A&A 363, 1081).
        max_rv: largest abs(rv) [km/s]: the bounds of ``rv`` and, while rv is free, the Doppler
            margin of the working grid. A fixed rv uses its own value as the margin.
        max_vsini: upper bound of ``vsini`` [km/s] and, while vsini is free, the rotational
            kernel's margin (a fixed vsini uses its value).
        max_vmacro: upper bound of ``vmacro`` [km/s] (margin likewise).
        fixed: parameter name → value for parameters held fixed (labels, ``rv``, ``vsini``,
            ``vmacro``, ``R``, continuum coefficients); they are left out of ``theta``, and each
            call may override the value (``fixed=`` of the methods) within the margins.
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
        self.emulator = model
        has_weights = hasattr(model, "apply") and getattr(model, "params", None) is not None
        self.weights = model.params if has_weights else None
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
        fixed = {k: float(v) for k, v in dict(fixed or {}).items()}
        self._check_options(max_vsini, max_vmacro)
        self.space = self._parameter_space(model, fixed, float(max_vsini), float(max_vmacro),
                                           resolution_bounds)
        self.continuum_names = tuple(n for n in self.space.names if n.startswith("cont_s"))
        if "rv" in fixed and abs(fixed["rv"]) > self.max_rv:
            raise ValueError(f"fixed rv={fixed['rv']:g} km/s exceeds max_rv={self.max_rv:g}")

        # --- LSF and kernel margins (a fixed broadening parameter uses its own value) ---------
        model_wavelength = np.asarray(model.wavelength, dtype=np.float64).reshape(-1)
        self.lsf = lsf_function(lsf_sigma)
        max_step = None
        self.lsf_range = None
        if self.lsf is not None:
            probe = np.linspace(model_wavelength[0], model_wavelength[-1], 2048)
            sigma = np.asarray(self.lsf(probe), dtype=np.float64) / probe * SPEED_OF_LIGHT
            if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
                raise ValueError("lsf_sigma must be finite and > 0 over the model's range")
            sigma_max = float(sigma.max())
            if max_lsf_sigma is not None:
                sigma_max = max(sigma_max, float(max_lsf_sigma) / probe[0] * SPEED_OF_LIGHT)
            self.lsf_range = (float(sigma.min()), sigma_max)  # [km/s]
            max_step = float(sigma.min()) / LSF_MIN_SAMPLING
        space = self.space
        r_min = None
        if self.resolution is not None:
            r_min = fixed.get("R", space.bounds_of("R")[0] if self.fit_resolution else self.resolution)
        self.kernel_velocity = kernel_margin(
            vsini=fixed.get("vsini", float(max_vsini)) if self.rotation else None,
            vmacro=fixed.get("vmacro", float(max_vmacro)) if self.macroturbulence else None,
            resolution=r_min,
            lsf_sigma_velocity=None if self.lsf_range is None else self.lsf_range[1],
        )
        #: Doppler margin [km/s] of the working grid: max_rv, or abs(rv) when rv is fixed.
        self.rv_margin = abs(fixed["rv"]) if "rv" in fixed else self.max_rv

        self.grid: WorkingGrid = working_grid(
            model_wavelength,
            observed_range=obs_wavelength_range,
            max_rv=self.rv_margin,
            kernel_velocity=self.kernel_velocity,
            velocity_step=velocity_step,
            max_velocity_step=max_step,
            gap_factor=gap_factor,
        )
        self.lsf_window = None
        if self.lsf_range is not None:
            window = self.lsf_range[1] * LSF_WINDOW_SIGMAS / self.grid.velocity_step
            self.lsf_window = int(math.ceil(window))
        #: (n_pieces, 2) rest-frame wavelength range [Å] each piece of the grid can model.
        shift = math.exp(math.atanh(self.rv_margin / SPEED_OF_LIGHT))
        self.rest_ranges = self.grid.allowed * np.array([1.0 / shift, shift])
        self.piece_slices = _piece_slices(self.grid)
        self.prefilter = bspline_prefilter(self.grid.fft_length)
        self.error_coefficients = self._emulator_error_coefficients()
        allowed = self.grid.allowed
        #: Static (lo, hi) [Å] wavelength range of the continuum filter's bins.
        self.filter_range = (float(allowed[:, 0].min() / shift), float(allowed[:, 1].max() * shift))

    # ------------------------------------------------------------------ pytree
    def tree_flatten(self):
        return _protocol.flatten(self, ("weights",))

    @classmethod
    def tree_unflatten(cls, static, children):
        return _protocol.unflatten(cls, ("weights",), static, children)

    def with_weights(self, weights) -> "ForwardModel":
        """A copy with other emulator weights (same structure); compiled functions are reused."""
        _, static = self.tree_flatten()
        return ForwardModel.tree_unflatten(static, (weights,))

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

    def _parameter_space(self, model, fixed, max_vsini, max_vmacro, resolution_bounds):
        lower_l, upper_l = (np.asarray(b, dtype=np.float64).reshape(-1) for b in model.bounds)
        label_units = tuple(getattr(model, "label_units", None) or ("",) * len(self.label_names))
        rows = [(n, u, lo, hi, 0.5 * (lo + hi))
                for n, u, lo, hi in zip(self.label_names, label_units, lower_l, upper_l)]
        rows.append(("rv", "km/s", -self.max_rv, self.max_rv, 0.0))
        if self.rotation:
            rows.append(("vsini", "km/s", 0.0, max_vsini, min(INITIAL_VSINI, max_vsini)))
        if self.macroturbulence:
            rows.append(("vmacro", "km/s", 0.0, max_vmacro, min(INITIAL_VMACRO, max_vmacro)))
        if self.fit_resolution:
            lo_r, hi_r = resolution_bounds or tuple(f * self.resolution for f in RESOLUTION_BOUND_FACTORS)
            rows.append(("R", "", float(lo_r), float(hi_r), self.resolution))
        if self.continuum.kind == "cheb" and self.continuum.free:
            for s in range(self.n_segments):
                for k in range(self.continuum.degree + 1):
                    rows.append((f"cont_s{s}_c{k}", "", -np.inf, np.inf, 1.0 if k == 0 else 0.0))
        names, units, lower, upper, initial = zip(*rows)
        return ParameterSpace(names, units, lower, upper, initial, fixed)

    def _emulator_error_coefficients(self):
        error = getattr(self.emulator, "emulator_error", None)
        if error is None:
            return None
        error = np.asarray(error, dtype=np.float64).reshape(-1)
        if not np.any(np.isfinite(error)):
            return None
        # a pixel never validated (NaN) gets the largest error seen: conservative, never NaN
        error = np.where(np.isfinite(error), error, np.nanmax(error))
        padded = np.sum(error[self.grid.gather_index] * self.grid.gather_weight, axis=-1)
        spectrum = np.fft.rfft(padded, axis=-1) * self.prefilter
        return np.fft.irfft(spectrum, n=self.grid.fft_length, axis=-1).reshape(-1)

    # ------------------------------------------------------------------ parameters
    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the free parameters (the order of ``theta``)."""
        return self.space.free_names

    @property
    def all_names(self) -> tuple[str, ...]:
        """Every parameter, free and fixed."""
        return self.space.names

    @property
    def fixed(self) -> dict[str, float]:
        """Default values of the fixed parameters."""
        return dict(self.space.fixed)

    @property
    def lower(self) -> np.ndarray:
        """(n_params,) lower bounds of the free parameters."""
        return self.space.free_lower

    @property
    def upper(self) -> np.ndarray:
        """(n_params,) upper bounds of the free parameters."""
        return self.space.free_upper

    @property
    def initial(self) -> np.ndarray:
        """(n_params,) start values of the free parameters."""
        return self.space.free_initial

    @property
    def n_params(self) -> int:
        """Number of free parameters."""
        return self.space.n_free

    def parameters(self, theta, fixed: Mapping[str, Any] | None = None) -> dict[str, jax.Array]:
        """All parameters (free and fixed) by name, in physical units (traceable).

        Args:
            theta: (n_params,) free parameters in the order of :attr:`param_names`.
            fixed: per-call values of fixed parameters.

        Returns:
            dict name → scalar array (dtype of ``theta``).
        """
        theta = jnp.asarray(theta)
        if theta.shape != (self.n_params,):
            raise ValueError(
                f"theta must have shape ({self.n_params},) for parameters {self.param_names}, "
                f"got {theta.shape}"
            )
        return self.space.unflatten(theta, fixed)

    def pack(self, values: Mapping[str, float] | None = None) -> np.ndarray:
        """Free-parameter vector from named values (missing ones take :attr:`initial`).

        Raises:
            ValueError: for unknown or fixed names.
        """
        return self.space.pack(values)

    def dtype_of(self, theta, obs) -> Any:
        """Float dtype of a computation with these inputs (float32 unless one is float64)."""
        dtype = jnp.result_type(jnp.asarray(theta).dtype, jnp.asarray(obs.flux).dtype)
        return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float32

    def uses_emulator_error(self, settings: LikelihoodSettings) -> bool:
        """Whether the likelihood under ``settings`` includes the emulator's error (it has one)."""
        return bool(settings.emulator_error and self.error_coefficients is not None)

    # ------------------------------------------------------------------ observations
    def valid_wavelength(self, wavelength, rv_range: tuple[float, float] | None = None,
                         mode: str = "all") -> np.ndarray:
        """Whether observed wavelengths [Å, model medium] can be modelled (numpy bool).

        Args:
            wavelength: observed wavelengths.
            rv_range: (lo, hi) radial velocities [km/s] to allow for; default ±max_rv, or the
                fixed rv.
            mode: ``"all"`` (modelled at every rv in the range) or ``"any"`` (at some rv in it,
                e.g. before a velocity search narrows the range).
        """
        wavelength = np.asarray(wavelength, dtype=np.float64)
        if rv_range is None:
            rv = self.space.fixed.get("rv")
            rv_range = (-self.max_rv, self.max_rv) if rv is None else (rv, rv)
        lo_v, hi_v = (math.atanh(float(v) / SPEED_OF_LIGHT) for v in rv_range)
        log_wave = np.log(np.where(wavelength > 0, wavelength, np.nan))
        ok = np.zeros(wavelength.shape, bool)
        with np.errstate(invalid="ignore"):
            for lo, hi in np.log(self.rest_ranges):
                if mode == "all":
                    ok |= (log_wave - hi_v >= lo) & (log_wave - lo_v <= hi)
                elif mode == "any":
                    ok |= (log_wave - lo_v >= lo) & (log_wave - hi_v <= hi)
                else:
                    raise ValueError(f"mode must be 'all' or 'any', got {mode!r}")
        return ok

    def usable_pixels(self, wavelength, rv_lower, rv_upper) -> jax.Array:
        """Traceable :meth:`valid_wavelength` for every rv in [rv_lower, rv_upper]; see
        :func:`~jaxpayne.forward.spectrum.usable_pixels`."""
        return usable_pixels(self, wavelength, rv_lower, rv_upper)

    def check_observation(self, obs: Observation, rv_range: tuple[float, float] | None = None,
                          mode: str = "all") -> None:
        """Raise a ValueError if an unmasked pixel cannot be modelled (eager; any batch shape).

        Args:
            obs: the observation(s).
            rv_range, mode: velocities [km/s] the pixels must be modelled at (see
                :meth:`valid_wavelength`).

        Raises:
            ValueError: for unmasked pixels outside the modelled range (beyond the emulator's
                range after the Doppler and kernel margins, or in a gap of the emulator grid),
                segment indices outside [0, n_segments), or LSF widths beyond the window.
        """
        wavelength = np.asarray(obs.wavelength, dtype=np.float64)
        active = np.asarray(obs.ivar) > 0
        bad = active & ~self.valid_wavelength(wavelength, rv_range, mode)
        if np.any(bad):
            ranges = ", ".join(f"{lo:.2f}–{hi:.2f}" for lo, hi in self.grid.allowed)
            raise ValueError(
                f"{int(bad.sum())} unmasked pixel(s) (e.g. {wavelength[bad].min():.2f} Å) lie "
                f"outside the range this forward model covers ({ranges} Å, {self.medium}): the "
                f"emulator has no flux within the {self.rv_margin:g} km/s Doppler margin (max_rv="
                f"{self.max_rv:g}, or |rv| when fixed) plus the "
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
        if obs.lsf_sigma is not None and self.lsf_range is not None:
            sigma = np.asarray(obs.lsf_sigma, dtype=np.float64) / wavelength * SPEED_OF_LIGHT
            if np.any(active & ~(sigma > 0)) or np.any(
                active & (sigma > self.lsf_range[1] * (1 + 1e-9))
            ):
                raise ValueError(
                    "observation lsf_sigma must be > 0 and ≤ the forward model's max_lsf_sigma "
                    f"({self.lsf_range[1]:.3f} km/s); rebuild it with a larger max_lsf_sigma"
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
        rv_range: tuple[float, float] | None = None,
        rv_mode: str = "all",
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
            rv_range: velocities [km/s] to model the pixels at (default ±max_rv or the fixed rv).
            rv_mode: with ``outside="mask"``: keep pixels modelled at ``"all"`` velocities of the
                range or at ``"any"`` of them (a fitter then narrows the range per spectrum).

        Returns:
            The :class:`Observation`.
        """
        obs = make_observation(
            wavelength, flux, ivar, segment, error=error, medium=medium or self.medium,
            model_medium=self.medium, lsf_sigma=lsf_sigma,
        )
        if outside == "mask":
            ok = self.valid_wavelength(np.asarray(obs.wavelength), rv_range, rv_mode)
            obs = obs._replace(ivar=jnp.where(ok, obs.ivar, 0.0), flux=jnp.where(ok, obs.flux, 0.0))
        elif outside != "error":
            raise ValueError(f"outside must be 'error' or 'mask', got {outside!r}")
        self.check_observation(obs, rv_range, rv_mode)
        return obs

    # ------------------------------------------------------------------ model evaluation
    def _settings(self, settings, emulator_error, inflation, marginalize) -> LikelihoodSettings:
        settings = DEFAULT_SETTINGS if settings is None else settings
        changes = {k: v for k, v in (("emulator_error", emulator_error), ("inflation", inflation),
                                     ("marginalize", marginalize)) if v is not None}
        changes = {k: (float(v) if k == "inflation" else bool(v)) for k, v in changes.items()}
        return settings._replace(**changes)

    def _theta(self, theta):
        return _protocol.theta_vector(self, theta)

    def _check_if_concrete(self, obs, fixed=None, theta=None):
        """The eager range check of a concrete observation, at the call's rv where it is concrete
        (a fitted rv in ``theta`` or a per-call fixed one), else over the rv bounds."""
        if not _protocol.is_concrete(obs.wavelength, obs.ivar):
            return
        rv = (fixed or {}).get("rv")
        if "rv" in self.param_names and theta is not None:
            rv = theta[self.space.index("rv")]
        rv_range = None
        if rv is not None and _protocol.is_concrete(rv) and np.ndim(rv) == 0:
            rv_range = (float(rv), float(rv))
        self.check_observation(obs, rv_range)

    def model_flux(self, theta, obs: Observation, fixed: Mapping[str, Any] | None = None):
        """Broadened, Doppler-shifted model resampled onto the observed pixels (no continuum).

        Args:
            theta: (n_params,) free parameters (physical units, order :attr:`param_names`), or a
                dict of them.
            obs: the observation (only ``wavelength`` and, if present, ``lsf_sigma`` are used;
                masked pixels get a finite value).
            fixed: per-call values of fixed parameters.

        Returns:
            (n,) model flux in the emulator's units.

        Raises:
            ValueError: (eagerly, when ``obs`` is concrete) for unmasked pixels that cannot be
                modelled; see :meth:`check_observation`.
        """
        theta = self._theta(theta)
        self._check_if_concrete(obs, fixed, theta)
        return _jit_model_flux(self, theta, obs, fixed)

    def model_spectrum(self, theta, obs: Observation, fixed=None, emulator_error: bool = False):
        """:func:`~jaxpayne.forward.model_spectrum` at free parameters ``theta`` (traceable)."""
        theta = self._theta(theta)
        values = self.space.unflatten(theta, fixed, dtype=self.dtype_of(theta, obs))
        return _model_spectrum(self, values, obs, emulator_error=emulator_error)

    @property
    def velocity_names(self) -> tuple[str, ...]:
        """The free radial velocities: ``("rv",)``, or ``()`` when rv is fixed."""
        return ("rv",) if "rv" in self.param_names else ()

    def spectrum(self, values: Mapping[str, Any], obs: Observation, *, emulator_error: bool = False):
        """:func:`~jaxpayne.forward.model_spectrum` at named parameter values (traceable): the
        hook through which the likelihood evaluates any model (a
        :class:`~jaxpayne.forward.CompositeModel` sums its components here)."""
        return _model_spectrum(self, values, obs, emulator_error=emulator_error)

    def prepare(self, obs: Observation, dtype=None) -> _likelihood.PreparedData:
        """:func:`~jaxpayne.forward.prepare_data` of an observation (traceable)."""
        return _likelihood.prepare_data(self, obs, dtype)

    def normalized(self, theta, obs: Observation, emulator_error: bool | None = None,
                   fixed=None, settings: LikelihoodSettings | None = None):
        """Model and data with the continuum treatment applied identically to both.

        See :func:`~jaxpayne.forward.apply_continuum`.

        Args:
            theta: (n_params,) free parameters, or a dict of them.
            obs: the observation.
            emulator_error: override of ``settings.emulator_error``.
            fixed: per-call values of fixed parameters.
            settings: likelihood options (default :data:`~jaxpayne.forward.DEFAULT_SETTINGS`).

        Returns:
            (model_norm, data_norm, ivar_norm), each (n,); ivar_norm = 0 and data_norm = 0 at
            masked pixels.
        """
        theta = self._theta(theta)
        self._check_if_concrete(obs, fixed, theta)
        settings = self._settings(settings, emulator_error, None, None)
        out = _jit_normalized(self, theta, obs, fixed, settings)
        return out.model, out.data, out.ivar

    def residuals(self, theta, obs: Observation, emulator_error: bool | None = None, inflation=None,
                  fixed=None, settings: LikelihoodSettings | None = None):
        """Whitened residuals (data_norm − model_norm)·sqrt(ivar_norm)/inflation.

        Args:
            theta: (n_params,) free parameters, or a dict of them.
            obs: the observation.
            emulator_error, inflation: overrides of ``settings``.
            fixed: per-call values of fixed parameters.
            settings: likelihood options (default :data:`~jaxpayne.forward.DEFAULT_SETTINGS`).

        Returns:
            (n,) residuals, exactly 0 at masked pixels.
        """
        theta = self._theta(theta)
        self._check_if_concrete(obs, fixed, theta)
        settings = self._settings(settings, emulator_error, inflation, None)
        return _jit_residuals(self, theta, obs, fixed, settings)

    def loglike(self, theta, obs: Observation, emulator_error: bool | None = None, inflation=None,
                marginalize: bool | None = None, fixed=None,
                settings: LikelihoodSettings | None = None):
        """Gaussian log-likelihood of the observed spectrum, normalisation term included.

        See :func:`~jaxpayne.forward.gaussian_loglike`. The defaults are
        :data:`~jaxpayne.forward.DEFAULT_SETTINGS`, shared with fitting and sampling: the
        emulator's error included when it has one, and the Chebyshev continuum marginalised.

        Args:
            theta: (n_params,) free parameters, or a dict of them.
            obs: the observation.
            emulator_error, inflation, marginalize: overrides of ``settings``.
            fixed: per-call values of fixed parameters (traced allowed).
            settings: likelihood options.

        Returns:
            Scalar log-likelihood.
        """
        theta = self._theta(theta)
        self._check_if_concrete(obs, fixed, theta)
        settings = self._settings(settings, emulator_error, inflation, marginalize)
        return _jit_loglike(self, theta, obs, fixed, settings)

    def jacobian(self, theta, obs: Observation, fixed=None, settings: LikelihoodSettings | None = None):
        """Jacobian (n, n_params) of the whitened residuals at ``theta``; see
        :func:`~jaxpayne.forward.jacobian`."""
        theta = self._theta(theta)
        self._check_if_concrete(obs, fixed, theta)
        return _jit_jacobian(self, theta, obs, fixed, self._settings(settings, None, None, None))

    def fisher_matrix(self, theta, obs: Observation, fixed=None,
                      settings: LikelihoodSettings | None = None):
        """Fisher information matrix (n_params, n_params) at ``theta``; see
        :func:`~jaxpayne.forward.fisher_matrix`."""
        theta = self._theta(theta)
        self._check_if_concrete(obs, fixed, theta)
        return _jit_fisher(self, theta, obs, fixed, self._settings(settings, None, None, None))

    def __repr__(self) -> str:
        return (f"ForwardModel(labels={list(self.label_names)}, free={list(self.param_names)}, "
                f"continuum={self.continuum}, resolution={self.resolution}, "
                f"n_segments={self.n_segments})")


def forward_model_from_options(model: Any, *, rv: bool = True, vsini: bool = False, vmacro: bool = False,
                               fixed: Mapping[str, float] | None = None, **options) -> ForwardModel:
    """The forward model of the user-level options that ``fit``, ``sample`` and ``crlb`` share.

    Args:
        model: the emulator.
        rv: a free radial velocity; False holds it at 0 (unless ``fixed`` gives another value).
        vsini, vmacro: free rotational / macroturbulent broadening — unless the emulator has a
            label of that name, which then does the job instead.
        fixed: parameter name → value held fixed.
        **options: the other :class:`ForwardModel` arguments (``resolution``, ``continuum``,
            ``n_segments``, ``max_rv``, ...).
    """
    fixed = dict(fixed or {})
    if not rv:
        fixed.setdefault("rv", 0.0)
    names = {n.lower() for n in model.label_names}
    return ForwardModel(model, rotation=bool(vsini) and "vsini" not in names,
                        macroturbulence=bool(vmacro) and "vmacro" not in names, fixed=fixed, **options)


def _normalized_impl(fm, theta, obs, fixed, settings):
    return _likelihood.normalize(fm, theta, obs, fixed, settings)


def _model_flux_impl(fm, theta, obs, fixed):
    values = fm.space.unflatten(theta, fixed, dtype=fm.dtype_of(theta, obs))
    return _model_spectrum(fm, values, obs).flux


# Compiled conveniences (inlined when called inside a caller's jit/vmap/grad). The forward model
# is a pytree argument: its weights are traced leaves, its static part keys the cache.
_jit_model_flux = jax.jit(_model_flux_impl)
_jit_normalized = jax.jit(_normalized_impl, static_argnums=(4,))
_jit_residuals = jax.jit(_likelihood.residuals, static_argnums=(4,))
_jit_loglike = jax.jit(_likelihood.loglike, static_argnums=(4,))
_jit_jacobian = jax.jit(_likelihood.jacobian, static_argnums=(4,))
_jit_fisher = jax.jit(_likelihood.fisher_matrix, static_argnums=(4,))
