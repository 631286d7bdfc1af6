"""The pruning accuracy table (issue 17): models trained elsewhere (PyTorch), pruned by
``st.prune`` with only ``sparsity``, ``pattern``, ``method`` and ``data`` given.

A digits MLP (64-512-512-10, the issue's) and a small digits CNN are trained dense in PyTorch
(Adam, held-out 20 % split of scikit-learn's digits), exported to ONNX, then pruned by every
method (one-shot magnitude, gmp, l0) at every sparsity (80 / 90 / 95 %) in every pattern (1x1,
4x1, 16x1; 2:4 at its fixed 50 %), all other settings at their defaults. Accuracy on the held-out
split with onnxruntime; the points each run loses against the dense model, and the seconds it
took. Run-to-run noise is about half a point (the fine-tuning's shuffles and gate samples).

    python benchmarks/prune_accuracy.py [--models mlp,cnn] [--methods magnitude,gmp,l0]
        [--sparsities 0.8,0.9,0.95] [--patterns 1x1,4x1,16x1,2:4] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import prune_digits  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import sparse_tvm as st  # noqa: E402

EPOCHS, BATCH = 30, 50


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
        nn.Linear(512, 10),
    )  # fmt: skip


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip


MODELS = {"mlp": (_mlp, (64,)), "cnn": (_cnn, (1, 8, 8))}


def train_dense(key: str, x: np.ndarray, y: np.ndarray, seed: int = 0) -> onnx.ModelProto:
    """The model trained in PyTorch and exported to ONNX (input ``x``, batch axis dynamic)."""
    build, _ = MODELS[key]
    torch.manual_seed(seed)
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    rng = np.random.default_rng(seed)
    for _ in range(EPOCHS):
        order = torch.from_numpy(rng.permutation(len(x)))
        for start in range(0, len(x), BATCH):
            batch = order[start : start + BATCH]
            loss = nn.functional.cross_entropy(model(xt[batch]), yt[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (xt[:BATCH],), dynamo=True, opset_version=18, input_names=["x"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )  # fmt: skip
    buffer = io.BytesIO()
    program.save(buffer)
    return onnx.load_from_string(buffer.getvalue())


def run(args) -> list[dict]:
    xtr, ytr, xte, yte = prune_digits.digits_split(args.seed)
    rows = []
    for key in args.models.split(","):
        _, shape = MODELS[key]
        x, xt = xtr.reshape(-1, *shape), xte.reshape(-1, *shape)
        dense = train_dense(key, x, ytr, args.seed)
        dense_acc = prune_digits.accuracy(dense, "x", xt, yte)
        print(f"\n{key}: dense {100 * dense_acc:.1f} %", flush=True)
        rows.append({"model": key, "method": "dense", "accuracy": dense_acc})
        for method in args.methods.split(","):
            for pattern in args.patterns.split(","):
                sparsities = (
                    [0.5] if ":" in pattern else [float(s) for s in args.sparsities.split(",")]
                )
                for sparsity in sparsities:
                    start = time.perf_counter()
                    data = None if method == "magnitude" else (x, ytr)
                    result = st.prune(
                        dense, sparsity, pattern, method=method, data=data, callbacks=[]
                    )
                    acc = prune_digits.accuracy(result.model, "x", xt, yte)
                    row = {
                        "model": key, "method": method, "pattern": pattern,
                        "sparsity": sparsity, "accuracy": acc,
                        "points_lost": 100 * (dense_acc - acc),
                        "seconds": time.perf_counter() - start,
                    }  # fmt: skip
                    rows.append(row)
                    print(
                        f"  {method:9s} {pattern:5s} {sparsity:.0%}: {100 * acc:.1f} % "
                        f"({row['points_lost']:+.1f} points lost, {row['seconds']:.0f} s)",
                        flush=True,
                    )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--methods", default="magnitude,gmp,l0")
    parser.add_argument("--sparsities", default="0.8,0.9,0.95")
    parser.add_argument("--patterns", default="1x1,4x1,16x1,2:4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(rows, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
