"""CUDA tuning records: ``compile --records`` applies a record's kernel for a cuda target; the
search itself needs a GPU (marked ``gpu``)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo

import sparse_tvm as st
from sparse_tvm.analysis import analyse
from sparse_tvm.errors import DeviceError
from sparse_tvm.examples import mlp
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.kernels.cuda.ptx import check_ptx, cuda_source
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.target import resolve_target
from sparse_tvm.transform.dense_to_sparse import kernel_options
from sparse_tvm.tuning.records import RecordStore
from sparse_tvm.tuning.space_cuda import cuda_knobs, knobs_of, make_spec, space_fn, workload
from sparse_tvm.tuning.tune_cuda import tune_cuda_kernel
from tests.conftest import ort_run, random_inputs

BLOCK = (16, 1)


def _layers(model):
    for layer in analyse(import_onnx(model)):
        yield layer, BlockSparseWeight.from_dense(layer.weight, BLOCK), kernel_options(layer)


def test_compile_applies_cuda_records(nvcc, tmp_path):
    """One record per layer, committed from a trace of the space with a stated run time (not a
    GPU measurement): the compiled kernels carry the record's knobs."""
    model = prune_magnitude(mlp(), 0.9, "16x1")
    target = resolve_target("cuda").tvm_target
    database = RecordStore(tmp_path).database
    threads = {}
    for seed, (layer, weight, fusion) in enumerate(_layers(model)):
        spec = make_spec(weight, layer.m, **fusion)
        task = workload(weight, spec)
        sch = tvm.s_tir.Schedule(tvm.IRModule({"main": task}), seed=1000 + 77 * seed)
        space_fn(spec)(sch)
        threads[layer.name] = cuda_knobs(spec, knobs_of(sch.mod["main"])).threads
        database.commit_tuning_record(
            ms.database.TuningRecord(
                sch.trace,
                database.commit_workload(tvm.IRModule({"main": task})),
                run_secs=[tvm.runtime.convert(2e-5)],
                target=target,
                args_info=ArgInfo.from_prim_func(task),
            )
        )
    compiled = st.compile(model, "cuda", records=str(tmp_path), force_block=BLOCK)
    assert all("tuned kernel, 20 us" in row.reason for row in compiled.report.layers)
    source = cuda_source(compiled.executable)
    for name, count in threads.items():
        kernel = f"sparse_16x1_{name.replace('.', '_')}_kernel"
        assert re.search(rf"__launch_bounds__\({count}\) {kernel}\(", source), (name, count)
    assert len(check_ptx(source, "sm_80")) >= 3


@pytest.mark.skipif(tvm.cuda(0).exist, reason="checks the error on a machine without a GPU")
def test_tuning_without_a_gpu_is_a_clear_error():
    weight = BlockSparseWeight.from_dense(np.eye(32, dtype=np.float32), (1, 1))
    with pytest.raises(DeviceError, match="^no CUDA device"):
        tune_cuda_kernel(weight, 8, target=resolve_target("cuda").tvm_target, trials=4)


@pytest.mark.skipif(tvm.cuda(0).exist, reason="checks the error on a machine without a GPU")
def test_cli_tune_for_cuda_needs_a_gpu_here(tmp_path):
    import subprocess
    import sys

    import onnx

    onnx.save(prune_magnitude(mlp(), 0.9, "16x1"), tmp_path / "m.onnx")
    done = subprocess.run(
        [sys.executable, "-m", "sparse_tvm", "tune", str(tmp_path / "m.onnx"), "--target", "cuda"]
        + ["--records", str(tmp_path / "records"), "--trials", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == DeviceError.exit_status and len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "error: no CUDA device: tuning for cuda runs the candidates on a GPU"
    )


@pytest.mark.gpu
def test_gpu_tune_then_compile_matches_onnxruntime(gpu, tmp_path):
    """``st.tune`` on the GPU, then ``compile --records`` applies the tuned kernels."""
    import sparse_tvm as st

    model = prune_magnitude(mlp(), 0.9, "16x1")
    summary = st.tune(model, target="cuda", records=str(tmp_path), trials=16)
    assert len(summary.candidates) == 3 and all(c.tuned_us for c in summary.candidates)
    compiled = st.compile(model, "cuda", records=str(tmp_path))
    assert all("tuned kernel" in row.reason for row in compiled.report.layers)
    inputs = random_inputs(model)
    np.testing.assert_allclose(
        compiled.run(inputs)[0], ort_run(model, inputs)[0], rtol=1e-4, atol=1e-4
    )
