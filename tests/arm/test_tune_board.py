"""Tuning for an Arm board over the RPC tracker: MetaSchedule candidates cross-built on this host,
measured by tvm.exec.rpc_server running under qemu-aarch64 on loopback.

Latencies printed here are wall time of an emulated CPU: they check that measuring works and
feed the decisions under test, they are no performance figure of any Arm board.
"""

from __future__ import annotations

import json
import pickle
import platform
from pathlib import Path

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper

import sparse_tvm as st
from sparse_tvm.analysis import analyse
from sparse_tvm.arm.emulation import CROSS_COMPILER, run_artefacts
from sparse_tvm.backends import backend_for
from sparse_tvm.cli.main import main
from sparse_tvm.decision import KEEP_SPARSE_MARGIN, BoardTimings
from sparse_tvm.examples import mlp
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.target import resolve_target
from sparse_tvm.tuning import lookup_kernel
from sparse_tvm.tuning.cross_build import CrossExport
from sparse_tvm.tuning.records import LAYER_TIMING_FILE, RecordStore, layer_key
from sparse_tvm.tuning.rpc import Board
from sparse_tvm.tuning.space_x86 import (
    MaterializeBuild,
    _mt_choices,
    _mv_choices,
    default_knobs,
    make_spec,
    space_fn,
    structure_digest,
    workload,
)
from sparse_tvm.tuning.tune_kernel import measure_on_board
from tests.arm.conftest import KEY
from tests.conftest import ort_run, random_inputs

EMULATED = "emulated wall time under qemu-aarch64, not a performance figure"
on_x86 = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="checks tuning an Arm board from an x86-64 host"
)


def one_layer_weight() -> np.ndarray:
    """The (n, k) weight of :func:`one_layer_model`."""
    (layer,) = analyse(import_onnx(one_layer_model()))
    return layer.weight


