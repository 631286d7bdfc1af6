"""Tune the benchmark layer shapes for the ``x86`` preset and export ``schedules/x86.json``.

The compiler applies a shipped record to any layer with the same shapes, block, layout,
fusion, vector lanes and core count, whatever its sparsity structure
(``sparse_tvm.tuning.lookup_kernel``), so the records tuned here on random pruned weights serve
every model with these layer shapes on a machine like this one (2-core AVX-512 here).

Layers tuned (90 %, blocks 16x1 and 1x1; one-layer ONNX models):

    BERT-base FFN   MatMul x (128, 768) @ B (768, 3072)  and  x (128, 3072) @ B (3072, 768)
                    (the weights of bench_ffn.py, seed 0)
    MobileNet-v1    1x1 Conv with bias, (in, out, H=W) = bench_conv1x1.TUNE_SHAPES
                    (the weights of bench_conv1x1.py, seed 0)

into a records folder (default ``benchmarks/results/records_x86``, shared with
bench_conv1x1.py: a rerun continues, a tuned layer is not tuned again), then exported with
``RecordStore(folder).export("schedules/x86.json", top_k=1)``.

The compiler takes a matching record's kernel without comparing it with the hand-written one,
and 24 trials do not always beat it (the hand-written schedule is one point of the space, not
necessarily sampled). So before shipping, every tuned kernel is checked against the default
kernel of the same layer, measured alternately (``--check-rounds`` times each, median), and only
records at least ``--min-gain`` faster are written (``--no-check`` ships them all).

    python benchmarks/tune_shipped.py                     # ~24 trials per kernel
    python benchmarks/tune_shipped.py --trials 32 --no-conv
    python benchmarks/tune_shipped.py --export-only       # re-export the folder
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common  # noqa: I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)

import bench_conv1x1
import bench_ffn
import numpy as np
from tvm.s_tir import meta_schedule as ms

from sparse_tvm.analysis import block_zero_fractions
from sparse_tvm.analysis import analyse
from sparse_tvm.decision import candidate_blocks
from sparse_tvm.driver.tune_model import tune_model
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.kernels import spmm_kernel
from sparse_tvm.pruning import parse_pattern
from sparse_tvm.target import resolve_target
from sparse_tvm.transform.dense_to_sparse import kernel_layout
from sparse_tvm.tuning import lookup_kernel
from sparse_tvm.tuning.records import RecordStore
from sparse_tvm.tuning.space_x86 import make_spec, spec_of
from sparse_tvm.tuning.tune_kernel import measure

EXPORT = common.ROOT / "schedules" / "x86.json"
FFN_M = 128
SPARSITY = 0.9
BLOCKS = ["16x1", "1x1"]


def jobs(args) -> list[tuple[str, object]]:
    """(name, ONNX model) of every layer to tune."""
    out = []
    for block in args.blocks:
        r, c = parse_pattern(block)
        if not args.no_ffn:
            for layer, (n, k) in bench_ffn.LAYERS.items():
                w_nk = bench_ffn.pruned_weight(n, k, SPARSITY, (r, c), 0)
                model = bench_ffn.one_layer_model(np.ascontiguousarray(w_nk.T), FFN_M, layer)
                out.append((f"{layer} {n}x{k} m={FFN_M} {block}", model))
        if not args.no_conv:
            for shape in args.conv_shapes:
                model, _, _ = bench_conv1x1.case_model(shape, SPARSITY, block, 0)
                label = bench_conv1x1.shape_label(shape)
                out.append((f"conv1x1 {label} m={shape[2] ** 2} {block}", model))
    return out


def spec_key(spec) -> tuple:
    return (spec.n, spec.k, spec.r, spec.c, spec.m, spec.batch, spec.x_layout, spec.bias, spec.relu)


def check_records(args, store: RecordStore) -> tuple[set[tuple], list[dict]]:
    """Measure each layer's tuned kernel against its default kernel, alternately; return the
    spec keys of the tuned kernels that are at least ``args.min_gain`` faster."""
    target = resolve_target("x86").tvm_target
    keep, rows = set(), []
    for name, model in jobs(args):
        layer = analyse(import_onnx(model))[0]
        x_layout, batch = kernel_layout(layer)
        kw = dict(x_layout=x_layout, batch=batch, bias=layer.bias is not None, relu=layer.relu)
        for block in candidate_blocks(layer, block_zero_fractions(layer.weight)):
            weight = BlockSparseWeight.from_dense(layer.weight, block)
            spec = make_spec(weight, layer.m, target=target, **kw)
            found = lookup_kernel(weight, layer.m, target=target, database=store.database, **kw)
            if found is None:
                continue
            default = spmm_kernel(weight, layer.m, target=target, **kw)
            rng = np.random.default_rng(0)
            inputs = [rng.standard_normal(spec.x_shape).astype(np.float32)]
            inputs += [weight.data, weight.indices, weight.indptr]
            if spec.bias:
                inputs.append(rng.standard_normal(spec.n).astype(np.float32))
            inputs.append(np.zeros(spec.y_shape, np.float32))
            t_def, t_tun = [], []
            for _ in range(args.check_rounds):
                s_def, out_def = measure(default, inputs, target)
                s_tun, out_tun = measure(found.func, inputs, target)
                t_def.append(s_def)
                t_tun.append(s_tun)
            ok = bool(np.allclose(out_tun, out_def, rtol=1e-4, atol=1e-4))
            gain = float(np.median(t_def) / np.median(t_tun))
            shipped = ok and gain >= args.min_gain
            if shipped:
                keep.add(spec_key(spec))
            row = {
                "layer": name,
                "block": f"{block[0]}x{block[1]}",
                "default_us": float(np.median(t_def)) * 1e6,
                "tuned_us": float(np.median(t_tun)) * 1e6,
                "gain": gain,
                "outputs_match": ok,
                "shipped": shipped,
                "knobs": found.knobs,
            }
            rows.append(row)
            print(
                f"  check {name} {row['block']}: default {row['default_us']:.1f} us, tuned "
                f"{row['tuned_us']:.1f} us ({gain:.2f}x) -> {'ship' if shipped else 'drop'}",
                flush=True,
            )
    return keep, rows


def filter_export(path: Path, keep: set[tuple]) -> None:
    """Keep only the workloads (and their records) whose spec key is in ``keep``."""
    data = json.loads(path.read_text())
    new_index, workloads = {}, []
    for wid, w in enumerate(data["workloads"]):
        spec = spec_of(ms.database.Workload.from_json(w).mod["main"])
        if spec_key(spec) in keep:
            new_index[wid] = len(workloads)
            workloads.append(w)
    data["workloads"] = workloads
    data["records"] = [[new_index[w], r] for w, r in data["records"] if w in new_index]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=24, help="trials per kernel")
    parser.add_argument("--records", default=str(bench_conv1x1.DEFAULT_RECORDS))
    parser.add_argument("--out", default=str(EXPORT), help="exported JSON (schedules/x86.json)")
    parser.add_argument("--blocks", nargs="+", default=BLOCKS)
    parser.add_argument(
        "--conv-shapes",
        nargs="+",
        default=[bench_conv1x1.shape_label(s) for s in bench_conv1x1.TUNE_SHAPES],
    )
    parser.add_argument("--no-ffn", action="store_true")
    parser.add_argument("--no-conv", action="store_true")
    parser.add_argument("--export-only", action="store_true")
    parser.add_argument("--no-check", action="store_true", help="ship every tuned record")
    parser.add_argument("--check-rounds", type=int, default=3)
    parser.add_argument("--min-gain", type=float, default=1.03, help="default / tuned latency")
    common.add_threads_option(parser)
    args = parser.parse_args(argv)
    args.conv_shapes = [bench_conv1x1.parse_shape(s) for s in args.conv_shapes]

    info = common.machine()
    print(common.header_line(info), flush=True)
    log = []
    if not args.export_only:
        start_all = time.perf_counter()
        for name, model in jobs(args):
            imported = import_onnx(model)
            layer = analyse(imported)[0]
            cands = candidate_blocks(layer, block_zero_fractions(layer.weight))
            print(f"{name}: candidates {[f'{r}x{c}' for r, c in cands]}", flush=True)
            start = time.perf_counter()
            summary = tune_model(model, "x86", args.records, trials=args.trials)
            seconds = time.perf_counter() - start
            print(summary, flush=True)
            log.append(
                {
                    "layer": name,
                    "seconds": seconds,
                    "candidates": common.tune_candidates(summary),
                    "dense_us": summary.dense_us,
                }
            )
        print(f"tuning took {time.perf_counter() - start_all:.0f} s", flush=True)
    store = RecordStore(args.records)
    checks = None
    if not args.no_check:
        keep, checks = check_records(args, store)
    path = store.export(args.out, top_k=1)
    if checks is not None:
        filter_export(Path(path), keep)
        common.write_json(common.RESULTS / "tune_shipped_check.json", {"checks": checks})
    data = json.loads(Path(path).read_text())
    print(
        f"exported {len(data['records'])} records of {len(data['workloads'])} workloads to "
        f"{path} ({Path(path).stat().st_size / 1024:.0f} KiB)"
    )
    if log:
        common.write_json(common.RESULTS / "tune_shipped.json", {"machine": info, "layers": log})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
