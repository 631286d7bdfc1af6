"""L0 regularisation with hard-concrete gates (Louizos, Welling & Kingma, 2018), steered to
the sparsity asked for.

Each prunable weight gets a gate per block of its pattern (single weights for ``1x1`` and
N:M). The objective is ``task loss + sum_l lambda_l * E[L0_l] / size_l``. The user asks for a
sparsity, not a penalty, so every ``lambda_l`` is a controller's output (:class:`L0Controller`):
it tracks a target that ramps from dense to the asked sparsity along gmp's cubic schedule over
the first ``RAMP`` of the gate phase and then holds, so the gates themselves reach the asked
sparsity and stay there. After the gate phase the deterministic (test-time) gates are folded
into the weights, the mask is projected onto exactly the asked sparsity and pattern (gates
ranked by ``log_alpha``; the gates are then already at it, so this moves few weights), and the
remaining epochs fine-tune with that mask fixed.
"""

from __future__ import annotations

import math

import numpy as np

from sparse_tvm.pruning.gmp import cubic_sparsity
from sparse_tvm.pruning.patterns import Pattern, global_masks
from sparse_tvm.pruning.weights import PrunableWeight
from sparse_tvm.training.graph import GAMMA, ZETA, Gate, hard_concrete_eval, prob_nonzero

INITIAL_LOG_ALPHA = 2.5  # gates start open: z = 1 at test time, P(z != 0) = 0.98
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


def make_gates(
    weights: dict[str, np.ndarray], prunable: list[PrunableWeight], pattern: Pattern
) -> list[Gate]:
    block = pattern.block if pattern.n_of_m is None else (1, 1)
    return [Gate(w, w.to_nk(weights[w.name]).shape, weights[w.name].shape, block) for w in prunable]


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
    """

    def __init__(self, trainer, gates: list[Gate], sparsity: float, scope: str, rate: float):
        self.trainer, self.gates, self.sparsity, self.scope = trainer, gates, sparsity, scope
        self.gain = rate / 0.03
        self.sizes = np.array([g.nk_shape[0] * g.nk_shape[1] for g in gates], np.float64)
        self.block_sizes = [g.block_sizes() for g in gates]
        self.target = 1.0
        self.step, self.total, self.end = 0, 1, 1
        groups = 1 if scope == "global" else len(gates)
        self.integral = np.full(groups, math.log(INITIAL_LAMBDA))
        for g in gates:
            trainer.lambdas[g.weight.name] = INITIAL_LAMBDA

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
            la = self.trainer.log_alpha[g.weight.name].astype(np.float64)
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
            self.trainer.lambdas[g.weight.name] = float(value)


def gate_scores(trainer, gates: list[Gate]) -> dict[str, np.ndarray]:
    """P(z != 0) per gate, expanded to the (n, k) view of its weight."""
    return {g.weight.name: g.expand(prob_nonzero(trainer.log_alpha[g.weight.name])) for g in gates}


def gated_weights(trainer, gates: list[Gate]) -> dict[str, np.ndarray]:
    """Weights times their deterministic test-time gates (stored layout)."""
    out = trainer.effective_weights()
    for g in gates:
        w = g.weight
        z = g.expand(hard_concrete_eval(trainer.log_alpha[w.name]))
        out[w.name] = (out[w.name] * w.from_nk(z.astype(np.float32), out[w.name])).astype(
            np.float32
        )
    return out


def natural_sparsity(trainer, gates: list[Gate]) -> dict[str, float]:
    """Share of weights whose deterministic gate is exactly zero, per weight."""
    out = {}
    for g in gates:
        z = g.expand(hard_concrete_eval(trainer.log_alpha[g.weight.name]))
        out[g.weight.name] = float(np.mean(z == 0))
    return out


def expected_sparsity(trainer, gates: list[Gate]) -> float:
    total = sum(g.nk_shape[0] * g.nk_shape[1] for g in gates)
    kept = sum(float(np.sum(s)) for s in gate_scores(trainer, gates).values())
    return 1.0 - kept / max(total, 1)


def freeze_gates(trainer, gates: list[Gate], sparsity: float, pattern: Pattern, scope: str):
    """Fold the test-time gates into the weights and fix a mask of exactly ``sparsity``,
    following ``pattern``, ranked by the gates' keep-probability; gates are switched off."""
    folded = gated_weights(trainer, gates)
    scores = {name: s + 1e-12 for name, s in gate_scores(trainer, gates).items()}
    if scope == "global":
        nk_masks = global_masks(scores, sparsity, pattern)
    else:
        nk_masks = {name: pattern.mask(s, sparsity) for name, s in scores.items()}
    for g in gates:
        w = g.weight
        mask = w.from_nk(nk_masks[w.name].astype(np.float32), folded[w.name])
        trainer.masks[w.name] = mask
        # a kept weight whose gate was closed gets its value back (z folded only where open)
        raw = trainer.weights[w.name]
        trainer.weights[w.name] = np.where(folded[w.name] != 0, folded[w.name], raw) * mask
    trainer.gates_active = False
