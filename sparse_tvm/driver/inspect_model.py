"""``inspect_model``: the per-layer analysis of a model, without compiling it."""

from __future__ import annotations

import os

import onnx

from sparse_tvm.analysis import block_zero_fractions, choose_format
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.report import LayerReport, Report


def inspect_model(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    sparsity_threshold: float | None = None,
) -> Report:
    """Per layer: op, weight shape, sparsity, zero-block fractions and the format the compiler
    would pick (before measuring: the compiler keeps a sparse pick only if it is faster)."""
    from sparse_tvm.driver.compile_model import _model_name, analyse

    imported = import_onnx(model, input_shapes)
    rows = []
    for layer in analyse(imported):
        fractions = block_zero_fractions(layer.weight)
        if layer.sparse_capable:
            choice = choose_format(
                layer.weight,
                layer.m,
                sparsity_threshold=sparsity_threshold,
                zero_fractions=fractions,
            )
            label, reason = choice.label, choice.reason
            stored = (
                BlockSparseWeight.from_dense(layer.weight, choice.block).nbytes
                if choice.block
                else layer.weight.size * 4
            )
        else:
            label, reason, stored = "dense", layer.dense_reason, layer.weight.size * 4
        rows.append(
            LayerReport(
                name=layer.name,
                op=layer.op,
                weight_shape=list(layer.shape),
                m=layer.m * layer.batch,
                sparsity=layer.sparsity,
                zero_blocks=fractions,
                format=label,
                reason=reason,
                dense_bytes=layer.weight.size * 4,
                stored_bytes=int(stored),
            )
        )
    return Report(model=_model_name(model), target="(analysis only)", layers=rows)
