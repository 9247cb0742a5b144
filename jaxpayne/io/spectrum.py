"""The observed-spectrum container used by every jaxpayne reader and by the fitters.

A :class:`Spectrum` is a small frozen record of plain numpy arrays in documented units:

- ``wavelength`` [Å], float64, strictly increasing, in the medium named by ``medium``;
- ``flux`` in whatever units the file used (counts, 1e-17 erg/s/cm²/Å, normalized, ...);
- ``ivar``: inverse variance of ``flux`` [flux units⁻²]; 0 means "no information";
- ``mask``: bool, **True = bad pixel, exclude it**;
- ``segment``: int32 index of the detector piece a pixel came from (chip, arm, CCD, order),
  numbered 0, 1, ... in order of increasing wavelength;
- ``medium``: ``"vacuum"`` or ``"air"``; ``id``, ``source``, ``meta`` for provenance;
- ``frame``: the velocity frame of the wavelengths (:data:`FRAMES`, or None if unknown) and
  ``barycentric_correction`` [km/s] from the file's header, so a fit can report them.

A pixel is *usable* iff ``not mask and ivar > 0`` (see :attr:`Spectrum.good`); construction
guarantees that ``flux`` and ``ivar`` are finite everywhere and that every pixel with ``ivar == 0``
is masked, so ``Spectrum.weights`` (``ivar`` zeroed at masked pixels) can be used directly in a
χ² without NaN propagation. Non-finite flux or ivar and negative ivar found at construction are
*not* silently kept: those pixels get ``flux = 0``, ``ivar = 0``, ``mask = True`` and are counted
in ``meta["n_bad_input"]``.

Air ↔ vacuum conversion is that of :mod:`jaxpayne.forward.media` (Birch & Downs 1994, Metrologia
31, 315, in the form of Morton 2000, ApJS 130, 403; IAU convention: above 2000 Å only), so data and
models are converted by one formula.

Velocity frames and the sign of the barycentric correction: an RV measured in a spectrum whose
wavelengths are topocentric (as observed) becomes barycentric by *adding* the correction,
``v_bary = v_topo + barycentric_correction`` (to first order in v/c; this is the sign of the APOGEE
``BC`` card and of astropy's ``SkyCoord.radial_velocity_correction``). RV > 0 means receding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Spectrum",
    "SpectrumFormatError",
    "combine",
    "vacuum_to_air",
    "air_to_vacuum",
    "MEDIA",
    "FRAMES",
]

#: The two wavelength media a :class:`Spectrum` can be in.
MEDIA = ("vacuum", "air")

#: Velocity frames a :class:`Spectrum`'s wavelengths can be in (``Spectrum.frame``; None = unknown):
#: ``"topocentric"`` as observed (Earth's motion and the star's RV in the spectrum);
#: ``"barycentric"`` / ``"heliocentric"`` corrected to the Solar-System barycentre / the Sun (the
#: star's RV still in it; the two differ by < 0.013 km/s); ``"rest"`` shifted to the star's rest
#: frame by the pipeline (its RV removed: a fitted RV is a residual, ≈ 0).
FRAMES = ("topocentric", "barycentric", "heliocentric", "rest")


class SpectrumFormatError(ValueError):
    """A spectrum file or array set is unreadable or inconsistent.

    The message is one line of the form ``"<path or spectrum>: <problem>"`` so that command-line
    tools can print it as is.
    """


def vacuum_to_air(wavelength) -> np.ndarray:
    """Convert vacuum wavelengths to standard-air wavelengths, as float64 numpy.

    The numpy face of :func:`jaxpayne.forward.media.vacuum_to_air` (the one formula jaxpayne uses:
    Birch & Downs 1994 in the form of Morton 2000, ApJS 130, 403, eq. 8; wavelengths below
    2000 Å unchanged), for any array-like, including lists. The forward module (and with it JAX)
    is imported on the first call, so ``import jaxpayne.io`` stays light.

    Args:
        wavelength: vacuum wavelengths [Å], any shape (array-like).

    Returns:
        Air wavelengths [Å], float64 numpy array, same shape.

    Example:
        >>> round(float(vacuum_to_air(5000.0)), 3)
        4998.606
    """
    from jaxpayne.forward.media import vacuum_to_air as convert  # lazy: imports JAX

    return np.asarray(convert(np.asarray(wavelength, dtype=np.float64)), dtype=np.float64)


def air_to_vacuum(wavelength) -> np.ndarray:
    """Convert standard-air wavelengths to vacuum wavelengths, as float64 numpy.

    The numpy face of :func:`jaxpayne.forward.media.air_to_vacuum`, the exact (fixed-point)
    inverse of :func:`vacuum_to_air`: ``air_to_vacuum(vacuum_to_air(w)) == w`` to ~1e-12 Å.

    Args:
        wavelength: air wavelengths [Å], any shape (array-like).

    Returns:
        Vacuum wavelengths [Å], float64 numpy array, same shape.
    """
    from jaxpayne.forward.media import air_to_vacuum as convert  # lazy: imports JAX

    return np.asarray(convert(np.asarray(wavelength, dtype=np.float64)), dtype=np.float64)


def _to_angstrom(values, where: str, what: str) -> np.ndarray:
    """Plain float64 values; an astropy Quantity is converted to Å (spectral equivalencies)."""
    if hasattr(values, "unit") and hasattr(values, "to_value"):
        import astropy.units as u  # lazy: only when a Quantity is actually passed

        try:
            return np.asarray(values.to_value(u.AA, equivalencies=u.spectral()), dtype=np.float64)
        except u.UnitConversionError as exc:
            raise SpectrumFormatError(f"{where}: {what} has unit {values.unit}, not a spectral unit") from exc
    return np.asarray(values, dtype=np.float64)


def _plain(values) -> np.ndarray:
    """Strip an astropy Quantity to its numbers (flux keeps the file's units)."""
    if hasattr(values, "unit") and hasattr(values, "value"):
        return np.asarray(values.value, dtype=np.float64)
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Spectrum:
    """One observed spectrum: pixels, uncertainties, bad-pixel mask and provenance.

    Attributes:
        wavelength: ``(n,)`` pixel wavelengths [Å], float64, strictly increasing.
        flux: ``(n,)`` flux in the file's units (float64).
        ivar: ``(n,)`` inverse variance of ``flux``; 0 = no information.
        mask: ``(n,)`` bool, **True = bad pixel to exclude**. Every pixel with ``ivar == 0`` is
            masked; a masked pixel may keep a nonzero ``ivar`` (e.g. a flagged pixel whose
            pipeline error is still recorded), so use :attr:`good` or :attr:`weights`.
        medium: ``"vacuum"`` or ``"air"`` — the medium of ``wavelength``.
        id: a name for the spectrum (object id, file stem, ...).
        source: the file it was read from, or ``""``.
        segment: ``(n,)`` int32 detector-piece index (APOGEE chip, GALAH CCD, ...), 0 = bluest.
        meta: header values and reader notes (``SNR``, ``VHELIO`` [km/s], ``OBJID``, ``RA``/``DEC``
            [deg], ``format``, ``n_bad_input``, ...). Keys present depend on the file.
        frame: velocity frame of ``wavelength``, one of :data:`FRAMES` (``"topocentric"``,
            ``"barycentric"``, ``"heliocentric"``, ``"rest"``), or None when the file does not
            say (generic formats).
        barycentric_correction: the barycentric correction of the observation [km/s] from the
            file's header, or None: the velocity to **add** to an RV measured in topocentric
            wavelengths to get the barycentric RV (``v_bary = v_topo + barycentric_correction``).
            It is meant to be applied only when ``frame == "topocentric"``; in the other frames
            the pipeline has already applied it and it is provenance.

    Construction copies the inputs (a caller's arrays are never modified), makes the stored arrays
    read-only, and validates:

    - all arrays 1-D with the same length (the error names the offender);
    - wavelengths finite and positive; unsorted wavelengths are sorted, carrying every array
      along; duplicated wavelengths are an error;
    - non-finite ``flux``/``ivar`` and negative ``ivar`` → ``flux = 0``, ``ivar = 0``, masked,
      counted in ``meta["n_bad_input"]`` (cumulative);
    - at least one usable pixel;
    - segments renumbered 0, 1, ... in order of their bluest pixel.

    Example:
        >>> import numpy as np
        >>> s = Spectrum.from_error(np.linspace(5000, 5010, 6), np.ones(6), np.full(6, 0.01))
        >>> s.n_good, s.medium
        (6, 'vacuum')
    """

    wavelength: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray | None = None
    medium: str = "vacuum"
    id: str = ""
    source: str = ""
    segment: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    frame: str | None = None
    barycentric_correction: float | None = None

    def __post_init__(self):
        where = self._where()
        setattr_ = object.__setattr__
        medium = str(self.medium).strip().lower()
        if medium not in MEDIA:
            raise SpectrumFormatError(f"{where}: medium must be 'vacuum' or 'air', got {self.medium!r}")
        frame = None if self.frame is None else str(self.frame).strip().lower()
        if frame is not None and frame not in FRAMES:
            raise SpectrumFormatError(f"{where}: frame must be one of {', '.join(FRAMES)} or None, got {self.frame!r}")
        correction = self.barycentric_correction
        if correction is not None:
            try:
                correction = float(correction)
            except (TypeError, ValueError):
                correction = float("nan")
            if not np.isfinite(correction):
                raise SpectrumFormatError(
                    f"{where}: barycentric_correction must be a finite number [km/s] or None, "
                    f"got {self.barycentric_correction!r}"
                )
        wave = _to_angstrom(self.wavelength, where, "wavelength")
        if wave.ndim != 1:
            raise SpectrumFormatError(f"{where}: wavelength must be 1-D, got shape {wave.shape}")
        n = wave.size
        if n == 0:
            raise SpectrumFormatError(f"{where}: spectrum has no pixels")

        def as_1d(name, values, dtype, default):
            if values is None:
                return np.full(n, default, dtype=dtype)
            arr = np.array(_plain(values) if dtype is np.float64 else values, dtype=dtype, copy=True)
            if arr.ndim != 1:
                raise SpectrumFormatError(f"{where}: {name} must be 1-D, got shape {arr.shape}")
            if arr.size != n:
                raise SpectrumFormatError(f"{where}: {name} has {arr.size} pixels but wavelength has {n}")
            return arr

        flux = as_1d("flux", self.flux, np.float64, 0.0)
        if self.ivar is None:
            raise SpectrumFormatError(f"{where}: ivar (inverse variance) is required")
        ivar = as_1d("ivar", self.ivar, np.float64, 0.0)
        mask_in = self.mask
        if mask_in is not None:
            mask_arr = np.asarray(mask_in)
            if mask_arr.dtype.kind not in "biu":
                raise SpectrumFormatError(f"{where}: mask must be boolean (True = bad), got dtype {mask_arr.dtype}")
            mask_in = mask_arr != 0
        mask = as_1d("mask", mask_in, bool, False)
        seg_in = self.segment
        if seg_in is not None:
            seg_arr = np.asarray(seg_in)
            if seg_arr.dtype.kind not in "iub" and not (
                seg_arr.size and np.all(np.isfinite(seg_arr)) and np.all(seg_arr == np.round(seg_arr))
            ):
                raise SpectrumFormatError(f"{where}: segment must hold integers, got dtype {seg_arr.dtype}")
            seg_in = seg_arr.astype(np.int64)
        segment = as_1d("segment", seg_in, np.int64, 0)

        if not np.all(np.isfinite(wave)):
            raise SpectrumFormatError(f"{where}: {int(np.sum(~np.isfinite(wave)))} wavelengths are NaN or infinite")
        if np.any(wave <= 0):
            raise SpectrumFormatError(f"{where}: wavelengths must be positive (min {wave.min():g})")

        meta = dict(self.meta) if self.meta else {}
        if np.any(np.diff(wave) <= 0):
            order = np.argsort(wave, kind="stable")
            wave, flux, ivar, mask, segment = (a[order] for a in (wave, flux, ivar, mask, segment))
            meta["sorted_on_input"] = True
        dup = np.diff(wave) == 0
        if np.any(dup):
            first = wave[1:][dup][0]
            raise SpectrumFormatError(f"{where}: {int(dup.sum())} duplicated wavelength(s), first at {first:.6f} Å")

        bad_input = ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar < 0)
        n_bad = int(bad_input.sum())
        if n_bad:
            flux = np.where(bad_input, 0.0, flux)
            ivar = np.where(bad_input, 0.0, ivar)
        meta["n_bad_input"] = int(meta.get("n_bad_input", 0)) + n_bad
        mask = mask | bad_input | (ivar == 0)
        if mask.all():
            raise SpectrumFormatError(f"{where}: all {n} pixels are bad (masked, zero or invalid uncertainty)")

        if segment.min() < 0:
            raise SpectrumFormatError(f"{where}: segment indices must be >= 0 (min {segment.min()})")
        labels, first_pixel = np.unique(segment, return_index=True)  # wavelengths are sorted here
        rank = np.empty(labels.size, dtype=np.int64)
        rank[np.argsort(first_pixel, kind="stable")] = np.arange(labels.size)
        segment = rank[np.searchsorted(labels, segment)].astype(np.int32)

        for name, arr in (("wavelength", wave), ("flux", flux), ("ivar", ivar), ("mask", mask), ("segment", segment)):
            arr = np.ascontiguousarray(arr)
            arr.setflags(write=False)
            setattr_(self, name, arr)
        setattr_(self, "medium", medium)
        setattr_(self, "frame", frame)
        setattr_(self, "barycentric_correction", correction)
        setattr_(self, "id", str(self.id))
        setattr_(self, "source", str(self.source))
        setattr_(self, "meta", meta)

    def _where(self) -> str:
        if self.source:
            return str(self.source)
        return f"spectrum {self.id!r}" if self.id else "spectrum"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_error(cls, wavelength, flux, error, *, mask=None, **kwargs) -> Spectrum:
        """Build a spectrum from 1σ uncertainties instead of inverse variances.

        ``ivar = 1 / error²`` where ``error`` is finite and positive; pixels with zero, negative or
        non-finite errors get ``ivar = 0``, are masked and counted in ``meta["n_bad_input"]``.

        Args:
            wavelength: ``(n,)`` [Å] (or an astropy Quantity in any spectral unit).
            flux: ``(n,)``.
            error: ``(n,)`` 1σ uncertainty of ``flux`` (same units).
            mask: optional ``(n,)`` bool, True = bad.
            **kwargs: the other :class:`Spectrum` fields (``medium``, ``id``, ``source``,
                ``segment``, ``meta``).

        Returns:
            The spectrum.
        """
        err = _plain(error)
        meta = dict(kwargs.pop("meta", None) or {})
        flux_arr = _plain(flux)
        if err.shape != flux_arr.shape:
            where = kwargs.get("source") or (f"spectrum {kwargs['id']!r}" if kwargs.get("id") else "spectrum")
            raise SpectrumFormatError(f"{where}: error has shape {err.shape} but flux has {flux_arr.shape}")
        with np.errstate(divide="ignore", invalid="ignore"):
            bad_err = ~(np.isfinite(err) & (err > 0))
            ivar = np.where(bad_err, 0.0, 1.0 / np.where(bad_err, 1.0, err) ** 2)
        # overflow of 1/err² for absurdly small errors is also invalid input
        bad_err |= ~np.isfinite(ivar)
        ivar = np.where(bad_err, 0.0, ivar)
        # pixels whose flux is also non-finite are counted once, by the constructor
        meta["n_bad_input"] = int(meta.get("n_bad_input", 0)) + int(np.sum(bad_err & np.isfinite(flux_arr)))
        mask_arr = bad_err if mask is None else (np.asarray(mask) != 0) | bad_err
        return cls(wavelength, flux_arr, ivar, mask=mask_arr, meta=meta, **kwargs)

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(self.wavelength.size)

    @property
    def good(self) -> np.ndarray:
        """``(n,)`` bool: True where the pixel is usable (not masked and ``ivar > 0``)."""
        return ~self.mask & (self.ivar > 0)

    @property
    def n_good(self) -> int:
        """Number of usable pixels."""
        return int(np.count_nonzero(self.good))

    @property
    def weights(self) -> np.ndarray:
        """``(n,)`` inverse variance with masked pixels set to 0 — ready for a χ²."""
        return np.where(self.good, self.ivar, 0.0)

    @property
    def error(self) -> np.ndarray:
        """``(n,)`` 1σ uncertainty ``1/sqrt(ivar)``; ``inf`` where ``ivar == 0``."""
        with np.errstate(divide="ignore"):
            return np.where(self.ivar > 0, 1.0 / np.sqrt(np.where(self.ivar > 0, self.ivar, 1.0)), np.inf)

    @property
    def n_segments(self) -> int:
        """Number of detector segments."""
        return int(self.segment.max()) + 1

    @property
    def snr(self) -> float:
        """Median per-pixel S/N over usable pixels (``|flux| * sqrt(ivar)``)."""
        good = self.good
        return float(np.median(np.abs(self.flux[good]) * np.sqrt(self.ivar[good])))

    def __repr__(self) -> str:
        if not isinstance(self.segment, np.ndarray) or self.segment.dtype != np.int32:  # not validated yet
            return f"Spectrum(id={self.id!r}, <unvalidated>)"
        return (
            f"Spectrum(id={self.id!r}, n={len(self)}, n_good={self.n_good}, "
            f"{self.wavelength[0]:.2f}–{self.wavelength[-1]:.2f} Å {self.medium}, "
            f"segments={self.n_segments}, frame={self.frame}, source={self.source!r})"
        )

    # ------------------------------------------------------------------ transforms
    def replace(self, **changes) -> Spectrum:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def select_segment(self, index: int) -> Spectrum:
        """The pixels of one segment as a new single-segment spectrum."""
        if not 0 <= index < self.n_segments:
            raise IndexError(f"{self._where()}: segment {index} out of range 0..{self.n_segments - 1}")
        keep = self.segment == index
        return self.replace(
            wavelength=self.wavelength[keep],
            flux=self.flux[keep],
            ivar=self.ivar[keep],
            mask=self.mask[keep],
            segment=None,
            meta={**self.meta, "segment_of_parent": index},
        )

    def to_vacuum(self) -> Spectrum:
        """This spectrum with vacuum wavelengths (itself if already vacuum)."""
        if self.medium == "vacuum":
            return self
        return self.replace(wavelength=air_to_vacuum(self.wavelength), medium="vacuum")

    def to_air(self) -> Spectrum:
        """This spectrum with standard-air wavelengths (itself if already air)."""
        if self.medium == "air":
            return self
        return self.replace(wavelength=vacuum_to_air(self.wavelength), medium="air")

    def to_medium(self, medium: str) -> Spectrum:
        """This spectrum in ``medium`` (``"vacuum"`` or ``"air"``)."""
        medium = str(medium).lower()
        if medium not in MEDIA:
            raise ValueError(f"medium must be 'vacuum' or 'air', got {medium!r}")
        return self.to_vacuum() if medium == "vacuum" else self.to_air()