def one_layer_model(m: int = 16, k: int = 64, n: int = 32) -> onnx.ModelProto:
    """relu(x @ W + b), W (k, n) pruned to 90 % in 16x1 blocks (16 output features share a
    zero): the one candidate format to tune is 16x1 (smaller blocks have no more zeros)."""
    rng = np.random.default_rng(3)
    w = helper.make_tensor("fc.weight", TensorProto.FLOAT, (k, n), rng.standard_normal((k, n)))
    b = helper.make_tensor("fc.bias", TensorProto.FLOAT, (n,), rng.standard_normal(n))
    nodes = [
        helper.make_node("MatMul", ["x", "fc.weight"], ["h"], name="fc"),
        helper.make_node("Add", ["h", "fc.bias"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "one_layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return prune_magnitude(model, 0.9, "16x1")


def _check_runs_under_qemu(compiled, model, tmp_path, tag):
    inputs = random_inputs(model)
    np.savez(tmp_path / f"{tag}.in.npz", **inputs)
    compiled.export(tmp_path / f"{tag}.tar")
    (summary,) = run_artefacts(
        [(tmp_path / f"{tag}.tar", tmp_path / f"{tag}.in.npz", tmp_path / f"{tag}.out.npz")]
    )
    assert summary
    with np.load(tmp_path / f"{tag}.out.npz") as got:
        for spec, want in zip(compiled.outputs, ort_run(model, inputs)):
            np.testing.assert_allclose(got[spec.name], want, rtol=2e-4, atol=2e-4)


def _expected_format(entry: dict) -> str:
    best = min(entry["candidates"], key=lambda c: c["sparse_s"])
    return "dense" if best["sparse_s"] * KEEP_SPARSE_MARGIN > entry["dense_s"] else best["format"]


@pytest.mark.parametrize("preset", ["aarch64", "rpi4"])
def test_the_neon_space_has_4_lanes_and_tiles_within_16_of_32_vector_registers(preset):
    target = resolve_target(preset).tvm_target
    w = np.random.default_rng(0).standard_normal((64, 128)).astype(np.float32)
    for block in [(16, 1), (8, 1), (4, 1), (1, 1)]:
        spec = make_spec(BlockSparseWeight.from_dense(w, block), 16, target=target)
        assert spec.lanes == 4
        vectors_per_row = -(-block[0] // 4)
        assert max(_mt_choices(spec)) * vectors_per_row <= 16  # rowvec accumulators
        assert set(_mv_choices(spec)) <= {4, 8, 12, 16}  # colvec: whole NEON vectors


@on_x86
def test_candidates_are_cross_linked_for_the_board(cross_tools, tmp_path):
    target = resolve_target("aarch64").tvm_target
    weight = BlockSparseWeight.from_dense(one_layer_weight(), (16, 1))
    spec = make_spec(weight, 16, bias=True, relu=True, target=target)
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": workload(spec, structure_digest(weight))}))
    space_fn(spec)(sch)  # one sampled candidate, as the tuner makes them
    built = MaterializeBuild(spec)(sch.mod, target)
    path = pickle.loads(pickle.dumps(CrossExport(CROSS_COMPILER)))(built)  # as in a worker
    data = Path(path).read_bytes()
    assert data[:4] == b"\x7fELF" and int.from_bytes(data[18:20], "little") == 183  # aarch64


@on_x86
def test_tuning_aarch64_without_a_board_fails_in_one_line(cross_tools, tmp_path, capsys):
    onnx.save(one_layer_model(), tmp_path / "m.onnx")
    argv = ["tune", str(tmp_path / "m.onnx"), "--target", "aarch64", "--records", str(tmp_path)]
    assert main(argv) == st.TargetError.exit_status
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: tuning for aarch64 needs a board: this x86_64 machine cannot")
    assert err.endswith("--rpc-tracker HOST:PORT --rpc-key KEY")
    assert not (tmp_path / LAYER_TIMING_FILE).exists()


def test_board_timings_decide_sparse_only_when_the_board_measured_it_faster(tmp_path):
    """The compiler's reading of layer_timings.json (no board needed: the entries are written
    here as a tuning run writes them)."""
    model = one_layer_model()
    (layer,) = analyse(import_onnx(model))
    target = backend_for("aarch64")
    weight = BlockSparseWeight.from_dense(layer.weight, (4, 1))
    knobs = default_knobs(
        make_spec(weight, layer.m, bias=True, relu=True, target=target.tvm_target)
    )
    knobs["unroll"] = 2  # a point of the space other than the hand-written kernel
    store = RecordStore(tmp_path)
    entry = {
        "layer": layer_key(layer),
        "name": layer.name,
        "target": str(target.tvm_target),
        "board": "test",
        "dense_s": 100e-6,
        "candidates": [
            {"block": [4, 1], "format": "bsr 4x1", "knobs": knobs, "sparse_s": 98e-6},
            {"block": [1, 1], "format": "csr 1x1", "knobs": None, "sparse_s": 99e-6},
        ],
    }
    store.add_layer_timing(entry)
    board = BoardTimings.load(str(tmp_path), target)
    decision = board.decide(layer, target)  # 98 us against 100 us: inside the 3 % margin
    assert decision.choice.format == "dense" and decision.weight is None
    assert "measured 1.02x on the board: kept dense" in decision.choice.reason
    assert (decision.dense_s, decision.sparse_s) == (100e-6, 98e-6)

    entry["candidates"][1]["sparse_s"] = 40e-6  # the later entry of a layer wins
    entry["candidates"][0]["sparse_s"] = 50e-6
    store.add_layer_timing(entry)
    decision = BoardTimings.load(str(tmp_path), target).decide(layer, target)
    assert decision.choice.label == "csr 1x1" and decision.kernel is None  # hand-written kernel
    assert decision.choice.estimated_speedup == pytest.approx(2.5)

    entry["candidates"][1]["sparse_s"] = 60e-6
    store.add_layer_timing(entry)
    board = BoardTimings.load(str(tmp_path), target)
    decision = board.decide(layer, target)
    assert decision.choice.label == "bsr 4x1" and decision.weight.block == (4, 1)
    assert decision.kernel is not None  # built from the recorded knobs
    assert board.decide(layer, target, sparsity_threshold=0.95) is None  # the usual rule
    assert board.used == 1

    entry["candidates"][0]["knobs"] = {"MT": 2}  # knobs of another version of the space
    store.add_layer_timing(entry)
    assert BoardTimings.load(str(tmp_path), target).decide(layer, target) is None
    assert BoardTimings.load(str(tmp_path), backend_for("rpi4")) is None  # other target


@on_x86
def test_tune_one_layer_on_the_emulated_board_then_compile(emulated_board, tmp_path):
    model = one_layer_model()
    records = tmp_path / "records"
    summary = st.tune(
        model, "aarch64", str(records), trials=4, rpc_tracker=emulated_board, rpc_key=KEY
    )
    print(f"{summary}\n({EMULATED})")
    assert summary.measured_on == f"board {KEY!r} at {emulated_board}"
    tuned = [row for row in summary.candidates if row.tuned_us is not None]
    assert [row.format for row in tuned] == ["bsr 16x1"]
    assert tuned[0].trials == 4

    # records land, for the aarch64 target, with measured (not failed) latencies
    target = resolve_target("aarch64")
    store = RecordStore(records)
    (layer,) = analyse(import_onnx(model))
    weight = BlockSparseWeight.from_dense(layer.weight, (16, 1))
    found = lookup_kernel(
        weight, layer.m, bias=True, relu=True, target=target.tvm_target, database=store.database
    )
    assert found is not None and found.exact and 0 < found.latency_s < 1
    assert len(store) == 4
    (line,) = (records / LAYER_TIMING_FILE).read_text().splitlines()
    entry = json.loads(line)
    assert entry["layer"] == layer_key(layer) and entry["target"] == str(target.tvm_target)
    assert entry["dense_s"] > 0 and [c["format"] for c in entry["candidates"]] == ["bsr 16x1"]

    # the best tuned kernel, built for aarch64 and run on the board, equals numpy
    rng = np.random.default_rng(1)
    x = rng.standard_normal((layer.m, layer.shape[1])).astype(np.float32)
    args = [x, weight.data, weight.indices, weight.indptr, layer.bias]
    args.append(np.zeros((layer.m, layer.shape[0]), np.float32))
    board = Board(emulated_board, KEY, CROSS_COMPILER)
    ((seconds, y),) = measure_on_board(board, [found.func], args, target.tvm_target, repeat=2)
    np.testing.assert_allclose(y, np.maximum(x @ layer.weight.T + layer.bias, 0), atol=1e-4)
    assert 0 < seconds < 1

    # compile applies the board's verdict, and the artefact gives onnxruntime's outputs
    compiled = st.compile(model, "aarch64", records=str(records))
    (row,) = compiled.report.layers
    assert row.format == _expected_format(entry)
    assert "on the board" in row.reason
    assert (row.dense_us, row.sparse_us) == pytest.approx(
        (entry["dense_s"] * 1e6, entry["candidates"][0]["sparse_s"] * 1e6)
    )
    assert compiled.report.notes[-1].startswith("1 layer(s) decided by the board's timings")
    _check_runs_under_qemu(compiled, model, tmp_path, "one_layer")


@on_x86
@pytest.mark.slow  # 3 layers x 8 trials on the emulated board: ~6 min on a busy 2-core VM
def test_cli_tunes_an_mlp_on_the_emulated_board(emulated_board, tmp_path, capsys):
    model = prune_magnitude(mlp(batch=8, features=32, hidden=64), 0.9, "4x1")
    onnx.save(model, tmp_path / "mlp.onnx")
    records = tmp_path / "records"
    argv = ["tune", str(tmp_path / "mlp.onnx"), "--target", "aarch64", "--records", str(records)]
    argv += ["--trials", "8", "--rpc-tracker", emulated_board, "--rpc-key", KEY]
    assert main(argv) == 0
    with capsys.disabled():
        print(f"{capsys.readouterr().out}\n({EMULATED})")
    target = resolve_target("aarch64")
    entries = RecordStore(records).layer_timings(target.tvm_target)
    layers = {layer.name: layer for layer in analyse(import_onnx(model))}
    assert {e["name"] for e in entries.values()} == {
        name for name, layer in layers.items() if layer.sparse_capable
    }
    out = tmp_path / "mlp.tar"
    argv = ["compile", str(tmp_path / "mlp.onnx"), "--target", "aarch64", "-o", str(out)]
    assert main([*argv, "--records", str(records)]) == 0
    assert "decided by the board's timings" in capsys.readouterr().out
    compiled = st.compile(model, "aarch64", records=str(records))  # its report, in Python
    by_name = {row.name: row for row in compiled.report.layers}
    for entry in entries.values():
        assert by_name[entry["name"]].format == _expected_format(entry)
    _check_runs_under_qemu(compiled, model, tmp_path, "mlp")
