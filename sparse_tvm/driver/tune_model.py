"""``tune_model``: tune every sparse candidate of a model's layers into a records folder.

For each layer that could go sparse, every candidate format the weights allow (CSR and the BSR
block shapes whose zero blocks promise a gain) gets its kernel tuned by MetaSchedule
(:func:`sparse_tvm.tuning.tune_kernel`); the dense layer is measured as it compiles. The
records land in one MetaSchedule JSON database in the folder the user names; ``compile
--records`` then picks, per layer, the fastest of the tuned candidates and keeps it only if it
beats dense. A rerun with the same folder continues where an interrupted one stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from sparse_tvm.analysis import block_label, block_zero_fractions
from sparse_tvm.analysis.format_choice import CANDIDATE_BLOCKS, estimate_speedup
from sparse_tvm.analysis.layers import Layer
from sparse_tvm.driver.layer_timing import time_dense
from sparse_tvm.errors import SparseTVMError, TargetError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.target import resolve_target
from sparse_tvm.transform.dense_to_sparse import kernel_layout


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

    def __str__(self) -> str:
        lines = [f"records: {self.records}  ({self.seconds:.0f} s)"]
        for row in self.candidates:
            tuned = "-" if row.tuned_us is None else f"{row.tuned_us:.1f} us"
            default = "-" if row.default_us is None else f"{row.default_us:.1f} us"
            dense = self.dense_us.get(row.layer)
            lines.append(
                f"  {row.layer}: {row.format:9s} tuned {tuned} (default {default}, dense "
                f"{'-' if dense is None else f'{dense:.1f} us'}), {row.trials} new trials"
                + (f"; {row.note}" if row.note else "")
            )
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
    """
    from sparse_tvm.driver.compile_model import analyse
    from sparse_tvm.tuning import RealSparsityArguments, tune_kernel
    from sparse_tvm.tuning.records import RecordStore

    say = progress or (lambda _line: None)
    if trials < 1:
        raise SparseTVMError(f"--trials must be at least 1, got {trials}")
    if (rpc_tracker is None) != (rpc_key is None):
        raise SparseTVMError("remote tuning needs both --rpc-tracker HOST:PORT and --rpc-key KEY")
    resolved = resolve_target(target)
    if resolved.family != "x86":
        raise TargetError(
            f"tuning for target family '{resolved.family}' is not supported yet: use an x86 preset"
        )
    if rpc_tracker is not None:
        from sparse_tvm.tuning.rpc import check_tracker

        check_tracker(rpc_tracker, rpc_key)
    store = RecordStore(records)
    imported = import_onnx(model, input_shapes)
    jobs = []
    for layer in analyse(imported):
        if not layer.sparse_capable:
            continue
        fractions = block_zero_fractions(layer.weight)
        for block in candidate_blocks(layer, fractions):
            jobs.append((layer, block))
    summary = TuneSummary(records=str(store.folder))
    start = time.perf_counter()
    say(f"tuning {len(jobs)} candidate kernels, {trials} trials each, into {store.folder}")
    for index, (layer, block) in enumerate(jobs):
        label = f"{'csr' if block == (1, 1) else 'bsr'} {block_label(block)}"
        budget = None
        if timeout is not None:
            left = timeout - (time.perf_counter() - start)
            if left <= 0:
                say(f"  time is up: {len(jobs) - index} kernels left untuned")
                break
            budget = left / (len(jobs) - index)
        weight = BlockSparseWeight.from_dense(layer.weight, block)
        x_layout, batch = kernel_layout(layer)
        runner = None
        if rpc_tracker is not None:
            from sparse_tvm.tuning.rpc import rpc_runner

            runner = rpc_runner(
                rpc_tracker, rpc_key, f_alloc_argument=RealSparsityArguments(weight)
            )
        say(f"[{index + 1}/{len(jobs)}] {layer.name}: {label} ...")
        try:
            tuned = tune_kernel(
                weight,
                layer.m,
                x_layout=x_layout,
                batch=batch,
                bias=layer.bias is not None,
                relu=layer.relu,
                target=resolved.tvm_target,
                trials=trials,
                database=store.database,
                runner=runner,
                max_seconds=budget,
                work_dir=str(store.folder),
                progress=lambda done, best: say(
                    f"    {done}/{trials} trials, best "
                    + ("-" if best is None else f"{best * 1e6:.1f} us")
                ),
            )
        except ValueError as err:  # no search space for this kernel (m = 1 CSR: scalar)
            summary.candidates.append(CandidateResult(layer.name, label, None, None, 0, str(err)))
            say(f"    skipped: {err}")
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
        if layer.name not in summary.dense_us:
            summary.dense_us[layer.name] = time_dense(layer, resolved.tvm_target) * 1e6
    summary.seconds = time.perf_counter() - start
    return summary
