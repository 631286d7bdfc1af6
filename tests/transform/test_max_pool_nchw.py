"""MaxPoolNCHW: NCHW float32 max pools become one call of the max pool kernel each; pools the
kernel cannot run (ceil mode, a window of padding only) are left alone; the compiled model
matches onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper
from tvm import relax

from sparse_tvm.frontend import import_onnx
from sparse_tvm.pipeline.cpu import cpu_pipeline
from sparse_tvm.transform.max_pool_nchw import MaxPoolNCHW
from tests.conftest import RUN_TARGET, ort_run
from tests.transform.relax_calls import called_ops

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)


def _model(**pool) -> onnx.ModelProto:
    """x (1,3,15,21) -> MaxPool(**pool) -> Relu -> MaxPool 3x3 / 2, pad 1 (ResNet's stem pool)."""
    node = helper.make_node
    nodes = [
        node("MaxPool", ["x"], ["p1"], **pool),
        node("Relu", ["p1"], ["r1"]),
        node("MaxPool", ["r1"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(
        nodes,
        "pools",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 15, 21])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_pools_become_kernel_calls():
    model = _model(kernel_shape=[2, 3], strides=[1, 1], pads=[0, 1, 1, 0])
    ops = called_ops(MaxPoolNCHW(TARGET)(import_onnx(model).mod)["main"])
    assert [op for op in ops if op.startswith("max_pool_nchw")] == [
        "max_pool_nchw_3x15x21_k2x3_s1", "max_pool_nchw_3x15x20_k3x3_s2"
    ]  # fmt: skip
    assert "relax.nn.max_pool2d" not in ops and "relax.nn.relu" in ops


@pytest.mark.parametrize(
    "pool",
    [
        dict(kernel_shape=[2, 3], strides=[1, 1], pads=[0, 1, 1, 0]),
        dict(kernel_shape=[3, 3], strides=[3, 3]),
        dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),  # left to TVM's pool
        dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2]),  # left to TVM's pool
    ],
)
def test_compiled_model_matches_onnxruntime(pool):
    model = _model(**pool)
    x = np.random.default_rng(2).standard_normal((1, 3, 15, 21)).astype(np.float32) - 1.0
    executable = tvm.compile(
        import_onnx(model).mod, target=TARGET, relax_pipeline=cpu_pipeline(TARGET)
    )
    vm = relax.VirtualMachine(executable, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    (want,) = ort_run(model, {"x": x})
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_a_pool_the_kernel_cannot_run_is_left_alone():
    model = _model(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)
    ops = called_ops(MaxPoolNCHW(TARGET)(import_onnx(model).mod)["main"])
    assert ops.count("relax.nn.max_pool2d") == 1  # the ceil-mode pool; the stem pool is ours
    assert [op for op in ops if op.startswith("max_pool_nchw")] == ["max_pool_nchw_3x7x10_k3x3_s2"]


def test_a_module_without_pools_is_left_as_it_is():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    mod = import_onnx(model).mod
    assert MaxPoolNCHW(TARGET)(mod).same_as(mod)
