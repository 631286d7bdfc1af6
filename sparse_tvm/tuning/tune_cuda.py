"""Tune one CUDA SpMM kernel with MetaSchedule on this machine's GPU, and find tuned kernels.

The task is the layer's :func:`~sparse_tvm.tuning.space_cuda.workload` (shapes, fusion, a
digest of the sparsity structure, the space version), so a record applies to exactly the layer
it was measured on. The candidates are built by :class:`~sparse_tvm.tuning.space_cuda.
MaterializeBuild` and run by MetaSchedule's local runner on ``tvm.cuda()`` with the layer's real
``indices``/``indptr`` (:class:`~sparse_tvm.tuning.tune_kernel.RealSparsityArguments`); XGBoost
ranks them on :class:`~sparse_tvm.tuning.space_cuda.CudaKnobFeatures`. The records go into any
MetaSchedule database, e.g. a records folder's (``RecordStore(dir).database``), which
``compile --records DIR --target cuda`` reads through :func:`lookup_cuda_kernel`.

Tuning needs a GPU; looking records up does not.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms

from ..formats.block_sparse import BlockSparseWeight
from ..logs import tune_tir
from .space_cuda import (
    CudaKnobFeatures,
    MaterializeBuild,
    design_space,
    knobs_of,
    make_spec,
    materialize,
    workload,
)
from .tune_kernel import RealSparsityArguments

__all__ = [
    "CudaKernelRecord",
    "lookup_cuda_kernel",
    "tune_cuda_kernel",
    "tune_model_cuda",
    "with_cuda_record",
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
    record = database.query_tuning_record(mod, target, workload_name="main")
    if record is None:
        return None
    sch = tvm.s_tir.Schedule(record.workload.mod)  # what query_schedule would query again
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    knobs = knobs_of(sch.mod["main"])
    latency = float(np.mean([float(v) for v in record.run_secs])) if record.run_secs else None
    return CudaKernelRecord(materialize(mod["main"], knobs=knobs, spec=spec), knobs, latency)


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
    ``work_dir`` (a temporary folder when both are None). ``RuntimeError`` without a GPU or
    when no candidate ran.
    """
    if not tvm.cuda(0).exist:
        raise RuntimeError("no CUDA device: tuning CUDA kernels needs a GPU on this machine")
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
        raise RuntimeError("no CUDA candidate ran: see the MetaSchedule logs in " + work_dir)
    return found


def with_cuda_record(decision, target: tvm.target.Target, database: ms.database.Database):
    """``decision`` (a :class:`~sparse_tvm.driver.compile_model.LayerDecision`) with the kernel
    tuned for its layer and format in ``database``, when there is one; the reason says so."""
    import dataclasses

    from ..transform.dense_to_sparse import kernel_options

    if decision.weight is None or decision.kernel is not None:
        return decision
    layer = decision.layer
    found = lookup_cuda_kernel(
        decision.weight,
        layer.m,
        target=target,
        database=database,
        **kernel_options(layer),
    )
    if found is None:
        return decision
    tuned = "tuned kernel" + (f", {found.latency_s * 1e6:.0f} us" if found.latency_s else "")
    reason = f"{decision.choice.reason}; {tuned}"
    return dataclasses.replace(
        decision, kernel=found.func, choice=dataclasses.replace(decision.choice, reason=reason)
    )


def tune_model_cuda(
    model,
    target,
    records,
    *,
    trials: int,
    timeout: float | None = None,
    rpc_tracker: str | None = None,
    input_shapes=None,
    progress=None,
):
    """``sparse-tvm tune --target cuda``: on this machine's GPU, tune the kernel of each layer in
    the format the compiler picks for it (the cost model's: GPU records are kernels, not
    formats) into the ``records`` folder; returns a :class:`~sparse_tvm.driver.tune_model.
    TuneSummary`. ``target`` is a resolved cuda target; ``timeout`` (seconds) is checked
    between layers.
    """
    import time

    from ..analysis import block_zero_fractions
    from ..driver.compile_model import analyse, decide
    from ..driver.tune_model import CandidateResult, TuneSummary
    from ..errors import TargetError
    from ..frontend import import_onnx
    from ..transform.dense_to_sparse import kernel_options
    from .records import RecordStore, tuning_lock

    say = progress or (lambda _line: None)
    if rpc_tracker is not None:
        raise TargetError(
            "CUDA kernels are tuned on this machine's GPU, not over RPC: drop --rpc-tracker "
            "and run `sparse-tvm tune` on the GPU machine"
        )
    if not tvm.cuda(0).exist:
        raise TargetError(
            f"no CUDA device: tuning for {target.name} runs the candidates on a GPU of this "
            "machine; run `sparse-tvm tune` on the GPU machine"
        )
    with tuning_lock(records):  # one run writes a records folder at a time
        store = RecordStore(records)
        summary = TuneSummary(records=str(store.folder), measured_on=tvm.cuda(0).device_name)
        start = time.perf_counter()
        for layer in analyse(import_onnx(model, input_shapes)):
            if timeout is not None and time.perf_counter() - start > timeout:
                say("time is up: the remaining layers are left untuned")
                break
            decision = decide(
                layer, target, measure=False, zero_fractions=block_zero_fractions(layer.weight)
            )
            if decision.weight is None:
                continue
            say(f"{layer.name}: {decision.choice.label} ...")
            found = tune_cuda_kernel(
                decision.weight,
                layer.m,
                target=target.tvm_target,
                trials=trials,
                database=store.database,
                work_dir=str(store.folder),
                **kernel_options(layer),
            )
            tuned_us = None if found.latency_s is None else found.latency_s * 1e6
            summary.candidates.append(
                CandidateResult(layer.name, decision.choice.label, tuned_us, None, trials)
            )
        summary.seconds = time.perf_counter() - start
    return summary
