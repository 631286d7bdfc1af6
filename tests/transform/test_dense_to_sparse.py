"""DenseToSparse with the SpMM lowering, in the style of TVM's pass tests: a ``Before`` module in
TVMScript, the pass applied, and an ``Expected`` module in TVMScript, structurally equal.

The weights are tiny (4 output features) so that the Expected modules can carry the compressed
weight as ``R.const`` of the arrays the test computes. The kernel PrimFuncs are built with the
same factories the lowering uses and put in place of the Expected module's placeholders.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import tvm
from tvm import relax, s_tir
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from sparse_tvm.analysis.layers import FuncIndex, find_layers, gelu_after, op_name
from sparse_tvm.examples import mlp
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.kernels import im2col_kernel, spmm_kernel
from sparse_tvm.kernels.attrs import HAND_WRITTEN_ATTR
from sparse_tvm.kernels.direct_conv import DirectConv, crop_kernel, pad_flat_kernel
from sparse_tvm.target import resolve_target
from sparse_tvm.transform import DenseToSparse, SparsePlan, SpmmLowering
from tests.conftest import sparse_array

TARGET = resolve_target("x86").tvm_target
BLOCK = (2, 1)


def _bias(n: int) -> np.ndarray:
    return np.linspace(-1, 1, n, dtype=np.float32)


def _plans(mod: tvm.IRModule, values: dict[str, np.ndarray], planned: set[str]):
    """The plans of the layers of ``mod["main"]`` whose weight is in ``planned`` (2x1 BSR)."""
    func = mod["main"]
    weights = {p: values[p.name] for p in func.params if p.name in values}
    return [
        SparsePlan(layer, BlockSparseWeight.from_dense(layer.weight, BLOCK))
        for layer in find_layers(func, weights)
        if layer.name in planned
    ]


def _added(func: tvm.tirx.PrimFunc, name: str) -> tvm.tirx.PrimFunc:
    """A kernel as the pass adds it: in a root sblock, marked hand-written, named ``name``."""
    if not isinstance(func.body, s_tir.SBlockRealize):
        root = s_tir.SBlock([], [], [], "root", func.body)
        func = func.with_body(s_tir.SBlockRealize([], True, root))
    return func.with_attr(HAND_WRITTEN_ATTR, True).with_attr("global_symbol", name)


def _fill(expected: tvm.IRModule, **kernels: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """``expected`` with its placeholder PrimFuncs replaced by the real kernels.

    The placeholders take no parameters (the kernels' signatures are long), so the Expected
    modules are parsed without the well-formedness check, which checks call_tir's arity.
    """
    for name, func in kernels.items():
        expected[name] = _added(func, name)
    return expected


def _spmm(w: BlockSparseWeight, m: int, **options) -> tvm.tirx.PrimFunc:
    return spmm_kernel(w, m, target=TARGET, **options)


def test_matmul_with_bias_and_relu_becomes_one_spmm_call():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((3, 8), "float32"),
            w: R.Tensor((8, 4), "float32"),
            b: R.Tensor((4,), "float32"),
        ) -> R.Tensor((3, 4), "float32"):
            with R.dataflow():
                lv = R.matmul(x, w)
                lv1 = R.add(lv, b)
                gv = R.nn.relu(lv1)
                R.output(gv)
            return gv

    w, bias = sparse_array((8, 4)), _bias(4)
    sw = BlockSparseWeight.from_dense(w.T.copy(), BLOCK)
    data, indices, indptr = sw.data, sw.indices, sw.indptr

    @I.ir_module(check_well_formed=False)  # placeholder kernels until _fill
    class Expected:
        @T.prim_func
        def sparse_2x1_w():
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((3, 8), "float32"),
            w: R.Tensor((8, 4), "float32"),
            b: R.Tensor((4,), "float32"),
        ) -> R.Tensor((3, 4), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.call_tir(
                    cls.sparse_2x1_w,
                    (x, R.const(data), R.const(indices), R.const(indptr), R.const(bias)),
                    out_ty=R.Tensor((3, 4), "float32"),
                )
                gv: R.Tensor((3, 4), "float32") = lv
                R.output(gv)
            return gv

    after = DenseToSparse(_plans(Before, {"w": w, "b": bias}, {"w"}), SpmmLowering(TARGET))(Before)
    kernel = _spmm(sw, 3, x_layout="MK", batch=1, bias=True, relu=True)
    tvm.ir.assert_structural_equal(after, _fill(Expected, sparse_2x1_w=kernel))


def test_3d_activations_are_viewed_as_rows_of_the_transposed_weight():
    # a Gemm/Linear export: the weight is stored (n, k) and transposed in the graph
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((2, 3, 8), "float32"),
            w: R.Tensor((4, 8), "float32"),
            b: R.Tensor((4,), "float32"),
        ) -> R.Tensor((2, 3, 4), "float32"):
            with R.dataflow():
                wt = R.permute_dims(w)
                lv = R.matmul(x, wt)
                lv1 = R.add(lv, b)
                gv = R.nn.relu(lv1)
                R.output(gv)
            return gv

    w, bias = sparse_array((4, 8)), _bias(4)
    sw = BlockSparseWeight.from_dense(w, BLOCK)
    data, indices, indptr = sw.data, sw.indices, sw.indptr

    @I.ir_module(check_well_formed=False)  # placeholder kernels until _fill
    class Expected:
        @T.prim_func
        def sparse_2x1_w():
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((2, 3, 8), "float32"),
            w: R.Tensor((4, 8), "float32"),
            b: R.Tensor((4,), "float32"),
        ) -> R.Tensor((2, 3, 4), "float32"):
            cls = Expected
            with R.dataflow():
                rows = R.reshape(x, R.shape([6, 8]))
                lv = R.call_tir(
                    cls.sparse_2x1_w,
                    (rows, R.const(data), R.const(indices), R.const(indptr), R.const(bias)),
                    out_ty=R.Tensor((6, 4), "float32"),
                )
                gv = R.reshape(lv, R.shape([2, 3, 4]))
                R.output(gv)
            return gv

    after = DenseToSparse(_plans(Before, {"w": w, "b": bias}, {"w"}), SpmmLowering(TARGET))(Before)
    kernel = _spmm(sw, 6, x_layout="MK", batch=1, bias=True, relu=True)
    tvm.ir.assert_structural_equal(after, _fill(Expected, sparse_2x1_w=kernel))


def test_pointwise_conv_is_one_spmm_on_nchw_without_a_copy():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 8, 3, 3), "float32"),
            w: R.Tensor((4, 8, 1, 1), "float32"),
            b: R.Tensor((4,), "float32"),
        ) -> R.Tensor((1, 4, 3, 3), "float32"):
            with R.dataflow():
                lv = R.nn.conv2d(x, w)
                bb = R.reshape(b, R.shape([1, 4, 1, 1]))
                lv1 = R.add(lv, bb)
                gv = R.nn.relu(lv1)
                R.output(gv)
            return gv

    w, bias = sparse_array((4, 8, 1, 1)), _bias(4)
    sw = BlockSparseWeight.from_dense(w.reshape(4, 8), BLOCK)
    data, indices, indptr = sw.data, sw.indices, sw.indptr

    @I.ir_module(check_well_formed=False)  # placeholder kernels until _fill
    class Expected:
        @T.prim_func
        def sparse_2x1_w():
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((1, 8, 3, 3), "float32"),
            w: R.Tensor((4, 8, 1, 1), "float32"),
            b: R.Tensor((4,), "float32"),
        ) -> R.Tensor((1, 4, 3, 3), "float32"):
            cls = Expected
            with R.dataflow():
                cols = R.reshape(x, R.shape([1, 8, 9]))  # NCHW is (batch, k, m): a view
                lv = R.call_tir(
                    cls.sparse_2x1_w,
                    (cols, R.const(data), R.const(indices), R.const(indptr), R.const(bias)),
                    out_ty=R.Tensor((1, 4, 9), "float32"),
                )
                gv = R.reshape(lv, R.shape([1, 4, 3, 3]))
                R.output(gv)
            return gv

    after = DenseToSparse(_plans(Before, {"w": w, "b": bias}, {"w"}), SpmmLowering(TARGET))(Before)
    kernel = _spmm(sw, 9, x_layout="KM", batch=1, bias=True, relu=True)
    tvm.ir.assert_structural_equal(after, _fill(Expected, sparse_2x1_w=kernel))


def test_strided_3x3_conv_goes_through_im2col():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((4, 2, 3, 3), "float32")
        ) -> R.Tensor((1, 4, 2, 2), "float32"):
            with R.dataflow():
                gv = R.nn.conv2d(x, w, strides=[2, 2], padding=[1, 1, 1, 1])
                R.output(gv)
            return gv

    w = sparse_array((4, 2, 3, 3))
    sw = BlockSparseWeight.from_dense(w.reshape(4, 18), BLOCK)
    data, indices, indptr = sw.data, sw.indices, sw.indptr

    @I.ir_module(check_well_formed=False)  # placeholder kernels until _fill
    class Expected:
        @T.prim_func
        def im2col_w():
            T.evaluate(0)

        @T.prim_func
        def sparse_2x1_w():
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((4, 2, 3, 3), "float32")
        ) -> R.Tensor((1, 4, 2, 2), "float32"):
            cls = Expected
            with R.dataflow():
                cols = R.call_tir(cls.im2col_w, (x,), out_ty=R.Tensor((1, 18, 4), "float32"))
                lv = R.call_tir(
                    cls.sparse_2x1_w,
                    (cols, R.const(data), R.const(indices), R.const(indptr)),
                    out_ty=R.Tensor((1, 4, 4), "float32"),
                )
                gv = R.reshape(lv, R.shape([1, 4, 2, 2]))
                R.output(gv)
            return gv

    after = DenseToSparse(_plans(Before, {"w": w}, {"w"}), SpmmLowering(TARGET))(Before)
    im2col = im2col_kernel(1, 2, 4, 4, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    kernel = _spmm(sw, 4, x_layout="KM", batch=1, bias=False, relu=False)
    tvm.ir.assert_structural_equal(after, _fill(Expected, im2col_w=im2col, sparse_2x1_w=kernel))


def test_stride_1_3x3_conv_reads_its_padded_input_directly():
    @I.ir_module
    class Before:
        @R.function
        def main(
            x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((4, 2, 3, 3), "float32")
        ) -> R.Tensor((1, 4, 4, 4), "float32"):
            with R.dataflow():
                gv = R.nn.conv2d(x, w, padding=[1, 1, 1, 1])
                R.output(gv)
            return gv

    w = sparse_array((4, 2, 3, 3))
    sw = BlockSparseWeight.from_dense(w.reshape(4, 18), BLOCK)
    direct = DirectConv(2, 4, 4, (3, 3), (1, 1, 1, 1))  # 6 x 6 padded, 4 rows of 6 columns out
    data, offsets, indptr = sw.data, direct.offsets(sw.indices), sw.indptr

    @I.ir_module(check_well_formed=False)  # placeholder kernels until _fill
    class Expected:
        @T.prim_func
        def pad_w():
            T.evaluate(0)

        @T.prim_func
        def sparse_2x1_w():
            T.evaluate(0)

        @T.prim_func
        def crop_w():
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((1, 2, 4, 4), "float32"), w: R.Tensor((4, 2, 3, 3), "float32")
        ) -> R.Tensor((1, 4, 4, 4), "float32"):
            cls = Expected
            with R.dataflow():
                flat = R.call_tir(cls.pad_w, (x,), out_ty=R.Tensor((75,), "float32"))
                lv = R.call_tir(
                    cls.sparse_2x1_w,
                    (flat, R.const(data), R.const(offsets), R.const(indptr)),
                    out_ty=R.Tensor((1, 4, 24), "float32"),
                )
                gv = R.call_tir(cls.crop_w, (lv,), out_ty=R.Tensor((1, 4, 4, 4), "float32"))
                R.output(gv)
            return gv

    after = DenseToSparse(_plans(Before, {"w": w}, {"w"}), SpmmLowering(TARGET))(Before)
    kernel = _spmm(sw, 24, x_layout="DIRECT", x_size=75)
    expected = _fill(
        Expected, pad_w=pad_flat_kernel(direct), sparse_2x1_w=kernel, crop_w=crop_kernel(4, direct)
    )
    tvm.ir.assert_structural_equal(after, expected)


@I.ir_module
class TwoLayers:
    @R.function
    def main(
        x: R.Tensor((3, 8), "float32"),
        w1: R.Tensor((8, 8), "float32"),
        w2: R.Tensor((8, 4), "float32"),
    ) -> R.Tensor((3, 4), "float32"):
        with R.dataflow():
            lv = R.matmul(x, w1)
            lv1 = R.nn.relu(lv)
            gv = R.matmul(lv1, w2)
            R.output(gv)
        return gv


def test_unplanned_layers_stay_dense():
    w1, w2 = sparse_array((8, 8), 1), sparse_array((8, 4), 2)
    sw = BlockSparseWeight.from_dense(w2.T.copy(), BLOCK)
    data, indices, indptr = sw.data, sw.indices, sw.indptr

    @I.ir_module(check_well_formed=False)  # placeholder kernels until _fill
    class Expected:
        @T.prim_func
        def sparse_2x1_w2():
            T.evaluate(0)

        @R.function
        def main(
            x: R.Tensor((3, 8), "float32"),
            w1: R.Tensor((8, 8), "float32"),
            w2: R.Tensor((8, 4), "float32"),
        ) -> R.Tensor((3, 4), "float32"):
            cls = Expected
            with R.dataflow():
                lv = R.matmul(x, w1)
                lv1 = R.nn.relu(lv)
                lv2 = R.call_tir(
                    cls.sparse_2x1_w2,
                    (lv1, R.const(data), R.const(indices), R.const(indptr)),
                    out_ty=R.Tensor((3, 4), "float32"),
                )
                gv: R.Tensor((3, 4), "float32") = lv2
                R.output(gv)
            return gv

    plans = _plans(TwoLayers, {"w1": w1, "w2": w2}, {"w2"})
    after = DenseToSparse(plans, SpmmLowering(TARGET))(TwoLayers)
    kernel = _spmm(sw, 3, x_layout="MK", batch=1, bias=False, relu=False)
    tvm.ir.assert_structural_equal(after, _fill(Expected, sparse_2x1_w2=kernel))


def test_no_plans_leave_the_module_unchanged():
    after = DenseToSparse([], SpmmLowering(TARGET))(TwoLayers)
    tvm.ir.assert_structural_equal(after, TwoLayers)


def test_a_given_kernel_replaces_the_default_one():
    w1, w2 = sparse_array((8, 8), 1), sparse_array((8, 4), 2)
    (plan,) = _plans(TwoLayers, {"w1": w1, "w2": w2}, {"w2"})
    # a kernel of the same signature (as from tuning records), other than the default one
    tuned = spmm_kernel(plan.weight, 3, relu=True, target=TARGET)
    plan.kernel = tuned
    after = DenseToSparse([plan], SpmmLowering(TARGET))(TwoLayers)
    tvm.ir.assert_structural_equal(after["sparse_2x1_w2"], _added(tuned, "sparse_2x1_w2"))


def _conv3x3(x_shape: tuple[int, ...], n: int) -> tvm.IRModule:
    """``main(x, w)``: one 3x3 conv (padding 1, stride 1) of ``x`` to ``n`` channels."""
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    wv = relax.Var("w", relax.TensorType((n, x_shape[1], 3, 3), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, wv]):
        with bb.dataflow():
            out = bb.emit_output(relax.op.nn.conv2d(x, wv, padding=(1, 1)))
        bb.emit_func_output(out)
    return bb.get()


def test_plan_knobs_choose_the_default_kernels_variant():
    # a direct conv (stride 1, r x 1 blocks) keeps its layout with knobs, unlike a given kernel
    w = sparse_array((32, 8, 3, 3))
    mod = _conv3x3((1, 8, 12, 12), 32)
    (plan,) = _plans(mod, {"w": w}, {"w"})
    plan.knobs = {"order": 1}
    after = DenseToSparse([plan], SpmmLowering(TARGET))(mod)
    direct = DirectConv(8, 12, 12, (3, 3), (1, 1, 1, 1))
    options = {"x_layout": "DIRECT", "x_size": direct.x_size}
    variant = _spmm(plan.weight, direct.m, knobs={"order": 1}, **options)
    tvm.ir.assert_structural_equal(after["sparse_2x1_w"], _added(variant, "sparse_2x1_w"))
    default = _added(_spmm(plan.weight, direct.m, **options), "sparse_2x1_w")
    with pytest.raises(ValueError):  # the variant is another kernel than the default
        tvm.ir.assert_structural_equal(after["sparse_2x1_w"], default)
    xv = np.random.default_rng(4).standard_normal((1, 8, 12, 12)).astype(np.float32)
    vm = relax.VirtualMachine(tvm.compile(after, target=TARGET), tvm.cpu())
    y = vm["main"](tvm.runtime.tensor(xv), tvm.runtime.tensor(w)).numpy()
    dense = relax.VirtualMachine(tvm.compile(mod, target=TARGET), tvm.cpu())
    want = dense["main"](tvm.runtime.tensor(xv), tvm.runtime.tensor(w)).numpy()
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_the_lowering_calls_the_factories_it_is_given():
    calls = []

    def spmm(weight, m, **options):
        calls.append(("spmm", m, options["x_layout"], options["target"]))
        return spmm_kernel(weight, m, **options)

    def im2col(*args):
        calls.append(("im2col", *args[:4]))
        return im2col_kernel(*args)

    w = sparse_array((4, 2, 3, 3))
    mod = _conv3x3((1, 2, 4, 4), 4)
    DenseToSparse(_plans(mod, {"w": w}, {"w"}), SpmmLowering(TARGET, spmm, im2col))(mod)
    assert calls == [("im2col", 1, 2, 4, 4), ("spmm", 16, "KM", TARGET)]


# -- a real model: the weights the kernel call reads --------------------------------------------


def test_kernel_arguments_are_the_compressed_weight():
    imported = import_onnx(mlp())
    w = imported.params["fc1.weight"]
    w[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0  # 90% sparse
    func = imported.mod["main"]
    weights = {p: imported.params[p.name] for p in func.params if p.name in imported.params}
    plans = [
        SparsePlan(layer, BlockSparseWeight.from_dense(layer.weight, (4, 1)))
        for layer in find_layers(func, weights)
        if layer.name == "fc1.weight"
    ]
    mod = DenseToSparse(plans, SpmmLowering(TARGET))(imported.mod)
    (call,) = [
        b.value
        for blk in mod["main"].body.blocks
        for b in blk.bindings
        if isinstance(b.value, relax.Call) and b.value.op.name == "relax.call_tir"
    ]
    x, data, indices, indptr, bias = call.args[1].fields
    expected = BlockSparseWeight.from_dense(imported.params["fc1.weight"].T.copy(), (4, 1))
    np.testing.assert_array_equal(data.value.numpy(), expected.data)
    np.testing.assert_array_equal(indices.value.numpy(), expected.indices)
    np.testing.assert_array_equal(indptr.value.numpy(), expected.indptr)
    np.testing.assert_array_equal(bias.value.numpy(), imported.params["fc1.bias"])
    assert "fc1.weight" not in {v.name for v in relax.analysis.free_vars(mod["main"].body)}


@pytest.mark.parametrize("planned", [{"w1"}, {"w1", "w2"}])
def test_rewritten_module_computes_the_dense_result(planned):
    w1, w2 = sparse_array((8, 8), 1), sparse_array((8, 4), 2)
    x = np.random.default_rng(3).standard_normal((3, 8)).astype(np.float32)
    plans = _plans(TwoLayers, {"w1": w1, "w2": w2}, planned)
    mod = DenseToSparse(plans, SpmmLowering(TARGET))(TwoLayers)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    args = [tvm.runtime.tensor(a) for a in (x, w1, w2)]
    y = vm["main"](*args).numpy()
    np.testing.assert_allclose(y, np.maximum(x @ w1, 0) @ w2, rtol=1e-5, atol=1e-5)


# -- ReLU6 (Clip(0, 6) as maximum / minimum) fused into the kernel ------------------------------


def _matmul_then(activations: list[tuple[str, float]]) -> tvm.IRModule:
    """``matmul(x, w)`` followed by ``maximum`` / ``minimum`` with scalar constants."""
    x = relax.Var("x", relax.TensorType((3, 8), "float32"))
    wv = relax.Var("w", relax.TensorType((8, 4), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x, wv]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, wv))
            for op, bound in activations:
                y = bb.emit(getattr(relax.op, op)(y, relax.const(bound, "float32")))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize(
    ("activations", "fused", "kernel_options"),
    [
        ([("maximum", 0.0), ("minimum", 6.0)], ["relu6"], {"relu": True, "relu6": True}),
        ([("maximum", 0.0)], ["relu"], {"relu": True}),
        ([("maximum", 0.0), ("minimum", 5.0)], ["relu"], {"relu": True}),  # a minimum stays
        ([("maximum", 1.0)], [], {}),
    ],
)
def test_relu6_is_fused_into_the_spmm(activations, fused, kernel_options):
    mod = _matmul_then(activations)
    w = sparse_array((8, 4))
    (plan,) = _plans(mod, {"w": w}, {"w"})
    assert plan.layer.fused == fused
    after = DenseToSparse([plan], SpmmLowering(TARGET))(mod)
    kernel = _spmm(plan.weight, 3, **kernel_options)
    tvm.ir.assert_structural_equal(after["sparse_2x1_w"], _added(kernel, "sparse_2x1_w"))
    # the ops the kernel took in are gone; the rest stay, and the values hold
    ops = [
        b.value.op.name
        for blk in after["main"].body.blocks
        for b in blk.bindings
        if isinstance(b.value, relax.Call)
    ]
    kept = activations[sum(2 if f == "relu6" else 1 for f in fused) :]
    assert ops == ["relax.call_tir"] + [f"relax.{op}" for op, _ in kept]
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32) * 4
    ref = x @ w
    for op, bound in activations:
        ref = getattr(np, op)(ref, bound)
    if fused == ["relu6"]:
        assert (ref == 6).any()
    got = relax.VirtualMachine(tvm.compile(after, TARGET), tvm.cpu())["main"](
        tvm.runtime.tensor(x), tvm.runtime.tensor(w)
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)


# -- GELU (erf form) fused into the kernel -------------------------------------------------------


def _matmul_bias_gelu(spelling: str) -> tvm.IRModule:
    """``matmul(x, w) + b`` then a GELU spelled as ``spelling`` says."""
    x = relax.Var("x", relax.TensorType((3, 8), "float32"))
    wv = relax.Var("w", relax.TensorType((8, 4), "float32"))
    bv = relax.Var("b", relax.TensorType((4,), "float32"))

    def c(value):
        return relax.const(value, "float32")

    bb = relax.BlockBuilder()
    with bb.function("main", [x, wv, bv]):
        with bb.dataflow():
            v = bb.emit(relax.op.add(bb.emit(relax.op.matmul(x, wv)), bv))
            if spelling == "op":
                y = bb.emit(relax.op.nn.gelu(v))
            else:
                if spelling == "times_rsqrt2":
                    scaled = bb.emit(relax.op.multiply(c(0.5**0.5), v))
                else:
                    scaled = bb.emit(relax.op.divide(v, c(2**0.5)))
                plus = bb.emit(relax.op.add(bb.emit(relax.op.erf(scaled)), c(1.0)))
                if spelling in ("onnx", "times_rsqrt2"):  # v * (0.5 * (erf + 1)), torch's export
                    y = bb.emit(relax.op.multiply(v, bb.emit(relax.op.multiply(c(0.5), plus))))
                elif spelling == "half_last":  # (v * (erf + 1)) * 0.5
                    y = bb.emit(relax.op.multiply(bb.emit(relax.op.multiply(plus, v)), c(0.5)))
                else:  # "half_first": (v * 0.5) * (erf + 1), v read three times: not matched
                    y = bb.emit(relax.op.multiply(bb.emit(relax.op.multiply(v, c(0.5))), plus))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


@pytest.mark.parametrize(
    ("spelling", "fused"),
    [
        ("op", True),
        ("onnx", True),
        ("times_rsqrt2", True),
        ("half_last", True),
        ("half_first", False),
    ],
)
def test_a_gelu_after_the_bias_is_fused_into_the_spmm(spelling, fused):
    mod = _matmul_bias_gelu(spelling)
    w, b = sparse_array((8, 4)), _bias(4)
    func = mod["main"]
    weights = {func.params[1]: w, func.params[2]: b}
    assert [layer.fused for layer in find_layers(func, weights)] == [["bias"]]  # off by default
    (layer,) = find_layers(func, weights, gelu=True)
    assert layer.fused == (["bias", "gelu"] if fused else ["bias"])
    plan = SparsePlan(layer, BlockSparseWeight.from_dense(layer.weight, BLOCK))
    after = DenseToSparse([plan], SpmmLowering(TARGET))(mod)
    ops = [
        b.value.op.name
        for blk in after["main"].body.blocks
        for b in blk.bindings
        if isinstance(b.value, relax.Call)
    ]
    assert (ops == ["relax.call_tir"]) == fused
    kernel = _spmm(plan.weight, 3, bias=True, gelu=fused)
    tvm.ir.assert_structural_equal(after["sparse_2x1_w"], _added(kernel, "sparse_2x1_w"))
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32) * 2
    v = x @ w + b
    ref = v * 0.5 * (1 + scipy.special.erf(v / np.sqrt(2)))
    got = relax.VirtualMachine(tvm.compile(after, TARGET), tvm.cpu())["main"](
        tvm.runtime.tensor(x), tvm.runtime.tensor(w), tvm.runtime.tensor(b)
    )
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_a_gelu_whose_input_is_read_elsewhere_stays():
    mod = _matmul_bias_gelu("onnx")
    func = mod["main"]
    index = FuncIndex(func)
    v = next(var for var, value in index.value.items() if op_name(value) == "relax.add")
    assert gelu_after(index, v) is not None
    index.users[v] += 1  # a third reader of the pre-activation
    assert gelu_after(index, v) is None
