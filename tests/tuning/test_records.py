"""Tuning records: layer keys, reuse, torn lines, export, and continuing an interrupted run.

Run as a script (``python test_records.py FOLDER TRIALS``) it is the tuning job that the
interruption test kills.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import te
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from sparse_tvm.tuning.records import (
    RECORD_FILE,
    WORKLOAD_FILE,
    RecordsError,
    RecordStore,
    load_exported,
    workload_key,
)

TARGET = {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
N = 64


def matmul(n: int = N) -> tvm.tirx.PrimFunc:
    """A plain n x n x n dense matmul: the small workload the tuning tests tune."""
    a = te.placeholder((n, n), name="A")
    b = te.placeholder((n, n), name="B")
    k = te.reduce_axis((0, n), name="k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    return te.create_prim_func([a, b, c])


def _tile(sch: tvm.s_tir.Schedule) -> None:
    # Tiles without unrolling: each candidate compiles in milliseconds, so a trial costs the
    # measurement, not LLVM.
    block = sch.get_sblock("C")
    i, j, k = sch.get_loops(block)
    i0, i1 = sch.split(i, sch.sample_perfect_tile(i, n=2))
    j0, j1 = sch.split(j, sch.sample_perfect_tile(j, n=2))
    k0, k1 = sch.split(k, sch.sample_perfect_tile(k, n=2))
    sch.reorder(i0, j0, k0, i1, k1, j1)
    sch.parallel(i0)


def space() -> ms.space_generator.ScheduleFn:
    """A small search space (49 x 7 schedules) for :func:`matmul`."""
    return ms.space_generator.ScheduleFn(
        _tile, sch_rules=[], postprocs=[], mutator_probs={ms.mutator.MutateTileSize(): 1.0}
    )


@derived_object
class InProcessBuilder(ms.builder.PyBuilder):
    """Builds in this process: LocalBuilder starts two fresh TVM processes per batch."""

    def build(self, build_inputs):
        from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

        results = []
        for build_input in build_inputs:
            try:
                module = default_build(build_input.mod, build_input.target, None)
                results.append(ms.builder.BuilderResult(default_export(module), None))
            except Exception as err:  # a candidate that does not build is a failed trial
                results.append(ms.builder.BuilderResult(None, str(err)))
        return results


def evaluator() -> ms.runner.EvaluatorConfig:
    return ms.runner.EvaluatorConfig(number=2, repeat=1, min_repeat_ms=0)


def tune(folder: Path, trials: int, runner="local") -> object:
    if runner == "local":
        runner = ms.runner.LocalRunner(evaluator_config=evaluator())
    return RecordStore(folder).tune(
        matmul(),
        TARGET,
        trials,
        num_trials_per_iter=4,
        space=space(),
        strategy=ms.search_strategy.EvolutionarySearch(population_size=32, genetic_num_iters=1),
        builder=InProcessBuilder(),
        runner=runner,
        num_tuning_cores=2,
        seed=0,
    )


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
    assert _key(structure, target={"kind": "llvm", "mcpu": "haswell", "num-cores": 2}) != key
    assert _key(structure, m=256) != key
    assert _key(structure, relu=True) != key


def test_workload_key_rejects_a_structure_of_the_wrong_shape():
    with pytest.raises(RecordsError, match=r"structure \(4, 31\) does not match weight"):
        _key(np.ones((4, 31)))


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


def test_tagged_workloads_keep_layers_with_equal_ir_apart(tmp_path):
    # Two layers whose kernels have the same IR (the structure is in the arguments) but
    # different structures: the key attribute makes them two workloads.
    func = matmul().with_attr("global_symbol", "main")
    a, b = _key(np.eye(4, 32)), _key(np.ones((4, 32)))
    same_ir = matmul().with_attr("global_symbol", "main")
    assert tvm_ffi.structural_hash(func) == tvm_ffi.structural_hash(same_ir)
    store = RecordStore(tmp_path)
    _commit(store, store.tag(func, a), [3e-5, 1e-5, 1e10])
    _commit(store, store.tag(func, b), [2e-5])
    assert store.best_latency(a) == pytest.approx(1e-5)
    assert store.best_latency(b) == pytest.approx(2e-5)
    assert store.best(_key(np.zeros((4, 32)))) is None
    # a new store on the same folder (the next compile) reuses the records
    again = RecordStore(tmp_path)
    assert again.best_latency(a) == pytest.approx(1e-5)
    assert len(again.measured(again.tag(func, a), TARGET)) == 3
    run_best(again.best_schedule(a))


def test_torn_last_line_is_skipped_with_a_warning(tmp_path):
    store = RecordStore(tmp_path)
    func = store.tag(matmul(), _key(np.eye(4, 32)))
    _commit(store, func, [3e-5, 2e-5, 1e-5])
    path = tmp_path / RECORD_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2]) + "\n" + lines[2][: len(lines[2]) // 2])  # torn
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable line\(s\) \[3\]"):
        again = RecordStore(tmp_path)
    assert len(again) == 2
    assert again.best_latency(_key(np.eye(4, 32))) == pytest.approx(2e-5)
    assert path.read_text().splitlines() == lines[:2]  # repaired: the next append starts clean


def test_torn_workload_line_is_skipped(tmp_path):
    (tmp_path / WORKLOAD_FILE).write_text('["123", "abc')
    with pytest.warns(UserWarning, match="skipped 1"):
        store = RecordStore(tmp_path)
    assert len(store) == 0


def test_export_and_merge_round_trip(tmp_path):
    store = RecordStore(tmp_path / "a")
    key = _key(np.eye(4, 32))
    _commit(store, store.tag(matmul(), key), [3e-5, 1e-5, 1e10])
    shipped = store.export(tmp_path / "matmul.json", top_k=1)
    data = json.loads(shipped.read_text())
    assert len(data["workloads"]) == 1 and len(data["records"]) == 1
    other = RecordStore(tmp_path / "b")
    assert other.merge(shipped) == 1
    assert other.merge(shipped) == 0  # merging twice adds nothing
    assert other.best_latency(key) == pytest.approx(1e-5)
    memory = load_exported(shipped)
    assert len(memory) == 1


def test_merge_refuses_other_files(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(RecordsError, match="not a sparse-tvm records file"):
        RecordStore(tmp_path / "r").merge(tmp_path / "x.json")


# --------------------------------------------------------------- interrupted tuning continues


def _record_lines(folder: Path) -> list[str]:
    path = folder / RECORD_FILE
    return path.read_text().splitlines() if path.exists() else []


# SIGKILL (the harshest) runs in CI; SIGINT (Ctrl-C) with the slow tests.
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_interrupted_tuning_keeps_its_records_and_a_rerun_continues(tmp_path, sig):
    trials = 20
    folder = tmp_path / "records"
    job = subprocess.Popen(
        [sys.executable, __file__, str(folder), str(trials)],
        start_new_session=True,  # the builder/runner workers share its process group
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(_record_lines(folder)) < 4 and time.monotonic() < deadline:
            assert job.poll() is None, "the tuning job ended before it was interrupted"
            time.sleep(0.1)
        os.killpg(job.pid, sig)
        job.wait(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    first = _record_lines(folder)
    assert 4 <= len(first) < trials
    for line in first:
        json.loads(line)  # every record on disk is a whole JSON line

    result = tune(folder, trials)
    assert result.previous_trials == len(first)
    assert result.new_trials == trials - len(first)  # a fresh run would measure all `trials`
    final = _record_lines(folder)
    assert final[: len(first)] == first
    assert len(final) == trials
    store = RecordStore(folder)
    schedules = set()
    for record in store.measured(matmul()):
        sch = tvm.s_tir.Schedule(record.workload.mod)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        schedules.add(tvm_ffi.structural_hash(sch.mod))
    assert len(schedules) == trials  # no schedule was measured twice
    # a third run has nothing left to do
    assert tune(folder, trials).new_trials == 0


if __name__ == "__main__":
    tune(Path(sys.argv[1]), int(sys.argv[2]))
