"""``compile_model``: the whole pipeline, one named stage after another.

1. import   ONNX -> Relax with named weight parameters        (sparse_tvm.frontend)
2. analyse  find the layers with constant weights              (sparse_tvm.analysis)
3. choose   a format per layer, confirmed by measurement       (analysis.format_choice,
                                                                driver.layer_timing)
4. rewrite  chosen layers -> sparse kernel calls (DenseToSparse, sparse_tvm.transform)
5. bind     the remaining dense weights as constants
6. build    tvm.compile with the CPU schedule pipeline          (sparse_tvm.pipeline)
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import tvm
from tvm import relax

from sparse_tvm.analysis import block_zero_fractions, choose_format, find_layers
from sparse_tvm.analysis.format_choice import FormatChoice, format_of
from sparse_tvm.analysis.layer_names import layer_display_names
from sparse_tvm.analysis.layers import Layer
from sparse_tvm.driver.layer_timing import retime, time_dense, time_sparse
from sparse_tvm.errors import CompileError, SparseTVMError, TargetError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import ImportedModel, import_onnx
from sparse_tvm.logs import native_quiet
from sparse_tvm.pipeline import cpu_pipeline
from sparse_tvm.report import (
    ESTIMATED,
    MEASURED,
    MEASURED_ON_BOARD,
    REQUESTED,
    RULE,
    TUNING_RECORDS,
    LayerReport,
    Report,
    pattern_summary,
)
from sparse_tvm.runtime.compiled_model import CompiledModel, TensorSpec
from sparse_tvm.target import ResolvedTarget, resolve_target
from sparse_tvm.transform.dense_to_sparse import DenseToSparse, SparsePlan

# A sparse kernel must beat the dense layer by this margin to be kept: timing noise must not
# turn a tie into a slower model.
KEEP_SPARSE_MARGIN = 1.03
# a measured loss where the cost model expected at least this gain is timed again
RECHECK_ESTIMATE = 1.5

SUPPORTED_FAMILIES = ("x86", "arm", "cuda")

# platform.machine() of the hosts that can run each family's code (and so time it).
_HOST_MACHINES = {"x86": ("x86_64", "amd64", "i686"), "arm": ("aarch64", "arm64")}


@dataclass
class LayerDecision:
    """What the compiler decided for one layer, with the evidence."""

    layer: Layer
    choice: FormatChoice
    weight: BlockSparseWeight | None = None
    dense_s: float | None = None
    sparse_s: float | None = None
    kernel: tvm.tirx.PrimFunc | None = None  # a tuned kernel from records, else the default
    decided_by: str = ""  # what decided the format: sparse_tvm.report.MEASURED, ESTIMATED, ...


def model_name(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.path.basename(os.fspath(model))
    if isinstance(model, onnx.ModelProto):
        return model.graph.name or "model"
    return "model"


def runs_on_host(target: ResolvedTarget) -> bool:
    """Whether code built for ``target`` runs on this machine, so that it can be timed here."""
    return platform.machine().lower() in _HOST_MACHINES.get(target.family, ())


def preset_cross_compiler(target: ResolvedTarget) -> str | None:
    """The ``cross_compiler`` of the target's preset when this machine cannot run its code."""
    from sparse_tvm.target import presets

    preset = presets().get(target.name)
    if preset is None or runs_on_host(target):
        return None
    return preset.extra.get("cross_compiler")


def analyse(imported: ImportedModel) -> list[Layer]:
    """The layers of an imported model that have a constant weight, each with its display
    name (module path or ONNX node, see :mod:`sparse_tvm.analysis.layer_names`)."""
    func = imported.mod["main"]
    weights = {var: imported.params[var.name] for var in func.params if var.name in imported.params}
    layers = find_layers(func, weights)
    names = layer_display_names([layer.name for layer in layers], imported.onnx_model)
    for layer, name in zip(layers, names, strict=True):
        layer.display_name = name
    return layers


