"""The int8 16x4-block VNNI kernel against numpy's integer arithmetic: shapes, sparsities,
empty block rows and empty weights, m off the tile, zero points, per-channel scales, bias and
ReLU, uint8 output, int8 activations and output (run where the host has VNNI); the vpdpbusd in the assembly (any host)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.kernels.spmm_int8 import (
    Int8Spec,
    int8_blocks,
    int8_spmm_kernel,
    int16_pairs,
    weight_layout,
    x_offset,
)
from tests.conftest import avx2, vnni

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})


def _weight(rng, n, k, sparsity, block_sparsity):
    """int8 weight: whole 16x4 blocks zero with probability ``block_sparsity``, then single
    values zero with probability ``sparsity`` (blocks with explicit zeros inside)."""
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    keep = rng.random((n // 16, k // 4)) >= block_sparsity
    w *= np.repeat(np.repeat(keep, 16, 0), 4, 1).astype(np.int8)
    w[rng.random((n, k)) < sparsity] = 0
    w[: min(n, 16)] *= rng.random() < 0.5  # at times an empty first block row
    return w


def run_int8(
    w, m, x_zero, relu=False, m_tile=16, seed=0, out_zero=None, signed=False, isa="vnni", order=0
):
    """Run the kernel; ``signed``: int8 X (read as X + 128) and, with ``out_zero``, int8 out;
    ``isa`` "avx2": the vpmaddwd kernel on the weights widened to 16-bit pairs; ``order``
    the tasks' order knob."""
    rng = np.random.default_rng(seed)
    n, k = w.shape
    blocks = int8_blocks(w)
    spec = Int8Spec(
        n, k, m, blocks.blocks, relu=relu, m_tile=m_tile, out_zero=out_zero,
        x_signed=signed, out_signed=signed and out_zero is not None, isa=isa, order=order,
    )  # fmt: skip
    func = int8_spmm_kernel(spec).with_attr("global_symbol", "spmm_int8")
    lib = tvm.compile(func, AVX2 if isa == "avx2" else TARGET)
    x_type, out_type = (np.int8, np.int8) if signed else (np.uint8, np.uint8)
    info = np.iinfo(x_type)
    x = rng.integers(info.min, info.max + 1, (m, k)).astype(x_type)
    scale = (rng.random(n) * 0.01 + 1e-3).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    correction = ((x_zero + x_offset(isa, signed)) * blocks.row_sums).astype(np.int32)
    y = np.full((m, n), np.nan, np.float32) if out_zero is None else np.full((m, n), 7, out_type)
    tail_bias = np.full(n, np.nan, np.float32)  # read only with a tail
    data = int16_pairs(blocks.data) if isa == "avx2" else blocks.data
    x_in = x.astype(np.int16) if isa == "avx2" else x  # AVX2 reads X widened (the lowering's cast)
    args = [x_in, data, blocks.indices, blocks.indptr, correction, scale, bias, tail_bias, y]
    tensors = [tvm.runtime.tensor(a) for a in args]
    lib.jit()["spmm_int8"](*tensors)
    exact = x.astype(np.int64) @ w.T.astype(np.int64) - x_zero * w.astype(np.int64).sum(1)
    ref = exact.astype(np.float32) * scale + bias
    if out_zero is not None:  # round half to even as QuantizeLinear, saturate
        lowest, highest = (-128, 127) if signed else (0, 255)
        low = max(out_zero, lowest) if relu else lowest
        return tensors[-1].numpy(), np.clip(np.rint(ref) + out_zero, low, highest), lib
    if relu:
        ref = np.maximum(ref, 0)
    return tensors[-1].numpy(), ref, lib


@vnni
@settings(max_examples=12, deadline=None)
@given(
    n=st.sampled_from([16, 48, 64]),
    k=st.sampled_from([4, 12, 64]),
    m=st.integers(1, 40),
    sparsity=st.sampled_from([0.0, 0.5, 0.9]),
    block_sparsity=st.sampled_from([0.0, 0.6, 1.0]),
    x_zero=st.integers(0, 255),
    relu=st.booleans(),
    m_tile=st.sampled_from([4, 16]),
    order=st.sampled_from([0, 1]),
    seed=st.integers(0, 2**16),
)
def test_int8_kernel_is_numpy_integer_arithmetic(
    n, k, m, sparsity, block_sparsity, x_zero, relu, m_tile, order, seed
):
    w = _weight(np.random.default_rng(seed), n, k, sparsity, block_sparsity)
    got, ref, _ = run_int8(w, m, x_zero, relu=relu, m_tile=m_tile, seed=seed, order=order)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


