"""L0 regularisation with hard-concrete gates (Louizos, Welling & Kingma, 2018), steered to
the sparsity asked for.

Each prunable weight gets a gate per block of its pattern (single weights for ``1x1`` and
N:M). The objective is ``task loss + sum_l lambda_l * E[L0_l] / size_l``. The user asks for a
sparsity, not a penalty, so every ``lambda_l`` is a controller's output: it grows
multiplicatively while the expected density of layer ``l`` is above its target and shrinks
while it is below (the target itself follows the cubic schedule from dense to the asked
sparsity). After the gate phase the deterministic gates are folded into the weights, the
mask is projected onto exactly the asked sparsity and pattern (gates ranked by
``log_alpha``), and the remaining epochs fine-tune with that mask fixed.
"""

from __future__ import annotations

import math

import numpy as np

from sparse_tvm.pruning.gmp import cubic_sparsity
from sparse_tvm.pruning.patterns import Pattern, global_masks
from sparse_tvm.pruning.weights import PrunableWeight
from sparse_tvm.training.graph import Gate, hard_concrete_eval, prob_nonzero

INITIAL_LOG_ALPHA = 2.5  # gates start open: z = 1 at test time, P(z != 0) = 0.98
INITIAL_LAMBDA = 1e-3


def make_gates(
    weights: dict[str, np.ndarray], prunable: list[PrunableWeight], pattern: Pattern
) -> list[Gate]:
    block = pattern.block if pattern.n_of_m is None else (1, 1)
    return [Gate(w, w.to_nk(weights[w.name]).shape, weights[w.name].shape, block) for w in prunable]


class L0Controller:
    """Keeps the gates' expected density on the schedule's target, one lambda per layer
    (``scope="layer"``) or one for all (``"global"``)."""

    def __init__(self, trainer, gates: list[Gate], sparsity: float, scope: str, rate: float):
        self.trainer, self.gates, self.sparsity, self.scope, self.rate = (
            trainer,
            gates,
            sparsity,
            scope,
            rate,
        )
        self.sizes = np.array([g.nk_shape[0] * g.nk_shape[1] for g in gates], np.float64)
        self.target = 1.0
        self.step, self.total, self.end = 0, 1, 1
        for g in gates:
            trainer.lambdas[g.weight.name] = INITIAL_LAMBDA

    def on_step(self, step: int, total: int) -> None:
        self.step, self.total = step, total
        self.end = max(1, int(0.75 * total))
        self.target = 1.0 - cubic_sparsity(step, self.sparsity, 0, self.end)

    def update(self, densities: list[float]) -> None:
        scale = self.rate
        names = [g.weight.name for g in self.gates]
        if self.scope == "global":
            density = float(np.dot(densities, self.sizes) / self.sizes.sum())
            errors = [density - self.target] * len(names)
        else:
            errors = [d - self.target for d in densities]
        for name, error in zip(names, errors):
            lam = self.trainer.lambdas[name] * math.exp(scale * error)
            self.trainer.lambdas[name] = float(np.clip(lam, 1e-6, 1e3))


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
