"""The GPU benchmark the issue asks for, to run where a GPU is at hand:
``python -m pytest tests/cuda/test_gpu_benchmark.py -m gpu -s``.

A BERT-base encoder block (seq 128) and a CNN pruned to 90 %, built sparse (CSR and 16x1 / 4x1
BSR, every prunable layer) and dense by TVM's dlight GPU rules for the same preset; both checked
against onnxruntime and against each other, then timed in alternating rounds (median of 50 runs
after warm-up each, the device synchronised after each run). It prints a table and asserts, in
the same run, that the 16x1 build at 90 % is not slower than the dense build by more than the
spread of the measurements themselves.
"""

from __future__ import annotations

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.examples import bert_block, small_cnn
from sparse_tvm.pruning import prune_magnitude
from tests.conftest import ort_run, random_inputs

MODELS = {
    "bert-base block": (
        lambda: bert_block(seq=128, hidden=768, heads=12, ffn=3072),
        ["1x1", "16x1"],
    ),
    "small cnn 64x64": (lambda: small_cnn(size=64), ["1x1", "4x1"]),
}


# Patterns whose sparse build must not be slower than dense (the claim: 90 % 16x1).
MUST_NOT_BE_SLOWER = {"16x1"}
ROUNDS = 3  # alternating dense / sparse timings: a clock or load change hits both builds
NOISE_FLOOR = 0.10  # run-to-run spread of a GPU timing below which a difference is noise


def _spread(times: list[float]) -> float:
    """(max - min) / median of repeated medians: how far one build's timing moves by itself."""
    return (max(times) - min(times)) / float(np.median(times))


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("name", list(MODELS))
def test_gpu_sparse_against_dense_at_90_percent(gpu, name):
    build, patterns = MODELS[name]
    lines = []
    for pattern in patterns:
        model = prune_magnitude(build(), 0.9, pattern)
        inputs = random_inputs(model)
        expected = ort_run(model, inputs)[0]
        block = tuple(int(v) for v in pattern.split("x"))
        builds = {
            "dense": st.compile(model, "cuda", dense=True),
            "sparse": st.compile(model, "cuda", force_block=block),
        }
        outputs = {label: compiled.run(inputs)[0] for label, compiled in builds.items()}
        for output in outputs.values():
            np.testing.assert_allclose(output, expected, rtol=2e-3, atol=2e-3)
        # the reference of the same run: the dense build's own output
        np.testing.assert_allclose(outputs["sparse"], outputs["dense"], rtol=2e-3, atol=2e-3)

        runs: dict[str, list[float]] = {label: [] for label in builds}
        for _ in range(ROUNDS):
            for label, compiled in builds.items():
                runs[label].append(compiled.benchmark(inputs, repeat=50, warmup=10)["median"])
        dense, sparse = (float(np.median(runs[label])) for label in ("dense", "sparse"))
        noise = max(NOISE_FLOOR, 2 * max(_spread(runs["dense"]), _spread(runs["sparse"])))
        lines.append(
            f"{name:16s} {pattern:5s} dense {dense * 1e6:9.1f} us  sparse {sparse * 1e6:9.1f} us  "
            f"speedup {dense / sparse:5.2f}x  noise {noise:4.0%}  ({gpu.device_name})"
        )
        if pattern in MUST_NOT_BE_SLOWER:
            assert sparse / dense <= 1 + noise, (
                f"{name} {pattern}: sparse {sparse * 1e6:.1f} us is {sparse / dense:.2f}x the "
                f"dense {dense * 1e6:.1f} us, beyond the {noise:.0%} the timings move by; "
                f"rounds {runs}"
            )
    print("\n" + "\n".join(lines))
