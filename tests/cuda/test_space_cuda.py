"""The MetaSchedule space of the CUDA SpMM kernel: sampled candidates are valid CUDA (built,
nvcc to PTX, ptxas) and compute the right thing (their CPU twins against numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm_ffi import structural_equal

from sparse_tvm.kernels.cuda import cuda_spmm_kernel
from sparse_tvm.kernels.cuda.ptx import check_ptx, cuda_source
from sparse_tvm.tuning import space_cuda, space_x86
from sparse_tvm.tuning.space_cuda import (
    cuda_knobs,
    default_knobs,
    knobs_of,
    make_spec,
    materialize,
    sample_knobs,
    workload,
)
from tests.cuda.conftest import run_kernel, sparse_problem

CUDA = tvm.target.Target({"kind": "cuda", "arch": "sm_80"})
KEYS = {"rows", "threads", "TM", "VM", "smem", "order", "unroll"}
# a MatMul layer with a block shape and fusion, a 1x1 conv layer in CSR
LAYERS = [
    dict(n=256, k=128, m=24, block=(4, 1), layout="MK", batch=1, bias=True, relu=True),
    dict(n=64, k=96, m=49, block=(1, 1), layout="KM", batch=2, bias=False, relu=False),
]


def _fusion(layer):
    keys = {"layout": "x_layout", "batch": "batch", "bias": "bias", "relu": "relu"}
    return {name: layer[key] for key, name in keys.items()}


def _layer(layer):
    fields = ("n", "k", "m", "block", "layout", "batch", "bias", "relu")
    weight, args, expected = sparse_problem(*(layer[key] for key in fields))
    return weight, make_spec(weight, layer["m"], **_fusion(layer)), args, expected


def test_sampled_candidates_build_to_ptx(nvcc):
    """10 candidates per layer, as the search draws them: all build for CUDA, pass nvcc and
    ptxas without spills, and differ from each other."""
    funcs = {}
    for index, layer in enumerate(LAYERS):
        weight, spec, _, _ = _layer(layer)
        task = workload(weight, spec)
        seen = set()
        for seed in range(10):
            annotated = sample_knobs(task, seed)
            knobs = knobs_of(annotated)
            assert set(knobs) == KEYS
            seen.add(cuda_knobs(spec, knobs))
            funcs[f"l{index}s{seed}"] = materialize(annotated)
        assert len(seen) >= 8, seen
    mod = tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
    usage = check_ptx(cuda_source(tvm.compile(mod, CUDA)), "sm_80")
    assert len(usage) == len(funcs) == 20
    assert all(u.spill_bytes == 0 for u in usage)


def test_sampled_candidates_compute_the_layer():
    for layer in LAYERS:
        weight, spec, args, expected = _layer(layer)
        task = workload(weight, spec)
        for seed in range(4):
            func = materialize(sample_knobs(task, 100 + seed), emulate=True)
            got = run_kernel(func, args, expected.shape, tvm.target.Target("llvm"), tvm.cpu())
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer", [*LAYERS, {**LAYERS[0], "n": 40, "m": 1}], ids=["mk", "km", "m1"])
def test_default_kernel_is_a_point_of_the_space(layer):
    weight, spec, _, _ = _layer(layer)
    default = cuda_spmm_kernel(weight, layer["m"], **_fusion(layer))
    assert structural_equal(materialize(workload(weight, spec), default_knobs(spec)), default)


def test_knobs_are_metaschedule_decisions_keyed_apart_from_x86():
    weight, spec, _, _ = _layer(LAYERS[1])
    task = workload(weight, spec)
    assert task.attrs["sparse_tvm.space"] == space_cuda.SPACE_VERSION
    assert not structural_equal(task, space_x86.workload(spec, space_x86.structure_digest(weight)))
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": task}), seed=7)
    space_cuda.space_fn(spec)(sch)
    kinds = [inst.kind.name for inst in sch.trace.insts]
    assert kinds.count("SamplePerfectTile") == 1 and kinds.count("SampleCategorical") >= 5
    # replaying the trace with another decision gives another kernel
    inst = next(i for i in sch.trace.insts if i.kind.name == "SampleCategorical")
    other = (int(sch.trace.decisions[inst]) + 1) % len(inst.attrs[0])
    replay = tvm.s_tir.Schedule(tvm.IRModule({"main": task}))
    sch.trace.with_decision(inst, other, remove_postproc=True).apply_to_schedule(replay, False)
    assert knobs_of(replay.mod["main"]) != knobs_of(sch.mod["main"])


@pytest.mark.slow
def test_tune_context_generates_the_space():
    """Through MetaSchedule's TuneContext (slow: a CUDA context first imports every tensor
    intrinsic, ~40 s on 2 cores)."""
    weight, spec, _, _ = _layer(LAYERS[1])
    context = ms.TuneContext(
        mod=tvm.IRModule({"main": workload(weight, spec)}),
        target=CUDA,
        space_generator=space_cuda.design_space(spec),
        task_name="spmm",
    )
    (design,) = context.generate_design_space()
    assert set(knobs_of(design.mod["main"])) == KEYS


@pytest.mark.gpu
def test_gpu_tuning_finds_a_valid_kernel(gpu, tmp_path):
    """A short MetaSchedule search on the GPU with the layer's real sparsity structure."""
    from sparse_tvm.tuning import RealSparsityArguments

    weight, spec, args, expected = _layer(LAYERS[0])
    task = workload(weight, spec)
    target = tvm.target.Target({"kind": "cuda", "arch": "sm_80", "host": "llvm"})
    database = ms.tir_integration.tune_tir(
        tvm.IRModule({"main": task}),
        target,
        str(tmp_path),
        max_trials_global=16,
        num_trials_per_iter=8,
        space=space_cuda.design_space(spec),
        builder=ms.builder.LocalBuilder(f_build=space_cuda.MaterializeBuild(spec)),
        runner=ms.runner.LocalRunner(f_alloc_argument=RealSparsityArguments(weight)),
        cost_model=ms.cost_model.XGBModel(extractor=space_cuda.CudaKnobFeatures()),
    )
    best = database.query_schedule(tvm.IRModule({"main": task}), target, workload_name="main")
    assert best is not None
    func = materialize(best.mod["main"], spec=spec)
    got = run_kernel(func, args, expected.shape, target, gpu)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
