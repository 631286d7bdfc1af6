"""Fully unrolled SpMM for small layers: straight-line code with the sparsity as immediates.

For a small weight the loop machinery of the general kernels (loading ``indptr`` bounds and
``indices``, loop counters, remainder loops) costs as much as the arithmetic. This kernel is
specialised on the sparsity *structure* (not the values): the loops over block rows, nonzero
blocks and block columns run in Python while the kernel is generated, so every output is one
expression ``epilogue(sum data[b, j, ri] * X[.., col * c + j, ..])`` whose ``data`` and ``X``
offsets are constants. Sums are balanced trees (independent partial sums for the FMA units).
``indices`` and ``indptr`` stay parameters (same signature as the other kernels) but are never
read.

Threads: the block rows are cut into ``parts`` contiguous chunks of about equal nonzero count;
a parallel loop over the chunks dispatches to each chunk's straight-line code, which loops over
the free index: a row of X seen as row-major ``(rows, k)`` (layout ``"MK"``, or ``"KM"`` with
``m == 1``), or a batch of a ``"KM"`` input whose ``m`` columns are one vector loop. With one
part no thread is woken at all, which is most of the gain on a small layer: waking the pool
costs a few microseconds (~10 us for two threads on the 2-core VM the project is measured on)
where the arithmetic takes well under one. That is why it is the default kernel for the layers
it covers; the tuner can still pick the loop kernels or more parts.

Only for small layers (:func:`unroll_eligible`): the code grows with the nonzeros.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
from tvm.script import tirx as T

from .spmm import MAX_UNROLLED_TERMS, SpmmSpec

__all__ = ["UnrolledKnobs", "balanced_chunks", "unroll_eligible", "unrolled_body"]

# Rows of a row-major X the straight-line body is repeated for (scalar code per row).
_MAX_ROWS = 8
# Columns of a "KM" X that one vector loop covers.
_MAX_VECTOR_M = 64


@dataclass(frozen=True)
class UnrolledKnobs:
    """Knobs of the unrolled kernel: ``parts`` = chunks of block rows run in parallel."""

    parts: int = 1


def _row_view(spec: SpmmSpec) -> bool:
    return spec.x_layout == "MK" or spec.m == 1


def unroll_eligible(spec: SpmmSpec) -> bool:
    """Whether ``spec`` is small enough for straight-line code (and carries its structure)."""
    if spec.x_layout == "DIRECT":
        return False  # its indices are element offsets
    if spec.structure is None or (spec.x_layout == "KM_MK" and spec.m > 1):
        return False  # (its vector loop writes Y as (n, m); "KM_MK" wants (m, n))
    terms = spec.n_data_blocks * spec.r * spec.c
    if terms > MAX_UNROLLED_TERMS:
        return False
    return spec.rows <= _MAX_ROWS if _row_view(spec) else spec.m <= _MAX_VECTOR_M


def balanced_chunks(indptr: np.ndarray, parts: int) -> list[range]:
    """Cut the block rows into ``parts`` contiguous ranges of about equal nonzero count."""
    nbr = len(indptr) - 1
    parts = max(1, min(parts, nbr))
    total = int(indptr[-1])
    cuts = [0]
    for q in range(1, parts):
        # first block row whose start reaches q / parts of the nonzeros, kept increasing
        cut = int(np.searchsorted(indptr[:-1], total * q / parts, side="left"))
        cuts.append(min(max(cut, cuts[-1] + 1), nbr - (parts - q)))
    cuts.append(nbr)
    return [range(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def _balanced_sum(terms: list):
    while len(terms) > 1:
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = pairs + ([terms[-1]] if len(terms) % 2 else [])
    return terms[0] if terms else T.float32(0)


def unrolled_body(spec: SpmmSpec, knobs: UnrolledKnobs | None = None):
    """Return the TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)`` of the unrolled
    kernel; ``spec.structure`` must be set (see :func:`~sparse_tvm.kernels.spmm_spec`)."""
    if not unroll_eligible(spec):
        raise ValueError("the unrolled kernel needs a small layer with its sparsity structure")
    knobs = knobs if knobs is not None else UnrolledKnobs()
    indptr = np.asarray(spec.structure[0], dtype=np.int64)
    indices = np.asarray(spec.structure[1], dtype=np.int64)
    n, k, r, c, m = spec.n, spec.k, spec.r, spec.c, spec.m
    chunks = balanced_chunks(indptr, knobs.parts)
    parts = len(chunks)
    row_view = _row_view(spec)
    free = spec.rows if row_view else spec.batch
    epi = spec.epilogue

    def x_at(Xf, f, kc, i):
        return Xf[f * k + kc] if row_view else Xf[(f * k + kc) * m + i]

    def y_index(f, o, i):
        return f * n + o if row_view else (f * n + o) * m + i

    def emit_chunk(Xf, data, B, Yf, rows: range, f, i) -> None:
        for br in rows:
            for ri in range(r):
                o = br * r + ri
                if o >= n:
                    continue
                terms = [
                    data[b, j, ri] * x_at(Xf, f, int(indices[b]) * c + j, i)
                    for b in range(int(indptr[br]), int(indptr[br + 1]))
                    for j in range(c)
                    if int(indices[b]) * c + j < k
                ]
                T.buffer_store(Yf, epi(_balanced_sum(terms), B, o), [y_index(f, o, i)])

    def emit(Xf, data, B, Yf, p, f) -> None:
        for q, rows in enumerate(chunks):
            with contextlib.ExitStack() as frames:
                if parts > 1:  # if p == q: chunk q
                    frames.enter_context(T.If(p == q))
                    frames.enter_context(T.Then())
                if row_view:
                    emit_chunk(Xf, data, B, Yf, rows, f, None)
                else:
                    with T.vectorized(m) as i:
                        emit_chunk(Xf, data, B, Yf, rows, f, i)

    @T.macro
    def body(Xf, data, indices, indptr, B, Yf):
        for p in T.parallel(parts):
            if free == 1:
                emit(Xf, data, B, Yf, p, 0)
            else:
                for f in range(free):
                    emit(Xf, data, B, Yf, p, f)

    return body
