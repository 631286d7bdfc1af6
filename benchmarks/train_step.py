"""Fine-tuning speed (issue 17): one training step of a MiniLM-size encoder in TVM (sparse-tvm's
``Trainer``, compiled with the project's CPU pipeline) against the same step in PyTorch on CPU.

The model is all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, FFN 1536; the sentence
embedding) at batch 8, seq 128, exported to ONNX; the step is the forward pass, the gradient of
the mean squared error against fixed targets, and an SGD-with-momentum update of every weight,
in both. TVM's step includes what ``Trainer.fit`` adds around the compiled functions (moving
the weights between numpy and TVM). Medians over ``--steps`` steps, in alternating blocks of
three after one untimed step each; the load average beside them.

    python benchmarks/train_step.py [--steps 10] [--batch 8] [--seq 128] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sparse_tvm.examples.minilm import (  # noqa: E402
    SENTENCES,
    export_sentence_model,
    minilm_inputs,
    sentence_model,
)
from sparse_tvm.training import TrainConfig, Trainer  # noqa: E402

LR, MOMENTUM = 0.01, 0.9
BLOCK = 3  # timed steps per block


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    module = sentence_model()
    texts = (SENTENCES * args.batch)[: args.batch]
    inputs = minilm_inputs(texts, args.seq)
    targets = np.random.default_rng(0).standard_normal((args.batch, 384)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)

    start = time.perf_counter()
    trainer = Trainer(
        export_sentence_model(module, args.batch, args.seq),
        TrainConfig(epochs=1, lr=LR, momentum=MOMENTUM, lr_schedule="constant"),
    )
    data = trainer.dataset({**inputs, "targets": targets})
    trainer.compile("mse")
    compile_s = time.perf_counter() - start

    optimizer = torch.optim.SGD(module.parameters(), lr=LR, momentum=MOMENTUM)
    torch_inputs = {k: torch.from_numpy(v) for k, v in inputs.items()}
    torch_targets = torch.from_numpy(targets)
    module.train()

    def torch_step() -> float:
        loss = torch.nn.functional.mse_loss(module(**torch_inputs), torch_targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def tvm_step() -> None:
        trainer.fit(data, epochs=1)  # one epoch of one batch: one step

    # blocks of steps, not alternate steps: each library's thread pool spins for a while after
    # its work (OpenMP's wait policy, TVM's pool), and would hold a core of the other's step
    times: dict[str, list[float]] = {"tvm": [], "pytorch": []}
    steps = {"tvm": tvm_step, "pytorch": torch_step}
    rounds = max(1, -(-args.steps // BLOCK))
    for _ in range(rounds):
        for name, run in steps.items():
            run()  # the first step of a block: the other pool's threads may still spin
            for _ in range(BLOCK):
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    tvm_s, torch_s = (float(np.median(v)) for v in times.values())
    result = {
        "model": "all-MiniLM-L6-v2 encoder (6 x 384, FFN 1536)",
        "batch": args.batch,
        "seq": args.seq,
        "tvm_step_ms": 1e3 * tvm_s,
        "pytorch_step_ms": 1e3 * torch_s,
        "tvm_over_pytorch": tvm_s / torch_s,
        "tvm_compile_s": compile_s,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
    }
    print(
        f"training step, batch {args.batch} x seq {args.seq}: TVM {1e3 * tvm_s:.0f} ms, PyTorch "
        f"{1e3 * torch_s:.0f} ms ({tvm_s / torch_s:.2f}x; compile {compile_s:.0f} s; load "
        f"{result['load_average']:.2f})"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
