"""The x86 SpMM search space: sampled schedules build, run and match numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels import spmm_kernel
from sparse_tvm.tuning.space_x86 import (
    MutateKnob,
    default_knobs,
    knobs_of,
    make_spec,
    materialize,
    space_fn,
    spec_of,
    structure_digest,
    supports,
    workload,
)
from tests.conftest import RUN_TARGET

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)


def sparse_weight(n, k, block, sparsity, seed=0, empty_rows=()):
    rng = np.random.default_rng(seed)
    r, c = block
    keep = rng.random((-(-n // r), -(-k // c))) >= sparsity
    mask = np.repeat(np.repeat(keep, r, axis=0), c, axis=1)[:n, :k]
    w = (rng.standard_normal((n, k)) * mask).astype(np.float32)
    w[list(empty_rows)] = 0
    return w


def run(func, w, bw, spec, seed=0):
    rng = np.random.default_rng(seed)
    rt = tvm.compile(func.with_attr("global_symbol", "main"), TARGET).jit()
    b = rng.standard_normal(spec.n).astype(np.float32)
    if spec.x_layout == "MK":
        x = rng.standard_normal((spec.m, spec.k)).astype(np.float32)
        ref = x @ w.T + (b if spec.bias else 0)
    else:
        x = rng.standard_normal((spec.batch, spec.k, spec.m)).astype(np.float32)
        ref = np.einsum("nk,bkm->bnm", w, x) + (b[:, None] if spec.bias else 0)
    if spec.relu:
        ref = np.maximum(ref, 0)
    y = np.full(spec.y_shape, np.nan, np.float32)
    args = [x, bw.data, bw.indices, bw.indptr, *([b] if spec.bias else []), y]
    tensors = [tvm.runtime.tensor(a) for a in args]
    rt["main"](*tensors)
    return tensors[-1].numpy(), ref


def sample(spec, func, seed):
    """One schedule of the space: the space function run with the sampler seeded."""
    sch = tvm.s_tir.Schedule(func, seed=seed + 1)  # TVM seeds start at 1
    space_fn(spec)(sch)
    return sch


# (n, k, block, m, layout, batch, bias, relu): sizes off the tile grids, empty rows
CASES = [
    (45, 23, (16, 1), 37, "MK", 1, True, True),  # rowvec, ragged n and m
    (70, 33, (4, 1), 19, "MK", 1, False, True),  # rowvec, r < vector width
    (64, 40, (8, 1), 5, "MK", 1, True, False),  # rowvec, m < MT candidates
    (50, 29, (1, 1), 37, "KM", 2, True, True),  # colvec CSR, 1x1 conv layout
    (41, 30, (1, 1), 21, "MK", 1, False, False),  # colvec CSR, packed MK
    (36, 22, (4, 1), 50, "KM", 1, True, False),  # colvec, r = 4 in passes
    (300, 90, (1, 1), 1, "MK", 1, True, True),  # scalar CSR rows, too big to unroll
    (45, 37, (1, 4), 1, "KM", 3, False, False),  # scalar rows of 1x4 blocks, batch rows
    (29, 40, (2, 1), 1, "MK", 1, True, False),  # scalar generic (r = 2)
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}_{c[2][0]}x{c[2][1]}_{c[4]}")
def test_sampled_schedules_match_numpy(case):
    n, k, block, m, layout, batch, bias, relu = case
    w = sparse_weight(n, k, block, 0.7, seed=n, empty_rows=range(0, n, 7))
    bw = BlockSparseWeight.from_dense(w, block)
    spec = make_spec(bw, m, x_layout=layout, batch=batch, bias=bias, relu=relu, target=TARGET)
    func = workload(spec, structure_digest(bw))
    seen = set()
    for seed in (0, 99, 9999):
        annotated = sample(spec, func, seed).mod["main"]
        knobs = knobs_of(annotated)
        seen.add(tuple(sorted(knobs.items())))
        y, ref = run(materialize(annotated), w, bw, spec, seed)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4, err_msg=str(knobs))
    assert len(seen) > 1  # the knobs are really sampled


def test_mutated_trace_replays_to_a_valid_kernel():
    w = sparse_weight(48, 31, (16, 1), 0.5, seed=3)
    bw = BlockSparseWeight.from_dense(w, (16, 1))
    spec = make_spec(bw, 23, target=TARGET)
    func = workload(spec, structure_digest(bw))
    trace = sample(spec, func, 0).trace
    mutated = MutateKnob().apply(trace)
    assert mutated is not None
    changed = [
        inst
        for inst in trace.insts
        if inst.kind.name == "SampleCategorical"
        and int(trace.decisions[inst]) != int(mutated.decisions[inst])
    ]
    assert len(changed) == 1
    sch = tvm.s_tir.Schedule(func)
    mutated.apply_to_schedule(sch, remove_postproc=True)
    y, ref = run(materialize(sch.mod["main"]), w, bw, spec)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("block", "layout", "m"), [((16, 1), "MK", 33), ((1, 1), "KM", 33), ((1, 1), "MK", 1)]
)
def test_default_knobs_are_the_hand_written_kernel(block, layout, m):
    w = sparse_weight(40, 26, block, 0.6, seed=5)
    bw = BlockSparseWeight.from_dense(w, block)
    spec = make_spec(bw, m, x_layout=layout, bias=True, relu=True, target=TARGET)
    func = workload(spec, structure_digest(bw))
    y, ref = run(materialize(func, knobs=default_knobs(spec), spec=spec), w, bw, spec)
    hand, _ = run(
        spmm_kernel(bw, m, x_layout=layout, bias=True, relu=True, target=TARGET), w, bw, spec
    )
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(y, hand)


def test_workload_key_follows_the_structure():
    w = sparse_weight(32, 16, (16, 1), 0.5, seed=1)
    bw = BlockSparseWeight.from_dense(w, (16, 1))
    other = BlockSparseWeight.from_dense(np.roll(w, 1, axis=1), (16, 1))
    spec = make_spec(bw, 8, bias=True, target=TARGET)
    a = workload(spec, structure_digest(bw))
    assert spec_of(a) == spec
    same_values = BlockSparseWeight.from_dense(w * 2, (16, 1))
    assert structure_digest(same_values) == structure_digest(bw)
    assert structure_digest(other) != structure_digest(bw)
    with pytest.raises(ValueError):
        tvm.ir.assert_structural_equal(a, workload(spec, structure_digest(other)))


@pytest.mark.parametrize(("block", "m", "layout"), [((1, 1), 1, "MK"), ((4, 1), 24, "KM")])
def test_small_layers_can_be_fully_unrolled(block, m, layout):
    w = sparse_weight(20, 48, block, 0.8, seed=7, empty_rows=(3,))
    bw = BlockSparseWeight.from_dense(w, block)
    spec = make_spec(bw, m, x_layout=layout, bias=True, relu=True, target=TARGET)
    assert supports(spec)
    func = workload(spec, structure_digest(bw))
    assert spec_of(func).structure == spec.structure is not None  # the key carries it
    sampled = [knobs_of(sample(spec, func, seed).mod["main"]) for seed in range(12)]
    assert {k["unrolled"] for k in sampled} == {0, 1}
    for parts in (1, 2):
        knobs = {**default_knobs(spec), "unrolled": 1, "parts": parts}
        kernel = materialize(func, knobs=knobs)  # spec and structure recovered from func
        assert "indptr[" not in kernel.script()
        y, ref = run(kernel, w, bw, spec)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_large_layers_keep_their_traces():
    # no unroll knob where it cannot apply: records tuned before it still replay
    bw = BlockSparseWeight.from_dense(sparse_weight(256, 64, (16, 1), 0.5), (16, 1))
    spec = make_spec(bw, 64, target=TARGET)
    func = workload(spec, structure_digest(bw))
    knobs = knobs_of(sample(spec, func, 0).mod["main"])
    assert set(knobs) == {"G", "MT", "partition", "order", "unroll"}
    assert "sparse_tvm.indptr" not in func.attrs


def test_scalar_layers_sample_scalar_knobs_only():
    bw = BlockSparseWeight.from_dense(sparse_weight(300, 90, (1, 1), 0.5), (1, 1))
    spec = make_spec(bw, 1, target=TARGET)
    func = workload(spec, structure_digest(bw))
    assert set(knobs_of(sample(spec, func, 0).mod["main"])) == {"accs", "unroll"}
