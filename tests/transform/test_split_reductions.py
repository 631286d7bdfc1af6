"""Whole-tensor max / min / sum run as a row reduction then a reduction of the rows: the same
values (max / min exactly), and the row step with vectors (not one scalar loop)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from sparse_tvm.pipeline import cpu_pipeline
from sparse_tvm.transform.split_reductions import SplitFullReductions
from tests.conftest import RUN_TARGET

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)
AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


def _module(shape, op, keepdims=False, axis=None):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(getattr(relax.op, op)(x, axis=axis, keepdims=keepdims))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def _ops(mod) -> list[str]:
    """The operators ``main`` calls, in order."""
    return [
        str(b.value.op.name)
        for block in mod["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
    ]


@pytest.mark.parametrize("op", ["max", "min", "sum"])
@pytest.mark.parametrize(
    ("shape", "keepdims", "axis"),
    [((128, 3072), False, None), ((4, 32, 64), True, None), ((8192,), False, [0])],
)
def test_whole_tensor_reductions_give_the_same_values(op, shape, keepdims, axis):
    mod = _module(shape, op, keepdims, axis)
    split = SplitFullReductions()(mod)
    assert _ops(split).count(f"relax.{op}") == 2
    executable = tvm.compile(split, target=TARGET, relax_pipeline=cpu_pipeline(TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = getattr(np, op)(x, axis=None, keepdims=keepdims)
    assert got.shape == np.shape(want)
    if op == "sum":
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    else:
        np.testing.assert_array_equal(got, want)


def test_small_and_partial_reductions_are_left_alone():
    for mod in (_module((16, 16), "max"), _module((128, 3072), "max", axis=[1])):
        assert _ops(SplitFullReductions()(mod)) == _ops(mod)


def test_the_row_step_is_vectorized():
    split = SplitFullReductions()(_module((128, 3072), "max"))
    lib = tvm.compile(split, target=AVX512, relax_pipeline=cpu_pipeline(AVX512))  # compile only
    asm = lib.mod.imports[0].inspect_source("asm") if lib.mod.imports else ""
    source = asm or lib.mod.inspect_source("asm")
    assert "vmaxps" in source and "zmm" in source
