"""One-shot magnitude pruning, unstructured or in blocks, per layer."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx

from sparse_tvm.errors import UsageError
from sparse_tvm.frontend.initializers import (
    prunable_weights,
    read_initializer,
    write_initializer,
)

# the block shapes pruning offers: those the compiler has sparse formats for
# (analysis.format_choice.CANDIDATE_BLOCKS); "1x1" is unstructured; "16x4" the int8 kernel's
# block on x86 (16 output features x the 4 input features one vpdpbusd lane sums), which the
# float kernels run as 16x1
BLOCK_PATTERNS = ("1x1", "4x1", "8x1", "16x1", "1x4", "16x4")


def unknown_pattern(pattern: str, reason: str = "is not a pattern sparse-tvm prunes to") -> str:
    """The one-line refusal of a pattern, with the patterns on offer."""
    return (
        f"pattern '{pattern}' {reason}: use {', '.join(BLOCK_PATTERNS)} (output x input "
        "blocks) or N:M such as 2:4 (N of every M input features kept)"
    )


def block_pattern(pattern: str) -> tuple[int, int]:
    """An offered block pattern (``BLOCK_PATTERNS``) -> (r, c); anything else is an error."""
    if str(pattern).strip().lower() not in BLOCK_PATTERNS:
        raise UsageError(unknown_pattern(pattern))
    return parse_pattern(str(pattern).strip())


def parse_pattern(pattern: str) -> tuple[int, int]:
    """``"16x1"`` -> (16, 1): r output features x c input features. Any block shape; what
    pruning offers is checked by :func:`block_pattern`."""
    try:
        r, c = (int(v) for v in pattern.lower().split("x"))
        if r < 1 or c < 1:
            raise ValueError
    except ValueError:
        raise UsageError(
            f"pattern '{pattern}' is not a block shape like 1x1, 4x1, 16x1 or 1x4"
        ) from None
    return r, c


def block_mask(w: np.ndarray, sparsity: float, block: tuple[int, int]) -> np.ndarray:
    """Keep-mask of an (n, k) weight zeroing the ``sparsity`` fraction of blocks of least L1.

    Edge blocks (when n or k is not a multiple of the block) count as whole blocks.
    """
    r, c = block
    n, k = w.shape
    nb, kb = -(-n // r), -(-k // c)
    padded = np.zeros((nb * r, kb * c), np.float32)
    padded[:n, :k] = np.abs(w)
    scores = padded.reshape(nb, r, kb, c).sum(axis=(1, 3)).ravel()
    drop = int(round(sparsity * scores.size))
    keep = np.ones(scores.size, bool)
    if drop:
        keep[np.argsort(scores, kind="stable")[:drop]] = False
    full = np.repeat(np.repeat(keep.reshape(nb, kb), r, axis=0), c, axis=1)
    return full[:n, :k]


def prune_magnitude(
    model: onnx.ModelProto, sparsity: float, pattern: str = "1x1", exclude: Iterable[str] = ()
) -> onnx.ModelProto:
    """A copy of ``model`` with every prunable weight (except ``exclude``) pruned to
    ``sparsity`` by block magnitude."""
    if not 0.0 <= sparsity <= 1.0:
        raise UsageError(f"sparsity {sparsity} is outside [0, 1]")
    block = block_pattern(pattern)
    excluded = set(exclude)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for weight in prunable_weights(out):
        if weight.name in excluded or weight.node in excluded:
            continue
        array = read_initializer(out, weight.name).astype(np.float32)
        nk = weight.to_nk(array)
        pruned = np.where(block_mask(nk, sparsity, block), nk, 0.0).astype(np.float32)
        write_initializer(out, weight.name, weight.from_nk(pruned, array))
    return out
