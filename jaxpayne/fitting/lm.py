"""Bounded Levenberg–Marquardt for one least-squares problem, written as a pure JAX function.

Minimises ``½‖r(x)‖²`` with the Jacobian from forward-mode autodiff. Steps solve
``(JᵀJ + λ diag(JᵀJ + δ)) Δ = −Jᵀr`` (Marquardt 1963 scaling), are projected onto the box
``[lower, upper]``, accepted when the cost drops (then λ shrinks) and rejected otherwise (λ
grows). The fit has converged when the Gauss–Newton model predicts that the next step would lower
the cost by less than the tolerance (checked before the step is tried, so the last iteration
costs one Jacobian and no trial), or when an accepted step changed the cost or the parameters
by less than the tolerances. The loop is a ``lax.while_loop`` so the whole fit jit-compiles and vmaps over spectra
and starting points. Work in coordinates of order unity (see :class:`~jaxpayne.fitting.Fitter`).

References: Levenberg 1944, Q. Appl. Math. 2, 164; Marquardt 1963, SIAM J. Appl. Math. 11, 431;
Nocedal & Wright 2006, *Numerical Optimization*, §10.3.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["LMOptions", "LMResult", "levenberg_marquardt"]


class LMOptions(NamedTuple):
    """Stopping rules and damping of :func:`levenberg_marquardt`.

    Attributes:
        max_iter: maximum number of Jacobian evaluations.
        ftol: stop when an accepted step lowers the cost, or the next step is predicted to lower
            it, by less than ``ftol`` × cost.
        cost_atol: ... or by less than this absolute amount of χ² (statistically negligible).
        xtol: stop when the accepted step is shorter than ``xtol`` (in the working coordinates).
        gtol: stop when the projected gradient's largest component is below ``gtol``.
        initial_damping: starting λ.
        damping_up: factor on λ after a rejected step.
        damping_down: factor on λ after an accepted step.
    """

    max_iter: int = 40
    ftol: float = 1e-6
    cost_atol: float = 1e-2
    xtol: float = 1e-7
    gtol: float = 1e-10
    initial_damping: float = 1e-3
    damping_up: float = 10.0
    damping_down: float = 0.3


class LMResult(NamedTuple):
    """Outcome of one fit.

    Attributes:
        x: best parameters (working coordinates), shape (n,).
        cost: ``Σ r²`` at ``x`` (twice the usual ½‖r‖²).
        n_iter: Jacobian evaluations used.
        converged: a stopping rule other than ``max_iter`` fired.
        jacobian: (m, n) Jacobian of the residuals at ``x_jacobian``.
        x_jacobian: where ``jacobian`` was evaluated: ``x`` itself unless the last iteration
            (at ``max_iter``) accepted a step.
    """

    x: jax.Array
    cost: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    jacobian: jax.Array
    x_jacobian: jax.Array


class _State(NamedTuple):
    x: jax.Array
    cost: jax.Array
    damping: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    done: jax.Array
    jacobian: jax.Array
    x_jacobian: jax.Array


def levenberg_marquardt(
    residual_fn: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    options: LMOptions = LMOptions(),
) -> LMResult:
    """Minimise ``Σ residual_fn(x)²`` inside the box ``lower ≤ x ≤ upper``.

    Args:
        residual_fn: pure function (n,) → (m,) whitened residuals.
        x0: start (n,), clipped into the box.
        lower, upper: bounds (n,); ±inf allowed.
        options: stopping rules and damping.

    Returns:
        An :class:`LMResult`.
    """
    x0 = jnp.clip(x0, lower, upper)
    dtype = x0.dtype
    eye = jnp.eye(x0.shape[0], dtype=dtype)

    def cost_of(x):
        r = residual_fn(x)
        return jnp.sum(r * r)

    def cond(state):
        return (~state.done) & (state.n_iter < options.max_iter)

    def jacobian_at(x):
        r, jvp_cols = jax.linearize(residual_fn, x)
        return r, jax.vmap(jvp_cols, out_axes=1)(eye)  # (m, n)

    def body(state):
        r, jac = jacobian_at(state.x)
        # full float32 products also on GPUs, whose default TF32 matmuls lose ~1e-3 relative
        grad = jnp.matmul(jac.T, r, precision=jax.lax.Precision.HIGHEST)
        hess = jnp.matmul(jac.T, jac, precision=jax.lax.Precision.HIGHEST)
        diag = jnp.diag(hess) + jnp.finfo(dtype).eps * jnp.max(jnp.diag(hess)) + 1e-12
        # projected gradient: components pushing against an active bound do not count
        at_lower = (state.x <= lower) & (grad > 0)
        at_upper = (state.x >= upper) & (grad < 0)
        free_grad = jnp.where(at_lower | at_upper, 0.0, grad)
        small_grad = jnp.max(jnp.abs(free_grad) / jnp.sqrt(diag)) < options.gtol * jnp.sqrt(state.cost + 1e-30)

        # parameters held at a bound by the gradient are frozen for this step (active set)
        active = at_lower | at_upper
        both = active[:, None] | active[None, :]
        hess_free = jnp.where(both, 0.0, hess) + jnp.diag(jnp.where(active, diag, 0.0))

        def try_damping(damping):
            a = hess_free + damping * jnp.diag(diag)
            step = jnp.linalg.solve(a, -free_grad)
            x_new = jnp.clip(state.x + step, lower, upper)
            return x_new, cost_of(x_new)

        # the full Gauss–Newton step (no damping) on the free parameters predicts how much cost
        # is left to gain: Σr² drops by −(2gᵀΔ + ΔᵀHΔ) = gᵀ(H_free)⁻¹g
        # (unprojected: a projected step can predict a spurious small gain far from the minimum)
        newton = jnp.linalg.solve(hess_free + 1e-6 * jnp.diag(diag), -free_grad)
        predicted = -(2.0 * free_grad @ newton + newton @ hess_free @ newton)
        tolerance = jnp.maximum(options.cost_atol, options.ftol * state.cost)
        at_minimum = jnp.isfinite(predicted) & (predicted < tolerance) & jnp.isfinite(state.cost)

        x_new, cost_new = try_damping(state.damping)
        finite = jnp.isfinite(cost_new)
        accept = finite & (cost_new < state.cost) & ~at_minimum
        drop = (state.cost - cost_new) / jnp.maximum(state.cost, jnp.finfo(dtype).tiny)
        moved = jnp.max(jnp.abs(x_new - state.x))
        tiny_drop = (drop < options.ftol) | (state.cost - cost_new < options.cost_atol)
        converged = accept & (tiny_drop | (moved < options.xtol)) | small_grad | at_minimum
        x = jnp.where(accept, x_new, state.x)
        cost = jnp.where(accept, cost_new, state.cost)
        damping = jnp.where(accept, state.damping * options.damping_down, state.damping * options.damping_up)
        # a step rejected at enormous damping means we sit at a (possibly bounded) minimum
        stuck = (~accept) & (damping > 1e12) & jnp.isfinite(state.cost)
        broken = ~jnp.isfinite(state.cost)  # NaN/inf at the start: give up, not "converged"
        return _State(x, cost, damping, state.n_iter + 1, converged | stuck, converged | stuck | broken,
                      jac, state.x)

    r0 = residual_fn(x0)
    init = _State(
        x0,
        jnp.sum(r0 * r0),
        jnp.asarray(options.initial_damping, dtype),
        jnp.asarray(0, jnp.int32),
        jnp.asarray(False),
        jnp.asarray(False),
        jnp.zeros((r0.shape[0], x0.shape[0]), dtype),
        x0,
    )
    final = jax.lax.while_loop(cond, body, init)
    return LMResult(final.x, final.cost, final.n_iter, final.converged, final.jacobian, final.x_jacobian)
