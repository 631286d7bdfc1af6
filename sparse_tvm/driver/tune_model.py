"""``tune_model``: tune every sparse candidate of a model's layers into a records folder.

For each layer that could go sparse, every candidate format the weights allow (CSR and the BSR
block shapes whose zero blocks promise a gain) gets its kernel tuned by MetaSchedule
(the back end's tuner: :func:`sparse_tvm.tuning.tune_kernel` on CPUs; on a GPU the kernel of
the one format the cost model picks, :func:`sparse_tvm.tuning.tune_cuda.tune_cuda_kernel`),
and a quantized model's layer with int8 operands its int8 kernel on a target with int8 dot
products (:func:`sparse_tvm.tuning.tune_int8.tune_int8_kernel`); the
dense layer is measured as it compiles where this host can time the target's code. The
records land in one MetaSchedule JSON database in the folder the user names; ``compile
--records`` then picks, per layer, the fastest of the tuned candidates and keeps it only if it
beats dense. A rerun with the same folder continues where an interrupted one stopped.

A board (``--rpc-tracker``/``--rpc-key``) measures instead of the host: the candidates are built
here (linked with the preset's cross compiler for an Arm board) and timed on the board. A
target whose code this host cannot run (aarch64 on x86) can only be tuned that way. Since
``compile`` cannot time such code either, the board also measures, per layer, the dense layer
and each candidate layer with its tuned kernel (or the hand-written one where the board timed
that faster), and the records folder keeps these timings (``layer_timings.json``):
:class:`~sparse_tvm.decision.BoardTimings` turns them into the compiler's decision — the fastest candidate, kept
only if the board measured it faster than dense by the compiler's margin; dense otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from sparse_tvm.analysis import analyse, block_zero_fractions
from sparse_tvm.analysis.format_choice import format_label
from sparse_tvm.analysis.layers import Layer
from sparse_tvm.backends import backend_for
from sparse_tvm.decision import tuning_blocks
from sparse_tvm.decision.int8_decision import int8_possible
from sparse_tvm.decision.layer_timing import time_dense, time_layer_on_board
from sparse_tvm.driver.tune_progress import TuneProgress
from sparse_tvm.errors import UsageError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.tuning.tune_kernel import NoTuningSpaceError

INT8 = "int8"  # the job of a layer's int8 kernel (sparse_tvm.tuning.tune_int8)
INT8_LABEL = "int8 bsr 16x4"

# Wall time of an emulated board (qemu) is no performance figure: the summary says where it
# measured, and the caller knows whether that board is real.


@dataclass
class CandidateResult:
    """One tuned candidate kernel of a layer."""

    layer: str
    format: str
    tuned_us: float | None
    default_us: float | None
    trials: int
    note: str = ""


@dataclass
class TuneSummary:
    """What :func:`tune_model` tuned, layer by layer."""

    records: str
    candidates: list[CandidateResult] = field(default_factory=list)
    dense_us: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    measured_on: str = "host"
    layer_us: dict[str, dict[str, float]] = field(default_factory=dict)  # board: layer timings

    def __str__(self) -> str:
        lines = [f"records: {self.records}  ({self.seconds:.0f} s), measured on {self.measured_on}"]
        for row in self.candidates:
            tuned = "-" if row.tuned_us is None else f"{row.tuned_us:.1f} us"
            default = "-" if row.default_us is None else f"{row.default_us:.1f} us"
            dense = self.dense_us.get(row.layer)
            lines.append(
                f"  {row.layer}: {row.format:9s} tuned {tuned} (default {default}, dense "
                f"{'-' if dense is None else f'{dense:.1f} us'}), {row.trials} new trials"
                + (f"; {row.note}" if row.note else "")
            )
        for name, timings in self.layer_us.items():
            dense = timings.get("dense")
            measured = ", ".join(f"{k} {v:.1f} us" for k, v in timings.items() if k != "dense")
            lines.append(f"  {name} on the board: dense {dense:.1f} us, {measured}")
        return "\n".join(lines)


def tune_model(
    model: str | os.PathLike | onnx.ModelProto,
    target: str | dict = "x86",
    records: str | os.PathLike = "records",
    *,
    trials: int = 64,
    timeout: float | None = None,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    progress: Callable[[str], None] | None = None,
    status: Callable[[str], None] | None = None,
) -> TuneSummary:
    """Tune the sparse kernels of ``model`` for ``target`` into the ``records`` folder.

    Parameters
    ----------
    trials
        Measured candidates per kernel (a layer has one kernel per candidate format).
    timeout
        Seconds for the whole run; the budget left is shared among the kernels still to tune.
    rpc_tracker, rpc_key
        Measure on a remote device registered with a TVM RPC tracker (``HOST:PORT``).
    progress
        Called with each line worth keeping (a kernel starts, its result).
    status
        Called after each measured batch with the run's progress line (trials done, best so
        far, time left), which a terminal shows in place; ``progress`` when not given.
    """
    from sparse_tvm.tuning.records import RecordStore, tuning_lock
    from sparse_tvm.tuning.rpc import Board

    say = progress or (lambda _line: None)
    show = status or say
    if trials < 1:
        raise UsageError(f"--trials must be at least 1, got {trials}")
    if (rpc_tracker is None) != (rpc_key is None):
        raise UsageError("remote tuning needs both --rpc-tracker HOST:PORT and --rpc-key KEY")
    backend = backend_for(target)
    backend.check_tuning(rpc_tracker)
    board = None
    if rpc_tracker is not None:
        board = Board(rpc_tracker, rpc_key, backend.cross_compiler(None))
        board.check()
    with tuning_lock(records):  # one run writes a records folder at a time
        store = RecordStore(records)
        imported = backend.prepare(import_onnx(model, input_shapes))
        jobs = []
        for layer in analyse(imported, gelu=backend.fuses_gelu):
            fractions = block_zero_fractions(layer.weight)
            for block in tuning_blocks(layer, backend, fractions):
                jobs.append((layer, block))
            if int8_possible(layer, backend):  # a quantized model's layer: its int8 kernel
                jobs.append((layer, INT8))
        summary = TuneSummary(records=str(store.folder), measured_on=backend.measured_on(board))
        start = time.perf_counter()
        counter = TuneProgress(len(jobs), trials, timeout)
        say(f"tuning {len(jobs)} candidate kernels, {trials} trials each, into {store.folder}")
        tuned_of: dict[str, list] = {}  # layer name -> [(block, weight, TunedKernel)]

        def time_on_board(layer: Layer) -> None:
            # each layer as soon as its candidates are tuned: an interrupted run keeps its timings
            if board is None or not tuned_of.get(layer.name) or layer.name in summary.layer_us:
                return
            say(f"measuring {layer.name} dense and sparse on the {board}")
            entry = time_layer_on_board(layer, tuned_of[layer.name], backend, board)
            store.add_layer_timing(entry)
            summary.dense_us[layer.name] = entry["dense_s"] * 1e6
            summary.layer_us[layer.name] = {"dense": entry["dense_s"] * 1e6} | {
                c["format"]: c["sparse_s"] * 1e6 for c in entry["candidates"]
            }

        for index, (layer, block) in enumerate(jobs):
            if index and jobs[index - 1][0] is not layer:
                time_on_board(jobs[index - 1][0])
            label = INT8_LABEL if block == INT8 else format_label(block)
            budget = None
            if timeout is not None:
                left = timeout - (time.perf_counter() - start)
                if left <= 0:
                    say(f"  time is up: {len(jobs) - index} kernels left untuned")
                    break
                budget = left / (len(jobs) - index)
            say(f"[{index + 1}/{len(jobs)}] {layer.name}: {label} ...")
            settings = dict(
                trials=trials,
                database=store.database,
                board=board,
                max_seconds=budget,
                work_dir=str(store.folder),
                progress=lambda done, best, i=index + 1, n=layer.name, f=label: show(
                    counter.line(i, n, f, done, best)
                ),
            )
            weight = None
            try:
                if block == INT8:
                    tuned = backend.tune_int8_kernel(layer, **settings)
                else:
                    weight = BlockSparseWeight.from_dense(layer.weight, block)
                    tuned = backend.tune_kernel(weight, layer, **settings)
            except NoTuningSpaceError as err:  # no search space for this kernel
                summary.candidates.append(
                    CandidateResult(layer.name, label, None, None, 0, str(err))
                )
                say(f"    skipped: {err}")
                counter.skip_kernel()
                continue
            default_s = getattr(tuned, "default_latency_s", None)  # a GPU kernel has none
            new_trials = getattr(tuned, "trials", trials)
            summary.candidates.append(
                CandidateResult(
                    layer.name,
                    label,
                    None if tuned.latency_s is None else tuned.latency_s * 1e6,
                    None if default_s is None else default_s * 1e6,
                    new_trials,
                )
            )
            if tuned.latency_s is not None and default_s is not None:
                say(
                    f"    best {tuned.latency_s * 1e6:.1f} us (default schedule "
                    f"{default_s * 1e6:.1f} us) after {new_trials} new trials"
                )
            if weight is not None:  # the board's layer timings weigh the float candidates
                tuned_of.setdefault(layer.name, []).append((block, weight, tuned))
            counter.next_kernel()
            if board is None and backend.can_time_here() and layer.name not in summary.dense_us:
                summary.dense_us[layer.name] = time_dense(layer, backend) * 1e6
        for layer in {layer.name: layer for layer, _ in jobs}.values():
            time_on_board(layer)  # those not measured yet: the last one, one cut by the timeout
        summary.seconds = time.perf_counter() - start
        return summary
