"""The per-layer decision: dense, or which sparse format and kernel, with the evidence.

Everything that decides a layer's format lives here, used alike by ``compile``, ``inspect``,
``tune`` and every back end:

- :func:`decide` (:func:`decide_layers` for a model's layers) — in order: a dense build requested; the board's timings from tuning; the
  rules (no sparse kernel for this op, below the sparsity threshold); a forced block shape;
  the cost model (:func:`~sparse_tvm.analysis.choose_format`); tuned records; then, where
  this machine can run the target's code, a measurement against the dense layer, kept sparse
  only at :data:`KEEP_SPARSE_MARGIN` ("never slower than dense"); for a quantized model's
  layer with int8 operands, the int8 kernel measured against that float decision
  (:mod:`~sparse_tvm.decision.int8_decision`); last the back end's storage rule (a
  microcontroller keeps a sparse layer only if it is smaller).
- :func:`candidate_blocks` / :func:`tuning_blocks` — the formats worth tuning for a layer.
- :class:`BoardTimings` — decisions from the dense and sparse timings a board measured while
  tuning (for a target this machine cannot time).
- :func:`records_database` — the tuning records that apply: the user's folder, else those
  shipped in ``schedules/`` for the back end.

A back end is passed in (``sparse_tvm.backends``); this module never asks for a family by name.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import tvm

from sparse_tvm.analysis import block_label, block_zero_fractions, choose_format
from sparse_tvm.analysis.format_choice import (
    CANDIDATE_BLOCKS,
    FormatChoice,
    estimate_speedup,
    format_of,
)
from sparse_tvm.analysis.layers import Layer
from sparse_tvm.decision.int8_decision import Int8Twins, decide_int8
from sparse_tvm.decision.layer_timing import retime, time_dense, time_sparse
from sparse_tvm.decision.machine_load import ForeignLoad
from sparse_tvm.errors import RecordsError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.options import CompileOptions
from sparse_tvm.report import (
    ESTIMATED,
    MEASURED,
    MEASURED_AS_TWIN,
    MEASURED_ON_BOARD,
    REQUESTED,
    RULE,
    TUNING_RECORDS,
    LayerReport,
    pattern_summary,
)
from sparse_tvm.tuning.records import layer_key

# A sparse kernel must beat the dense layer by this margin to be kept: timing noise must not
# turn a tie into a slower model. The same margin holds for timings measured on a board.
KEEP_SPARSE_MARGIN = 1.03
# a measured loss where the cost model expected at least this gain is timed again
RECHECK_ESTIMATE = 1.5
# the default kernel's schedule variants (backend.schedule_variants) are timed only for
# layers at least this slow: below it a build per variant costs more than it can win
VARIANT_MIN_S = 20e-6
# A variant replaces the default kernel only when faster alone by this margin: the default is
# chosen for how it runs among its neighbours too (e.g. the m-split CSR kernel leaves its rows
# of Y in the core that reads them next), which a layer timed alone does not show, and a tie
# must not flip kernels between builds.
VARIANT_MARGIN = 1.05
# A layer with a measured twin (same op, shapes and epilogue, same candidate format, zero
# fractions within TWIN_TOLERANCE) takes the twin's decision without being timed, where the
# twin's measurement was clear: sparse at least TWIN_MARGIN faster than dense, or dense at
# least TWIN_MARGIN faster than sparse. A transformer's layers repeat: MiniLM-L6's 36 linear
# layers have three shapes, and timing each (dense, sparse, the kernel's variants) was most
# of its compile time. Closer calls are timed layer by layer.
TWIN_MARGIN = 1.5
TWIN_TOLERANCE = 0.01
# Where other processes used the cores while a layer was timed, its dense and sparse timings
# are taken again in quiet moments, waiting up to this long per layer (see machine_load)
QUIET_BUDGET_S = 6.0


@dataclass
class LayerDecision:
    """What the compiler decided for one layer, with the evidence."""

    layer: Layer
    choice: FormatChoice
    weight: BlockSparseWeight | None = None  # the stored sparse weight (the back end's kind)
    dense_s: float | None = None
    sparse_s: float | None = None
    kernel: tvm.tirx.PrimFunc | None = None  # a tuned kernel from records, else the default
    knobs: dict[str, int] | None = None  # the default kernel's schedule variant, if measured faster
    decided_by: str = ""  # what decided the format: sparse_tvm.report.MEASURED, ESTIMATED, ...
    candidate: tuple[int, int] | None = None  # the sparse format that was weighed (if any)
    timed_under_load: bool = False  # other processes held the cores, no quiet moment came


# -- candidate formats ----------------------------------------------------------------------


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


def tuning_blocks(
    layer: Layer, backend, zero_fractions: dict[str, float] | None = None
) -> list[tuple[int, int]]:
    """The formats whose kernels ``tune`` tunes for a layer: every candidate where records
    choose the format (CPUs), else the one format the cost model picks (GPU)."""
    if not layer.sparse_capable:
        return []
    fractions = zero_fractions or block_zero_fractions(layer.weight)
    if backend.records_choose_format:
        return candidate_blocks(layer, fractions)
    choice = choose_format(layer.weight, layer.m, zero_fractions=fractions)
    return [] if choice.block is None else [tuple(choice.block)]


# -- the tuning records that apply ----------------------------------------------------------


def records_database(records, backend, dense: bool = False):
    """The tuning records to apply: the user's folder, else those shipped for the back end
    (``schedules/<family>.json``), else None."""
    if dense:
        return None
    if records is not None:
        from sparse_tvm.tuning.records import RecordStore

        if not os.path.isdir(records):
            raise RecordsError(
                f"records folder '{records}' not found: tune first with "
                "`sparse-tvm tune MODEL --records DIR`, or drop --records"
            )
        return RecordStore(records).database
    if backend.shipped_records is None:
        return None
    from importlib import resources

    shipped = resources.files("sparse_tvm") / "_data" / "schedules" / backend.shipped_records
    if not shipped.is_file():
        return None
    from sparse_tvm.tuning.records import load_exported

    return load_exported(str(shipped))


def _tuned_choice(layer: Layer, backend, records, zero_fractions):
    """The fastest candidate format with a tuned kernel in ``records``, or None."""
    best = None
    for block in candidate_blocks(layer, zero_fractions):
        weight = BlockSparseWeight.from_dense(layer.weight, block)
        found = backend.lookup_kernel(weight, layer, records)
        if found is None or found.latency_s is None:
            continue
        if best is None or found.latency_s < best[0]:
            best = (found.latency_s, block, weight, found)
    if best is None:
        return None
    latency, block, weight, found = best
    how = "tuned" if found.exact else "tuned on the same shapes"
    reason = f"{how} ({latency * 1e6:.0f} us while tuning)"
    choice = FormatChoice(format_of(block), block, 0.0, reason)
    kernel_id = "tuned:" + ",".join(f"{k}={v}" for k, v in sorted(found.knobs.items()))
    return choice, weight, found.func, kernel_id


def _with_tuned_kernel(decision: LayerDecision, backend, records) -> LayerDecision:
    """``decision`` with the kernel tuned for its layer and format in ``records``, where records
    hold kernels of the cost model's format (GPU); the reason says so."""
    if decision.weight is None or decision.kernel is not None:
        return decision
    found = backend.lookup_kernel(decision.weight, decision.layer, records)
    if found is None:
        return decision
    tuned = "tuned kernel" + (f", {found.latency_s * 1e6:.0f} us" if found.latency_s else "")
    reason = f"{decision.choice.reason}; {tuned}"
    return dataclasses.replace(
        decision, kernel=found.func, choice=dataclasses.replace(decision.choice, reason=reason)
    )


