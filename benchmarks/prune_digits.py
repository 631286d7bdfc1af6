"""Prune-and-fine-tune evidence on real data: scikit-learn's digits (8x8, 1,797 samples).

An MLP and a small CNN are trained dense with sparse-tvm's own training path (in TVM), then
pruned to 90 %: one-shot magnitude (no fine-tuning), gradual magnitude (gmp) and L0 gates,
both fine-tuned in TVM. Accuracy is measured on a held-out 20 % split with onnxruntime; each
pruned model is compiled with ``sparse_tvm.compile(target="x86")`` and its outputs are checked
against onnxruntime. Writes ``results/prune_digits.{md,json}``.

Needs scikit-learn (``pip install scikit-learn``; the data set ships with it).

    python benchmarks/prune_digits.py [--epochs 30] [--finetune-epochs 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


import sparse_tvm as st  # noqa: E402
from sparse_tvm.runtime.onnxruntime_reference import reference_session  # noqa: E402
from sparse_tvm.training import TrainConfig, print_progress, train  # noqa: E402


def digits_split(seed: int = 0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


class _Params:
    """The initializers of one model: He-initialised weights (seeded) and zero biases."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, shape, fan_in: int) -> str:
        w = (self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.inits.append(numpy_helper.from_array(w, name))
        return name

    def zeros(self, name: str, n: int) -> str:
        self.inits.append(numpy_helper.from_array(np.zeros(n, np.float32), name))
        return name


def _model(nodes, inits, x, name):
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    graph = helper.make_graph(nodes, name, [x], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def digits_mlp(seed: int = 0) -> onnx.ModelProto:
    """64 -> 256 -> 128 -> 10: MatMul, Gemm(transB), MatMul; dynamic batch."""
    p = _Params(seed)
    init, zeros = p.init, p.zeros
    nodes = [
        helper.make_node("MatMul", ["x", init("fc1.weight", (64, 256), 64)], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", zeros("fc1.bias", 256)], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["a1"]),
        helper.make_node(
            "Gemm",
            ["a1", init("fc2.weight", (128, 256), 256), zeros("fc2.bias", 128)],
            ["h2"],
            name="fc2",
            transB=1,
        ),
        helper.make_node("Relu", ["h2"], ["a2"]),
        helper.make_node("MatMul", ["a2", init("fc3.weight", (128, 10), 128)], ["h3"], name="fc3"),
        helper.make_node("Add", ["h3", zeros("fc3.bias", 10)], ["logits"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    return _model(nodes, p.inits, x, "digits_mlp")


def digits_cnn(seed: int = 0) -> onnx.ModelProto:
    """conv3x3(1->16), conv3x3(16->32), maxpool, conv3x3(32->64), global pool, Gemm."""
    p = _Params(seed)
    init, zeros = p.init, p.zeros

    def conv(x, cin, cout, name):
        w = init(f"{name}.weight", (cout, cin, 3, 3), cin * 9)
        return helper.make_node(
            "Conv",
            [x, w, zeros(f"{name}.bias", cout)],
            [name],
            name=name,
            pads=[1] * 4,
            kernel_shape=[3, 3],
        )

    nodes = [
        conv("image", 1, 16, "conv1"),
        helper.make_node("Relu", ["conv1"], ["r1"]),
        conv("r1", 16, 32, "conv2"),
        helper.make_node("Relu", ["conv2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        conv("p2", 32, 64, "conv3"),
        helper.make_node("Relu", ["conv3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"], axis=1),
        helper.make_node(
            "Gemm",
            ["f", init("fc.weight", (10, 64), 64), zeros("fc.bias", 10)],
            ["logits"],
            name="fc",
            transB=1,
        ),
    ]
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])
    return _model(nodes, p.inits, x, "digits_cnn")


def ort_logits(model: onnx.ModelProto, name: str, x: np.ndarray) -> np.ndarray:
    # the exact reference: onnxruntime's default u8 x s8 kernels saturate on x86 without VNNI
    return reference_session(model).run(None, {name: x})[0]


def accuracy(model, name, x, y) -> float:
    return float(np.mean(ort_logits(model, name, x).argmax(1) == y))


def check_compiled(model, name, x) -> float:
    """Max |sparse-tvm - onnxruntime| on a batch of 64 held-out samples."""
    batch = x[:64]
    compiled = st.compile(model, target="x86", input_shapes={name: batch.shape})
    ours = compiled.run({name: batch})[0]
    return float(np.max(np.abs(ours - ort_logits(model, name, batch))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="dense training epochs")
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "prune_digits"))
    args = parser.parse_args()

    xtr, ytr, xte, yte = digits_split(args.seed)
    specs = {
        "mlp": (digits_mlp(args.seed), "x", lambda a: a.reshape(len(a), 64), 0.05),
        "cnn": (digits_cnn(args.seed), "image", lambda a: a.reshape(len(a), 1, 8, 8), 0.05),
    }
    rows = []
    for key in args.models.split(","):
        model, name, shape, lr = specs[key]
        train_data = {name: shape(xtr), "labels": ytr}
        test_data = {name: shape(xte), "labels": yte}
        print(f"== {key}: dense training ({args.epochs} epochs)", file=sys.stderr)
        t0 = time.perf_counter()
        config = TrainConfig(epochs=args.epochs, lr=lr, seed=args.seed)
        dense = train(model, train_data, test_data, config, callbacks=[print_progress]).model
        dense_s = time.perf_counter() - t0
        dense_acc = accuracy(dense, name, shape(xte), yte)
        row = {"model": key, "dense": dense_acc, "dense_train_s": dense_s}
        oneshot = st.prune(dense, args.sparsity, method="magnitude")
        row["oneshot"] = accuracy(oneshot.model, name, shape(xte), yte)
        row["oneshot_sparsity"] = oneshot.report.pruned_sparsity
        for method in ("gmp", "l0"):
            print(f"== {key}: {method} to {args.sparsity:.0%}", file=sys.stderr)
            t0 = time.perf_counter()
            result = st.prune(
                dense,
                args.sparsity,
                method=method,
                data=train_data,
                eval_data=test_data,
                epochs=args.finetune_epochs,
                lr=lr / 2,
                seed=args.seed,
                callbacks=[print_progress],
            )
            row[f"{method}_s"] = time.perf_counter() - t0
            row[method] = accuracy(result.model, name, shape(xte), yte)
            row[f"{method}_sparsity"] = result.report.pruned_sparsity
            row[f"{method}_per_layer"] = result.report.sparsity
            if result.report.gate_sparsity is not None:
                row[f"{method}_gate_sparsity"] = result.report.gate_sparsity
            row[f"{method}_max_abs_diff_vs_ort"] = check_compiled(result.model, name, shape(xte))
        rows.append(row)
        print(json.dumps(row, indent=1), file=sys.stderr)

    lines = [
        f"# Digits: prune to {args.sparsity:.0%} and fine-tune in TVM",
        "",
        f"scikit-learn digits, 80/20 split (seed {args.seed}), accuracy on the held-out "
        f"{len(yte)} samples (onnxruntime). Dense: {args.epochs} epochs SGD+momentum; "
        f"gmp / l0: {args.finetune_epochs} epochs. Sparsity = zeros over all pruned weights.",
        "",
        "| model | dense | one-shot magnitude | gmp | l0 | sparse-tvm vs ort (max abs) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['dense']:.2%} | {r['oneshot']:.2%} "
            f"({r['oneshot_sparsity']:.1%}) | {r['gmp']:.2%} ({r['gmp_sparsity']:.1%}) | "
            f"{r['l0']:.2%} ({r['l0_sparsity']:.1%}) | gmp {r['gmp_max_abs_diff_vs_ort']:.1e}, "
            f"l0 {r['l0_max_abs_diff_vs_ort']:.1e} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
