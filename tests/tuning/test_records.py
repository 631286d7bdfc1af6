"""Tuning records: layer keys, reuse, torn lines, export, the board's layer timings.

Continuing an interrupted run is the tuner's: tests/tuning/test_continue.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import te
from tvm.s_tir import meta_schedule as ms

from sparse_tvm.analysis.layers import ConvGeometry, Layer
from sparse_tvm.errors import SparseTVMError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.tuning.lookup import find_record
from sparse_tvm.tuning.records import (
    RECORD_FILE,
    WORKLOAD_FILE,
    RecordsError,
    RecordStore,
    layer_key,
    load_exported,
    structure_digest,
    workload_key,
)
from tests.conftest import RUN_TARGET

TARGET = RUN_TARGET  # AVX-512 where the host has it: the tuning tests run their candidates
OTHER = {**RUN_TARGET, "mcpu": "x86-64" if RUN_TARGET["mcpu"] == "haswell" else "haswell"}
N = 64


def matmul(n: int = N) -> tvm.tirx.PrimFunc:
    """A plain n x n x n dense matmul: the small workload the tuning tests tune."""
    a = te.placeholder((n, n), name="A")
    b = te.placeholder((n, n), name="B")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    return te.create_prim_func([a, b, c])


def run_best(schedule: tvm.s_tir.Schedule) -> None:
    """Build the schedule, run it locally and compare with numpy."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, N)).astype("float32")
    b = rng.standard_normal((N, N)).astype("float32")
    c = tvm.runtime.tensor(np.zeros((N, N), "float32"))
    lib = tvm.compile(schedule.mod, target=tvm.target.Target(TARGET))
    lib["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b), c)
    np.testing.assert_allclose(c.numpy(), a @ b, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ keys


def _key(structure, **overrides):
    args = dict(
        op_kind="matmul",
        weight_shape=(64, 32),
        block=(16, 1),
        m=128,
        x_layout="km",
        batch=1,
        bias=True,
        relu=False,
        target=TARGET,
        structure=structure,
    )
    args.update(overrides)
    return workload_key(**args)


def test_workload_key_depends_on_shape_structure_and_target():
    rng = np.random.default_rng(0)
    structure = rng.random((4, 32)) < 0.3
    key = _key(structure)
    assert key.startswith("matmul_64x32_b16x1_m128_")
    # same structure, other values and dtype: same key (only the pattern matters)
    assert _key(structure.astype(np.float32) * 7.0) == key
    assert _key(structure, block="16x1") == key
    other = structure.copy()
    other[0, 0] = not other[0, 0]
    assert _key(other) != key
    assert _key(structure, target=OTHER) != key
    assert _key(structure, m=256) != key
    assert _key(structure, relu=True) != key


def test_workload_key_rejects_a_structure_of_the_wrong_shape():
    with pytest.raises(RecordsError, match=r"structure \(4, 31\) does not match weight"):
        _key(np.ones((4, 31)))


def test_records_error_is_the_one_of_sparse_tvm_errors():
    from sparse_tvm import errors

    assert RecordsError is errors.RecordsError and issubclass(RecordsError, SparseTVMError)


def _pattern_weight() -> np.ndarray:
    return ((np.arange(64 * 32).reshape(64, 32) % 7) == 0).astype(np.float32)


@pytest.mark.parametrize(
    ("block", "digest"),
    [
        ((16, 1), "05c4505132d3ff5ba6cfb49332c398b1f96d7a8a"),
        ((1, 1), "6b12743f90be6219d3980dae33df349e380248da"),
        ((4, 4), "fc9f36d96ed3f2f97b48e331b8de2feb95f769d6"),
    ],
)
def test_structure_digest_keeps_its_values(block, digest):
    # The search spaces' workloads carry this digest: a new value would lose every record
    # tuned before (schedules/x86.json among them).
    assert structure_digest(BlockSparseWeight.from_dense(_pattern_weight(), block)) == digest


def test_workload_key_names_the_structure_by_its_digest():
    # one structure digest for the workloads and the key: a weight's blocks or their pattern
    from sparse_tvm.tuning import records

    w = _pattern_weight()
    r, c = 16, 1
    blocks = (w.reshape(64 // r, r, 32 // c, c) != 0).any(axis=(1, 3))
    weight = BlockSparseWeight.from_dense(w, (r, c))
    assert records._pattern_digest((64, 32), (r, c), blocks) == structure_digest(weight)
    args = dict(m=8, x_layout="MK", batch=1, bias=False, relu=False, target=TARGET)
    key = workload_key("matmul", (64, 32), (r, c), structure=blocks, **args)
    assert key.startswith("matmul_64x32_b16x1_m8_")
    assert workload_key("matmul", (64, 32), (r, c), structure=~blocks, **args) != key


def _layer(
    weight: np.ndarray, *, op="matmul", input_shape=(8, 32), conv=None, relu=False, relu6=False
):
    n, k = weight.shape
    return Layer(
        name="w",
        op=op,
        weight=weight,
        weight_shape=(k, n),
        m=8,
        batch=1 if conv is None else conv.input_shape[0],
        input_shape=input_shape,
        output_shape=(8, n),
        call_var=None,
        end_var=None,
        weight_var=None,
        relu=relu,
        relu6=relu6,
        conv=conv,
    )


def test_layer_key_names_a_layer_by_its_op_shapes_fusion_and_pattern():
    w = _pattern_weight()
    key = layer_key(_layer(w))
    assert key == layer_key(_layer(w * 3.0))  # values do not matter, the pattern does
    assert key.startswith("matmul_64x32_b1x1_m8_")
    moved = np.roll(w, 1, axis=1)
    assert layer_key(_layer(moved)) != key
    assert layer_key(_layer(w, relu=True)) != key
    assert layer_key(_layer(w, relu=True, relu6=True)) != layer_key(_layer(w, relu=True))
    # a conv's geometry: the same (n, k) view and m from another input is another layer
    conv = ConvGeometry((1, 32, 4, 2), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, (4, 2))
    conv_key = layer_key(_layer(w, op="conv2d", input_shape=(1, 32, 4, 2), conv=conv))
    strided = ConvGeometry((1, 32, 8, 4), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, (4, 2))
    other = layer_key(_layer(w, op="conv2d", input_shape=(1, 32, 8, 4), conv=strided))
    assert conv_key.startswith("conv2d_64x32_b1x1_m8_") and other != conv_key


# ----------------------------------------------------------------------------- the folder


def test_folder_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "records"
    path.write_text("")
    with pytest.raises(RecordsError, match="is a file"):
        RecordStore(path)


def test_read_only_folder_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "ro"
    path.mkdir()
    path.chmod(0o500)
    monkeypatch.setattr(os, "access", lambda *_: False)  # root writes anywhere: pretend
    with pytest.raises(RecordsError, match="not writable"):
        RecordStore(path)


def _commit(store: RecordStore, func, secs: list[float]) -> None:
    """Commit one record per latency, as tuning would (a distinct schedule each)."""
    workload = store.database.commit_workload(tvm.IRModule({"main": func}))
    for i, s in enumerate(secs):
        sch = tvm.s_tir.Schedule(workload.mod)
        (loop_i, _, _) = sch.get_loops(sch.get_sblock("C"))
        sch.split(loop_i, [None, [1, 2, 4, 8, 16, 32, 64][i % 7]])
        store.database.commit_tuning_record(
            ms.database.TuningRecord(
                sch.trace,
                workload,
                [s],
                tvm.target.Target(TARGET),
                ms.arg_info.ArgInfo.from_prim_func(func),
            )
        )


def _tagged(digest: str) -> tvm.tirx.PrimFunc:
    """:func:`matmul` carrying a structure digest, as the search spaces' workloads do."""
    return matmul().with_attr("global_symbol", "main").with_attr("sparse_tvm.structure", digest)


def _best_latency(store: RecordStore, func) -> float | None:
    found = find_record(store.database, tvm.IRModule({"main": func}), tvm.target.Target(TARGET))
    return None if found is None else found.latency_s


def test_structure_digests_keep_layers_with_equal_ir_apart(tmp_path):
    # Two layers whose kernels have the same IR (the structure is in the arguments) but
    # different structures: the digest attribute makes them two workloads.
    func = matmul().with_attr("global_symbol", "main")
    same_ir = matmul().with_attr("global_symbol", "main")
    assert tvm_ffi.structural_hash(func) == tvm_ffi.structural_hash(same_ir)
    a, b = _tagged("a" * 40), _tagged("b" * 40)
    store = RecordStore(tmp_path)
    _commit(store, a, [3e-5, 1e-5, 1e10])
    _commit(store, b, [2e-5])
    assert _best_latency(store, a) == pytest.approx(1e-5)
    assert _best_latency(store, b) == pytest.approx(2e-5)
    assert _best_latency(store, _tagged("c" * 40)) is None
    # a new store on the same folder (the next compile) reuses the records
    again = RecordStore(tmp_path)
    assert _best_latency(again, a) == pytest.approx(1e-5)
    assert len(again.measured(a, TARGET)) == 3
    assert len(again.measured(a, OTHER)) == 0
    run_best(
        again.database.query_schedule(
            tvm.IRModule({"main": a}), tvm.target.Target(TARGET), workload_name="main"
        )
    )


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    store = RecordStore(tmp_path)
    func = _tagged(structure_digest(BlockSparseWeight.from_dense(np.eye(64, 32), (16, 1))))
    _commit(store, func, [3e-5, 2e-5, 1e-5])
    path = tmp_path / RECORD_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])  # torn
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable line\(s\) \[3\]"):
        again = RecordStore(tmp_path)
    assert len(again) == 2
    assert _best_latency(again, func) == pytest.approx(2e-5)
    assert path.read_text().splitlines() == lines[:2]  # repaired: the next append starts clean


def test_torn_workload_line_is_skipped(tmp_path):
    (tmp_path / WORKLOAD_FILE).write_text('["123", "abc')
    with pytest.warns(UserWarning, match="skipped 1"):
        store = RecordStore(tmp_path)
    assert len(store) == 0


def test_export_and_merge_round_trip(tmp_path):
    store = RecordStore(tmp_path / "a")
    func = _tagged("d" * 40)
    _commit(store, func, [3e-5, 1e-5, 1e10])
    shipped = store.export(tmp_path / "matmul.json", top_k=1)
    data = json.loads(shipped.read_text())
    assert len(data["workloads"]) == 1 and len(data["records"]) == 1
    other = RecordStore(tmp_path / "b")
    assert other.merge(shipped) == 1
    assert other.merge(shipped) == 0  # merging twice adds nothing
    assert _best_latency(other, func) == pytest.approx(1e-5)
    memory = load_exported(shipped)
    assert len(memory) == 1


def test_merge_refuses_other_files(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(RecordsError, match="not a sparse-tvm records file"):
        RecordStore(tmp_path / "r").merge(tmp_path / "x.json")


# ------------------------------------------------------------------- layer timings


def test_layer_timings_keep_the_latest_entry_per_layer_and_target(tmp_path):
    store = RecordStore(tmp_path)
    target = tvm.target.Target(TARGET)
    store.add_layer_timing({"layer": "a", "target": str(target), "dense_s": 2.0})
    store.add_layer_timing({"layer": "a", "target": "llvm", "dense_s": 9.0})
    store.add_layer_timing({"layer": "a", "target": str(target), "dense_s": 1.0})
    with open(tmp_path / "layer_timings.json", "a") as f:
        f.write('{"layer": "b", "tar')  # torn by a kill
    timings = RecordStore(tmp_path).layer_timings(target)
    assert list(timings) == ["a"] and timings["a"]["dense_s"] == 1.0
