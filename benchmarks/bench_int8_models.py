"""Benchmark the int8 path end to end: prune -> quantize -> compile, against onnxruntime.

Each case is an ONNX model pruned to 90 % in 16x4 blocks (the int8 kernel's block; the float
kernels run it as 16x1) and quantized by ``st.quantize`` (QDQ, per-channel symmetric int8
weights, uint8 activations), or with ``--quantization dynamic`` by onnxruntime's
``quantize_dynamic`` (MatMulInteger; the activations' scale computed at run time). In the
same process, interleaved round by round:

    st int8      sparse-tvm's build of the quantized model (int8 VNNI kernels where measured
                 faster than the float path, QDQ ops as the model has them)
    st float32   sparse-tvm's build of the pruned float model
    ort int8     onnxruntime on the quantized model (its int8 kernels, dense)
    ort float32  onnxruntime on the pruned float model

Cases: ``ffn.up`` / ``ffn.down`` (a BERT-base FFN layer alone, ``--m`` tokens (128), with its
QDQ ops), ``bert_layer`` (a BERT-base encoder layer, 128 tokens), ``minilm``
(all-MiniLM-L6-v2, 128 tokens; needs the test extra's packaged weights) and ``resnet50``
(ResNet-50 with conv biases instead of batch norms, one 112x112 image: its convs run int8
through the 8-bit im2col where the model runs channels-first). The
accuracy column is the int8 build's max error relative to onnxruntime's run of the same
quantized model (issue 16: within 1e-2), and both against the float model.

On AVX-512 VNNI, or AVX2 (the ``vpmaddwd`` kernel; onnxruntime's default int8 kernels there
saturate, so the accuracy column compares with its exact mode,
``sparse_tvm.runtime.onnxruntime_reference``); a host with neither prints so and exits 0. Run
from the repository root::

    python benchmarks/bench_int8_models.py [--cases ffn.up ffn.down minilm] [--rounds 11]
"""

from __future__ import annotations

import argparse
import json
import sys

import common  # noqa: I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)
import numpy as np
import onnx

import sparse_tvm as st
from sparse_tvm.target import resolve_target
from sparse_tvm.target.machine import int8_isa

METHODS = ["st_int8", "st_float32", "ort_int8", "ort_float32"]
FFN = {"ffn.up": (3072, 768), "ffn.down": (768, 3072)}


def ffn_case(layer: str, m: int, seed: int) -> tuple[onnx.ModelProto, dict, dict]:
    """The FFN layer (x @ W + b, ReLU on ffn.up), its input and calibration data."""
    from onnx import TensorProto, helper, numpy_helper

    n, k = FFN[layer]
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = (rng.standard_normal(n) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name=layer),
        helper.make_node("Add", ["h", "b"], ["y0" if layer == "ffn.up" else "y"]),
    ]
    if layer == "ffn.up":
        nodes.append(helper.make_node("Relu", ["y0"], ["y"]))
    graph = helper.make_graph(
        nodes,
        layer.replace(".", "_"),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = {"x": rng.standard_normal((m, k)).astype(np.float32)}
    calibration = {"x": rng.standard_normal((4 * m, k)).astype(np.float32)}
    return model, x, calibration


def bert_case(seed: int) -> tuple[onnx.ModelProto, dict, dict]:
    """The BERT-base encoder layer (``sparse_tvm.examples.bert_block``, 128 tokens)."""
    from sparse_tvm.examples import bert_block

    model = bert_block()
    name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    x = {name: rng.standard_normal(shape).astype(np.float32)}
    calibration = {name: rng.standard_normal([4 * shape[0], *shape[1:]]).astype(np.float32)}
    return model, x, calibration


def resnet50_case(seed: int) -> tuple[onnx.ModelProto, dict, dict]:
    """ResNet-50 (``sparse_tvm.examples.resnet50``, conv biases: a quantized export folds its
    batch norms), one 112x112 image; calibrated on four random images."""
    from sparse_tvm.examples import resnet50

    model = resnet50(size=112, batchnorm=False, seed=seed)
    rng = np.random.default_rng(seed)
    x = {"image": rng.random((1, 3, 112, 112)).astype(np.float32)}
    calibration = {"image": rng.random((4, 3, 112, 112)).astype(np.float32)}
    return model, x, calibration


def minilm_case() -> tuple[onnx.ModelProto, dict, dict]:
    from sparse_tvm.examples import minilm

    model = minilm.minilm(batch=1, seq=128)
    x = minilm.minilm_inputs()
    calibration = minilm.minilm_inputs(minilm.SENTENCES)
    return model, x, calibration


def _max_rel(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30))


