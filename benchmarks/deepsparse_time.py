"""Time one ONNX model with DeepSparse: run by ``common.deepsparse_timing`` in DeepSparse's own
virtual environment (``$DEEPSPARSE_PYTHON``; deepsparse 1.8 pins old numpy / onnx), never
imported by the suite itself.

    $DEEPSPARSE_PYTHON benchmarks/deepsparse_time.py FOLDER --threads 2 --rounds 9 --batch-s 0.25

``FOLDER`` holds ``model.onnx`` and ``inputs.npz`` (one array per graph input, by name); the
script writes the first output to ``FOLDER/output.npy`` (for the suite's output check) and
prints one JSON line: ``median_s``, ``min_s``, ``max_s``, ``rounds``, ``number``, ``how``,
``samples_s`` and ``version``. Timing as in ``common.measure``: a warm-up call, then per round
one batch of ``number`` calls (chosen so that a batch lasts ~``batch_s``), the median over
rounds of the per-call batch mean. Only the standard library, numpy and deepsparse are used.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def choose_number(call, target_s: float) -> int:
    """Calls per batch so that a batch lasts about ``target_s`` (at least 1)."""
    call()
    start, calls = time.perf_counter(), 0
    while True:
        call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed > 0.02 or calls >= 1000:
            break
    return max(1, min(100_000, int(target_s / max(elapsed / calls, 1e-7))))


def time_batches(call, rounds: int, number: int) -> list[float]:
    """Per-call mean seconds of ``rounds`` batches of ``number`` calls, each after a warm-up."""
    samples = []
    for _ in range(rounds):
        call()
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="holds model.onnx and inputs.npz")
    parser.add_argument("--threads", type=int, default=2, help="DeepSparse num_cores")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch-s", type=float, default=0.25)
    args = parser.parse_args()
    os.environ.setdefault("NM_DISABLE_ANALYTICS", "1")
    import deepsparse
    import numpy as np

    folder = Path(args.folder)
    inputs = np.load(folder / "inputs.npz")
    arrays = [np.ascontiguousarray(inputs[name]) for name in inputs.files]
    batch = int(arrays[0].shape[0])
    engine = deepsparse.compile_model(
        str(folder / "model.onnx"), batch_size=batch, num_cores=args.threads
    )
    outputs = engine.run(arrays)
    np.save(folder / "output.npy", np.asarray(outputs[0]))

    def call():
        return engine.run(arrays)

    number = choose_number(call, args.batch_s)
    samples = time_batches(call, args.rounds, number)
    result = {
        "median_s": float(np.median(samples)),
        "min_s": min(samples),
        "max_s": max(samples),
        "rounds": args.rounds,
        "number": number,
        "how": f"deepsparse.compile_model(num_cores={args.threads}).run, own process",
        "samples_s": samples,
        "version": deepsparse.__version__,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
