"""A small analytic stand-in emulator (Gaussian absorption lines) for tests, examples, benchmarks.

It has the emulator interface :class:`~jaxpayne.forward.model.ForwardModel` expects
(``wavelength``, ``medium``, ``label_names``, ``bounds``, ``predict``, ``emulator_error``) and a
spectrum that depends smoothly on three labels, with no trained weights involved.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxpayne.forward.doppler import SPEED_OF_LIGHT

__all__ = ["SyntheticLineEmulator"]

#: Label names and training box of the stand-in.
LABEL_NAMES = ("teff", "logg", "feh")
LOWER = np.array([4000.0, 1.0, -2.0])
UPPER = np.array([7000.0, 5.0, 0.5])


class SyntheticLineEmulator:
    """Normalised spectrum ``1 − Σ_k d_k(labels) exp(−½ (ln(λ/λ_k)/σ(labels))²)``.

    Line depths grow with [Fe/H] and fall with Teff; widths grow with log g — all smoothly, so
    ``predict`` is differentiable in every label.

    Args:
        wavelength: (n_pix,) emulator wavelengths [Å], sorted.
        n_lines: number of lines, placed at random inside the grid (away from its ends).
        line_width: intrinsic Gaussian σ of the lines [km/s] (at the middle of the log g range).
        medium: wavelength medium of the grid.
        emulator_error: optional (n_pix,) rms error, or a scalar broadcast to all pixels.
        seed: random seed of the line list.
    """

    label_names = LABEL_NAMES

    def __init__(self, wavelength, n_lines: int = 20, line_width: float = 6.0,
                 medium: str = "vacuum", emulator_error=None, seed: int = 0):
        self.wavelength = np.asarray(wavelength, dtype=np.float64)
        self.medium = medium
        rng = np.random.default_rng(seed)
        lo, hi = self.wavelength[0], self.wavelength[-1]
        span = hi - lo
        self.centers = np.sort(rng.uniform(lo + 0.05 * span, hi - 0.05 * span, n_lines))
        self.depths = rng.uniform(0.2, 0.7, n_lines)
        self.metal = rng.uniform(0.5, 1.5, n_lines)
        self.thermal = rng.uniform(-1.0, 1.0, n_lines)
        self.line_width = float(line_width)
        # ln λ relative to the grid centre, computed in float64 once: small numbers, so float32
        # evaluation keeps the line positions to ~1e-9 in ln λ
        reference = np.sqrt(lo * hi)
        self._log_wave = np.log(self.wavelength / reference)
        self._log_centers = np.log(self.centers / reference)
        self.emulator_error = (
            None if emulator_error is None
            else np.broadcast_to(
                np.asarray(emulator_error, np.float64), self.wavelength.shape
            ).copy()
        )

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) label bounds."""
        return LOWER.copy(), UPPER.copy()

    def predict(self, labels):
        """Flux (..., n_pix) for labels (..., 3) [K, dex, dex]; traceable, keeps the dtype."""
        labels = jnp.asarray(labels)
        dtype = labels.dtype if jnp.issubdtype(labels.dtype, jnp.floating) else jnp.float32
        labels = labels.astype(dtype)
        scaled = (labels - jnp.asarray(LOWER, dtype)) / jnp.asarray(UPPER - LOWER, dtype) - 0.5
        s = scaled[..., None, :]  # (..., 1, 3)
        strength = jnp.exp(
            jnp.asarray(self.metal, dtype) * s[..., 2]
            + jnp.asarray(self.thermal, dtype) * s[..., 0]
        )
        depth = jnp.asarray(self.depths, dtype) * strength / (1.0 + 0.5 * strength)
        sigma = (self.line_width / SPEED_OF_LIGHT) * (1.0 + 0.3 * s[..., 1])  # (..., 1) [ln Å]
        log_wave = jnp.asarray(self._log_wave, dtype)
        offset = log_wave[None, :] - jnp.asarray(self._log_centers, dtype)[:, None]
        profile = jnp.exp(-0.5 * (offset / sigma[..., None]) ** 2)
        return 1.0 - jnp.sum(depth[..., :, None] * profile, axis=-2)
