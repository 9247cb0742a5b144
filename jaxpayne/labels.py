"""Label specifications: names, units and training bounds, and The Payne's label scaling.

The Payne (Ting et al. 2019, ApJ 879, 69) feeds its network labels scaled to [-0.5, 0.5]:

.. math:: s = (x - x_{min}) / (x_{max} - x_{min}) - 0.5

:class:`LabelSpec` carries the names, units and bounds of a model's labels and applies that scaling
and its inverse. It is a frozen dataclass of numpy arrays (metadata, not traced); the scaling
functions accept numpy or JAX arrays of shape ``(..., n_labels)`` and are safe under jit/vmap/grad.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["LabelSpec", "default_unit"]

#: Units assumed for common label names when the caller gives none.
_DEFAULT_UNITS = {
    "teff": "K",
    "logg": "dex",
    "vmic": "km/s",
    "vmacro": "km/s",
    "vsini": "km/s",
    "vbroad": "km/s",
    "rv": "km/s",
    "radius": "R_sun",
    "q": "",
}


def default_unit(name: str) -> str:
    """Best-guess unit of a label from its name.

    Abundance-like names (``feh``, ``[Fe/H]``, ``mg_fe``, ``alpha``...) are dex; Teff is K;
    velocities are km/s. Unknown names get ``""``.

    Args:
        name: label name, any case.

    Returns:
        The unit string.
    """
    key = name.strip().lower().replace("_", "").replace(" ", "")
    for known, unit in _DEFAULT_UNITS.items():
        if key == known:
            return unit
    if key.startswith("[") or key.endswith("h") or key.endswith("fe") or key in {"alpha", "mh"}:
        return "dex"
    return ""


@dataclass(frozen=True)
class LabelSpec:
    """Names, units and training bounds of a model's labels.

    Attributes:
        names: label names in the order the model expects them.
        lower: lower training bound of each label, physical units, shape ``(n_labels,)``.
        upper: upper training bound of each label, physical units, shape ``(n_labels,)``.
        units: unit of each label (``"K"``, ``"dex"``, ``"km/s"``...).
    """

    names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    units: tuple[str, ...] = field(default=())

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        lower = np.asarray(self.lower, dtype=np.float64).reshape(-1)
        upper = np.asarray(self.upper, dtype=np.float64).reshape(-1)
        units = tuple(self.units) if self.units else tuple(default_unit(n) for n in names)
        if len(set(names)) != len(names):
            raise ValueError(f"label names must be unique, got {list(names)}")
        if not (len(names) == lower.size == upper.size == len(units)):
            raise ValueError(
                f"label spec sizes disagree: {len(names)} names, {lower.size} lower bounds, "
                f"{upper.size} upper bounds, {len(units)} units"
            )
        if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
            raise ValueError("label bounds must be finite")
        if np.any(upper <= lower):
            bad = [n for n, lo, hi in zip(names, lower, upper) if hi <= lo]
            raise ValueError(f"upper bound must exceed lower bound for labels {bad}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        object.__setattr__(self, "units", units)

    @classmethod
    def from_data(
        cls, names: Sequence[str], labels: np.ndarray, units: Sequence[str] | None = None
    ) -> "LabelSpec":
        """Spec whose bounds are the min and max of a training set's labels.

        Args:
            names: label names.
            labels: training labels, shape ``(n_spectra, n_labels)``, physical units.
            units: optional units; guessed from the names when omitted.
        """
        labels = np.asarray(labels, dtype=np.float64)
        return cls(tuple(names), labels.min(axis=0), labels.max(axis=0), tuple(units or ()))

    @property
    def n_labels(self) -> int:
        """Number of labels."""
        return len(self.names)

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) training bounds, each shape ``(n_labels,)``, physical units."""
        return self.lower, self.upper

    def index(self, name: str) -> int:
        """Position of a label by name (case-insensitive)."""
        lowered = [n.lower() for n in self.names]
        try:
            return lowered.index(name.lower())
        except ValueError:
            raise KeyError(f"no label {name!r}; labels are {list(self.names)}") from None

    def scale(self, labels):
        """Physical labels → The Payne's scaled labels in [-0.5, 0.5] inside the training box.

        Args:
            labels: array ``(..., n_labels)`` in physical units (numpy or JAX).

        Returns:
            Scaled labels of the same shape and array type.
        """
        lo, hi = self._bounds_like(labels)
        return (labels - lo) / (hi - lo) - 0.5

    def unscale(self, scaled):
        """Inverse of :meth:`scale`."""
        lo, hi = self._bounds_like(scaled)
        return (scaled + 0.5) * (hi - lo) + lo

    def inside(self, labels, tolerance: float = 0.0) -> np.ndarray:
        """Whether each label vector lies inside the training box.

        Args:
            labels: array ``(..., n_labels)``, physical units.
            tolerance: allowed excursion as a fraction of each label's range.

        Returns:
            Boolean array of shape ``labels.shape[:-1]``.
        """
        labels = np.asarray(labels, dtype=np.float64)
        span = self.upper - self.lower
        ok = (labels >= self.lower - tolerance * span) & (labels <= self.upper + tolerance * span)
        return np.all(ok, axis=-1)

    def check_inside(self, labels, tolerance: float = 0.0, what: str = "labels") -> None:
        """Raise a ValueError naming the first label outside the training box."""
        labels = np.atleast_2d(np.asarray(labels, dtype=np.float64))
        span = self.upper - self.lower
        low = labels < self.lower - tolerance * span
        high = labels > self.upper + tolerance * span
        if np.any(low | high):
            row, col = np.argwhere(low | high)[0]
            raise ValueError(
                f"{what}: {self.names[col]} = {labels[row, col]:g} is outside the training box "
                f"[{self.lower[col]:g}, {self.upper[col]:g}] {self.units[col]}".rstrip()
            )

    def _bounds_like(self, x):
        dtype = getattr(x, "dtype", np.float64)
        if hasattr(x, "__jax_array__") or type(x).__module__.startswith("jax"):
            import jax.numpy as jnp

            return jnp.asarray(self.lower, dtype=dtype), jnp.asarray(self.upper, dtype=dtype)
        return self.lower.astype(dtype, copy=False), self.upper.astype(dtype, copy=False)

    def to_dict(self) -> dict:
        """JSON-serialisable description."""
        return {
            "names": list(self.names),
            "units": list(self.units),
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSpec":
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(d["names"]), np.asarray(d["lower"]), np.asarray(d["upper"]), tuple(d["units"]))

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, LabelSpec)
            and self.names == other.names
            and self.units == other.units
            and np.array_equal(self.lower, other.lower)
            and np.array_equal(self.upper, other.upper)
        )

    def __hash__(self) -> int:
        return hash((self.names, self.units, self.lower.tobytes(), self.upper.tobytes()))

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{n} [{lo:g}, {hi:g}]{' ' + u if u else ''}"
            for n, lo, hi, u in zip(self.names, self.lower, self.upper, self.units)
        )
        return f"LabelSpec({parts})"
