"""Benchmark the int8 16x4-block VNNI kernel (issue 16's first kernel) on the BERT FFN layers.

The weight, pruned to 90 % in 16x4 blocks (what one ``vpdpbusd`` multiplies) or in 16x1
blocks (the float kernels' pattern, padded to 16x4), quantized to int8, at M = 128, run by,
in the same process and interleaved round by round:

    int8 sparse     kernels/spmm_int8 on the int8 weight, uint8 X, float32 out (scaled)
    int8 sparse u8  the same, the output requantized to uint8 in the kernel
    float32 sparse  sparse-tvm's float32 kernel on the same (dequantized) weight, 16x1 blocks
    ort int8        onnxruntime on the QDQ model of the pruned layer (st.quantize), dense
    ort float32     onnxruntime on the float model of the pruned layer, dense

AVX-512 VNNI only (a host without it prints so and exits 0). Run from the repository root::

    python benchmarks/bench_int8.py [--layers ffn.up ffn.down] [--patterns 16x4 16x1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import common  # noqa: I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)
import numpy as np
import tvm

import sparse_tvm as st
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels.spmm import spmm_arrays, spmm_kernel
from sparse_tvm.kernels.spmm_int8 import Int8Spec, int8_blocks, int8_spmm_kernel
from sparse_tvm.target.host_cpu import cpu_flags, host_x86_mcpu

LAYERS = {"ffn.up": (3072, 768), "ffn.down": (768, 3072)}
METHODS = ["int8_sparse", "int8_sparse_u8", "float32_sparse", "ort_int8", "ort_float32"]
VNNI_TARGET = {"kind": "llvm", "mcpu": "cascadelake", "num-cores": common.THREADS}


def int8_weight(n: int, k: int, pattern: str, sparsity: float, seed: int) -> np.ndarray:
    """Symmetric int8 weight, pruned to ``sparsity`` in random 16x4 or 16x1 blocks."""
    rng = np.random.default_rng(seed)
    width = 4 if pattern == "16x4" else 1
    keep = rng.random((n // 16, k // width)) >= sparsity
    mask = np.repeat(np.repeat(keep, 16, axis=0), width, axis=1)
    return (rng.integers(-127, 128, (n, k)) * mask).astype(np.int8)


def _kernel_runner(name, func, target, arrays, note) -> common.Runner:
    lib = tvm.compile(func.with_attr("global_symbol", "k"), tvm.target.Target(target)).jit()
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]
    evaluator = {}

    def timer(number: int) -> float:
        if number not in evaluator:
            evaluator[number] = lib.time_evaluator("k", tvm.cpu(), number=number, repeat=1)
        return evaluator[number](*tensors).mean

    fetch = tensors[-1].numpy
    return common.Runner(name, lambda: lib["k"](*tensors), timer, note, fetch=fetch)


def run_case(layer: str, pattern: str, m: int, sparsity: float, rounds: int, seed: int) -> dict:
    from bench_ffn import one_layer_model

    n, k = LAYERS[layer]
    wq = int8_weight(n, k, pattern, sparsity, seed)
    rng = np.random.default_rng(seed + 1)
    w_scale = np.float32(0.02)
    w = wq.astype(np.float32) * w_scale
    x_float = rng.standard_normal((m, k)).astype(np.float32)
    x_scale, x_zero = np.float32(8 / 255), 128
    xq = np.clip(np.round(x_float / x_scale) + x_zero, 0, 255).astype(np.uint8)
    blocks = int8_blocks(wq)
    case = {"layer": layer, "pattern": pattern, "m": m, "sparsity": float(np.mean(wq == 0))}
    case["blocks_16x4"] = blocks.blocks
    spec = Int8Spec(n, k, m, blocks.blocks)
    correction = (x_zero * blocks.row_sums).astype(np.int32)
    scale = np.full(n, x_scale * w_scale, np.float32)
    y = np.empty((m, n), np.float32)
    arrays = [xq, blocks.data, blocks.indices, blocks.indptr, correction, scale]
    arrays += [np.zeros(n, np.float32), np.zeros(n, np.float32), y]  # bias, tail bias, Y
    runners = [
        _kernel_runner("int8_sparse", int8_spmm_kernel(spec), VNNI_TARGET, arrays, "16x4 VNNI")
    ]
    # the same with the output requantized to uint8 in the kernel (a quarter of the stores)
    out_scale = np.float32(np.abs(x_float).sum(1).max() * 0.02 / 64)
    spec_u8 = dataclasses.replace(spec, out_zero=128)
    arrays_u8 = [*arrays[:5], scale / out_scale, np.zeros(n, np.float32), np.zeros(n, np.float32)]
    arrays_u8.append(np.empty((m, n), np.uint8))
    func_u8 = int8_spmm_kernel(spec_u8)
    runners.append(_kernel_runner("int8_sparse_u8", func_u8, VNNI_TARGET, arrays_u8, "uint8 out"))
    target = {"kind": "llvm", "mcpu": host_x86_mcpu(), "num-cores": common.THREADS}
    bw = BlockSparseWeight.from_dense(w, (16, 1))
    options = dict(target=tvm.target.Target(target))
    x_dq = (xq.astype(np.float32) - x_zero) * x_scale
    arrays_f = [x_dq, *spmm_arrays(bw, m, **options), np.empty((m, n), np.float32)]
    func_f = spmm_kernel(bw, m, **options)
    runners.append(_kernel_runner("float32_sparse", func_f, target, arrays_f, "16x1 float32"))
    model = one_layer_model(np.ascontiguousarray(w.T), m, layer)
    calibration = {"x": rng.standard_normal((4 * m, k)).astype(np.float32)}
    quantized = st.quantize(model, calibration)
    for name, onnx_model in (("ort_int8", quantized), ("ort_float32", model)):
        session = common.ort_session(onnx_model)
        runners.append(common.ort_runner(name, session, {"x": x_float}))
    # the int8 kernel's result is the float kernel's on the dequantized operands (exact sums)
    runners[0].call()
    runners[2].call()
    got, want = runners[0].fetch(), runners[2].fetch()
    case["int8_vs_float32_max_rel_err"] = float(
        np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
    )
    lat = common.time_case(case, runners, METHODS, rounds, 0.05)
    case["ratio_vs_int8"] = {
        name: lat[name] / lat["int8_sparse"] for name in METHODS[1:] if lat.get(name)
    }
    return case


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["ffn.up", "ffn.down"], choices=LAYERS)
    parser.add_argument("--patterns", nargs="+", default=["16x4", "16x1"])
    parser.add_argument("--m", type=int, default=128)
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="JSON path")
    common.add_threads_option(parser)
    args = parser.parse_args(argv)
    if "avx512_vnni" not in cpu_flags():
        print("bench_int8: this host has no AVX-512 VNNI; nothing to measure")
        return 0
    print(common.header_line(common.machine()))
    cases = []
    for layer in args.layers:
        for pattern in args.patterns:
            case = run_case(layer, pattern, args.m, args.sparsity, args.rounds, args.seed)
            cases.append(case)
            lat = {k: v * 1e6 for k, v in case["latency_s"].items() if v}
            ratios = ", ".join(f"{k} {v:.2f}x" for k, v in case["ratio_vs_int8"].items())
            print(
                f"  {layer} M={args.m} {pattern} {case['sparsity']:.0%} "
                f"({case['blocks_16x4']} 16x4 blocks): "
                + ", ".join(f"{k} {v:,.1f} us" for k, v in lat.items())
                + f"; int8 faster than: {ratios}; "
                f"int8 vs float32 result: max rel err {case['int8_vs_float32_max_rel_err']:.1e}"
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"machine": common.machine(), "cases": cases}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
