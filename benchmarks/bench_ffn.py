"""Benchmark the BERT-base feed-forward layers: sparse-tvm sparse kernels against dense baselines.

Layers (weight viewed as (n, k) = output x input features; ONNX MatMul B is (k, n)):

    ffn.up    (3072, 768)   x: (M, 768)  -> (M, 3072)
    ffn.down  (768, 3072)   x: (M, 3072) -> (M, 768)

at M = 128 and M = 1 activation rows, pruned to 90 % by block magnitude with blocks 16x1
(16 consecutive output features x 1 input feature) and 1x1 (unstructured). Every case is
run by, in the same process and interleaved round by round:

    sparse     sparse-tvm, ``compile_model(..., force_block=block, measure=False)``
    tvm dense  sparse-tvm's dense build of the same layer (``dense=True``)
    ort        onnxruntime on the same pruned model (stored dense), 2 intra-op threads
    numpy      ``np.matmul(x, B)`` (OpenBLAS)
    scipy csr  ``W_csr @ x.T`` (scipy.sparse, single-threaded)

Run from the repository root::

    python benchmarks/bench_ffn.py            # full run, JSON to benchmarks/results/ffn.json
    python benchmarks/bench_ffn.py --quick    # fewer rounds, shorter batches
"""

from __future__ import annotations

import argparse
import time

import common  # noqa: I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)
import numpy as np
import scipy.sparse
from onnx import TensorProto, helper, numpy_helper

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.pruning import block_mask, parse_pattern

LAYERS = {"ffn.up": (3072, 768), "ffn.down": (768, 3072)}
METHODS = ["sparse", "tvm_dense", "ort", "numpy", "scipy_csr"]
BYTES_GOAL = 0.12  # 16x1 at 90 %: stored bytes <= 12 % of dense


