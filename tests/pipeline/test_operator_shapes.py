"""Operators whose TIR the CPU rules once raised on or the weight pre-packing split choked on:
compiled under the strict schedule setting (tests/conftest.py) and checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from sparse_tvm.pipeline import cpu_pipeline

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})
op = relax.op


def _run(fn, *arrays: np.ndarray):
    bb = relax.BlockBuilder()
    params = [
        relax.Var(f"x{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(arrays)
    ]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(fn(*params))
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), target=TARGET, relax_pipeline=cpu_pipeline(TARGET))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*(tvm.runtime.tensor(a) for a in arrays))


X = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)


@pytest.mark.parametrize(
    ("fn", "reference"),
    [
        # a full reduction has no output axis: SpatialReduction raised IndexError on it
        (lambda a: op.sum(a), lambda a: a.sum()),
        (lambda a: op.mean(a), lambda a: a.mean()),
        # loops under the root and no sblock: SplitLayoutRewritePreproc asserted on them
        (lambda a: op.cumsum(a, axis=1), lambda a: np.cumsum(a, axis=1)),
    ],
    ids=["sum", "mean", "cumsum"],
)
def test_compiles_and_matches_numpy(fn, reference):
    np.testing.assert_allclose(_run(fn, X).numpy(), reference(X), rtol=1e-5, atol=1e-5)


def test_topk_compiles_and_matches_numpy():
    values, indices = _run(lambda a: op.topk(a, 3), X)
    order = np.argsort(-X, axis=1)[:, :3]
    np.testing.assert_array_equal(indices.numpy(), order)
    np.testing.assert_allclose(values.numpy(), np.take_along_axis(X, order, axis=1))
