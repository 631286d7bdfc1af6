"""The kernel part of the benchmark suite: one layer, many sparsities and block patterns.

A kernel shape is one ONNX layer, a ``MatMul`` (the BERT-base feed-forward and attention
projections, ``bench_ffn.one_layer_model``) or a 1x1 ``Conv`` with bias (MobileNet-v1's
pointwise convolutions, ``bench_conv1x1.conv_model``). For one shape, everything is timed in
one interleaved :func:`common.measure` call:

    tvm_dense            sparse-tvm's dense build of the unpruned layer (``dense=True``)
    ort                  onnxruntime on the unpruned layer
    numpy                ``x @ B`` (MatMul) or ``W @ X + b`` (Conv), OpenBLAS
    sparse/<p>/<s>       sparse-tvm, the layer pruned to sparsity s in pattern p and forced
                         sparse with that block (``force_block``, default kernel schedule)
    scipy/<p>/<s>        ``scipy.sparse.csr_matrix(W) @ X`` on the same pruned weight

The dense baselines run once per shape: their latency does not depend on the values (they
multiply the zeros), so every sparse variant is compared with the same dense timings, measured
in the same rounds. Every output is checked against a float64 reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import common  # noqa: I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)

import bench_conv1x1
import bench_ffn
import numpy as np
import scipy.sparse

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.pruning import parse_pattern

BASELINES = ["tvm_dense", "ort", "numpy", "scipy_csr"]


@dataclass(frozen=True)
class KernelShape:
    """One layer: weight (n, k) = (output, input) features, m activation columns."""

    name: str
    kind: str  # "matmul" (x (m, k) @ B (k, n)) or "conv1x1" (batch 1, m = hw * hw pixels)
    n: int
    k: int
    m: int

    @property
    def hw(self) -> int:
        side = int(round(self.m**0.5))
        assert side * side == self.m, f"a conv shape needs a square pixel count, not {self.m}"
        return side

    @property
    def label(self) -> str:
        if self.kind == "conv1x1":
            return f"{self.name} ({self.k}->{self.n}, {self.hw}x{self.hw})"
        return f"{self.name} ({self.n}x{self.k}, M={self.m})"


class Workload:
    """The model, input, reference and the numpy / scipy calls of one shape and weight."""

    def __init__(self, shape: KernelShape, w_nk: np.ndarray, bias: np.ndarray, x: np.ndarray):
        self.shape, self.w_nk, self.bias, self.x = shape, w_nk, bias, x
        w64 = w_nk.astype(np.float64)
        if shape.kind == "matmul":
            self.b_kn = np.ascontiguousarray(w_nk.T)
            self.model = bench_ffn.one_layer_model(self.b_kn, shape.m, shape.name)
            self.x_km = np.ascontiguousarray(x.T)
            self.reference = x.astype(np.float64) @ w64.T
        else:
            self.model = bench_conv1x1.conv_model(w_nk, bias, shape.hw, shape.name)
            self.x_km = np.ascontiguousarray(x.reshape(shape.k, shape.m))
            out = w64 @ self.x_km.astype(np.float64) + bias[:, None]
            self.reference = out.reshape(1, shape.n, shape.hw, shape.hw)

    def numpy_runner(self, case: dict) -> common.Runner:
        if self.shape.kind == "matmul":
            out = np.empty((self.shape.m, self.shape.n), np.float32)

            def call():
                np.matmul(self.x, self.b_kn, out=out)

            note = "np.matmul(x, B, out=), perf_counter loop"
        else:
            out = np.empty((self.shape.n, self.shape.m), np.float32)
            bias_col = np.ascontiguousarray(self.bias[:, None])

            def call():
                np.matmul(self.w_nk, self.x_km, out=out)
                np.add(out, bias_col, out=out)

            note = "np.matmul(W, X, out=) + b, perf_counter loop"
        call()
        case["max_rel_err"]["numpy"] = common.rel_err(
            out.reshape(self.reference.shape), self.reference
        )
        return common.Runner("numpy", call, note=note)

    def scipy_runner(self, label: str, case: dict) -> common.Runner:
        w_csr = scipy.sparse.csr_matrix(self.w_nk)
        x_km = self.x_km
        if self.shape.kind == "matmul":
            call = lambda: w_csr @ x_km  # noqa: E731
            out = call().T
        else:
            bias_col = np.ascontiguousarray(self.bias[:, None])
            call = lambda: w_csr @ x_km + bias_col  # noqa: E731
            out = call().reshape(self.reference.shape)
        case["max_rel_err"]["scipy_csr"] = common.rel_err(out, self.reference)
        return common.Runner(label, call, note="scipy.sparse.csr_matrix(W) @ X, perf_counter loop")


def make_workload(shape: KernelShape, sparsity: float, pattern: str, seed: int) -> Workload:
    """The shape's weight (the same dense weight for every variant) pruned to ``sparsity``."""
    w_nk = bench_ffn.pruned_weight(shape.n, shape.k, sparsity, parse_pattern(pattern), seed)
    rng = np.random.default_rng(seed + 1)
    bias = (0.1 * rng.standard_normal(shape.n)).astype(np.float32)
    if shape.kind == "matmul":
        x = rng.standard_normal((shape.m, shape.k)).astype(np.float32)
    else:
        x = rng.standard_normal((1, shape.k, shape.hw, shape.hw)).astype(np.float32)
    return Workload(shape, w_nk, bias, x)


