"""SpMM kernels against numpy: shapes off the block/vector grid, sparsity 0..1, fusion."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import scipy.special
import tvm
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sparse_tvm.errors import InputShapeError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels import spmm_kernel
from sparse_tvm.kernels.spmm import (
    SpmmSpec,
    choose_strategy,
    kernel_knobs,
    spmm_arrays,
    spmm_spec,
    vector_lanes,
)
from sparse_tvm.kernels.spmm_unrolled import unroll_eligible
from tests.conftest import RUN_TARGET, avx512

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)
AVX512 = tvm.target.Target(
    {"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2}
)  # compile only
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
BLOCKS = [(1, 1), (4, 1), (8, 1), (16, 1), (1, 4)]


def random_block_sparse(rng, n, k, block, sparsity):
    r, c = block
    keep = rng.random((-(-n // r), -(-k // c))) >= sparsity
    mask = np.repeat(np.repeat(keep, r, axis=0), c, axis=1)[:n, :k]
    return (rng.standard_normal((n, k)) * mask).astype(np.float32)


def run_spmm(
    w,
    block,
    m,
    *,
    layout="MK",
    batch=1,
    bias=False,
    relu=False,
    relu6=False,
    gelu=False,
    target=TARGET,
    seed=0,
    kernel=spmm_kernel,
    arrays=None,
):
    """Compile and run the kernel ``kernel`` (``spmm_kernel``'s signature) makes, on the
    weight arrays ``arrays`` (``spmm_arrays``'s signature) gives (default: ``spmm_arrays``
    for ``spmm_kernel``, else the weight's own); return (result, numpy reference)."""
    rng = np.random.default_rng(seed)
    n, k = w.shape
    bw = BlockSparseWeight.from_dense(w, block)
    six = {"relu6": True} if relu6 else {}  # only when set: other factories may not take it
    if gelu:
        six["gelu"] = True
    func = kernel(bw, m, x_layout=layout, batch=batch, bias=bias, relu=relu, target=target, **six)
    rt = tvm.compile(func, target).jit()
    b = rng.standard_normal(n).astype(np.float32)
    if layout == "MK":
        x = rng.standard_normal((m, k)).astype(np.float32)
        ref = x @ w.T + (b if bias else 0)
        y = np.full((m, n), np.nan, np.float32)
    elif layout == "KM_MK":
        x = rng.standard_normal((k, m)).astype(np.float32)
        ref = (w @ x).T + (b if bias else 0)
        y = np.full((m, n), np.nan, np.float32)
    else:
        x = rng.standard_normal((batch, k, m)).astype(np.float32)
        ref = np.einsum("nk,bkm->bnm", w, x) + (b[:, None] if bias else 0)
        y = np.full((batch, n, m), np.nan, np.float32)
    if relu:
        ref = np.maximum(ref, 0)
    if relu6:
        ref = np.minimum(ref, 6)
    if gelu:
        ref = ref * 0.5 * (1 + scipy.special.erf(ref / np.sqrt(2)))
    if arrays is None and kernel is spmm_kernel:
        arrays = spmm_arrays
    if arrays is None:
        weight_arrays = (bw.data, bw.indices, bw.indptr)
    else:
        weight_arrays = arrays(
            bw, m, x_layout=layout, batch=batch, bias=bias, relu=relu, target=target, **six
        )
    args = [x, *weight_arrays, *([b] if bias else []), y]
    tensors = [tvm.runtime.tensor(a) for a in args]
    rt["main"](*tensors)
    return tensors[-1].numpy(), ref


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 70),
    k=st.integers(1, 70),
    m=st.one_of(st.just(1), st.integers(2, 150)),
    block=st.sampled_from(BLOCKS),
    sparsity=st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]),
    layout=st.sampled_from(["MK", "KM", "KM_MK"]),
    fuse=st.sampled_from([(False, False), (True, False), (True, True), (False, True)]),
    seed=st.integers(0, 2**16),
)
def test_spmm_random(n, k, m, block, sparsity, layout, fuse, seed):
    w = random_block_sparse(np.random.default_rng(seed), n, k, block, sparsity)
    batch = 2 if layout == "KM" else 1
    y, ref = run_spmm(
        w, block, m, layout=layout, batch=batch, bias=fuse[0], relu=fuse[1], seed=seed
    )
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize(
    ("layout", "m"), [("MK", 1), ("MK", 37), ("KM", 1), ("KM", 37), ("KM_MK", 1), ("KM_MK", 37)]
)
def test_every_block_and_strategy(block, layout, m):
    # n, k off the block and vector grid; bias + relu on
    w = random_block_sparse(np.random.default_rng(1), 45, 23, block, 0.5)
    y, ref = run_spmm(
        w, block, m, layout=layout, batch=3 if layout == "KM" else 1, bias=True, relu=True
    )
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block", [(1, 1), (4, 1), (16, 1)])
@pytest.mark.parametrize(
    ("layout", "m"), [("MK", 1), ("MK", 40), ("KM", 1), ("KM", 40), ("KM_MK", 40)]
)
def test_relu6_clamps_every_strategy(block, layout, m):
    # 70 inputs of unit variance: outputs of standard deviation ~8, so many are clamped at 6
    w = random_block_sparse(np.random.default_rng(5), 37, 70, block, 0.0)
    y, ref = run_spmm(
        w, block, m, layout=layout, batch=2 if layout == "KM" else 1, bias=True, relu=True,
        relu6=True,
    )  # fmt: skip
    assert (ref == 6).mean() > 0.1 and (ref == 0).mean() > 0.1
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@avx512  # its expectations (strategy, knobs) are AVX-512's
@pytest.mark.parametrize(
    ("block", "layout", "strategy"),
    [
        ((4, 1), "KM", "colvec"),
        ((1, 1), "KM", "colvec"),
        ((4, 1), "KM_MK", "colvec"),
        ((4, 1), "MK", "colvec"),
        ((16, 1), "MK", "rowvec"),
    ],
)
@pytest.mark.parametrize("order", [0, 1])
def test_loop_order_knob_keeps_the_result(block, layout, strategy, order):
    # several m tiles (the last one ragged) and block rows, so the two orders differ
    w = random_block_sparse(np.random.default_rng(7), 72, 30, block, 0.6)
    bw = BlockSparseWeight.from_dense(w, block)
    spec = spmm_spec(bw, 100, x_layout=layout, batch=2 if layout == "KM" else 1, target=TARGET)
    assert choose_strategy(spec) == strategy and not unroll_eligible(spec)
    kernel = functools.partial(spmm_kernel, knobs={"order": order})
    arrays = functools.partial(spmm_arrays, knobs={"order": order})
    y, ref = run_spmm(
        w, block, 100, layout=layout, batch=spec.batch, bias=True, relu=True, kernel=kernel,
        arrays=arrays,
    )  # fmt: skip
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@avx512  # its expectations (strategy, knobs) are AVX-512's
@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 60),
    k=st.integers(1, 90),
    m=st.integers(2, 150),
    block=st.sampled_from([(1, 1), (1, 4), (2, 1), (4, 1)]),
    panel=st.integers(1, 12),
    sparsity=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
    layout=st.sampled_from(["MK", "KM", "KM_MK"]),
    fuse=st.sampled_from([(False, False), (True, True)]),
    seed=st.integers(0, 2**16),
)
def test_k_panels_keep_the_result(n, k, m, block, panel, sparsity, layout, fuse, seed):
    # K panels of 1..12 block columns (so 1..90 panels: the first, middle and last ones, and
    # a single panel), several m tiles with a shifted ragged last one, empty rows and panels
    assume(layout != "MK" or block[0] < 4 or m >= 32)  # else the rowvec kernel (no panels)
    w = random_block_sparse(np.random.default_rng(seed), n, k, block, sparsity)
    batch = 2 if layout == "KM" else 1
    knobs = {"panel": panel, "MV": 32, "split": 0}  # the cores split the rows
    y, ref = run_spmm(
        w, block, m, layout=layout, batch=batch, bias=fuse[0], relu=fuse[1], seed=seed,
        kernel=functools.partial(spmm_kernel, knobs=knobs),
        arrays=functools.partial(spmm_arrays, knobs=knobs),
    )  # fmt: skip
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("n", "k", "panel"), [(3072, 768, 96), (768, 3072, 96), (64, 144, 0)])
def test_csr_defaults_to_k_panels_where_x_outgrows_l1(n, k, panel):
    # a BERT FFN's 768 or 3072 rows of 128 floats are 384 KiB-1.5 MiB: 96-row panels of 48 KiB;
    # 144 rows are within one and a half panels: none
    bw = BlockSparseWeight.from_dense(
        random_block_sparse(np.random.default_rng(0), n, k, (1, 1), 0.9), (1, 1)
    )
    strategy, knobs = kernel_knobs(bw, 128, target=AVX512)
    assert strategy == "colvec" and knobs.panel == panel
    data, indices, indptr = spmm_arrays(bw, 128, target=AVX512)
    assert indptr.shape == ((-(-k // 96) if panel else 1) * n + 1,)
    assert sorted(data.ravel().tolist()) == sorted(bw.data.ravel().tolist())
    if not panel:
        assert indptr is bw.indptr


def test_bert_ffn_csr_with_k_panels():
    w = random_block_sparse(np.random.default_rng(3), 768, 3072, (1, 1), 0.9)
    y, ref = run_spmm(w, (1, 1), 128, bias=True, relu=True)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_unknown_knob_is_refused():
    w = random_block_sparse(np.random.default_rng(7), 72, 30, (4, 1), 0.6)
    bw = BlockSparseWeight.from_dense(w, (4, 1))
    with pytest.raises(ValueError, match=r"colvec kernel has no knobs \['tiles'\]"):
        spmm_kernel(bw, 100, x_layout="KM", knobs={"tiles": 3}, target=TARGET)


def test_relu6_takes_relu():
    w = BlockSparseWeight.from_dense(np.eye(4, dtype=np.float32), (1, 1))
    with pytest.raises(ValueError, match="relu6"):
        spmm_kernel(w, 4, relu6=True, target=TARGET)


@pytest.mark.parametrize("block", [(1, 1), (16, 1)])
@pytest.mark.parametrize("sparsity", [0.0, 1.0])
@pytest.mark.parametrize("m", [1, 20])
def test_dense_and_empty_weights(block, sparsity, m):
    w = random_block_sparse(np.random.default_rng(2), 33, 17, block, sparsity)
    y, ref = run_spmm(w, block, m, bias=True)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_empty_rows_give_bias():
    w = np.zeros((40, 24), np.float32)
    w[3, 5] = 2.0
    w[39, 23] = -1.0
    y, ref = run_spmm(w, (1, 1), 17, layout="KM", bias=True, relu=True)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_avx2_target():
    w = random_block_sparse(np.random.default_rng(3), 50, 30, (8, 1), 0.7)
    for layout, m in [("MK", 19), ("KM", 19), ("KM_MK", 19)]:
        y, ref = run_spmm(w, (8, 1), m, layout=layout, target=AVX2)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_bert_ffn_shape_16x1():
    w = random_block_sparse(np.random.default_rng(4), 768, 3072, (16, 1), 0.9)
    y, ref = run_spmm(w, (16, 1), 128, bias=True)
    np.testing.assert_allclose(y, ref, rtol=1e-3, atol=1e-3)


def test_signature_and_attributes():
    w = random_block_sparse(np.random.default_rng(5), 32, 16, (16, 1), 0.5)
    bw = BlockSparseWeight.from_dense(w, (16, 1))
    func = spmm_kernel(bw, 8, bias=True, target=TARGET)
    shapes = [tuple(int(d) for d in p.shape) for p in func.params]
    assert [p.name for p in func.params] == ["X", "data", "indices", "indptr", "bias", "Y"]
    assert shapes == [(8, 16), bw.data.shape, bw.indices.shape, bw.indptr.shape, (32,), (8, 32)]
    assert bool(func.attrs["tirx.is_scheduled"])
    named = func.with_attr("global_symbol", "sparse_fc")
    assert named.attrs["global_symbol"] == "sparse_fc"
    # dlight skips kernels that are already scheduled
    mod = tvm.IRModule({"sparse_fc": named})
    with TARGET:
        out = tvm.s_tir.dlight.ApplyDefaultSchedule(tvm.s_tir.dlight.cpu.GEMV())(mod)
    tvm.ir.assert_structural_equal(out["sparse_fc"], named)


@pytest.mark.parametrize(("block", "layout", "m"), [((16, 1), "MK", 64), ((1, 1), "KM", 64)])
def test_inner_loop_uses_zmm_fma(block, layout, m):
    w = random_block_sparse(np.random.default_rng(6), 64, 64, block, 0.5)
    func = spmm_kernel(BlockSparseWeight.from_dense(w, block), m, x_layout=layout, target=AVX512)
    asm = tvm.compile(func, AVX512).mod.inspect_source("asm")
    assert any("vfmadd" in line and "zmm" in line for line in asm.splitlines())


def test_strategy_choice():
    def spec(r, c, m, layout):
        return SpmmSpec(64, 64, r, c, 1, m, 1, layout, False, False, 16, 2)

    assert choose_strategy(spec(16, 1, 128, "MK")) == "rowvec"
    # 4x1 blocks are 4-lane vectors on AVX-512: vectorised along m instead, where m allows
    assert choose_strategy(spec(4, 1, 128, "MK")) == "colvec"
    assert choose_strategy(spec(4, 1, 8, "MK")) == "rowvec"
    assert choose_strategy(spec(16, 1, 1, "KM")) == "rowvec"
    assert choose_strategy(spec(16, 1, 128, "KM")) == "colvec"
    assert choose_strategy(spec(1, 1, 128, "MK")) == "colvec"
    assert choose_strategy(spec(1, 4, 1, "MK")) == "sliced"  # element by element
    assert choose_strategy(spec(2, 1, 1, "MK")) == "scalar"
    assert choose_strategy(spec(1, 1, 1, "MK")) == "sliced"  # CSR matrix-vector
    assert choose_strategy(spec(1, 1, 1, "KM")) == "sliced"
    assert choose_strategy(spec(16, 1, 128, "KM_MK")) == "colvec"  # its only strategy
    assert vector_lanes(AVX512) == 16 and vector_lanes(AVX2) == 8


def test_rejects_bad_arguments():
    bw = BlockSparseWeight.from_dense(np.eye(4, dtype=np.float32), (1, 1))
    with pytest.raises(ValueError, match="x_layout"):
        spmm_kernel(bw, 4, x_layout="NCHW")
    with pytest.raises(ValueError, match="batch"):
        spmm_kernel(bw, 4, batch=2)
    with pytest.raises(ValueError, match="batch"):
        spmm_kernel(bw, 4, x_layout="KM_MK", batch=2)
    with pytest.raises(InputShapeError, match="output is empty"):  # a model input too small
        spmm_kernel(bw, 0)


@pytest.mark.parametrize(("n", "k"), [(3072, 768), (384, 384)])
def test_panelled_kernel_keeps_each_threads_data_on_its_core(n, k):
    # one parallel loop (no separate parallel transposes of X or Y): each thread transposes
    # all of X into its own copy and its own rows of Y back, so no thread reads what another
    # wrote in the call (a BERT FFN layer 1.6-1.8x, a 384x384 one 2.3x slower when the two
    # cores shared no cache)
    bw = BlockSparseWeight.from_dense(
        random_block_sparse(np.random.default_rng(0), n, k, (1, 1), 0.9), (1, 1)
    )
    strategy, knobs = kernel_knobs(bw, 128, target=TARGET)
    assert strategy == "colvec" and knobs.panel > 0
    script = spmm_kernel(bw, 128, target=TARGET).script()
    assert script.count("T.parallel(") == 1
    assert "T.parallel(2)" in script


@avx512  # its expectations (strategy, knobs) are AVX-512's
@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 60),
    k=st.integers(1, 90),
    m=st.integers(32, 150),
    block=st.sampled_from([(1, 1), (4, 1), (16, 1)]),
    panel=st.integers(0, 12),
    sparsity=st.sampled_from([0.0, 0.9, 1.0]),
    layout=st.sampled_from(["MK", "KM_MK"]),
    seed=st.integers(0, 2**16),
)
def test_cores_splitting_the_columns_keep_the_result(n, k, m, block, panel, sparsity, layout, seed):
    # each core's part of the m columns (at least a 16-column tile, the last tile of a part
    # shifted back into it), with and without K panels, empty rows and panels
    assume(layout == "KM_MK" or block != (16, 1))  # 16x1 blocks in "MK" take the rowvec kernel
    w = random_block_sparse(np.random.default_rng(seed), n, k, block, sparsity)
    knobs = {"split": 1, "MV": 16, "panel": panel}
    y, ref = run_spmm(
        w, block, m, layout=layout, bias=True, relu=True, seed=seed,
        kernel=functools.partial(spmm_kernel, knobs=knobs),
        arrays=functools.partial(spmm_arrays, knobs=knobs),
    )  # fmt: skip
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("n", "k", "split"), [(384, 384, 1), (1536, 384, 1), (384, 1536, 1), (3072, 768, 0)]
)
def test_small_csr_weights_split_the_columns_by_default(n, k, split):
    # MiniLM-L6's 90 % weights (118-472 KiB stored) stay in a core's L2: the cores split the
    # 128 tokens; BERT-base's FFN weight (1.9 MiB) does not: they split its rows
    bw = BlockSparseWeight.from_dense(
        random_block_sparse(np.random.default_rng(0), n, k, (1, 1), 0.9), (1, 1)
    )
    strategy, knobs = kernel_knobs(bw, 128, target=AVX512)
    assert strategy == "colvec"
    assert (knobs.split, knobs.MV) == (split, 64 if split else 128)


