"""Information content of a spectrum: Cramér–Rao bounds and gradient spectra.

For Gaussian noise the Fisher information of the free parameters θ is F = JᵀJ, J the Jacobian of
the likelihood's whitened residuals (:func:`jaxpayne.forward.jacobian`: the emulator, the
broadening chain, the Doppler shift, the resampling and the continuum step, all differentiated
exactly). Any unbiased estimator has covariance ≥ F⁻¹ (Cramér–Rao), so √(F⁻¹)_ii is the best
precision a spectrum allows for label i **with every other free parameter marginalised** —
nuisance parameters (rv, vsini, vmacro, R, free continuum coefficients) included by making them
free in the forward model; a marginalised Chebyshev continuum is projected out by the likelihood
itself. A prior adds its curvature −∇²ln P (Ting et al. 2017, ApJ 843, 32, do the same with the
Payne's gradient spectra).

Everything is a composition of the public pure functions: :func:`mock_observation` puts a
noise-free model spectrum (:meth:`ForwardModel.model_flux`) on an instrument's pixels with the
uncertainties of a given S/N; :func:`crlb` takes the Jacobian (:func:`~jaxpayne.forward.jacobian`)
and the normalised inverse variance (:func:`~jaxpayne.forward.normalize`), through their compiled
:class:`~jaxpayne.forward.ForwardModel` methods, at a point and returns
:class:`Bounds`; :func:`gradient_spectra` and :func:`information_shares` read the same Jacobian.
:func:`crlb_vs_resolution` repeats it across resolving powers at a fixed exposure (S/N per Å).

Example:
    >>> fm = ForwardModel(model, resolution=22_500, continuum="filter")
    >>> wave, segment = instrument_wavelength([(15_150, 15_800)], resolution=22_500)
    >>> obs = mock_observation(fm, {"teff": 4800, "logg": 2.5}, wave, snr=100, segment=segment)
    >>> bounds = crlb(fm, {"teff": 4800, "logg": 2.5}, obs)
    >>> print(bounds_table(bounds))
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

__all__ = [
    "DEFAULT_SAMPLING",
    "SETUPS",
    "Bounds",
    "InstrumentSetup",
    "bounds_table",
    "covering_model",
    "crlb",
    "crlb_vs_resolution",
    "gradient_spectra",
    "information_shares",
    "instrument_wavelength",
    "mock_observation",
    "pixel_snr",
    "ranked_pixels",
]

#: Default pixels per resolution element (FWHM = λ/R) of a made-up instrument.
DEFAULT_SAMPLING = 3.0
#: A Jacobi-scaled eigenvalue below this fraction of the largest (float64 Jacobian; float32
#: uses 1e-6) is a direction the spectrum does not constrain.
DEGENERATE_RCOND = 1e-10
#: A parameter whose squared share of such a direction exceeds this is "degenerate".
DEGENERATE_PARTICIPATION = 0.01

STATUS_OK = "ok"
#: The bound is wider than the parameter's box: the spectrum does not constrain it.
STATUS_UNCONSTRAINED = "unconstrained"
#: The parameter takes part in a direction of (near-)zero information.
STATUS_DEGENERATE = "degenerate"
#: The spectrum carries no information at all on it (a zero Jacobian column, e.g. vsini = 0).
STATUS_NO_INFORMATION = "no information"


class InstrumentSetup(NamedTuple):
    """A survey-like spectrograph: resolving power, coverage and pixel sampling.

    Attributes:
        name: a label.
        resolution: resolving power R = λ/FWHM.
        ranges: ((lo, hi), ...) wavelength ranges [Å] of the chips/arms, in ``medium``.
        pixel_step: pixel width in ln λ (log-uniform pixels).
        medium: ``"vacuum"`` or ``"air"``.
    """

    name: str
    resolution: float
    ranges: tuple[tuple[float, float], ...]
    pixel_step: float
    medium: str

    def wavelength(self) -> tuple[np.ndarray, np.ndarray]:
        """(wavelength [Å], segment) of this set-up's pixels; see :func:`instrument_wavelength`."""
        return instrument_wavelength(self.ranges, pixel_step=self.pixel_step)


