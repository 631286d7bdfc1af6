"""``compile_model``: the whole pipeline, one named stage after another.

1. target   resolve it and take its back end, once               (sparse_tvm.backends)
2. import   ONNX -> Relax with named weight parameters           (sparse_tvm.frontend)
3. analyse  find the layers with constant weights                (sparse_tvm.analysis)
4. decide   a format per layer: rules, cost model, records,      (sparse_tvm.decision)
            measurement where the back end can time here
5. build    the back end's artefact: rewrite with its lowering,  (backend.build)
            its Relax pipeline, a loadable library or a C project
"""

from __future__ import annotations

import os
from collections.abc import Callable

import onnx

from sparse_tvm.analysis import analyse
from sparse_tvm.backends import backend_for
from sparse_tvm.decision import BoardTimings, decide_layers, records_database
from sparse_tvm.frontend import import_onnx
from sparse_tvm.options import CompileOptions
from sparse_tvm.report import ESTIMATED, TUNING_RECORDS, Report
from sparse_tvm.transform.layout_choice import dense_convs_with_work


def model_name(model) -> str:
    """The name a report gives a model: its file name, else its graph's name."""
    if isinstance(model, (str, os.PathLike)):
        return os.path.basename(os.fspath(model))
    if isinstance(model, onnx.ModelProto):
        return model.graph.name or "model"
    return "model"


def compile_model(
    model: str | os.PathLike | onnx.ModelProto,
    target: str | dict = "x86",
    options: CompileOptions | None = None,
    *,
    progress: Callable[[str], None] | None = None,
):
    """Compile an ONNX model for ``target``, making the layers sparse where that is faster.

    Returns the back end's artefact: a :class:`~sparse_tvm.runtime.CompiledModel` for a Linux
    target (CPU or GPU), a :class:`~sparse_tvm.micro.MicroProject` for a microcontroller.
    ``options`` (:class:`~sparse_tvm.options.CompileOptions`) holds every setting;
    ``progress`` is called with one line per stage and per layer (the CLI prints them).
    """
    say = progress or (lambda _line: None)
    options = options or CompileOptions()
    backend = backend_for(target)
    backend.check(options)
    untimed = None  # why the cost model decides, said in a note if it decided any layer
    measure = options.measure and not options.dense
    cannot_time = backend.untimed_reason()
    if measure and cannot_time is not None:
        measure, untimed = False, cannot_time
    elif not options.measure and not options.dense:
        untimed = (
            "formats chosen by the cost model: layer timing was off (measure=False, --no-measure)"
        )
    decide_options = CompileOptions.of(options, measure=measure)
    database = records_database(options.records, backend, options.dense)
    board = None  # timings a board measured while tuning decide where the host cannot time
    if not (measure or options.dense or options.force_block):
        board = BoardTimings.load(options.records, backend)
    say(f"importing {model_name(model)}")
    original = import_onnx(model, options.input_shapes)
    imported = backend.prepare(original, channels_first=not options.dense)
    layers = analyse(imported, gelu=backend.fuses_gelu)
    decisions, rows = decide_layers(
        layers, backend, decide_options, records=database, board=board, progress=say
    )
    sparse = {d.layer.name for d in decisions if d.choice.format != "dense"}
    kept = dense_convs_with_work(layers, sparse) if imported is original else []
    fallback = backend.prepare(original, channels_first=False) if kept else original
    if fallback is not original:
        # channels-first was chosen for convs expected sparse; those kept dense would run slow
        say(f"{len(kept)} conv(s) stay dense: compiling channels-last instead")
        imported = fallback
        decisions, rows = decide_layers(
            analyse(imported, gelu=backend.fuses_gelu),
            backend,
            decide_options,
            records=database,
            board=board,
            progress=say,
        )
    notes = []
    if untimed and any(d.decided_by in (ESTIMATED, TUNING_RECORDS) for d in decisions):
        notes.append(untimed)
    if board is not None and board.used:
        notes.append(board.note())
    report = Report(model=model_name(model), target=backend.target.name, layers=rows, notes=notes)
    return backend.build(imported, decisions, report, options, say)


__all__ = ["compile_model", "model_name"]
