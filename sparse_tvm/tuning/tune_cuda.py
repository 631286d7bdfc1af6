"""Tune one CUDA SpMM kernel with MetaSchedule on this machine's GPU, and find tuned kernels.

The task is the layer's :func:`~sparse_tvm.tuning.space_cuda.workload` (shapes, fusion, a
digest of the sparsity structure, the space version), so a record applies to exactly the layer
it was measured on. The candidates are built by :class:`~sparse_tvm.tuning.space_cuda.
MaterializeBuild` and run by MetaSchedule's local runner on ``tvm.cuda()`` with the layer's real
``indices``/``indptr`` (:class:`~sparse_tvm.tuning.tune_kernel.RealSparsityArguments`); XGBoost
ranks them on :class:`~sparse_tvm.tuning.space_cuda.CudaKnobFeatures`. The records go into any
MetaSchedule database, e.g. a records folder's (``RecordStore(dir).database``), which
``compile --records DIR --target cuda`` reads through :func:`lookup_cuda_kernel` (a wrapper of
:func:`~sparse_tvm.tuning.lookup.find_record` that materialises the CUDA kernel).

Tuning needs a GPU; looking records up does not.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

import tvm
from tvm.s_tir import meta_schedule as ms

from ..errors import DeviceError, TuningError
from ..formats.block_sparse import BlockSparseWeight
from ..logs import tune_tir
from .lookup import find_record
from .space_cuda import (
    CudaKnobFeatures,
    MaterializeBuild,
    design_space,
    make_spec,
    materialize,
    workload,
)
from .tune_kernel import RealSparsityArguments

__all__ = [
    "CudaKernelRecord",
    "lookup_cuda_kernel",
    "tune_cuda_kernel",
]


@dataclass(frozen=True)
class CudaKernelRecord:
    """A tuned CUDA kernel: parameters as :func:`sparse_tvm.kernels.cuda.cuda_spmm_kernel`'s."""

    func: tvm.tirx.PrimFunc = field(repr=False)
    knobs: dict[str, int]
    latency_s: float | None  # mean of the record's measurements while tuning


def _task(weight: BlockSparseWeight, m: int, layer: dict) -> tuple[tvm.IRModule, object]:
    spec = make_spec(weight, m, **layer)
    return tvm.IRModule({"main": workload(weight, spec)}), spec


def lookup_cuda_kernel(
    weight: BlockSparseWeight,
    m: int,
    *,
    target: tvm.target.Target,
    database: ms.database.Database,
    **layer,
) -> CudaKernelRecord | None:
    """The best kernel tuned on exactly this layer for ``target``, or ``None``.

    ``layer``: ``x_layout``, ``batch``, ``bias``, ``relu`` as the kernels take them.
    """
    mod, spec = _task(weight, m, layer)
    found = find_record(database, mod, target)
    if found is None:
        return None
    func = materialize(mod["main"], knobs=found.knobs, spec=spec)
    return CudaKernelRecord(func, found.knobs, found.latency_s)


def tune_cuda_kernel(
    weight: BlockSparseWeight,
    m: int,
    *,
    target: tvm.target.Target,
    trials: int,
    database: ms.database.Database | None = None,
    work_dir: str | None = None,
    num_trials_per_iter: int = 16,
    **layer,
) -> CudaKernelRecord:
    """Search the CUDA space of this layer's SpMM kernel on the local GPU; the best kernel.

    ``layer`` as :func:`lookup_cuda_kernel`; ``database`` defaults to a JSON database in
    ``work_dir`` (a temporary folder when both are None). :class:`~sparse_tvm.errors.
    DeviceError` without a GPU, :class:`~sparse_tvm.errors.TuningError` when no candidate ran.
    """
    if not tvm.cuda(0).exist:
        raise DeviceError("no CUDA device: tuning CUDA kernels needs a GPU on this machine")
    mod, spec = _task(weight, m, layer)
    work_dir = work_dir or tempfile.mkdtemp(prefix="sparse_tvm_tune_cuda_")
    database = database or ms.database.JSONDatabase(work_dir=work_dir)
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=10)
    tune_tir(
        mod,
        target,
        work_dir,
        max_trials_global=trials,
        num_trials_per_iter=min(num_trials_per_iter, trials),
        space=design_space(spec),
        builder=ms.builder.LocalBuilder(f_build=MaterializeBuild(spec)),
        runner=ms.runner.LocalRunner(
            evaluator_config=evaluator, f_alloc_argument=RealSparsityArguments(weight)
        ),
        database=database,
        cost_model=ms.cost_model.XGBModel(extractor=CudaKnobFeatures()),
    )
    found = lookup_cuda_kernel(weight, m, target=target, database=database, **layer)
    if found is None:
        raise TuningError("no CUDA candidate ran: see the MetaSchedule logs in " + work_dir)
    return found
