"""The micro lowering's rewrites of a QDQ model's activation ops: the input quantize as one
kernel, and dequantize -> max pool -> quantize as a max pool of the 8-bit values."""

import numpy as np
import onnx
import onnxruntime as ort
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import sparse_tvm as st
from sparse_tvm.frontend import import_onnx
from sparse_tvm.micro.quantized_activations import QuantizedActivations
from tests.micro.conftest import needs_qemu


def _qdq_pool(out_scale: float = 0.05) -> onnx.ModelProto:
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


def _pool_input_dtype(mod) -> str:
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.nn.max_pool2d":
            found.append(str(expr.args[0].ty.dtype))

    relax.analysis.post_order_visit(mod["main"], visit)
    return found[0]


def _bound(model):
    """The imported module with its constants bound, as the micro lowering has it."""
    imported = import_onnx(model)
    params = {k: tvm.runtime.tensor(v) for k, v in imported.params.items()}
    return relax.transform.BindParams("main", params)(imported.mod)


def test_max_pool_between_a_qdq_pair_runs_on_the_8bit_values():
    mod = _bound(_qdq_pool())
    assert _pool_input_dtype(mod) == "float32"
    assert _pool_input_dtype(QuantizedActivations()(mod)) == "uint8"
    # another scale after the pool: the float pool stays
    other = _bound(_qdq_pool(0.07))
    assert _pool_input_dtype(QuantizedActivations()(other)) == "float32"


@needs_qemu
def test_quantize_and_8bit_pool_on_qemu_equal_onnxruntime(tmp_path):
    model = _qdq_pool()
    # values on and between rounding steps, negative and saturating ones
    x = (np.arange(72, dtype=np.float32).reshape(1, 2, 6, 6) - 36) * 0.025 * 2.5
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    project = st.compile(model, "cortex-m4", output=tmp_path / "p", compare_dense=False)
    source = (tmp_path / "p" / "model_kernels.c").read_text()
    assert "nearbyintf" not in source  # the quantize kernel rounds with VCVTR
    run = project.run_qemu({"x": x})
    assert run.returncode == 0, run.stdout
    np.testing.assert_array_equal(run.outputs[0], ref)