# -- the decision ---------------------------------------------------------------------------


def decide(
    layer: Layer,
    backend,
    options: CompileOptions | None = None,
    *,
    records=None,
    board: BoardTimings | None = None,
    zero_fractions: dict[str, float] | None = None,
    twins: Twins | None = None,
) -> LayerDecision:
    """Decide one layer for ``backend`` (see the module doc for the order of the rules).

    ``options.measure`` times the sparse candidate against the dense layer where the back end
    can time here (the caller turns it off where it cannot, and notes why); ``records`` (a
    MetaSchedule database) gives tuned kernels; ``board`` the board's timings; ``twins`` the
    layers measured so far, whose clear decisions a same-shape layer takes without timing.
    """
    options = options or CompileOptions()
    decision = _decide(layer, backend, options, records, board, zero_fractions, twins)
    # a quantized model's layer: the int8 kernel where the target has one and it is faster
    decision = decide_int8(decision, backend, options, twins.int8 if twins else None, records)
    return backend.store(decision)


def _decide(layer, backend, options, records, board, zero_fractions, twins=None) -> LayerDecision:
    if options.dense:
        choice = FormatChoice("dense", None, 1.0, "dense build requested")
        return LayerDecision(layer, choice, decided_by=REQUESTED)
    if records is not None and not backend.records_choose_format:
        # the records hold the tuned kernel of the format decided without them (GPU)
        plain = _decide(layer, backend, options, None, board, zero_fractions)
        return _with_tuned_kernel(plain, backend, records)
    if board is not None and not options.force_block:
        decision = board.decide(layer, backend, sparsity_threshold=options.sparsity_threshold)
        if decision is not None:
            return decision
    if not layer.sparse_capable:
        choice = FormatChoice("dense", None, 1.0, layer.dense_reason)
        return LayerDecision(layer, choice, decided_by=RULE)
    if options.force_block is not None:
        block = tuple(options.force_block)
        weight = BlockSparseWeight.from_dense(layer.weight, block)
        choice = FormatChoice(format_of(block), block, 0.0, "forced block shape, not timed")
        return LayerDecision(layer, choice, weight, decided_by=REQUESTED)
    threshold = options.sparsity_threshold
    fractions = zero_fractions or block_zero_fractions(layer.weight)
    choice = choose_format(
        layer.weight, layer.m, sparsity_threshold=threshold, zero_fractions=fractions
    )
    if threshold is not None and layer.sparsity < threshold:
        return LayerDecision(layer, choice, decided_by=RULE)
    if twins is not None and options.measure and choice.block is not None:
        twin = twins.decision_for(layer, tuple(choice.block), fractions)
        if twin is not None:
            return twin
    tuned = None
    if records is not None:
        tuned = _tuned_choice(layer, backend, records, fractions)
    if tuned is not None:
        choice, weight, kernel, kernel_id = tuned
        decided_by, untimed = TUNING_RECORDS, "not timed against dense"
    elif choice.format == "dense":
        return LayerDecision(layer, choice, decided_by=ESTIMATED)
    else:
        weight = BlockSparseWeight.from_dense(layer.weight, choice.block)
        kernel, kernel_id = None, "default"
        decided_by, untimed = ESTIMATED, "not timed"
    decision = LayerDecision(
        layer, choice, weight, kernel=kernel, decided_by=decided_by, candidate=tuple(choice.block)
    )
    if not options.measure:
        decision.choice = dataclasses.replace(choice, reason=f"{choice.reason}; {untimed}")
        return decision
    decision = _measure(decision, backend, kernel_id, tuned is not None)
    if twins is not None and tuned is None:
        twins.add(decision, fractions)
    return decision


