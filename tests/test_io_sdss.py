"""SDSS/BOSS ``spec-PLATE-MJD-FIBER.fits`` files: detection, per-fibre ids, grid, frame (synthetic files)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxpayne.io import (
    ReadFailure,
    SpectrumFormatError,
    detect_format,
    iter_spectra,
    read_sdss_spec,
    read_spectrum,
)

PLATE, MJD = 3586, 55181
#: Plug-map name: the same for every fibre of the plugging (what the generic reader used as id).
PLUGMAP_NAME = "3586-55181-01"
COEFF0, COEFF1, NPIX = 3.5793, 1e-4, 400
HELIO_RV = 23.4567  # [km/s]


def write_spec(path, fiber, *, header=True, spall=True, coeffs=True, and_mask=None):
    """A small spec file laid out as idlspec2d's reformat_spectra.py writes it (float32 columns)."""
    fits = pytest.importorskip("astropy.io.fits")
    loglam = COEFF0 + COEFF1 * np.arange(NPIX)
    flux = 10.0 + np.sin(np.arange(NPIX) / 7.0) + fiber
    cards = {"RA": 10.0, "DEC": 20.0, "NAME": PLUGMAP_NAME, "TELESCOP": "SDSS 2.5-M"}  # RA/DEC: boresight
    if header:
        cards.update(PLATEID=PLATE, MJD=MJD, FIBERID=fiber, PLUG_RA=10.5 + fiber, PLUG_DEC=20.5, HELIO_RV=HELIO_RV)
    if coeffs:
        cards.update(COEFF0=COEFF0, COEFF1=COEFF1)
    mask = np.zeros(NPIX, np.int32) if and_mask is None else and_mask
    coadd = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="flux", format="E", array=flux),
            fits.Column(name="loglam", format="E", array=loglam),
            fits.Column(name="ivar", format="E", array=np.full(NPIX, 25.0)),
            fits.Column(name="and_mask", format="J", array=mask),
            fits.Column(name="or_mask", format="J", array=mask),
        ],
        name="COADD",
    )
    hdus = [fits.PrimaryHDU(header=fits.Header(cards)), coadd]
    if spall:
        hdus.append(
            fits.BinTableHDU.from_columns(
                [
                    fits.Column(name="PLATE", format="J", array=[PLATE]),
                    fits.Column(name="MJD", format="J", array=[MJD]),
                    fits.Column(name="FIBERID", format="J", array=[fiber]),
                    fits.Column(name="CLASS", format="6A", array=["STAR"]),
                    fits.Column(name="Z", format="E", array=[1e-4]),
                ],
                name="SPALL",
            )
        )
    fits.HDUList(hdus).writeto(path)
    return path


def test_id_is_unique_per_fibre_not_the_plugmap_name(tmp_path):
    paths = [write_spec(tmp_path / f"spec-{PLATE}-{MJD}-{f:04d}.fits", f) for f in (1, 2)]
    spectra = [s for p in paths for s in read_spectrum(p)]
    assert [s.id for s in spectra] == ["3586-55181-0001", "3586-55181-0002"]
    assert all(s.meta["NAME"] == PLUGMAP_NAME for s in spectra)  # kept, but not the id
    assert {s.meta["FIBERID"] for s in spectra} == {1, 2}
    # the same through the lazy batch reader the CLI uses (ids key the fit table rows)
    items = list(iter_spectra(paths))
    assert not any(isinstance(x, ReadFailure) for x in items) and len({s.id for s in items}) == 2


def test_detected_and_read_as_sdss(tmp_path):
    path = write_spec(tmp_path / "anything.fits", 7)  # detected from the header's PLATEID/MJD
    assert detect_format(path) == "sdss"
    (s,) = read_spectrum(path)
    assert s.meta["format"] == "sdss" and s.medium == "vacuum" and s.n_segments == 1
    assert s.meta["RA"] == 17.5 and s.meta["DEC"] == 20.5  # plug-map position, not the boresight
    assert s.meta["CLASS"] == "STAR" and s.meta["PLATE"] == PLATE and s.meta["MJD"] == MJD
    np.testing.assert_allclose(s.ivar, 25.0)
    np.testing.assert_allclose(s.flux, 10.0 + np.sin(np.arange(NPIX) / 7.0) + 7, rtol=1e-6)


def test_frame_is_heliocentric_with_helio_rv(tmp_path):
    s = read_sdss_spec(write_spec(tmp_path / "spec.fits", 3))
    assert s.frame == "heliocentric" and s.barycentric_correction == pytest.approx(HELIO_RV)
    assert s.meta["HELIO_RV"] == pytest.approx(HELIO_RV)
    t = read_sdss_spec(write_spec(tmp_path / f"spec-{PLATE}-{MJD}-0004.fits", 4, header=False))
    assert t.frame == "heliocentric" and t.barycentric_correction is None  # no HELIO_RV card


def test_exact_log_uniform_grid_from_coefficients(tmp_path):
    s = read_sdss_spec(write_spec(tmp_path / "spec.fits", 1))
    assert s.meta["wavelength_source"] == "COEFF0/COEFF1"
    np.testing.assert_allclose(np.diff(np.log10(s.wavelength)), COEFF1, rtol=1e-9)
    np.testing.assert_allclose(s.wavelength[0], 10**COEFF0, rtol=1e-12)
    rounded = read_sdss_spec(write_spec(tmp_path / "nocoeff.fits", 1, coeffs=False))
    assert rounded.meta["wavelength_source"] == "column loglam"  # float32-rounded column
    np.testing.assert_allclose(rounded.wavelength, s.wavelength, rtol=1e-6)


def test_id_from_spall_row_or_file_name(tmp_path):
    no_header = write_spec(tmp_path / "renamed.fits", 12, header=False)  # identity only in SPALL
    assert detect_format(no_header) == "fits-table"  # nothing in header or name says SDSS ...
    assert read_spectrum(no_header, format="sdss")[0].id == "3586-55181-0012"  # ... but readable as one
    named = write_spec(tmp_path / "spec-0266-51602-0001.fits", 1, header=False, spall=False)
    assert detect_format(named) == "sdss"  # the data-model file name identifies it
    assert read_spectrum(named)[0].id == "0266-51602-0001"


def test_and_mask_masks_and_medium_is_checked(tmp_path):
    bad = np.zeros(NPIX, np.int32)
    bad[:10] = 1 << 23  # BRIGHTSKY in every exposure
    path = write_spec(tmp_path / "spec.fits", 1, and_mask=bad)
    s = read_sdss_spec(path)
    assert s.mask[:10].all() and s.n_good == NPIX - 10
    with pytest.raises(SpectrumFormatError, match="vacuum"):
        read_spectrum(path, medium="air")
