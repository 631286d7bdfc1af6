"""DenseToSparse with the micro lowering (compact weights, direct sparse conv), in the style of
TVM's pass tests: ``Before`` and ``Expected`` in TVMScript, compared structurally."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, s_tir
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from sparse_tvm.analysis.layers import find_layers
from sparse_tvm.micro import kernels
from sparse_tvm.micro.compact import compact_weight
from sparse_tvm.micro.lowering import MicroLowering
from sparse_tvm.transform import DenseToSparse, SparsePlan
from tests.conftest import sparse_array

BLOCK = (2, 1)


def _plans(mod: tvm.IRModule, values: dict[str, np.ndarray]):
    func = mod["main"]
    weights = {p: values[p.name] for p in func.params if p.name in values}
    return [
        SparsePlan(layer, compact_weight(layer.weight, BLOCK))
        for layer in find_layers(func, weights)
    ]


def _fill(expected: tvm.IRModule, name: str, func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """``expected`` with its placeholder ``name`` replaced by the kernel as the pass adds it:
    in a root sblock and named ``name`` (no hand-written mark: the micro schedule keys on the
    kernels' ``tirx.is_scheduled``). The placeholder has no parameters, hence the Expected
    modules are parsed without the well-formedness check."""
    if not isinstance(func.body, s_tir.SBlockRealize):
        root = s_tir.SBlock([], [], [], "root", func.body)
        func = func.with_body(s_tir.SBlockRealize([], True, root))
    expected[name] = func.with_attr("global_symbol", name)
    return expected


def test_kxk_conv_is_one_direct_sparse_conv():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 2, 5, 5), "float32"),
            w: R.Tensor((4, 2, 3, 3), "float32"),
            b: R.Tensor((4,), "float32"),
        ) -> R.Tensor((1, 4, 3, 3), "float32"):
            with R.dataflow():
                lv = R.nn.conv2d(x, w, strides=[2, 2], padding=[1, 1, 1, 1])
                bb = R.reshape(b, R.shape([1, 4, 1, 1]))
                lv1 = R.add(lv, bb)
                gv = R.nn.relu(lv1)
                R.output(gv)
            return gv

    w, bias = sparse_array((4, 2, 3, 3)), np.linspace(-1, 1, 4, dtype=np.float32)
    cw = compact_weight(w.reshape(4, 18), BLOCK)
    data, indices, indptr = cw.data, cw.indices, cw.indptr

    @I.ir_module(check_well_formed=False)  # placeholder kernel until _fill
    class Expected:
        @T.prim_func
        def sparse_2x1_w():
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((1, 2, 5, 5), "float32"),
            w: R.Tensor((4, 2, 3, 3), "float32"),
            b: R.Tensor((4,), "float32"),
        ) -> R.Tensor((1, 4, 3, 3), "float32"):
            cls = Expected
            with R.dataflow():
                # no im2col: the kernel reads NCHW and writes NCHW
                gv = R.call_tir(
                    cls.sparse_2x1_w,
                    (x, R.const(data), R.const(indices), R.const(indptr), R.const(bias)),
                    out_ty=R.Tensor((1, 4, 3, 3), "float32"),
                )
                R.output(gv)
            return gv

    after = DenseToSparse(_plans(Before, {"w": w, "b": bias}), MicroLowering())(Before)
    kernel = kernels.sparse_conv2d(
        cw, (1, 2, 5, 5), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), (3, 3), bias=True, relu=True
    )
    tvm.ir.assert_structural_equal(after, _fill(Expected, "sparse_2x1_w", kernel))


def test_matmul_is_one_compact_spmm_over_rows():
    @I.ir_module
    class Before:
        @R.function
        def main(x: R.Tensor((2, 3, 8), "float32"), w: R.Tensor((8, 4), "float32")) -> R.Tensor(
            (2, 3, 4), "float32"
        ):
            with R.dataflow():
                gv = R.matmul(x, w)
                R.output(gv)
            return gv

    w = sparse_array((8, 4))
    cw = compact_weight(w.T.copy(), BLOCK)
    data, indices, indptr = cw.data, cw.indices, cw.indptr

    @I.ir_module(check_well_formed=False)  # placeholder kernel until _fill
    class Expected:
        @T.prim_func
        def sparse_2x1_w():
            T.evaluate(0)

        @R.function
        def main(x: R.Tensor((2, 3, 8), "float32"), w: R.Tensor((8, 4), "float32")) -> R.Tensor(
            (2, 3, 4), "float32"
        ):
            cls = Expected
            with R.dataflow():
                rows = R.reshape(x, R.shape([6, 8]))
                lv = R.call_tir(
                    cls.sparse_2x1_w,
                    (rows, R.const(data), R.const(indices), R.const(indptr)),
                    out_ty=R.Tensor((6, 4), "float32"),
                )
                gv = R.reshape(lv, R.shape([2, 3, 4]))
                R.output(gv)
            return gv

    after = DenseToSparse(_plans(Before, {"w": w}), MicroLowering())(Before)
    kernel = kernels.spmm_rows(cw, 6, bias=False, relu=False)
    tvm.ir.assert_structural_equal(after, _fill(Expected, "sparse_2x1_w", kernel))


def test_pointwise_conv_is_one_compact_spmm_over_channels():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 8, 3, 3), "float32"), w: R.Tensor((4, 8, 1, 1), "float32")
        ) -> R.Tensor((1, 4, 3, 3), "float32"):
            with R.dataflow():
                lv = R.nn.conv2d(x, w)
                gv = R.nn.relu(lv)
                R.output(gv)
            return gv

    w = sparse_array((4, 8, 1, 1))
    cw = compact_weight(w.reshape(4, 8), BLOCK)
    data, indices, indptr = cw.data, cw.indices, cw.indptr

    @I.ir_module(check_well_formed=False)  # placeholder kernel until _fill
    class Expected:
        @T.prim_func
        def sparse_2x1_w():
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((1, 8, 3, 3), "float32"), w: R.Tensor((4, 8, 1, 1), "float32")
        ) -> R.Tensor((1, 4, 3, 3), "float32"):
            cls = Expected
            with R.dataflow():
                cols = R.reshape(x, R.shape([1, 8, 9]))
                lv = R.call_tir(
                    cls.sparse_2x1_w,
                    (cols, R.const(data), R.const(indices), R.const(indptr)),
                    out_ty=R.Tensor((1, 4, 9), "float32"),
                )
                gv = R.reshape(lv, R.shape([1, 4, 3, 3]))
                R.output(gv)
            return gv

    after = DenseToSparse(_plans(Before, {"w": w}), MicroLowering())(Before)
    kernel = kernels.spmm_channels(cw, 1, 9, bias=False, relu=True)
    tvm.ir.assert_structural_equal(after, _fill(Expected, "sparse_2x1_w", kernel))


def test_relu6_keeps_its_clamp_after_the_micro_kernel():
    # the micro kernels end at the ReLU: the minimum(6) of a fused ReLU6 follows the call
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 8, 3, 3), "float32"), w: R.Tensor((4, 8, 1, 1), "float32")
        ) -> R.Tensor((1, 4, 3, 3), "float32"):
            with R.dataflow():
                lv = R.nn.conv2d(x, w)
                lv1 = R.maximum(lv, R.const(0.0, "float32"))
                gv = R.minimum(lv1, R.const(6.0, "float32"))
                R.output(gv)
            return gv

    w = sparse_array((4, 8, 1, 1))
    (plan,) = _plans(Before, {"w": w})
    assert plan.layer.fused == ["relu6"]
    after = DenseToSparse([plan], MicroLowering())(Before)
    x = np.random.default_rng(0).standard_normal((1, 8, 3, 3)).astype(np.float32) * 8
    ref = np.clip(np.einsum("nk,bkp->bnp", w.reshape(4, 8), x.reshape(1, 8, 9)), 0, 6)
    assert (ref == 6).any() and (ref == 0).any()
    vm = relax.VirtualMachine(tvm.compile(after, "llvm"), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(w)).numpy()
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5)
