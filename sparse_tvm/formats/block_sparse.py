"""Block-sparse (BSR) weight format used by the sparse kernels.

Notation
--------
The weight ``W`` has shape ``(n, k)`` = (output features, input features). For an ONNX
``MatMul`` ``Y = X @ B`` it is ``B.T``; for a convolution it is the
``(out_channels, in_channels * kh * kw)`` matrix. A block shape ``(r, c)`` means ``r``
consecutive *output* features x ``c`` consecutive *input* features: ``(16, 1)`` is "16x1",
``(1, 4)`` is "1x4" and ``(1, 1)`` is plain CSR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse


def _pad_to_blocks(w: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """Return ``w`` zero-padded so that both dimensions are multiples of the block."""
    r, c = block
    n, k = w.shape
    n_pad, k_pad = -(-n // r) * r, -(-k // c) * c
    if (n_pad, k_pad) == (n, k):
        return w
    padded = np.zeros((n_pad, k_pad), dtype=w.dtype)
    padded[:n, :k] = w
    return padded


def _check_block(block: tuple[int, int]) -> tuple[int, int]:
    r, c = (int(v) for v in block)
    if r < 1 or c < 1:
        raise ValueError(f"block shape must be positive, got {block}")
    return r, c


@dataclass(frozen=True)
class BlockSparseWeight:
    """A sparse weight ``W`` of logical shape ``(n, k)`` stored as nonzero ``r x c`` blocks.

    Attributes
    ----------
    shape : tuple[int, int]
        ``(n, k)``, the logical dense shape (output features, input features).
    block : tuple[int, int]
        ``(r, c)``: ``r`` output features x ``c`` input features per block.
    data : np.ndarray
        float32, shape ``(max(nnz_blocks, 1), c, r)``. Each block is stored *transposed*
        (column-major): ``data[b, j, i] = W[br * r + i, indices[b] * c + j]`` where ``br`` is
        the block row of block ``b``. The ``r`` values of one input column are contiguous, so
        the row-vector kernel loads them as one vector. For ``c == 1`` or ``r == 1`` this is
        the same memory order as scipy's BSR ``data``.
    indices : np.ndarray
        int32, shape ``(max(nnz_blocks, 1),)``: block-column index of each nonzero block,
        sorted within each block row.
    indptr : np.ndarray
        int32, shape ``(ceil(n / r) + 1,)``: blocks of block row ``i`` are
        ``indptr[i]:indptr[i + 1]``.

    Notes
    -----
    ``n`` and ``k`` are zero-padded up to multiples of ``r`` and ``c``; the padded rows and
    columns hold zeros inside the stored blocks. When the matrix has no nonzero block, ``data``
    and ``indices`` still hold one (all-zero, never read) block so that no buffer has size 0;
    ``nnz_blocks`` (``indptr[-1]``) is then 0.
    """

    shape: tuple[int, int]
    block: tuple[int, int]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray

    @classmethod
    def from_dense(cls, w: np.ndarray, block: tuple[int, int]) -> BlockSparseWeight:
        """Build the format from a dense ``(n, k)`` matrix.

        A block is kept if any value in it is nonzero (explicit zeros inside a kept block are
        stored).
        """
        r, c = _check_block(block)
        w = np.asarray(w, dtype=np.float32)
        if w.ndim != 2:
            raise ValueError(f"expected a 2-D weight (n, k), got shape {w.shape}")
        n, k = w.shape
        padded = _pad_to_blocks(w, (r, c))
        # scipy keeps a block when any entry is nonzero; explicit zeros only appear inside kept
        # blocks, never as whole blocks, because the input is dense.
        bsr = scipy.sparse.bsr_matrix(padded, blocksize=(r, c))
        bsr.sort_indices()
        data = np.ascontiguousarray(bsr.data.transpose(0, 2, 1), dtype=np.float32)
        indices = bsr.indices.astype(np.int32)
        indptr = bsr.indptr.astype(np.int32)
        if indptr.shape[0] != padded.shape[0] // r + 1:  # scipy always gives this; be explicit
            raise AssertionError("unexpected indptr length from scipy")
        if data.shape[0] == 0:
            data = np.zeros((1, c, r), dtype=np.float32)
            indices = np.zeros((1,), dtype=np.int32)
        return cls((int(n), int(k)), (r, c), data, indices, indptr)

    def to_dense(self) -> np.ndarray:
        """Return the exact dense ``(n, k)`` float32 matrix."""
        r, c = self.block
        n, k = self.shape
        nnz = self.nnz_blocks
        n_blocks = self.indptr.shape[0] - 1
        k_blocks = -(-k // c)
        bsr = scipy.sparse.bsr_matrix(
            (self.data[:nnz].transpose(0, 2, 1), self.indices[:nnz], self.indptr),
            shape=(n_blocks * r, k_blocks * c),
        )
        return np.asarray(bsr.toarray()[:n, :k], dtype=np.float32)

    @property
    def nnz_blocks(self) -> int:
        """Number of stored nonzero blocks (excluding the placeholder block of an empty W)."""
        return int(self.indptr[-1])

    @property
    def nbytes(self) -> int:
        """Bytes of ``data`` + ``indices`` + ``indptr`` as stored."""
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes)

    @property
    def dense_nbytes(self) -> int:
        """Bytes of the dense float32 weight, ``n * k * 4``."""
        return int(self.shape[0] * self.shape[1] * 4)

    @property
    def density(self) -> float:
        """Fraction of blocks stored (``1 - zero_block_fraction``)."""
        r, c = self.block
        total = (self.indptr.shape[0] - 1) * -(-self.shape[1] // c)
        return self.nnz_blocks / total if total else 0.0


def zero_block_fraction(w: np.ndarray, block: tuple[int, int]) -> float:
    """Fraction of all-zero ``r x c`` blocks of ``w`` (shape ``(n, k)``).

    Ragged edge blocks count as blocks, padded with zeros.
    """
    r, c = _check_block(block)
    w = np.asarray(w)
    padded = _pad_to_blocks(w, (r, c))
    n_pad, k_pad = padded.shape
    if n_pad == 0 or k_pad == 0:
        return 0.0
    nonzero = (padded != 0).reshape(n_pad // r, r, k_pad // c, c).any(axis=(1, 3))
    return float(1.0 - nonzero.mean())
