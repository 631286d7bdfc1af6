"""sparse-tvm: a sparse compiler plugin for Apache TVM.

Prune a model, find the layers whose weights are sparse enough to gain, rewrite them into
sparse TIR kernels and compile the whole model with TVM::

    import sparse_tvm as st
    compiled = st.compile("model.onnx", target="x86")
    outputs = compiled.run({"x": x})
    print(compiled.report)
    compiled.export("model.tar"); again = st.load("model.tar")
"""

from __future__ import annotations

import os
from typing import Any

from sparse_tvm.target.host_cpu import host_num_cores

# TVM's thread pool assumes x86 cores are hyper-threaded and uses half of them unless told
# otherwise: on a 2-core machine without SMT every kernel ran on one core. Use the cores this
# process may run on, unless the user set TVM_NUM_THREADS (read when the pool first starts).
os.environ.setdefault("TVM_NUM_THREADS", str(host_num_cores()))

import onnx

from sparse_tvm.errors import (
    ArtefactError,
    CompileError,
    InputShapeError,
    ModelLoadError,
    SparseTVMError,
    TargetError,
)
from sparse_tvm.report import LayerReport, Report
from sparse_tvm.runtime import CompiledModel, InputCastWarning

__version__ = "0.1.0"

Model = str | os.PathLike | onnx.ModelProto


def compile(
    model: Model,
    target: str | dict = "x86",
    records: str | None = None,  # noqa: A001
    sparsity_threshold: float | None = None,
    dense: bool = False,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    measure: bool = True,
) -> CompiledModel:
    """Compile an ONNX model; layers go sparse only where that is measured faster.

    See :func:`sparse_tvm.driver.compile_model.compile_model` for the parameters.
    """
    from sparse_tvm.driver.compile_model import compile_model

    return compile_model(
        model,
        target,
        records=records,
        sparsity_threshold=sparsity_threshold,
        dense=dense,
        input_shapes=input_shapes,
        measure=measure,
    )


def load(path: str | os.PathLike) -> CompiledModel:
    """Load an artefact written by :meth:`CompiledModel.export`.

    An artefact holds native code: load only artefacts you trust, like any shared library.
    """
    from sparse_tvm.runtime import load_artefact

    return load_artefact(path)


def inspect(
    model: Model,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    sparsity_threshold: float | None = None,
) -> Report:
    """Per-layer analysis: op, weight shape, sparsity, block structure, format picked.

    ``model`` is an ONNX model (path or ``ModelProto``), or a compiled ``.tar`` artefact, whose
    stored report (with the measured latencies) is returned."""
    from sparse_tvm.driver.inspect_model import inspect_model

    return inspect_model(model, input_shapes=input_shapes, sparsity_threshold=sparsity_threshold)


def prune(
    model: Model,
    sparsity: float,
    pattern: str = "1x1",
    method: str = "magnitude",
    exclude=(),
    **training,
):
    """Prune the MatMul / Gemm / Conv weights of a model; see :func:`sparse_tvm.pruning.prune`."""
    from sparse_tvm.pruning import prune as _prune

    return _prune(model, sparsity, pattern, method=method, exclude=exclude, **training)


def tune(
    model: Model,
    target: str | dict = "x86",
    records: str = "records",
    trials: int = 64,
    timeout: float | None = None,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
):
    """Tune the sparse kernels of ``model`` into the ``records`` folder (MetaSchedule).

    ``compile(model, records=...)`` applies them. See :func:`sparse_tvm.driver.tune_model`.
    """
    from sparse_tvm.driver.tune_model import tune_model

    return tune_model(
        model,
        target,
        records,
        trials=trials,
        timeout=timeout,
        rpc_tracker=rpc_tracker,
        rpc_key=rpc_key,
        input_shapes=input_shapes,
    )


def targets() -> dict[str, Any]:
    """The target presets shipped in ``targets/``, by name."""
    from sparse_tvm.target import presets

    return dict(presets())


__all__ = [
    "ArtefactError",
    "CompileError",
    "CompiledModel",
    "InputCastWarning",
    "InputShapeError",
    "LayerReport",
    "ModelLoadError",
    "Report",
    "SparseTVMError",
    "TargetError",
    "compile",
    "inspect",
    "load",
    "targets",
]
