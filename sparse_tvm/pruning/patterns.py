"""Sparsity patterns on the (n, k) view of a weight: r x c blocks and N:M groups.

``"16x1"`` zeros whole blocks of 16 output features x 1 input feature; ``"2:4"`` keeps 2 of
every 4 consecutive input features of each output feature (the last group of a row may be
shorter: it keeps at most N). Masks are keep-masks (True = kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from sparse_tvm.errors import UsageError
from sparse_tvm.pruning.magnitude import block_mask, block_pattern, unknown_pattern


@dataclass(frozen=True)
class Pattern:
    """A parsed pattern: ``block`` (r, c) or ``n_of_m`` (N, M)."""

    text: str
    block: tuple[int, int] = (1, 1)
    n_of_m: tuple[int, int] | None = None

    @property
    def max_sparsity(self) -> float:
        """The sparsity the pattern fixes (N:M) or 1.0."""
        return 1.0 - self.n_of_m[0] / self.n_of_m[1] if self.n_of_m else 1.0

    def mask(self, scores: np.ndarray, sparsity: float) -> np.ndarray:
        """Keep-mask of an (n, k) array of non-negative ``scores`` at ``sparsity``.

        For N:M, ``sparsity`` below ``max_sparsity`` drops that share of the weights the
        full N:M mask would drop, smallest first (how gradual pruning reaches N:M).
        """
        if self.n_of_m is None:
            return block_mask(scores, sparsity, self.block)
        full = n_of_m_mask(scores, *self.n_of_m)
        if sparsity >= self.max_sparsity - 1e-9:
            return full
        candidates = np.flatnonzero(~full)
        drop = int(round(sparsity / self.max_sparsity * candidates.size))
        keep = np.ones(scores.size, bool)
        if drop:
            order = np.argsort(scores.ravel()[candidates], kind="stable")
            keep[candidates[order[:drop]]] = False
        return keep.reshape(scores.shape)


# Weights with fewer elements than this are pruned unstructured (1x1) when the pattern asks
# for blocks: they hold a handful of blocks, so whole blocks go (a 16x1 block of a 10-class
# head is one input feature of every class), and their time and size are a rounding error of
# the model's. The digits CNN of benchmarks/prune_accuracy.py (first conv 32x9, head 10x64),
# points lost with its two small weights in blocks / in 1x1: gmp 4x1 90 % 11.7 / 0.0, gmp
# 16x1 95 % 20.0 / 0.0, l0 16x1 95 % 21.1 / 0.0. Explicit per-weight patterns (``auto``) are
# kept as given.
SMALL_WEIGHT = 4096


def check_unstructured_below(below: object) -> None:
    """Refuse a small-weight bound that is not a count of weights."""
    if isinstance(below, bool) or not isinstance(below, int) or below < 0:
        raise UsageError(f"unstructured_below is a number of weights (0 or more), not {below!r}")


def fitted(pattern: Pattern, size: int, below: int = SMALL_WEIGHT) -> Pattern:
    """``pattern`` for a weight of ``size`` elements: 1x1 in place of blocks below ``below``
    (0: blocks everywhere)."""
    if pattern.n_of_m is None and pattern.block != (1, 1) and size < below:
        return UNSTRUCTURED
    return pattern


def parse(text: str) -> Pattern:
    """A block pattern of ``BLOCK_PATTERNS`` (``"1x1"``, ``"4x1"``, ``"8x1"``, ``"16x1"``,
    ``"1x4"``) or N:M (``"2:4"``, ``"1:4"``) -> :class:`Pattern`; anything else is an error
    that lists them."""
    text = str(text).strip()
    if ":" in text:
        try:
            n, m = (int(v) for v in text.split(":"))
        except ValueError:
            raise UsageError(unknown_pattern(text)) from None
        if not 1 <= n < m:
            raise UsageError(unknown_pattern(text, "is not an N:M pattern with 1 <= N < M"))
        return Pattern(text, n_of_m=(n, m))
    return Pattern(text.lower(), block=block_pattern(text))


UNSTRUCTURED = Pattern("1x1")


def n_of_m_mask(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` largest of every ``m`` consecutive entries along k (ties: first wins)."""
    rows, k = scores.shape
    groups = -(-k // m)
    padded = np.full((rows, groups * m), -np.inf, np.float64)
    padded[:, :k] = scores
    grouped = padded.reshape(rows, groups, m)
    order = np.argsort(-grouped, axis=2, kind="stable")
    keep = np.zeros_like(grouped, bool)
    np.put_along_axis(keep, order[:, :, :n], True, axis=2)
    return keep.reshape(rows, groups * m)[:, :k] & np.isfinite(padded[:, :k])


def block_scores(nk: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Mean |w| per (r, c) block (edge blocks averaged over the weights they hold)."""
    r, c = block
    n, k = nk.shape
    nb, kb = -(-n // r), -(-k // c)
    total = np.zeros((nb * r, kb * c), np.float64)
    count = np.zeros_like(total)
    total[:n, :k] = np.abs(nk)
    count[:n, :k] = 1
    sums = total.reshape(nb, r, kb, c).sum(axis=(1, 3))
    return sums / count.reshape(nb, r, kb, c).sum(axis=(1, 3))


def per_weight(
    pattern: Pattern | Mapping[str, Pattern], names: Iterable[str]
) -> dict[str, Pattern]:
    """Each weight's pattern: one ``pattern`` for all, or a mapping by weight name."""
    if isinstance(pattern, Pattern):
        return {name: pattern for name in names}
    return {name: pattern[name] for name in names}


def global_masks(
    weights: dict[str, np.ndarray], sparsity: float, pattern: Pattern | Mapping[str, Pattern]
) -> dict[str, np.ndarray]:
    """Keep-masks of (n, k) arrays with one magnitude threshold over all of them.

    The share of zeroed *weights* overall is ``sparsity`` (up to one block); a block's score
    is its mean |w|, so blocks cut by a matrix edge, and blocks of other shapes (``pattern``
    by weight name: ``pattern="auto"``), compete fairly. N:M is local to its group: every
    N:M weight gets the N:M mask.
    """
    patterns = per_weight(pattern, weights)
    masks = {
        name: patterns[name].mask(np.abs(w), sparsity)
        for name, w in weights.items()
        if patterns[name].n_of_m is not None
    }
    blocks = {name: patterns[name].block for name in weights if name not in masks}
    if not blocks:
        return masks
    scores = {name: block_scores(weights[name], block) for name, block in blocks.items()}
    sizes = {name: _block_sizes(weights[name].shape, block) for name, block in blocks.items()}
    flat_scores = np.concatenate([s.ravel() for s in scores.values()])
    flat_sizes = np.concatenate([s.ravel() for s in sizes.values()])
    order = np.argsort(flat_scores, kind="stable")
    dropped_weights = np.cumsum(flat_sizes[order])
    budget = sparsity * flat_sizes.sum()
    drop = int(np.searchsorted(dropped_weights, budget + 0.5 * flat_sizes.min(), side="right"))
    keep = np.ones(flat_scores.size, bool)
    keep[order[:drop]] = False
    start = 0
    for name, s in scores.items():
        part = keep[start : start + s.size].reshape(s.shape)
        start += s.size
        masks[name] = _expand(part, blocks[name], weights[name].shape)
    return masks


def _block_sizes(shape: tuple[int, int], block: tuple[int, int]) -> np.ndarray:
    (n, k), (r, c) = shape, block
    rows = np.minimum(r, n - np.arange(-(-n // r)) * r)
    cols = np.minimum(c, k - np.arange(-(-k // c)) * c)
    return np.outer(rows, cols)


def _expand(per_block: np.ndarray, block: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    r, c = block
    return np.repeat(np.repeat(per_block, r, axis=0), c, axis=1)[: shape[0], : shape[1]]


def follows_pattern(nk: np.ndarray, pattern: Pattern) -> bool:
    """Whether the zeros of an (n, k) array follow ``pattern`` exactly."""
    zero = nk == 0
    if pattern.n_of_m is not None:
        n, m = pattern.n_of_m
        k = nk.shape[1]
        groups = -(-k // m)
        nonzero = np.zeros((nk.shape[0], groups * m), bool)
        nonzero[:, :k] = ~zero
        return bool(np.all(nonzero.reshape(nk.shape[0], groups, m).sum(axis=2) <= n))
    r, c = pattern.block
    sizes = _block_sizes(nk.shape, pattern.block)
    n_rows, k_cols = nk.shape
    padded = np.zeros((-(-n_rows // r) * r, -(-k_cols // c) * c), np.int64)
    padded[:n_rows, :k_cols] = zero
    per_block = padded.reshape(sizes.shape[0], r, sizes.shape[1], c).sum(axis=(1, 3))
    # a block is either all zero or holds no forced zero pattern; partly-zero blocks may come
    # from weights that are zero by chance, so only whole-zero or whole-kept is "exact" here
    return bool(np.all((per_block == 0) | (per_block == sizes)))
