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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sparse_tvm.target.host_cpu import host_num_cores

# TVM's thread pool assumes x86 cores are hyper-threaded and uses half of them unless told
# otherwise: on a 2-core machine without SMT every kernel ran on one core. Use the cores this
# process may run on, unless the user set TVM_NUM_THREADS (read when the pool first starts).
os.environ.setdefault("TVM_NUM_THREADS", str(host_num_cores()))
# TVM pins each worker thread of its pool to a core but leaves the calling thread free; the
# scheduler then at times runs the caller on a worker's core, and every parallel kernel takes
# as long as on one core, in phases lasting seconds (a 95 % sparse BERT-base layer on 2 cores:
# 1.9 ms, then 3.7-4.4 ms for tens of seconds, in the same process). Unpinned, the same run
# stayed at 1.85-2.2 ms: leave thread placement to the scheduler unless the user chose.
os.environ.setdefault("TVM_BIND_THREADS", "0")

import onnx

from sparse_tvm.errors import (
    EXIT_STATUS,
    ArtefactError,
    CompileError,
    DeviceError,
    InputShapeError,
    MicroBudgetError,
    ModelLoadError,
    OutputError,
    QuantizationError,
    RecordsError,
    SparseTVMError,
    TargetError,
    ToolchainError,
    TrainingError,
    TuningError,
    UsageError,
)
from sparse_tvm.kernels.macro_lookup import install_fast_macro_lookup
from sparse_tvm.options import CompileOptions
from sparse_tvm.report import LayerReport, Report
from sparse_tvm.runtime import CompiledModel, InputCastWarning

if TYPE_CHECKING:
    from sparse_tvm.driver.tune_model import TuneSummary
    from sparse_tvm.micro import MicroProject
    from sparse_tvm.pruning import PruneResult

# Kernel builds spend most of their time finding TVMScript's parser otherwise (see the module).
install_fast_macro_lookup()

__version__ = "0.1.0"

Model = str | os.PathLike | onnx.ModelProto


def compile(  # noqa: A001 - the verb users expect, as tvm.compile
    model: Model,
    target: str | dict = "x86",
    options: CompileOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    **settings: Any,
) -> CompiledModel | MicroProject:
    """Compile an ONNX model; layers go sparse only where that is measured faster.

    ``target`` is a preset name (``sparse-tvm targets``) or a TVM target as JSON. Settings are
    :class:`CompileOptions` fields, as an object or as keywords (``records=``,
    ``sparsity_threshold=``, ``dense=``, ``input_shapes=``, ``measure=``, ``output=``,
    ``report=``, ...). ``progress`` is called with one line per stage and per layer.

    Returns a :class:`CompiledModel` for a Linux target (also written to ``output`` as a
    ``.tar`` when given), and for a microcontroller (``cortex-m4``, ...) the C project
    written to ``output`` (:class:`sparse_tvm.micro.MicroProject`).
    """
    from sparse_tvm.driver.compile_model import compile_model

    return compile_model(model, target, CompileOptions.of(options, **settings), progress=progress)


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
    **training: Any,
) -> PruneResult:
    """Prune the MatMul / Gemm / Conv weights of a model; see :func:`sparse_tvm.pruning.prune`.

    Returns the pruned model (``.model``) and its report (``.report``)."""
    from sparse_tvm.pruning import prune as _prune

    return _prune(model, sparsity, pattern, method=method, exclude=exclude, **training)


def quantize(
    model: Model,
    data: Any,
    *,
    per_channel: bool = False,
    exclude=(),
    activations: str = "uint8",
) -> onnx.ModelProto:
    """Static int8 quantization (QDQ) calibrated on ``data``; pruned zeros stay exactly zero.

    See :func:`sparse_tvm.quantization.quantize`: ``data`` is an ``.npz`` path or arrays by
    input name (first axis: samples); ``exclude`` names weights or layers left in float32.
    """
    from sparse_tvm.quantization import quantize as _quantize

    return _quantize(model, data, per_channel=per_channel, exclude=exclude, activations=activations)


def tune(
    model: Model,
    target: str | dict = "x86",
    records: str = "records",
    trials: int = 64,
    timeout: float | None = None,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    status: Callable[[str], None] | None = None,
) -> TuneSummary:
    """Tune the sparse kernels of ``model`` into the ``records`` folder (MetaSchedule).

    ``compile(model, records=...)`` applies them. See :func:`sparse_tvm.driver.tune_model`;
    ``progress`` gets each line worth keeping, ``status`` the progress line after each batch.
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
        progress=progress,
        status=status,
    )


def write_html(report: Report, path: str | os.PathLike) -> None:
    """Write ``report`` as one self-contained HTML page (whole or not at all)."""
    from sparse_tvm.report_html import write_html as _write_html

    _write_html(report, path)


def check_html_path(path: str | os.PathLike) -> None:
    """Refuse, in one line, a path :func:`write_html` could not write (before long work)."""
    from sparse_tvm.report_html import check_report_path

    check_report_path(path)


def targets() -> dict[str, Any]:
    """The target presets shipped in ``targets/``, by name."""
    from sparse_tvm.target import presets

    return dict(presets())


__all__ = [
    "EXIT_STATUS",
    "ArtefactError",
    "CompileError",
    "CompileOptions",
    "CompiledModel",
    "DeviceError",
    "InputCastWarning",
    "InputShapeError",
    "LayerReport",
    "MicroBudgetError",
    "ModelLoadError",
    "OutputError",
    "QuantizationError",
    "RecordsError",
    "Report",
    "SparseTVMError",
    "TargetError",
    "ToolchainError",
    "TrainingError",
    "TuningError",
    "UsageError",
    "check_html_path",
    "compile",
    "inspect",
    "load",
    "prune",
    "quantize",
    "targets",
    "tune",
    "write_html",
]