def _merge_meta(metas: Sequence[dict]) -> dict[str, Any]:
    """Keys whose values agree across all parts, plus the list of per-part metadata."""
    if not metas:
        return {}
    common: dict[str, Any] = {}
    for key, value in metas[0].items():
        if key in ("n_bad_input", "sorted_on_input"):
            continue
        try:
            if all(key in m and bool(np.all(m[key] == value)) for m in metas[1:]):
                common[key] = value
        except (TypeError, ValueError):  # incomparable values: keep them per part only
            continue
    common["parts"] = [dict(m) for m in metas]
    return common


def combine(spectra: Iterable[Spectrum], id: str | None = None) -> Spectrum:
    """Join spectra of one star (chips, arms, CCDs) into one multi-segment spectrum.

    Each input's segments are kept distinct and the result's segments are renumbered 0, 1, ... by
    wavelength. All inputs must be in the same medium (convert first with :meth:`Spectrum.to_vacuum`
    or :meth:`Spectrum.to_air`) and may not be in different known velocity frames; pixels may not
    share a wavelength.

    Args:
        spectra: the parts, in any order.
        id: name of the result; default the common id of the parts, else their ids joined by ``+``.

    Returns:
        The combined spectrum. ``meta`` holds the values common to all parts, ``meta["parts"]``
        the parts' own metadata, ``meta["sources"]`` their files and ``meta["n_bad_input"]`` the sum.
        ``frame`` and ``barycentric_correction`` are those of the parts when all parts agree,
        else None (unknown).

    Example:
        >>> blue = Spectrum(np.arange(4000.0, 4003.0), np.ones(3), np.ones(3))
        >>> red = Spectrum(np.arange(6000.0, 6003.0), np.ones(3), np.ones(3))
        >>> combine([red, blue]).segment.tolist()
        [0, 0, 0, 1, 1, 1]
    """
    parts = list(spectra)
    if not parts:
        raise ValueError("combine: no spectra given")
    for p in parts:
        if not isinstance(p, Spectrum):
            raise TypeError(f"combine: expected Spectrum objects, got {type(p).__name__}")
    if len({p.medium for p in parts}) > 1:
        raise SpectrumFormatError(
            f"combine: spectra are in different media ({_listing(parts, 'medium')}); "
            "convert them with to_vacuum() or to_air() first"
        )
    if len({p.frame for p in parts} - {None}) > 1:
        raise SpectrumFormatError(
            f"combine: spectra are in different velocity frames ({_listing(parts, 'frame')}); "
            "their wavelengths are shifted differently"
        )
    offsets = np.cumsum([0] + [p.n_segments for p in parts[:-1]])
    segment = np.concatenate([p.segment.astype(np.int64) + off for p, off in zip(parts, offsets)])
    ids = [p.id for p in parts]
    if id is None:
        unique_ids = list(dict.fromkeys(i for i in ids if i))
        id = unique_ids[0] if len(unique_ids) == 1 else "+".join(unique_ids)
    sources = list(dict.fromkeys(p.source for p in parts if p.source))
    meta = _merge_meta([p.meta for p in parts])
    meta["sources"] = sources
    meta["n_bad_input"] = int(sum(p.meta.get("n_bad_input", 0) for p in parts))
    try:
        return Spectrum(
            np.concatenate([p.wavelength for p in parts]),
            np.concatenate([p.flux for p in parts]),
            np.concatenate([p.ivar for p in parts]),
            mask=np.concatenate([p.mask for p in parts]),
            medium=parts[0].medium,
            id=id,
            source="; ".join(sources),
            segment=segment,
            meta=meta,
            frame=_agreed(parts, "frame"),
            barycentric_correction=_agreed(parts, "barycentric_correction"),
        )
    except SpectrumFormatError as exc:
        raise SpectrumFormatError(f"combine {id!r}: {exc}") from exc


def _listing(parts: Sequence[Spectrum], attr: str) -> str:
    """``"<id>: <value>, ..."`` of one field of the parts, for messages."""
    return ", ".join(f"{p.id or p.source}: {getattr(p, attr)}" for p in parts)


def _agreed(parts: Sequence[Spectrum], attr: str):
    """The parts' common value of a field, or None when they differ."""
    values = {getattr(p, attr) for p in parts}
    return values.pop() if len(values) == 1 else None
