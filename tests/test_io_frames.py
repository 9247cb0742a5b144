"""Velocity frames and barycentric corrections carried by Spectrum, checked on the real survey files."""

from __future__ import annotations

import numpy as np
import pytest

from jaxpayne.io import FRAMES, Spectrum, SpectrumFormatError, combine, read_apstar, read_spectrum

APSTAR_MULTI = "apStar-dr17-2M17335483-2753043.fits"  # NVISITS = 3
APSTAR_SINGLE = "apStar-dr17-2M19485057+5005279.fits"  # NVISITS = 1
#: apVisit file → header BC [km/s] (barycentric correction card)
APVISIT_BC = {"apVisit-r13-5095-55844-128.fits": 11.2977627448, "apVisit-r13-9518-57729-104.fits": -14.5807887971}
#: BC1..BC3 [km/s] of the multi-visit apStar header
APSTAR_VISIT_BC = (25.75743865966797, 12.17825126647949, 11.70061588287354)
#: Apache Point Observatory (geodetic), for astropy's barycentric correction (no site download)
APO = {"lon": -105.820417, "lat": 32.780361, "height": 2788.0}


def simple(**kw):
    wave = np.linspace(5000.0, 5010.0, 20)
    return Spectrum(wave, np.ones(20), np.full(20, 1e4), **kw)


# =============================================================================== the container


def test_fields_default_to_unknown_and_are_validated():
    s = simple()
    assert s.frame is None and s.barycentric_correction is None
    t = simple(frame=" Topocentric", barycentric_correction=np.float32(-3.5))
    assert t.frame == "topocentric" and t.barycentric_correction == -3.5
    assert isinstance(t.barycentric_correction, float) and "frame=topocentric" in repr(t)
    assert set(FRAMES) == {"topocentric", "barycentric", "heliocentric", "rest"}
    with pytest.raises(SpectrumFormatError, match="frame must be one of"):
        simple(frame="lsr")
    for bad in (np.nan, "fast", np.inf):
        with pytest.raises(SpectrumFormatError, match="barycentric_correction must be a finite"):
            simple(barycentric_correction=bad)


def test_fields_survive_transforms():
    s = simple(frame="topocentric", barycentric_correction=12.0, segment=np.repeat([0, 1], 10))
    for derived in (s.to_air(), s.select_segment(1), s.replace(id="x")):
        assert derived.frame == "topocentric" and derived.barycentric_correction == 12.0


def test_combine_keeps_agreeing_frames_and_refuses_mixed_ones():
    blue = simple(frame="barycentric", barycentric_correction=5.0)
    red = Spectrum(np.linspace(6000.0, 6010.0, 5), np.ones(5), np.ones(5), frame="barycentric")
    both = combine([blue, red])
    assert both.frame == "barycentric" and both.barycentric_correction is None  # 5.0 vs None
    unknown = combine([blue, red.replace(frame=None)])
    assert unknown.frame is None
    with pytest.raises(SpectrumFormatError, match="different velocity frames"):
        combine([blue, red.replace(frame="topocentric")])


# =============================================================================== real files


@pytest.mark.parametrize("name", sorted(APVISIT_BC))
def test_apvisit_is_topocentric_with_header_bc(need_data, name):
    (s,) = read_spectrum(need_data("apogee_dr17", name))
    assert s.frame == "topocentric"
    assert s.barycentric_correction == pytest.approx(APVISIT_BC[name], abs=1e-9)
    # the sign convention: barycentric RV = topocentric RV + correction (the header's VHELIO)
    assert s.meta["VRAD"] + s.barycentric_correction == pytest.approx(s.meta["VHELIO"], abs=1e-3)


@pytest.mark.parametrize("name", sorted(APVISIT_BC))
def test_apvisit_bc_has_astropys_sign(need_data, name):
    """The header BC is astropy's barycentric radial_velocity_correction (added to a measured RV)."""
    pytest.importorskip("astropy")
    import astropy.units as u
    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    (s,) = read_spectrum(need_data("apogee_dr17", name))
    site = EarthLocation.from_geodetic(APO["lon"] * u.deg, APO["lat"] * u.deg, APO["height"] * u.m)
    star = SkyCoord(s.meta["RA"] * u.deg, s.meta["DEC"] * u.deg)
    bc = star.radial_velocity_correction("barycentric", obstime=Time(s.meta["JD"], format="jd"), location=site)
    assert s.barycentric_correction == pytest.approx(bc.to_value(u.km / u.s), abs=0.05)


def test_apstar_is_rest_frame(need_data):
    spectra = read_apstar(need_data("apogee_dr17", APSTAR_MULTI), visits=True)
    assert [s.frame for s in spectra] == ["rest"] * 4
    assert spectra[0].barycentric_correction is None  # a mix of visits with different BCs
    np.testing.assert_allclose([s.barycentric_correction for s in spectra[1:]], APSTAR_VISIT_BC, atol=1e-9)
    (single,) = read_spectrum(need_data("apogee_dr17", APSTAR_SINGLE))
    assert single.frame == "rest" and single.barycentric_correction is None


@pytest.mark.parametrize("name", [APSTAR_MULTI, APSTAR_SINGLE])
def test_apstar_header_evidence_for_rest_frame(need_data, name):
    """HDU 10 (RV fit of the combined spectrum) finds ≈ 0 km/s although the star moves at VHELIO."""
    fits = pytest.importorskip("astropy.io.fits")
    path = need_data("apogee_dr17", name)
    with fits.open(path) as hdul:
        vhelio = float(hdul[0].header["VHELIO"])
        table = hdul[10].data
        vrel, bc = float(table["vrel"][0]), float(table["bc"][0])
    assert abs(vhelio) > 10 and abs(vrel) < 0.5 and bc == 0


def test_galah_and_generic_frames_unknown(need_data, tmp_path):
    (ccd,) = read_spectrum(need_data("galah_benchmark", "1312160026010031.fits"))
    assert ccd.frame is None and ccd.barycentric_correction is None and ccd.meta["BARYEFF"] == pytest.approx(7.403316)
    path = tmp_path / "generic.npz"
    np.savez(path, wavelength=np.linspace(5000, 5010, 30), flux=np.ones(30), ivar=np.ones(30))
    (generic,) = read_spectrum(path)
    assert generic.frame is None and generic.barycentric_correction is None
