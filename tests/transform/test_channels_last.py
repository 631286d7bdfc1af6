"""to_channels_last: CNNs converted once to NHWC / HWIO, transposes left only at the edges, the
layers found in that layout (the compiled CNNs against onnxruntime: tests/driver/test_compile_cnns.py)."""

from __future__ import annotations

import numpy as np
from tvm import relax

from sparse_tvm.analysis import analyse
from sparse_tvm.examples import mlp, mobilenet, small_cnn
from sparse_tvm.frontend import import_onnx
from sparse_tvm.transform.channels_last import to_channels_last


def _calls(func: relax.Function, name: str) -> list[relax.Call]:
    found = []

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == name:
            found.append(expr)

    relax.analysis.post_order_visit(func, visit)
    return found


def _activation_transposes(func: relax.Function, weights: set[str]) -> int:
    """``permute_dims`` calls whose input is not computed from the weights alone."""
    from_weights: set[relax.Var] = {p for p in func.params if p.name in weights}
    count = 0
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            args = value.args if isinstance(value, relax.Call) else []
            tensors = [a for a in args if isinstance(a, relax.Var)]
            if tensors and all(a in from_weights for a in tensors):
                from_weights.add(binding.var)
            elif getattr(value.op, "name", "") == "relax.permute_dims":
                count += 1
    return count


def test_mobilenet_runs_in_nhwc_with_transposes_only_at_the_edges():
    imported = import_onnx(mobilenet(size=64))
    converted = to_channels_last(imported)
    func = converted.mod["main"]
    convs = _calls(func, "relax.nn.conv2d")
    assert len(convs) == 27
    assert {(str(c.attrs.data_layout), str(c.attrs.kernel_layout)) for c in convs} == {
        ("NHWC", "HWIO")
    }
    # the image in, and the pooled features before the classifier's flatten
    assert _activation_transposes(func, set(converted.params)) == 2
    # the conv weights are HWIO arrays now, under their ONNX names
    for name, value in imported.params.items():
        if value.ndim == 4:
            np.testing.assert_array_equal(converted.params[name], value.transpose(2, 3, 1, 0))
        else:
            assert converted.params[name] is value
    shapes = {p.name: tuple(int(d) for d in p.ty.shape) for p in func.params}
    assert all(shapes[name] == value.shape for name, value in converted.params.items())


def test_a_model_without_convs_is_left_as_imported():
    imported = import_onnx(mlp())
    assert to_channels_last(imported) is imported


def test_nhwc_layers_see_the_same_weights_and_fuse_bias_and_relu():
    imported = import_onnx(small_cnn())
    nchw = {layer.name: layer for layer in analyse(imported)}
    nhwc = analyse(to_channels_last(imported))
    assert [layer.name for layer in nhwc] == list(nchw)
    for layer in nhwc:
        before = nchw[layer.name]
        assert layer.conv is None or layer.conv.layout == "NHWC"
        assert layer.fused == before.fused and layer.dense_reason == before.dense_reason
        if layer.op == "conv2d":
            # (n, k) with k in (kh, kw, c) order: the same numbers as the OIHW view's (c, kh, kw)
            n, c, kh, kw = before.weight_shape
            reordered = before.weight.reshape(n, c, kh, kw).transpose(0, 2, 3, 1).reshape(n, -1)
            np.testing.assert_array_equal(layer.weight, reordered)
            assert layer.conv.input_shape == before.conv.input_shape
            assert layer.m == before.m * before.batch and layer.batch == 1
        np.testing.assert_array_equal(layer.stored_weight(), _param(imported, layer))
        if before.bias is not None:
            np.testing.assert_array_equal(layer.bias, before.bias)


def _param(imported, layer):
    value = imported.params[layer.name]
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
