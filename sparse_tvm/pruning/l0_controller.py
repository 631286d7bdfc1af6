"""The controller of the L0 penalty: one multiplier per layer (or one for all) that keeps the
share of open gates on the target sparsity's schedule (see :mod:`sparse_tvm.pruning.l0`)."""

from __future__ import annotations

import math

import numpy as np

from sparse_tvm.pruning.gates import GAMMA, ZETA, Gate
from sparse_tvm.pruning.gmp import cubic_sparsity

INITIAL_LAMBDA = 1.0  # initial scale of the penalty (the controller's exp(integral))
# log_alpha at which the test-time gate clip(sigmoid(a) (zeta - gamma) + gamma, 0, 1) hits 0
CLOSED_LOG_ALPHA = -math.log((ZETA - GAMMA) / -GAMMA - 1.0)
# width (in log_alpha) of the smooth count of open test-time gates: it narrows along the ramp
# so that, on hold, the count is that of the test-time gates
SOFTNESS, FINAL_SOFTNESS = 0.5, 0.1
RAMP = 0.75  # the target sparsity ramps (cubic) over this share of the gate phase, then holds
KI = 0.1  # integral gain on log lambda per unit of density error and step (at rate 0.03)
KP = 50.0  # full penalty at 2 points of density behind the target, none on it
REOPEN = 1.0  # share of the penalty's scale that pushes gates open when too sparse
LOG_LAMBDA_MIN, LOG_LAMBDA_MAX = math.log(1e-6), math.log(1e4)


class L0Controller:
    """Keeps the share of open test-time gates on the schedule's target, one lambda per layer
    (``scope="layer"``) or one for all (``"global"``).

    With Adam on ``log_alpha`` a gate whose task gradient has died (its ``z`` is mostly
    clipped at 0) keeps closing under any positive penalty, so a plain multiplier that only
    shrinks once the target is passed overshoots. Here ``lambda = exp(I) * clip(KP * e,
    -REOPEN, 1)``: ``e`` is the measured density minus the target, ``exp(I)`` the penalty's
    scale, integrated in log space (``I += KI * e`` per step) as the schedule asks for more.
    Behind the target by 2 points or more the full penalty applies; on target there is none,
    so closing gates stop; past it the penalty turns negative and reopens the gates nearest
    to open. The measured density is a smooth count of open test-time gates,
    ``sigmoid((log_alpha - CLOSED_LOG_ALPHA) / SOFTNESS)``, so the controller sees a gate
    move before it crosses, and steers what the final mask is made of rather than the
    (larger) expected L0. ``rate`` scales the integral gain (0.03: the tuned ``KI``).

    ``state`` holds the gates' ``log_alpha`` (read) and ``lambdas`` (written), per weight
    name: the :class:`~sparse_tvm.pruning.l0.L0Sparsifier`.
    """

    def __init__(self, state, gates: list[Gate], sparsity: float, scope: str, rate: float):
        self.state, self.gates, self.sparsity, self.scope = state, gates, sparsity, scope
        self.gain = rate / 0.03
        self.sizes = np.array([g.nk_shape[0] * g.nk_shape[1] for g in gates], np.float64)
        self.block_sizes = [g.block_sizes() for g in gates]
        self.target = 1.0
        self.step, self.total, self.end = 0, 1, 1
        groups = 1 if scope == "global" else len(gates)
        self.integral = np.full(groups, math.log(INITIAL_LAMBDA))
        for g in gates:
            state.lambdas[g.weight.name] = INITIAL_LAMBDA

    def on_step(self, step: int, total: int) -> None:
        self.step, self.total = step, total
        self.end = max(1, int(RAMP * total))
        self.target = 1.0 - cubic_sparsity(step, self.sparsity, 0, self.end)

    def measured(self) -> np.ndarray:
        """Smoothed share of open test-time gates per layer (size-weighted for ``global``)."""
        progress = min(1.0, self.step / self.end)
        softness = SOFTNESS + (FINAL_SOFTNESS - SOFTNESS) * progress
        out = []
        for g, sizes in zip(self.gates, self.block_sizes):
            la = self.state.log_alpha[g.weight.name].astype(np.float64)
            soft = 0.5 * (1.0 + np.tanh(0.5 * (la - CLOSED_LOG_ALPHA) / softness))
            out.append(float(np.sum(soft * sizes) / np.sum(sizes)))
        density = np.array(out)
        if self.scope == "global":
            return np.array([np.dot(density, self.sizes) / self.sizes.sum()])
        return density

    def update(self, densities: list[float]) -> None:
        error = self.measured() - self.target
        self.integral = np.clip(
            self.integral + self.gain * KI * error, LOG_LAMBDA_MIN, LOG_LAMBDA_MAX
        )
        lam = np.exp(self.integral) * np.clip(KP * error, -REOPEN, 1.0)
        if self.scope == "global":
            lam = np.repeat(lam, len(self.gates))
        for g, value in zip(self.gates, lam):
            self.state.lambdas[g.weight.name] = float(value)


__all__ = ["L0Controller"]
