"""``inspect_model``: the per-layer analysis of a model, without compiling it."""

from __future__ import annotations

import os

import onnx

from sparse_tvm.analysis import analyse
from sparse_tvm.backends import backend_for
from sparse_tvm.decision import decide_layers
from sparse_tvm.driver.compile_model import model_name
from sparse_tvm.frontend import import_onnx
from sparse_tvm.options import CompileOptions
from sparse_tvm.report import ESTIMATED, Report


def inspect_model(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    sparsity_threshold: float | None = None,
) -> Report:
    """Per layer: op, weight shape, sparsity, zero-block fractions and the format the compiler
    would pick, every one ``estimated (cost model)`` (compiling also measures, and keeps a
    sparse pick only if it is faster). Layers are named by module path or ONNX node, with
    their weight initializer's name as the key.

    A compiled artefact (a path ending in ``.tar``) gives the report stored in it at compile
    time, with the measured latencies.
    """
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".tar"):
        from sparse_tvm.runtime import read_metadata

        return Report.from_dict(read_metadata(model).get("report", {}))
    backend = backend_for("x86")  # the cost model's pick, as for this machine
    imported = backend.prepare(import_onnx(model, input_shapes))
    options = CompileOptions(sparsity_threshold=sparsity_threshold, measure=False)
    _, rows = decide_layers(analyse(imported, gelu=backend.fuses_gelu), backend, options)
    notes = []
    if any(row.decided_by == ESTIMATED for row in rows):
        notes.append(
            "formats chosen by the cost model: inspect does not time layers "
            "(sparse-tvm compile measures each candidate against dense)"
        )
    return Report(model=model_name(model), target="(analysis only)", layers=rows, notes=notes)