def _measure(decision: LayerDecision, backend, kernel_id: str, from_records: bool):
    """Time the sparse candidate against the dense layer on this host; keep the faster."""
    layer, weight, kernel, choice = (
        decision.layer,
        decision.weight,
        decision.kernel,
        decision.choice,
    )
    with ForeignLoad() as load:
        decision.dense_s = time_dense(layer, backend)
        decision.sparse_s = time_sparse(layer, weight, backend, kernel=kernel, kernel_id=kernel_id)
        _prefer_default_or_variant(decision, backend, choice)
    decision.decided_by = MEASURED
    rechecked = ""
    used = kernel_id if decision.kernel is not None else "default"
    if load.loaded:
        # other processes held the cores: time both again where the machine is quiet
        timing = retime(
            layer, weight, backend, decision.kernel, used, knobs=decision.knobs,
            quiet_budget_s=QUIET_BUDGET_S,
        )  # fmt: skip
        decision.dense_s, decision.sparse_s = timing.dense_s, timing.sparse_s
        decision.timed_under_load = not timing.quiet
        rechecked = (
            f" (timed again in quiet moments: other processes used {load.cores:.1f} cores)"
            if timing.quiet
            else f" (other processes used {load.cores:.1f} cores throughout: timed under load)"
        )
    elif (
        decision.sparse_s * KEEP_SPARSE_MARGIN > decision.dense_s
        and choice.estimated_speedup >= RECHECK_ESTIMATE
    ):
        # the cost model expected a clear gain: time both again before giving it up
        timing = retime(layer, weight, backend, decision.kernel, used, knobs=decision.knobs)
        decision.dense_s, decision.sparse_s = timing.dense_s, timing.sparse_s
        rechecked = " (timed again, alternating with dense: the first timing disagreed)"
    return _keep_faster(decision, choice, from_records, rechecked)


