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

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from tvm import relax

from sparse_tvm.frontend.initializers import PrunableWeight
from sparse_tvm.pruning.gates import (
    Gate,
    emit_gate,
    hard_concrete_eval,
    make_gates,
    prob_nonzero,
)
from sparse_tvm.pruning.l0_controller import L0Controller
from sparse_tvm.pruning.patterns import Pattern, block_scores, global_masks
from sparse_tvm.pruning.sparsifier import Sparsifier
from sparse_tvm.training.hooks import LossInput, LossTerms

INITIAL_LOG_ALPHA = 2.5  # gates start open: z = 1 at test time, P(z != 0) = 0.98
# ... spread by the blocks' magnitudes: + MAGNITUDE_SPREAD * the z-score of log(mean |w|) per
# block, clipped to [-1, 3]. The penalty moves every gate of a layer at Adam's one step size,
# so gates started equal close together and by noise: at 90 % in 16x1 blocks the digits MLP
# kept 83.6 % (from 97.5 % dense; gmp: 96.0 %); started by magnitude they close in
# magnitude's order, corrected by the task gradient: 96.2 % (1x1 97.7 -> 98.0 %, 4x1 95.2 ->
# 96.5 %; torch loop of tests/torch, 420 steps). Blocks above the mean start fully open, those
# below it partly (z >= 0.65 at test time). Shifted so that every gate starts fully open
# (log_alpha >= 2.5), 16x1 kept 88.9 %: the penalty then has to close more at once.
MAGNITUDE_SPREAD, SPREAD_CLIP = 2.0, (-1.0, 3.0)
GATE_PHASE = 0.7  # share of the epochs l0 trains its gates; the rest fine-tunes the fixed mask
OPEN_LOG_ALPHA = 30.0  # gates pinned open: z = 1 exactly (the clip saturates)


