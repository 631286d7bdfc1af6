"""The int8 kernel's search space: a workload keeps its spec, the knobs materialise into
kernels equal to numpy's integer sums, a short MetaSchedule run on this host (AVX2 or VNNI)
finds knobs whose kernel equals the hand-written one, and the lookup finds them again (for
another structure of the same shapes too, as borrowed knobs)."""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms

from sparse_tvm.kernels.spmm_int8 import Int8Spec, Int8Tail, int8_blocks, int8_spmm_kernel
from sparse_tvm.target import resolve_target
from sparse_tvm.target.machine import int8_isa
from sparse_tvm.tuning.space_int8 import (
    Int8Arguments,
    default_knobs,
    materialize,
    shapes_key,
    spec_of,
    workload,
)
from sparse_tvm.tuning.tune_int8 import lookup_int8_kernel, tune_int8_kernel
from tests.conftest import avx2

HOST = resolve_target("x86").tvm_target  # the host: AVX-512 (VNNI) or AVX2
ISA = int8_isa(HOST)  # None only without AVX2: the avx2 mark skips those tests


def _weight(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    keep = rng.random((n // 16, k // 4)) < 0.3
    return w * np.repeat(np.repeat(keep, 16, 0), 4, 1).astype(np.int8)


def test_the_workload_keeps_the_spec_and_the_knobs_make_its_kernel():
    blocks = int8_blocks(_weight(48, 64, 0))
    tail = Int8Tail(0.02, relu=True, requant=(0.05, 3, False))
    spec = Int8Spec(48, 64, 20, blocks.blocks, out_zero=7, tail=tail, isa="avx2")
    func = workload(spec, blocks, cores=2)
    assert spec_of(func) == spec
    other = workload(dataclasses.replace(spec, blocks=blocks.blocks + 3), blocks, cores=2)
    assert shapes_key(other) == shapes_key(func)  # what lends knobs: all but the blocks
    tuned = materialize(func, knobs={"m_tile": 3, "order": 1})
    want = int8_spmm_kernel(dataclasses.replace(spec, m_tile=3, order=1))
    tvm.ir.assert_structural_equal(tuned, want)
    assert default_knobs(spec) == {"m_tile": 4, "order": 0}  # the hand-written kernel's


@avx2  # the host's int8 kernel (VNNI hosts have AVX2 too)
def test_short_int8_tuning_finds_knobs_the_compiler_finds_again(tmp_path):
    w = _weight(64, 128, 1)
    blocks = dataclasses.replace(int8_blocks(w), isa=ISA)
    spec = Int8Spec(64, 128, 24, blocks.blocks, isa=ISA)  # float32 out: the sums, scaled
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    result = tune_int8_kernel(
        blocks, spec, target=HOST, trials=6, work_dir=str(tmp_path), database=database, seed=0
    )
    assert 0 < result.trials <= 6 and result.latency_s > 0 and result.default_latency_s > 0
    assert set(result.knobs) == {"m_tile", "order"}
    # the tuned kernel on real arguments: numpy's integer sums times the unit scale
    info = [("TENSOR", p.dtype, p.shape) for p in int8_spmm_kernel(spec).params]
    args = Int8Arguments(blocks, spec, seed=4).arrays(info)
    args[5] = np.ones(64, np.float32)
    lib = tvm.compile(result.func.with_attr("global_symbol", "main"), HOST)
    tensors = [tvm.runtime.tensor(a) for a in args]
    lib["main"](*tensors)
    exact = args[0].astype(np.int64) @ w.T.astype(np.int64)
    np.testing.assert_array_equal(tensors[-1].numpy(), exact.astype(np.float32))
    again = lookup_int8_kernel(blocks, spec, target=HOST, database=database)
    assert again is not None and again.exact and again.knobs == result.knobs
    other = dataclasses.replace(int8_blocks(_weight(64, 128, 2)), isa=ISA)
    other_spec = dataclasses.replace(spec, blocks=other.blocks)
    borrowed = lookup_int8_kernel(other, other_spec, target=HOST, database=database)
    assert borrowed is not None and not borrowed.exact and borrowed.knobs == result.knobs
    wider = dataclasses.replace(spec, n=128)  # other shapes: no record
    assert lookup_int8_kernel(blocks, wider, target=HOST, database=database) is None