def _prefer_default_or_variant(decision: LayerDecision, backend, choice: FormatChoice) -> None:
    """A tuned kernel against the default schedule; the default's schedule variants."""
    layer, weight, kernel = decision.layer, decision.weight, decision.kernel
    if kernel is not None:
        # a record can lose to the default schedule (few trials, another machine's load,
        # a default improved since): keep whichever kernel is measured faster
        default_s = time_sparse(layer, weight, backend)
        if default_s < decision.sparse_s:
            decision.sparse_s, decision.kernel = default_s, None
            decision.choice = FormatChoice(
                choice.format,
                choice.block,
                0.0,
                f"default schedule (measured faster than the record, {choice.reason})",
            )
    if decision.kernel is None and decision.sparse_s >= VARIANT_MIN_S:
        _fastest_variant(decision, backend)


def _keep_faster(
    decision: LayerDecision, choice: FormatChoice, from_records: bool, rechecked: str
) -> LayerDecision:
    """Keep the sparse candidate where it measured faster by the margin, else dense."""
    measured = decision.dense_s / decision.sparse_s
    if decision.sparse_s * KEEP_SPARSE_MARGIN > decision.dense_s:
        decision.choice = FormatChoice(
            "dense",
            None,
            measured,
            f"{choice.label} measured {measured:.2f}x over dense{rechecked}, under the "
            f"{KEEP_SPARSE_MARGIN:.2f}x needed: kept dense",
        )
        decision.weight = None
        decision.kernel = None
        decision.knobs = None
    else:
        found = decision.choice.reason  # how the candidate was found, then what decided
        if not from_records:
            found = f"cost model estimated {choice.estimated_speedup:.1f}x"
        variant = ""
        if decision.knobs:
            variant = " with " + ", ".join(f"{k} {v}" for k, v in sorted(decision.knobs.items()))
        decision.choice = dataclasses.replace(
            decision.choice,
            reason=f"{found}; measured {measured:.2f}x over dense{variant}{rechecked}: kept sparse",
        )
    return decision


def _fastest_variant(decision: LayerDecision, backend) -> None:
    """Time the default kernel's schedule variants the back end offers for the layer; keep the
    fastest in ``decision.knobs`` (None: the default's own knobs)."""
    for knobs in backend.schedule_variants(decision.layer, decision.weight):
        seconds = time_sparse(decision.layer, decision.weight, backend, knobs=knobs)
        if seconds * VARIANT_MARGIN < decision.sparse_s:
            decision.sparse_s, decision.knobs = seconds, knobs


