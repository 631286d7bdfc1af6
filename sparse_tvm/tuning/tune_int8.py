"""Tune the int8 16x4-block kernel of one layer with MetaSchedule (:mod:`.space_int8`).

The same search as the float kernels' (:func:`~sparse_tvm.tuning.tune_kernel.tune_kernel`):
XGBoost cost model on the knobs, evolutionary search, a rerun continuing an interrupted one,
candidates timed with the layer's real blocks (:class:`~.space_int8.Int8Arguments`), on the
host or on a board. At the end the best kernel and the hand-written one run back to back on
the same arguments; their outputs must be equal (the sums are exact). The compiler finds the
knobs with :func:`lookup_int8_kernel` (this structure's record, else one of a layer with the
same shapes).
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

from ..errors import TuningError
from ..kernels.spmm_int8 import Int8Blocks, Int8Spec
from .cross_build import CrossExport
from .lookup import find_record
from .records import measured_records
from .rpc import Board
from .space_int8 import (
    Int8Arguments,
    KnobFeatures,
    MaterializeBuild,
    MutateKnob,
    default_knobs,
    materialize,
    space_fn,
    workload,
)
from .tune_kernel import KernelRecord, TunedKernel, measure, measure_on_board, run_search

__all__ = ["lookup_int8_kernel", "tune_int8_kernel"]


def _module(spec: Int8Spec, blocks: Int8Blocks, target: tvm.target.Target) -> tvm.IRModule:
    from ..target.machine import num_cores

    return tvm.IRModule({"main": workload(spec, blocks, num_cores(target))})


def lookup_int8_kernel(
    blocks: Int8Blocks, spec: Int8Spec, *, target: tvm.target.Target, database
) -> KernelRecord | None:
    """The tuned int8 kernel of this layer in ``database``: its own record, else the knobs of
    the best record of a layer with the same spec but the block count; None without either."""
    mod = _module(spec, blocks, target)
    found = find_record(database, mod, target, same_shapes=True)
    if found is None or not {"m_tile", "order"} <= set(found.knobs):
        return None
    return KernelRecord.of(found, materialize(mod["main"], knobs=found.knobs, spec=spec))


def tune_int8_kernel(
    blocks: Int8Blocks,
    spec: Int8Spec,
    *,
    target: tvm.target.Target,
    trials: int,
    work_dir: str | None = None,
    database: ms.database.Database | None = None,
    board: Board | None = None,
    max_seconds: float | None = None,
    num_trials_per_iter: int = 16,
    seed: int | None = None,
    progress=None,
) -> TunedKernel:
    """Search the knobs of this layer's int8 kernel (``spec``, the ``blocks`` of its weight
    with their ISA); the best kernel and the hand-written one's latency. Parameters as
    :func:`~sparse_tvm.tuning.tune_kernel.tune_kernel`'s.

    Raises
    ------
    TuningError
        No candidate ran, or the best one's output differs from the hand-written kernel's.
    """
    if work_dir is None:
        work_dir = tempfile.mkdtemp(prefix="sparse_tvm_tune_")
    os.makedirs(work_dir, exist_ok=True)
    if database is None:
        database = ms.database.JSONDatabase(work_dir=work_dir)
    arguments = Int8Arguments(blocks, spec)
    evaluator = ms.runner.EvaluatorConfig(
        number=1, repeat=3, min_repeat_ms=20, enable_cpu_cache_flush=False
    )
    if board is not None:
        runner = board.runner(f_alloc_argument=arguments, evaluator_config=evaluator)
    else:
        runner = ms.runner.LocalRunner(evaluator_config=evaluator, f_alloc_argument=arguments)
    export = CrossExport(board.cross_compiler) if board is not None else None
    builder = ms.builder.LocalBuilder(f_build=MaterializeBuild(spec), f_export=export)
    mod = _module(spec, blocks, target)
    space = ms.space_generator.ScheduleFn(
        space_fn(spec), sch_rules=[], postprocs=[], mutator_probs={MutateKnob(): 1.0}
    )
    previous, tuning_s = run_search(
        mod, target, work_dir, trials=trials, database=database, builder=builder,
        runner=runner, space=space, extractor=KnobFeatures(), max_seconds=max_seconds,
        progress=progress, num_trials_per_iter=num_trials_per_iter, seed=seed,
        population_size=64,
    )  # fmt: skip
    best = find_record(database, mod, target)
    if best is None:
        raise TuningError(f"tuning measured no valid candidate (see the logs in {work_dir})")
    func = materialize(mod["main"], knobs=best.knobs, spec=spec)
    default = materialize(mod["main"], knobs=default_knobs(spec), spec=spec)
    args = arguments.arrays([info.as_json() for info in ArgInfo.from_prim_func(mod["main"])])
    if board is None:
        timed = [measure(default, args, target), measure(func, args, target)]
    else:
        timed = measure_on_board(board, [default, func], args, target)
    (default_s, expected), (latency_s, got) = timed
    if not np.array_equal(got, expected):
        raise TuningError(f"tuned int8 kernel {best.knobs} disagrees with the hand-written one")
    return TunedKernel(
        func=func,
        knobs=best.knobs,
        latency_s=latency_s,
        default_latency_s=default_s,
        tuning_s=tuning_s,
        trials=len(measured_records(database, mod, target)) - previous,
        workload=mod["main"],
        measured_on="host" if board is None else str(board),
    )
