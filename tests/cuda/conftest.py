"""CUDA tests: compile-only checks (nvcc -> PTX -> ptxas) run everywhere the CUDA toolkit is;
tests marked ``gpu`` run the code and skip where there is no GPU."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels.cuda.ptx import toolkit
from tests.conftest import skip_missing


@pytest.fixture
def nvcc():
    """Skip a compile-only test where nvcc / ptxas are missing."""
    missing = toolkit()
    if missing:
        skip_missing(f"compile-only CUDA check needs the CUDA toolkit: {missing}")


@pytest.fixture
def gpu():
    """The first GPU; skips the test where there is none."""
    device = tvm.cuda(0)
    if not device.exist:
        pytest.skip("no CUDA GPU on this machine")
    return device


def sparse_problem(n, k, m, block, layout, batch=1, bias=False, relu=False, density=0.15, seed=0):
    """A random sparse weight (with empty and heavy rows), activations and the numpy answer."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[rng.random((n, k)) > density] = 0
    w[n // 3 : n // 3 + 4] = 0  # empty block rows
    w[-1] = rng.standard_normal(k)  # one dense row: unbalanced rows
    x_shape = (m, k) if layout == "MK" else (batch, k, m)
    x = rng.standard_normal(x_shape).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    y = x @ w.T if layout == "MK" else np.einsum("nk,bkm->bnm", w, x)
    if b is not None:
        y = y + (b if layout == "MK" else b[None, :, None])
    if relu:
        y = np.maximum(y, 0)
    weight = BlockSparseWeight.from_dense(w, block)
    args = [x, weight.data, weight.indices, weight.indptr] + ([b] if bias else [])
    return weight, args, y.astype(np.float32)


def run_kernel(func, args, out_shape, target, device):
    """Build ``func`` for ``target``, run it on ``device`` (Y starts as NaN), return Y."""
    rt = tvm.compile(func.with_attr("global_symbol", "main"), target)
    tensors = [tvm.runtime.tensor(np.ascontiguousarray(a), device=device) for a in args]
    y = tvm.runtime.tensor(np.full(out_shape, np.nan, np.float32), device=device)
    rt["main"](*tensors, y)
    return y.numpy()
