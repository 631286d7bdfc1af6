"""Where a compiled CNN spends its time: each kernel call of a run, timed in the run, bucketed.

Each call is timed as ``compiled.profile`` times it (:mod:`sparse_tvm.runtime.profile`: the VM's
instrument hook, a callback before and after every ``Call`` instruction, on a VM of its own; a
call's time is its median over the runs; VM builtins are not kernels and are skipped); this
module buckets the calls the CNN way.

Timed in the run, a kernel sees the caches and the thread pool as the model leaves them (timed
alone, the layers came out ~30 % faster than in the model: their weights stay cached). Each
interval also holds part of the callback's own cost (the VM converts the arguments to Python
objects, ~1-3 µs a call), so the buckets' sum is close to, and may exceed, the latency measured
without the hook: ``sum_ms`` beside ``end_to_end_ms`` says by how much. The buckets, by the
called PrimFunc:

    dense_conv      a ``conv2d`` PrimFunc (TVM's fused names: ``fused_conv2d_add_relu``...)
                    with groups == 1
    depthwise_conv  a ``conv2d`` PrimFunc with groups > 1 (all depthwise in these models), and
                    ``depthwise_nchw_*``, the channels-first depthwise kernel
    sparse_conv     ``sparse_<r>x<c>_<layer>`` of a Conv layer and ``im2col_<layer>``
    other           everything else: layout transposes, pools, residual adds, the activations
                    after a sparse kernel, the classifier (dense, or sparse: its ``sparse_``
                    kernel is a Gemm's, not a Conv's)

Groups are read from the conv's argument shapes, which is robust to the fusion (the name says
only ``conv2d``) and to both layouts the CPU pipeline emits: the data is the first argument,
the weight the second, the output the last; in NHWC / HWIO the weight's axis 2 is the input
channels per group and its axis 3 the output channels (= the output's axis 3), in NCHW / OIHW
its axes 1 and 0 (= the output's axis 1), in the packed panels ``(c_out / nr, kh, kw, c_in,
nr)`` a channels-last weight is read through, axis 3 and axes 0 x 4; groups = the data's
channels / the weight's input channels. A sparse kernel's layer is matched against the ONNX Conv weights' names.
"""

from __future__ import annotations


import common  # noqa: F401, I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)

import numpy as np
import onnx
import tvm

from sparse_tvm.runtime import profile

BUCKETS = ("dense_conv", "depthwise_conv", "sparse_conv", "other")
BUCKET_LABELS = {
    "dense_conv": "dense conv",
    "depthwise_conv": "depthwise conv",
    "sparse_conv": "sparse conv (+ im2col)",
    "other": "other",
}


def is_cnn(model: onnx.ModelProto) -> bool:
    """Whether the model has a Conv (the split is computed for CNN builds only)."""
    return any(node.op_type == "Conv" for node in model.graph.node)


def conv_layer_names(model: onnx.ModelProto) -> set[str]:
    """The Conv weights' names as sparse-tvm writes them into kernel names (``sanitize``)."""
    from sparse_tvm.transform.lowering import sanitize

    return {sanitize(node.input[1]) for node in model.graph.node if node.op_type == "Conv"}


def _shapes(args: list) -> tuple:
    return tuple(tuple(int(d) for d in a.shape) if hasattr(a, "shape") else None for a in args)


def conv_groups(shapes: tuple) -> int | None:
    """A conv's groups from its argument shapes (data first, weight second, output last), in
    NHWC / HWIO or NCHW / OIHW; a channels-last weight packed at compile time into
    ``(c_out / nr, kh, kw, c_in, nr)`` panels counts as its HWIO shape. None where neither
    layout fits."""
    if len(shapes) < 3 or any(s is None for s in (shapes[0], shapes[1], shapes[-1])):
        return None
    data, weight, out = shapes[0], shapes[1], shapes[-1]
    if len(weight) == 5:  # the packed panels
        weight = (weight[1], weight[2], weight[3], weight[0] * weight[4])
    if len(data) != 4 or len(weight) != 4 or len(out) != 4:
        return None
    layouts = (
        (data[3], weight[2], weight[3], out[3]),  # NHWC / HWIO
        (data[1], weight[1], weight[0], out[1]),  # NCHW / OIHW
    )
    for c_in, w_in, w_out, c_out in layouts:
        if w_out == c_out and w_in > 0 and c_in % w_in == 0:
            return c_in // w_in
    return None


