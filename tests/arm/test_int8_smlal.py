"""int8 on Arm cores without the dot product (Cortex-A53/A72: ``aarch64``, ``rpi4``): the 16x4
kernel with ``smull`` / ``smlal`` / ``sadalp``. Its weight layout against a numpy model of the
instructions (hypothesis), the instructions in the assembly, the kernel under qemu-aarch64
(Cortex-A72, no dotprod) against numpy's integer sums exactly, int16 overflow cases included,
and a quantized model compiled for ``rpi4`` against onnxruntime on the same QDQ model."""

from __future__ import annotations

import json
import subprocess
import textwrap

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

import sparse_tvm as st_api
from sparse_tvm.arm.emulation import CROSS_COMPILER, python_command, python_env
from sparse_tvm.kernels.spmm_int8 import (
    Int8Spec,
    int8_blocks,
    int8_spmm_kernel,
    smull_quads,
    weight_layout,
    x_offset,
)
from sparse_tvm.target import resolve_target
from sparse_tvm.target.machine import int8_isa
from sparse_tvm.tuning.cross_build import export_shared
from tests.arm.test_int8_sdot import assert_runs_as_onnxruntime, on_x86
from tests.quantized.models import quantized_ffn


def _smull_model(data: np.ndarray, x4: np.ndarray, full_range: bool) -> np.ndarray:
    """numpy's model of one block's instructions (:func:`_smull_group`) on ``smull_quads``
    data: the 16 int32 sums of a block (int16 lanes wrap as the hardware's do)."""
    groups = data.view(np.int8).reshape(4, 2, 8).astype(np.int32)  # (group, half, bytes)
    x01 = np.tile(x4[0:2], 4).astype(np.int32)
    x23 = np.tile(x4[2:4], 4).astype(np.int32)
    lo, hi = groups[:, 0] * x01, groups[:, 1] * x23  # smull: exact in int16 (|p| <= 2^14)
    # smlal: the int16 sum wraps (full_range: each product widened alone)
    lanes = lo + hi if full_range else (lo + hi).astype(np.int16).astype(np.int32)
    return lanes.reshape(4, 4, 2).sum(axis=2).reshape(16)  # sadalp: adjacent pairs


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    low=st.sampled_from([-128, -127]),
)
def test_smull_layout_gives_each_rows_sum(seed, low):
    """Every block of the reordered data, put through the instructions' arithmetic, gives
    its 16 rows' dot products with X's 4 bytes; two products always fit an int16 lane unless
    a weight is -128 (``full_range``: then each is widened alone)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(low, 128, (32, 16)).astype(np.int8)
    w[rng.random(w.shape) < 0.3] = 0
    blocks = int8_blocks(w)
    assert blocks.full_range == bool((w == -128).any())
    data = smull_quads(blocks.data)
    assert sorted(data.view(np.int8)) == sorted(blocks.data.view(np.int8))  # same bytes
    x = rng.integers(-128, 128, 16).astype(np.int8)
    x[rng.random(16) < 0.3] = -128  # the extreme products
    for b in range(blocks.blocks):
        br = np.searchsorted(blocks.indptr, b, side="right") - 1
        q = blocks.indices[b]
        x4 = x[4 * q : 4 * q + 4]
        got = _smull_model(data[16 * b : 16 * b + 16], x4, blocks.full_range)
        want = w[16 * br : 16 * br + 16, 4 * q : 4 * q + 4].astype(np.int32) @ x4.astype(np.int32)
        np.testing.assert_array_equal(got, want)


def test_targets_without_dotprod_take_smlal():
    assert int8_isa(resolve_target("rpi4").tvm_target) == "smlal"
    assert int8_isa(resolve_target("aarch64").tvm_target) == "smlal"
    assert int8_isa(resolve_target("aarch64-dotprod").tvm_target) == "sdot"


@pytest.mark.parametrize("full_range", [False, True])
def test_smlal_in_the_assembly(full_range):
    """A 4-row group of a block is smull + smlal + sadalp (4 groups, 4-row tile: 16 each a
    block step); with a -128 weight two smull and two pairwise adds, no smlal."""
    target = resolve_target("rpi4").tvm_target
    spec = Int8Spec(64, 64, 32, 40, out_zero=128, isa="smlal", full_range=full_range)
    lib = tvm.compile(int8_spmm_kernel(spec).with_attr("global_symbol", "k"), target)
    asm = lib.mod.inspect_source("asm")
    assert "sdot" not in asm
    if full_range:
        assert asm.count("\tsmull\t") == 32 and asm.count("\tsmlal\t") == 0
        assert asm.count("\tsadalp\t") + asm.count("\tsaddlp\t") == 32
    else:
        assert [asm.count(f"\t{op}\t") for op in ("smull", "smlal", "sadalp")] == [16, 16, 16]


# Cases for the emulated run: (n, k, m, weight low, block sparsity, X signed, X extreme)
CASES = [
    (16, 4, 1, -127, 0.0, False, False),
    (48, 64, 7, -127, 0.6, False, False),
    (64, 128, 33, -128, 0.5, False, False),
    (32, 64, 5, -128, 0.0, True, True),  # -128 x -128 products: the full_range path
    (32, 64, 9, -127, 0.0, False, True),  # 2 x 127 x 128 in an int16 lane: no overflow
    (64, 32, 4, -127, 1.0, True, False),  # an empty weight
]
RUNNER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tvm
    out = {}
    for case in json.loads(sys.argv[1]):
        lib = tvm.runtime.load_module(case["lib"])
        with np.load(case["args"]) as f:
            args = [tvm.runtime.tensor(f[f"a{i}"]) for i in range(len(f.files))]
        lib["spmm_int8"](*args)
        np.save(case["out"], args[-1].numpy())
    """
)