def decide(
    layer: Layer,
    target: ResolvedTarget,
    *,
    dense: bool = False,
    sparsity_threshold: float | None = None,
    measure: bool = True,
    zero_fractions: dict[str, float] | None = None,
    force_block: tuple[int, int] | None = None,
    records=None,
) -> LayerDecision:
    """Choose the format of one layer; with ``measure`` keep sparse only if measured faster.

    ``force_block`` skips the cost model and the measurement and compiles the layer sparse
    with that block shape (tests and benchmarks use it to exercise every kernel).
    ``records`` (a MetaSchedule database of tuned kernels): among the candidate formats with
    a tuned kernel the fastest is taken, with its tuned kernel.
    """
    if dense:
        choice = FormatChoice("dense", None, 1.0, "dense build requested")
        return LayerDecision(layer, choice, decided_by=REQUESTED)
    if records is not None and target.family == "cuda":
        # GPU records hold tuned kernels of the format the cost model picks, not formats
        from sparse_tvm.tuning.tune_cuda import with_cuda_record

        chosen = decide(
            layer,
            target,
            sparsity_threshold=sparsity_threshold,
            measure=measure,
            zero_fractions=zero_fractions,
            force_block=force_block,
        )
        return with_cuda_record(chosen, target.tvm_target, records)
    if not layer.sparse_capable:
        choice = FormatChoice("dense", None, 1.0, layer.dense_reason)
        return LayerDecision(layer, choice, decided_by=RULE)
    if force_block is not None:
        block = tuple(force_block)
        weight = BlockSparseWeight.from_dense(layer.weight, block)
        choice = FormatChoice(format_of(block), block, 0.0, "forced block shape, not timed")
        return LayerDecision(layer, choice, weight, decided_by=REQUESTED)
    choice = choose_format(
        layer.weight, layer.m, sparsity_threshold=sparsity_threshold, zero_fractions=zero_fractions
    )
    below_threshold = sparsity_threshold is not None and layer.sparsity < sparsity_threshold
    if below_threshold:
        return LayerDecision(layer, choice, decided_by=RULE)
    if choice.format == "dense" and records is None:
        return LayerDecision(layer, choice, decided_by=ESTIMATED)
    tuned = None
    if records is not None:
        tuned = _tuned_choice(layer, target, records, zero_fractions)
    if tuned is not None:
        choice, weight, kernel, kernel_id = tuned
        decided_by, untimed = TUNING_RECORDS, "not timed against dense"
    elif choice.format == "dense":
        return LayerDecision(layer, choice, decided_by=ESTIMATED)
    else:
        weight = BlockSparseWeight.from_dense(layer.weight, choice.block)
        kernel, kernel_id = None, "default"
        decided_by, untimed = ESTIMATED, "not timed"
    decision = LayerDecision(layer, choice, weight, kernel=kernel, decided_by=decided_by)
    if not measure:
        decision.choice = dataclasses.replace(choice, reason=f"{choice.reason}; {untimed}")
    else:
        tvm_target = target.tvm_target
        decision.dense_s = time_dense(layer, tvm_target)
        decision.sparse_s = time_sparse(
            layer, weight, tvm_target, kernel=kernel, kernel_id=kernel_id
        )
        if kernel is not None:
            # a record can lose to the default schedule (few trials, another machine's load,
            # a default improved since): keep whichever kernel is measured faster
            default_s = time_sparse(layer, weight, tvm_target)
            if default_s < decision.sparse_s:
                decision.sparse_s, decision.kernel = default_s, None
                decision.choice = FormatChoice(
                    choice.format,
                    choice.block,
                    0.0,
                    f"default schedule (measured faster than the record, {choice.reason})",
                )
        decision.decided_by = MEASURED
        rechecked = ""
        if (
            decision.sparse_s * KEEP_SPARSE_MARGIN > decision.dense_s
            and choice.estimated_speedup >= RECHECK_ESTIMATE
        ):
            # the cost model expected a clear gain: time both again before giving it up
            used = kernel_id if decision.kernel is not None else "default"
            timing = retime(layer, weight, tvm_target, decision.kernel, used)
            decision.dense_s, decision.sparse_s = timing.dense_s, timing.sparse_s
            rechecked = " (timed again, alternating with dense: the first timing disagreed)"
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
        else:
            found = decision.choice.reason  # how the candidate was found, then what decided
            if tuned is None:
                found = f"cost model estimated {choice.estimated_speedup:.1f}x"
            decision.choice = dataclasses.replace(
                decision.choice,
                reason=f"{found}; measured {measured:.2f}x over dense{rechecked}: kept sparse",
            )
    return decision


def _records_database(records, target: ResolvedTarget, dense: bool):
    """The tuning records to apply: the user's folder, else those shipped for the family."""
    if dense:
        return None
    if records is not None:
        from sparse_tvm.tuning.records import RecordStore

        if not os.path.isdir(records):
            raise SparseTVMError(
                f"records folder '{records}' not found: tune first with "
                "`sparse-tvm tune MODEL --records DIR`, or drop --records"
            )
        return RecordStore(records).database
    from importlib import resources

    shipped = resources.files("sparse_tvm") / "_data" / "schedules" / f"{target.family}.json"
    if not shipped.is_file():
        return None
    from sparse_tvm.tuning.records import load_exported

    return load_exported(str(shipped))


