"""FastMath: which calls it rewrites, their values against float64 references, and that the
compiled code makes no libm calls per element."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import tvm
from scipy.special import erf, expit
from tvm import relax

from sparse_tvm.pipeline import cpu_pipeline
from sparse_tvm.transform.fast_math import FastMath

from .relax_calls import called_ops

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})


def _gelu(x):
    return x * 0.5 * (1 + erf(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# relax op -> float64 reference
OPS = {
    "exp": (relax.op.exp, np.exp),
    "erf": (relax.op.erf, erf),
    "tanh": (relax.op.tanh, np.tanh),
    "sigmoid": (relax.op.sigmoid, expit),
    "silu": (relax.op.nn.silu, lambda x: x * expit(x)),
    "gelu": (relax.op.nn.gelu, _gelu),
    "gelu_tanh": (relax.op.nn.gelu_tanh, _gelu_tanh),
    "softmax": (lambda x: relax.op.nn.softmax(x, axis=-1), _softmax),
}


def _module(op, shape, dtype="float32") -> tvm.IRModule:
    x = relax.Var("x", relax.TensorType(list(shape), dtype))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            out = bb.emit_output(op(x))
        bb.emit_func_output(out)
    return bb.get()


def _run(mod: tvm.IRModule, x: np.ndarray) -> np.ndarray:
    executable = tvm.compile(mod, target=TARGET, relax_pipeline=cpu_pipeline(TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize("name", sorted(OPS))
def test_float32_calls_become_fast_kernels(name):
    op, _ = OPS[name]
    after = called_ops(FastMath()(_module(op, (4, 33)))["main"])
    assert after == ["relax.call_tir", f"fast_{name}"], after


def test_other_dtypes_are_left_alone():
    mod = _module(relax.op.exp, (4, 8), "float64")
    assert called_ops(FastMath()(mod)["main"]) == ["relax.exp"]


@pytest.mark.parametrize("name", sorted(OPS))
def test_values_match_float64_references(name):
    op, reference = OPS[name]
    rng = np.random.default_rng(1)
    # the range a transformer's activations and attention scores take, and far beyond
    x = np.concatenate(
        [rng.standard_normal((6, 50)) * 3, np.linspace(-20, 20, 300).reshape(6, 50)], axis=0
    ).astype(np.float32)
    got = _run(_module(op, x.shape), x)
    want = reference(x.astype(np.float64))
    # atol: GELU's x (0.5 + 0.5 erf) cancels for x << 0 in float32, the exact erf's too
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_softmax_of_masked_scores():
    """Attention masks add the lowest float32 (or -inf) to the scores: those weights are 0."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 128)).astype(np.float32) * 4
    x[0, 100:] = np.finfo(np.float32).min
    x[1, :64] = -np.inf
    x[2, 5] = 80.0  # exp of the largest score is exp(0) after the max is taken off
    got = _run(_module(OPS["softmax"][0], x.shape), x)
    want = _softmax(x.astype(np.float64))
    assert np.all(got[0, 100:] == 0) and np.all(got[1, :64] == 0)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["exp", "erf", "gelu", "softmax"])
def test_compiled_code_calls_no_libm_function(name):
    op, _ = OPS[name]
    mod = _module(op, (64, 128))
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})  # compiled only
    executable = tvm.compile(mod, target=avx2, relax_pipeline=cpu_pipeline(avx2))
    (llvm,) = [m for m in executable.mod.imports if m.kind == "llvm"]
    asm = llvm.inspect_source("asm")
    for function in ("expf", "erff", "tanhf"):
        assert f"call\t{function}" not in asm and f"{function}@PLT" not in asm, function
    assert re.search(r"v(fmadd\w*|mulps)\s+%ymm", asm)  # the polynomial, on 8-lane vectors
