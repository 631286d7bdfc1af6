"""Which storage format a layer should get: dense, CSR (1x1 blocks) or BSR with a block shape.

The choice is a cost model calibrated by measuring the kernels on x86 (``benchmarks/``): the
fraction of the ideal speedup 1/density each block shape reaches. It only ranks candidates; the
compiler then measures the chosen sparse kernel against the dense layer and keeps the faster
one, so a wrong guess costs compile time, never run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparse_tvm.formats import zero_block_fraction

# (r, c) in the (n, k) orientation: r output features x c input features.
CANDIDATE_BLOCKS: tuple[tuple[int, int], ...] = ((16, 1), (8, 1), (4, 1), (1, 4), (1, 1))

# Fraction of the ideal 1/density that a block shape reaches against the dense kernel, for many
# columns (regime A) and for few columns (regime B, memory bound). Measured medians, rounded
# down; see benchmarks/bench_ffn.py. The measurement at compile time has the last word.
# Measured at 90 % on the BERT-base and small-CNN layers (sparse-tvm demo, 2-core AVX-512):
# 16x1 reached 6.6-9.4x (0.66-0.94 of ideal), CSR 2.3-5.4x (0.23-0.54).
_EFFICIENCY_MANY_COLUMNS = {(16, 1): 0.6, (8, 1): 0.5, (4, 1): 0.4, (1, 4): 0.25, (1, 1): 0.25}
_EFFICIENCY_FEW_COLUMNS = {(16, 1): 0.8, (8, 1): 0.75, (4, 1): 0.6, (1, 4): 0.5, (1, 1): 0.4}

# Below this estimated speedup a layer stays dense without being measured.
MIN_ESTIMATED_SPEEDUP = 1.1


def block_label(block: tuple[int, int]) -> str:
    return f"{block[0]}x{block[1]}"


def format_of(block: tuple[int, int]) -> str:
    """``"csr"`` for 1x1 blocks, else ``"bsr"``."""
    return "csr" if tuple(block) == (1, 1) else "bsr"


def format_label(block: tuple[int, int]) -> str:
    """``"csr 1x1"``, ``"bsr 16x1"``: the format and block as the report writes them."""
    return f"{format_of(block)} {block_label(block)}"


def parse_block(text: str) -> tuple[int, int]:
    r, c = text.lower().split("x")
    return int(r), int(c)


@dataclass(frozen=True)
class FormatChoice:
    """The format picked for one layer and the estimate behind it."""

    format: str  # "dense", "csr" or "bsr"
    block: tuple[int, int] | None
    estimated_speedup: float
    reason: str

    @property
    def label(self) -> str:
        if self.format == "dense":
            return "dense"
        return f"{self.format} {block_label(self.block)}" if self.block else self.format


def block_zero_fractions(
    weight: np.ndarray, blocks=((1, 1), (4, 1), (8, 1), (16, 1), (1, 4))
) -> dict[str, float]:
    """Fraction of all-zero blocks of each shape, keyed ``"16x1"`` etc."""
    return {block_label(b): float(zero_block_fraction(weight, b)) for b in blocks}


def estimate_speedup(zero_fraction: float, block: tuple[int, int], m: int) -> float:
    """Estimated speedup over dense of a block-sparse kernel with that fraction of zero blocks."""
    density = max(1.0 - zero_fraction, 1e-6)
    table = _EFFICIENCY_MANY_COLUMNS if m >= 16 else _EFFICIENCY_FEW_COLUMNS
    efficiency = table.get(block, min(table.values()))
    if m < 16:
        # memory bound: bytes of values + one 4-byte index per block against dense bytes
        r, c = block
        efficiency *= (4 * r * c) / (4 * r * c + 4)
    return efficiency / density


def choose_format(
    weight: np.ndarray,
    m: int,
    *,
    sparsity_threshold: float | None = None,
    zero_fractions: dict[str, float] | None = None,
) -> FormatChoice:
    """Pick dense, CSR or BSR for an (n, k) weight multiplied with m activation columns.

    Parameters
    ----------
    weight
        The (n, k) float32 weight.
    m
        Columns of the activation (tokens x batch, or output pixels).
    sparsity_threshold
        If given, layers whose sparsity is below it stay dense whatever the estimate says.
    zero_fractions
        Precomputed :func:`block_zero_fractions` of ``weight`` (saves recomputing them).
    """
    sparsity = float(np.count_nonzero(weight == 0)) / max(1, weight.size)
    if sparsity_threshold is not None and sparsity < sparsity_threshold:
        return FormatChoice(
            "dense",
            None,
            1.0,
            f"sparsity {sparsity:.0%} below the threshold {sparsity_threshold:.0%}",
        )
    fractions = zero_fractions or block_zero_fractions(weight, CANDIDATE_BLOCKS)
    best_block, best = None, 0.0
    for block in CANDIDATE_BLOCKS:
        estimate = estimate_speedup(fractions[block_label(block)], block, m)
        if estimate > best * 1.05:  # prefer earlier (bigger) blocks on near ties
            best_block, best = block, estimate
    if best_block is None or best < MIN_ESTIMATED_SPEEDUP:
        return FormatChoice(
            "dense",
            None,
            best,
            f"sparsity {sparsity:.0%} too low to gain: estimated (cost model) {best:.2f}x",
        )
    return FormatChoice(
        format_of(best_block), best_block, best, f"estimated (cost model) {best:.2f}x over dense"
    )
