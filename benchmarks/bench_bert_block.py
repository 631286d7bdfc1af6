"""Benchmark a whole BERT-base encoder block: sparse-tvm against onnxruntime, dense and 90 %.

Model: ``sparse_tvm.examples.bert_block(seq=128)`` (768 hidden, 12 heads, 3072 FFN; six
weight matrices: q, k, v, attention output, FFN up, FFN down). Two versions of it:

    dense     the model as built (sparsity 0)
    90%       ``prune_magnitude(model, 0.9, "16x1")``: every weight pruned to 90 % in 16x1 blocks

Runs, all timed in the same process, interleaved round by round, 2 threads:

    stvm_dense_model      ``sparse_tvm.compile(dense model)`` (measures per layer; all dense)
    ort_dense_model       onnxruntime on the dense model
    stvm_sparse_model     ``sparse_tvm.compile(90% model)`` (keeps a layer sparse only if faster)
    stvm_densebuild_90    ``sparse_tvm.compile(90% model, dense=True)``
    ort_sparse_model      onnxruntime on the 90 % model (stored dense)

Run from the repository root::

    python benchmarks/bench_bert_block.py           # JSON to benchmarks/results/bert_block.json
    python benchmarks/bench_bert_block.py --quick   # seq 32, fewer rounds
"""

from __future__ import annotations

import argparse
import time
import traceback

import common  # noqa: I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)
import numpy as np

import sparse_tvm
from sparse_tvm.examples import bert_block
from sparse_tvm.pruning import prune_magnitude

