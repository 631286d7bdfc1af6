"""Small ONNX models written with ``onnx.helper``: an MLP, CNNs and a BERT-like encoder block.

Weights are random (seeded) so that the models are self-contained; the demo and the tests
prune them and compare sparse-tvm's outputs with onnxruntime's.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Graph:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count: dict[str, int] = {}

    def name(self, base: str) -> str:
        n = self._count.get(base, 0)
        self._count[base] = n + 1
        return f"{base}_{n}" if n else base

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, base: str, shape: tuple[int, ...], fan_in: int) -> str:
        w = self.rng.standard_normal(shape).astype(np.float32) / math.sqrt(fan_in)
        return self.const(base, w)

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        node_name = self.name(name or op_type.lower())
        out = f"{node_name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=node_name, **attrs))
        return out

    def model(self, inputs, outputs, graph_name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def _output(graph: _Graph, tensor: str, name: str, shape) -> onnx.ValueInfoProto:
    graph.nodes.append(helper.make_node("Identity", [tensor], [name], name=graph.name("output")))
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def mlp(
    batch: int = 8, features: int = 64, hidden: int = 256, classes: int = 10, seed: int = 0
) -> onnx.ModelProto:
    """MatMul+Add+Relu, Gemm(transB)+Relu, MatMul: input ``x`` of shape (batch, features)."""
    g = _Graph(seed)
    h = g.op("MatMul", ["x", g.weight("fc1.weight", (features, hidden), features)], "fc1")
    h = g.op("Add", [h, g.const("fc1.bias", np.zeros(hidden, np.float32) + 0.01)])
    h = g.op("Relu", [h])
    w2 = g.weight("fc2.weight", (hidden, hidden), hidden)  # (out, in): Gemm transB=1
    b2 = g.const("fc2.bias", g.rng.standard_normal(hidden).astype(np.float32) * 0.1)
    h = g.op("Gemm", [h, w2, b2], "fc2", transB=1)
    h = g.op("Relu", [h])
    h = g.op("MatMul", [h, g.weight("fc3.weight", (hidden, classes), hidden)], "fc3")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, features])
    return g.model([x], [_output(g, h, "logits", [batch, classes])], "mlp")


def small_cnn(batch: int = 1, size: int = 32, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """3x3 conv, 1x1 conv, a depthwise conv, pooling and a Gemm: input ``image`` (N, 3, H, W)."""
    g = _Graph(seed)

    def conv(x: str, cin: int, cout: int, k: int, name: str, group: int = 1) -> str:
        w = g.weight(f"{name}.weight", (cout, cin // group, k, k), cin // group * k * k)
        b = g.const(f"{name}.bias", g.rng.standard_normal(cout).astype(np.float32) * 0.1)
        pad = k // 2
        return g.op("Conv", [x, w, b], name, kernel_shape=[k, k], pads=[pad] * 4, group=group)

    h = g.op("Relu", [conv("image", 3, 16, 3, "conv1")])
    h = g.op("Relu", [conv(h, 16, 32, 1, "conv2")])
    h = g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("Relu", [conv(h, 32, 32, 3, "dwconv", group=32)])
    h = g.op("Relu", [conv(h, 32, 64, 3, "conv3")])
    h = g.op("Relu", [conv(h, 64, 64, 1, "conv4")])
    h = g.op("GlobalAveragePool", [h])
    h = g.op("Flatten", [h], axis=1)
    w = g.weight("fc.weight", (classes, 64), 64)
    b = g.const("fc.bias", np.zeros(classes, np.float32))
    h = g.op("Gemm", [h, w, b], "fc", transB=1)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])
    return g.model([x], [_output(g, h, "logits", [batch, classes])], "small_cnn")


# MobileNet-v1's depthwise-separable blocks: (output channels, stride of the depthwise conv).
MOBILENET_V1_BLOCKS = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]  # fmt: skip


def mobilenet(
    batch: int = 1,
    size: int = 224,
    width: float = 1.0,
    classes: int = 1000,
    blocks: int = 13,
    seed: int = 0,
) -> onnx.ModelProto:
    """MobileNet-v1: a 3x3 stride-2 stem, depthwise 3x3 + pointwise 1x1 blocks, pooling, Gemm.

    ``width`` scales every channel count (MobileNet's width multiplier); ``blocks`` keeps the
    first that many of the 13 depthwise-separable blocks (smaller variants for tests). Input
    ``image`` (N, 3, size, size). The 1x1 convs hold nearly all the weights: the layers worth
    making sparse.
    """
    g = _Graph(seed)

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str, group: int = 1) -> str:
        w = g.weight(f"{name}.weight", (cout, cin // group, k, k), cin // group * k * k)
        b = g.const(f"{name}.bias", g.rng.standard_normal(cout).astype(np.float32) * 0.1)
        y = g.op(
            "Conv",
            [x, w, b],
            name,
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[k // 2] * 4,
            group=group,
        )
        return g.op("Relu", [y])

    channels = max(8, int(32 * width))
    h = conv("image", 3, channels, 3, 2, "stem")
    for i, (cout, stride) in enumerate(MOBILENET_V1_BLOCKS[:blocks]):
        cout = max(8, int(cout * width))
        h = conv(h, channels, channels, 3, stride, f"block{i + 1}.dw", group=channels)
        h = conv(h, channels, cout, 1, 1, f"block{i + 1}.pw")
        channels = cout
    h = g.op("GlobalAveragePool", [h])
    h = g.op("Flatten", [h], axis=1)
    w = g.weight("fc.weight", (classes, channels), channels)
    b = g.const("fc.bias", np.zeros(classes, np.float32))
    h = g.op("Gemm", [h, w, b], "fc", transB=1)
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])
    return g.model([x], [_output(g, h, "logits", [batch, classes])], "mobilenet")


def bert_block(
    batch: int = 1,
    seq: int = 128,
    hidden: int = 768,
    heads: int = 12,
    ffn: int = 3072,
    seed: int = 0,
) -> onnx.ModelProto:
    """One BERT encoder layer: attention, residual, LayerNorm, GELU (Erf) FFN.

    Input ``x`` of shape (batch, seq, hidden); output ``y`` of the same shape.
    """
    assert hidden % heads == 0
    g = _Graph(seed)
    head_dim = hidden // heads

    def linear(x: str, cin: int, cout: int, name: str) -> str:
        h = g.op("MatMul", [x, g.weight(f"{name}.weight", (cin, cout), cin)], name)
        b = g.const(f"{name}.bias", g.rng.standard_normal(cout).astype(np.float32) * 0.02)
        return g.op("Add", [h, b], f"{name}_bias")

    def split_heads(x: str) -> str:
        shape = g.const("heads_shape", np.array([batch, seq, heads, head_dim], np.int64))
        x = g.op("Reshape", [x, shape])
        return g.op("Transpose", [x], perm=[0, 2, 1, 3])

    def layer_norm(x: str, name: str) -> str:
        scale = g.const(
            f"{name}.weight", 1.0 + 0.1 * g.rng.standard_normal(hidden).astype(np.float32)
        )
        bias = g.const(f"{name}.bias", 0.1 * g.rng.standard_normal(hidden).astype(np.float32))
        return g.op("LayerNormalization", [x, scale, bias], name, axis=-1, epsilon=1e-5)

    q = split_heads(linear("x", hidden, hidden, "attn.q"))
    k = split_heads(linear("x", hidden, hidden, "attn.k"))
    v = split_heads(linear("x", hidden, hidden, "attn.v"))
    kt = g.op("Transpose", [k], perm=[0, 1, 3, 2])
    scores = g.op("MatMul", [q, kt], "attn.scores")
    scores = g.op("Div", [scores, g.const("attn.scale", np.array(math.sqrt(head_dim), np.float32))])
    probs = g.op("Softmax", [scores], axis=-1)
    ctx = g.op("MatMul", [probs, v], "attn.context")
    ctx = g.op("Transpose", [ctx], perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, g.const("merge_shape", np.array([batch, seq, hidden], np.int64))])
    attn = linear(ctx, hidden, hidden, "attn.out")
    h = layer_norm(g.op("Add", [attn, "x"]), "ln1")

    f = linear(h, hidden, ffn, "ffn.up")
    # GELU written out with Erf, the way exporters emit it
    gate = g.op("Erf", [g.op("Div", [f, g.const("sqrt2", np.array(math.sqrt(2.0), np.float32))])])
    gate = g.op("Add", [gate, g.const("one", np.array(1.0, np.float32))])
    f = g.op("Mul", [g.op("Mul", [f, gate]), g.const("half", np.array(0.5, np.float32))])
    f = linear(f, ffn, hidden, "ffn.down")
    y = layer_norm(g.op("Add", [f, h]), "ln2")

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, seq, hidden])
    return g.model([x], [_output(g, y, "y", [batch, seq, hidden])], "bert_block")
