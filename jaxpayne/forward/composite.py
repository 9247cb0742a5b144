"""Composite spectra: N stars summed with flux weights, then the one continuum step.

A :class:`CompositeModel` wraps a single-star :class:`~jaxpayne.forward.ForwardModel` (its
emulator, working grid, instrument and continuum) and describes an unresolved system of N
components, each with its own labels, radial velocity and broadening. The model spectrum on the
observed pixels is

.. math:: f(\\lambda) = \\frac{\\sum_k W_k(\\lambda)\\, n_k(\\lambda)}{\\sum_k W_k(\\lambda)}

with n_k the component's broadened, Doppler-shifted model (:func:`~jaxpayne.forward.model_spectrum`
at its own labels and rv) and W_k its flux weight; the continuum step
(:func:`~jaxpayne.forward.apply_continuum`) is then applied to f exactly as to a single star, so
fitting, sampling and information bounds work unchanged (they call :func:`composite_spectrum`
through :meth:`CompositeModel.spectrum`). The weights, in order of physics:

``"ratio"``
    A free flux ratio per component k ≥ 2 (and per segment when the observation has several
    chips/arms), W_1 = 1, W_k = r_k ∈ [0, ``max_flux_ratio``]: no physics beyond "two spectra".
``"physical"``
    W_k(λ) = C_k(λ) R_k²: the surface-flux continuum C_k of a *flux emulator* of unnormalised
    spectra (its per-segment Chebyshev fit over continuum pixels, evaluated at the component's
    rest-frame wavelengths) times the squared radius from a *radius emulator* (either may be
    absent: C = 1 or R = 1). This is binspec's model (El-Badry et al. 2018, MNRAS 476, 528):
    the normalised spectra carry the lines, the flux and radius networks the light ratio.
``"tied"``
    Physical weights, and the secondary's Teff and log g predicted from the primary's labels and
    the mass ratio q by a *companion emulator* (equal age and composition on the main sequence,
    binspec's NN_Teff2_logg2), clipped to Teff₂ ≤ Teff₁, log g₂ ≥ log g₁ and to the emulator's box.

Parameters are named per component: ``teff_1``, ``logg_1``, ``rv_1``, ``vmacro_1``, ``teff_2``,
... ; labels in ``shared`` (by default every label except the structural ones of
:data:`STRUCTURE_LABELS`: the components share their composition) keep their plain name; the
weights add ``flux_ratio_2`` (or ``flux_ratio_2_s0``, ``flux_ratio_2_s1``, ... per segment) or
``q``; the instrument's ``R`` and the continuum coefficients are shared.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpayne.forward._protocol import WrappedModel
from jaxpayne.forward.doppler import SPEED_OF_LIGHT
from jaxpayne.forward.observation import Observation
from jaxpayne.forward.parameters import ParameterSpace
from jaxpayne.forward.spectrum import ModelSpectrum, model_spectrum

__all__ = ["STRUCTURE_LABELS", "WEIGHTS", "CompanionEmulator", "CompositeModel", "composite_spectrum",
           "flux_continuum"]

#: Labels that differ between the components of a system by default (lower-case names);
#: every other label (abundances) is shared unless ``shared=`` says otherwise.
STRUCTURE_LABELS = ("teff", "logg", "vmic", "vmicro", "vturb", "xi", "vmacro", "vsini", "mass", "radius",
                    "age")
#: The weighting schemes of :class:`CompositeModel`.
WEIGHTS = ("ratio", "physical", "tied")
#: Default Chebyshev degree of the flux emulator's continuum per segment (binspec's).
FLUX_CONTINUUM_DEGREE = 4
#: Default bounds of the mass ratio q of the ``tied`` weights.
Q_BOUNDS = (0.2, 1.0)


class CompanionEmulator(NamedTuple):
    """A network predicting a companion's labels from the primary's and the mass ratio.

    Attributes:
        model: the emulator (a :class:`jaxpayne.Model`): inputs named like the spectral
            emulator's labels plus ``q``, one output per entry of ``outputs``.
        outputs: label names of the outputs, e.g. ``("teff", "logg")``.
        scales: factors applied to the outputs (binspec's network predicts Teff/1000).
    """

    model: Any
    outputs: tuple = ("teff", "logg")
    scales: tuple = (1000.0, 1.0)


def _piece_bounds(wavelength: np.ndarray, gap_factor: float = 3.0) -> list[tuple[int, int]]:
    """[(first, stop)] pixel ranges of a grid split at gaps (steps > gap_factor × median)."""
    step = np.diff(np.log(wavelength))
    cuts = np.flatnonzero(step > gap_factor * np.median(step)) + 1
    edges = [0, *cuts.tolist(), wavelength.size]
    return list(zip(edges[:-1], edges[1:]))


class _FluxContinuum:
    """Static description of a flux emulator's smooth continuum: per piece of its grid, the
    least-squares map from the emulator's flux at the continuum pixels to Chebyshev coefficients
    in ln λ."""

    def __init__(self, model, continuum_pixels=None, degree: int = FLUX_CONTINUUM_DEGREE):
        wave = np.asarray(model.wavelength, np.float64).reshape(-1)
        mask = np.ones(wave.size, bool) if continuum_pixels is None else np.asarray(continuum_pixels, bool)
        if mask.shape != wave.shape:
            raise ValueError(f"continuum_pixels has {mask.size} entries but the flux emulator has "
                             f"{wave.size} pixels")
        self.degree = int(degree)
        self.pieces = _piece_bounds(wave)
        rows, maps, limits = [], [], []
        for first, stop in self.pieces:
            log_lo, log_hi = math.log(wave[first]), math.log(wave[stop - 1])
            use = np.flatnonzero(mask[first:stop]) + first
            if use.size <= self.degree:
                raise ValueError(f"flux emulator piece {wave[first]:.1f}–{wave[stop - 1]:.1f} Å has "
                                 f"{use.size} continuum pixels, fewer than degree + 1 = {self.degree + 1}")
            x = 2.0 * (np.log(wave[use]) - log_lo) / (log_hi - log_lo) - 1.0
            design = np.polynomial.chebyshev.chebvander(x, self.degree)
            maps.append(np.linalg.pinv(design))  # (degree + 1, n_use)
            rows.append(use)
            limits.append((log_lo, log_hi))
        self.rows, self.maps = rows, maps
        self.limits = np.asarray(limits)  # (n_pieces, 2) ln λ

    def coefficients(self, flux):
        """(n_pieces, degree + 1) Chebyshev coefficients of the emulator's flux (traceable)."""
        return jnp.stack([jnp.asarray(m, flux.dtype) @ flux[r] for m, r in zip(self.maps, self.rows)])

    def evaluate(self, coefficients, log_wavelength):
        """The continuum at rest-frame ln λ (n,), each pixel in its nearest piece (traceable)."""
        dtype = coefficients.dtype
        lo, hi = jnp.asarray(self.limits[:, 0], dtype), jnp.asarray(self.limits[:, 1], dtype)
        centres = 0.5 * (lo + hi)
        which = jnp.argmin(jnp.abs(log_wavelength[:, None] - centres[None, :])
                           - 0.5 * (hi - lo)[None, :], axis=1)
        x = jnp.clip(2.0 * (log_wavelength - lo[which]) / (hi - lo)[which] - 1.0, -1.0, 1.0)
        c = coefficients[which]  # (n, degree + 1)
        t_prev, t = jnp.ones_like(x), x
        total = c[:, 0] + (c[:, 1] * x if self.degree >= 1 else 0.0)
        for k in range(2, self.degree + 1):
            t_prev, t = t, 2.0 * x * t - t_prev
            total = total + c[:, k] * t
        return total


def flux_continuum(cm: "CompositeModel", values: Mapping[str, jax.Array], log_wavelength, params=None):
    """The flux emulator's smooth continuum C(λ) of one component at rest-frame ln λ (traceable).

    Args:
        cm: the composite model (its flux emulator and continuum description).
        values: the component's labels by name (the flux emulator's inputs).
        log_wavelength: (n,) rest-frame ln λ [ln Å].
        params: the flux emulator's weights (default the model's).
    """
    model = cm.flux_model
    labels = jnp.stack([jnp.asarray(values[n]) for n in model.label_names])
    params = cm.flux_params if params is None else params
    flux = jnp.asarray(model.apply(params, labels)).reshape(-1).astype(labels.dtype)
    return cm.flux_shape.evaluate(cm.flux_shape.coefficients(flux), log_wavelength)


def _predict(model, params, values, dtype):
    labels = jnp.stack([jnp.asarray(values[n]) for n in model.label_names]).astype(dtype)
    return jnp.asarray(model.apply(params, labels)).reshape(-1)


@jax.tree_util.register_pytree_node_class
class CompositeModel(WrappedModel):
    """An unresolved system of N stars observed as one spectrum (see the module docstring).

    It offers what the likelihood, the fitters and the sampler use of a forward model — a
    :class:`~jaxpayne.forward.ParameterSpace` (:attr:`space`), :meth:`spectrum`, the continuum
    treatment, segments and the pixel-coverage checks of the wrapped single-star model — so
    :func:`~jaxpayne.forward.loglike`, :func:`~jaxpayne.forward.residuals`,
    :func:`~jaxpayne.forward.fisher_matrix` and :func:`~jaxpayne.information.crlb` take it in place
    of a :class:`~jaxpayne.forward.ForwardModel`. A pytree: the emulators' weights are its leaves.

    Args:
        forward: the single-star forward model of each component (its rv must be free; its
            ``max_rv`` bounds every component's velocity).
        n_components: number of stars N ≥ 2 (``tied`` weights: 2).
        weights: ``"ratio"``, ``"physical"`` or ``"tied"``.
        shared: labels common to all components (default: every label not in
            :data:`STRUCTURE_LABELS`, i.e. the composition).
        flux: flux emulator of unnormalised spectra (``physical``/``tied``), inputs named like
            the spectral emulator's labels.
        radius: radius emulator [R_sun] (``physical``/``tied``), one output.
        companion: a :class:`CompanionEmulator` (``tied``).
        continuum_pixels: (n_flux_pixels,) bool, pixels of the flux emulator's grid its
            continuum is fitted to (default all).
        flux_degree: Chebyshev degree of that continuum per piece of the grid.
        ratio_per_segment: one flux ratio per segment (default when ``forward.n_segments`` > 1).
        max_flux_ratio: upper bound of the flux ratios (1: the primary is the brighter star).
        q_bounds: (lower, upper) of the mass ratio (``tied``).
        fixed: composite parameter name → value held fixed.

    Raises:
        ValueError: for an unknown weighting, missing networks, a fixed rv in ``forward``, or
            label names the networks do not know.
    """

    _LEAVES = ("base", "flux_params", "radius_params", "companion_params")
    _RANGE_CHECK = True

    def __init__(self, forward, n_components: int = 2, *, weights: str = "ratio", shared=None,
                 flux=None, radius=None, companion: CompanionEmulator | None = None,
                 continuum_pixels=None, flux_degree: int = FLUX_CONTINUUM_DEGREE,
                 ratio_per_segment: bool | None = None, max_flux_ratio: float = 1.0,
                 q_bounds: tuple[float, float] = Q_BOUNDS, fixed: Mapping[str, float] | None = None):
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        n_components = int(n_components)
        if n_components < 2:
            raise ValueError(f"a composite needs n_components ≥ 2, got {n_components}")
        if weights == "tied" and n_components != 2:
            raise ValueError("tied weights describe a binary: n_components must be 2")
        if "rv" in forward.fixed:
            raise ValueError("the components' radial velocities must be free: build the forward model "
                             "with a free rv (rv=True)")
        self.base = forward
        self.n_components = n_components
        self.weights = weights
        labels = tuple(forward.label_names)
        if shared is None:
            shared = tuple(n for n in labels if n.lower() not in STRUCTURE_LABELS)
        shared = tuple(shared)
        unknown = sorted(set(shared) - set(labels))
        if unknown:
            raise ValueError(f"shared labels {unknown} are not labels of the emulator {list(labels)}")
        self.shared = shared
        self.flux_model = self.radius_model = self.companion = None
        self.flux_params = self.radius_params = self.companion_params = None
        self.flux_shape = None
        if weights in ("physical", "tied"):
            if flux is None and radius is None:
                raise ValueError(f"{weights!r} weights need a flux emulator and/or a radius emulator")
            if flux is not None:
                self._check_inputs(flux, labels, "flux")
                self.flux_model, self.flux_params = flux, flux.params
                self.flux_shape = _FluxContinuum(flux, continuum_pixels, flux_degree)
            if radius is not None:
                self._check_inputs(radius, labels, "radius")
                self.radius_model, self.radius_params = radius, radius.params
        self.derived: tuple[str, ...] = ()
        if weights == "tied":
            if companion is None:
                raise ValueError("tied weights need a companion emulator (CompanionEmulator)")
            self._check_inputs(companion.model, labels + ("q",), "companion")
            missing = sorted(set(companion.outputs) - set(labels))
            if missing:
                raise ValueError(f"companion outputs {missing} are not labels of the emulator")
            self.companion = companion
            self.companion_params = companion.model.params
            self.derived = tuple(companion.outputs)
        self.ratio_per_segment = (forward.n_segments > 1) if ratio_per_segment is None else bool(ratio_per_segment)
        self.max_flux_ratio = float(max_flux_ratio)
        if not self.max_flux_ratio > 0:
            raise ValueError("max_flux_ratio must be > 0")
        self.q_bounds = tuple(float(q) for q in q_bounds)
        self.space = self._parameter_space(fixed or {})
        #: Names of the emulator labels of every component (for boxes and flags).
        self.label_names = tuple(n for n in self.space.names if self.base_name(n) in labels)

    @staticmethod
    def _check_inputs(model, labels, what):
        unknown = sorted(set(model.label_names) - set(labels))
        if unknown:
            raise ValueError(f"the {what} emulator's inputs {unknown} are not labels of the spectral "
                             f"emulator {list(labels)}")

    # ------------------------------------------------------------------ parameters
    def component_name(self, name: str, k: int) -> str:
        """Composite parameter of the base model's parameter ``name`` for component k (1-based)."""
        if name in self.shared or name == "R" or name.startswith("cont_s"):
            return name
        return f"{name}_{k}"

    @staticmethod
    def base_name(name: str) -> str:
        """The base model's parameter a composite parameter stands for (``teff_2`` → ``teff``)."""
        head, _, tail = name.rpartition("_")
        return head if head and tail.isdigit() else name

    def ratio_names(self, k: int) -> tuple[str, ...]:
        """Names of component k's flux ratios (``ratio`` weights)."""
        if not self.ratio_per_segment:
            return (f"flux_ratio_{k}",)
        return tuple(f"flux_ratio_{k}_s{s}" for s in range(self.base.n_segments))

    def _parameter_space(self, fixed):
        base = self.base.space
        own = [n for n in base.names if not n.startswith("cont_s") and n != "R"]
        rows, seen = [], set()
        for k in range(1, self.n_components + 1):
            for n in own:
                if k > 1 and n in self.derived:
                    continue
                name = self.component_name(n, k)
                if name in seen:
                    continue
                seen.add(name)
                i = base.names.index(n)
                rows.append((name, base.units[i], base.lower[i], base.upper[i], base.initial[i],
                             base.fixed.get(n)))
            if k > 1 and self.weights == "ratio":
                for name in self.ratio_names(k):
                    rows.append((name, "", 0.0, self.max_flux_ratio, 0.5 * self.max_flux_ratio, None))
        if self.weights == "tied":
            lo, hi = self.q_bounds
            rows.append(("q", "", lo, hi, 0.5 * (lo + hi), None))
        for n in base.names:
            if n == "R" or n.startswith("cont_s"):
                i = base.names.index(n)
                rows.append((n, base.units[i], base.lower[i], base.upper[i], base.initial[i], base.fixed.get(n)))
        names, units, lower, upper, initial, held = zip(*rows)
        defaults = {n: v for n, v in zip(names, held) if v is not None}
        defaults.update({str(k): float(v) for k, v in dict(fixed).items()})
        return ParameterSpace(names, units, lower, upper, initial, defaults)

    def component_values(self, values: Mapping[str, jax.Array]) -> list[dict]:
        """Each component's parameters by the base model's names (traceable).

        For ``tied`` weights the secondary's derived labels come from the companion emulator.
        """
        base_names = self.base.space.names
        out = []
        for k in range(1, self.n_components + 1):
            comp = {n: values[self.component_name(n, k)] for n in base_names
                    if not (k > 1 and n in self.derived)}
            out.append(comp)
        if self.derived:
            primary = out[0]
            dtype = jnp.result_type(*(jnp.asarray(v).dtype for v in primary.values()))
            inputs = {**primary, "q": values["q"]}
            predicted = _predict(self.companion.model, self.companion_params, inputs, dtype)
            lower, upper = self.base.space.lower, self.base.space.upper
            for j, (name, scale) in enumerate(zip(self.companion.outputs, self.companion.scales)):
                value = predicted[j].astype(dtype) * scale
                if name.lower() == "teff":
                    value = jnp.minimum(value, primary[name])
                elif name.lower() == "logg":
                    value = jnp.maximum(value, primary[name])
                i = base_names.index(name)
                out[1][name] = jnp.clip(value, lower[i], upper[i])
        return out

    def derived_values(self, values: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """The companion-predicted labels (``teff_2``, ``logg_2`` for ``tied``), else empty."""
        if not self.derived:
            return {}
        second = self.component_values(values)[1]
        return {f"{n}_2": second[n] for n in self.derived}

    def component_weights(self, values, components, obs: Observation) -> list[jax.Array]:
        """Flux weight W_k of each component on the observed pixels (traceable): scalars or (n,)."""
        dtype = jnp.asarray(obs.flux).dtype if jnp.issubdtype(jnp.asarray(obs.flux).dtype, jnp.floating) else jnp.float32
        dtype = jnp.result_type(dtype, *(jnp.asarray(v).dtype for v in values.values()))
        if self.weights == "ratio":
            segment = jnp.asarray(obs.segment, jnp.int32)
            out = [jnp.ones((), dtype)]
            for k in range(2, self.n_components + 1):
                ratios = jnp.stack([jnp.asarray(values[n], dtype) for n in self.ratio_names(k)])
                out.append(ratios[jnp.clip(segment, 0, ratios.size - 1)] if self.ratio_per_segment else ratios[0])
            return out
        log_wave = jnp.log(jnp.asarray(obs.wavelength).astype(dtype))
        out = []
        for comp in components:
            weight = jnp.ones((), dtype)
            if self.flux_model is not None:
                rest = log_wave - jnp.arctanh(jnp.asarray(comp["rv"], dtype) / SPEED_OF_LIGHT)
                weight = flux_continuum(self, comp, rest).astype(dtype)
            if self.radius_model is not None:
                radius = _predict(self.radius_model, self.radius_params, comp, dtype)[0].astype(dtype)
                weight = weight * radius**2
            out.append(weight)
        return out

    def spectrum(self, values: Mapping[str, jax.Array], obs: Observation, *,
                 emulator_error: bool = False) -> ModelSpectrum:
        """:func:`composite_spectrum` (the hook the likelihood calls)."""
        return composite_spectrum(self, values, obs, emulator_error=emulator_error)

    @property
    def velocity_names(self) -> tuple[str, ...]:
        """The free radial velocities (``rv_1``, ``rv_2``, ...)."""
        return tuple(f"rv_{k}" for k in range(1, self.n_components + 1) if f"rv_{k}" in self.param_names)

    def __getattr__(self, name):
        # the instrument, grid, continuum and coverage checks are the single-star model's
        if name in _DELEGATED and "base" in self.__dict__:
            return getattr(self.__dict__["base"], name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __repr__(self) -> str:
        return (f"CompositeModel(n_components={self.n_components}, weights={self.weights!r}, "
                f"free={list(self.param_names)}, continuum={self.base.continuum})")


#: Attributes a :class:`CompositeModel` takes from its single-star forward model.
_DELEGATED = frozenset({
    "continuum", "n_segments", "filter_range", "continuum_names", "grid", "medium", "max_rv", "rv_margin",
    "resolution", "lsf", "limb_darkening", "usable_pixels", "valid_wavelength",
    "check_observation", "observation", "kernel_velocity", "emulator", "rest_ranges",
})


def composite_spectrum(cm: CompositeModel, values: Mapping[str, jax.Array], obs: Observation, *,
                       emulator_error: bool = False) -> ModelSpectrum:
    """The flux-weighted sum of the components' model spectra on the observed pixels (traceable).

    f = Σ W_k n_k / Σ W_k, with n_k = :func:`~jaxpayne.forward.model_spectrum` of the wrapped
    forward model at component k's parameters; the emulator's error combines as
    σ = √(Σ (W_k σ_k)²) / Σ W_k.

    Args:
        cm: the composite model.
        values: every composite parameter by name (``cm.space.unflatten``).
        obs: the observation.
        emulator_error: also return the combined emulator error.
    """
    components = cm.component_values(values)
    parts = [model_spectrum(cm.base, comp, obs, emulator_error=emulator_error) for comp in components]
    weights = cm.component_weights(values, components, obs)
    total = sum(weights)
    flux = sum(w * p.flux for w, p in zip(weights, parts)) / total
    sigma = None
    if emulator_error:
        sigma = jnp.sqrt(sum((w * p.sigma) ** 2 for w, p in zip(weights, parts))) / total
    return ModelSpectrum(flux, sigma)

