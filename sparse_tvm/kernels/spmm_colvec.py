"""Column-vector SpMM: vectorised along the ``m`` columns of the activations.

X is seen as ``(batch, k, m)`` with the ``m`` values of one input feature contiguous (layout
``"KM"``: a 1x1 conv in NCHW or an im2col output). Layout ``"DIRECT"`` reads each block's
row of X at the element offset its index holds (a conv's shifted input rows, no im2col:
:mod:`.direct_conv`). For layout ``"KM_MK"`` only the output is
transposed (into the ``(m, n)`` Y). For layout ``"MK"`` the kernel first
transposes X into a ``(k, m)`` workspace (GEMM-style packing: ``m * k`` copies against
``nnz * m`` FMAs), computes ``Y.T`` into a second workspace and transposes it back; both
transposes are vectorised in registers (:mod:`.transpose`).

* accumulators ``acc[RP, MV]``: ``RP`` output rows of a block row (the ``r`` rows in
  ``r / RP`` passes) x ``MV`` columns, ``RP * MV / VL`` vector registers (AVX-512: ``MV = 128``
  for CSR, ``48`` for ``r = 4``, ``16`` for ``r = 8, 16``);
* per nonzero block, input column ``j`` and row ``i``: ``MV / VL`` vector loads of an X row
  (reused by the ``RP`` rows), one broadcast weight, ``MV / VL`` FMAs;
* bias and ReLU on the way out, stores contiguous along ``m``.

The parallel loop is the fused ``(batch, m tile, block row)`` space, so each thread takes a
contiguous range of m tiles and block rows. The last m tile is shifted back to end at ``m``
(overlapping its neighbour, recomputing identical values) so there is no ragged tile.

**K panels** (knob ``panel`` > 0, the default for ``r == 1``): per nonzero a CSR weight costs
one X vector load per FMA, and the X rows it picks lie anywhere in ``k x MV`` floats (a BERT
FFN's 768 x 128: 384 KiB, in L2), so the loop runs at L2 bandwidth, half the FMA rate
(3072x768 at 90 %, m = 128, one core: 1.3 ms; 0.66 ms with every index pointing into the
first 16 rows). With panels the weight is read in :mod:`~sparse_tvm.formats.panels` order,
``panel`` block columns at a time; for each m tile every block row of a chunk accumulates its
panel's blocks into its Y row (zeros before the first panel, bias and ReLU after the last),
so the panel's ``panel * c x MV`` slab of X stays in L1 while the chunk's Y rows (at most
~256 KiB) stay in L2. The parallel space is then ``(batch, row chunk)``, m tiles inside, so
a shifted last m tile never races its neighbour's partial sums.

**Each thread's data on its core** (panelled kernels): the thread that computed a chunk's
rows transposes them into Y, and with layout ``"MK"`` each thread (one per core, a
contiguous share of the chunks) transposes all of X into a copy of its own. Separate parallel
transposes split their work another way than the chunks, so each thread read half of XT and
half of YT from the other core's cache: on the 2-vCPU VM these numbers come from, whose cores
share an L3 only part of the time, a BERT FFN layer ran 1.6-1.8x and a 384x384 one 2.3x
slower while they did not (same run, kernel alone: 3072x768 597 -> 609 us sharing, 1076 ->
671 us not; 384x384 62 -> 44 / 160 -> 69 us).

**Cores splitting the columns** (knob ``split``, the default for a CSR weight of at most
:data:`SPLIT_WEIGHT_BYTES` in a packed layout): each core takes a contiguous part of the m
columns (tokens) of every row, in copies of XT and YT of its own, and writes its own rows of
Y, the rows the next row-split kernel of a transformer (layer norm, GELU, residual add) reads
on that core.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from ..formats.panels import panel_count
from .spmm import SpmmSpec
from .transpose import transpose_block_macro, transpose_macro, transpose_rows_macro


@dataclass(frozen=True)
class ColvecKnobs:
    """Schedule knobs of the column-vector kernel (the tuner searches them).

    ``RP`` block rows per pass, ``MV`` columns per register tile (a multiple of the vector
    width), ``order`` 0 = block rows innermost in the parallel space, 1 = m tiles innermost;
    ``unroll`` = unroll factor of the loop over the nonzero blocks of a block row;
    ``panel`` = block columns per K panel (0: no panels; see the module doc; ``order`` is
    then unused); ``split`` = 1: the cores split the ``m`` columns instead of the rows (packed
    layouts, batch 1, at least two ``MV`` tiles; see :func:`split_knobs`).
    """

    RP: int
    MV: int
    order: int = 0
    unroll: int = 1
    panel: int = 0
    split: int = 0


# The X slab one K panel keeps in L1 (panel * c rows of MV floats): 48 KiB measured fastest on
# a 32 KiB-L1 Zen 4 at 90 % 1x1 (a row reads a tenth of the slab's rows): 3072x768 and 768x3072
# at m = 128 on two cores, 0.73 / 1.00 ms unpanelled, 0.58 / 0.60 ms with 96-row panels (64:
# 0.59 / 0.62; 48: 0.65 / 0.70; MV = 64 x 128 rows: 0.76 / 0.81).
PANEL_SLAB_BYTES = 48 * 1024
# Y rows one row chunk of a panelled kernel keeps in L2 (block rows x r x MV floats).
PANEL_CHUNK_BYTES = 256 * 1024


def colvec_tiles(spec: SpmmSpec, columns: int | None = None) -> tuple[int, int]:
    """Knobs ``(RP, MV)``: block rows per pass and columns of m per register tile, for
    ``columns`` of m (default: all of them).

    The tile ``RP x MV`` stays under 256 floats: LowerTVMBuiltin keeps only allocations under
    1 KiB on the stack, larger ones become heap workspaces that LLVM cannot put in registers.
    """
    vl = spec.lanes
    columns = spec.m if columns is None else columns
    rp = max(d for d in range(1, min(spec.r, 8) + 1) if spec.r % d == 0)
    # Whole registers, a power of two of them: LLVM splits a 3-register <48 x float> badly
    # (measured 15x slower than two registers on 4x1 and CSR conv layers).
    vectors = max(1, min(8, 255 // (rp * vl), columns // vl))
    vectors = 1 << (vectors.bit_length() - 1)
    if columns < vl:
        return rp, columns
    return rp, vl * vectors


def default_panel(spec: SpmmSpec, mv: int) -> int:
    """Block columns per K panel for an ``MV``-column tile: 0 (no panels) unless the weight
    has single-row blocks, the layout reads X by block index (``"MK"``, ``"KM"``,
    ``"KM_MK"``) and X's ``k x MV`` tile is more than one and a half slabs."""
    if spec.r != 1 or spec.x_layout == "DIRECT":
        return 0
    rows = max(1, PANEL_SLAB_BYTES // (4 * mv))  # X rows per slab
    if spec.k * 2 <= rows * 3:
        return 0
    return max(1, rows // spec.c)


# The stored weight (float32 values + int32 indices) up to which a CSR layer's cores split the
# m columns by default (:func:`split_knobs`): each core then reads the whole weight, which
# stays in its L2 (1 MiB on Zen 4, 1-2 MiB on Xeons). MiniLM-L6 at 90 % 1x1 (weights of
# 118-472 KiB) in the model, same run: sparse layers 3.48 -> 3.27 ms a run and layer norms
# 214 -> 158 us with the cores sharing an L3, 7.2 -> 5.0 ms and 726 -> 353 us without; the
# BERT-base layer (1.9 MiB FFN weights) 2.55 -> 2.69 ms / 4.30 -> 4.02 ms: kept row-split.
SPLIT_WEIGHT_BYTES = 1 << 20


def row_split_knobs(spec: SpmmSpec) -> ColvecKnobs:
    """The kernel whose cores split the block rows: register tiles of the widest ``MV``,
    K panels where X's tile outgrows L1."""
    rp, mv = colvec_tiles(spec)
    return ColvecKnobs(RP=rp, MV=mv, panel=default_panel(spec, mv))


def default_colvec_knobs(spec: SpmmSpec) -> ColvecKnobs:
    """The hand-picked knobs: the default schedule without tuning records. A CSR weight of
    at most :data:`SPLIT_WEIGHT_BYTES` in a packed layout splits the m columns between the
    cores (:func:`split_knobs`), else the cores split the rows."""
    split = split_knobs(spec) if spec.r == 1 else None
    stored = spec.n_data_blocks * (spec.r * spec.c + 1) * 4  # float32 values, int32 indices
    if split is not None and stored <= SPLIT_WEIGHT_BYTES:
        return split
    return row_split_knobs(spec)


def split_knobs(spec: SpmmSpec) -> ColvecKnobs | None:
    """Knobs of the kernel whose cores split the ``m`` columns (tokens), or None where a core
    would get less than a vector of them or the layout is not a packed one of batch 1.

    Each core transposes its own tokens' rows of X into a copy of XT of its own, multiplies
    them by the whole weight into a copy of YT of its own and transposes them back into its
    own rows of Y: the layer reads only the rows of X the core's share of the previous
    row-split kernel (a layer norm, an element-wise op) wrote, and leaves its rows of Y where
    the next one reads them.
    """
    if spec.batch != 1 or spec.x_layout not in ("MK", "KM_MK") or spec.cores < 2:
        return None
    per_core = spec.m // spec.cores
    if per_core < spec.lanes:
        return None
    rp, mv = colvec_tiles(spec, per_core)
    return ColvecKnobs(RP=rp, MV=mv, panel=default_panel(spec, mv), split=1)


def panels_of(spec: SpmmSpec, knobs: ColvecKnobs) -> int:
    """The K panels the kernel of ``knobs`` reads (1: the weight's own order)."""
    return panel_count(-(-spec.k // spec.c), knobs.panel)


def colvec_body(spec: SpmmSpec, knobs: ColvecKnobs | None = None):
    """The TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)`` for ``knobs``
    (default: the hand-picked :func:`default_colvec_knobs`)."""
    knobs = knobs if knobs is not None else default_colvec_knobs(spec)
    RP, MV, order, U = knobs.RP, knobs.MV, knobs.order, knobs.unroll
    n, k, r, c, m = spec.n, spec.k, spec.r, spec.c, spec.m
    nbr, batch = spec.block_rows, spec.batch
    if r % RP:
        raise ValueError(f"RP={RP} must divide r={r}")
    MV = max(1, min(MV, m))
    passes = r // RP
    ntile = -(-m // MV)
    k_ragged = k % c != 0
    n_ragged = spec.n_tail != r
    packed_in = spec.x_layout == "MK"
    packed_out = spec.x_layout not in ("KM", "DIRECT")
    direct = spec.x_layout == "DIRECT"
    epi = spec.epilogue
    npanels = panels_of(spec, knobs)
    if npanels > 1 and direct:
        raise ValueError("layout 'DIRECT' reads its blocks by element offset: no K panels")
    # row chunks: at least one per core and each chunk's Y rows within PANEL_CHUNK_BYTES
    per_chunk = max(1, PANEL_CHUNK_BYTES // (4 * r * MV))
    # split: the cores take parts of the m columns, each at least one MV tile wide (fewer
    # than two such parts: the rows are split as without the knob)
    parts = min(spec.cores, m // MV) if knobs.split else 0
    if parts and (batch != 1 or not packed_out):
        raise ValueError("split = 1 takes a packed layout ('MK' or 'KM_MK') and batch 1")
    parts = parts if parts >= 2 else 0
    chunks = -(-nbr // per_chunk)
    if batch < spec.cores and not parts:  # the row chunks are the parallel space
        chunks = max(spec.cores, chunks)
    chunk_rows = -(-nbr // max(1, chunks))
    chunks = -(-nbr // chunk_rows)

    @T.macro
    def fma(XT, xbase, data, indices, acc, b, m0, p):
        if direct:  # r x 1 blocks; the index is the offset of the block's X row
            for rr in T.unroll(RP):
                for v in T.vectorized(MV):
                    acc[rr, v] = acc[rr, v] + data[b, 0, p * RP + rr] * XT[indices[b] + m0 + v]
        else:
            for j in T.unroll(c):
                kc = T.meta_var(indices[b] * c + j)
                for rr in T.unroll(RP):
                    for v in T.vectorized(MV):
                        if k_ragged:
                            acc[rr, v] = acc[rr, v] + data[b, j, p * RP + rr] * T.if_then_else(
                                kc < k, XT[xbase + T.min(kc, k - 1) * m + m0 + v], T.float32(0)
                            )
                        else:
                            acc[rr, v] = (
                                acc[rr, v] + data[b, j, p * RP + rr] * XT[xbase + kc * m + m0 + v]
                            )

    @T.macro
    def store(YT, ybase, acc, B, rr, row, m0, last):
        for v in T.vectorized(MV):
            if last:
                YT[ybase + row * m + m0 + v] = epi(acc[rr, v], B, row)
            else:
                YT[ybase + row * m + m0 + v] = acc[rr, v]

    @T.macro
    def tile(XT, xbase, YT, ybase, data, indices, indptr, B, br, m0, p, q, first, last):
        """Block row ``br``, columns ``m0 : m0 + MV``, rows pass ``p``, blocks of K panel
        ``q``: from zeros (``first``) or the partial sums in YT, stored with the epilogue
        (``last``) or as partial sums."""
        acc = T.alloc_buffer((RP, MV), "float32", scope="global")
        for rr in T.unroll(RP):
            row = T.meta_var(br * r + p * RP + rr)
            for v in T.vectorized(MV):
                if first:
                    acc[rr, v] = T.float32(0)
                elif n_ragged:
                    acc[rr, v] = T.if_then_else(
                        row < n, YT[ybase + T.min(row, n - 1) * m + m0 + v], T.float32(0)
                    )
                else:
                    acc[rr, v] = YT[ybase + row * m + m0 + v]
        lo = T.meta_var(q * nbr + br)
        start = T.meta_var(indptr[lo])
        count = T.meta_var(indptr[lo + 1] - indptr[lo])
        if U == 1:
            for b in range(indptr[lo], indptr[lo + 1]):
                fma(XT, xbase, data, indices, acc, b, m0, p)
        else:
            for bo in range(count // U):
                for bu in T.unroll(U):
                    fma(XT, xbase, data, indices, acc, start + bo * U + bu, m0, p)
            for bt in range(count % U):
                fma(XT, xbase, data, indices, acc, start + count // U * U + bt, m0, p)
        for rr in T.unroll(RP):
            row = T.meta_var(br * r + p * RP + rr)
            if n_ragged:
                if row < n:
                    store(YT, ybase, acc, B, rr, row, m0, last)
            else:
                store(YT, ybase, acc, B, rr, row, m0, last)

    transpose = transpose_macro(spec.lanes)
    transpose_rows = transpose_rows_macro(spec.lanes)
    transpose_block = transpose_block_macro(spec.lanes)

    @T.macro
    def parallel_tiles(XT, YT, data, indices, indptr, B):
        for it in T.parallel(batch * ntile * nbr):
            bt = T.meta_var(it // (ntile * nbr))
            rest = T.meta_var(it % (ntile * nbr))
            for p in range(passes):
                if order == 0:
                    tile(
                        XT, bt * k * m, YT, bt * n * m, data, indices, indptr, B,
                        rest % nbr, T.min(rest // nbr * MV, m - MV), p, 0, True, True,
                    )  # fmt: skip
                else:
                    tile(
                        XT, bt * k * m, YT, bt * n * m, data, indices, indptr, B,
                        rest // ntile, T.min(rest % ntile * MV, m - MV), p, 0, True, True,
                    )  # fmt: skip

    @T.macro
    def chunk_panel(XT, xbase, YT, ybase, data, indices, indptr, B, br0, m0, q, first, last):
        """Every block row of the chunk from ``br0``, K panel ``q``, m tile at ``m0``."""
        for i in range(T.min(chunk_rows, nbr - br0)):
            for p in range(passes):
                tile(
                    XT, xbase, YT, ybase, data, indices, indptr, B,
                    br0 + i, m0, p, q, first, last,
                )  # fmt: skip

    @T.macro
    def chunk_tile(XT, xbase, YT, ybase, data, indices, indptr, B, br0, m0):
        """Every K panel of the chunk from ``br0`` at m tile ``m0``: the first from zeros, the
        last with the epilogue. The loops start at 0 (TVM 0.27 lowered `range(1, 2)` with the
        loop variable as 0)."""
        chunk_panel(XT, xbase, YT, ybase, data, indices, indptr, B, br0, m0, 0, True,
                    npanels == 1)  # fmt: skip
        if npanels > 2:
            for q in range(npanels - 2):
                chunk_panel(XT, xbase, YT, ybase, data, indices, indptr, B, br0, m0, q + 1,
                            False, False)  # fmt: skip
        if npanels > 1:
            chunk_panel(XT, xbase, YT, ybase, data, indices, indptr, B, br0, m0, npanels - 1,
                        False, True)  # fmt: skip

    @T.macro
    def chunk_all_panels(XT, xbase, YT, ybase, data, indices, indptr, B, Yf, br0):
        """Chunk ``br0`` whole: m tiles, then K panels, then block rows; a packed output
        (batch 1) transposed into Yf by the thread that computed it."""
        for mt in range(ntile):
            chunk_tile(XT, xbase, YT, ybase, data, indices, indptr, B, br0,
                       T.min(mt * MV, m - MV))  # fmt: skip
        if packed_out:
            transpose_rows(YT, Yf, br0 * r, T.min(chunk_rows * r, n - br0 * r), n, m, 0)

    @T.macro
    def parallel_panels(XT, YT, data, indices, indptr, B, Yf):
        # (batch, row chunk) in parallel. A packed output is transposed chunk by chunk by the
        # thread that computed it: a separate parallel transpose splits the work by m and
        # reads half of YT from the other core's cache (1.7x slower when the two cores share
        # no L3).
        for it in T.parallel(batch * chunks):
            bt = T.meta_var(it // chunks)
            chunk_all_panels(XT, bt * k * m, YT, bt * n * m, data, indices, indptr, B, Yf,
                             it % chunks * chunk_rows)  # fmt: skip

    # Packed input with panels: one thread per core, each transposing all of X into a copy of
    # its own and taking a contiguous share of the row chunks. Every thread reads all of XT:
    # one shared XT, written half by each thread, had each read half from the other core's
    # cache (3072x768 at m = 128: 650 us when the cores share an L3, 800 when they do not).
    per_core = -(-chunks // spec.cores)

    @T.macro
    def parallel_panels_own_x(Xf, XTs, YT, data, indices, indptr, B, Yf):
        for t in T.parallel(spec.cores):
            transpose_rows(Xf, XTs, 0, m, m, k, t * k * m)
            for c in range(T.max(0, T.min(per_core, chunks - t * per_core))):
                chunk_all_panels(XTs, t * k * m, YT, 0, data, indices, indptr, B, Yf,
                                 (t * per_core + c) * chunk_rows)  # fmt: skip

    @T.macro
    def parallel_parts(Xf, XTs, YTs, data, indices, indptr, B, Yf):
        # one contiguous part of the m columns per core, in copies of XT and YT of its own
        for part in T.parallel(parts):
            lo = T.meta_var(part * m // parts)
            hi = T.meta_var((part + 1) * m // parts)
            xbase = T.meta_var(part * k * m if packed_in else 0)
            if packed_in:
                transpose_block(Xf, XTs, lo, hi - lo, 0, k, m, k, xbase, 0)
            for ch in range(chunks):
                for mt in range((hi - lo + MV - 1) // MV):
                    chunk_tile(XTs, xbase, YTs, part * n * m, data, indices, indptr, B,
                               ch * chunk_rows, T.min(lo + mt * MV, hi - MV))  # fmt: skip
            transpose_block(YTs, Yf, 0, n, lo, hi - lo, n, m, 0, part * n * m)

    @T.macro
    def body(Xf, data, indices, indptr, B, Yf):
        if parts > 0:
            YTs = T.alloc_buffer((parts * n * m,), "float32")
            if packed_in:
                XTs = T.alloc_buffer((parts * k * m,), "float32")
                parallel_parts(Xf, XTs, YTs, data, indices, indptr, B, Yf)
            else:
                parallel_parts(Xf, Xf, YTs, data, indices, indptr, B, Yf)
        elif npanels > 1:
            if packed_in:
                XTs = T.alloc_buffer((spec.cores * k * m,), "float32")
                YT = T.alloc_buffer((n * m,), "float32")
                parallel_panels_own_x(Xf, XTs, YT, data, indices, indptr, B, Yf)
            elif packed_out:
                YT = T.alloc_buffer((n * m,), "float32")
                parallel_panels(Xf, YT, data, indices, indptr, B, Yf)
            else:
                parallel_panels(Xf, Yf, data, indices, indptr, B, Yf)
        elif packed_in:
            XT = T.alloc_buffer((k * m,), "float32")
            YT = T.alloc_buffer((n * m,), "float32")
            transpose(Xf, XT, m, k)
            parallel_tiles(XT, YT, data, indices, indptr, B)
            transpose(YT, Yf, n, m)
        elif packed_out:
            YT = T.alloc_buffer((n * m,), "float32")
            parallel_tiles(Xf, YT, data, indices, indptr, B)
            transpose(YT, Yf, n, m)
        else:
            parallel_tiles(Xf, Yf, data, indices, indptr, B)

    return body
