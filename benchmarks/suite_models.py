"""The whole-model part of the benchmark suite: the product path, dense beside sparse.

For each model (built in code by ``sparse_tvm.examples``), timed in one interleaved
:func:`common.measure` call:

    tvm_dense        ``compile_model(model, dense=True)`` on the unpruned model
    ort              onnxruntime on the unpruned model
    openvino         OpenVINO's CPU plugin on the unpruned model (f32, latency hint, one stream;
                     left out where openvino is not installed)
    sparse/<p>       ``compile_model(pruned)`` with ``pruned = prune_magnitude(model, s, p)``: what
                     a user gets (each layer measured at compile time, kept sparse only if faster;
                     the shipped tuning records apply where they match)

and, only where ``$DEEPSPARSE_PYTHON`` names DeepSparse's own environment, ``deepsparse`` on
the unpruned model and ``deepsparse/<p>`` on each pruned one (the same sparse model sparse-tvm
compiles: DeepSparse's own sparse kernels), timed afterwards in a subprocess (not interleaved).

Each build's output is checked against onnxruntime on the same (pruned or unpruned) model. The
per-layer latencies of each sparse build are those its compiler measured (every layer built
alone, dense and sparse, ``time_evaluator`` medians), kept in the JSON for the per-layer plot.
For a CNN, every sparse-tvm build also gets its time split (``suite_split``): dense convs,
depthwise convs, sparse convs and the rest, in ms per run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import common  # noqa: I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)

import numpy as np
import onnx
import suite_split

from sparse_tvm.examples import bert_block, mlp, mobilenet, mobilenet_v2, resnet50
from sparse_tvm.pruning import prune_magnitude

# The build kept whole (with its pattern pictures) for the HTML report: this pattern's, else the
# first pattern's.
REPORT_PATTERN = "16x1"

# name -> (description, builder); the full suite and --quick pick from these.
MODELS: dict[str, tuple[str, Callable[[], onnx.ModelProto]]] = {
    "bert_block": ("BERT-base encoder layer, seq 128 (768 hidden, 12 heads, 3072 FFN)", bert_block),
    "mobilenet": ("MobileNet-v1, 224x224, width 1.0", mobilenet),
    "mobilenet_v2": ("MobileNet-v2, 224x224, width 1.0", mobilenet_v2),
    "resnet50": ("ResNet-50 (v1.5), 224x224", resnet50),
    "mobilenet_v2_96": ("MobileNet-v2, 96x96, width 1.0", lambda: mobilenet_v2(size=96)),
    "mlp": (
        "MLP 784-2048-2048-10, batch 128",
        lambda: mlp(batch=128, features=784, hidden=2048, classes=10),
    ),
    "mlp_small": (
        "MLP 256-512-512-10, batch 32",
        lambda: mlp(batch=32, features=256, hidden=512, classes=10),
    ),
    "bert_small": (
        "BERT-like layer, seq 32 (256 hidden, 4 heads, 1024 FFN)",
        lambda: bert_block(seq=32, hidden=256, heads=4, ffn=1024),
    ),
    # the real sentence-transformer (needs the test extra: torch, transformers, the packaged model)
    "minilm": (
        "all-MiniLM-L6-v2, seq 128 (6 layers, 384 hidden, 12 heads, 1536 FFN)",
        lambda: _minilm().minilm(batch=1, seq=128),
    ),
}
# A smaller variant is checked against its family's goals (for information: the goals are set at
# 224x224).
FAMILY = {"mobilenet_v2_96": "mobilenet_v2"}
# What the sparse builds are compared with (OpenVINO and DeepSparse only where they ran).
BASELINES = ("tvm_dense", "ort", "openvino", "deepsparse")


def family(name: str) -> str:
    """The model family whose goals apply to ``name`` (itself unless a smaller variant)."""
    return FAMILY.get(name, name)


def _minilm():
    from sparse_tvm.examples import minilm

    return minilm


def _inputs(name: str, model: onnx.ModelProto, seed: int) -> np.ndarray | dict[str, np.ndarray]:
    """The timed input: for a float model one random array; for MiniLM the token ids of a
    real sentence from its own tokenizer (a dict by input name)."""
    if family(name) == "minilm":
        return _minilm().minilm_inputs()
    (graph_input,) = model.graph.input
    shape = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _feed(model: onnx.ModelProto, x: np.ndarray | dict[str, np.ndarray]) -> dict:
    return dict(x) if isinstance(x, dict) else {model.graph.input[0].name: x}


def build_spec(entry: str, sparsity: float) -> tuple[str, float]:
    """A build's (block pattern, sparsity) from its entry in a preset's ``model_patterns``:
    ``"4x1"`` is that pattern at the suite's sparsity, ``"1x1@0.8"`` 1x1 at 80 %."""
    pattern, _, at = entry.partition("@")
    return pattern, float(at) if at else sparsity


