"""Shared fixtures: the example models, pruned, and onnxruntime references."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from sparse_tvm.runtime.onnxruntime_reference import reference_session
from sparse_tvm.target.host_cpu import cpu_flags

# CI (`.ci/run`, CI=true) installs every tool the tests use (README test command): there a
# missing tool is a broken set-up, so the tests that need it run and fail instead of skipping.
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")

# A schedule rule that raises is an error in the tests, not a warning and slower code
# (sparse_tvm.pipeline.rule_failures); subprocesses (the CLI tests) inherit it.
os.environ.setdefault("SPARSE_TVM_STRICT_SCHEDULES", "1")


def needs(available: bool, reason: str) -> pytest.MarkDecorator:
    """Skip where a system tool is missing, except in CI (see ``IN_CI``)."""
    return pytest.mark.skipif(not available and not IN_CI, reason=reason)


# Hardware, not a tool: the int8 x86 kernels' runs need AVX-512 VNNI (compile-only checks of
# their code run everywhere)
vnni = pytest.mark.skipif(
    "avx512_vnni" not in cpu_flags(), reason="runs AVX-512 VNNI code: the host has none"
)
avx2 = pytest.mark.skipif("avx2" not in cpu_flags(), reason="runs AVX2 code: the host has none")
HAS_AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= cpu_flags()
avx512 = pytest.mark.skipif(not HAS_AVX512, reason="runs AVX-512 code: the host has none")
# The x86 target of tests that run what they compile: AVX-512 where the host has it (the
# kernels' main path), else AVX2, else baseline x86-64 (code for a wider ISA than the host's
# dies of SIGILL and takes the whole test run with it); 2 cores, as CI has
RUN_MCPU = "skylake-avx512" if HAS_AVX512 else "haswell" if "avx2" in cpu_flags() else "x86-64"
RUN_TARGET = {"kind": "llvm", "mcpu": RUN_MCPU, "num-cores": 2}


def skip_missing(reason: str) -> None:
    """In a fixture or test: skip for a missing system tool; in CI, fail with the reason."""
    if IN_CI:
        pytest.fail(f"CI installs everything the tests need, but: {reason}")
    pytest.skip(reason)


def ort_run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = reference_session(model)
    return session.run(None, inputs)


def random_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    out = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        out[value.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def sparse_array(shape, seed: int = 0, density: float = 0.4) -> np.ndarray:
    """A random float32 array with about ``density`` of its entries nonzero."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) > density] = 0
    return w


@pytest.fixture
def x86():
    from sparse_tvm.target import resolve_target

    return resolve_target("x86")