# -- twins: same-shape layers decided once ---------------------------------------------------


class Twins:
    """The measured decisions of a model's layers, which same-shape layers take untimed.

    Two layers are twins when they have the same :func:`layer_key` without the pattern (op,
    shapes, stored weight layout, epilogue: what the dense timing depends on), the cost model
    picks the same block shape for both, and their sparsity and zero-block fraction in that
    shape differ by at most :data:`TWIN_TOLERANCE`: the sparse kernel then does the same work
    over weights of the same layout. Only clear decisions are handed on (see
    :data:`TWIN_MARGIN`), and only those of the default kernel (a tuned kernel is built for one
    weight's structure).
    """

    def __init__(self) -> None:
        self._measured: dict[tuple, list[tuple[LayerDecision, float]]] = {}
        self.int8 = Int8Twins()  # the int8 kernel's timings against the float path

    @staticmethod
    def _key(layer: Layer, block: tuple[int, int]) -> tuple:
        return (layer_key(layer, pattern=False), block)

    def add(self, decision: LayerDecision, zero_fractions: dict[str, float]) -> None:
        """Remember a measured decision of the default kernel whose outcome was clear."""
        if decision.decided_by != MEASURED or decision.kernel is not None:
            return
        if decision.timed_under_load:  # no quiet moment came: not a measurement to hand on
            return
        if decision.candidate is None or not (decision.dense_s and decision.sparse_s):
            return
        speedup = decision.dense_s / decision.sparse_s
        if 1 / TWIN_MARGIN < speedup < TWIN_MARGIN:
            return
        zeros = zero_fractions[block_label(decision.candidate)]
        key = self._key(decision.layer, decision.candidate)
        self._measured.setdefault(key, []).append((decision, zeros))

    def decision_for(
        self, layer: Layer, block: tuple[int, int], zero_fractions: dict[str, float]
    ) -> LayerDecision | None:
        """The decision of ``layer``'s measured twin, applied to ``layer``; None if it has none."""
        zeros = zero_fractions[block_label(block)]
        for twin, twin_zeros in self._measured.get(self._key(layer, block), []):
            if abs(twin.layer.sparsity - layer.sparsity) > TWIN_TOLERANCE:
                continue
            if abs(twin_zeros - zeros) > TWIN_TOLERANCE:
                continue
            return self._as_twin(twin, layer, block)
        return None

    @staticmethod
    def _as_twin(twin: LayerDecision, layer: Layer, block: tuple[int, int]) -> LayerDecision:
        speedup = twin.dense_s / twin.sparse_s
        why = (
            f"as {twin.layer.display_name} (same shapes, sparsity within "
            f"{TWIN_TOLERANCE:.0%}), measured {speedup:.2f}x over dense"
        )
        if twin.choice.format == "dense":
            choice = FormatChoice("dense", None, speedup, f"{why}: kept dense")
            weight = None
        else:
            choice = dataclasses.replace(twin.choice, reason=f"{why}: kept sparse")
            weight = BlockSparseWeight.from_dense(layer.weight, block)
        return LayerDecision(
            layer,
            choice,
            weight,
            dense_s=twin.dense_s,
            sparse_s=twin.sparse_s,
            knobs=None if twin.knobs is None else dict(twin.knobs),
            decided_by=MEASURED_AS_TWIN,
            candidate=block,
        )


def decide_layers(
    layers: list[Layer],
    backend,
    options: CompileOptions | None = None,
    *,
    records=None,
    board: BoardTimings | None = None,
    progress=None,
) -> tuple[list[LayerDecision], list[LayerReport]]:
    """:func:`decide` every layer, in order, with its report row; ``progress`` gets one line
    per layer (its format and what decided it)."""
    decisions, rows = [], []
    twins = Twins()
    for layer in layers:
        fractions = block_zero_fractions(layer.weight)
        decision = decide(
            layer,
            backend,
            options,
            records=records,
            board=board,
            zero_fractions=fractions,
            twins=twins,
        )
        decisions.append(decision)
        rows.append(layer_row(decision, fractions))
        if progress is not None:
            shown = layer.name if layer.label == layer.name else f"{layer.label} ({layer.name})"
            progress(f"  {shown}: {rows[-1].format}, {rows[-1].decision}")
    return decisions, rows