def _layer_rows(report) -> list[dict]:
    """The per-layer rows of a report, without the pattern pictures (the JSON stays small)."""
    return [
        {
            "name": row.name,
            "op": row.op,
            "weight_shape": row.weight_shape,
            "m": row.m,
            "sparsity": row.sparsity,
            "format": row.format,
            "dense_us": row.dense_us,
            "sparse_us": row.sparse_us,
            "dense_bytes": row.dense_bytes,
            "stored_bytes": row.stored_bytes,
        }
        for row in report.layers
    ]


def _openvino_runner(model: onnx.ModelProto, feed: dict, reference: np.ndarray, result: dict):
    """OpenVINO on the unpruned model with its output checked, or None (not installed: the
    suite said so once; failed: recorded in ``result["errors"]``)."""
    if common.openvino_module() is None:
        return None
    try:
        start = time.perf_counter()
        runner = common.openvino_runner("openvino", model, feed)
        result["compile_s"]["openvino"] = time.perf_counter() - start
        runner.call()
        result["max_rel_err"]["openvino"] = common.rel_err(runner.fetch(), reference)
        result["openvino_config"] = runner.info
        return runner
    except Exception as err:  # keep going without the column's value for this model
        result["errors"]["openvino"] = common.error_text(err)
        return None


def _deepsparse(
    model: onnx.ModelProto,
    feed: dict,
    reference: np.ndarray,
    result: dict,
    rounds,
    batch_s,
    key: str = "deepsparse",
):
    """DeepSparse on ``model`` in its own process, where ``$DEEPSPARSE_PYTHON`` is set: its
    timing into ``result`` (``latency_s``, ``timing``) under ``key`` (``deepsparse`` for the
    unpruned model, ``deepsparse/<pattern>`` for a pruned one), its output checked."""
    if common.deepsparse_python() is None:
        return
    try:
        timing, output = common.deepsparse_timing(model, feed, rounds, batch_s)
    except Exception as err:  # a broken DeepSparse environment costs the column, not the run
        result["errors"][key] = common.error_text(err)
        return
    result["max_rel_err"][key] = common.rel_err(output, reference)
    result["deepsparse_version"] = timing.pop("version", None)
    result["latency_s"][key] = timing["median_s"]
    result["timing"][key] = timing


def _build_entry(compiled, pattern: str, sparsity: float, keep_report: bool) -> dict:
    """What the JSON keeps of one sparse build: its pattern and sparsity, sparse layers, bytes,
    per-layer rows, and with ``keep_report`` the whole report (for the suite's HTML page)."""
    totals = compiled.report.totals()
    entry = {
        "pattern": pattern,
        "sparsity": sparsity,
        "sparse_layers": totals["sparse_layers"],
        "layers": totals["layers"],
        "weight_bytes_ratio": totals["weight_bytes_ratio"],
        "layer_rows": _layer_rows(compiled.report),
    }
    if keep_report:
        entry["report"] = compiled.report.to_dict()
    return entry


def _speedups(result: dict) -> dict:
    """Each sparse build's speed-up over every baseline that ran (None where one did not)."""
    lat = result["latency_s"]
    return {
        label: {
            base: (lat[base] / lat[label] if lat.get(base) and lat.get(label) else None)
            for base in BASELINES
            if base in lat or base in ("tvm_dense", "ort")
        }
        for label in result["builds"]
    }


def _time_splits(result: dict, compiled: dict, model, x, runs: int) -> None:
    """The time split of every sparse-tvm build of a CNN into ``result["time_split"]``."""
    for label, build in compiled.items():
        try:
            result["time_split"][label] = suite_split.time_split(
                build, x, model, result["latency_s"].get(label), runs=runs
            )
        except Exception as err:  # the split is extra: its failure must not cost the timings
            result["errors"][f"time_split {label}"] = common.error_text(err)


