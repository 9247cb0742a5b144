"""Readers for survey-specific spectrum files: SDSS APOGEE apStar/apVisit, SDSS/BOSS optical
``spec`` files, GALAH HERMES CCD files and the binspec (El-Badry et al. 2018) ``.npz`` spectra.

Layouts (checked against the real files in ``shared/data``):

- **apStar** (APOGEE DR17, SDSS data model ``APOGEE_REDUX/.../apStar``): HDU 1 flux, HDU 2 error,
  HDU 3 APOGEE_PIXMASK bitmask, each ``(nrow, 8575)`` (or ``(8575,)``) on the log-uniform vacuum
  grid log10 λ = CRVAL1 + CDELT1·(i + 1 − CRPIX1) of the primary header (4.179, 6e-6 dex:
  15100.8–16999.8 Å). With NVISITS > 1 the rows are: 0 = combined with pixel-based weights,
  1 = combined with global weights, 2… = the visits. With NVISITS = 1 row 0 is the (single-visit)
  spectrum and row 1, if present, is all zeros. Combined rows have NaN flux and error in the chip
  gaps and at the ends; visit rows have zeros there. Flagged pixels carry huge errors (up to ~1e14)
  as well as their bits. Every row is in the star's **rest frame** (``frame = "rest"``): HDU 10,
  the RV fit of the combined spectrum, gives vrel = −0.13 and −0.03 km/s for the two test stars
  whose barycentric RVs (VHELIO) are +15.7 and +14.0 km/s.
- **apVisit** (``apVisit-r13-*``): HDUs 1–4 flux, error, bitmask, wavelength, each ``(3, 4096)``;
  row 0 is the *red* chip and wavelengths decrease along each row, so the reader sorts them; the
  spectrum is in the observed (topocentric) frame, VRAD/VHELIO/BC in the header [km/s] with
  VHELIO = VRAD + BC.
- **SDSS/BOSS** ``spec-PLATE-MJD-FIBER.fits`` (SDSS data model ``BOSS_SPECTRO_REDUX/RUN2D/spectra/
  PLATE4/spec``; written by idlspec2d ``reformat_spectra.py``): HDU 0 the spPlate header plus
  PLUG_RA/PLUG_DEC (the object's position; RA/DEC are the boresight's), THING_ID, FIBERID; HDU 1
  ``COADD`` table flux [1e-17 erg/s/cm²/Å], loglam = log10(λ/Å) (float32), ivar, and_mask,
  or_mask, ...; HDU 2 ``SPALL`` (or specObj) row. Vacuum wavelengths corrected to the
  heliocentric frame by the pipeline.
- **GALAH** ``<sobject_id><ccd>.fits``: primary HDU flux [counts, not normalized], extension
  ``input_sigma`` the uncertainty **relative to the flux** (σ/F; see :func:`read_galah_ccd`), linear
  air-wavelength WCS.
- **binspec** ``.npz``: ``spectrum``/``spec_err`` (one) or ``spectra``/``spec_errs`` (k, n) with
  ``snrs``, ``vhelios``, ``hjds``; pseudo-continuum normalized APOGEE spectra on the 7214-pixel
  ASPCAP grid, which the file does not contain (pass ``wavelength=``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxpayne.io import _common as C
from jaxpayne.io.spectrum import Spectrum, SpectrumFormatError, combine

__all__ = [
    "APOGEE_PIXMASK",
    "APOGEE_BAD_PIXMASK_BITS",
    "APOGEE_CHIP_BOUNDARIES",
    "apogee_pixmask_value",
    "read_apstar",
    "read_apvisit",
    "read_galah_ccd",
    "read_galah_star",
    "read_binspec",
    "read_sdss_spec",
    "sdss_spec_id",
    "SDSS_SPEC_NAME",
]

#: APOGEE_PIXMASK bit names (SDSS DR17 data model, apogee ``bitmask.PixelBitMask``).
APOGEE_PIXMASK = {
    "BADPIX": 0,  # bad in bad-pixel mask or from strong persistence jump
    "CRPIX": 1,  # cosmic ray
    "SATPIX": 2,  # saturated
    "UNFIXABLE": 3,  # unfixable in ap3d
    "BADDARK": 4,  # bad in dark frame
    "BADFLAT": 5,  # bad in flat frame
    "BADERR": 6,  # very high error
    "NOSKY": 7,  # no sky available from sky fibres
    "LITTROW_GHOST": 8,  # in the Littrow ghost, may be affected
    "PERSIST_HIGH": 9,  # high persistence region, may be affected
    "PERSIST_MED": 10,
    "PERSIST_LOW": 11,
    "SIG_SKYLINE": 12,  # near a sky line with significant flux compared with the object
    "SIG_TELLURIC": 13,  # near a significant telluric absorption line
    "NOT_ENOUGH_PSF": 14,  # less than 50 percent of the PSF in good pixels
}

#: Bits masked by default: those the APOGEE pipeline itself classes as BAD (level 1 in
#: ``PixelBitMask``: bits 0–7 and 14). The warning bits (Littrow ghost, persistence, sky line,
#: telluric) are kept; add them through ``pixmask_bits=`` for a more conservative fit.
APOGEE_BAD_PIXMASK_BITS = (
    "BADPIX",
    "CRPIX",
    "SATPIX",
    "UNFIXABLE",
    "BADDARK",
    "BADFLAT",
    "BADERR",
    "NOSKY",
    "NOT_ENOUGH_PSF",
)

#: Vacuum wavelengths [Å] separating APOGEE's blue/green and green/red chips: the middles of the
#: detector gaps (apVisit chips end/start at ≈15810/15857 Å and ≈16435/16473 Å). Used when an
#: apStar header lacks BMAX/GMIN/GMAX/RMIN.
APOGEE_CHIP_BOUNDARIES = (15833.0, 16454.0)

#: Header cards copied into ``meta`` (meta key → card).
_APSTAR_CARDS = {
    "OBJID": "OBJID",
    "FIELD": "FIELD",
    "SNR": "SNR",
    "SNREV": "SNREV",
    "RA": "RA",
    "DEC": "DEC",
    "GLON": "GLON",
    "GLAT": "GLAT",
    "J": "J",
    "H": "H",
    "K": "K",
    "NVISITS": "NVISITS",
    "VHELIO": "VHELIO",
    "VSCATTER": "VSCATTER",
    "VERR": "VERR",
    "STARFLAG": "STARFLAG",
    "ANDFLAG": "ANDFLAG",
    "RV_TEFF": "RV_TEFF",
    "RV_LOGG": "RV_LOGG",
    "RV_FEH": "RV_FEH",
    "TELESCOPE": "TELESCOP",
}
_APSTAR_VISIT_CARDS = {
    "SFILE": "SFILE{k}",
    "DATE-OBS": "DATE{k}",
    "JD": "JD{k}",
    "FIBER": "FIBER{k}",
    "BC": "BC{k}",
    "VRAD": "VRAD{k}",
    "VERR": "VERR{k}",
    "VHELIO": "VHELIO{k}",
    "SNR": "SNRVIS{k}",
    "STARFLAG": "FLAG{k}",
}
_APVISIT_CARDS = {
    "OBJID": "OBJID",
    "TELESCOPE": "TELESCOP",
    "PLATE": "PLATE",
    "MJD": "MJD5",
    "FIBERID": "FIBERID",
    "DATE-OBS": "DATE-OBS",
    "JD": "JD-MID",
    "HJD": "HJD",
    "EXPTIME": "EXPTIME",
    "RA": "RA",
    "DEC": "DEC",
    "SNR": "SNR",
    "SURVEY": "SURVEY",
    "STARFLAG": "STARFLAG",
    "BC": "BC",
    "VRAD": "VRAD",
    "VRADERR": "VRADERR",
    "VHELIO": "VHELIO",
    "VTYPE": "VTYPE",
    "RV_TEFF": "RVTEFF",
    "RV_LOGG": "RVLOGG",
    "RV_FEH": "RVFEH",
}
_GALAH_CARDS = {
    "OBJECT": "OBJECT",
    "STD_NAME": "STD_NAME",
    "TELESCOPE": "TELESCOP",
    "INSTRUMENT": "INSTRUME",
    "SPECTID": "SPECTID",
    "UTMJD": "UTMJD",
    "UTDATE": "UTDATE",
    "TOTALEXP": "TOTALEXP",
    "BARYEFF": "BARYEFF",
    "W_RMS": "W_RMS",
    "MOLECFIT": "MOLECFIT",
    "PIPE_VER": "PIPE_VER",
}
#: HERMES arm names in SPECTID, for files whose name does not carry the CCD digit.
_HERMES_SPECTID_CCD = {"BL": 1, "GN": 2, "RD": 3, "RR": 4}

#: SDSS/BOSS coadded-spectrum file name, ``spec-PLATE-MJD-FIBER.fits`` (plate zero-padded to 4
#: digits, fibre to 4; SDSS data model ``spec``); lite files and downloads may add a suffix.
SDSS_SPEC_NAME = re.compile(r"^spec-(?P<plate>\d+)-(?P<mjd>\d+)-(?P<fiber>\d+)(?!\d)", re.IGNORECASE)
#: Primary-header cards of an SDSS spec file copied into ``meta`` (meta key → card). RA/DEC are
#: the object's plug-map position (the header's own RA/DEC are the telescope boresight).
_SDSS_CARDS = {
    "PLATE": "PLATEID",
    "MJD": "MJD",
    "FIBERID": "FIBERID",
    "THING_ID": "THING_ID",
    "RA": "PLUG_RA",
    "DEC": "PLUG_DEC",
    "TELESCOPE": "TELESCOP",
    "NAME": "NAME",
    "EXPTIME": "EXPTIME",
    "NEXP": "NEXP",
    "HELIO_RV": "HELIO_RV",
    "RUN2D": "RUN2D",
}
#: Columns of the SPALL/specObj row (HDU 2) copied into ``meta`` (meta key → column).
_SDSS_SPALL_COLUMNS = {
    "PLATE": "PLATE",
    "MJD": "MJD",
    "FIBERID": "FIBERID",
    "OBJTYPE": "OBJTYPE",
    "CLASS": "CLASS",
    "SUBCLASS": "SUBCLASS",
    "Z": "Z",
    "Z_ERR": "Z_ERR",
    "SNR": "SN_MEDIAN_ALL",
}
#: Largest difference [dex] between the loglam column (float32: ≤ 2.4e-7 dex rounding at
#: 3.6–4.0) and the grid COEFF0 + COEFF1·i of the header for the exact grid to be used instead.
_SDSS_LOGLAM_TOLERANCE = 1e-6


def apogee_pixmask_value(bits) -> int:
    """An APOGEE_PIXMASK integer from bit names, bit numbers, or an int (returned as is).

    Example:
        >>> apogee_pixmask_value(["BADPIX", "CRPIX"]), apogee_pixmask_value(0b11)
        (3, 3)
    """
    if bits is None:
        bits = APOGEE_BAD_PIXMASK_BITS
    if isinstance(bits, (int, np.integer)):
        if bits < 0:
            raise ValueError(f"pixmask_bits must be >= 0, got {bits}")
        return int(bits)
    value = 0
    for bit in [bits] if isinstance(bits, str) else bits:
        if isinstance(bit, str):
            if bit.upper() not in APOGEE_PIXMASK:
                raise ValueError(f"unknown APOGEE_PIXMASK bit {bit!r}; known: {', '.join(APOGEE_PIXMASK)}")
            value |= 1 << APOGEE_PIXMASK[bit.upper()]
        else:
            value |= 1 << int(bit)
    return value


def _check_medium(medium: str | None, actual: str, path: Path, fmt: str) -> None:
    if medium is not None and str(medium).lower() != actual:
        raise SpectrumFormatError(f"{path}: {fmt} wavelengths are {actual}; medium={medium!r} contradicts the format")


# ---------------------------------------------------------------------------------- APOGEE


def _no_data(flux: np.ndarray, error: np.ndarray) -> np.ndarray:
    """Pixels an APOGEE pipeline left empty: NaN flux/error, or flux and error both zero."""
    return ~np.isfinite(flux) | ~np.isfinite(error) | ((flux == 0) & (error == 0))


def _apogee_spectrum(
    wave, flux, error, bitmask, segment, badmask, keep_gaps, *, path, id, meta, frame, barycentric_correction
) -> Spectrum:
    nodata = _no_data(flux, error)
    ivar, invalid = C.ivar_from_error(error)
    flagged = (bitmask.astype(np.int64) & badmask) != 0
    meta = dict(meta)
    meta["n_flagged"] = int(np.count_nonzero(flagged & ~nodata))
    meta["n_bad_input"] = int(np.count_nonzero(invalid & ~nodata))
    if keep_gaps:
        keep = np.ones(flux.size, dtype=bool)
        meta["n_no_data"] = int(np.count_nonzero(nodata))
    else:
        keep = ~nodata
        meta["n_no_data_dropped"] = int(np.count_nonzero(nodata))
    flux = np.where(np.isfinite(flux) & ~nodata, flux, 0.0)
    ivar = np.where(nodata, 0.0, ivar)
    if not keep.any():
        raise SpectrumFormatError(f"{path}: {id}: no pixel holds data")
    return Spectrum(
        wave[keep],
        flux[keep],
        ivar[keep],
        mask=(flagged | invalid | nodata)[keep],
        medium="vacuum",
        id=id,
        source=str(path),
        segment=segment[keep],
        meta=meta,
        frame=frame,
        barycentric_correction=barycentric_correction,
    )


def read_apstar(
    path, *, visits: bool = False, pixmask_bits=None, keep_gaps: bool = False, medium: str | None = None
) -> list[Spectrum]:
    """Read an APOGEE apStar file (combined spectrum, optionally the visits).

    Args:
        path: the ``apStar-*.fits`` file.
        visits: also return the individual visit rows, after the combined spectrum.
            With NVISITS = 1 the combined row *is* the visit and only it is returned.
        pixmask_bits: APOGEE_PIXMASK bits to mask — names, numbers or an int; default
            :data:`APOGEE_BAD_PIXMASK_BITS`.
        keep_gaps: keep the empty pixels of the chip gaps and ends (masked, ivar 0) so every
            spectrum has the full 8575-pixel grid; by default they are dropped.
        medium: optional check; apStar wavelengths are vacuum.

    Returns:
        ``[combined]`` or ``[combined, visit 1, visit 2, ...]``. Segments 0/1/2 = blue/green/red
        chip. All are in the star's rest frame (``frame = "rest"``; the pipeline removed each
        visit's RV, see the module docstring): a fitted RV is a residual around 0, the star's
        barycentric RV is ``meta["VHELIO"]``. Visits carry their own ``barycentric_correction``
        (header ``BC<k>`` [km/s], already applied); the combined spectrum, a mix of visits, has
        None. ``meta`` holds header values (OBJID, SNR, VHELIO [km/s], NVISITS, RA/DEC [deg], ...),
        ``kind`` (``"combined"``/``"visit"``), ``apstar_row``, ``rv_frame = "rest"``, counts of
        flagged (``n_flagged``) and dropped empty pixels.
    """
    path = C.check_file(path)
    _check_medium(medium, "vacuum", path, "apStar")
    badmask = apogee_pixmask_value(pixmask_bits)
    with C.open_fits(path) as hdul:
        if len(hdul) < 4:
            raise SpectrumFormatError(f"{path}: not an apStar file: {len(hdul)} HDUs, need flux/error/bitmask in 1-3")
        head = hdul[0].header
        flux, error, bits = (C.hdu_data(hdul[i], path, i) for i in (1, 2, 3))
        flux_unit = C.plain(hdul[1].header.get("BUNIT"))
    for name, arr in (("flux", flux), ("error", error), ("bitmask", bits)):
        if arr is None or arr.ndim not in (1, 2):
            raise SpectrumFormatError(
                f"{path}: apStar {name} HDU is {'empty' if arr is None else arr.shape}, expected (nrow, npix)"
            )
    flux, error, bits = (np.atleast_2d(a) for a in (flux, error, bits))
    if not flux.shape == error.shape == bits.shape:
        raise SpectrumFormatError(
            f"{path}: apStar flux {flux.shape}, error {error.shape}, bitmask {bits.shape} differ"
        )
    nrow, npix = flux.shape
    for card in ("CRVAL1", "CDELT1"):
        if card not in head:
            raise SpectrumFormatError(f"{path}: apStar primary header lacks {card} (log10 wavelength grid)")
    loglam = float(head["CRVAL1"]) + float(head["CDELT1"]) * (np.arange(npix) + 1.0 - float(head.get("CRPIX1", 1.0)))
    wave = 10.0**loglam
    C.check_wavelength_plausible(wave, str(path), "the apStar log10 grid")

    if all(c in head for c in ("BMAX", "GMIN", "GMAX", "RMIN")):
        cut1 = 0.5 * (float(head["BMAX"]) + float(head["GMIN"]))
        cut2 = 0.5 * (float(head["GMAX"]) + float(head["RMIN"]))
        pix = np.arange(npix)
        segment = (pix > cut1).astype(np.int32) + (pix > cut2)
    else:
        segment = np.searchsorted(np.asarray(APOGEE_CHIP_BOUNDARIES), wave).astype(np.int32)

    base = C.header_values(head, _APSTAR_CARDS)
    objid = str(base.get("OBJID") or path.stem.replace("apStar-dr17-", "").replace("apStar-", ""))
    nvisits = int(base.get("NVISITS", 1) or 1)
    base.update(format="apstar", rv_frame="rest", pixmask_bits=badmask)
    if flux_unit:
        base["flux_unit"] = flux_unit

    out = [
        _apogee_spectrum(
            wave,
            flux[0],
            error[0],
            bits[0],
            segment,
            badmask,
            keep_gaps,
            path=path,
            id=objid,
            meta={**base, "kind": "combined", "apstar_row": 0},
            frame="rest",
            barycentric_correction=None,
        )
    ]
    if visits and nvisits > 1:
        if nrow < nvisits + 2:
            raise SpectrumFormatError(
                f"{path}: NVISITS = {nvisits} but the flux HDU has only {nrow} rows (expected {nvisits + 2})"
            )
        for k in range(1, nvisits + 1):
            row = k + 1
            vmeta = {**base, **C.header_values(head, {m: c.format(k=k) for m, c in _APSTAR_VISIT_CARDS.items()})}
            vmeta.pop("SNREV", None)  # a property of the combined spectrum only
            vmeta.update(kind="visit", visit=k, apstar_row=row)
            out.append(
                _apogee_spectrum(
                    wave,
                    flux[row],
                    error[row],
                    bits[row],
                    segment,
                    badmask,
                    keep_gaps,
                    path=path,
                    id=f"{objid}_visit{k}",
                    meta=vmeta,
                    frame="rest",
                    barycentric_correction=vmeta.get("BC"),
                )
            )
    return out


def read_apvisit(path, *, pixmask_bits=None, keep_gaps: bool = False, medium: str | None = None) -> list[Spectrum]:
    """Read an APOGEE apVisit file: three chips × 4096 pixels into one 3-segment spectrum.

    The chips are stored red first with decreasing wavelengths; the result is sorted increasing
    with segments 0/1/2 = blue/green/red. Wavelengths are vacuum, in the observed (topocentric)
    frame (``frame = "topocentric"``): ``meta["VREL"]``/``meta["VRAD"]`` is the measured shift,
    ``barycentric_correction`` (= ``meta["BC"]``) the barycentric correction and ``meta["VHELIO"]``
    = VRAD + BC the barycentric RV [km/s], so a fitted RV plus ``barycentric_correction`` is
    comparable with VHELIO.

    Args:
        path: the ``apVisit-*.fits`` file.
        pixmask_bits: APOGEE_PIXMASK bits to mask (default :data:`APOGEE_BAD_PIXMASK_BITS`).
        keep_gaps: keep empty pixels (masked) instead of dropping them.
        medium: optional check; apVisit wavelengths are vacuum.

    Returns:
        A one-element list.
    """
    path = C.check_file(path)
    _check_medium(medium, "vacuum", path, "apVisit")
    badmask = apogee_pixmask_value(pixmask_bits)
    with C.open_fits(path) as hdul:
        if len(hdul) < 5:
            raise SpectrumFormatError(
                f"{path}: not an apVisit file: {len(hdul)} HDUs, need flux/error/mask/wavelength in 1-4"
            )
        head = hdul[0].header
        flux, error, bits, wave = (C.hdu_data(hdul[i], path, i) for i in (1, 2, 3, 4))
        flux_unit = C.plain(hdul[1].header.get("BUNIT"))
        table = None
        if len(hdul) > 11 and hdul[11].__class__.__name__ == "BinTableHDU":
            table = C.hdu_data(hdul[11], path, 11)
    shapes = {
        n: (None if a is None else a.shape)
        for n, a in zip(("flux", "error", "mask", "wavelength"), (flux, error, bits, wave))
    }
    if any(s is None or len(s) != 2 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise SpectrumFormatError(f"{path}: apVisit HDUs 1-4 should be equal (nchip, npix) images, got {shapes}")
    nchip, npix = flux.shape
    chip = np.repeat(np.arange(nchip, dtype=np.int32), npix)
    meta = C.header_values(head, _APVISIT_CARDS)
    if table is not None and len(table) == 1:
        names = table.dtype.names or ()
        for col in ("APOGEE_ID", "VREL", "VRELERR", "TELESCOPE", "FIELD"):
            if col in names and col not in meta:
                meta[col] = C.plain(table[col][0])
    meta.update(format="apvisit", rv_frame="observed", pixmask_bits=badmask, n_chips=nchip)
    if flux_unit:
        meta["flux_unit"] = flux_unit
    objid = str(meta.get("OBJID") or meta.get("APOGEE_ID") or path.stem)
    designation = "-".join(str(meta[k]) for k in ("PLATE", "MJD", "FIBERID") if k in meta)
    spec_id = f"{objid}_{designation}" if designation else objid
    C.check_wavelength_plausible(wave.ravel(), str(path), "apVisit HDU 4")
    return [
        _apogee_spectrum(
            wave.ravel().astype(np.float64),
            flux.ravel().astype(np.float64),
            error.ravel().astype(np.float64),
            bits.ravel(),
            chip,
            badmask,
            keep_gaps,
            path=path,
            id=spec_id,
            meta=meta,
            frame="topocentric",
            barycentric_correction=meta.get("BC"),
        )
    ]


# ---------------------------------------------------------------------------------- GALAH


def read_galah_ccd(path, *, relative_sigma: bool = True, medium: str | None = None) -> Spectrum:
    """Read one GALAH HERMES CCD file (``<sobject_id><ccd>.fits``).

    The uncertainty extension ``input_sigma`` is **relative** (σ_F / F): in the benchmark files
    σ·√F is constant to ~5 % within each CCD (Poisson noise, effective gain 1.8–2.6 e⁻/ADU, close
    to the header's RO_GAIN = 2.7), and σ ≈ 1/√(gain·F) in amplitude, whereas an absolute σ would
    grow as √F. So σ_F = input_sigma × flux. Pixels with flux ≤ 0 thus have no valid uncertainty
    and are masked (counted in ``meta["n_bad_input"]``).

    Args:
        path: the CCD file.
        relative_sigma: treat ``input_sigma`` as relative (default, correct for GALAH DR2/DR3
            reductions); False uses it as an absolute σ.
        medium: optional check; GALAH wavelengths are air.

    Returns:
        A single-segment spectrum with air wavelengths λ = CRVAL1 + CDELT1·(i + 1 − CRPIX1) [Å],
        flux in counts; ``meta["ccd"]`` 1–4, ``meta["sobject_id"]``, ``meta["BARYEFF"]`` [km/s].
        The star's RV is still in the spectrum (``rv_frame = "observed"``), but in which frame is
        not established: for the mu Leo benchmark the lines sit at ≈ −3 km/s, i.e. topocentric
        (−10.5 km/s) shifted by BARYEFF (+7.4), which is not that exposure's barycentric correction
        (+24.5 km/s, astropy; see docs/spectra_io.md). So ``frame`` and
        ``barycentric_correction`` are None — always fit the RV.
    """
    path = C.check_file(path)
    _check_medium(medium, "air", path, "GALAH")
    with C.open_fits(path) as hdul:
        head = hdul[0].header
        flux = C.hdu_data(hdul[0], path, 0)
        names = [h.name.lower() for h in hdul]
        if "input_sigma" not in names:
            raise SpectrumFormatError(f"{path}: not a GALAH CCD file: no 'input_sigma' extension (HDUs: {names})")
        isig = names.index("input_sigma")
        sigma = C.hdu_data(hdul[isig], path, isig)
    if flux is None or flux.ndim != 1:
        raise SpectrumFormatError(
            f"{path}: GALAH primary HDU should be a 1-D flux array, got {None if flux is None else flux.shape}"
        )
    if sigma is None or sigma.shape != flux.shape:
        raise SpectrumFormatError(
            f"{path}: input_sigma shape {None if sigma is None else sigma.shape} != flux shape {flux.shape}"
        )
    wave = C.wcs_wavelength(head, flux.size, str(path))
    if wave is None:
        raise SpectrumFormatError(f"{path}: GALAH primary header lacks the CRVAL1/CDELT1 wavelength solution")
    flux = flux.astype(np.float64)
    error = sigma.astype(np.float64) * (flux if relative_sigma else 1.0)
    meta = C.header_values(head, _GALAH_CARDS)
    parts = C.galah_name_parts(path)
    if parts is not None:
        sobject, ccd = parts
    else:
        sobject, ccd = path.stem, _HERMES_SPECTID_CCD.get(str(meta.get("SPECTID", "")).upper())
    meta.update(
        format="galah",
        sobject_id=sobject,
        ccd=ccd,
        rv_frame="observed",
        sigma_convention="relative" if relative_sigma else "absolute",
        flux_unit="counts",
    )
    return Spectrum.from_error(wave, flux, error, medium="air", id=sobject, source=str(path), meta=meta)


def galah_ccd_paths(prefix) -> list[Path]:
    """The existing CCD files ``<prefix>1.fits`` … ``<prefix>4.fits`` of a GALAH sobject_id."""
    prefix = str(prefix)
    for suffix in (".fits", ".fits.gz", ".fit"):
        if prefix.lower().endswith(suffix):
            prefix = prefix[: -len(suffix)]
    found = []
    for ccd in range(1, 5):
        for suffix in (".fits", ".fits.gz", ".fit"):
            candidate = Path(f"{prefix}{ccd}{suffix}")
            if candidate.is_file():
                found.append(candidate)
                break
    return found


def read_galah_star(paths_or_prefix, *, relative_sigma: bool = True, medium: str | None = None) -> Spectrum:
    """Read a GALAH star: its CCD files combined into one multi-segment air-wavelength spectrum.

    Args:
        paths_or_prefix: the CCD files, or the path prefix ``.../<sobject_id>`` (the file name
            without the CCD digit), for which ``<prefix>1.fits`` … ``<prefix>4.fits`` are read.
        relative_sigma: see :func:`read_galah_ccd`.
        medium: optional check; GALAH wavelengths are air.

    Returns:
        The combined spectrum, segment k − 1 = CCD k, ``meta["ccds"]`` the CCDs present.

    Example:
        >>> star = read_galah_star("data/galah_benchmark/131216002601003")  # doctest: +SKIP
        >>> star.n_segments  # doctest: +SKIP
        4
    """
    if isinstance(paths_or_prefix, (str, Path)) and not Path(paths_or_prefix).is_file():
        paths = galah_ccd_paths(paths_or_prefix)
        if not paths:
            raise SpectrumFormatError(
                f"{paths_or_prefix}: no GALAH CCD files {Path(str(paths_or_prefix)).name}[1-4].fits found"
            )
    elif isinstance(paths_or_prefix, (str, Path)):
        paths = [Path(paths_or_prefix)]
    else:
        paths = [Path(p) for p in paths_or_prefix]
    ccds = [read_galah_ccd(p, relative_sigma=relative_sigma, medium=medium) for p in paths]
    return combine_galah(ccds)


def combine_galah(ccds: Sequence[Spectrum]) -> Spectrum:
    """Combine single-CCD GALAH spectra of one sobject_id (checks ids and duplicate CCDs)."""
    ids = {s.meta.get("sobject_id") for s in ccds}
    if len(ids) > 1:
        raise SpectrumFormatError(
            f"{ccds[0].source}: CCD files of different GALAH stars given together: {sorted(map(str, ids))}"
        )
    numbers = [s.meta.get("ccd") for s in ccds]
    dup = {n for n in numbers if n is not None and numbers.count(n) > 1}
    if dup:
        raise SpectrumFormatError(f"{ccds[0].source}: GALAH CCD {sorted(dup)} given more than once for {ids.pop()}")
    order = np.argsort([s.wavelength[0] for s in ccds])
    star = combine([ccds[i] for i in order])
    star.meta["ccds"] = sorted(n for n in numbers if n is not None)
    star.meta.pop("ccd", None)
    return star


# ---------------------------------------------------------------------------------- SDSS / BOSS


def sdss_spec_id(plate, mjd, fiber) -> str:
    """``PLATE-MJD-FIBER`` as in the spec file name: plate ≥ 4 digits, fibre 4 (``0266-51602-0001``)."""
    return f"{int(plate):04d}-{int(mjd)}-{int(fiber):04d}"


def read_sdss_spec(path, *, medium: str | None = None) -> Spectrum:
    """Read an SDSS/BOSS ``spec-PLATE-MJD-FIBER.fits`` coadded spectrum (full or lite file).

    The id is **unique per fibre and plugging**: ``PLATE-MJD-FIBER`` (:func:`sdss_spec_id`) from
    the header's PLATEID, MJD and FIBERID, else the SPALL row (HDU 2), else the file name. (The
    header's NAME is the plug-map name ``PLATE-MJD-MAP``, shared by every fibre of a plate.)

    Wavelengths are vacuum (checked against ``VACUUM``/``AIRORVAC`` cards when present) and in the
    heliocentric frame (``frame = "heliocentric"``: idlspec2d shifts every exposure by its
    heliocentric correction before coadding). ``barycentric_correction`` is the header's HELIO_RV
    (the heliocentric correction, already applied; within 0.013 km/s of the barycentric one) when
    present, else None. The loglam column is float32; when the header's COEFF0/COEFF1 reproduce
    it, the exact log-uniform grid 10**(COEFF0 + COEFF1·i) is used (``meta["wavelength_source"]``).
    Pixels with a nonzero ``and_mask`` (bad in every exposure) or ``ivar = 0`` are masked.

    Args:
        path: the spec file.
        medium: optional check; SDSS wavelengths are vacuum.

    Returns:
        A single-segment spectrum, flux [1e-17 erg/s/cm²/Å]; ``meta``: PLATE, MJD, FIBERID,
        THING_ID, RA/DEC (plug-map position) [deg], CLASS, SUBCLASS, Z, Z_ERR, SNR (SN_MEDIAN_ALL),
        HELIO_RV [km/s] when present.

    Example:
        >>> read_sdss_spec("spec-0266-51602-0001.fits").id  # doctest: +SKIP
        '0266-51602-0001'
    """
    path = C.check_file(path)
    with C.open_fits(path) as hdul:
        if len(hdul) < 2 or not C.is_table(hdul[1]):
            raise SpectrumFormatError(f"{path}: not an SDSS spec file: no COADD table in HDU 1 ({C.hdu_summary(hdul)})")
        head = hdul[0].header
        columns = {name.lower(): name for name in hdul[1].columns.names}
        missing = [c for c in ("flux", "loglam", "ivar") if c not in columns]
        if missing:
            raise SpectrumFormatError(f"{path}: SDSS COADD table (HDU 1) lacks column(s) {missing}")
        coadd = C.hdu_data(hdul[1], path, 1)
        if coadd is None or len(coadd) == 0:
            raise SpectrumFormatError(f"{path}: SDSS COADD table (HDU 1) is empty")
        flux, loglam, ivar = (np.asarray(coadd[columns[c]], dtype=np.float64) for c in ("flux", "loglam", "ivar"))
        and_mask = np.asarray(coadd[columns["and_mask"]]) if "and_mask" in columns else None
        meta = C.header_values(head, _SDSS_CARDS)
        rows = C.hdu_data(hdul[2], path, 2) if len(hdul) > 2 and C.is_table(hdul[2]) else None
        if rows is not None and len(rows) == 1:  # the SPALL/specObj row of this fibre
            for key, col in _SDSS_SPALL_COLUMNS.items():
                value = C.plain(rows[col][0]) if col in (rows.dtype.names or ()) else None
                if key not in meta and value is not None and value != "":
                    meta[key] = value
    actual = C.medium_from_header(head) or "vacuum"
    _check_medium(medium, actual, path, "SDSS spec")
    from_name = SDSS_SPEC_NAME.match(path.name)
    if all(k in meta for k in ("PLATE", "MJD", "FIBERID")):
        spec_id = sdss_spec_id(meta["PLATE"], meta["MJD"], meta["FIBERID"])
    elif from_name is not None:
        spec_id = "-".join(from_name.group("plate", "mjd", "fiber"))
    else:
        spec_id = path.stem
    meta.update(format="sdss", flux_unit="1e-17 erg/s/cm2/Angstrom", rv_frame="observed")
    meta["wavelength_source"] = "column loglam"
    if "COEFF0" in head and "COEFF1" in head:
        grid = float(head["COEFF0"]) + float(head["COEFF1"]) * np.arange(loglam.size)
        if np.max(np.abs(grid - loglam)) < _SDSS_LOGLAM_TOLERANCE:
            loglam = grid
            meta["wavelength_source"] = "COEFF0/COEFF1"
    wave = 10.0**loglam
    C.check_wavelength_plausible(wave, str(path), "the loglam column")
    mask = None if and_mask is None else and_mask != 0
    return Spectrum(
        wave,
        flux,
        ivar,
        mask=mask,
        medium=actual,
        id=spec_id,
        source=str(path),
        meta=meta,
        frame="heliocentric",
        barycentric_correction=meta.get("HELIO_RV"),
    )


# ---------------------------------------------------------------------------------- binspec


def read_binspec(path, wavelength, *, medium: str | None = None) -> list[Spectrum]:
    """Read a binspec ``.npz`` spectrum file (combined or visits) on a separately supplied grid.

    Args:
        path: ``spectrum_combined_*.npz`` (keys ``spectrum``, ``spec_err``) or
            ``spectra_visit_*.npz`` (``spectra`` (k, n), ``spec_errs``, ``snrs``, ``vhelios``
            [km/s], ``hjds``).
        wavelength: the ``(n,)`` vacuum wavelength grid [Å] (e.g. ``apogee_wavelength.npz``).
        medium: optional check; binspec (APOGEE) wavelengths are vacuum.

    Returns:
        One spectrum per row, segments from the detector gaps of the grid (0/1/2 for APOGEE).
        Pixels with ``spec_err`` ≥ 0.1 are binspec's way of marking bad pixels (errors inflated to
        up to ~100): they are kept with their true, tiny ivar and *not* masked, so they carry
        essentially no weight; mask them yourself (``spec.replace(mask=spec.mask | (spec.error >=
        0.1))``) if a hard cut is wanted.
    """
    path = C.check_file(path)
    _check_medium(medium, "vacuum", path, "binspec")
    with C.open_npz(path) as z:
        keys = set(z.files)
        if {"spectrum", "spec_err"} <= keys:
            flux, err = np.atleast_2d(z["spectrum"]), np.atleast_2d(z["spec_err"])
            extras = {}
            kind = "combined"
        elif {"spectra", "spec_errs"} <= keys:
            flux, err = np.atleast_2d(z["spectra"]), np.atleast_2d(z["spec_errs"])
            extras = {
                m: np.atleast_1d(z[k])
                for m, k in (("SNR", "snrs"), ("VHELIO", "vhelios"), ("HJD", "hjds"))
                if k in keys
            }
            kind = "visit"
        else:
            raise SpectrumFormatError(f"{path}: not a binspec file (keys {sorted(keys)})")
    if wavelength is None:
        raise SpectrumFormatError(
            f"{path}: binspec spectra carry no wavelength grid; pass wavelength= (e.g. apogee_wavelength.npz)"
        )
    wave = np.asarray(wavelength, dtype=np.float64).ravel()
    if flux.shape != err.shape:
        raise SpectrumFormatError(f"{path}: flux shape {flux.shape} != error shape {err.shape}")
    if flux.shape[1] != wave.size:
        raise SpectrumFormatError(
            f"{path}: spectra have {flux.shape[1]} pixels but the wavelength grid has {wave.size}"
        )
    from jaxpayne.forward.observation import segments_from_gaps  # lazy: the forward package imports JAX

    order = np.argsort(wave, kind="stable")  # the gap finder wants sorted wavelengths
    segment = np.empty(wave.size, dtype=np.int32)
    segment[order] = segments_from_gaps(wave[order])
    name = path.stem
    for prefix in ("spectrum_combined_", "spectra_visit_", "spectrum_", "spectra_"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    out = []
    for i in range(flux.shape[0]):
        meta = {"format": "binspec", "kind": kind, "normalized": True}
        for key, values in extras.items():
            if values.size == flux.shape[0]:
                meta[key] = C.plain(values[i])
        spec_id = name if flux.shape[0] == 1 and kind == "combined" else f"{name}_visit{i + 1}"
        if kind == "visit":
            meta["visit"] = i + 1
        out.append(
            Spectrum.from_error(
                wave, flux[i], err[i], medium="vacuum", id=spec_id, source=str(path), segment=segment, meta=meta
            )
        )
    return out


def galah_group_key(spectrum: Spectrum) -> tuple[str, str] | None:
    """``(directory, sobject_id)`` for a single-CCD GALAH spectrum read from a file, else None."""
    if spectrum.meta.get("format") != "galah" or "ccd" not in spectrum.meta or not spectrum.source:
        return None
    return str(Path(spectrum.source).resolve().parent), str(spectrum.meta.get("sobject_id"))
