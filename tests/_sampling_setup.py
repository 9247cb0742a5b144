"""Shared set-up of the sampling tests: a synthetic-line emulator, one compiled fitter, mock spectra."""

import numpy as np
import pytest

from jaxpayne.forward.synthetic import SyntheticLineEmulator
from jaxpayne.io import Spectrum

SNR = 100.0


def make_emulator():
    """The synthetic-line emulator of the sampling tests (also built in their subprocesses)."""
    wave = np.exp(np.linspace(np.log(5000.0), np.log(5030.0), 360))
    return SyntheticLineEmulator(wave, n_lines=14, seed=5)


@pytest.fixture(scope="module")
def emulator():
    return make_emulator()


def obs_wave():
    return np.exp(np.linspace(np.log(5004.0), np.log(5026.0), 260))


def simulate(fm, theta, seed, snr=SNR):
    """Noisy spectra drawn from the exact forward model (the sampler's error model is exact)."""
    from jaxpayne.forward import make_observation

    rng = np.random.default_rng(seed)
    w = obs_wave()
    template = make_observation(w, np.ones_like(w))
    out = []
    for i, t in enumerate(np.atleast_2d(theta)):
        clean = np.asarray(fm.model_flux(np.asarray(t), template), np.float64)
        err = np.full_like(clean, 1.0 / snr)
        out.append(Spectrum.from_error(w, clean + rng.normal(size=clean.size) * err, err, id=f"s{i}"))
    return out


def batch_of(sampler, spectra):
    from jaxpayne.forward import pad_observations

    return pad_observations([sampler.observation(s.wavelength, s.flux, s.ivar) for s in spectra])


OPTIONS = dict(rv=True, max_rv=50.0, continuum="none", emulator_error=False, templates=32)


@pytest.fixture(scope="module")
def fitter(emulator):
    """One compiled fitter with OPTIONS, shared by the samplers of a module (``fitter=``)."""
    from jaxpayne.fitting import Fitter

    return Fitter(emulator, **OPTIONS)
