"""tune_kernel continues an interrupted run: the records on disk survive a kill (a torn last
line is repaired), a rerun measures only the trials left and no schedule twice.

Run as a module (``python -m tests.tuning.test_continue FOLDER TRIALS``) it is the tuning job
that the interruption test kills.
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
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.target.machine import machine_key
from sparse_tvm.tuning import TunedKernel, tune_kernel
from sparse_tvm.tuning.records import (
    RECORD_FILE,
    WORKLOAD_FILE,
    RecordStore,
    measured_records,
    structure_digest,
)
from sparse_tvm.tuning.space_x86 import MaterializeBuild, make_spec, workload
from tests.tuning.test_spaces import TARGET, sparse_weight

ROOT = Path(__file__).resolve().parents[2]
# A rowvec layer too big for the unrolled kernel: a space of 540 knob settings whose
# candidates compile in a fraction of a second.
N, K, BLOCK, M = 128, 64, (16, 1), 32
LAYER = dict(x_layout="MK", batch=1, bias=True, relu=True, target=TARGET)


def layer() -> tuple[np.ndarray, BlockSparseWeight]:
    w = sparse_weight(N, K, BLOCK, 0.5, seed=3)
    return w, BlockSparseWeight.from_dense(w, BLOCK)


def task(weight: BlockSparseWeight) -> tvm.IRModule:
    """The tuning task of the layer (the workload its records are filed under)."""
    return tvm.IRModule({"main": workload(make_spec(weight, M, **LAYER), structure_digest(weight))})


@derived_object
class InProcessBuilder(ms.builder.PyBuilder):
    """Materialises and builds in this process: LocalBuilder starts fresh TVM processes per
    batch, which would make each trial cost seconds of start-up instead of the measurement."""

    def __init__(self, spec) -> None:
        self.materialize_build = MaterializeBuild(spec)

    def build(self, build_inputs):
        from tvm.s_tir.meta_schedule.builder.local_builder import default_export

        results = []
        for build_input in build_inputs:
            try:
                module = self.materialize_build(build_input.mod, build_input.target)
                results.append(ms.builder.BuilderResult(default_export(module), None))
            except Exception as err:  # a candidate that does not build is a failed trial
                results.append(ms.builder.BuilderResult(None, str(err)))
        return results


def evaluator() -> ms.runner.EvaluatorConfig:
    return ms.runner.EvaluatorConfig(number=2, repeat=1, min_repeat_ms=0)


def tune(folder: Path, trials: int, runner=None) -> TunedKernel:
    """tune_kernel on :func:`layer` into the records folder ``folder``, 4 trials a batch."""
    _, weight = layer()
    spec = make_spec(weight, M, **LAYER)
    return tune_kernel(
        weight,
        M,
        **LAYER,
        trials=trials,
        work_dir=str(folder),
        database=RecordStore(folder).database,
        runner=runner,
        builder=InProcessBuilder(spec),
        num_trials_per_iter=4,
        seed=0,
    )


def _record_lines(folder: Path) -> list[str]:
    path = folder / RECORD_FILE
    return path.read_text().splitlines() if path.exists() else []


# SIGKILL (the harshest, and a kill mid-write tears the last line) runs in CI; SIGINT (Ctrl-C)
# with the slow tests.
@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_interrupted_tuning_keeps_its_records_and_a_rerun_continues(tmp_path, sig):
    trials = 12
    folder = tmp_path / "records"
    job = subprocess.Popen(
        [sys.executable, "-m", "tests.tuning.test_continue", str(folder), str(trials)],
        cwd=ROOT,
        start_new_session=True,  # the runner's workers share its process group
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # importing MetaSchedule's tensor intrinsics alone takes 30-60 s on a busy machine
        deadline = time.monotonic() + 300
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

    if sig == signal.SIGKILL:  # as a kill mid-write leaves it: half a last line
        first, torn = first[:-1], first[-1]
        (folder / RECORD_FILE).write_text("".join(f"{line}\n" for line in first) + torn[:40])
        with pytest.warns(UserWarning, match=r"skipped 1 unreadable line") as warned:
            result = tune(folder, trials)
        said = [str(w.message) for w in warned]
    else:
        said = []
        result = tune(folder, trials)
    # a fresh run would measure all `trials`
    assert result.trials == trials - len(first), _why_not_continued(folder, first, said)
    final = _record_lines(folder)
    assert final[: len(first)] == first
    assert len(final) == trials
    _, weight = layer()
    schedules = set()
    for record in RecordStore(folder).measured(task(weight)):
        sch = tvm.s_tir.Schedule(record.workload.mod)
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        schedules.add(tvm_ffi.structural_hash(sch.mod))
    assert len(schedules) == trials  # no schedule was measured twice
    # a third run has nothing left to do
    assert tune(folder, trials).trials == 0


def _why_not_continued(folder: Path, kept: list[str], warned: list[str]) -> str:
    """What a rerun that did not continue found on disk (the test has failed in CI only)."""
    workloads = (folder / WORKLOAD_FILE).read_text().splitlines()
    _, weight = layer()
    computed = tvm_ffi.structural_hash(task(weight))
    stored = [json.loads(line)[0] for line in workloads if line.startswith("[")]
    indices = sorted({json.loads(line)[0] for line in kept})
    targets = sorted({machine_key(json.loads(line)[1][2]) for line in kept})
    database = RecordStore(folder).database
    matching = len(measured_records(database, task(weight)))
    return (
        f"kept {len(kept)} records (workload indices {indices}); {len(workloads)} workload "
        f"line(s), stored hashes {stored}, this process's {computed}; warnings {warned}; "
        f"kept records' targets {targets}, this process's {machine_key(TARGET)}; now "
        f"{len(_record_lines(folder))} record lines, {matching} of the workload on any target"
    )


if __name__ == "__main__":
    tune(Path(sys.argv[1]), int(sys.argv[2]))