def _is_layer(rest: str, layers: set[str]) -> bool:
    """``rest`` names one of ``layers``, maybe with TVM's numeric de-duplication suffix."""
    return any(rest == n or (rest.startswith(n) and rest[len(n) :].isdigit()) for n in layers)


def classify(symbol: str, shapes: tuple, conv_layers: set[str]) -> str:
    """The bucket of one kernel call (see the module's docstring)."""
    if symbol.startswith("im2col_"):
        return "sparse_conv"
    if symbol.startswith("depthwise_nchw_"):
        return "depthwise_conv"
    if symbol.startswith("sparse_"):
        parts = symbol.split("_", 2)
        return "sparse_conv" if len(parts) == 3 and _is_layer(parts[2], conv_layers) else "other"
    if "conv2d" in symbol:
        groups = conv_groups(shapes)
        return "depthwise_conv" if groups is not None and groups > 1 else "dense_conv"
    return "other"


def timed_calls(executable, x: np.ndarray, runs: int = 20) -> list[dict]:
    """Every kernel call of a run of ``main`` on ``x``, in order: symbol, argument shapes and
    the median seconds of that call over ``runs`` instrumented runs (sparse-tvm's own
    :func:`sparse_tvm.runtime.profile.timed_calls`, what ``compiled.profile`` is built on)."""
    arg = tvm.runtime.tensor(np.ascontiguousarray(x))
    return profile.timed_calls(executable, [arg], tvm.cpu(), runs)


def kernel_rows(executable, x: np.ndarray, conv_layers: set[str], runs: int = 20) -> list[dict]:
    """One row per distinct kernel (symbol and shapes) of a run: bucket, calls, µs per call
    (the mean over its calls of each call's median), shapes."""
    grouped: dict[tuple, dict] = {}
    for call in timed_calls(executable, x, runs):
        key = (call["symbol"], call["shapes"])
        row = grouped.setdefault(
            key,
            {
                "symbol": call["symbol"],
                "bucket": classify(call["symbol"], call["shapes"], conv_layers),
                "calls": 0,
                "total_us": 0.0,
                "shapes": [list(s) if s is not None else None for s in call["shapes"]],
            },
        )
        row["calls"] += 1
        row["total_us"] += call["seconds"] * 1e6
    for row in grouped.values():
        row["us_per_call"] = row.pop("total_us") / row["calls"]
    return list(grouped.values())


def summarise(rows: list[dict], end_to_end_s: float | None = None) -> dict:
    """The four buckets (ms per run and % of the buckets' sum) of :func:`kernel_rows`."""
    ms = dict.fromkeys(BUCKETS, 0.0)
    calls = dict.fromkeys(BUCKETS, 0)
    for row in rows:
        ms[row["bucket"]] += row["us_per_call"] * row["calls"] / 1e3
        calls[row["bucket"]] += row["calls"]
    total = sum(ms.values())
    return {
        "buckets": {
            name: {
                "ms": ms[name],
                "pct": 100 * ms[name] / total if total else 0.0,
                "calls": calls[name],
            }
            for name in BUCKETS
        },
        "sum_ms": total,
        "end_to_end_ms": None if end_to_end_s is None else end_to_end_s * 1e3,
        "kernel_calls": sum(calls.values()),
        "rows": sorted(rows, key=lambda r: -r["us_per_call"] * r["calls"]),
    }


def time_split(
    compiled, x: np.ndarray, model: onnx.ModelProto, end_to_end_s: float | None = None, runs=20
) -> dict:
    """The time split of one compiled CNN on input ``x`` (see the module's docstring);
    ``end_to_end_s``: its latency measured without the hook, kept beside the sum."""
    rows = kernel_rows(compiled.executable, x, conv_layer_names(model), runs)
    result = summarise(rows, end_to_end_s)
    result["runs"] = runs
    result["method"] = (
        "Relax VM set_instrument: perf_counter around every kernel call in the run, median "
        f"over {runs} runs per call, summed per bucket"
    )
    return result
