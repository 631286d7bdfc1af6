"""The whole-model part of the benchmark suite: the product path, dense beside sparse.

For each model (built in code by ``sparse_tvm.examples``), timed in one interleaved
:func:`common.measure` call:

    tvm_dense        ``compile_model(model, dense=True)`` on the unpruned model
    ort              onnxruntime on the unpruned model
    sparse/<p>       ``compile_model(pruned)`` with ``pruned = prune_magnitude(model, s, p)``: what
                     a user gets (each layer measured at compile time, kept sparse only if faster;
                     the shipped tuning records apply where they match)

Each build's output is checked against onnxruntime on the same (pruned or unpruned) model. The
per-layer latencies of each sparse build are those its compiler measured (every layer built
alone, dense and sparse, ``time_evaluator`` medians), kept in the JSON for the per-layer plot.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import common  # noqa: I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)

import numpy as np
import onnx

from sparse_tvm.examples import bert_block, mlp, mobilenet
from sparse_tvm.pruning import prune_magnitude

REPORT_PATTERN = "16x1"  # the build kept whole (with its pattern pictures) for the HTML report

# name -> (description, builder); the full suite and --quick pick from these.
MODELS: dict[str, tuple[str, Callable[[], onnx.ModelProto]]] = {
    "bert_block": ("BERT-base encoder layer, seq 128 (768 hidden, 12 heads, 3072 FFN)", bert_block),
    "mobilenet": ("MobileNet-v1, 224x224, width 1.0", mobilenet),
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
}


def _inputs(model: onnx.ModelProto, seed: int) -> np.ndarray:
    (graph_input,) = model.graph.input
    shape = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


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


def run_model(
    name: str,
    sparsity: float,
    patterns: list[str],
    *,
    rounds: int,
    batch_s: float,
    seed: int = 0,
    model: onnx.ModelProto | None = None,
    say=print,
) -> dict:
    """The dense baselines and one sparse build per pattern of one model; one result dict."""
    start = time.perf_counter()
    description, builder = MODELS.get(name, (name, None))
    model = model if model is not None else builder()
    x = _inputs(model, seed + 1)
    feed = {model.graph.input[0].name: x}
    result: dict = {
        "model": name,
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
    say(f"  {name}: compiling dense ...")
    _, runner = common.compiled_runner("tvm_dense", model, x, reference, result, dense=True)
    if runner is not None:
        runners.append(runner)
    for pattern in patterns:
        label = f"sparse/{pattern}"
        pruned = prune_magnitude(model, sparsity, pattern)
        pruned_reference = common.ort_session(pruned).run(None, feed)[0]
        say(f"  {name}: compiling {sparsity:.0%} {pattern} ...")
        compiled, runner = common.compiled_runner(label, pruned, x, pruned_reference, result)
        if runner is None:
            continue
        runners.append(runner)
        totals = compiled.report.totals()
        result["builds"][label] = {
            "pattern": pattern,
            "sparse_layers": totals["sparse_layers"],
            "layers": totals["layers"],
            "weight_bytes_ratio": totals["weight_bytes_ratio"],
            "layer_rows": _layer_rows(compiled.report),
        }
        if pattern == REPORT_PATTERN:  # the build whose HTML report the suite writes
            result["builds"][label]["report"] = compiled.report.to_dict()
    say(f"  {name}: timing {len(runners)} builds ...")
    with common.ForeignLoad() as load:
        timings = common.measure(runners, rounds, batch_s)
    result["latency_s"] = {key: t.median_s for key, t in timings.items()}
    result["timing"] = {key: t.to_dict() for key, t in timings.items()}
    result["foreign_load_cores"] = load.cores
    lat = result["latency_s"]
    result["speedup"] = {
        label: {
            base: (lat[base] / lat[label] if lat.get(base) and lat.get(label) else None)
            for base in ("tvm_dense", "ort")
        }
        for label in result["builds"]
    }
    result["wall_s"] = time.perf_counter() - start
    shown = ", ".join(f"{key} {common.fmt_us(value)} us" for key, value in lat.items())
    say(f"  {name}: {shown} ({result['wall_s']:.0f} s)")
    return result
