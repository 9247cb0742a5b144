"""Emulator network architectures (Flax linen modules)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "EMULATORS", "PayneMLP", "PerPixelNetwork", "ResidualMLP", "build_emulator"]

#: The Payne's LeakyReLU slope for negative inputs (Ting et al. 2019, their code's ``leaky_relu``).
PAYNE_LEAKY_SLOPE = 0.01

#: Activation functions by the name stored in model files.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "leaky_relu": lambda x: nn.leaky_relu(x, negative_slope=PAYNE_LEAKY_SLOPE),
    "sigmoid": nn.sigmoid,
    "tanh": jnp.tanh,
    "silu": nn.silu,
    "gelu": nn.gelu,
    "relu": nn.relu,
    "softplus": nn.softplus,
}


def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


class PayneMLP(nn.Module):
    """The Payne's emulator: a fully connected network from labels to every pixel.

    .. math:: f = W_L\\,a(\\cdots a(W_1\\,a(W_0 s + b_0) + b_1)\\cdots) + b_L

    with ``a`` the activation (LeakyReLU by default, slope 0.01) and ``s`` the scaled labels.
    Ting, Conroy, Rix & Cargile 2019, ApJ 879, 69.

    Attributes:
        n_pixels: number of output pixels.
        hidden: widths of the hidden layers (The Payne: two layers).
        activation: name of the hidden activation, a key of :data:`ACTIVATIONS`.
    """

    n_pixels: int
    hidden: Sequence[int] = (300, 300)
    activation: str = "leaky_relu"

    @nn.compact
    def __call__(self, scaled_labels: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        x = scaled_labels
        for i, width in enumerate(self.hidden):
            x = act(nn.Dense(int(width), name=f"hidden_{i}", param_dtype=jnp.float32)(x))
        return nn.Dense(self.n_pixels, name="output", param_dtype=jnp.float32)(x)


class ResidualMLP(nn.Module):
    """A residual MLP emulator: an input layer, residual blocks, and a linear read-out.

    Each block computes ``h ← h + W_b2 a(W_b1 a(h))`` (pre-activation residual block,
    He et al. 2016), which trains deeper networks stably on small grids.

    Attributes:
        n_pixels: number of output pixels.
        width: width of the residual stream.
        n_blocks: number of residual blocks.
        activation: name of the activation, a key of :data:`ACTIVATIONS`.
    """

    n_pixels: int
    width: int = 256
    n_blocks: int = 2
    activation: str = "silu"

    @nn.compact
    def __call__(self, scaled_labels: jax.Array) -> jax.Array:
        act = _activation(self.activation)
        h = nn.Dense(self.width, name="input", param_dtype=jnp.float32)(scaled_labels)
        for b in range(self.n_blocks):
            r = nn.Dense(self.width, name=f"block_{b}_a", param_dtype=jnp.float32)(act(h))
            r = nn.Dense(self.width, name=f"block_{b}_b", param_dtype=jnp.float32)(act(r))
            h = h + r
        return nn.Dense(self.n_pixels, name="output", param_dtype=jnp.float32)(act(h))


class PerPixelNetwork(nn.Module):
    """One small network per pixel with a single hidden layer, as in binspec.

    For pixel ``p``: :math:`h_p = a(W_{0,p} s + b_{0,p})`, :math:`f_p = W_{1,p}\\cdot h_p + b_{1,p}`,
    with ``a`` the sigmoid. El-Badry et al. 2018, MNRAS 476, 528; Ting et al. 2019.

    Attributes:
        n_pixels: number of pixels.
        n_hidden: hidden units per pixel.
        n_labels: number of input labels.
        activation: hidden activation (binspec: ``"sigmoid"``).
    """

    n_pixels: int
    n_hidden: int
    n_labels: int
    activation: str = "sigmoid"

    @nn.compact
    def __call__(self, scaled_labels: jax.Array) -> jax.Array:
        init = nn.initializers.normal(0.1)
        w0 = self.param("w0", init, (self.n_pixels, self.n_hidden, self.n_labels), jnp.float32)
        b0 = self.param("b0", nn.initializers.zeros, (self.n_pixels, self.n_hidden), jnp.float32)
        w1 = self.param("w1", init, (self.n_pixels, self.n_hidden), jnp.float32)
        b1 = self.param("b1", nn.initializers.zeros, (self.n_pixels,), jnp.float32)
        dtype = jnp.result_type(scaled_labels.dtype, jnp.float32)
        s = scaled_labels.astype(dtype)
        w0, b0, w1, b1 = (w.astype(dtype) for w in (w0, b0, w1, b1))
        if s.ndim == 1:
            return _per_pixel(w0, b0, w1, b1, s, self.activation)
        return jax.vmap(lambda x: _per_pixel(w0, b0, w1, b1, x, self.activation))(s.reshape(-1, s.shape[-1])).reshape(
            *s.shape[:-1], self.n_pixels
        )


def _per_pixel_forward(w0, b0, w1, b1, s, activation: str):
    """One spectrum of per-pixel networks: w0 (p, h, l), b0 (p, h), w1 (p, h), b1 (p,), s (l,)."""
    hidden = _activation(activation)(jnp.einsum("phl,l->ph", w0, s) + b0)
    return jnp.einsum("ph,ph->p", hidden, w1) + b1


#: :func:`_per_pixel_forward` with a hand-written JVP. Autodiff's JVP pushes every label tangent
#: through the tiny per-pixel contractions, which XLA runs slowly; here the label Jacobian
#: J[p, l] = Σ_h w1 a'(z) w0[p, h, l] is formed once and each tangent costs one small matrix
#: product (a Levenberg–Marquardt Jacobian of the binspec network is several times faster on a
#: CPU). Tangents of the weights (training) are handled too; absent ones cost nothing.
_per_pixel = jax.custom_jvp(_per_pixel_forward, nondiff_argnums=(5,))


def _per_pixel_jvp(activation, primals, tangents):
    from jax.custom_derivatives import SymbolicZero

    w0, b0, w1, b1, s = primals
    dw0, db0, dw1, db1, ds = (None if isinstance(t, SymbolicZero) else t for t in tangents)
    z = jnp.einsum("phl,l->ph", w0, s) + b0
    hidden, slope = jax.jvp(_activation(activation), (z,), (jnp.ones_like(z),))
    out = jnp.einsum("ph,ph->p", hidden, w1) + b1
    gain = slope * w1  # d out / d z, (p, h)
    d_out = jnp.zeros_like(out)
    if ds is not None:
        d_out = d_out + jnp.einsum("ph,phl->pl", gain, w0) @ ds
    d_z = None
    if dw0 is not None:
        d_z = jnp.einsum("phl,l->ph", dw0, s)
    if db0 is not None:
        d_z = db0 if d_z is None else d_z + db0
    if d_z is not None:
        d_out = d_out + jnp.einsum("ph,ph->p", gain, d_z)
    if dw1 is not None:
        d_out = d_out + jnp.einsum("ph,ph->p", hidden, dw1)
    if db1 is not None:
        d_out = d_out + db1
    return out, d_out


_per_pixel.defjvp(_per_pixel_jvp, symbolic_zeros=True)


from jaxpayne.emulators.cannon import CannonPolynomial  # noqa: E402  (it imports nothing from here)

#: Emulator classes by the kind stored in model files.
EMULATORS: dict[str, type[nn.Module]] = {
    "mlp": PayneMLP,
    "resmlp": ResidualMLP,
    "perpixel": PerPixelNetwork,
    "cannon": CannonPolynomial,
}


def build_emulator(kind: str, config: dict[str, Any]) -> nn.Module:
    """Rebuild an emulator module from its kind and JSON config.

    Args:
        kind: a key of :data:`EMULATORS`.
        config: the module's attributes (``n_pixels`` and the architecture's own).

    Returns:
        The (parameter-free) Flax module.
    """
    try:
        cls = EMULATORS[kind]
    except KeyError:
        raise ValueError(f"unknown emulator kind {kind!r}; known kinds are {sorted(EMULATORS)}") from None
    config = dict(config)
    for key in ("hidden",):
        if key in config:
            config[key] = tuple(int(v) for v in config[key])
    for key in ("offset", "slope"):
        if key in config:
            config[key] = tuple(float(v) for v in config[key])
    if "powers" in config:
        config["powers"] = tuple(tuple(int(v) for v in row) for row in config["powers"])
    try:
        return cls(**config)
    except TypeError as err:
        raise ValueError(f"bad config for emulator {kind!r}: {err}") from None