def run_shape(
    shape: KernelShape,
    sparsities: list[float],
    patterns: list[str],
    *,
    rounds: int,
    batch_s: float,
    seed: int = 0,
    say=print,
) -> list[dict]:
    """Every (pattern, sparsity) variant of ``shape`` against the dense baselines, one case
    dict per variant (latency medians, ratios, errors, bytes)."""
    start = time.perf_counter()
    dense = make_workload(shape, 0.0, "1x1", seed)
    base = {"errors": {}, "max_rel_err": {}, "compile_s": {}}
    runners = []
    _, runner = common.compiled_runner(
        "tvm_dense", dense.model, dense.x, dense.reference, base, dense=True
    )
    if runner is not None:
        runners.append(runner)
    session = common.ort_session(dense.model)
    base["max_rel_err"]["ort"] = common.rel_err(
        session.run(None, {"x": dense.x})[0], dense.reference
    )
    runners.append(common.ort_runner("ort", session, {"x": dense.x}))
    runners.append(dense.numpy_runner(base))

    cases = []
    for pattern in patterns:
        for sparsity in sparsities:
            work = make_workload(shape, sparsity, pattern, seed)
            key = f"{pattern}/{sparsity:g}"
            weight = BlockSparseWeight.from_dense(work.w_nk, parse_pattern(pattern))
            case = {
                "shape": shape.name,
                "label": shape.label,
                "kind": shape.kind,
                "n": shape.n,
                "k": shape.k,
                "m": shape.m,
                "pattern": pattern,
                "sparsity_target": sparsity,
                "sparsity": float(np.mean(work.w_nk == 0)),
                "bytes_dense": shape.n * shape.k * 4,
                "bytes_sparse": weight.nbytes,
                "errors": dict(base["errors"]),
                "max_rel_err": dict(base["max_rel_err"]),
                "compile_s": dict(base["compile_s"]),
                "runner": {"sparse": f"sparse/{key}", "scipy_csr": f"scipy/{key}"},
            }
            compiled, runner = common.compiled_runner(
                "sparse",
                work.model,
                work.x,
                work.reference,
                case,
                force_block=parse_pattern(pattern),
                measure=False,
            )
            if runner is not None:
                runner.name = f"sparse/{key}"
                runners.append(runner)
                case["format"] = compiled.report.layers[0].format
            runners.append(work.scipy_runner(f"scipy/{key}", case))
            cases.append(case)
    build_s = time.perf_counter() - start
    say(f"  {shape.label}: {len(runners)} runners built in {build_s:.0f} s, timing ...")

    with common.ForeignLoad() as load:
        timings = common.measure(runners, rounds, batch_s)

    def median(name: str) -> float | None:
        return timings[name].median_s if name in timings else None

    for case in cases:
        lat = {
            "sparse": median(case["runner"]["sparse"]),
            "tvm_dense": median("tvm_dense"),
            "ort": median("ort"),
            "numpy": median("numpy"),
            "scipy_csr": median(case["runner"]["scipy_csr"]),
        }
        sparse_s = lat["sparse"]
        case["latency_s"] = lat
        case["speedup"] = {
            name: (lat[name] / sparse_s if sparse_s and lat[name] else None) for name in BASELINES
        }
        s = case["sparsity"]
        case["ideal_speedup"] = 1.0 / (1.0 - s) if s < 1 else None
        case["bytes_ratio"] = case["bytes_sparse"] / case["bytes_dense"]
        case["foreign_load_cores"] = load.cores
        case["timing"] = {
            name: timings[runner].to_dict()
            for name, runner in (
                ("sparse", case["runner"]["sparse"]),
                ("scipy_csr", case["runner"]["scipy_csr"]),
                ("tvm_dense", "tvm_dense"),
                ("ort", "ort"),
                ("numpy", "numpy"),
            )
            if runner in timings
        }
    say(
        f"  {shape.label}: dense tvm {common.fmt_us(median('tvm_dense'))} us, ort "
        f"{common.fmt_us(median('ort'))} us, numpy {common.fmt_us(median('numpy'))} us; "
        f"{time.perf_counter() - start:.0f} s, bg load {load.cores or 0:.2f}"
    )
    return cases