def one_layer_model(b_kn: np.ndarray, m: int, name: str):
    """ONNX model ``y = x @ B`` with B (k, n) an initializer."""
    k, n = b_kn.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "B"], ["y"], name=name)],
        name.replace(".", "_"),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [numpy_helper.from_array(b_kn, "B")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def pruned_weight(n: int, k: int, sparsity: float, block: tuple[int, int], seed: int):
    rng = np.random.default_rng(seed)
    w_nk = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
    return np.where(block_mask(w_nk, sparsity, block), w_nk, 0.0).astype(np.float32)


def run_case(
    layer: str,
    m: int,
    block: tuple[int, int],
    sparsity: float,
    rounds: int,
    batch_s: float,
    seed: int,
) -> dict:
    n, k = LAYERS[layer]
    w_nk = pruned_weight(n, k, sparsity, block, seed)
    b_kn = np.ascontiguousarray(w_nk.T)
    actual_s = float(np.mean(w_nk == 0))
    model = one_layer_model(b_kn, m, layer)
    x = np.random.default_rng(seed + 1).standard_normal((m, k)).astype(np.float32)
    reference = x.astype(np.float64) @ b_kn.astype(np.float64)

    fmt = BlockSparseWeight.from_dense(w_nk, block)
    case = {
        "layer": layer,
        "n": n,
        "k": k,
        "m": m,
        "block": f"{block[0]}x{block[1]}",
        "sparsity_target": sparsity,
        "sparsity": actual_s,
        "bytes_sparse": fmt.nbytes,
        "bytes_dense": n * k * 4,
        "bytes_ratio": fmt.nbytes / (n * k * 4),
        "errors": {},
        "max_rel_err": {},
        "compile_s": {},
    }

    runners = []
    for label, kwargs in (
        ("sparse", {"force_block": block, "measure": False}),
        ("tvm_dense", {"dense": True}),
    ):
        compiled, runner = common.compiled_runner(label, model, x, reference, case, **kwargs)
        if runner is None:
            continue
        runners.append(runner)
        if label == "sparse":
            formats = [row.format for row in compiled.report.layers]
            case["compiled_formats"] = formats
            if all(f == "dense" for f in formats):
                case["errors"][label] = f"layer compiled dense, not sparse: {formats}"

    session = common.ort_session(model)
    case["max_rel_err"]["ort"] = common.rel_err(session.run(None, {"x": x})[0], reference)
    runners.append(common.ort_runner("ort", session, {"x": x}))

    out_np = np.empty((m, n), np.float32)
    runners.append(
        common.Runner(
            "numpy",
            lambda: np.matmul(x, b_kn, out=out_np),
            note="np.matmul(x, B, out=), perf_counter loop",
        )
    )
    w_csr = scipy.sparse.csr_matrix(w_nk)
    x_t = np.ascontiguousarray(x.T)
    case["max_rel_err"]["scipy_csr"] = common.rel_err((w_csr @ x_t).T, reference)
    runners.append(
        common.Runner(
            "scipy_csr", lambda: w_csr @ x_t, note="W_csr @ x.T (output (n, M)), perf_counter loop"
        )
    )

    lat = common.time_case(case, runners, METHODS, rounds, batch_s)
    sparse_s = lat["sparse"]
    ideal = 1.0 / (1.0 - actual_s) if actual_s < 1 else float("inf")
    case["ideal_speedup"] = ideal
    case["ratio_vs_sparse"] = {
        name: (lat[name] / sparse_s if sparse_s and lat[name] else None)
        for name in METHODS
        if name != "sparse"
    }
    case["ideal_fraction"] = {
        name: (case["ratio_vs_sparse"][name] / ideal if case["ratio_vs_sparse"][name] else None)
        for name in ("tvm_dense", "ort")
    }
    return case


def goals(cases: list[dict]) -> list[dict]:
    out = []
    for c in cases:
        if c["block"] != "16x1" or abs(c["sparsity_target"] - 0.9) > 1e-9:
            continue
        out.append(
            {
                "goal": f"{c['layer']} M={c['m']} 16x1: bytes <= 12% of dense",
                "value": c["bytes_ratio"],
                "pass": c["bytes_ratio"] <= BYTES_GOAL,
            }
        )
        if c["m"] == 128:
            r = c["ratio_vs_sparse"].get("ort")
            out.append(
                {
                    "goal": f"{c['layer']} M=128 16x1: sparse faster than onnxruntime dense",
                    "value": r,
                    "pass": bool(r and r > 1.0),
                }
            )
    return out


def print_tables(cases: list[dict]) -> None:
    head = [
        "layer",
        "M",
        "block",
        "sparse us",
        "tvm dense us",
        "ort us",
        "numpy us",
        "scipy csr us",
        "tvm/sp",
        "ort/sp",
        "np/sp",
        "csr/sp",
        "ideal% tvm",
        "ideal% ort",
        "bytes %",
        "bg load",
    ]
    rows = []
    for c in cases:
        lat, rat, ide = c["latency_s"], c["ratio_vs_sparse"], c["ideal_fraction"]
        rows.append(
            [
                f"{c['layer']} {c['n']}x{c['k']}",
                str(c["m"]),
                c["block"],
                *(common.fmt_us(lat[name]) for name in METHODS),
                *(
                    common.fmt_ratio(rat[name])
                    for name in ("tvm_dense", "ort", "numpy", "scipy_csr")
                ),
                *(
                    "-" if ide[name] is None else f"{ide[name]:.0%}"
                    for name in ("tvm_dense", "ort")
                ),
                f"{c['bytes_ratio']:.1%}",
                "-" if c["foreign_load_cores"] is None else f"{c['foreign_load_cores']:.2f}",
            ]
        )
    print(common.table(head, rows))
    print(
        "(medians over rounds, microseconds per call; X/sp = X latency / sparse latency, "
        ">1 means sparse is faster; ideal% = (X/sp) / (1/(1-s));\n"
        " bg load = CPU cores used by other processes while the case was timed)"
    )
    print()
    print("best round (min over rounds; less sensitive to other processes on the machine):")
    head = [
        "layer",
        "M",
        "block",
        *(f"{name} us" for name in METHODS),
        "tvm/sp",
        "ort/sp",
        "ideal% tvm",
        "ideal% ort",
    ]
    rows = []
    for c in cases:
        low = c["latency_min_s"]
        ratios = [
            low[name] / low["sparse"] if low["sparse"] and low[name] else None
            for name in ("tvm_dense", "ort")
        ]
        rows.append(
            [
                f"{c['layer']} {c['n']}x{c['k']}",
                str(c["m"]),
                c["block"],
                *(common.fmt_us(low[name]) for name in METHODS),
                *(common.fmt_ratio(r) for r in ratios),
                *("-" if r is None else f"{r / c['ideal_speedup']:.0%}" for r in ratios),
            ]
        )
    print(common.table(head, rows))
    for c in cases:
        for name, err in c["errors"].items():
            print(f"!! {c['layer']} M={c['m']} {c['block']} {name}: {err}")
        bad = {k: v for k, v in c["max_rel_err"].items() if v > 1e-3}
        if bad:
            print(f"!! {c['layer']} M={c['m']} {c['block']} output mismatch (max rel err): {bad}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="interleaved timing rounds per case (default 21, --quick 5)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and shorter batches (a few minutes less)"
    )
    parser.add_argument("--out", default=str(common.RESULTS / "ffn.json"), help="JSON path")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--m", type=int, nargs="+", default=[128, 1], help="activation rows")
    parser.add_argument("--blocks", nargs="+", default=["16x1", "1x1"])
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS))
    parser.add_argument("--seed", type=int, default=0)
    common.add_threads_option(parser)
    args = parser.parse_args(argv)
    rounds = args.repeat or (5 if args.quick else 21)
    batch_s = 0.02 if args.quick else 0.05

    info = common.machine()
    print(common.header_line(info))
    print(
        f"# bench_ffn: sparsity {args.sparsity:.0%}, blocks {' '.join(args.blocks)}, "
        f"M {' '.join(map(str, args.m))}, {rounds} interleaved rounds of ~{batch_s * 1e3:.0f} "
        "ms batches per method; TVM timed by VM time_evaluator, others by perf_counter loops",
        flush=True,
    )

    cases = []
    for layer in args.layers:
        for m in args.m:
            for pattern in args.blocks:
                start = time.perf_counter()
                block = parse_pattern(pattern)
                case = run_case(layer, m, block, args.sparsity, rounds, batch_s, args.seed)
                case["wall_s"] = time.perf_counter() - start
                cases.append(case)
                lat = case["latency_s"]
                print(
                    f"  {layer} M={m} {pattern}: sparse {common.fmt_us(lat['sparse'])} us, "
                    f"tvm dense {common.fmt_us(lat['tvm_dense'])} us, ort "
                    f"{common.fmt_us(lat['ort'])} us  ({case['wall_s']:.0f} s)",
                    flush=True,
                )

    print()
    print(common.header_line(info))
    print_tables(cases)
    results_goals = goals(cases)
    print()
    for g in results_goals:
        value = g["value"]
        shown = (
            "-" if value is None else (f"{value:.1%}" if "bytes" in g["goal"] else f"{value:.2f}x")
        )
        print(f"goal {'PASS' if g['pass'] else 'FAIL'}: {g['goal']} ({shown})")

    data = {
        "benchmark": "ffn",
        "machine": info,
        "loadavg_at_end": common.loadavg(),
        "config": {
            "rounds": rounds,
            "batch_s": batch_s,
            "sparsity": args.sparsity,
            "blocks": args.blocks,
            "m": args.m,
            "layers": args.layers,
            "seed": args.seed,
            "python_loop_overhead_s": common.python_overhead_s(),
            "timing": common.__doc__.strip(),
        },
        "cases": cases,
        "goals": results_goals,
    }
    path = common.write_json(args.out, data)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