class L0Sparsifier(Sparsifier):
    """Hard-concrete L0 gates on the prunable weights, trained with the weights for the first
    ``gate_epochs`` of ``epochs``, then folded into a fixed mask (``drop_gates``).

    ``step`` moves the controller's target along the schedule; the gates themselves move by
    the trainer's optimizer (they are trained inputs of the loss, see the hooks below).
    ``seed`` draws the gates' initial ``log_alpha``; ``rate`` scales the controller's gain.
    """

    def __init__(
        self,
        sparsity: float,
        pattern: str | Pattern = "1x1",
        scope: str = "layer",
        *,
        epochs: int,
        gate_epochs: int | None = None,
        seed: int = 0,
        rate: float = 0.03,
        patterns: Mapping[str, str | Pattern] | None = None,
    ):
        super().__init__(sparsity, pattern, scope, patterns)
        self.epochs = epochs
        self.gate_epochs = (
            max(1, round(GATE_PHASE * epochs)) if gate_epochs is None else gate_epochs
        )
        self.seed, self.rate = seed, rate
        self.gates = []
        self.log_alpha: dict[str, np.ndarray] = {}
        self.lambdas: dict[str, float] = {}
        self.gates_active = False

    # -- lifecycle ----------------------------------------------------------------------------

    def prepare(
        self,
        model: onnx.ModelProto,
        prunable: Sequence[PrunableWeight] | None = None,
        weights: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Masks of ones, and a gate per block of every prunable weight, nearly open."""
        super().prepare(model, prunable, weights)
        self.gates = make_gates(self.weights, self.prunable, self.layer_patterns)
        rng = np.random.default_rng(self.seed)
        self.log_alpha = {
            g.weight.name: (
                _magnitude_start(g, self.weights[g.weight.name])
                + 0.01 * rng.standard_normal(g.grid)
            ).astype(np.float32)
            for g in self.gates
        }
        self.controller = L0Controller(self, self.gates, self.sparsity, self.scope, self.rate)
        self.gates_active = bool(self.gates)

    def step(self, step: int | None = None, total: int | None = None) -> None:
        """Move the controller's target to ``step`` of the gate phase (``total`` counts the
        steps of all ``epochs``); nothing once the gates are dropped."""
        if not self.gates_active or step is None or total is None:
            return
        self.controller.on_step(step, total * self.gate_epochs // self.epochs)

    def drop_gates(self) -> None:
        """Fold the test-time gates into the weights and fix a mask of exactly ``sparsity``,
        following the pattern, ranked by the gates' keep-probability; the gates are dropped
        (pinned open) and later steps train under that mask."""
        folded = self.gated(self._masked())
        scores = {name: s + 1e-12 for name, s in self.gate_scores().items()}
        patterns = self.layer_patterns
        if self.scope == "global":
            nk_masks = global_masks(scores, self.sparsity, patterns)
        else:
            nk_masks = {name: patterns[name].mask(s, self.sparsity) for name, s in scores.items()}
        for g in self.gates:
            w = g.weight
            mask = w.from_nk(nk_masks[w.name].astype(np.float32), folded[w.name])
            self.mask[w.name] = mask
            # a kept weight whose gate was closed gets its value back (z folded only where open)
            raw = self.weights[w.name]
            self.weights[w.name] = np.where(folded[w.name] != 0, folded[w.name], raw) * mask
        self.gates_active = False

    def squash_mask(self) -> dict[str, np.ndarray]:
        if self.gates_active:
            self.drop_gates()
        return super().squash_mask()

    # -- the gates ----------------------------------------------------------------------------

    def _masked(self) -> dict[str, np.ndarray]:
        return {w.name: self.weights[w.name] * self.mask[w.name] for w in self.prunable}

    def gated(self, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``weights`` times their deterministic test-time gates (stored layout)."""
        out = dict(weights)
        for g in self.gates:
            w = g.weight
            z = g.expand(hard_concrete_eval(self.log_alpha[w.name]))
            out[w.name] = (out[w.name] * w.from_nk(z.astype(np.float32), out[w.name])).astype(
                np.float32
            )
        return out

    def gate_scores(self) -> dict[str, np.ndarray]:
        """P(z != 0) per gate, expanded to the (n, k) view of its weight."""
        return {
            g.weight.name: g.expand(prob_nonzero(self.log_alpha[g.weight.name])) for g in self.gates
        }

    def gate_sparsity(self) -> dict[str, float]:
        """Share of weights whose deterministic gate is exactly zero, per weight."""
        out = {}
        for g in self.gates:
            z = g.expand(hard_concrete_eval(self.log_alpha[g.weight.name]))
            out[g.weight.name] = float(np.mean(z == 0))
        return out

    def expected_sparsity(self) -> float:
        """1 - the expected share of nonzero gates, over all gated weights."""
        total = sum(g.nk_shape[0] * g.nk_shape[1] for g in self.gates)
        kept = sum(float(np.sum(s)) for s in self.gate_scores().values())
        return 1.0 - kept / max(total, 1)

    # -- the trainer's hooks ------------------------------------------------------------------

    def loss_inputs(self) -> list[LossInput]:
        """Per gate ``<weight>.log_alpha`` (trained), ``.noise`` (logit of the uniform sample)
        and ``.lambda`` (the penalty's weight, a scalar)."""
        out = []
        for g in self.gates:
            name = g.weight.name
            out += [
                LossInput(f"{name}.log_alpha", g.grid, trained=True),
                LossInput(f"{name}.noise", g.grid),
                LossInput(f"{name}.lambda", ()),
            ]
        return out

    def emit_loss_terms(
        self,
        bb: relax.BlockBuilder,
        weights: Mapping[str, relax.Var],
        inputs: Mapping[str, relax.Var],
    ) -> LossTerms:
        """Every gated weight ``W`` becomes ``W * z``; the objective adds ``lambda * E[L0] /
        size`` per gate, and the expected densities are watched."""
        terms = LossTerms()
        for g in self.gates:
            name = g.weight.name
            z, density = emit_gate(bb, g, inputs[f"{name}.log_alpha"], inputs[f"{name}.noise"])
            terms.weights[name] = bb.emit(relax.op.multiply(weights[name], z))
            terms.penalties.append(inputs[f"{name}.lambda"] * density)
            terms.outputs.append(density)
        return terms

    def input_values(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        values = {}
        for g in self.gates:
            name = g.weight.name
            if self.gates_active:
                u = rng.uniform(1e-6, 1.0 - 1e-6, g.grid).astype(np.float32)
                values[f"{name}.log_alpha"] = self.log_alpha[name]
                values[f"{name}.noise"] = np.log(u) - np.log1p(-u)
                values[f"{name}.lambda"] = np.float32(self.lambdas[name])
            else:
                values[f"{name}.log_alpha"] = np.full(g.grid, OPEN_LOG_ALPHA, np.float32)
                values[f"{name}.noise"] = np.zeros(g.grid, np.float32)
                values[f"{name}.lambda"] = np.float32(0.0)
        return values

    def trains_inputs(self) -> bool:
        return self.gates_active

    def after_step(self, trained: Mapping[str, np.ndarray], outputs: list[float]) -> None:
        if not self.gates_active:
            return
        for g in self.gates:
            self.log_alpha[g.weight.name] = trained[f"{g.weight.name}.log_alpha"]
        self.controller.update(outputs)

    def eval_weights(self, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.gated(weights) if self.gates_active else weights

    def current_sparsity(self) -> float:
        return self.expected_sparsity() if self.gates_active else self.masked_sparsity()


def _magnitude_start(gate: Gate, weight: np.ndarray) -> np.ndarray:
    """Initial ``log_alpha`` per block: ``INITIAL_LOG_ALPHA`` spread by the blocks' magnitude
    (see ``MAGNITUDE_SPREAD``); all equal where the blocks are."""
    log_scores = np.log(block_scores(gate.weight.to_nk(weight), gate.block) + 1e-12)
    spread = log_scores.std()
    if not spread > 1e-6:
        return np.full(gate.grid, INITIAL_LOG_ALPHA)
    z = np.clip((log_scores - log_scores.mean()) / spread, *SPREAD_CLIP)
    return INITIAL_LOG_ALPHA + MAGNITUDE_SPREAD * z


__all__ = ["GATE_PHASE", "INITIAL_LOG_ALPHA", "L0Sparsifier"]