RUNS = [
    ("stvm_dense_model", "dense", "sparse-tvm, dense model"),
    ("ort_dense_model", "dense", "onnxruntime, dense model"),
    ("stvm_sparse_model", "sparse", "sparse-tvm, 90% model"),
    ("stvm_densebuild_90", "sparse", "sparse-tvm dense=True, 90% model"),
    ("ort_sparse_model", "sparse", "onnxruntime, 90% model"),
]
DENSE_GOAL = 1.5  # sparse-tvm's dense block within 1.5x of onnxruntime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeat", type=int, default=None, help="interleaved timing rounds (default 15, --quick 5)"
    )
    parser.add_argument("--quick", action="store_true", help="seq 32 and fewer rounds")
    parser.add_argument("--out", default=str(common.RESULTS / "bert_block.json"), help="JSON path")
    parser.add_argument("--seq", type=int, default=None, help="sequence length (default 128)")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--pattern", default="16x1")
    parser.add_argument("--seed", type=int, default=0)
    common.add_threads_option(parser)
    args = parser.parse_args(argv)
    rounds = args.repeat or (5 if args.quick else 15)
    seq = args.seq or (32 if args.quick else 128)
    batch_s = 0.1 if args.quick else 0.25

    info = common.machine()
    print(common.header_line(info))
    print(
        f"# bench_bert_block: bert_block(seq={seq}), dense and {args.sparsity:.0%} "
        f"{args.pattern}; {rounds} interleaved rounds of ~{batch_s * 1e3:.0f} ms batches; "
        "TVM timed by VM time_evaluator, onnxruntime by a perf_counter loop",
        flush=True,
    )

    models = {"dense": bert_block(seq=seq, seed=args.seed)}
    models["sparse"] = prune_magnitude(models["dense"], args.sparsity, args.pattern)
    x = np.random.default_rng(args.seed + 1).standard_normal((1, seq, 768)).astype(np.float32)

    results: dict = {"errors": {}, "compile_s": {}, "reports": {}, "max_rel_err_vs_ort": {}}
    sessions = {key: common.ort_session(model) for key, model in models.items()}
    reference = {key: sessions[key].run(None, {"x": x})[0] for key in models}

    runners = []
    for name, key, _label in RUNS:
        if name.startswith("ort"):
            runners.append(common.ort_runner(name, sessions[key], {"x": x}))
            continue
        dense = name == "stvm_densebuild_90"
        print(f"compiling {name} ...", flush=True)
        try:
            start = time.perf_counter()
            compiled = sparse_tvm.compile(models[key], target="x86", dense=dense)
            results["compile_s"][name] = time.perf_counter() - start
            results["reports"][name] = compiled.report.to_dict()
            print(f"--- report: {name} ({results['compile_s'][name]:.0f} s to compile)")
            print(compiled.report, flush=True)
            (out,) = compiled.run({"x": x})
            results["max_rel_err_vs_ort"][name] = common.rel_err(out, reference[key])
            runners.append(common.tvm_runner(name, compiled, x))
        except Exception as err:  # keep going: report it with the numbers we do have
            results["errors"][name] = common.error_text(err)
            traceback.print_exc()

    print("timing ...", flush=True)
    with common.ForeignLoad() as load:
        timings = common.measure(runners, rounds, batch_s)
    lat = {name: (timings[name].median_s if name in timings else None) for name, _, _ in RUNS}

    def ratio(a: str, b: str) -> float | None:
        return lat[a] / lat[b] if lat[a] and lat[b] else None

    ratios = {
        "stvm_dense_model / ort_dense_model": ratio("stvm_dense_model", "ort_dense_model"),
        "ort_sparse_model / stvm_sparse_model": ratio("ort_sparse_model", "stvm_sparse_model"),
        "stvm_densebuild_90 / stvm_sparse_model": ratio("stvm_densebuild_90", "stvm_sparse_model"),
        "stvm_dense_model / stvm_sparse_model": ratio("stvm_dense_model", "stvm_sparse_model"),
        "ort_dense_model / stvm_sparse_model": ratio("ort_dense_model", "stvm_sparse_model"),
        "ort_dense_model / ort_sparse_model": ratio("ort_dense_model", "ort_sparse_model"),
    }
    dense_vs_ort = ratios["stvm_dense_model / ort_dense_model"]
    sparse_vs_ort = ratios["ort_sparse_model / stvm_sparse_model"]
    goals = [
        {
            "goal": "dense block: sparse-tvm within 1.5x of onnxruntime (stvm / ort <= 1.5)",
            "value": dense_vs_ort,
            "pass": bool(dense_vs_ort and dense_vs_ort <= DENSE_GOAL),
        },
        {
            "goal": f"{args.sparsity:.0%} block: sparse-tvm faster than onnxruntime (ort / stvm > 1)",
            "value": sparse_vs_ort,
            "pass": bool(sparse_vs_ort and sparse_vs_ort > 1.0),
        },
    ]

    print()
    print(common.header_line(info))
    head = ["run", "model", "median us", "min us", "max us", "rounds x calls", "vs ort same model"]
    rows = []
    for name, key, label in RUNS:
        t = timings.get(name)
        same_ort = "ort_dense_model" if key == "dense" else "ort_sparse_model"
        rows.append(
            [
                label,
                key if key == "dense" else f"{args.sparsity:.0%} {args.pattern}",
                common.fmt_us(lat[name]),
                common.fmt_us(t.min_s if t else None),
                common.fmt_us(t.max_s if t else None),
                f"{t.rounds} x {t.number}" if t else "-",
                "-" if name.startswith("ort") else common.fmt_ratio(ratio(same_ort, name)),
            ]
        )
    print(common.table(head, rows))
    print(
        "(vs ort same model = onnxruntime latency / this latency on the same model; >1 means "
        f"faster than onnxruntime; other processes used {_cores(load.cores)} cores meanwhile)"
    )
    print()
    for key, value in ratios.items():
        print(f"{key:42s} {common.fmt_ratio(value)}")
    for name, err in results["errors"].items():
        print(f"!! {name}: {err}")
    for name, err in results["max_rel_err_vs_ort"].items():
        if err > 1e-3:
            print(f"!! {name}: output differs from onnxruntime (max rel err {err:.2e})")
    print()
    for g in goals:
        value = "-" if g["value"] is None else f"{g['value']:.2f}x"
        print(f"goal {'PASS' if g['pass'] else 'FAIL'}: {g['goal']} ({value})")

    data = {
        "benchmark": "bert_block",
        "machine": info,
        "loadavg_at_end": common.loadavg(),
        "config": {
            "seq": seq,
            "hidden": 768,
            "heads": 12,
            "ffn": 3072,
            "sparsity": args.sparsity,
            "pattern": args.pattern,
            "rounds": rounds,
            "batch_s": batch_s,
            "seed": args.seed,
            "timing": common.__doc__.strip(),
        },
        "latency_s": lat,
        "timing": {k: v.to_dict() for k, v in timings.items()},
        "ratios": ratios,
        "goals": goals,
        "foreign_load_cores": load.cores,
        "runs": {name: label for name, _, label in RUNS},
        **results,
    }
    path = common.write_json(args.out, data)
    print(f"\nwrote {path}")
    return 0


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
