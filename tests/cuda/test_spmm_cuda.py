"""The CUDA SpMM kernel: its CPU twin against numpy, its CUDA code through nvcc and ptxas
(sm_80, sm_90), and on a GPU (marked ``gpu``) against numpy."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from sparse_tvm.kernels.cuda import CudaKnobs, cuda_im2col_kernel, cuda_spmm_kernel
from sparse_tvm.kernels.cuda.ptx import check_ptx, cuda_source
from sparse_tvm.kernels.cuda.spmm import default_cuda_knobs
from sparse_tvm.kernels.im2col import im2col_kernel
from sparse_tvm.kernels.spmm import spmm_spec
from tests.cuda.conftest import run_kernel, sparse_problem

# (n, k, m, block, layout, batch, bias, relu, knobs): ragged n / k / m tiles, both layouts,
# shared memory on and off, both warp orders, unrolled and not, more row groups than rows
CASES = [
    (64, 48, 8, (16, 1), "MK", 1, True, True, None),
    (40, 30, 13, (4, 1), "MK", 1, True, False, CudaKnobs(2, 4, 3, 5, 0, 0, 2)),
    (37, 30, 13, (4, 3), "KM", 2, False, True, CudaKnobs(4, 2, 2, 3, 1, 1, 4)),
    (37, 31, 49, (1, 1), "KM", 2, True, False, None),
    (37, 31, 5, (1, 1), "KM", 1, True, True, CudaKnobs(4, 8, 1, 7, 0, 0, 3)),
    (64, 33, 1, (1, 4), "MK", 1, False, False, CudaKnobs(1, 32, 1, 80, 1, 1, 2)),
    (96, 64, 1, (1, 1), "MK", 1, True, True, None),
    (128, 72, 20, (8, 1), "MK", 1, False, True, CudaKnobs(8, 16, 4, 6, 1, 0, 1)),
]
IDS = [f"{c[0]}x{c[1]}-m{c[2]}-{c[3][0]}x{c[3][1]}-{c[4]}-{i}" for i, c in enumerate(CASES)]


def _kernel(case, emulate):
    n, k, m, block, layout, batch, bias, relu, knobs = case
    weight, args, expected = sparse_problem(n, k, m, block, layout, batch, bias, relu)
    func = cuda_spmm_kernel(
        weight, m, x_layout=layout, batch=batch, bias=bias, relu=relu, knobs=knobs, emulate=emulate
    )
    return func, args, expected


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cpu_twin_matches_numpy(case):
    """The kernel's loops with serial loops for the thread bindings: every output written once
    (Y starts as NaN), rows balanced into groups by nonzeros on the device side."""
    func, args, expected = _kernel(case, emulate=True)
    got = run_kernel(func, args, expected.shape, tvm.target.Target({"kind": "llvm"}), tvm.cpu())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_default_knobs_are_valid():
    from sparse_tvm.formats import BlockSparseWeight

    rng = np.random.default_rng(0)
    for n, k, m, block, layout in [
        (3072, 768, 128, (16, 1), "MK"),
        (512, 4608, 196, (1, 1), "KM"),
        (768, 3072, 1, (1, 1), "MK"),
        (64, 64, 1024, (4, 1), "KM"),
    ]:
        w = rng.standard_normal((n, k)).astype(np.float32)
        w[rng.random((n, k)) > 0.1] = 0
        spec = spmm_spec(BlockSparseWeight.from_dense(w, block), m, x_layout=layout)
        knobs = default_cuda_knobs(spec)
        assert 32 <= knobs.threads <= 1024
        assert 1 <= knobs.G <= spec.block_rows
        assert not knobs.smem or spec.k * knobs.m_tile * 4 <= 48 * 1024


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_to_ptx(nvcc, arch):
    """Every case's CUDA kernel (and im2col) through nvcc to PTX and ptxas, no register spills;
    the staged kernels use shared memory behind a barrier."""
    funcs = {}
    for i, case in enumerate(CASES):
        funcs[f"spmm{i}"] = _kernel(case, emulate=False)[0]
    funcs["im2col"] = cuda_im2col_kernel(2, 3, 9, 7, (3, 2), (2, 1), (1, 0, 2, 1), (1, 2))
    mod = tvm.IRModule({name: f.with_attr("global_symbol", name) for name, f in funcs.items()})
    built = tvm.compile(mod, tvm.target.Target({"kind": "cuda", "arch": arch}))
    source = cuda_source(built)
    usage = {u.name: u for u in check_ptx(source, arch)}
    assert set(usage) == {f"{name}_kernel" for name in funcs}
    for i, case in enumerate(CASES):
        spec_knobs = case[-1]
        u = usage[f"spmm{i}_kernel"]
        assert u.spill_bytes == 0, u
        if spec_knobs is not None:
            assert (u.shared_bytes > 0) == bool(spec_knobs.smem), u
            body = source.split(f"spmm{i}_kernel(")[2].split("\nextern")[0]
            assert ("__syncthreads()" in body) == bool(spec_knobs.smem)
            assert re.search(rf"__launch_bounds__\({spec_knobs.threads}\) spmm{i}_kernel\(", source)


def test_default_kernels_of_bert_base_layers_stay_in_registers(nvcc):
    """The default knobs on BERT-base layers at 90 % (m = 128 tokens): no spills and at most
    96 registers a thread (a fully unrolled copy of the X tile once took 255)."""
    funcs = {}
    for n, k, block in [(768, 768, (16, 1)), (3072, 768, (16, 1)), (768, 3072, (1, 1))]:
        weight, args, _ = sparse_problem(n, k, 128, block, "MK", bias=True, density=0.1)
        name = f"l{n}x{k}_{block[0]}x{block[1]}"
        funcs[name] = cuda_spmm_kernel(weight, 128, bias=True).with_attr("global_symbol", name)
    built = tvm.compile(tvm.IRModule(funcs), tvm.target.Target({"kind": "cuda", "arch": "sm_80"}))
    for usage in check_ptx(cuda_source(built), "sm_80"):
        assert usage.spill_bytes == 0 and usage.registers <= 96, usage


def test_cuda_im2col_twin_matches_cpu_im2col():
    args = (2, 3, 9, 7, (3, 2), (2, 1), (1, 0, 2, 1), (1, 2))
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 7)).astype(np.float32)
    llvm = tvm.target.Target({"kind": "llvm"})
    want = run_kernel(im2col_kernel(*args), [x], (2, 18, 30), llvm, tvm.cpu())
    got = run_kernel(cuda_im2col_kernel(*args, emulate=True), [x], (2, 18, 30), llvm, tvm.cpu())
    np.testing.assert_array_equal(got, want)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gpu_kernel_matches_numpy(gpu, case):
    func, args, expected = _kernel(case, emulate=False)
    got = run_kernel(func, args, expected.shape, tvm.target.Target({"kind": "cuda"}), gpu)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
