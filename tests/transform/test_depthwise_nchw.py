"""DepthwiseNCHW: NCHW depthwise convs (with their bias and ReLU / ReLU6) become one call of the
depthwise kernel each; other convs are left alone; the compiled model matches onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.ir.expr import GenericConst

from sparse_tvm.frontend import import_onnx
from sparse_tvm.pipeline.cpu import cpu_pipeline
from sparse_tvm.transform.depthwise_nchw import DepthwiseNCHW
from tests.conftest import RUN_TARGET, ort_run
from tests.transform.relax_calls import called_ops

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)


def _model(seed: int = 0) -> onnx.ModelProto:
    """x (1,4,13,17) -> depthwise 3x3 s1 + bias + Clip(0,6) -> depthwise 3x3 s2 + bias + Relu
    -> grouped (2 groups, not depthwise) 3x3 conv -> depthwise 5x5 s2, no bias, no activation."""
    rng = np.random.default_rng(seed)

    def weight(name, shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inits = [
        weight("w1", (4, 1, 3, 3)), weight("b1", (4,)),
        weight("w2", (4, 1, 3, 3)), weight("b2", (4,)),
        weight("w3", (4, 2, 3, 3)),
        weight("w4", (4, 1, 5, 5)),
        numpy_helper.from_array(np.array(0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6, np.float32), "hi"),
    ]  # fmt: skip
    conv = helper.make_node
    nodes = [
        conv("Conv", ["x", "w1", "b1"], ["c1"], group=4, pads=[1, 1, 1, 1]),
        conv("Clip", ["c1", "lo", "hi"], ["a1"]),
        conv("Conv", ["a1", "w2", "b2"], ["c2"], group=4, pads=[1, 1, 1, 1], strides=[2, 2]),
        conv("Relu", ["c2"], ["a2"]),
        conv("Conv", ["a2", "w3"], ["c3"], group=2, pads=[1, 1, 1, 1]),
        conv("Conv", ["c3", "w4"], ["y"], group=4, pads=[2, 1, 2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "depthwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 13, 17])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _bound(model: onnx.ModelProto) -> tvm.IRModule:
    imported = import_onnx(model)
    params = {name: tvm.runtime.tensor(value) for name, value in imported.params.items()}
    return relax.transform.BindParams("main", params)(imported.mod)


def _call_args(func: relax.Function) -> list[np.ndarray]:
    """The constant arguments of the kernel calls, in program order."""
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            found.extend(a.value.numpy() for a in expr.args[1] if isinstance(a, GenericConst))

    relax.analysis.post_order_visit(func, visit)
    return found


def test_depthwise_convs_with_their_epilogues_become_kernel_calls():
    mod = DepthwiseNCHW(TARGET)(_bound(_model()))
    ops = called_ops(mod["main"])
    assert [op for op in ops if op.startswith("depthwise_nchw")] == [
        "depthwise_nchw_4x13x17_s1", "depthwise_nchw_4x13x17_s2", "depthwise_nchw_4x7x9_s2"
    ]  # fmt: skip
    # the grouped conv is the one conv left; the bias adds and activations were fused
    assert ops.count("relax.nn.conv2d") == 1
    assert not {"relax.add", "relax.maximum", "relax.minimum", "relax.clip", "relax.nn.relu"} & {
        *ops
    }
    kernels = [f for f in mod.functions.values() if isinstance(f, tvm.tirx.PrimFunc)]
    assert len(kernels) == 3
    # the conv without a bias adds zeros
    biases = [c for c in _call_args(mod["main"]) if c.shape == (4,)]
    assert len(biases) == 3 and not biases[2].any() and all(b.any() for b in biases[:2])


def test_compiled_model_matches_onnxruntime():
    model = _model(seed=3)
    x = np.random.default_rng(1).standard_normal((1, 4, 13, 17)).astype(np.float32) * 2
    executable = tvm.compile(_bound(model), target=TARGET, relax_pipeline=cpu_pipeline(TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    (want,) = ort_run(model, {"x": x})
    assert got.shape == want.shape == (1, 4, 4, 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_module_without_depthwise_convs_is_left_as_it_is():
    model = _model()
    keep = [n for n in model.graph.node if n.output[0] in ("c3",)]
    keep[0].input[0] = "x"
    keep[0].output[0] = "y"
    del model.graph.node[:]
    model.graph.node.extend(keep)
    mod = _bound(model)
    assert DepthwiseNCHW(TARGET)(mod).same_as(mod)