#: Survey-like set-ups (approximate: R, coverage and pixel sampling only; no throughput).
#: APOGEE: three chips at R ≈ 22,500, Δlog₁₀λ = 6e-6 (Majewski et al. 2017, AJ 154, 94);
#: GALAH/HERMES: four arms at R ≈ 28,000, ≈ 0.046–0.074 Å pixels (Buder et al. 2021, MNRAS 506,
#: 150); LAMOST low resolution: R ≈ 1,800 over 3700–9000 Å, Δlog₁₀λ = 1e-4 (Cui et al. 2012,
#: RAA 12, 1197).
SETUPS: dict[str, InstrumentSetup] = {
    "apogee": InstrumentSetup("APOGEE-like", 22_500.0, ((15_140.0, 15_810.0), (15_860.0, 16_430.0),
                                                        (16_480.0, 16_950.0)),
                              6e-6 * np.log(10.0), "vacuum"),
    "galah": InstrumentSetup("GALAH-like", 28_000.0, ((4_713.0, 4_903.0), (5_648.0, 5_873.0),
                                                      (6_478.0, 6_737.0), (7_585.0, 7_887.0)),
                             9.6e-6, "air"),
    "lamost": InstrumentSetup("LAMOST-like", 1_800.0, ((3_700.0, 9_000.0),), 1e-4 * np.log(10.0),
                              "vacuum"),
}


