"""Compact sparse weights for flash: ``r x 1`` blocks with 8-bit delta or 16-bit indices.

On a microcontroller the weights live in flash and the budget is bytes, so the index arrays
are as small as the matrix allows:

``delta8``
    one ``uint8`` per block: the distance to the previous block of the same block row (the
    first block of a row counts from column 0). A gap of 256 or more is bridged by all-zero
    filler blocks every 255 columns, so any matrix can be encoded; fillers cost ``r`` floats
    each and are only chosen when the total is still the smallest.
``int16`` / ``int32``
    the block-column index itself.

``indptr`` is ``uint16`` when the number of stored blocks fits, else ``int32``. The data of a
block row ``br`` are ``data[b * r + i] = W[br * r + i, col(b)]`` for ``b`` in
``indptr[br]:indptr[br + 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparse_tvm.formats import BlockSparseWeight

# Block shapes tried for a microcontroller: all r x 1 so that one decoded index serves r
# outputs. The smallest encoding wins ("smaller at equal speed").
MICRO_BLOCKS: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (4, 1), (8, 1))

_MAX_DELTA = 255


@dataclass(frozen=True)
class CompactSparseWeight:
    """An ``(n, k)`` weight as ``r x 1`` blocks with compact indices (see module doc)."""

    shape: tuple[int, int]
    r: int
    encoding: str  # "delta8", "int16" or "int32"
    data: np.ndarray  # float32 (nnz_blocks * r,)
    indices: np.ndarray  # uint8 / int16 / int32 (nnz_blocks,)
    indptr: np.ndarray  # uint16 / int32 (block_rows + 1,)

    @property
    def block(self) -> tuple[int, int]:
        return (self.r, 1)

    @property
    def block_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def nnz_blocks(self) -> int:
        return int(self.indptr[-1])

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes + self.indices.nbytes + self.indptr.nbytes)

    @property
    def dense_nbytes(self) -> int:
        return int(self.shape[0] * self.shape[1] * 4)

    @property
    def label(self) -> str:
        kind = "csr" if self.r == 1 else "bsr"
        return f"{kind} {self.r}x1 {self.encoding}"

    def to_dense(self) -> np.ndarray:
        """The exact dense ``(n, k)`` matrix (decodes the indices)."""
        n, k = self.shape
        out = np.zeros((self.block_rows * self.r, k), np.float32)
        for br in range(self.block_rows):
            col = 0
            for b in range(int(self.indptr[br]), int(self.indptr[br + 1])):
                if self.encoding == "delta8":
                    col += int(self.indices[b])
                else:
                    col = int(self.indices[b])
                out[br * self.r : (br + 1) * self.r, col] += self.data[
                    b * self.r : (b + 1) * self.r
                ]
        return out[:n]


def block_rows(bsr: BlockSparseWeight) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per block row: (block columns, data (blocks, r))."""
    r = bsr.block[0]
    flat = bsr.data.reshape(-1, r)  # (blocks, c=1, r) -> (blocks, r)
    return [
        (bsr.indices[bsr.indptr[i] : bsr.indptr[i + 1]], flat[bsr.indptr[i] : bsr.indptr[i + 1]])
        for i in range(bsr.indptr.shape[0] - 1)
    ]


def bridged_row(cols, values, r: int) -> tuple[list[int], list[np.ndarray]]:
    """One block row's columns and values for 8-bit deltas: a zero block every 255 columns
    across a wider gap (the first block counts from column 0)."""
    out_cols: list[int] = []
    out_values: list[np.ndarray] = []
    prev = 0
    for col, value in zip(list(cols), values):
        while col - prev > _MAX_DELTA:  # bridge the gap with zero blocks
            prev += _MAX_DELTA
            out_cols.append(prev)
            out_values.append(np.zeros(r, np.float32))
        out_cols.append(col)
        out_values.append(value)
        prev = col
    return out_cols, out_values


def deltas(cols: list[int]) -> list[int]:
    """A block row's columns as the 8-bit deltas ``delta8`` stores."""
    return [c - (cols[i - 1] if i else 0) for i, c in enumerate(cols)]


def _delta8(rows, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    steps: list[int] = []
    data: list[np.ndarray] = []
    indptr = [0]
    for cols, values in rows:
        row_cols, row_values = bridged_row(cols.tolist(), values, r)
        steps += deltas(row_cols)
        data += row_values
        indptr.append(len(steps))
    return (
        np.asarray(steps, np.uint8),
        np.asarray(data, np.float32).reshape(-1) if data else np.zeros(0, np.float32),
        np.asarray(indptr, np.int64),
    )


def _indptr(indptr: np.ndarray) -> np.ndarray:
    dtype = np.uint16 if indptr[-1] <= np.iinfo(np.uint16).max else np.int32
    return indptr.astype(dtype)


def _encode(bsr: BlockSparseWeight, encoding: str) -> CompactSparseWeight | None:
    r, k = bsr.block[0], bsr.shape[1]
    rows = block_rows(bsr)
    if encoding == "delta8":
        indices, data, indptr = _delta8(rows, r)
    else:
        dtype = np.int16 if encoding == "int16" else np.int32
        if k - 1 > np.iinfo(dtype).max:
            return None
        nnz = bsr.nnz_blocks
        indices = bsr.indices[:nnz].astype(dtype)
        data = np.ascontiguousarray(bsr.data[:nnz].reshape(-1), np.float32)
        indptr = bsr.indptr.astype(np.int64)
    if indices.size == 0:  # keep every C array non-empty; indptr says no block is read
        indices = np.zeros(1, indices.dtype)
        data = np.zeros(r, np.float32)
    return CompactSparseWeight(bsr.shape, r, encoding, data, indices, _indptr(indptr))


def compact_weight(w: np.ndarray, block: tuple[int, int]) -> CompactSparseWeight:
    """The smallest compact encoding of ``w`` (n, k) with ``r x 1`` blocks."""
    r, c = block
    if c != 1:
        raise ValueError(f"micro kernels take r x 1 blocks, got {r}x{c}")
    bsr = BlockSparseWeight.from_dense(w, (r, 1))
    found = [_encode(bsr, enc) for enc in ("delta8", "int16", "int32")]
    return min((f for f in found if f is not None), key=lambda f: f.nbytes)


def smallest_compact(w: np.ndarray, blocks=MICRO_BLOCKS) -> CompactSparseWeight:
    """The smallest compact encoding of ``w`` over the micro block shapes."""
    return min((compact_weight(w, b) for b in blocks), key=lambda f: f.nbytes)
