"""A QDQ model's activation ops on Cortex-M: the input quantize as one kernel (rounding with
VCVTR, no libm), the max pool between a QDQ pair on the 8-bit values
(``frontend/fold_requantize``), equal to onnxruntime on qemu."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import sparse_tvm as st
from sparse_tvm.runtime.onnxruntime_reference import reference_session
from tests.micro.conftest import needs_qemu


def qdq_pool(out_scale: float = 0.05) -> onnx.ModelProto:
    """x -> Q -> DQ -> MaxPool -> Q (``out_scale``) -> DQ -> y."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(out_scale, np.float32), "s2"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
        helper.make_node("MaxPool", ["d"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("QuantizeLinear", ["p", "s2", "z"], ["q2"]),
        helper.make_node("DequantizeLinear", ["q2", "s2", "z"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@needs_qemu
def test_quantize_and_8bit_pool_on_qemu_equal_onnxruntime(tmp_path):
    model = qdq_pool()
    # values on and between rounding steps, negative and saturating ones
    x = (np.arange(72, dtype=np.float32).reshape(1, 2, 6, 6) - 36) * 0.025 * 2.5
    ref = reference_session(model).run(None, {"x": x})[0]
    project = st.compile(model, "cortex-m4", output=tmp_path / "p", compare_dense=False)
    source = (tmp_path / "p" / "model_kernels.c").read_text()
    assert "nearbyintf" not in source  # the quantize kernel rounds with VCVTR
    assert "dequantize" not in (tmp_path / "p" / "model.c").read_text().split("max_pool")[0]
    run = project.run_qemu({"x": x})
    assert run.returncode == 0, run.stdout
    np.testing.assert_array_equal(run.outputs[0], ref)