@pytest.mark.parametrize(
    ("n", "k", "block", "m", "layout", "strategy"),
    [
        (64, 48, (16, 1), 40, "MK", "rowvec"),
        (96, 80, (1, 1), 128, "MK", "colvec"),  # the cores split m
        (2000, 700, (1, 1), 64, "MK", "colvec"),  # over 1 MiB: the rows split, K panels
        (300, 200, (1, 1), 1, "MK", "sliced"),
        (300, 200, (2, 1), 1, "MK", "scalar"),
        (12, 20, (1, 1), 1, "MK", "unrolled"),
        (256, 60, (4, 1), 33, "KM", "colvec"),  # a conv's layout
    ],
)
def test_gelu_epilogue(n, k, block, m, layout, strategy):
    w = random_block_sparse(np.random.default_rng(n), n, k, block, 0.8)
    bw = BlockSparseWeight.from_dense(w, block)
    options = {"x_layout": layout, "bias": True, "gelu": True, "target": TARGET}
    assert kernel_knobs(bw, m, **options)[0] == strategy
    got, ref = run_spmm(w, block, m, layout=layout, bias=True, gelu=True)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)


def test_gelu_takes_no_relu():
    bw = BlockSparseWeight.from_dense(np.eye(8, dtype=np.float32), (1, 1))
    with pytest.raises(ValueError, match="ReLU or a GELU"):
        spmm_spec(bw, 4, relu=True, gelu=True)