@vnni
@settings(max_examples=6, deadline=None)
@given(
    m=st.integers(1, 20),
    out_zero=st.integers(0, 255),
    relu=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_uint8_output_is_requantized_and_saturated(m, out_zero, relu, seed):
    """The fused requantization: scale and bias in output steps (here ~40 steps of spread, so
    values saturate at both ends), rounded half to even, plus the zero point, clamped."""
    w = _weight(np.random.default_rng(seed), 32, 64, 0.5, 0.3)
    got, ref, _ = run_int8(w, m, 100, relu=relu, seed=seed, out_zero=out_zero)
    assert got.dtype == np.uint8
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    # an FMA may round a value sitting on a half step the other way than numpy's mul + add
    assert diff.max() <= 1 and np.mean(diff == 0) >= 0.99
    assert (got == 255).any() or (got == (out_zero if relu else 0)).any() or m < 4


@vnni
@settings(max_examples=6, deadline=None)
@given(
    m=st.integers(1, 20),
    x_zero=st.integers(-128, 127),
    out_zero=st.one_of(st.none(), st.integers(-128, 127)),
    relu=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_int8_activations_and_output(m, x_zero, out_zero, relu, seed):
    """Symmetric (int8) activations: X read as X + 128 (sign bits flipped), the zero point
    128 higher in the correction; an int8 output saturates at -128 / 127."""
    w = _weight(np.random.default_rng(seed), 32, 64, 0.5, 0.3)
    got, ref, _ = run_int8(w, m, x_zero, relu=relu, seed=seed, out_zero=out_zero, signed=True)
    if out_zero is None:
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
        return
    assert got.dtype == np.int8
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    assert diff.max() <= 1 and np.mean(diff == 0) >= 0.99


@vnni
@settings(max_examples=8, deadline=None)
@given(
    m=st.integers(1, 20),
    out_zero=st.integers(0, 255),
    activation=st.sampled_from(["", "relu", "relu6", "gelu"]),
    requant=st.one_of(st.none(), st.tuples(st.floats(0.005, 0.05), st.integers(0, 255))),
    seed=st.integers(0, 2**16),
)
def test_qdq_tail_in_the_epilogue(m, out_zero, activation, requant, seed):
    """The ops a QDQ model runs after the output quantize, in the epilogue: dequantize, bias,
    activation, then float32 out or the next quantize (times its scale's reciprocal)."""
    from scipy.special import erf

    from sparse_tvm.kernels.spmm_int8 import Int8Tail

    rng = np.random.default_rng(seed)
    w = _weight(rng, 32, 64, 0.5, 0.3)
    n, k = w.shape
    blocks = int8_blocks(w)
    tail = Int8Tail(
        0.05, relu=activation in ("relu", "relu6"), relu6=activation == "relu6",
        gelu=activation == "gelu", requant=None if requant is None else (*requant, False),
    )  # fmt: skip
    spec = Int8Spec(n, k, m, blocks.blocks, out_zero=out_zero, tail=tail)
    lib = tvm.compile(int8_spmm_kernel(spec).with_attr("global_symbol", "k"), TARGET).jit()
    x = rng.integers(0, 256, (m, k)).astype(np.uint8)
    scale = (rng.random(n) * 0.01 + 1e-3).astype(np.float32)
    bias, tail_bias = rng.standard_normal((2, n)).astype(np.float32)
    correction = (7 * blocks.row_sums).astype(np.int32)
    y = np.zeros((m, n), spec.out_dtype)
    args = [x, blocks.data, blocks.indices, blocks.indptr, correction, scale, bias, tail_bias, y]
    tensors = [tvm.runtime.tensor(a) for a in args]
    lib["k"](*tensors)
    got = tensors[-1].numpy()
    exact = x.astype(np.int64) @ w.T.astype(np.int64) - 7 * w.astype(np.int64).sum(1)
    steps = np.clip(np.rint(exact.astype(np.float32) * scale + bias) + out_zero, 0, 255) - out_zero
    f = (steps * np.float32(0.05) + tail_bias).astype(np.float32)
    if activation in ("relu", "relu6"):
        f = np.maximum(f, 0)
    if activation == "relu6":
        f = np.minimum(f, 6)
    if activation == "gelu":
        f = (f * 0.5 * (1 + erf(f / np.sqrt(2)))).astype(np.float32)
    if requant is None:
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, f, rtol=1e-5, atol=1e-5)
        return
    want = np.clip(np.rint(f / np.float32(requant[0])) + requant[1], 0, 255)
    assert got.dtype == np.uint8
    diff = np.abs(got.astype(np.int32) - want.astype(np.int32))
    assert diff.max() <= 1 and np.mean(diff == 0) >= 0.99


@avx2
@settings(max_examples=10, deadline=None)
@given(
    n=st.sampled_from([16, 48]),
    k=st.sampled_from([4, 12, 64]),
    m=st.integers(1, 20),
    block_sparsity=st.sampled_from([0.0, 0.6, 1.0]),
    x_zero=st.integers(0, 255),
    signed=st.booleans(),
    relu=st.booleans(),
    m_tile=st.sampled_from([1, 3, 4, 8]),
    order=st.sampled_from([0, 1]),
    seed=st.integers(0, 2**16),
)
def test_avx2_kernel_is_exact_where_vpmaddubsw_would_saturate(
    n, k, m, block_sparsity, x_zero, signed, relu, m_tile, order, seed
):
    """The AVX2 path (no VNNI): exact int32 sums, also for the extreme bytes (255 x 127 twice
    overflows vpmaddubsw's int16)."""
    rng = np.random.default_rng(seed)
    w = _weight(rng, n, k, 0.0, block_sparsity)
    w[rng.random(w.shape) < 0.3] = 127  # X up to 255: pair sums of 64,770
    got, ref, _ = run_int8(
        w, m, x_zero, relu=relu, m_tile=m_tile, seed=seed, signed=signed, isa="avx2", order=order
    )
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_avx2_instruction_in_the_assembly():
    spec = Int8Spec(768, 768, 128, 4000, isa="avx2")
    lib = tvm.compile(int8_spmm_kernel(spec).with_attr("global_symbol", "k"), AVX2)
    asm = lib.mod.inspect_source("asm")
    assert asm.count("vpmaddwd") >= 16 and "vpdpbusd" not in asm and "zmm" not in asm


def test_the_instruction_in_the_assembly():
    """Compile only (any x86 host): the inner loop is vpdpbusd on the 16-row tile, unrolled,
    the X dword broadcast from memory."""
    spec = Int8Spec(3072, 768, 128, 20000)
    lib = tvm.compile(int8_spmm_kernel(spec).with_attr("global_symbol", "k"), TARGET)
    asm = lib.mod.inspect_source("asm")
    assert asm.count("vpdpbusd") >= 16
    assert "vpbroadcastd" in asm or "{1to16}" in asm


@vnni
def test_bert_ffn_weight():
    """A BERT FFN up weight pruned in 16x1 blocks at 90 %, at M = 128: exact."""
    rng = np.random.default_rng(1)
    w = rng.integers(-127, 128, (3072, 768)).astype(np.int8)
    w *= np.repeat(rng.random((192, 768)) >= 0.9, 16, axis=0).astype(np.int8)
    got, ref, _ = run_int8(w, 128, 131)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_refusals():
    with pytest.raises(ValueError, match="int8"):
        int8_blocks(np.zeros((16, 4), np.float32))
    with pytest.raises(ValueError, match="multiple of 16"):
        int8_blocks(np.zeros((12, 4), np.int8))
    with pytest.raises(ValueError, match="multiple of 16"):
        int8_spmm_kernel(Int8Spec(16, 6, 1, 1))


def test_stored_bytes_follow_the_isas_layout():
    """The report's stored bytes: int8 values (VNNI, sdot, smlal), 16-bit pairs (AVX2)."""
    import dataclasses

    w = _weight(np.random.default_rng(5), 32, 64, 0.0, 0.5)
    blocks = int8_blocks(w)
    index_bytes = 4 * (blocks.blocks + blocks.indptr.size)
    for isa, value_bytes in (("vnni", 1), ("sdot", 1), ("smlal", 1), ("avx2", 2)):
        stored = dataclasses.replace(blocks, isa=isa)
        assert stored.nbytes == blocks.blocks * 64 * value_bytes + index_bytes
        assert weight_layout(isa, blocks.data).nbytes == blocks.blocks * 64 * value_bytes
