"""Matrix-vector product over a weight in windowed sliced ELLPACK order, X gathered by permutes.

The sliced kernel (:mod:`.spmv_sliced`) with each step's columns inside a window of 32
(:mod:`~sparse_tvm.formats.chunked_ell`): a step loads its window's 32 X values into two
AVX-512 registers and gathers its 16 X values with one ``vpermi2ps``
(``llvm.x86.avx512.vpermi2var.ps.512``) indexed by the step's one-byte column offsets, where
the plain sliced kernel makes 16 scalar loads and inserts. Four accumulators per slice take
the steps in turn, so the FMAs do not wait on each other.

Windows start at multiples of 8 columns (``ALIGN``): Zen 4 splits a 512-bit load into two
256-bit halves, and a half that crosses a cache line costs a second access (BERT FFN up,
3072x768 at 90 %, M = 1: 19.4 us with windows at any column, 15.3 us 8-aligned, 16.1 us
16-aligned, 20.3 us with fixed 32-column chunks, same run). The accumulators are "global"
allocations (LLVM allocas), not "local" ones: a "local" buffer inside the parallel loop is a
workspace allocation per slice (that alone cost 5 us of 25).

AVX-512 only (16 lanes). X is first copied into a zero-padded buffer as long as the windows
reach. Arguments (:func:`~sparse_tvm.kernels.spmm.wrap_kernel`'s): ``data`` the
``(steps * 16, 1, 1)`` values, ``indices`` the one-byte offsets packed four to an int32,
``indptr`` the slice pointers, the rows of the slices' lanes, then the first column of each
step's window (a scalar load each step).
"""

from __future__ import annotations

import numpy as np
from tvm.script import tirx as T

from ..formats.block_sparse import BlockSparseWeight
from ..formats.chunked_ell import chunked_ell, window_columns
from .spmm import SpmmSpec
from .spmv_sliced import slice_store

__all__ = ["ALIGN", "CHUNK", "chunked_arrays", "chunked_body", "chunked_sizes"]

CHUNK = 32  # columns of X in two AVX-512 registers
ALIGN = 8  # window starts: 32-byte aligned (see the module doc)
LANES = 16
ACCUMULATORS = 4  # FMA latency x throughput on the cores this was written on (Zen 4)
PERMUTE = "llvm.x86.avx512.vpermi2var.ps.512"


def chunked_sizes(spec: SpmmSpec, steps: int) -> tuple[int, int]:
    """``(indices, indptr)`` entries of the kernel's arrays for a weight of ``steps`` steps."""
    slices = -(-spec.n // LANES)
    return -(-steps * LANES // 4), slices + 1 + slices * LANES + steps


def chunked_arrays(
    weight: BlockSparseWeight, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, indices, indptr)`` as :func:`chunked_body`'s kernel reads them (module doc)."""
    ell = chunked_ell(weight, LANES, window, CHUNK, ALIGN)
    offsets = ell.offsets.reshape(-1)
    packed = np.zeros(-(-offsets.size // 4) * 4, np.uint8)
    packed[: offsets.size] = offsets
    return (
        ell.values.reshape(-1, 1, 1),
        packed.view(np.int32),
        np.concatenate([ell.slice_ptr, ell.rows, ell.step_start]),
    )


def chunked_body(spec: SpmmSpec, n_indices: int):
    """Return the TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)``."""
    k, L, W, U = spec.k, LANES, CHUNK, ACCUMULATORS
    n_values = spec.n_data_blocks
    slices = -(-spec.n // L)
    start_of = slices + 1 + slices * L  # where indptr's window starts begin
    kp = -(-window_columns(k, W, ALIGN) // L) * L  # whole vectors: each X row stays aligned
    rows_of_x = spec.rows
    store_slice = slice_store(spec, L)
    lanes = T.ramp(0, 1, L)

    def step(Xp, values, offsets, indptr, acc, u, t, mi):
        base = mi * kp + indptr[start_of + t]
        gathered = T.call_llvm_pure_intrin(
            "float32x16",
            PERMUTE,
            Xp[T.ramp(base, 1, L)],
            T.Cast("int32x16", offsets[T.ramp(t * L, 1, L)]),
            Xp[T.ramp(base + L, 1, L)],
        )
        return acc[u, lanes] + values[T.ramp(t * L, 1, L)] * gathered

    @T.macro
    def body(Xf, data, indices, indptr, B, Yf):
        offsets = T.decl_buffer((n_indices * 4,), "uint8", data=indices.data)
        values = T.decl_buffer((n_values,), "float32", data=data.data)
        Xp = T.alloc_buffer((rows_of_x * kp,), "float32")
        for mi, j in T.grid(rows_of_x, kp):
            Xp[mi * kp + j] = T.if_then_else(j < k, Xf[mi * k + T.min(j, k - 1)], T.float32(0))
        for it in T.parallel(rows_of_x * slices):
            mi = T.meta_var(it // slices)
            s = T.meta_var(it % slices)
            acc = T.alloc_buffer((U, L), "float32", scope="global")
            for u in T.unroll(U):
                acc[u, lanes] = T.broadcast(T.float32(0), L)
            first = T.meta_var(indptr[s])
            count = T.meta_var(indptr[s + 1] - indptr[s])
            for q in range(count // U):
                for u in T.unroll(U):
                    acc[u, lanes] = step(Xp, values, offsets, indptr, acc, u, first + q * U + u, mi)
            for u in range(count % U):
                acc[u, lanes] = step(
                    Xp, values, offsets, indptr, acc, u, first + count // U * U + u, mi
                )
            total = T.alloc_buffer((L,), "float32", scope="global")
            total[lanes] = acc[0, lanes]
            for u in T.unroll(1, U):
                total[lanes] = total[lanes] + acc[u, lanes]
            store_slice(Yf, B, total, indptr, s, mi)

    return body