# -- timings a board measured while tuning --------------------------------------------------


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
    def load(cls, records, backend) -> BoardTimings | None:
        """The timings in the ``records`` folder for the back end's target, or None."""
        from sparse_tvm.tuning.records import LAYER_TIMING_FILE, RecordStore

        if records is None or not os.path.isfile(os.path.join(records, LAYER_TIMING_FILE)):
            return None
        entries = RecordStore(records).layer_timings(backend.tvm_target)
        return cls(entries) if entries else None

    def decide(
        self, layer: Layer, backend, *, sparsity_threshold: float | None = None
    ) -> LayerDecision | None:
        """A ``LayerDecision`` from the board's timings, or None (no entry for this layer)."""
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
            return LayerDecision(
                layer, choice, dense_s=dense_s, sparse_s=sparse_s, decided_by=MEASURED_ON_BOARD
            )
        weight = BlockSparseWeight.from_dense(layer.weight, block)
        kernel = None
        if best["knobs"] is not None:
            try:
                knobs = {k: int(v) for k, v in best["knobs"].items()}
                kernel = backend.kernel_with_knobs(weight, layer, knobs)
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
        return LayerDecision(
            layer, choice, weight, dense_s, sparse_s, kernel, decided_by=MEASURED_ON_BOARD
        )

    def note(self) -> str:
        return (
            f"{self.used} layer(s) decided by the board's timings in the records "
            "(dense and sparse measured on the board while tuning)"
        )


# -- the report row of a decision -----------------------------------------------------------


def decided_speedup(decision: LayerDecision) -> float | None:
    """The number that decided the format: the measured speedup (dense over sparse latency)
    for a timed layer, the cost model's estimate for an estimated one, else None."""
    if decision.decided_by in (MEASURED, MEASURED_AS_TWIN, MEASURED_ON_BOARD):
        if decision.dense_s and decision.sparse_s:
            return decision.dense_s / decision.sparse_s
        return None
    if decision.decided_by == ESTIMATED:
        return decision.choice.estimated_speedup
    return None


def layer_row(decision: LayerDecision, zero_fractions: dict[str, float]) -> LayerReport:
    """The report's row of one decided layer."""
    layer, choice = decision.layer, decision.choice
    dense_bytes = int(layer.weight.size * 4)
    stored = decision.weight.nbytes if decision.weight is not None else dense_bytes
    return LayerReport(
        name=layer.name,
        layer=layer.display_name,
        decided_by=decision.decided_by,
        decided_speedup=decided_speedup(decision),
        op=layer.op,
        weight_shape=list(layer.shape),
        m=layer.m * layer.batch,
        sparsity=layer.sparsity,
        zero_blocks=zero_fractions,
        format=choice.label,
        reason=choice.reason,
        dense_us=None if decision.dense_s is None else decision.dense_s * 1e6,
        sparse_us=None if decision.sparse_s is None else decision.sparse_s * 1e6,
        dense_bytes=dense_bytes,
        stored_bytes=stored,
        pattern=pattern_summary(layer.weight),
        fused=list(layer.fused) if choice.label != "dense" else [],
    )


__all__ = [
    "KEEP_SPARSE_MARGIN",
    "RECHECK_ESTIMATE",
    "TWIN_MARGIN",
    "TWIN_TOLERANCE",
    "BoardTimings",
    "LayerDecision",
    "Twins",
    "candidate_blocks",
    "decide",
    "decide_layers",
    "decided_speedup",
    "layer_row",
    "records_database",
    "tuning_blocks",
]
