"""The hard-concrete gate of Louizos, Welling & Kingma (2018): one per (r, c) block of a
weight's (n, k) view, in numpy (test-time gate, keep-probability) and in Relax (the sampled
gate ``z`` the training graph multiplies the weight by, and its expected density).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tvm import relax

from sparse_tvm.frontend.initializers import PrunableWeight
from sparse_tvm.pruning.patterns import Pattern, per_weight

# hard-concrete constants of Louizos et al. (2018)
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


@dataclass(frozen=True)
class Gate:
    """An L0 gate per (r, c) block of one weight's (n, k) view."""

    weight: PrunableWeight
    nk_shape: tuple[int, int]
    stored_shape: tuple[int, ...]
    block: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        """Gates per (n, k) view: ``ceil(n / r) x ceil(k / c)``."""
        (n, k), (r, c) = self.nk_shape, self.block
        return -(-n // r), -(-k // c)

    def block_sizes(self) -> np.ndarray:
        """Weights per block (edge blocks are smaller), shape ``grid``."""
        (n, k), (r, c) = self.nk_shape, self.block
        rows = np.minimum(r, n - np.arange(self.grid[0]) * r)
        cols = np.minimum(c, k - np.arange(self.grid[1]) * c)
        return np.outer(rows, cols).astype(np.float32)

    def expand(self, per_block: np.ndarray) -> np.ndarray:
        """Per-block values -> the (n, k) view."""
        (n, k), (r, c) = self.nk_shape, self.block
        return np.repeat(np.repeat(per_block, r, axis=0), c, axis=1)[:n, :k]


def make_gates(
    weights: dict[str, np.ndarray],
    prunable: list[PrunableWeight],
    pattern: Pattern | Mapping[str, Pattern],
) -> list[Gate]:
    """A gate grid per prunable weight: its pattern's blocks, single weights for N:M."""
    patterns = per_weight(pattern, (w.name for w in prunable))
    gates = []
    for w in prunable:
        p = patterns[w.name]
        block = p.block if p.n_of_m is None else (1, 1)
        gates.append(Gate(w, w.to_nk(weights[w.name]).shape, weights[w.name].shape, block))
    return gates


def hard_concrete_eval(log_alpha: np.ndarray) -> np.ndarray:
    """The deterministic test-time gate ``clip(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)``."""
    s = 1.0 / (1.0 + np.exp(-log_alpha))
    return np.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def prob_nonzero(log_alpha: np.ndarray) -> np.ndarray:
    """P(z != 0) of a hard-concrete gate: the expected L0 norm per gate."""
    return 1.0 / (1.0 + np.exp(-(log_alpha - BETA * math.log(-GAMMA / ZETA))))


def _const(value: np.ndarray | float, dtype: str = "float32") -> relax.Constant:
    return relax.const(np.asarray(value, dtype), dtype)


def expand_blocks(z: relax.Expr, block: tuple[int, int], nk_shape: tuple[int, int]) -> relax.Expr:
    """Per-block values ``(ceil(n / r), ceil(k / c))`` -> the ``(n, k)`` view, differentiably.

    A broadcast between reshapes (Relax's ``repeat`` has no gradient; the one-hot expansion
    matmuls used before cost ``2 n k (nb + k)`` multiply-adds a step: a 4x1 l0 run of a
    512-wide MLP took 347 s against 47 s in 1x1, now 43 s), the edge blocks cut by ``take``
    (``strided_slice`` has no gradient either)."""
    (n, k), (r, c) = nk_shape, block
    nb, kb = -(-n // r), -(-k // c)
    z = relax.op.reshape(z, (nb, 1, kb, 1))
    z = relax.op.reshape(relax.op.broadcast_to(z, (nb, r, kb, c)), (nb * r, kb * c))
    if nb * r != n:
        z = relax.op.take(z, _const(np.arange(n), "int64"), axis=0)
    if kb * c != k:
        z = relax.op.take(z, _const(np.arange(k), "int64"), axis=1)
    return z


def emit_gate(bb: relax.BlockBuilder, gate: Gate, log_alpha, noise) -> tuple:
    """Emit ``z`` in the stored layout and the expected density of one gate; ``noise`` is
    the logit of a uniform sample."""
    s = bb.emit(relax.op.sigmoid(relax.op.divide(noise + log_alpha, _const(BETA))))
    z = bb.emit(relax.op.clip(s * _const(ZETA - GAMMA) + _const(GAMMA), 0.0, 1.0))
    n, k = gate.nk_shape
    if gate.block != (1, 1):
        z = bb.emit(expand_blocks(z, gate.block, (n, k)))
    w = gate.weight
    if w.op == "Conv":
        z = bb.emit(relax.op.reshape(z, gate.stored_shape))
    elif w.transposed:
        z = bb.emit(relax.op.permute_dims(z, [1, 0]))
    shift = _const(BETA * math.log(-GAMMA / ZETA))
    p = relax.op.sigmoid(relax.op.subtract(log_alpha, shift))
    density = bb.emit(
        relax.op.divide(relax.op.sum(p * _const(gate.block_sizes())), _const(float(n * k)))
    )
    return z, density


__all__ = [
    "BETA",
    "expand_blocks",
    "GAMMA",
    "ZETA",
    "Gate",
    "emit_gate",
    "hard_concrete_eval",
    "make_gates",
    "prob_nonzero",
]
