"""Bounded Levenberg–Marquardt for one least-squares problem, written as a pure JAX function.

Minimises ``½‖r(x)‖²`` with the Jacobian from forward-mode autodiff. Steps solve
``(JᵀJ + λ diag(JᵀJ + δ)) Δ = −Jᵀr`` (Marquardt 1963 scaling); parameters a step would carry out
of the box ``[lower, upper]`` are put on their bound and the step of the others is solved again
given that. A step is accepted when the cost drops (λ then shrinks or grows with the ratio of the
achieved to the predicted gain, Nielsen 1999) and rejected otherwise (λ grows, faster with every
rejection in a row). Every trial point is evaluated together with its Jacobian (forward mode), which the next
step needs whenever this one is accepted, so an iteration costs one linearisation. The fit has
converged when the Gauss–Newton model at the current point predicts that a further step would
lower the cost by less than the tolerance; when an accepted step changed the cost or the
parameters by less than the tolerances while the model predicts at most three times the tolerance
is left; when a rejected step was itself predicted to gain less than the tolerance (the trust
region has collapsed: every longer step failed, and no shorter one can gain more — a minimum on a
kink of a piecewise-linear emulator, where the full Gauss–Newton step keeps promising a gain it
never gives); or when steps keep failing until λ > 1e12 (a minimum on a bound, or float
rounding) and the model agrees (otherwise the fit stops unconverged).
A non-finite cost or Jacobian at the start ends the fit unconverged. The loop is a
``lax.while_loop``, so the whole fit jit-compiles and vmaps over spectra and starting points.
Work in coordinates of order unity (see :class:`~jaxpayne.fitting.Fitter`).

References: Levenberg 1944, Q. Appl. Math. 2, 164; Marquardt 1963, SIAM J. Appl. Math. 11, 431;
Nielsen 1999, IMM-REP-1999-05 (DTU); Madsen, Nielsen & Tingleff 2004, *Methods for Non-Linear
Least Squares Problems*, §3.2; Nocedal & Wright 2006, *Numerical Optimization*, §10.3.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["LMOptions", "LMResult", "levenberg_marquardt"]


class LMOptions(NamedTuple):
    """Stopping rules and damping of :func:`levenberg_marquardt`.

    Attributes:
        max_iter: maximum number of evaluations with Jacobian, the start included (≥ 1); a
            traced integer is allowed (one compiled fit for several budgets, or one per member
            of a vmapped batch).
        ftol: stop when an accepted step lowers the cost, or the next step is predicted to lower
            it, by less than ``ftol`` × cost.
        cost_atol: ... or by less than this absolute amount of χ² (statistically negligible).
        xtol: stop when the accepted step is shorter than ``xtol`` (in the working coordinates).
        gtol: stop when the projected gradient's largest component is below ``gtol``.
        initial_damping: starting λ.
        damping_up: factor on λ after a rejected step; it doubles at every further rejection
            in a row.
        damping_down: smallest factor on λ after an accepted step (the factor is
            max(damping_down, 1 − (2ρ − 1)³), ρ the achieved over the predicted gain; Nielsen
            1999).
    """

    max_iter: int = 40
    ftol: float = 1e-6
    cost_atol: float = 1e-2
    xtol: float = 1e-7
    gtol: float = 1e-10
    initial_damping: float = 1e-3
    damping_up: float = 4.0
    damping_down: float = 1.0 / 3.0


class LMResult(NamedTuple):
    """Outcome of one fit.

    Attributes:
        x: best parameters (working coordinates), shape (n,).
        cost: ``Σ r²`` at ``x`` (twice the usual ½‖r‖²).
        n_iter: evaluations of the residuals with their Jacobian (the start counts as one).
        converged: a stopping rule other than ``max_iter`` fired.
        jacobian: (m, n) Jacobian of the residuals at ``x``.
        damping: λ at the end, to continue the fit where it stopped (``damping=`` of
            :func:`levenberg_marquardt`).
    """

    x: jax.Array
    cost: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    jacobian: jax.Array
    damping: jax.Array


class _Model(NamedTuple):
    """The Gauss–Newton model at a point, restricted to the free (not bound-held) parameters."""

    free_grad: jax.Array
    hess_free: jax.Array
    diag: jax.Array
    predicted: jax.Array
    tolerance: jax.Array
    at_minimum: jax.Array


class _State(NamedTuple):
    x: jax.Array
    cost: jax.Array
    residual: jax.Array
    jacobian: jax.Array
    model: _Model
    damping: jax.Array
    nu: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    done: jax.Array


def levenberg_marquardt(
    residual_fn: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    lower: jax.Array,
    upper: jax.Array,
    options: LMOptions = LMOptions(),
    damping: jax.Array | None = None,
) -> LMResult:
    """Minimise ``Σ residual_fn(x)²`` inside the box ``lower ≤ x ≤ upper``.

    Args:
        residual_fn: pure function (n,) → (m,) whitened residuals.
        x0: start (n,), clipped into the box.
        lower, upper: bounds (n,); ±inf allowed.
        options: stopping rules and damping.
        damping: starting λ (traced allowed), e.g. a previous run's :attr:`LMResult.damping` to
            continue it; default ``options.initial_damping``.

    Returns:
        An :class:`LMResult`.
    """
    x0 = jnp.clip(x0, lower, upper)
    dtype = x0.dtype
    eye = jnp.eye(x0.shape[0], dtype=dtype)
    highest = jax.lax.Precision.HIGHEST  # full float32 products also on GPUs (TF32 loses ~1e-3)

    def linearize(x):
        r, jvp_cols = jax.linearize(residual_fn, x)
        return r, jax.vmap(jvp_cols, out_axes=1)(eye)  # (m, n)

    def gauss_newton(x, cost, r, jac) -> _Model:
        grad = jnp.matmul(jac.T, r, precision=highest)
        hess = jnp.matmul(jac.T, jac, precision=highest)
        diag = jnp.diag(hess) + jnp.finfo(dtype).eps * jnp.max(jnp.diag(hess)) + 1e-12
        # parameters pushed against their bound by the gradient are frozen (active set); their
        # gradient components do not count
        active = ((x <= lower) & (grad > 0)) | ((x >= upper) & (grad < 0))
        free_grad = jnp.where(active, 0.0, grad)
        both = active[:, None] | active[None, :]
        hess_free = jnp.where(both, 0.0, hess) + jnp.diag(jnp.where(active, diag, 0.0))
        small_grad = jnp.max(jnp.abs(free_grad) / jnp.sqrt(diag)) < options.gtol * jnp.sqrt(cost + 1e-30)
        # the full (undamped, unprojected) Gauss–Newton step predicts the cost still to gain:
        # Σr² drops by −(2gᵀΔ + ΔᵀHΔ) = gᵀH⁻¹g; a projected step could predict a spurious small
        # gain far from the minimum. The regularisation is at the working precision's rounding
        # level, so a weak but real direction still predicts its gain.
        newton = jnp.linalg.solve(hess_free + 10.0 * jnp.finfo(dtype).eps * jnp.diag(diag), -free_grad)
        predicted = -(2.0 * jnp.dot(free_grad, newton, precision=highest)
                      + jnp.dot(newton, jnp.matmul(hess_free, newton, precision=highest), precision=highest))
        tolerance = jnp.maximum(options.cost_atol, options.ftol * cost)
        sound = jnp.isfinite(cost) & jnp.all(jnp.isfinite(jac)) & jnp.isfinite(predicted)
        at_minimum = sound & ((predicted < tolerance) | small_grad)
        return _Model(free_grad, hess_free, diag, jnp.where(sound, predicted, jnp.inf), tolerance, at_minimum)

    def cond(state):
        return (~state.done) & (state.n_iter < options.max_iter)

    def body(state):
        model = state.model
        a = model.hess_free + state.damping * jnp.diag(model.diag)
        step = jnp.linalg.solve(a, -model.free_grad)
        # parameters the step would carry out of the box go to their bound, and the others take
        # the damped model's best step given that (clipping the whole step instead zig-zags
        # along a bound for many iterations)
        hit = (state.x + step < lower) | (state.x + step > upper)
        to_bound = jnp.where(hit, jnp.clip(state.x + step, lower, upper) - state.x, 0.0)
        both = hit[:, None] | hit[None, :]
        a_rest = jnp.where(both, 0.0, a) + jnp.diag(jnp.where(hit, 1.0, 0.0))
        rest = -model.free_grad - jnp.matmul(a, to_bound, precision=highest)
        step = jnp.where(jnp.any(hit), jnp.linalg.solve(a_rest, jnp.where(hit, to_bound, rest)), step)
        x_new = jnp.clip(state.x + step, lower, upper)
        step = x_new - state.x
        # the cost this damped step is predicted to gain under the Gauss–Newton model
        step_gain = -(2.0 * jnp.dot(model.free_grad, step, precision=highest)
                      + jnp.dot(step, jnp.matmul(model.hess_free, step, precision=highest), precision=highest))
        # the trial point is linearised at once: an accepted step (the usual case) needs its
        # Jacobian next, so each iteration costs one evaluation with its Jacobian and no more
        r_new, jac_new = linearize(x_new)
        cost_new = jnp.sum(r_new * r_new)
        # a non-finite Jacobian (a kink, a NaN) is rejected like a non-finite cost: the damping
        # grows and the step shrinks back from it
        accept = jnp.isfinite(cost_new) & jnp.all(jnp.isfinite(jac_new)) & (cost_new < state.cost)
        drop = (state.cost - cost_new) / jnp.maximum(state.cost, jnp.finfo(dtype).tiny)
        moved = jnp.max(jnp.abs(x_new - state.x))
        tiny_drop = (drop < options.ftol) | (state.cost - cost_new < options.cost_atol)
        x = jnp.where(accept, x_new, state.x)
        cost = jnp.where(accept, cost_new, state.cost)
        r = jnp.where(accept, r_new, state.residual)
        jac = jnp.where(accept, jac_new, state.jacobian)
        # gain-ratio update (Nielsen 1999): an accepted step shrinks λ by up to damping_down
        # when the model predicted its gain well (ρ ≈ 1), and raises it when it did not (ρ ≪ 1);
        # rejections in a row raise λ ever faster (×ν, ν doubling)
        rho = (state.cost - cost_new) / jnp.maximum(step_gain, jnp.finfo(dtype).tiny)
        factor = jnp.maximum(options.damping_down, 1.0 - (2.0 * jnp.clip(rho, 0.0, 1.0) - 1.0) ** 3)
        damping = jnp.where(accept, state.damping * factor, state.damping * state.nu)
        nu = jnp.where(accept, jnp.asarray(options.damping_up, dtype), 2.0 * state.nu)
        model = gauss_newton(x, cost, r, jac)
        # a small accepted step ends the fit only where the Gauss–Newton model agrees that little
        # is left to gain (after rejections the damping makes every step small)
        near = model.predicted < 3.0 * model.tolerance
        converged = (accept & (tiny_drop | (moved < options.xtol)) & near) | model.at_minimum
        # the trust region has collapsed: the larger steps failed, and this one, rejected too, was
        # predicted to gain less than the tolerance, so no step the damping still allows can
        # gain more. A minimum on a kink of a piecewise-linear (ReLU) emulator ends here, where
        # the model keeps promising a gain the spectrum's kinks never give; a step rejected at
        # enormous damping (a bounded minimum, float rounding) also ends the fit
        sound = jnp.isfinite(state.cost) & jnp.all(jnp.isfinite(model.free_grad))
        collapsed = (~accept) & (step_gain < state.model.tolerance) & sound
        stuck = (~accept) & (damping > 1e12) & sound
        # stuck counts as converged only where the model, too, sees (almost) nothing left to gain
        converged = converged | collapsed | (stuck & near)
        return _State(x, cost, r, jac, model, damping, nu, state.n_iter + 1, converged, converged | stuck)

    r0, jac0 = linearize(x0)
    cost0 = jnp.sum(r0 * r0)
    finite = jnp.isfinite(cost0) & jnp.all(jnp.isfinite(jac0))
    model0 = gauss_newton(x0, cost0, r0, jac0)
    at_minimum = model0.at_minimum & finite
    init = _State(
        x0,
        cost0,
        r0,
        jac0,
        model0,
        jnp.asarray(options.initial_damping if damping is None else damping, dtype),
        jnp.asarray(options.damping_up, dtype),
        jnp.asarray(1, jnp.int32),
        at_minimum,
        at_minimum | ~finite,  # NaN/inf cost or Jacobian at the start: give up, not "converged"
    )
    final = jax.lax.while_loop(cond, body, init)
    return LMResult(final.x, final.cost, final.n_iter, final.converged, final.jacobian, final.damping)