def _case_arrays(i, n, k, m, low, block_sparsity, signed, extreme):
    rng = np.random.default_rng(100 + i)
    w = rng.integers(low, 128, (n, k)).astype(np.int8)
    keep = rng.random((n // 16, k // 4)) >= block_sparsity
    w *= np.repeat(np.repeat(keep, 16, 0), 4, 1).astype(np.int8)
    w[: min(n, 16)] *= bool(i % 2)  # an empty first block row in some
    if extreme:  # the largest products: weights at their low end times X's
        w[w != 0] = low
    x_type = np.int8 if signed else np.uint8
    info = np.iinfo(x_type)
    x = rng.integers(info.min, info.max + 1, (m, k)).astype(x_type)
    if extreme:
        x[:] = -128 if signed else 0  # as read (uint8 - 128): -128
    x_zero = int(rng.integers(info.min, info.max + 1))
    blocks = int8_blocks(w)
    correction = ((x_zero + x_offset("smlal", signed)) * blocks.row_sums).astype(np.int32)
    ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
    y = np.full((m, n), np.nan, np.float32)
    args = [x, weight_layout("smlal", blocks.data), blocks.indices, blocks.indptr, correction]
    args += [ones, zeros, zeros, y]
    exact = x.astype(np.int64) @ w.T.astype(np.int64) - x_zero * w.astype(np.int64).sum(1)
    spec = Int8Spec(n, k, m, blocks.blocks, x_signed=signed, isa="smlal")
    spec = Int8Spec(**{**spec.__dict__, "full_range": blocks.full_range})
    return spec, args, exact


@on_x86
def test_smlal_kernel_under_qemu_is_integer_exact(arm64_root, tmp_path):
    """Cross-compiled kernels run on an emulated Cortex-A72 (no dotprod): float32 out with
    scale 1 and bias 0 is the integer sum exactly (all under 2^24)."""
    target = resolve_target("rpi4")
    jobs, wants = [], []
    for i, case in enumerate(CASES):
        spec, args, exact = _case_arrays(i, *case)
        func = int8_spmm_kernel(spec).with_attr("global_symbol", "spmm_int8")
        lib = tvm.compile(func, target.tvm_target)
        so = tmp_path / f"k{i}.so"
        export_shared(lib, so, CROSS_COMPILER)
        np.savez(tmp_path / f"a{i}.npz", **{f"a{j}": a for j, a in enumerate(args)})
        jobs.append({"lib": str(so), "args": str(tmp_path / f"a{i}.npz"),
                     "out": str(tmp_path / f"y{i}.npy")})  # fmt: skip
        wants.append(exact)
    script = tmp_path / "run.py"
    script.write_text(RUNNER)
    argv = python_command(arm64_root, str(script), json.dumps(jobs), cpu="cortex-a72")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=python_env())
    assert done.returncode == 0, done.stderr[-2000:]
    for i, want in enumerate(wants):
        got = np.load(tmp_path / f"y{i}.npy")
        np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=f"case {CASES[i]}")


@on_x86
def test_quantized_ffn_on_rpi4_runs_smlal_under_qemu(arm64_root, tmp_path):
    """The quantized FFN compiled for the Raspberry Pi 4 preset (not timed here: the block
    rule decides) runs the int8 kernel on an emulated Cortex-A72 and gives onnxruntime's
    outputs on the same QDQ model."""
    q = quantized_ffn()
    compiled = st_api.compile(q, "rpi4")
    rows = compiled.report.layers
    assert [row.format for row in rows] == ["int8 bsr 16x4"] * 2
    assert all("estimated" in row.reason for row in rows)
    assert_runs_as_onnxruntime(compiled, q, tmp_path, cpu="cortex-a72")
