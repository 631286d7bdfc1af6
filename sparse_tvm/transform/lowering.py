"""What :class:`~sparse_tvm.transform.DenseToSparse` asks of a back end: the lowering of one layer.

The pass owns the walk of ``main`` (finding each planned layer's end binding, visiting its
activation, rebinding the result, dead-code elimination); a :class:`LayerLowering` owns what
the layer becomes: the kernel PrimFunc(s), the weight constants and the Relax calls. So one pass
serves every back end: :class:`~sparse_tvm.transform.spmm_lowering.SpmmLowering` (im2col +
SpMM, int32 indices; CPU and CUDA kernels) and :class:`sparse_tvm.micro.lowering.MicroLowering`
(compact weights, direct sparse conv).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import tvm
from tvm import relax, s_tir

from sparse_tvm.analysis.layers import Layer
from sparse_tvm.kernels.attrs import HAND_WRITTEN_ATTR


@dataclass
class SparsePlan:
    """A layer to rewrite, its weight in the lowering's sparse format, and optionally the kernel.

    ``weight`` is whatever the lowering stores: a
    :class:`~sparse_tvm.formats.BlockSparseWeight` for
    :class:`~sparse_tvm.transform.spmm_lowering.SpmmLowering`, a
    :class:`~sparse_tvm.micro.compact.CompactSparseWeight` for the micro lowering. ``kernel`` (a
    PrimFunc with the signature of the lowering's default kernel, e.g. one applied from tuning
    records) replaces that default kernel where the lowering supports it. ``knobs`` (e.g.
    ``{"order": 1}``, a schedule variant the compiler measured faster) are passed to the
    default kernel's factory where no ``kernel`` is given.
    """

    layer: Layer
    weight: Any
    kernel: tvm.tirx.PrimFunc | None = None
    knobs: dict[str, int] | None = None


class LayerLowering(Protocol):
    """Turns one planned layer into kernel calls."""

    def lower(self, builder: relax.BlockBuilder, plan: SparsePlan, x: relax.Expr) -> relax.Expr:
        """Emit the calls of ``plan``'s layer reading the activation ``x`` (already visited).

        Kernels are added to the module with :func:`add_kernel`; intermediate values are emitted
        with ``builder``. Returns the layer's output expression, of the layer's output shape;
        the pass binds it where the layer's last op was bound.
        """
        ...


def sanitize(name: str) -> str:
    """``name`` as a C identifier part: every non-alphanumeric character becomes ``_``."""
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "layer"


def with_root_block(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """Wrap a loop-nest kernel in the root sblock that Relax's analyses (op-pattern and
    reshape detection, fusion, layout-rewrite splitting) expect of every ``call_tir`` callee."""
    if not isinstance(func.body, s_tir.SBlockRealize):
        root = s_tir.SBlock([], [], [], "root", func.body)
        func = func.with_body(s_tir.SBlockRealize([], True, root))
    return func


def add_kernel(
    builder: relax.BlockBuilder,
    func: tvm.tirx.PrimFunc,
    name: str,
    *,
    hand_written: bool = True,
) -> relax.GlobalVar:
    """Add a kernel to the module being built as ``name`` (its ``global_symbol`` too), with the
    root sblock; ``hand_written`` marks it with :data:`HAND_WRITTEN_ATTR` so that the dense
    schedule pipeline leaves it alone (the micro pipeline keys on ``tirx.is_scheduled``)."""
    func = with_root_block(func)
    if hand_written:
        func = func.with_attr(HAND_WRITTEN_ATTR, True)
    return builder.add_func(func.with_attr("global_symbol", name), name)


def tensor_type(shape, dtype: str = "float32") -> relax.TensorType:
    """The static Relax tensor type of a kernel's output."""
    return relax.TensorType([int(s) for s in shape], dtype)