def _tuned_choice(layer: Layer, target: ResolvedTarget, records, zero_fractions):
    """The fastest candidate format with a tuned kernel in ``records``, or None."""
    from sparse_tvm.driver.tune_model import candidate_blocks
    from sparse_tvm.transform.dense_to_sparse import kernel_options
    from sparse_tvm.tuning import lookup_kernel

    fractions = zero_fractions or block_zero_fractions(layer.weight)
    best = None
    for block in candidate_blocks(layer, fractions):
        weight = BlockSparseWeight.from_dense(layer.weight, block)
        found = lookup_kernel(
            weight,
            layer.m,
            **kernel_options(layer),
            target=target.tvm_target,
            database=records,
        )
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


def decided_speedup(decision: LayerDecision) -> float | None:
    """The number that decided the format: the measured speedup (dense over sparse latency)
    for a timed layer, the cost model's estimate for an estimated one, else None."""
    if decision.decided_by in (MEASURED, MEASURED_ON_BOARD):
        if decision.dense_s and decision.sparse_s:
            return decision.dense_s / decision.sparse_s
        return None
    if decision.decided_by == ESTIMATED:
        return decision.choice.estimated_speedup
    return None


def layer_row(decision: LayerDecision, zero_fractions: dict[str, float]) -> LayerReport:
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
    )


def compile_model(
    model: str | os.PathLike | onnx.ModelProto,
    target: str | dict = "x86",
    *,
    records: str | os.PathLike | None = None,
    sparsity_threshold: float | None = None,
    dense: bool = False,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    measure: bool = True,
    progress: Callable[[str], None] | None = None,
    force_block: tuple[int, int] | None = None,
    cross_compiler: str | None = None,
) -> CompiledModel:
    """Compile an ONNX model, making the layers sparse where that is faster.

    Parameters
    ----------
    model
        Path to an ``.onnx`` file or an ``onnx.ModelProto``.
    target
        A preset name (``sparse-tvm targets``) or a TVM target as a JSON string or dict.
    records
        Tuning records folder written by ``sparse-tvm tune``; without it the records shipped
        in ``schedules/`` apply where they match a layer, and the default schedules elsewhere.
    sparsity_threshold
        Layers whose sparsity is below this stay dense without being measured.
    dense
        Compile every layer dense (the baseline build).
    input_shapes
        Static shapes for inputs with dynamic dimensions, by input name.
    measure
        Measure each sparse candidate against its dense layer and keep the faster (default).
        Without it the calibrated cost model alone decides; it also decides for a target
        whose code this machine cannot run (aarch64 on an x86 host), and the report says so.
    progress
        Called with one line per stage and per layer (the CLI prints them).
    cross_compiler
        The C compiler that links the exported library (default: the preset's
        ``cross_compiler`` when the target is not this machine, else the host's).
    force_block
        Compile every sparse-capable layer sparse with this block shape, unmeasured
        (for tests and benchmarks: it can make a model slower).
    """
    say = progress or (lambda _line: None)
    resolved = resolve_target(target)
    if cross_compiler is None:
        cross_compiler = preset_cross_compiler(resolved)
    if cross_compiler is not None and shutil.which(cross_compiler) is None:
        raise SparseTVMError(
            f"cross compiler '{cross_compiler}' not found on PATH: install it or give its full path"
        )
    if sparsity_threshold is not None and not 0.0 <= sparsity_threshold <= 1.0:
        raise SparseTVMError(f"sparsity threshold {sparsity_threshold} is outside [0, 1]")
    if resolved.family == "micro":
        raise TargetError(
            f"'{resolved.name}' is a microcontroller: it gets a C project, not a loadable model: "
            f"use `sparse-tvm compile MODEL --target {resolved.name} -o out/` or "
            "sparse_tvm.micro.compile_micro"
        )
    if resolved.family not in SUPPORTED_FAMILIES:
        raise TargetError(
            f"target family '{resolved.family}' ({resolved.name}) is not supported "
            f"by this release: use an x86, Arm (aarch64, rpi4) or CUDA (cuda, cuda-sm90) preset"
        )
    notes = []
    untimed = None  # why the cost model decides, said in a note if it decided any layer
    if measure and not dense and resolved.family == "cuda":
        measure = False  # layer timing runs CPU builds: nothing times GPU kernels yet
        untimed = (
            "formats chosen by the cost model: sparse-tvm does not time layers on a GPU "
            "(the CUDA kernels are compiled, not measured)"
        )
    elif measure and not dense and not runs_on_host(resolved):
        measure = False
        untimed = (
            f"formats chosen by the cost model: this {platform.machine()} machine cannot time "
            f"{resolved.family} code (tune on the board over RPC to measure)"
        )
    elif not measure and not dense:
        untimed = (
            "formats chosen by the cost model: layer timing was off (measure=False, --no-measure)"
        )
    database = _records_database(records, resolved, dense)
    board = None  # timings a board measured while tuning decide where the host cannot time
    if not (measure or dense or force_block):
        from sparse_tvm.driver.tune_model import BoardTimings

        board = BoardTimings.load(records, resolved)
    say(f"importing {model_name(model)}")
    imported = import_onnx(model, input_shapes)
    layers = analyse(imported)
    decisions, rows = [], []
    for layer in layers:
        fractions = block_zero_fractions(layer.weight)
        decision = board and board.decide(layer, resolved, sparsity_threshold=sparsity_threshold)
        if decision is not None:
            decision.decided_by = MEASURED_ON_BOARD
        else:
            decision = decide(
                layer,
                resolved,
                dense=dense,
                sparsity_threshold=sparsity_threshold,
                measure=measure,
                zero_fractions=fractions,
                force_block=force_block,
                records=database,
            )
        decisions.append(decision)
        rows.append(layer_row(decision, fractions))
        shown = layer.name if layer.label == layer.name else f"{layer.label} ({layer.name})"
        say(f"  {shown}: {rows[-1].format}, {rows[-1].decision}")
    if untimed and any(d.decided_by in (ESTIMATED, TUNING_RECORDS) for d in decisions):
        notes.append(untimed)
    if board is not None and board.used:
        notes.append(board.note())
    plans = [SparsePlan(d.layer, d.weight, d.kernel) for d in decisions if d.weight is not None]
    say(f"building {len(plans)} sparse and {len(layers) - len(plans)} dense layers")
    executable = build(imported, plans, resolved)
    report = Report(model=model_name(model), target=resolved.name, layers=rows, notes=notes)
    dynamic = imported.input_dynamic_dims or [None] * len(imported.input_names)
    inputs = [
        TensorSpec(n, tuple(s), d, dyn)
        for n, s, d, dyn in zip(
            imported.input_names, imported.input_shapes, imported.input_dtypes, dynamic
        )
    ]
    outputs = _output_specs(imported)
    return CompiledModel(
        cross_compiler=cross_compiler,
        executable=executable,
        inputs=inputs,
        outputs=outputs,
        report=report,
        target=resolved.to_json(),
    )


