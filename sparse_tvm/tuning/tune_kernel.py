"""Tune one SpMM kernel with MetaSchedule (XGBoost cost model, evolutionary search).

The tuning task is the layer's :func:`~sparse_tvm.tuning.space_x86.workload`; its key in the
database covers the shapes, the fusion, the target's vector width and core count and a digest of
the sparsity structure, so a record applies to exactly the layer it was measured on. Candidates
are measured with the layer's real ``indices``/``indptr`` (random index data would read out of
bounds): :class:`RealSparsityArguments` is the runners' ``f_alloc_argument``.

On a board (``board=``, :class:`~sparse_tvm.tuning.rpc.Board`) the candidates are built on this
host, linked with the board's cross compiler (:class:`~sparse_tvm.tuning.cross_build.CrossExport`)
and measured on the board through the RPC tracker; so are the best and the hand-written kernel
at the end, whose outputs on the board must agree.

A rerun continues an interrupted run (:mod:`~sparse_tvm.tuning.search`). The compiler finds
the tuned kernels with :func:`lookup_kernel`, a wrapper of :func:`~sparse_tvm.tuning.lookup.
find_record` that materialises the kernel in this space.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..errors import TuningError
from ..formats.block_sparse import BlockSparseWeight
from ..kernels.spmm import SpmmSpec, kernel_knobs, spmm_arrays, spmm_kernel
from ..logs import tune_tir
from .cross_build import CrossExport
from .lookup import find_record
from .records import measured_records, structure_digest
from .rpc import Board, time_remote
from .search import ContinueFromRecords
from .space_x86 import (
    KnobFeatures,
    MaterializeBuild,
    MutateKnob,
    default_knobs,
    knobs_fit,
    make_spec,
    materialize,
    space_fn,
    supports,
    workload,
)

__all__ = [
    "KernelRecord",
    "NoTuningSpaceError",
    "RealSparsityArguments",
    "TunedKernel",
    "kernel_with_knobs",
    "lookup_kernel",
    "run_search",
    "tune_kernel",
]


class NoTuningSpaceError(TuningError, ValueError):
    """The layer's kernel has no search space (``m == 1`` with narrow blocks: the scalar
    kernel of a shape the space leaves out). A ``ValueError`` too, as it always was: a caller
    that tunes every candidate of a model skips this one."""


@dataclass(frozen=True)
class TunedKernel:
    """The result of :func:`tune_kernel`.

    Attributes
    ----------
    func : tvm.tirx.PrimFunc
        The best kernel: parameters ``X, data, indices, indptr, [bias], Y`` like
        :func:`sparse_tvm.kernels.spmm_kernel`'s, ``tirx.is_scheduled``, no ``global_symbol``.
    knobs : dict[str, int]
        Its knob values (see :mod:`sparse_tvm.kernels.spmm_rowvec` / ``spmm_colvec``).
    latency_s, default_latency_s : float
        Median seconds of the tuned and of the hand-written kernel, measured back to back with
        the layer's real structure, in this process or on the board (``measured_on``).
    tuning_s : float
        Wall time of the MetaSchedule search.
    trials : int
        Candidates measured (this call's records in the database).
    """

    func: tvm.tirx.PrimFunc = field(repr=False)
    knobs: dict[str, int]
    latency_s: float
    default_latency_s: float
    tuning_s: float
    trials: int
    workload: tvm.tirx.PrimFunc = field(repr=False)
    measured_on: str = "host"

    @property
    def speedup(self) -> float:
        """Hand-written latency / tuned latency."""
        return self.default_latency_s / self.latency_s if self.latency_s > 0 else 0.0


class RealSparsityArguments:
    """``f_alloc_argument`` for MetaSchedule runners: the layer's real ``data``, ``indices``,
    ``indptr``; random activations and bias. Picklable (runs in the runner's worker, local or
    remote)."""

    def __init__(self, weight: BlockSparseWeight, seed: int = 0) -> None:
        self.data = np.ascontiguousarray(weight.data, np.float32)
        self.indices = np.ascontiguousarray(weight.indices, np.int32)
        self.indptr = np.ascontiguousarray(weight.indptr, np.int32)
        self.seed = seed

    def __call__(self, device, args_info, alloc_repeat: int) -> list[list]:
        rng = np.random.default_rng(self.seed)
        repeated = []
        for _ in range(alloc_repeat):
            args = []
            for index, info in enumerate(args_info):
                _, dtype, shape = info  # ("TENSOR", dtype, shape)
                if index == 1:
                    value = self.data
                elif index == 2:
                    value = self.indices
                elif index == 3:
                    value = self.indptr
                else:
                    value = rng.standard_normal(tuple(shape)).astype(dtype)
                args.append(tvm.runtime.tensor(value, device=device))
            repeated.append(args)
        return repeated


@derived_object
class _StopAfter(ms.measure_callback.PyMeasureCallback):
    """Terminate the task once ``max_seconds`` have passed (checked after each batch)."""

    def __init__(self, max_seconds: float) -> None:
        self.deadline = time.monotonic() + max_seconds

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        if time.monotonic() > self.deadline:
            task_scheduler.terminate_task(task_id)


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """Report ``(trials measured, best seconds so far)`` after each measured batch."""

    def __init__(self, report) -> None:
        self.report = report
        self.trials = 0
        self.best: float | None = None

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        for result in runner_results:
            self.trials += 1
            if result.error_msg is None and result.run_secs:
                secs = float(np.mean([float(v) for v in result.run_secs]))
                self.best = secs if self.best is None else min(self.best, secs)
        self.report(self.trials, self.best)


def _tuning_module(weight: BlockSparseWeight, spec: SpmmSpec) -> tvm.IRModule:
    return tvm.IRModule({"main": workload(spec, structure_digest(weight))})


def _space(spec: SpmmSpec) -> ms.space_generator.ScheduleFn:
    return ms.space_generator.ScheduleFn(
        space_fn(spec),
        sch_rules=[],
        postprocs=[],
        mutator_probs={MutateKnob(): 0.7, ms.mutator.MutateTileSize(): 0.3},
    )


@dataclass(frozen=True)
class KernelRecord:
    """A tuned kernel found in a database for a layer (see :func:`lookup_kernel`)."""

    func: tvm.tirx.PrimFunc = field(repr=False)
    knobs: dict[str, int]
    latency_s: float | None  # as measured while tuning (on the record's own structure)
    exact: bool  # tuned on this very sparsity structure, not only the same shapes

    @classmethod
    def of(cls, found, func: tvm.tirx.PrimFunc) -> KernelRecord:
        """The record ``found`` (a :class:`~.lookup.FoundRecord`) with its kernel ``func``."""
        return cls(func=func, knobs=found.knobs, latency_s=found.latency_s, exact=found.exact)


def lookup_kernel(
    weight: BlockSparseWeight,
    m: int,
    *,
    x_layout: str = "MK",
    batch: int = 1,
    bias: bool = False,
    relu: bool = False,
    relu6: bool = False,
    gelu: bool = False,
    target: tvm.target.Target,
    database: ms.database.Database,
) -> KernelRecord | None:
    """The best record for this layer: tuned on the same sparsity structure if there is one,
    else the knobs of the best record tuned on a layer with the same shapes, block, layout,
    fusion and machine (the knobs do not depend on where the nonzeros are); ``None`` when
    there is neither (or the layer's kernel has no search space).
    """
    spec = make_spec(
        weight, m, x_layout=x_layout, batch=batch, bias=bias, relu=relu, relu6=relu6,
        gelu=gelu, target=target,
    )  # fmt: skip
    if not supports(spec):
        return None
    mod = _tuning_module(weight, spec)
    found = find_record(database, mod, target, same_shapes=True)
    if found is None or not knobs_fit(spec, found.knobs):  # another kernel's record: stale
        return None
    return KernelRecord.of(found, materialize(mod["main"], knobs=found.knobs, spec=spec))


def kernel_with_knobs(
    weight: BlockSparseWeight,
    m: int,
    knobs: dict[str, int],
    *,
    x_layout: str = "MK",
    batch: int = 1,
    bias: bool = False,
    relu: bool = False,
    relu6: bool = False,
    gelu: bool = False,
    target: tvm.target.Target,
) -> tvm.tirx.PrimFunc:
    """The kernel of this layer with the given knob values (e.g. a :class:`TunedKernel`'s)."""
    spec = make_spec(
        weight, m, x_layout=x_layout, batch=batch, bias=bias, relu=relu, relu6=relu6,
        gelu=gelu, target=target,
    )  # fmt: skip
    return materialize(_tuning_module(weight, spec)["main"], knobs=knobs, spec=spec)


def _inputs(weight: BlockSparseWeight, spec: SpmmSpec, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(spec.x_shape).astype(np.float32)]
    args += [weight.data, weight.indices, weight.indptr]
    if spec.bias:
        args.append(rng.standard_normal(spec.n).astype(np.float32))
    args.append(np.zeros(spec.y_shape, np.float32))
    return args


def measure(
    func: tvm.tirx.PrimFunc,
    args: list[np.ndarray],
    target: tvm.target.Target,
    *,
    repeat: int = 7,
    min_repeat_ms: int = 40,
) -> tuple[float, np.ndarray]:
    """Median seconds of ``func`` on ``args`` and its output."""
    rt = tvm.compile(func.with_attr("global_symbol", "main"), target).jit()
    tensors = [tvm.runtime.tensor(a) for a in args]
    rt["main"](*tensors)
    out = tensors[-1].numpy()
    timer = rt.time_evaluator(
        "main", tvm.cpu(), number=1, repeat=repeat, min_repeat_ms=min_repeat_ms
    )
    return float(np.median(timer(*tensors).results)), out


def measure_on_board(
    board: Board,
    funcs: list[tvm.tirx.PrimFunc],
    args: list[np.ndarray],
    target: tvm.target.Target,
    *,
    repeat: int = 5,
) -> list[tuple[float, np.ndarray]]:
    """:func:`measure` of each of ``funcs`` on the board, in one RPC session."""
    session = board.session()
    device = session.cpu()
    results = []
    for index, func in enumerate(funcs):
        executable = tvm.compile(func.with_attr("global_symbol", "main"), target)
        module = board.load(session, executable, f"kernel{index}.so")
        tensors = [tvm.runtime.tensor(a, device) for a in args]
        module["main"](*tensors)
        out = tensors[-1].numpy()
        results.append((time_remote(module, "main", device, tensors, repeat=repeat), out))
    return results


def run_search(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    work_dir: str,
    *,
    trials: int,
    database: ms.database.Database,
    builder: ms.builder.Builder,
    runner: ms.runner.Runner,
    space: ms.space_generator.SpaceGenerator,
    extractor: ms.feature_extractor.FeatureExtractor,
    max_seconds: float | None = None,
    progress=None,
    num_trials_per_iter: int = 16,
    seed: int | None = None,
    population_size: int = 128,
) -> tuple[int, float]:
    """The MetaSchedule search of one knob space's workload ``mod`` (XGBoost on the space's
    features, evolutionary search); a rerun continues an interrupted one: the budget counts
    the records already there, the cost model starts from them, and recorded schedules are
    not measured again. Returns the records there were before and the search's seconds."""
    callbacks = list(ms.measure_callback.MeasureCallback.create("default"))
    if max_seconds is not None:
        callbacks.append(_StopAfter(max_seconds))
    if progress is not None:
        callbacks.append(_Progress(progress))
    previous = len(measured_records(database, mod, target))
    remaining = trials - previous
    start = time.perf_counter()
    if remaining > 0:
        strategy = ContinueFromRecords(
            ms.search_strategy.EvolutionarySearch(
                population_size=population_size,
                init_min_unmeasured=population_size // 4,
                genetic_num_iters=3,
            )
        )
        tune_tir(
            mod,
            target,
            work_dir,
            max_trials_global=remaining,
            num_trials_per_iter=min(num_trials_per_iter, remaining),
            builder=builder,
            runner=runner,
            database=database,
            cost_model=ms.cost_model.XGBModel(extractor=extractor, adaptive_training=True),
            measure_callbacks=callbacks,
            task_scheduler="round-robin",
            space=space,
            strategy=strategy,
            seed=seed,
        )
    return previous, time.perf_counter() - start


def tune_kernel(
    weight: BlockSparseWeight,
    m: int,
    *,
    x_layout: str = "MK",
    batch: int = 1,
    bias: bool = False,
    relu: bool = False,
    relu6: bool = False,
    gelu: bool = False,
    target: tvm.target.Target,
    trials: int,
    work_dir: str | None = None,
    database: ms.database.Database | None = None,
    runner: ms.runner.Runner | None = None,
    builder: ms.builder.Builder | None = None,
    board: Board | None = None,
    max_seconds: float | None = None,
    num_trials_per_iter: int = 16,
    seed: int | None = None,
    progress=None,
) -> TunedKernel:
    """Search the x86 space of this layer's SpMM kernel and return the best kernel.

    Parameters
    ----------
    weight, m, x_layout, batch, bias, relu, relu6, gelu, target
        As :func:`sparse_tvm.kernels.spmm_kernel` (``target`` needs ``num-cores``).
    trials : int
        Candidates to measure (at most; the search stops early once the space is exhausted).
    work_dir : str, optional
        MetaSchedule's working directory (logs; the JSON database when ``database`` is None).
        A temporary directory when both are None.
    database : ms.database.Database, optional
        Where the records go and where earlier ones are reused from.
    runner : ms.runner.Runner, optional
        Defaults to a :class:`~tvm.s_tir.meta_schedule.runner.LocalRunner` with
        :class:`RealSparsityArguments`; a remote runner must allocate arguments the same way.
    builder : ms.builder.Builder, optional
        Defaults to a :class:`~tvm.s_tir.meta_schedule.builder.LocalBuilder` that materialises
        each candidate (:class:`~sparse_tvm.tuning.space_x86.MaterializeBuild`), linked with the
        board's cross compiler for a board; another builder must materialise them too.
    board : Board, optional
        Measure on this board instead of the host: candidates linked with its cross compiler,
        timed through its RPC tracker (also the final comparison with the hand-written kernel).
    max_seconds : float, optional
        Stop the search after this much wall time (checked between batches).
    progress : callable, optional
        Called after each measured batch with ``(trials measured, best seconds so far)``.

    Returns
    -------
    TunedKernel
        The best kernel in the database for this layer, with its latency and the hand-written
        kernel's measured here back to back.

    Raises
    ------
    NoTuningSpaceError
        The layer's kernel has no search space (also a ``ValueError``).
    TuningError
        No candidate ran, or the best one disagrees with the hand-written kernel.
    """
    spec = make_spec(
        weight, m, x_layout=x_layout, batch=batch, bias=bias, relu=relu, relu6=relu6,
        gelu=gelu, target=target,
    )  # fmt: skip
    if not supports(spec):
        raise NoTuningSpaceError(
            "no tuning space for this layer (m == 1 with narrow blocks: scalar)"
        )
    if work_dir is None:
        work_dir = tempfile.mkdtemp(prefix="sparse_tvm_tune_")
    os.makedirs(work_dir, exist_ok=True)
    if database is None:
        database = ms.database.JSONDatabase(work_dir=work_dir)
    evaluator = ms.runner.EvaluatorConfig(
        number=1, repeat=3, min_repeat_ms=20, enable_cpu_cache_flush=False
    )
    if runner is None and board is not None:
        runner = board.runner(
            f_alloc_argument=RealSparsityArguments(weight), evaluator_config=evaluator
        )
    elif runner is None:
        runner = ms.runner.LocalRunner(
            evaluator_config=evaluator, f_alloc_argument=RealSparsityArguments(weight)
        )
    if builder is None:
        export = CrossExport(board.cross_compiler) if board is not None else None
        builder = ms.builder.LocalBuilder(f_build=MaterializeBuild(spec), f_export=export)
    mod = _tuning_module(weight, spec)
    previous, tuning_s = run_search(
        mod, target, work_dir, trials=trials, database=database, builder=builder,
        runner=runner, space=_space(spec), extractor=KnobFeatures(), max_seconds=max_seconds,
        progress=progress, num_trials_per_iter=num_trials_per_iter, seed=seed,
    )  # fmt: skip
    best = find_record(database, mod, target)
    if best is None:
        raise TuningError(f"tuning measured no valid candidate (see the logs in {work_dir})")
    knobs = best.knobs
    func = materialize(mod["main"], knobs=knobs, spec=spec)
    args = _inputs(weight, spec)
    options = {
        "x_layout": x_layout, "batch": batch, "bias": bias, "relu": relu, "relu6": relu6,
        "gelu": gelu, "target": target,
    }  # fmt: skip
    if board is None:
        # the hand-written kernel on the arrays in its own order (K panels: another indptr)
        default_args = list(args)
        default_args[1:4] = spmm_arrays(weight, m, **options)
        timed = [
            measure(spmm_kernel(weight, m, **options), default_args, target),
            measure(func, args, target),
        ]
    else:  # one set of arguments for both: the hand-written kernel without K panels
        strategy, _ = kernel_knobs(weight, m, **options)
        if strategy == "sliced":  # its own arrays: the space's default point instead
            default = materialize(mod["main"], knobs=default_knobs(spec), spec=spec)
        else:
            knobs = {"panel": 0} if strategy == "colvec" else None
            default = spmm_kernel(weight, m, **options, knobs=knobs)
        timed = measure_on_board(board, [default, func], args, target)
    (default_s, expected), (latency_s, got) = timed
    if not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
        raise TuningError(f"tuned kernel {knobs} disagrees with the hand-written kernel")
    return TunedKernel(
        func=func,
        knobs=knobs,
        latency_s=latency_s,
        default_latency_s=default_s,
        tuning_s=tuning_s,
        trials=len(measured_records(database, mod, target)) - previous,
        workload=mod["main"],
        measured_on="host" if board is None else str(board),
    )