def instrument_wavelength(ranges: Sequence[tuple[float, float]], resolution: float | None = None, *,
                          sampling: float = DEFAULT_SAMPLING, pixel_step: float | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Log-uniform pixels over one or more wavelength ranges, one segment per range.

    Args:
        ranges: ((lo, hi), ...) [Å], sorted and not overlapping.
        resolution: resolving power R; the pixel width is Δln λ = 1/(R·sampling) unless
            ``pixel_step`` is given.
        sampling: pixels per FWHM.
        pixel_step: pixel width in ln λ.

    Returns:
        (wavelength [Å], segment (int32)) numpy arrays.
    """
    if pixel_step is None:
        if resolution is None or not resolution > 0:
            raise ValueError("give a resolution R > 0 or a pixel_step")
        pixel_step = 1.0 / (float(resolution) * float(sampling))
    waves, segments = [], []
    previous = -np.inf
    for k, (lo, hi) in enumerate(ranges):
        lo, hi = float(lo), float(hi)
        if not (0 < lo < hi) or lo <= previous:
            raise ValueError(f"wavelength ranges must be increasing and not overlap, got {list(ranges)}")
        n = int(np.floor(np.log(hi / lo) / pixel_step)) + 1
        waves.append(lo * np.exp(pixel_step * np.arange(n)))
        segments.append(np.full(n, k, np.int32))
        previous = hi
    return np.concatenate(waves), np.concatenate(segments)


def pixel_snr(wavelength, snr: float, per: str = "pixel", segment=None) -> np.ndarray:
    """S/N per pixel from an S/N per pixel or per Å (at the continuum).

    Per Å, the signal and the variance of a pixel both scale with its width Δλ (photon noise),
    so S/N_pixel = S/N_Å · √(Δλ / 1 Å).

    Args:
        wavelength: (n,) pixel wavelengths [Å].
        snr: the S/N.
        per: ``"pixel"`` or ``"angstrom"``.
        segment: optional (n,) segment of each pixel (widths are taken within a segment).
    """
    wavelength = np.asarray(wavelength, np.float64)
    if not snr > 0:
        raise ValueError(f"S/N must be > 0, got {snr}")
    if per == "pixel":
        return np.full(wavelength.shape, float(snr))
    if per != "angstrom":
        raise ValueError(f"per must be 'pixel' or 'angstrom', got {per!r}")
    segment = np.zeros(wavelength.shape, int) if segment is None else np.asarray(segment)
    width = np.empty_like(wavelength)
    for s in np.unique(segment):
        pick = np.flatnonzero(segment == s)
        width[pick] = np.gradient(wavelength[pick]) if pick.size > 1 else 1.0
    return float(snr) * np.sqrt(width)


def mock_observation(fm, theta, wavelength, snr: float, *, per: str = "pixel", noise: str = "continuum",
                     segment=None, medium: str | None = None, fixed: Mapping[str, float] | None = None,
                     dtype=None):
    """A noise-free model spectrum on given pixels, with the uncertainties of an S/N.

    Args:
        fm: the :class:`~jaxpayne.forward.ForwardModel`.
        theta: free parameters (a dict by name; missing ones take the model's start values) or
            the flat vector.
        wavelength: (n,) pixel wavelengths [Å] in ``medium``.
        snr: S/N at the continuum (normalised flux 1), per pixel or per Å (``per``).
        per: ``"pixel"`` or ``"angstrom"`` (see :func:`pixel_snr`).
        noise: ``"continuum"`` (σ = 1/S/N at every pixel) or ``"photon"`` (σ ∝ √flux: fewer
            photons, and less noise, in the lines).
        segment: (n,) segment indices (default one segment).
        medium: medium of ``wavelength`` (default the model's).
        fixed: per-call values of fixed parameters.
        dtype: float dtype of the observation (default float64 when JAX's 64-bit mode is on).

    Returns:
        An :class:`~jaxpayne.forward.Observation` whose flux is the model itself.

    Raises:
        ValueError: for pixels the forward model cannot cover (named range), a bad S/N or mode.
    """
    import jax.numpy as jnp

    wavelength = np.asarray(wavelength, np.float64)
    theta = _theta(fm, theta)
    template = fm.observation(wavelength, np.ones_like(wavelength), np.ones_like(wavelength),
                              segment=segment, medium=medium, rv_range=_rv_range(fm, theta, fixed))
    if dtype is not None:
        template = template._replace(flux=template.flux.astype(dtype), ivar=template.ivar.astype(dtype))
    flux = np.asarray(fm.model_flux(jnp.asarray(theta, template.flux.dtype), template, fixed), np.float64)
    snr_pixel = pixel_snr(wavelength, snr, per, template.segment)
    if noise == "continuum":
        sigma = 1.0 / snr_pixel
    elif noise == "photon":
        sigma = np.sqrt(np.clip(flux, 1e-6, None)) / snr_pixel
    else:
        raise ValueError(f"noise must be 'continuum' or 'photon', got {noise!r}")
    dtype = template.flux.dtype
    return template._replace(flux=jnp.asarray(flux, dtype), ivar=jnp.asarray(sigma**-2, dtype))


class Bounds(NamedTuple):
    """Cramér–Rao bounds of the free parameters at one point, and what they came from.

    Attributes:
        names: free parameter names.
        units: their units.
        values: (n,) the point θ [physical units].
        sigma: (n,) marginal bound √(F⁻¹)_ii; NaN where ``status`` is not ``"ok"``.
        sigma_raw: (n,) the same without that guard (inf for a parameter with no information).
        sigma_conditional: (n,) 1/√F_ii: the bound if every other parameter were known.
        covariance: (n, n) F⁻¹ (pseudo-inverse on the constrained subspace).
        correlation: (n, n) correlation matrix of ``covariance`` (NaN rows for flagged ones).
        fisher: (n, n) total information: likelihood plus prior curvature.
        fisher_prior: (n, n) the prior's part, −∇²ln P.
        status: per parameter ``"ok"``, ``"unconstrained"`` (bound wider than its box),
            ``"degenerate"`` (in a direction of near-zero information) or ``"no information"``.
        lower, upper: (n,) the parameter box.
        jacobian: (n_pixels, n) Jacobian of the whitened residuals.
        root_weight: (n_pixels,) √(normalised ivar)/inflation: residual = (d − m)·root_weight.
        wavelength: (n_pixels,) [Å, model medium].
        segment: (n_pixels,) segment index.
        n_pixels: pixels in the likelihood.
    """

    names: tuple[str, ...]
    units: tuple[str, ...]
    values: np.ndarray
    sigma: np.ndarray
    sigma_raw: np.ndarray
    sigma_conditional: np.ndarray
    covariance: np.ndarray
    correlation: np.ndarray
    fisher: np.ndarray
    fisher_prior: np.ndarray
    status: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    jacobian: np.ndarray
    root_weight: np.ndarray
    wavelength: np.ndarray
    segment: np.ndarray
    n_pixels: int

    def as_dict(self) -> dict[str, float]:
        """name → marginal bound (NaN where flagged)."""
        return dict(zip(self.names, self.sigma.tolist()))


def _theta(fm, theta) -> np.ndarray:
    """The flat point, checked to lie inside the box (an emulator outside its training range
    extrapolates: its bounds would be those of an artefact)."""
    if isinstance(theta, Mapping):
        theta = fm.pack(theta)
    theta = np.asarray(theta, np.float64).reshape(-1)
    if theta.shape != (fm.n_params,):
        raise ValueError(f"theta must have {fm.n_params} values for {fm.param_names}, got {theta.size}")
    lower, upper = fm.space.free_lower, fm.space.free_upper
    for j in np.flatnonzero(~((theta >= lower) & (theta <= upper))):
        name = fm.param_names[j]
        raise ValueError(f"{name} = {theta[j]:g} lies outside the model's box [{lower[j]:g}, {upper[j]:g}]")
    return theta


def _prior_curvature(fm, prior, theta, fixed) -> np.ndarray:
    """−∇²ln P at θ (physical units); zero for no prior."""
    n = theta.size
    if prior is None:
        return np.zeros((n, n))
    import jax
    import jax.numpy as jnp

    from jaxpayne.sampling.priors import as_prior

    prior = as_prior(prior)
    prior.check(fm.space)
    if prior.is_uniform:
        return np.zeros((n, n))

    def log_prior(t):
        return prior.log_prob(fm.space.unflatten(t, fixed))

    hessian = jax.hessian(log_prior)(jnp.asarray(theta))
    return -np.asarray(hessian, np.float64)


def crlb(fm, theta, obs, *, fixed: Mapping[str, Any] | None = None, settings=None, prior=None,
         rcond: float | None = None) -> Bounds:
    """Cramér–Rao bounds of every free parameter of a forward model at a point.

    Args:
        fm: the :class:`~jaxpayne.forward.ForwardModel`; its free parameters are the ones
            marginalised (make rv, vsini, vmacro, R or continuum coefficients free to include
            them as nuisance parameters).
        theta: the point: a dict by name (missing ones take the start values) or the flat vector.
        obs: the observation (its uncertainties and mask matter; its flux enters only through
            the data side of the continuum step — use :func:`mock_observation` for a
            noise-free one).
        fixed: per-call values of fixed parameters.
        settings: :class:`~jaxpayne.forward.LikelihoodSettings` (default the shared
            :data:`~jaxpayne.forward.DEFAULT_SETTINGS`: emulator error included).
        prior: optional prior (a :class:`jaxpayne.sampling.Prior`, a dict of NumPyro
            distributions or a joint log-density callable) whose curvature adds information.
        rcond: Jacobi-scaled eigenvalues below ``rcond`` × the largest are treated as zero
            information (default 1e-10 in float64, 1e-6 in float32).

    Returns:
        The :class:`Bounds`.
    """
    import jax.numpy as jnp

    from jaxpayne.forward import DEFAULT_SETTINGS

    settings = DEFAULT_SETTINGS if settings is None else settings
    theta = _theta(fm, theta)
    dtype = jnp.asarray(obs.flux).dtype
    t = jnp.asarray(theta, dtype)
    # both check the observation's pixels against the model's range at this rv
    jac = np.asarray(fm.jacobian(t, obs, fixed, settings), np.float64)
    ivar = np.asarray(fm.normalized(t, obs, fixed=fixed, settings=settings)[2], np.float64)
    valid = ivar > 0  # the pixels in the likelihood (ivar_norm is 0 exactly elsewhere)
    root = np.sqrt(ivar) / settings.inflation
    fisher_like = jac.T @ jac
    fisher_prior = _prior_curvature(fm, prior, theta, fixed)
    fisher = fisher_like + fisher_prior
    if rcond is None:
        rcond = DEGENERATE_RCOND if dtype == jnp.float64 else 1e-6
    cov, status, sigma_raw = _invert(fisher, rcond)
    lower, upper = fm.space.free_lower.astype(np.float64), fm.space.free_upper.astype(np.float64)
    width = upper - lower
    status = [s if s != STATUS_OK or not sigma_raw[j] > width[j] else STATUS_UNCONSTRAINED
              for j, s in enumerate(status)]
    ok = np.array([s == STATUS_OK for s in status])
    sigma = np.where(ok, sigma_raw, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        diag = np.diagonal(fisher)
        conditional = np.where(diag > 0, 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0)), np.inf)
        correlation = cov / np.outer(sigma, sigma)
    correlation = np.where(np.outer(ok, ok), correlation, np.nan)
    space = fm.space
    units = tuple(space.units[space.index(n)] for n in space.free_names)
    return Bounds(space.free_names, units, theta, sigma, sigma_raw, conditional, cov, correlation,
                  fisher, fisher_prior, tuple(status), lower, upper, jac, root,
                  np.asarray(obs.wavelength, np.float64), np.asarray(obs.segment), int(valid.sum()))


def _rv_range(fm, theta, fixed):
    """The velocities [km/s] the pixels must be modelled at: the point's rv (every component's,
    for a composite model)."""
    free = [n for n in fm.param_names if n == "rv" or (n.startswith("rv_") and n[3:].isdigit())]
    if free:
        velocities = [float(theta[fm.space.index(n)]) for n in free]
        return (min(velocities), max(velocities))
    rv = float((fixed or {}).get("rv", fm.fixed.get("rv", 0.0)))
    return (rv, rv)


def _invert(fisher: np.ndarray, rcond: float):
    """(covariance, status per parameter, raw σ) of a Fisher matrix, inverted after Jacobi
    scaling on its well-determined subspace."""
    n = fisher.shape[0]
    status = [STATUS_OK] * n
    cov = np.zeros((n, n))
    sigma = np.full(n, np.inf)
    if not np.all(np.isfinite(fisher)):
        return np.full((n, n), np.nan), [STATUS_NO_INFORMATION] * n, np.full(n, np.nan)
    diag = np.diagonal(fisher)
    informed = diag > 0
    for j in np.flatnonzero(~informed):
        status[j] = STATUS_NO_INFORMATION
    keep = np.flatnonzero(informed)
    if keep.size:
        root = np.sqrt(diag[keep])
        scaled = fisher[np.ix_(keep, keep)] / np.outer(root, root)
        w, v = np.linalg.eigh(0.5 * (scaled + scaled.T))
        tiny = w <= rcond * max(w.max(), 0.0)
        participation = np.sum(v[:, tiny] ** 2, axis=1)
        inverse = np.where(tiny, 0.0, 1.0 / np.where(tiny, 1.0, w))
        sub = (v * inverse) @ v.T / np.outer(root, root)
        cov[np.ix_(keep, keep)] = sub
        for i, j in enumerate(keep):
            if participation[i] > DEGENERATE_PARTICIPATION:
                status[j] = STATUS_DEGENERATE
            else:
                sigma[j] = np.sqrt(max(sub[i, i], 0.0))
    return cov, status, sigma


def gradient_spectra(bounds: Bounds, normalize: bool = True) -> np.ndarray:
    """(n_pixels, n) gradient spectra: the change of the model, as the likelihood sees it (after
    the continuum step), per unit of each parameter — times its bound if ``normalize``.

    −J/√w, with J the whitened-residual Jacobian and √w the residual weight. With ``normalize``
    a column is the flux change for a 1σ change of that parameter (NaN for flagged ones);
    pixels not in the likelihood are NaN.
    """
    root = bounds.root_weight
    with np.errstate(divide="ignore", invalid="ignore"):
        gradient = np.where(root[:, None] > 0, -bounds.jacobian / root[:, None], np.nan)
    return gradient * bounds.sigma[None, :] if normalize else gradient


def information_shares(bounds: Bounds) -> np.ndarray:
    """(n_pixels, n) each pixel's share of each parameter's *marginal* information (columns sum
    to 1; NaN for flagged parameters).

    The marginal information 1/(F⁻¹)_ii of the likelihood is ‖J̃_i‖², where J̃_i = J F⁻¹e_i /
    (F⁻¹)_ii is column i of J with the other columns projected out; pixel p's share is
    J̃_pi² / ‖J̃_i‖². The prior's curvature, which belongs to no pixel, is left out.
    """
    fisher_like = bounds.fisher - bounds.fisher_prior
    cov, status, _ = _invert(fisher_like, DEGENERATE_RCOND)
    with np.errstate(divide="ignore", invalid="ignore"):
        projected = bounds.jacobian @ cov / np.diagonal(cov)[None, :]
        shares = projected**2 / np.sum(projected**2, axis=0, keepdims=True)
    ok = np.array([s == STATUS_OK for s in status]) & np.array([s == STATUS_OK for s in bounds.status])
    return np.where(ok[None, :], shares, np.nan)


def ranked_pixels(bounds: Bounds, top: int = 20):
    """The pixels carrying most of each parameter's marginal information, as a table.

    Returns:
        An astropy Table: ``parameter``, ``rank``, ``wavelength`` [Å], ``segment``, ``share``,
        ``cumulative`` (share of the top ``rank`` pixels) and ``gradient`` (flux change per 1σ).
    """
    from astropy.table import Table

    shares, gradient = information_shares(bounds), gradient_spectra(bounds)
    rows = []
    for j, name in enumerate(bounds.names):
        column = shares[:, j]
        if not np.any(np.isfinite(column)):
            continue
        order = np.argsort(np.nan_to_num(column, nan=-1.0))[::-1][:top]
        cumulative = np.cumsum(column[order])
        for rank, (p, c) in enumerate(zip(order, cumulative), start=1):
            rows.append((name, rank, bounds.wavelength[p], int(bounds.segment[p]), column[p], c, gradient[p, j]))
    table = Table(rows=rows or None, names=("parameter", "rank", "wavelength", "segment", "share", "cumulative",
                                            "gradient"),
                  dtype=(str, int, float, int, float, float, float))
    table["wavelength"].unit = "Angstrom"
    return table


def bounds_table(bounds: Bounds, meta: Mapping[str, Any] | None = None):
    """One row per free parameter: value, bound, conditional bound, status, box, correlations.

    Returns:
        An astropy Table with columns ``name``, ``unit``, ``value``, ``sigma`` (marginal CRLB,
        NaN where flagged), ``sigma_conditional``, ``status``, ``lower``, ``upper`` and one
        ``corr_<name>`` column per parameter; ``meta`` goes into the header.
    """
    from astropy.table import Table

    table = Table()
    table["name"] = list(bounds.names)
    table["unit"] = list(bounds.units)
    table["value"] = bounds.values
    table["sigma"] = bounds.sigma
    table["sigma_conditional"] = bounds.sigma_conditional
    table["status"] = list(bounds.status)
    table["lower"] = bounds.lower
    table["upper"] = bounds.upper
    for j, name in enumerate(bounds.names):
        table[f"corr_{name}"] = bounds.correlation[:, j]
    table.meta.update({"NPIX": bounds.n_pixels, **dict(meta or {})})
    return table


def crlb_vs_resolution(model, theta, resolutions: Sequence[float], *, ranges: Sequence[tuple[float, float]],
                       snr: float, per: str = "angstrom", sampling: float = DEFAULT_SAMPLING,
                       medium: str | None = None, noise: str = "continuum", fixed=None, settings=None,
                       prior=None, dtype=None, **forward_options) -> list[Bounds]:
    """Cramér–Rao bounds of one star observed at several resolving powers.

    At each R the pixels are log-uniform with ``sampling`` pixels per FWHM over ``ranges`` and
    the forward model convolves with that R. With ``per="angstrom"`` (the default) the S/N per Å
    is the same at every R — a fixed exposure: the same photons spread over more, narrower
    pixels — so the curve shows what resolution alone buys. R beyond the emulator's own
    resolution is meaningless.

    Args:
        model: the emulator.
        theta: the point: a dict by name (missing ones take the start values).
        resolutions: the resolving powers.
        ranges: ((lo, hi), ...) [Å] coverage (one segment each).
        snr: S/N per Å (or per pixel with ``per="pixel"``).
        per, noise: see :func:`mock_observation`.
        sampling: pixels per FWHM.
        medium: medium of ``ranges`` (default the model's).
        fixed, settings, prior: see :func:`crlb`.
        dtype: float dtype of the observations.
        **forward_options: :func:`~jaxpayne.forward.forward_model_from_options` arguments
            (``rv``, ``vsini``, ``vmacro``, ``continuum``, ...; ``n_segments`` defaults to the
            number of ranges).

    Returns:
        One :class:`Bounds` per resolving power.
    """
    if not isinstance(theta, Mapping):
        raise TypeError("theta must be a dict of parameter values by name")
    forward_options.setdefault("n_segments", len(ranges))
    out = []
    for resolution in resolutions:
        wave, segment = instrument_wavelength(ranges, resolution, sampling=sampling)
        fm, covered = covering_model(model, wave, medium=medium, resolution=float(resolution),
                                     **forward_options)
        obs = mock_observation(fm, theta, wave[covered], snr, per=per, noise=noise, segment=segment[covered],
                               medium=medium, fixed=fixed, dtype=dtype)
        out.append(crlb(fm, theta, obs, fixed=fixed, settings=settings, prior=prior))
    return out


def covering_model(model, wavelength, *, medium: str | None = None, **options):
    """The forward model for an instrument's pixels, and which of them it can model.

    An instrument's coverage rarely matches an emulator's: the pixels beyond the emulator's range
    (less the Doppler and broadening margins) at the star's ``rv`` are reported, not an error.
    The working grid is limited to the pixels' span (a wide-band emulator stays cheap).

    Args:
        model: the emulator.
        wavelength: (n,) pixel wavelengths [Å] in ``medium`` (default the model's).
        medium: medium of ``wavelength``.
        **options: :func:`~jaxpayne.forward.forward_model_from_options` arguments.

    Returns:
        (forward model, (n,) bool: the pixels it can model).

    Raises:
        ValueError: if it can model none of them.
    """
    from jaxpayne.forward import convert_medium, forward_model_from_options

    model_medium = str(getattr(model, "medium", "vacuum")).lower()
    wave = convert_medium(np.asarray(wavelength, np.float64), medium or model_medium, model_medium)
    full = forward_model_from_options(model, **options)
    # every velocity the model is built for (±max_rv, or the fixed rv), as its grid requires
    covered = full.valid_wavelength(wave)
    if not np.any(covered):
        allowed = ", ".join(f"{lo:.2f}–{hi:.2f}" for lo, hi in full.rest_ranges)
        raise ValueError(f"no pixel of {wave.min():.2f}–{wave.max():.2f} Å ({model_medium}) lies in the range "
                         f"the model covers ({allowed} Å at rest, less the broadening margin and the Doppler margin "
                         f"of {full.rv_margin:g} km/s)")
    span = (float(wave[covered].min()), float(wave[covered].max()))
    fm = forward_model_from_options(model, obs_wavelength_range=span, **options)
    # the span's own working grid can stop short of pixels at the emulator's very ends (its
    # resampling needs nodes beyond them): those are left out too
    covered &= fm.valid_wavelength(wave)
    if not np.any(covered):
        raise ValueError(f"no pixel of {wave.min():.2f}–{wave.max():.2f} Å ({model_medium}) lies in the range the "
                         "model covers")
    return fm, covered
