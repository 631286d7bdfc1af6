"""A channels-last QDQ CNN keeps no transposes around its quantize chains
(transform/qdq_permutes.py), and computes what onnxruntime does."""

from __future__ import annotations

import numpy as np
from tvm import relax

import sparse_tvm as st
from sparse_tvm.analysis.layers import static_shape
from sparse_tvm.examples import small_cnn
from sparse_tvm.frontend import import_onnx
from sparse_tvm.runtime.onnxruntime_reference import reference_session
from sparse_tvm.transform.channels_last import to_channels_last
from tests.quantized.models import output_step


def _quantized_cnn(batch: int = 2):
    model = st.prune(small_cnn(batch=batch, size=16), 0.9, "4x1").model
    calib = {"image": np.random.default_rng(0).random((8, 3, 16, 16)).astype(np.float32)}
    return st.quantize(model, calib, per_channel=True)


def _activation_permutes(mod) -> list[tuple[int, ...]]:
    """Output shapes of the transposes of images (more than one pixel): not of biases."""
    shapes = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.permute_dims":
            shape = static_shape(expr)
            if shape is not None and len(shape) == 4 and shape[1] * shape[2] > 1:
                shapes.append(shape)

    relax.analysis.post_order_visit(mod["main"], visit)
    return shapes


def test_quantize_chains_run_channels_last_without_transposes():
    q = _quantized_cnn()
    nhwc = to_channels_last(import_onnx(q)).mod
    # the model's edges only: the image in, the last conv's output to the NCHW global pool
    # (without the pass, two transposes around each of the 5 convs' chains)
    assert _activation_permutes(nhwc) == [(2, 16, 16, 3), (2, 64, 8, 8)]
    text = nhwc["main"].script()
    assert 'layout="NHWC"' in text and "axis=3" in text  # the pool, the per-tensor QDQ ops


def test_a_per_channel_activation_quantize_keeps_its_transposes():
    """Only per-tensor scales are layout-free: a per-channel one stays channels-first."""
    from onnx import numpy_helper

    q = _quantized_cnn()
    for init in q.graph.initializer:
        if init.name == "relu_out_scale":  # the scale after the first conv, per channel now
            value = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.full(16, value, np.float32), init.name))
    for node in q.graph.node:
        if "relu_out_scale" in node.input:
            node.attribute.append(__import__("onnx").helper.make_attribute("axis", 1))
    nhwc = to_channels_last(import_onnx(q)).mod
    assert len(_activation_permutes(nhwc)) > 1


def test_channels_last_quantized_cnn_matches_onnxruntime():
    q = _quantized_cnn()
    compiled = st.compile(q, "x86", measure=False)
    x = np.random.default_rng(3).random((2, 3, 16, 16)).astype(np.float32)
    want = reference_session(q).run(None, {"image": x})[0]
    got = np.asarray(compiled.run({"image": x})[0])
    assert np.abs(got - want).max() <= 2 * output_step(q)
