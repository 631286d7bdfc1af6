"""int8 on Arm: a quantized model compiled for an aarch64 target with the dot product runs the
int8 kernel with ``sdot`` (checked in the assembly) and, under qemu-aarch64 with the TVM
runtime only, gives onnxruntime's outputs on the same QDQ model (cores without it: test_int8_smlal.py)."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import tvm

import sparse_tvm as st
from sparse_tvm.arm.emulation import run_artefacts
from sparse_tvm.kernels.spmm_int8 import Int8Spec, int8_spmm_kernel
from sparse_tvm.target import resolve_target
from tests.quantized.models import output_step, quantized_ffn, run_ort


def test_sdot_in_the_assembly():
    """A 16x4 block is four sdot (4 int32 lanes each) on a 4-row tile: 16 a block step."""
    target = resolve_target("aarch64-dotprod").tvm_target
    spec = Int8Spec(64, 64, 32, 40, out_zero=128, isa="sdot")
    lib = tvm.compile(int8_spmm_kernel(spec).with_attr("global_symbol", "k"), target)
    asm = lib.mod.inspect_source("asm")
    assert asm.count("\tsdot\t") == 16


# the qemu runs: an aarch64 build emulated on an x86-64 host (CI's)
on_x86 = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="runs an aarch64 build emulated on an x86-64 host"
)


@on_x86
def test_quantized_ffn_runs_sdot_under_qemu(arm64_root, tmp_path):
    q = quantized_ffn()
    compiled = st.compile(q, "aarch64-dotprod")  # not timed here: the block rule decides
    rows = compiled.report.layers
    assert [row.format for row in rows] == ["int8 bsr 16x4"] * 2
    assert all("estimated" in row.reason for row in rows)
    assert_runs_as_onnxruntime(compiled, q, tmp_path, cpu="max")


@on_x86
def test_quantized_convs_run_sdot_under_qemu(arm64_root, tmp_path):
    """The convs' 8-bit im2col rows into the sdot kernel (tests/quantized/test_int8_conv.py)."""
    from tests.quantized.test_int8_conv import two_convs

    q = two_convs(2)
    compiled = st.compile(q, "aarch64-dotprod")
    assert [row.format for row in compiled.report.layers] == ["int8 bsr 16x4"] * 3
    x = np.random.default_rng(5).random((2, 4, 9, 9)).astype(np.float32)
    assert_runs_as_onnxruntime(compiled, q, tmp_path, cpu="max", x=x)


def assert_runs_as_onnxruntime(compiled, q, tmp_path, *, cpu: str, x=None) -> None:
    """``compiled`` (the quantized model ``q``, input ``x``: by default the FFN's, for an
    aarch64 target) exported and run under qemu-aarch64 on ``cpu`` with the TVM runtime only:
    onnxruntime's outputs on ``q``, a rounding step apart at most and rarely."""
    if x is None:
        x = np.random.default_rng(3).standard_normal((32, 64)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    compiled.export(tmp_path / "ffn.tar")
    run_artefacts([(tmp_path / "ffn.tar", tmp_path / "in.npz", tmp_path / "out.npz")], cpu=cpu)
    with np.load(tmp_path / "out.npz") as out:
        got = out[compiled.outputs[0].name]
    want = run_ort(q, x)
    assert np.abs(got - want).max() <= output_step(q) * 1.001
    assert np.mean(np.isclose(got, want, rtol=1e-6, atol=1e-6)) >= 0.99