def _compile_builds(model: onnx.ModelProto, x, reference, result: dict, say) -> tuple[dict, dict]:
    """sparse-tvm's dense build and one build per pattern entry of the pruned model, each
    checked against onnxruntime on its model: (label -> CompiledModel, failures in ``result``;
    entry -> (the pruned model, onnxruntime's output on it)); compile times in ``result``."""
    name, sparsity, patterns = result["model"], result["sparsity_target"], result["patterns"]
    feed = _feed(model, x)
    report_pattern = REPORT_PATTERN if REPORT_PATTERN in patterns else next(iter(patterns), None)
    say(f"  {name}: compiling dense ...")
    compiled, _ = common.compiled_runner("tvm_dense", model, x, reference, result, dense=True)
    builds = {} if compiled is None else {"tvm_dense": compiled}
    pruned_models = {}
    for entry in patterns:
        pattern, at = build_spec(entry, sparsity)
        label = f"sparse/{entry}"
        pruned = prune_magnitude(model, at, pattern)
        pruned_reference = common.ort_session(pruned).run(None, feed)[0]
        pruned_models[entry] = (pruned, pruned_reference)
        say(f"  {name}: compiling {at:.0%} {pattern} ...")
        compiled, _ = common.compiled_runner(label, pruned, x, pruned_reference, result)
        if compiled is not None:
            builds[label] = compiled
            result["builds"][label] = _build_entry(compiled, pattern, at, entry == report_pattern)
    return builds, pruned_models


def _op_splits(result: dict, compiled: dict, x, runs: int) -> None:
    """Each build's time by operator (``compiled.profile``) into ``result["op_split"]``."""
    for label, build in compiled.items():
        try:
            profile = build.profile(_feed_for(build, x), runs=runs)
        except Exception as err:  # the split is extra: its failure must not cost the timings
            result["errors"][f"op_split {label}"] = common.error_text(err)
            continue
        result["op_split"][label] = {
            "groups": profile.by_group(),
            "sum_ms": profile.sum_ms,
            "end_to_end_ms": profile.end_to_end_ms,
        }


def _feed_for(compiled, x):
    return [x] if isinstance(x, np.ndarray) else x


def run_model(
    name: str,
    sparsity: float,
    patterns: list[str],
    *,
    rounds: int,
    batch_s: float,
    seed: int = 0,
    model: onnx.ModelProto | None = None,
    split_runs: int = 20,
    say=print,
) -> dict:
    """The dense baselines and one sparse build per pattern of one model; one result dict.

    ``split_runs``: the instrumented runs of the time split (per call the median): the CNN
    buckets for a CNN, the time by operator (``compiled.profile``) for the other models.
    """
    start = time.perf_counter()
    description, builder = MODELS.get(name, (name, None))
    model = model if model is not None else builder()
    x = _inputs(name, model, seed + 1)
    feed = _feed(model, x)
    result: dict = {
        "model": name,
        "family": family(name),
        "description": description,
        "sparsity_target": sparsity,
        "patterns": patterns,
        "errors": {},
        "max_rel_err": {},
        "compile_s": {},
        "builds": {},
    }
    session = common.ort_session(model)
    reference = session.run(None, feed)[0]
    runners = [common.ort_runner("ort", session, feed)]
    runners += [r for r in [_openvino_runner(model, feed, reference, result)] if r is not None]
    compiled_builds, pruned_models = _compile_builds(model, x, reference, result, say)
    runners += [common.tvm_runner(label, c, x) for label, c in compiled_builds.items()]
    say(f"  {name}: timing {len(runners)} builds ...")
    with common.ForeignLoad() as load:
        timings = common.measure(runners, rounds, batch_s)
    result["latency_s"] = {key: t.median_s for key, t in timings.items()}
    result["timing"] = {key: t.to_dict() for key, t in timings.items()}
    result["foreign_load_cores"] = load.cores
    _deepsparse(model, feed, reference, result, rounds, batch_s)
    for entry, (pruned, pruned_reference) in pruned_models.items():  # the same sparse model
        _deepsparse(
            pruned, feed, pruned_reference, result, rounds, batch_s, key=f"deepsparse/{entry}"
        )
    result["speedup"] = _speedups(result)
    if not suite_split.is_cnn(model):
        say(f"  {name}: time by operator of {len(compiled_builds)} builds ...")
        result["op_split"] = {}
        _op_splits(result, compiled_builds, x, split_runs)
    else:
        say(f"  {name}: time split of {len(compiled_builds)} builds ...")
        result["time_split"] = {}
        _time_splits(result, compiled_builds, model, x, split_runs)
    result["wall_s"] = time.perf_counter() - start
    shown = ", ".join(
        f"{key} {common.fmt_us(value)} us" for key, value in result["latency_s"].items()
    )
    say(f"  {name}: {shown} ({result['wall_s']:.0f} s)")
    return result
