"""int8 weights for the Cortex-M kernels, packed for ``SMLAD`` (two 16-bit multiply-adds).

Cortex-M4 / M7 (and M33 / M55 with the DSP extension) multiply 8-bit values through 16-bit
pairs: ``SXTB16`` sign-extends bytes 0 and 2 of a word to the two halves of a register (``SXTB16
.., ROR #8`` bytes 1 and 3), and ``SMLAD`` adds both half products to an accumulator. So one
32-bit load of weights feeds four multiply-adds when its bytes are stored in the order the two
extractions read them. The layouts here do that:

``dense``
    row by row, every 4 weights ``w[k..k+3]`` as the bytes ``w[k], w[k+2], w[k+1], w[k+3]``:
    the low extraction is the pair ``(w[k], w[k+1])``, the high one ``(w[k+2], w[k+3])``, each
    multiplied by the activation pair of the same columns. ``k`` is padded to a multiple of 4
    with zeros, ``n`` to a multiple of 2 (the kernel runs two rows at a time).
``sparse``
    ``r x 1`` blocks (r of 1, 2, 4, 8) with compact indices: 8-bit columns (``col8``, where
    ``k <= 256``: one load a block), else the micro float kernels' 8-bit deltas (``delta8``,
    a load and an add) or 16-bit columns: two consecutive blocks of a block row share the activation
    pair ``(x[c0], x[c1])``, and their weights for row ``i`` are the half-word pair
    ``(w0[i], w1[i])``. These pairs are stored two to a word (bytes ``a0, b0, a1, b1`` for
    pairs ``a``, ``b``): with ``r >= 2`` rows ``i, i + 1`` of one block pair, with ``r == 1``
    two consecutive block pairs of the row. Each block row is padded with zero blocks (delta 0)
    to whole words: 2 blocks (``r >= 2``) or 4 (``r == 1``); ``indptr`` counts those groups.

``row_sums`` (the sum of each output row's weights) gives the zero-point correction of uint8
activations: ``sum_k (x - z) w = sum_k x w - z * row_sums``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.micro.compact import MICRO_BLOCKS, block_rows, bridged_row, deltas

__all__ = ["MicroInt8Weight", "dense_int8", "smallest_int8", "sparse_int8"]


@dataclass(frozen=True)
class MicroInt8Weight:
    """An ``(n, k)`` int8 weight packed for the Cortex-M int8 kernels (module doc)."""

    shape: tuple[int, int]
    r: int  # rows of a block; 0 for the dense layout
    encoding: str  # "dense", "col8", "delta8" or "int16"
    data: np.ndarray  # int32 words of four packed int8 weights
    indices: np.ndarray | None  # uint8 columns / deltas, int16 columns: one a block (sparse)
    indptr: np.ndarray | None  # uint16 / int32: groups of blocks per block row (sparse)
    row_sums: np.ndarray  # int64 (n,)

    is_int8 = True  # DenseToSparse: the kernel reads the layer's 8-bit activations

    @property
    def dense(self) -> bool:
        return self.encoding == "dense"

    @property
    def group(self) -> int:
        """Blocks per stored group (sparse): the blocks whose weights fill whole words."""
        return 4 if self.r == 1 else 2

    @property
    def block_rows(self) -> int:
        return 0 if self.indptr is None else int(self.indptr.shape[0] - 1)

    @property
    def block(self) -> tuple[int, int] | None:
        return None if self.dense else (self.r, 1)

    @property
    def nbytes(self) -> int:
        """Bytes in flash: the packed weights and the index arrays."""
        extra = 0 if self.dense else self.indices.nbytes + self.indptr.nbytes
        return int(self.data.nbytes + extra)

    @property
    def label(self) -> str:
        if self.dense:
            return "int8 dense"
        kind = "csr" if self.r == 1 else f"bsr {self.r}x1"
        return f"int8 {kind} {self.encoding}"

    def to_dense(self) -> np.ndarray:
        """The exact int8 ``(n, k)`` matrix the packed arrays hold."""
        n, k = self.shape
        raw = self.data.view(np.int8).reshape(-1, 4)
        words = raw[:, [0, 2, 1, 3]]  # back to (pair a: 2 weights, pair b: 2 weights)
        if self.dense:
            kp = -(-k // 4) * 4
            return words.reshape(-1, kp)[:n, :k].copy()
        pairs = words.reshape(-1, 2)  # half-word pairs in storage order
        out = np.zeros((self.block_rows * self.r, k), np.int8)
        r, g = self.r, self.group
        for br in range(self.block_rows):
            first, last = int(self.indptr[br]) * g, int(self.indptr[br + 1]) * g
            col, cols = 0, []
            for b in range(first, last):
                col = (
                    col + int(self.indices[b])
                    if self.encoding == "delta8"
                    else int(self.indices[b])
                )
                cols.append(col)
            for j, b in enumerate(range(first, last, 2)):
                for i in range(r):
                    w0, w1 = pairs[(b // 2) * r + i]
                    out[br * r + i, cols[2 * j]] += w0
                    out[br * r + i, cols[2 * j + 1]] += w1
        return out[:n]


def _row_sums(w: np.ndarray) -> np.ndarray:
    return w.astype(np.int64).sum(axis=1)


def _interleave(pairs: np.ndarray) -> np.ndarray:
    """Half-word pairs ``(P, 2)`` int8 (P even) as int32 words: bytes a0, b0, a1, b1."""
    quads = pairs.reshape(-1, 2, 2)  # (words, pair, element)
    return np.ascontiguousarray(quads.transpose(0, 2, 1)).reshape(-1).view(np.int32)


def dense_int8(w: np.ndarray) -> MicroInt8Weight:
    """``w`` (n, k) int8 in the dense layout (module doc)."""
    w = _checked(w)
    n, k = w.shape
    padded = np.zeros((n + n % 2, -(-k // 4) * 4), np.int8)
    padded[:n, :k] = w
    pairs = padded.reshape(-1, 2)  # (w[k], w[k+1]), (w[k+2], w[k+3]), ...
    return MicroInt8Weight((n, k), 0, "dense", _interleave(pairs), None, None, _row_sums(w))


def sparse_int8(w: np.ndarray, r: int, columns: np.ndarray | None = None) -> MicroInt8Weight | None:
    """``w`` in ``r x 1`` blocks (module doc), the smallest index encoding; None when no
    encoding can hold it. ``columns``: the index stored for each of ``w``'s columns, in
    increasing order (a conv's offsets into its padded input,
    :func:`sparse_tvm.micro.conv_patches.patch_offsets`), else the column itself."""
    w = _checked(w)
    n, k = w.shape
    row_sums = _row_sums(w)
    if columns is not None:  # the same weights at the stored columns
        scattered = np.zeros((n, int(columns[-1]) + 1), np.int8)
        scattered[:, columns] = w
        w, k = scattered, scattered.shape[1]
    group = 4 if r == 1 else 2
    bsr = BlockSparseWeight.from_dense(w.astype(np.float32), (r, 1))
    found = []
    # col8 first: as small as delta8 where it fits (no gap to bridge), one instruction less
    for encoding in ("col8", "delta8", "int16"):
        if encoding == "int16" and k - 1 > np.iinfo(np.int16).max:
            continue
        if encoding == "col8" and k - 1 > np.iinfo(np.uint8).max:
            continue
        cols_all, data_all, indptr = [], [], [0]
        for cols, values in block_rows(bsr):
            row_cols, row_data = cols.tolist(), list(values)
            if encoding == "delta8":
                row_cols, row_data = bridged_row(row_cols, row_data, r)
            while len(row_cols) % group:  # whole words: zero blocks at the last column
                row_cols.append(row_cols[-1] if row_cols else 0)
                row_data.append(np.zeros(r, np.float32))
            cols_all.append(row_cols)
            data_all.extend(row_data)
            indptr.append(indptr[-1] + len(row_cols) // group)
        if encoding == "delta8":
            indices = np.asarray([d for row in cols_all for d in deltas(row)], np.uint8)
        else:
            dtype = np.uint8 if encoding == "col8" else np.int16
            indices = np.asarray([c for row in cols_all for c in row], dtype)
        if not data_all:  # keep every C array non-empty; indptr says no block is read
            indices = np.zeros(1, indices.dtype)
            data_all = [np.zeros(r, np.float32)] * group
        blocks = np.asarray(data_all, np.float32).astype(np.int8)  # (blocks, r)
        # block pairs -> half-word pairs (pair, row): (w0[i], w1[i])
        pairs = blocks.reshape(-1, 2, r).transpose(0, 2, 1).reshape(-1, 2)
        top = indptr[-1]
        ptr_dtype = np.uint16 if top <= np.iinfo(np.uint16).max else np.int32
        found.append(
            MicroInt8Weight(
                (n, k), r, encoding, _interleave(pairs), indices,
                np.asarray(indptr).astype(ptr_dtype), row_sums,
            )
        )  # fmt: skip
    return min(found, key=lambda f: f.nbytes) if found else None


def smallest_int8(
    w: np.ndarray, blocks=MICRO_BLOCKS, columns: np.ndarray | None = None
) -> MicroInt8Weight:
    """The smallest of the dense layout and the sparse ones over the micro block shapes
    (``columns``: see :func:`sparse_int8`)."""
    options = [dense_int8(w)] + [sparse_int8(w, r, columns) for r, _ in blocks]
    return min((o for o in options if o is not None), key=lambda o: o.nbytes)


def _checked(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError(f"the weight must be a 2-d int8 array, not {w.ndim}-d {w.dtype}")
    return w
