"""DenseToSparse rewrites exactly the planned layers, fusing their bias and ReLU."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.driver.compile_model import analyse
from sparse_tvm.examples import mlp, small_cnn
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.target import resolve_target
from sparse_tvm.transform import DenseToSparse, SparsePlan


def _ops(func: relax.Function) -> list[str]:
    names = []
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                if value.op.name == "relax.call_tir":
                    names.append(f"call_tir:{value.args[0].name_hint}")
                else:
                    names.append(value.op.name)
    return names


def _rewrite(model, chosen: set[str], block=(4, 1)):
    imported = import_onnx(model)
    plans = [
        SparsePlan(layer, BlockSparseWeight.from_dense(layer.weight, block))
        for layer in analyse(imported)
        if layer.name in chosen
    ]
    target = resolve_target("x86").tvm_target
    return imported, DenseToSparse(plans, target)(imported.mod)


def test_only_planned_layers_are_rewritten_with_epilogue_fused():
    imported, mod = _rewrite(prune_magnitude(mlp(), 0.9, "4x1"), {"fc2.weight"})
    ops = _ops(mod["main"])
    # fc1: matmul + add + relu stay; fc2 (Gemm transB, bias, relu) becomes one kernel call;
    # fc3 stays a matmul
    assert ops.count("relax.matmul") == 2
    assert ops.count("relax.nn.relu") == 1 and ops.count("relax.add") == 1
    assert ops.count("relax.permute_dims") == 0  # the transposed weight is no longer read
    assert [o for o in ops if o.startswith("call_tir")] == ["call_tir:sparse_4x1_fc2_weight"]
    # the weight is stored compressed, as constants, and its parameter is unused now
    assert "fc2.weight" not in {v.name for v in relax.analysis.free_vars(mod["main"].body)}


def test_kernel_arguments_are_the_compressed_weight():
    model = prune_magnitude(mlp(), 0.9, "4x1")
    imported, mod = _rewrite(model, {"fc1.weight"})
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


def test_convs_become_im2col_and_spmm():
    _, mod = _rewrite(prune_magnitude(small_cnn(), 0.9, "4x1"), {"conv1.weight", "conv2.weight"})
    ops = _ops(mod["main"])
    assert "call_tir:im2col_conv1_weight" in ops  # 3x3: im2col first
    assert "call_tir:sparse_4x1_conv1_weight" in ops
    assert "call_tir:sparse_4x1_conv2_weight" in ops  # 1x1: no im2col
    assert not any(o == "call_tir:im2col_conv2_weight" for o in ops)
    assert ops.count("relax.nn.conv2d") == 3  # depthwise, conv3, conv4 untouched
