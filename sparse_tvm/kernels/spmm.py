"""Sparse weight x dense activation (SpMM) kernels for CPUs, written in TVMScript.

Notation: the weight ``W`` has shape ``(n, k)`` = (output features, input features), stored as
a :class:`~sparse_tvm.formats.BlockSparseWeight` with ``r x c`` blocks (``r`` output x ``c``
input features). The activations have ``m`` columns (tokens or pixels).

The kernels carry their x86 schedule in the loops themselves (``T.parallel``,
``T.vectorized``, ``T.unroll``, register accumulators), so they are marked
``tirx.is_scheduled`` and the dense scheduling passes (dlight ``ApplyDefaultSchedule``,
MetaSchedule task extraction) leave them alone. Four strategies, picked by
:func:`choose_strategy`:

``rowvec``  (``r >= 4``, rows of X along tokens: layout ``"MK"``, or ``"KM"`` with ``m == 1``;
    not for blocks a quarter vector wide or less at ``m >= 2 * VL``: those go ``colvec``)
    GEMM micro-kernel with a sparse K loop: ``MT`` rows of X x one block row of ``r``
    outputs held in ``MT`` vector registers; per nonzero block one vector load of the ``r``
    weights, ``MT`` broadcast FMAs. See :mod:`.spmm_rowvec`.
``colvec``  (``m >= 2`` and either layout ``"KM"`` or ``r < 4``)
    Vectorised along ``m``: per nonzero, ``MV / VL`` vector loads of an X row, one broadcast
    weight, FMAs into ``r x MV`` accumulators. ``"MK"`` inputs are first transposed into a
    ``(k, m)`` workspace. See :mod:`.spmm_colvec`. Also the only strategy of layout
    ``"KM_MK"`` (X read as ``(k, m)``, Y written as ``(m, n)``: a channels-last conv whose
    im2col wrote its columns transposed).
``sliced``  (1x1 or 1 x c blocks and ``m == 1``)
    A matrix-vector product over a weight in sliced ELLPACK order: one vector register holds
    the sums of ``VL`` rows, each step gathers X for one nonzero of each. See
    :mod:`.spmv_sliced`; on AVX-512 by default with the columns in chunks of 32, each step's X
    gathered by one permute of two registers (:mod:`.spmv_chunked`, knob ``chunk``).
``scalar``  (2- and 3-row blocks and ``m == 1``)
    One scalar dot product per output row; memory bound. See :mod:`.spmm_scalar`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm.script import tirx as T

from ..errors import InputShapeError
from ..formats.block_sparse import BlockSparseWeight
from ..formats.chunked_ell import chunked_steps
from ..formats.panels import panel_order
from ..formats.sliced_ell import sliced_steps
from ..target.machine import num_cores, vector_lanes
from .fast_gelu import gelu as gelu_expr

__all__ = [
    "SpmmSpec",
    "choose_strategy",
    "kernel_knobs",
    "spmm_arrays",
    "spmm_kernel",
    "spmm_spec",
    "structure_of",
    "vector_lanes",  # re-exported from sparse_tvm.target.machine, which owns it
    "wrap_kernel",
]

# "MK": X (m, k) rows, Y (m, n); "KM": X (batch, k, m), Y (batch, n, m); "KM_MK": X (k, m),
# Y (m, n); "DIRECT": X flat, a block's index is the offset of its X row, Y (1, n, m).
LAYOUTS = ("MK", "KM", "KM_MK", "DIRECT")

# Weights with at most this many stored values (nonzero blocks x r x c) carry their sparsity
# structure in their spec, for the fully unrolled kernel of small layers (spmm_unrolled).
MAX_UNROLLED_TERMS = 2048

# Implementation notes shared by the kernels: LowerTVMBuiltin turns every allocation inside a
# parallel loop into a TVMBackendAllocWorkspace call per iteration, except "global" ones of
# constant size under 1 KiB, which stay LLVM allocas that SROA/mem2reg promote to vector
# registers; so the register tiles are small "global" buffers. For the same reason scalars
# are bound with ``T.meta_var`` (inlined): ``x = expr`` in TVMScript 0.27 makes a one-element
# local buffer.


@dataclass(frozen=True)
class SpmmSpec:
    """Everything a SpMM kernel is specialised on (shapes, block, fusion, machine)."""

    n: int
    k: int
    r: int
    c: int
    n_data_blocks: int  # data.shape[0] (>= 1)
    m: int
    batch: int
    x_layout: str
    bias: bool
    relu: bool
    lanes: int  # float32 lanes of one vector register
    cores: int
    # "DIRECT": the float32 elements of the flat (padded) input X
    x_size: int = 0
    # ReLU6: after the ReLU, clamp at 6 (MobileNet-v2's Clip(0, 6)); only with relu
    relu6: bool = False
    # GELU (erf form) after the bias (a transformer's FFN up-projection); not with relu
    gelu: bool = False
    # (indptr, indices) of a small weight, for the fully unrolled kernel (spmm_unrolled);
    # None for larger ones. Not part of equality: kernels of other strategies ignore it.
    structure: tuple[tuple[int, ...], tuple[int, ...]] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def block_rows(self) -> int:
        return -(-self.n // self.r)

    @property
    def n_tail(self) -> int:
        """Rows of the last block row that exist (``r`` when ``n % r == 0``)."""
        return self.n - (self.block_rows - 1) * self.r

    @property
    def x_shape(self) -> tuple[int, ...]:
        if self.x_layout == "DIRECT":
            return (self.x_size,)
        if self.x_layout == "KM_MK":
            return (self.k, self.m)
        return (self.m, self.k) if self.x_layout == "MK" else (self.batch, self.k, self.m)

    @property
    def y_shape(self) -> tuple[int, ...]:
        if self.x_layout in ("KM", "DIRECT"):
            return (self.batch, self.n, self.m)
        return (self.m, self.n)

    @property
    def rows(self) -> int:
        """Rows of X seen as a row-major ``(rows, k)`` matrix (``MK``, or ``KM`` with m=1)."""
        return self.m if self.x_layout == "MK" else self.batch

    def epilogue(self, value, bias_buf, row):
        """``value`` (+ bias[row]) then ReLU (or ReLU6) or GELU, as TIR."""
        if self.bias:
            value = value + bias_buf[row]
        if self.gelu:
            value = gelu_expr(value)
        if self.relu:
            value = T.max(value, T.float32(0))
        if self.relu6:
            value = T.min(value, T.float32(6))
        return value


def choose_strategy(spec: SpmmSpec) -> str:
    """Pick ``"rowvec"``, ``"colvec"``, ``"sliced"`` or ``"scalar"`` for a kernel spec (see
    module doc)."""
    if spec.x_layout in ("KM_MK", "DIRECT"):
        return "colvec"
    row_major_x = spec.x_layout == "MK" or spec.m == 1
    # a block a quarter vector wide or less (4x1 on AVX-512): the row-vector kernel's 4-lane FMAs
    # are load bound; vectorised along m (X transposed into a workspace) it ran 1.5-8x faster
    # on 90 % 4x1 weights at m = 128-784 (BERT projections, NHWC 1x1 convs)
    narrow = spec.r * 4 <= spec.lanes and spec.x_layout == "MK" and spec.m >= 2 * spec.lanes
    if spec.r >= 4 and row_major_x and not narrow:
        return "rowvec"
    if spec.m >= 2:
        return "colvec"
    if spec.r == 1:
        return "sliced"
    return "scalar"


def wrap_kernel(
    spec: SpmmSpec, body, panels: int = 1, nptr: int | None = None, nidx: int | None = None
) -> tvm.tirx.PrimFunc:
    """Give a kernel body ``body(Xf, data, indices, indptr, B, Yf)`` its public signature.

    ``Xf`` and ``Yf`` are flat aliases of X and Y so that one body serves both layouts.
    ``panels``: the K panels of a body that reads the weight in
    :mod:`~sparse_tvm.formats.panels` order (``indptr`` of ``panels * block_rows + 1``);
    ``nptr``: the entries of an ``indptr`` of another kind (the sliced kernel's); ``nidx``:
    of ``indices`` where they are not one per data block (the chunked kernel's packed bytes).
    """
    x_shape, y_shape = spec.x_shape, spec.y_shape
    x_size = spec.x_size if spec.x_layout == "DIRECT" else spec.batch * spec.k * spec.m
    y_size = spec.batch * spec.n * spec.m
    d_shape = (spec.n_data_blocks, spec.c, spec.r)
    nnzb, n = spec.n_data_blocks, spec.n
    nptr = panels * spec.block_rows + 1 if nptr is None else nptr
    nidx = nnzb if nidx is None else nidx
    attrs = {"tirx.is_scheduled": True, "tirx.noalias": True}
    if spec.bias:

        @T.prim_func
        def spmm(
            X: T.Buffer(x_shape, "float32"),
            data: T.Buffer(d_shape, "float32"),
            indices: T.Buffer((nidx,), "int32"),
            indptr: T.Buffer((nptr,), "int32"),
            bias: T.Buffer((n,), "float32"),
            Y: T.Buffer(y_shape, "float32"),
        ):
            T.func_attr(attrs)
            Xf = T.decl_buffer((x_size,), "float32", data=X.data)
            Yf = T.decl_buffer((y_size,), "float32", data=Y.data)
            body(Xf, data, indices, indptr, bias, Yf)

    else:

        @T.prim_func
        def spmm(
            X: T.Buffer(x_shape, "float32"),
            data: T.Buffer(d_shape, "float32"),
            indices: T.Buffer((nidx,), "int32"),
            indptr: T.Buffer((nptr,), "int32"),
            Y: T.Buffer(y_shape, "float32"),
        ):
            T.func_attr(attrs)
            Xf = T.decl_buffer((x_size,), "float32", data=X.data)
            Yf = T.decl_buffer((y_size,), "float32", data=Y.data)
            body(Xf, data, indices, indptr, None, Yf)

    return spmm


def spmm_spec(
    weight: BlockSparseWeight,
    m: int,
    *,
    x_layout: str = "MK",
    batch: int = 1,
    bias: bool = False,
    relu: bool = False,
    target: tvm.target.Target | None = None,
    x_size: int = 0,
    relu6: bool = False,
    gelu: bool = False,
) -> SpmmSpec:
    """Everything :func:`spmm_kernel` specialises on, checked (parameters as there)."""
    if x_layout not in LAYOUTS:
        raise ValueError(f"x_layout must be one of {', '.join(LAYOUTS)}, got {x_layout!r}")
    if x_layout == "DIRECT" and (weight.block[1] != 1 or x_size < 1):
        raise ValueError(
            "x_layout 'DIRECT' takes r x 1 blocks (one input element offset per block) and "
            f"the flat input's x_size, got block {weight.block} and x_size={x_size}"
        )
    if x_layout != "KM" and batch != 1:
        raise ValueError(f"x_layout {x_layout!r} takes batch == 1 (fold the batch into m)")
    if relu6 and not relu:
        raise ValueError("relu6 clamps a ReLU's output: it takes relu=True")
    if gelu and relu:
        raise ValueError("the epilogue ends in a ReLU or a GELU, not both")
    if m < 1 or batch < 1:
        raise InputShapeError(
            f"a sparse layer's output is empty (m={m}, batch={batch}): the input shape is too "
            "small for the model; give a larger one"
        )
    n, k = weight.shape
    r, c = weight.block
    return SpmmSpec(
        n=n,
        k=k,
        r=r,
        c=c,
        n_data_blocks=int(weight.data.shape[0]),
        m=int(m),
        batch=int(batch),
        x_layout=x_layout,
        bias=bool(bias),
        relu=bool(relu),
        lanes=vector_lanes(target),
        cores=num_cores(target),
        x_size=int(x_size) if x_layout == "DIRECT" else 0,
        relu6=bool(relu6),
        gelu=bool(gelu),
        structure=structure_of(weight),
    )


def structure_of(weight: BlockSparseWeight) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(indptr, indices)`` of a weight small enough for the unrolled kernel, else None."""
    r, c = weight.block
    if weight.nnz_blocks * r * c > MAX_UNROLLED_TERMS:
        return None
    indptr = tuple(int(v) for v in weight.indptr)
    return indptr, tuple(int(v) for v in weight.indices[: indptr[-1]])


def spmm_kernel(
    weight: BlockSparseWeight,
    m: int,
    *,
    x_layout: str = "MK",
    batch: int = 1,
    bias: bool = False,
    relu: bool = False,
    target: tvm.target.Target | None = None,
    x_size: int = 0,
    relu6: bool = False,
    gelu: bool = False,
    knobs: Mapping[str, int] | None = None,
) -> tvm.tirx.PrimFunc:
    """Build a SpMM kernel specialised on the shapes of ``weight`` and on ``m``.

    Parameters
    ----------
    weight : BlockSparseWeight
        The sparse ``(n, k)`` weight. The kernel reads ``data``/``indices``/``indptr`` as
        arguments, in the order :func:`spmm_arrays` gives them for the same arguments (K
        panels: another ``indptr``): it is specialised on their shapes, block shape and
        ``n``/``k`` only, not on their values.
    m : int
        Columns of the activations (tokens or pixels).
    x_layout : {"MK", "KM", "KM_MK"}
        ``"MK"`` (a MatMul, ``batch`` must be 1): X is ``(m, k)``, Y is ``(m, n)``,
        ``Y = X @ W.T``. ``"KM"`` (a 1x1 conv in NCHW or an im2col output): X is
        ``(batch, k, m)``, Y is ``(batch, n, m)``, ``Y[b] = W @ X[b]``. ``"KM_MK"`` (a
        channels-last conv after :func:`~sparse_tvm.kernels.im2col.im2col_nhwc_columns_kernel`,
        ``batch`` must be 1): X is ``(k, m)``, Y is ``(m, n)``, ``Y = (W @ X).T``.
        ``"DIRECT"`` (a stride-1 conv read straight from its padded input, see
        :mod:`~sparse_tvm.kernels.direct_conv`; r x 1 blocks, ``batch`` 1): X is flat
        (``x_size`` floats), ``indices`` hold element offsets rather than columns, and
        ``Y[0, i, j] = sum_b data[b] * X[indices[b] + j]`` over the nonzero blocks ``b`` of
        row ``i``.
    batch : int
        Leading dimension of X and Y for ``"KM"``.
    bias : bool
        Add a float32 ``bias[n]`` (per output feature) parameter.
    relu : bool
        Apply ReLU after the bias.
    target : tvm.target.Target, optional
        Used for the vector width (AVX-512: 16 lanes, AVX2: 8) and ``num-cores``.
    x_size : int
        ``"DIRECT"`` only: the elements of the flat X.
    relu6 : bool
        Clamp the ReLU's output at 6 (ReLU6); takes ``relu``.
    gelu : bool
        Apply GELU (erf form, :mod:`.fast_gelu`) after the bias; not with ``relu``.
    knobs : mapping, optional
        Overrides of the hand-picked knobs of the row- or column-vector or sliced kernel, by
        field name (:class:`~.spmm_rowvec.RowvecKnobs`, :class:`~.spmm_colvec.ColvecKnobs`,
        :class:`~.spmv_sliced.SlicedKnobs`), e.g. ``{"order": 1}``: the schedule variants the
        compiler times against each other. The scalar and unrolled kernels have no such knobs
        and ignore them.

    Returns
    -------
    tvm.tirx.PrimFunc
        Parameters ``X, data, indices, indptr, [bias], Y`` (all buffers, in that order),
        attribute ``tirx.is_scheduled = True`` and no ``global_symbol`` (set it with
        ``func.with_attr("global_symbol", name)``).
    """
    from .spmm_colvec import colvec_body, panels_of

    spec, strategy, chosen = _resolve(
        weight, m, x_layout=x_layout, batch=batch, bias=bias, relu=relu, target=target,
        x_size=x_size, relu6=relu6, gelu=gelu, knobs=knobs,
    )  # fmt: skip
    if strategy == "unrolled":  # small layer: straight-line code on one thread
        from .spmm_unrolled import unrolled_body

        return wrap_kernel(spec, unrolled_body(spec))
    if strategy == "scalar":
        from .spmm_scalar import scalar_body

        return wrap_kernel(spec, scalar_body(spec))
    if strategy == "sliced" and chosen.chunk:
        from .spmv_chunked import chunked_body, chunked_sizes

        nidx, nptr = chunked_sizes(spec, spec.n_data_blocks // spec.lanes)
        return wrap_kernel(spec, chunked_body(spec, nidx), nptr=nptr, nidx=nidx)
    if strategy == "sliced":
        from .spmv_sliced import sliced_body, sliced_indptr_size

        return wrap_kernel(spec, sliced_body(spec), nptr=sliced_indptr_size(spec))
    if strategy == "rowvec":
        from .spmm_rowvec import rowvec_body

        return wrap_kernel(spec, rowvec_body(spec, chosen))
    return wrap_kernel(spec, colvec_body(spec, chosen), panels_of(spec, chosen))


def spmm_arrays(
    weight: BlockSparseWeight,
    m: int,
    *,
    knobs: Mapping[str, int] | None = None,
    **options,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, indices, indptr)`` as the kernel :func:`spmm_kernel` builds for the same
    arguments reads them: the weight's own arrays, in K-panelled order
    (:func:`~sparse_tvm.formats.panels.panel_order`) for a column-vector kernel with
    panels, or in sliced ELLPACK order (:func:`~.spmv_sliced.sliced_arrays`) for the sliced
    kernel."""
    spec, strategy, chosen = _resolve(weight, m, knobs=knobs, **options)
    if strategy == "sliced" and chosen.chunk:
        from .spmv_chunked import chunked_arrays

        return chunked_arrays(weight, chosen.window)
    if strategy == "sliced":
        from .spmv_sliced import sliced_arrays

        return sliced_arrays(weight, spec.lanes, chosen)
    if strategy != "colvec" or chosen.panel < 1:
        return weight.data, weight.indices, weight.indptr
    return panel_order(weight, chosen.panel)


def kernel_knobs(weight: BlockSparseWeight, m: int, **options):
    """The strategy and the default knobs of the kernel :func:`spmm_kernel` builds without
    ``knobs`` (None for the strategies that have none)."""
    _, strategy, chosen = _resolve(weight, m, **options)
    return strategy, chosen


def _resolve(weight: BlockSparseWeight, m: int, *, knobs=None, **options):
    """``(spec, strategy, knobs)`` of :func:`spmm_kernel`'s arguments: ``"unrolled"`` for a
    small layer, else :func:`choose_strategy`'s; the strategy's default knobs with the
    overrides of ``knobs`` (None for the unrolled and scalar kernels). The sliced kernel's
    spec is that of the weight's elements (1x1) in its padded slices."""
    from .spmm_colvec import default_colvec_knobs
    from .spmm_rowvec import default_rowvec_knobs
    from .spmm_unrolled import unroll_eligible
    from .spmv_sliced import default_sliced_knobs

    spec = spmm_spec(weight, m, **options)
    if unroll_eligible(spec):
        return spec, "unrolled", None
    strategy = choose_strategy(spec)
    if strategy == "scalar":
        return spec, strategy, None
    defaults = {
        "rowvec": default_rowvec_knobs,
        "colvec": default_colvec_knobs,
        "sliced": default_sliced_knobs,
    }[strategy]
    chosen = defaults(spec)
    if knobs:
        unknown = sorted(set(knobs) - {f.name for f in dataclasses.fields(chosen)})
        if unknown:
            raise ValueError(f"the {strategy} kernel has no knobs {unknown}")
        chosen = dataclasses.replace(chosen, **knobs)
    if strategy == "sliced":  # it reads the weight element by element, 1x1
        from .spmv_chunked import ALIGN, CHUNK, LANES

        if chosen.chunk not in (0, CHUNK) or (chosen.chunk and spec.lanes != LANES):
            raise ValueError(
                f"the sliced kernel takes chunk 0, or {CHUNK} on AVX-512 (16 lanes); "
                f"got chunk {chosen.chunk} at {spec.lanes} lanes"
            )
        if chosen.chunk:
            steps = chunked_steps(weight, spec.lanes, chosen.window, chosen.chunk, ALIGN)
        else:
            steps = sliced_steps(weight, spec.lanes, chosen.window)
        spec = dataclasses.replace(spec, c=1, n_data_blocks=steps * spec.lanes)
    return spec, strategy, chosen
