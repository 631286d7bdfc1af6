"""``tune_model``: tune every sparse candidate of a model's layers into a records folder.

For each layer that could go sparse, every candidate format the weights allow (CSR and the BSR
block shapes whose zero blocks promise a gain) gets its kernel tuned by MetaSchedule
(:func:`sparse_tvm.tuning.tune_kernel`); the dense layer is measured as it compiles. The
records land in one MetaSchedule JSON database in the folder the user names; ``compile
--records`` then picks, per layer, the fastest of the tuned candidates and keeps it only if it
beats dense. A rerun with the same folder continues where an interrupted one stopped.

A board (``--rpc-tracker``/``--rpc-key``) measures instead of the host: the candidates are built
here (linked with the preset's cross compiler for an Arm board) and timed on the board. A
target whose code this host cannot run (aarch64 on x86) can only be tuned that way. Since
``compile`` cannot time such code either, the board also measures, per layer, the dense layer
and each candidate layer with its tuned kernel (or the hand-written one where the board timed
that faster), and the records folder keeps these timings (``layer_timings.json``):
:class:`BoardTimings` turns them into the compiler's decision — the fastest candidate, kept
only if the board measured it faster than dense by the compiler's margin; dense otherwise.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import tvm

from sparse_tvm.analysis import block_label, block_zero_fractions
from sparse_tvm.analysis.format_choice import (
    CANDIDATE_BLOCKS,
    estimate_speedup,
    format_label,
    format_of,
)
from sparse_tvm.analysis.layers import Layer
from sparse_tvm.driver.layer_timing import layer_key, layer_module, time_dense
from sparse_tvm.driver.tune_progress import TuneProgress
from sparse_tvm.errors import SparseTVMError, TargetError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.logs import native_quiet
from sparse_tvm.target import resolve_target
from sparse_tvm.transform.dense_to_sparse import kernel_options

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


def candidate_blocks(layer: Layer, zero_fractions: dict[str, float]) -> list[tuple[int, int]]:
    """The block shapes worth tuning for a layer: those the cost model expects to gain, less
    those dominated by a bigger block with (nearly) as many zero blocks: a weight pruned in
    16x1 blocks has the same zeros in 8x1, 4x1 and 1x1 blocks, and the 16x1 kernel is faster.
    """
    kept: list[tuple[int, int]] = []
    for block in CANDIDATE_BLOCKS:  # biggest blocks first
        zeros = zero_fractions[block_label(block)]
        if estimate_speedup(zeros, block, layer.m) < 1.0:
            continue
        if any(zeros <= zero_fractions[block_label(big)] + 0.01 for big in kept):
            continue
        kept.append(block)
    return kept


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
    from sparse_tvm.driver.compile_model import analyse, preset_cross_compiler, runs_on_host
    from sparse_tvm.tuning import tune_kernel
    from sparse_tvm.tuning.records import RecordStore, tuning_lock
    from sparse_tvm.tuning.rpc import Board

    say = progress or (lambda _line: None)
    show = status or say
    if trials < 1:
        raise SparseTVMError(f"--trials must be at least 1, got {trials}")
    if (rpc_tracker is None) != (rpc_key is None):
        raise SparseTVMError("remote tuning needs both --rpc-tracker HOST:PORT and --rpc-key KEY")
    resolved = resolve_target(target)
    if resolved.family == "cuda":  # on this machine's GPU (sparse_tvm.tuning.tune_cuda)
        from sparse_tvm.tuning.tune_cuda import tune_model_cuda

        return tune_model_cuda(
            model,
            resolved,
            records,
            trials=trials,
            timeout=timeout,
            rpc_tracker=rpc_tracker,
            input_shapes=input_shapes,
            progress=say,
        )
    if resolved.family not in ("x86", "arm"):
        raise TargetError(
            f"tuning for target family '{resolved.family}' is not supported yet: "
            "use an x86, Arm (aarch64, rpi4) or CUDA preset"
        )
    if rpc_tracker is None and not runs_on_host(resolved):
        raise TargetError(
            f"tuning for {resolved.name} needs a board: this {platform.machine()} machine cannot "
            f"run its code; start python -m tvm.exec.rpc_server on the board and pass "
            "--rpc-tracker HOST:PORT --rpc-key KEY"
        )
    board = None
    if rpc_tracker is not None:
        board = Board(rpc_tracker, rpc_key, preset_cross_compiler(resolved))
        board.check()
    with tuning_lock(records):  # one run writes a records folder at a time
        store = RecordStore(records)
        imported = import_onnx(model, input_shapes)
        jobs = []
        for layer in analyse(imported):
            if not layer.sparse_capable:
                continue
            fractions = block_zero_fractions(layer.weight)
            for block in candidate_blocks(layer, fractions):
                jobs.append((layer, block))
        summary = TuneSummary(
            records=str(store.folder), measured_on="this host" if board is None else str(board)
        )
        start = time.perf_counter()
        counter = TuneProgress(len(jobs), trials, timeout)
        say(f"tuning {len(jobs)} candidate kernels, {trials} trials each, into {store.folder}")
        tuned_of: dict[str, list] = {}  # layer name -> [(block, weight, TunedKernel)]

        def time_on_board(layer: Layer) -> None:
            # each layer as soon as its candidates are tuned: an interrupted run keeps its timings
            if board is None or not tuned_of.get(layer.name) or layer.name in summary.layer_us:
                return
            say(f"measuring {layer.name} dense and sparse on the {board}")
            entry = time_layer_on_board(layer, tuned_of[layer.name], resolved.tvm_target, board)
            store.add_layer_timing(entry)
            summary.dense_us[layer.name] = entry["dense_s"] * 1e6
            summary.layer_us[layer.name] = {"dense": entry["dense_s"] * 1e6} | {
                c["format"]: c["sparse_s"] * 1e6 for c in entry["candidates"]
            }

        for index, (layer, block) in enumerate(jobs):
            if index and jobs[index - 1][0] is not layer:
                time_on_board(jobs[index - 1][0])
            label = format_label(block)
            budget = None
            if timeout is not None:
                left = timeout - (time.perf_counter() - start)
                if left <= 0:
                    say(f"  time is up: {len(jobs) - index} kernels left untuned")
                    break
                budget = left / (len(jobs) - index)
            weight = BlockSparseWeight.from_dense(layer.weight, block)
            say(f"[{index + 1}/{len(jobs)}] {layer.name}: {label} ...")
            try:
                tuned = tune_kernel(
                    weight,
                    layer.m,
                    **kernel_options(layer),
                    target=resolved.tvm_target,
                    trials=trials,
                    database=store.database,
                    board=board,
                    max_seconds=budget,
                    work_dir=str(store.folder),
                    progress=lambda done, best, i=index + 1, n=layer.name, f=label: show(
                        counter.line(i, n, f, done, best)
                    ),
                )
            except ValueError as err:  # no search space for this kernel (m = 1 CSR: scalar)
                summary.candidates.append(
                    CandidateResult(layer.name, label, None, None, 0, str(err))
                )
                say(f"    skipped: {err}")
                counter.skip_kernel()
                continue
            summary.candidates.append(
                CandidateResult(
                    layer.name,
                    label,
                    tuned.latency_s * 1e6,
                    tuned.default_latency_s * 1e6,
                    tuned.trials,
                )
            )
            say(
                f"    best {tuned.latency_s * 1e6:.1f} us (default schedule "
                f"{tuned.default_latency_s * 1e6:.1f} us) after {tuned.trials} new trials"
            )
            tuned_of.setdefault(layer.name, []).append((block, weight, tuned))
            counter.next_kernel()
            if board is None and layer.name not in summary.dense_us:
                summary.dense_us[layer.name] = time_dense(layer, resolved.tvm_target) * 1e6
        for layer in {layer.name: layer for layer, _ in jobs}.values():
            time_on_board(layer)  # those not measured yet: the last one, one cut by the timeout
        summary.seconds = time.perf_counter() - start
        return summary


# -- measuring layers on the board -----------------------------------------------------------


def time_layer_on_board(layer: Layer, tuned: list, target: tvm.target.Target, board) -> dict:
    """Time the dense layer and each tuned candidate layer on ``board`` (one RPC session).

    ``tuned`` holds ``(block, weight, TunedKernel)``; a candidate runs with its tuned kernel,
    or the hand-written one where the board timed that faster while tuning. Every variant's
    output on the board must equal the dense layer's. Returns the ``layer_timings.json`` entry.
    """
    from sparse_tvm.pipeline import cpu_pipeline
    from sparse_tvm.tuning.rpc import time_remote

    session = board.session()
    device = session.cpu()
    x = np.random.default_rng(0).standard_normal(layer.input_shape).astype(np.float32)
    variants = [(None, None, None)]
    for block, weight, result in tuned:
        use_tuned = result.latency_s <= result.default_latency_s
        variants.append((block, weight, result if use_tuned else None))
    seconds, outputs = [], []
    for index, (block, weight, result) in enumerate(variants):
        kernel = None if result is None else result.func
        mod = layer_module(layer, target, weight, kernel)
        with native_quiet():
            executable = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
        vm = tvm.runtime.vm.VirtualMachine(
            board.load(session, executable, f"layer{index}.so"), device
        )
        xt = tvm.runtime.tensor(x, device)
        outputs.append(vm["main"](xt).numpy())
        seconds.append(time_remote(vm, "main", device, [xt]))
        if index and not np.allclose(outputs[-1], outputs[0], rtol=1e-3, atol=1e-3):
            raise SparseTVMError(
                f"{layer.name}: the {block_label(block)} sparse layer disagrees with the dense "
                f"layer on the {board} (max diff {np.abs(outputs[-1] - outputs[0]).max():.3g})"
            )
    candidates = []
    for (block, _, result), secs in zip(variants[1:], seconds[1:]):
        candidates.append(
            {
                "block": list(block),
                "format": format_label(block),
                "knobs": None if result is None else result.knobs,
                "sparse_s": secs,
            }
        )
    return {
        "layer": layer_key(layer),
        "name": layer.name,
        "target": str(target),
        "board": str(board),
        "dense_s": seconds[0],
        "candidates": candidates,
    }


class BoardTimings:
    """The compiler's decisions from the layer timings a board measured while tuning.

    For a layer with an entry: the candidate the board timed fastest, kept when it beat the
    dense layer by ``KEEP_SPARSE_MARGIN`` ("never slower than dense", as measured on the
    board); dense otherwise. Layers without an entry are left to the compiler's usual rule.
    """

    def __init__(self, entries: dict[str, dict]) -> None:
        self.entries = entries
        self.used = 0

    @classmethod
    def load(cls, records, target) -> BoardTimings | None:
        """The timings in the ``records`` folder for ``target`` (a ResolvedTarget), or None."""
        from sparse_tvm.tuning.records import LAYER_TIMING_FILE, RecordStore

        if records is None or not os.path.isfile(os.path.join(records, LAYER_TIMING_FILE)):
            return None
        entries = RecordStore(records).layer_timings(target.tvm_target)
        return cls(entries) if entries else None

    def decide(self, layer: Layer, target, *, sparsity_threshold: float | None = None):
        """A ``LayerDecision`` from the board's timings, or None (no entry for this layer)."""
        from sparse_tvm.analysis.format_choice import FormatChoice
        from sparse_tvm.driver.compile_model import KEEP_SPARSE_MARGIN, LayerDecision
        from sparse_tvm.tuning.tune_kernel import kernel_with_knobs

        entry = self.entries.get(layer_key(layer))
        if entry is None or not layer.sparse_capable or not entry["candidates"]:
            return None
        if sparsity_threshold is not None and layer.sparsity < sparsity_threshold:
            return None
        best = min(entry["candidates"], key=lambda c: c["sparse_s"])
        dense_s, sparse_s = float(entry["dense_s"]), float(best["sparse_s"])
        block = tuple(best["block"])
        if sparse_s * KEEP_SPARSE_MARGIN > dense_s:
            choice = FormatChoice(
                "dense",
                None,
                dense_s / sparse_s,
                f"{best['format']} measured {dense_s / sparse_s:.2f}x on the board: kept dense",
            )
            self.used += 1
            return LayerDecision(layer, choice, dense_s=dense_s, sparse_s=sparse_s)
        weight = BlockSparseWeight.from_dense(layer.weight, block)
        kernel = None
        if best["knobs"] is not None:
            try:
                kernel = kernel_with_knobs(
                    weight,
                    layer.m,
                    {k: int(v) for k, v in best["knobs"].items()},
                    **kernel_options(layer),
                    target=target.tvm_target,
                )
            except (KeyError, ValueError):  # knobs of an older search space: not this kernel
                return None
        how = "tuned kernel" if kernel is not None else "default kernel (faster than the tuned)"
        choice = FormatChoice(
            format_of(block),
            block,
            dense_s / sparse_s,
            f"{how}, measured {dense_s / sparse_s:.2f}x dense on the board while tuning",
        )
        self.used += 1
        return LayerDecision(layer, choice, weight, dense_s, sparse_s, kernel)

    def note(self) -> str:
        return (
            f"{self.used} layer(s) decided by the board's timings in the records "
            "(dense and sparse measured on the board while tuning)"
        )
