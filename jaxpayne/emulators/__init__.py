"""Flax emulators: networks mapping scaled labels to a spectrum.

Every emulator is a ``flax.linen.Module`` whose ``__call__`` maps scaled labels of shape
``(..., n_labels)`` (The Payne's [-0.5, 0.5] scaling, see :class:`jaxpayne.LabelSpec`) to flux of
shape ``(..., n_pixels)``. Emulators are described by a *kind* and a JSON-serialisable *config*
so a model file can rebuild them without the training code:

>>> module = build_emulator("mlp", {"n_pixels": 500, "hidden": [300, 300]})

Kinds:
    ``"mlp"``: :class:`PayneMLP`, The Payne's fully connected network (Ting et al. 2019).
    ``"resmlp"``: :class:`ResidualMLP`, a residual MLP (pre-activation residual blocks).
    ``"perpixel"``: :class:`PerPixelNetwork`, one small sigmoid network per pixel, as in
    binspec (El-Badry et al. 2018, MNRAS 476, 528).
    ``"cannon"``: :class:`~jaxpayne.emulators.cannon.CannonPolynomial`, The Cannon's polynomial
    in the labels (Ness et al. 2015), trained by :func:`~jaxpayne.emulators.cannon.train_cannon`.
"""

from jaxpayne.emulators.cannon import CannonPolynomial
from jaxpayne.emulators.networks import (
    ACTIVATIONS,
    EMULATORS,
    PayneMLP,
    PerPixelNetwork,
    ResidualMLP,
    build_emulator,
)

__all__ = [
    "ACTIVATIONS",
    "CannonPolynomial",
    "EMULATORS",
    "PayneMLP",
    "PerPixelNetwork",
    "ResidualMLP",
    "build_emulator",
]