def build(
    imported: ImportedModel, plans: list[SparsePlan], target: ResolvedTarget
) -> tvm.runtime.Executable:
    """Rewrite the planned layers, bind the weights left dense, and compile."""
    mod = DenseToSparse(plans, target.tvm_target)(imported.mod)
    present = {p.name for p in mod["main"].params}
    binding = {
        name: tvm.runtime.tensor(value)
        for name, value in imported.params.items()
        if name in present
    }
    mod = relax.transform.BindParams("main", binding)(mod)
    if target.family == "cuda":
        from sparse_tvm.pipeline.cuda import cuda_pipeline

        pipeline = cuda_pipeline(target.tvm_target)
    else:
        pipeline = cpu_pipeline(target.tvm_target)
    try:
        with native_quiet():
            return tvm.compile(mod, target=target.tvm_target, relax_pipeline=pipeline)
    except Exception as err:  # TVM reports failures as many exception types
        message = " ".join(str(err).split())[:300]
        raise CompileError(
            f"TVM failed to compile the model ({type(err).__name__}: {message}); "
            "try --dense, and report the model if that fails too"
        ) from err


def _output_specs(imported: ImportedModel) -> list[TensorSpec]:
    ret = imported.mod["main"].ret_ty
    fields = ret.fields if isinstance(ret, relax.TupleType) else [ret]
    specs = []
    for name, field in zip(imported.output_names, fields):
        shape = tuple(int(s) for s in field.shape) if field.shape is not None else ()
        specs.append(TensorSpec(name, shape, str(field.dtype)))
    return specs


__all__ = ["LayerDecision", "analyse", "build", "compile_model", "decide"]