def quantize_dynamically(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxruntime's ``quantize_dynamic`` (per-channel int8 weights; activations quantized at
    run time by DynamicQuantizeLinear)."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "float.onnx", Path(folder) / "q.onnx"
        onnx.save(model, source)
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
        return onnx.load(target)


def run_case(
    name: str, sparsity: float, rounds: int, seed: int, say, m: int = 128, mode: str = "static"
) -> dict:
    if name == "minilm":
        model, x, calibration = minilm_case()
    elif name == "bert_layer":
        model, x, calibration = bert_case(seed)
    elif name == "resnet50":
        model, x, calibration = resnet50_case(seed)
    else:
        model, x, calibration = ffn_case(name, m, seed)
    pruned = st.prune(model, sparsity, "16x4").model
    if mode == "dynamic":
        quantized = quantize_dynamically(pruned)
    else:
        quantized = st.quantize(pruned, calibration, per_channel=True)
    case: dict = {"case": name, "sparsity": sparsity, "pattern": "16x4", "quantization": mode}
    if name in FFN:
        case["m"] = m
    say(f"{name}: compiling the quantized and the float model")
    builds = {"st_int8": st.compile(quantized, "x86"), "st_float32": st.compile(pruned, "x86")}
    formats = [row.format for row in builds["st_int8"].report.layers]
    case["int8_layers"] = sum(f.startswith("int8") for f in formats)
    case["layers"] = len(formats)
    runners = [common.tvm_runner(key, compiled, x) for key, compiled in builds.items()]
    sessions = {"ort_int8": quantized, "ort_float32": pruned}
    for key, onnx_model in sessions.items():
        runners.append(common.ort_runner(key, common.ort_session(onnx_model), x))
    first = next(iter(common.ort_session(pruned).get_outputs())).name
    outputs = {
        "st_int8": np.asarray(builds["st_int8"].run(x)[0]),
        "ort_int8": common.ort_reference(quantized).run([first], x)[0],
        "ort_float32": common.ort_session(pruned).run([first], x)[0],
    }
    case["max_rel_err"] = {
        "st_int8_vs_ort_int8": _max_rel(outputs["st_int8"], outputs["ort_int8"]),
        "st_int8_vs_float": _max_rel(outputs["st_int8"], outputs["ort_float32"]),
        "ort_int8_vs_float": _max_rel(outputs["ort_int8"], outputs["ort_float32"]),
    }
    lat = common.time_case(case, runners, METHODS, rounds, 0.05)
    case["int8_speedup_over"] = {
        key: lat[key] / lat["st_int8"] for key in METHODS[1:] if lat.get(key)
    }
    return case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cases", nargs="+", default=["ffn.up", "ffn.down", "bert_layer", "minilm"]
    )
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--m", type=int, default=128, help="tokens of the FFN cases")
    parser.add_argument(
        "--quantization",
        choices=["static", "dynamic"],
        default="static",
        help="st.quantize (QDQ, calibrated) or onnxruntime's quantize_dynamic (MatMulInteger)",
    )
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON path")
    common.add_threads_option(parser)
    args = parser.parse_args(argv)
    if int8_isa(resolve_target("x86").tvm_target) is None:
        print("bench_int8_models: this host has no int8 dot products (VNNI, AVX2); nothing to do")
        return 0
    print(common.header_line(common.machine()))
    cases = []
    for name in args.cases:
        case = run_case(
            name, args.sparsity, args.rounds, args.seed, print, args.m, args.quantization
        )
        cases.append(case)
        lat = ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in case["latency_s"].items() if v)
        over = ", ".join(f"{k} {v:.2f}x" for k, v in case["int8_speedup_over"].items())
        err = case["max_rel_err"]
        print(
            f"  {name} ({case['int8_layers']}/{case['layers']} layers int8): {lat}; "
            f"st int8 faster than: {over}; max rel err vs ort int8 "
            f"{err['st_int8_vs_ort_int8']:.1e} (ort int8 vs float {err['ort_int8_vs_float']:.1e}), "
            f"load {common.fmt_load(common.loadavg())}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": common.machine(), "cases": cases}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
