"""Pruned + int8 on Cortex-M4: flash, instructions and accuracy of the digits MLP and CNN
(issue 16).

The digits MLP (64-256-128-10) and CNN (three 3x3 convs, max pool, global average pool, Gemm)
on scikit-learn's digits are trained dense in TVM, pruned to 90 % in 4x1 blocks with gradual
magnitude pruning and fine-tuning, and quantized by ``st.quantize`` (per-channel int8 weights,
uint8 activations, calibrated on the training split). Each build is compiled for
``cortex-m4`` and run on qemu-system-arm (mps2-an386; instructions counted with -icount +
SysTick):

- float32 dense: the dense model, ``--dense`` (the flash baseline);
- float32 sparse: the pruned float model;
- int8 dense: the quantized model, ``--dense`` (the int8 dense ``SMLAD`` kernels; the
  instruction baseline);
- int8 sparse: the quantized model (the int8 sparse kernels).

Accuracy on the 360 held-out samples: onnxruntime for the float models and the QDQ model, and
the int8 sparse build itself on qemu (20 samples a run). Goals: int8 sparse flash
<= 8 % of the float32 dense build, instructions <= 0.2x the int8 dense build, accuracy within
1 point of float32 (the pruned float32 model: what quantization costs; the dense one's is
printed too, pruning's share being issue 17's).

    python benchmarks/micro_int8.py [--models mlp,cnn] [--json docs/benchmarks/micro/int8_digits.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import prune_digits  # noqa: E402

import sparse_tvm as st  # noqa: E402
from sparse_tvm.training import TrainConfig, train  # noqa: E402

FLASH_GOAL, INSTRUCTION_GOAL, ACCURACY_POINTS = 0.08, 0.20, 1.0
BATCH = 20  # samples a qemu run classifies


def _build(model, folder: Path, name: str, x1: np.ndarray, *, dense: bool) -> dict:
    project = st.compile(
        model, "cortex-m4", output=folder, dense=dense, compare_dense=False,
        input_shapes={name: x1.shape},
    )  # fmt: skip
    run = project.run_qemu({name: x1})
    if run.returncode != 0:
        raise SystemExit(f"{folder.name}: the run failed on qemu\n{run.stdout}")
    sizes = project.report.sizes
    return {
        "flash": sizes.flash,
        "code": sizes.code,
        "weights": sizes.weights,
        "ram": sizes.ram,
        "instructions": run.instructions,
        "formats": [row.format for row in project.report.layers],
        "logits": run.outputs[0].tolist(),
    }


def _device_accuracy(model, folder: Path, name: str, x: np.ndarray, y: np.ndarray) -> float:
    """The int8 sparse build run on qemu over all of ``x``, ``BATCH`` samples a run (the
    board's RAM holds the activations of that many)."""
    shape = (BATCH, *x.shape[1:])
    project = st.compile(
        model, "cortex-m4", output=folder, compare_dense=False, input_shapes={name: shape}
    )
    right = 0
    for start in range(0, len(x), BATCH):
        chunk = np.zeros(shape, np.float32)
        part = x[start : start + BATCH]
        chunk[: len(part)] = part
        run = project.run_qemu({name: chunk})
        if run.returncode != 0:
            raise SystemExit(f"a batch run failed on qemu\n{run.stdout}")
        right += int((run.outputs[0][: len(part)].argmax(1) == y[start : start + BATCH]).sum())
    return right / len(x)


MODELS = {
    "mlp": (prune_digits.digits_mlp, "x", (64,)),
    "cnn": (prune_digits.digits_cnn, "image", (1, 8, 8)),
}


def run_model(key: str, args) -> dict:
    build_model, name, shape = MODELS[key]
    xtr, ytr, xte, yte = prune_digits.digits_split(args.seed)
    xtr, xte = xtr.reshape(-1, *shape), xte.reshape(-1, *shape)
    train_data, test_data = {name: xtr, "labels": ytr}, {name: xte, "labels": yte}
    t0 = time.perf_counter()
    config = TrainConfig(epochs=args.epochs, lr=0.05, seed=args.seed)
    dense = train(build_model(args.seed), train_data, config=config).model
    pruned = st.prune(
        dense, args.sparsity, args.pattern, method="gmp", data=train_data,
        eval_data=test_data, epochs=args.finetune_epochs, lr=0.025, seed=args.seed,
    ).model  # fmt: skip
    quantized = st.quantize(pruned, {name: xtr}, per_channel=True)
    prepare_s = time.perf_counter() - t0

    accuracy = {
        "float32 dense": prune_digits.accuracy(dense, name, xte, yte),
        "float32 pruned": prune_digits.accuracy(pruned, name, xte, yte),
        "int8 pruned (onnxruntime)": prune_digits.accuracy(quantized, name, xte, yte),
    }
    builds = {}
    with tempfile.TemporaryDirectory() as tmp:
        x1 = xte[:1]
        for build, model, dense_build in (
            ("float32 dense", dense, True),
            ("float32 sparse", pruned, False),
            ("int8 dense", quantized, True),
            ("int8 sparse", quantized, False),
        ):
            folder = Path(tmp) / build.replace(" ", "_")
            builds[build] = _build(model, folder, name, x1, dense=dense_build)
        accuracy["int8 sparse (on qemu)"] = _device_accuracy(
            quantized, Path(tmp) / "acc", name, xte, yte
        )

    int8 = builds["int8 sparse"]
    flash = int8["flash"] / builds["float32 dense"]["flash"]
    insn = int8["instructions"] / builds["int8 dense"]["instructions"]
    points = 100 * (accuracy["float32 pruned"] - accuracy["int8 sparse (on qemu)"])
    print(f"\ndigits {key}, {args.sparsity:.0%} {args.pattern} gmp + int8, cortex-m4 (qemu)")
    print(f"{'build':16} {'flash':>9} {'code':>8} {'weights':>9} {'RAM':>8} {'instructions':>13}")
    for build, b in builds.items():
        print(
            f"{build:16} {b['flash'] / 1024:7.1f}KB {b['code'] / 1024:6.1f}KB "
            f"{b['weights'] / 1024:7.1f}KB {b['ram'] / 1024:6.1f}KB {b['instructions']:13,d}"
        )
    print(f"formats (int8 sparse): {', '.join(int8['formats'])}")
    for what, value in accuracy.items():
        print(f"accuracy {what:28} {value:.2%}")
    goals = [
        ("flash vs float32 dense", flash, f"<= {FLASH_GOAL:.0%}", flash <= FLASH_GOAL),
        (
            "instructions vs int8 dense",
            insn,
            f"<= {INSTRUCTION_GOAL:.2f}x",
            insn <= INSTRUCTION_GOAL,
        ),
        ("points lost to int8", points, f"<= {ACCURACY_POINTS}", points <= ACCURACY_POINTS),
    ]
    for what, value, goal, met in goals:
        print(f"{what:28} {value:8.3f}  goal {goal:9} {'met' if met else 'MISSED'}")
    return {
        "model": f"digits_{key}",
        "sparsity": args.sparsity,
        "pattern": args.pattern,
        "prepare_s": prepare_s,
        "builds": {
            k: {kk: vv for kk, vv in v.items() if kk != "logits"} for k, v in builds.items()
        },
        "accuracy": accuracy,
        "flash_ratio": flash,
        "instruction_ratio": insn,
        "int8_points_lost": points,
        "points_below_dense": 100 * (accuracy["float32 dense"] - accuracy["int8 sparse (on qemu)"]),
        "goals_met": all(met for *_, met in goals),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--pattern", default="4x1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results as JSON")
    args = parser.parse_args()
    results = [run_model(key, args) for key in args.models.split(",")]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["goals_met"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
