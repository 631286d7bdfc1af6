"""ONNX models written with ``onnx.helper``: an MLP, CNNs (ResNet-50 and MobileNets among them)
and a BERT-like encoder block.

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

    def weight(self, base: str, shape: tuple[int, ...], fan_in: int, gain: float = 1.0) -> str:
        """A random weight of variance ``gain / fan_in`` (``gain=2``: He init, for ReLU nets)."""
        w = self.rng.standard_normal(shape).astype(np.float32) / math.sqrt(fan_in / gain)
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


# torchvision-style CNNs: every conv is followed by an eval-mode BatchNormalization (as
# torch.onnx.export writes an unfolded model), or has a bias with ``batchnorm=False``. Nodes
# and initializers are named after torchvision's module paths (``layer1.0.conv1.weight``).


def _batchnorm(g: _Graph, x: str, channels: int, name: str) -> str:
    """An inference-form BatchNormalization with sane random statistics (var in [0.5, 1.5])."""

    def normal(mean: float, std: float) -> np.ndarray:
        return (mean + std * g.rng.standard_normal(channels)).astype(np.float32)

    scale = g.const(f"{name}.weight", normal(1.0, 0.1))
    bias = g.const(f"{name}.bias", normal(0.0, 0.1))
    mean = g.const(f"{name}.running_mean", normal(0.0, 0.1))
    var = g.const(f"{name}.running_var", g.rng.uniform(0.5, 1.5, channels).astype(np.float32))
    return g.op("BatchNormalization", [x, scale, bias, mean, var], name, epsilon=1e-5, momentum=0.9)


def _conv_bn(
    g: _Graph,
    x: str,
    channels: tuple[int, int],
    kernel: int,
    stride: int,
    names: tuple[str, str],
    batchnorm: bool,
    group: int = 1,
    gain: float = 2.0,
) -> str:
    """A square Conv (He init, 'same' padding) named ``names[0]``, then BatchNormalization
    ``names[1]``; without ``batchnorm`` the Conv has a bias instead."""
    (cin, cout), (conv, bn) = channels, names
    fan_in = cin // group * kernel * kernel
    inputs = [x, g.weight(f"{conv}.weight", (cout, cin // group, kernel, kernel), fan_in, gain)]
    if not batchnorm:
        bias = (0.1 * g.rng.standard_normal(cout)).astype(np.float32)
        inputs.append(g.const(f"{conv}.bias", bias))
    y = g.op(
        "Conv",
        inputs,
        conv,
        kernel_shape=[kernel, kernel],
        strides=[stride, stride],
        pads=[kernel // 2] * 4,
        group=group,
    )
    return _batchnorm(g, y, cout, bn) if batchnorm else y


def _classifier(g: _Graph, x: str, channels: int, classes: int, name: str) -> str:
    """GlobalAveragePool, Flatten and a Gemm (an ``nn.Linear`` named ``name``)."""
    h = g.op("GlobalAveragePool", [x], "avgpool")
    h = g.op("Flatten", [h], "flatten", axis=1)
    w = g.weight(f"{name}.weight", (classes, channels), channels)
    b = g.const(f"{name}.bias", (0.01 * g.rng.standard_normal(classes)).astype(np.float32))
    return g.op("Gemm", [h, w, b], name, transB=1)


def _image(batch: int, size: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])


# ResNet-50's stages: (bottleneck blocks, width, stride of the first block); expansion 4.
RESNET50_STAGES = [(3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)]
_RESNET_EXPANSION = 4
# The last conv of each residual branch gets He's gain over the number of blocks (as in Fixup):
# the activations' variance then grows by at most about e over the 16 blocks, instead of 2**16
# (the logits' std stays near 5 where plain He init gives thousands).
_RESIDUAL_GAIN = 2.0 / sum(blocks for blocks, _, _ in RESNET50_STAGES)


def _bottleneck(g: _Graph, x: str, cin: int, width: int, stride: int, name: str, bn: bool) -> str:
    """torchvision's v1.5 Bottleneck: 1x1, 3x3 (strided), 1x1 x4, projection shortcut."""
    cout = width * _RESNET_EXPANSION
    h = _conv_bn(g, x, (cin, width), 1, 1, (f"{name}.conv1", f"{name}.bn1"), bn)
    h = g.op("Relu", [h], f"{name}.relu")
    h = _conv_bn(g, h, (width, width), 3, stride, (f"{name}.conv2", f"{name}.bn2"), bn)
    h = g.op("Relu", [h], f"{name}.relu")
    h = _conv_bn(
        g, h, (width, cout), 1, 1, (f"{name}.conv3", f"{name}.bn3"), bn, gain=_RESIDUAL_GAIN
    )
    shortcut = x
    if stride != 1 or cin != cout:
        names = (f"{name}.downsample.0", f"{name}.downsample.1")
        shortcut = _conv_bn(g, x, (cin, cout), 1, stride, names, bn)
    return g.op("Relu", [g.op("Add", [h, shortcut], f"{name}.add")], f"{name}.relu")


def resnet50(
    batch: int = 1, size: int = 224, classes: int = 1000, seed: int = 0, batchnorm: bool = True
) -> onnx.ModelProto:
    """torchvision's ResNet-50 (v1.5: the stride on the 3x3 conv), with random weights.

    Parameters
    ----------
    batch, size
        The input ``image`` is (batch, 3, size, size), NCHW float32.
    classes
        Outputs of the final Gemm (``fc``); the output ``logits`` is (batch, classes).
    seed
        Seed of the random weights (He init) and BatchNormalization statistics.
    batchnorm
        Each Conv (no bias) followed by an eval-mode BatchNormalization, as an unfolded
        ``torch.onnx.export`` writes it; False gives Convs with a bias and no BatchNormalization.

    Returns
    -------
    onnx.ModelProto
        53 Convs, named after torchvision's modules (``layer1.0.conv1``, weights
        ``layer1.0.conv1.weight``, shortcuts ``layer2.0.downsample.0``).
    """
    g = _Graph(seed)
    h = g.op("Relu", [_conv_bn(g, "image", (3, 64), 7, 2, ("conv1", "bn1"), batchnorm)], "relu")
    h = g.op("MaxPool", [h], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    channels = 64
    for stage, (blocks, width, stride) in enumerate(RESNET50_STAGES, start=1):
        for i in range(blocks):
            name = f"layer{stage}.{i}"
            h = _bottleneck(g, h, channels, width, stride if i == 0 else 1, name, batchnorm)
            channels = width * _RESNET_EXPANSION
    h = _classifier(g, h, channels, classes, "fc")
    return g.model([_image(batch, size)], [_output(g, h, "logits", [batch, classes])], "resnet50")


# MobileNet-v2's inverted residual settings: (expansion t, channels c, blocks n, stride s).
MOBILENET_V2_SETTINGS = [
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]  # fmt: skip


class _MobileNetV2:
    """Builds MobileNet-v2's layers into a graph: ReLU6 is ``Clip(x, 0, 6)`` (opset 11 form)."""

    def __init__(self, g: _Graph, batchnorm: bool) -> None:
        self.g, self.batchnorm = g, batchnorm
        self.low = g.const("relu6.min", np.array(0.0, np.float32))
        self.high = g.const("relu6.max", np.array(6.0, np.float32))

    def conv(
        self,
        x: str,
        channels: tuple[int, int],
        kernel: int,
        stride: int,
        name: str,
        group: int = 1,
        relu6: bool = True,
    ) -> str:
        """Conv2dNormActivation ``name`` (``name.0`` conv, ``name.1`` BN, ``name.2`` ReLU6);
        without ``relu6``, the block's linear projection (``name`` conv, the next index BN)."""
        if relu6:
            names = (f"{name}.0", f"{name}.1")
        else:
            prefix, _, index = name.rpartition(".")
            names = (name, f"{prefix}.{int(index) + 1}")
        h = _conv_bn(self.g, x, channels, kernel, stride, names, self.batchnorm, group)
        return self.g.op("Clip", [h, self.low, self.high], f"{name}.2") if relu6 else h

    def inverted_residual(self, x: str, cin: int, cout: int, stride: int, t: int, name: str) -> str:
        """An InvertedResidual: 1x1 expansion (unless t == 1), 3x3 depthwise, 1x1 projection;
        a residual Add where the stride is 1 and the channels stay."""
        hidden, h, index = cin * t, x, 0
        if t != 1:
            h = self.conv(h, (cin, hidden), 1, 1, f"{name}.conv.0")
            index = 1
        h = self.conv(h, (hidden, hidden), 3, stride, f"{name}.conv.{index}", group=hidden)
        h = self.conv(h, (hidden, cout), 1, 1, f"{name}.conv.{index + 1}", relu6=False)
        if stride == 1 and cin == cout:
            h = self.g.op("Add", [x, h], f"{name}.add")
        return h


def mobilenet_v2(
    batch: int = 1, size: int = 224, classes: int = 1000, seed: int = 0, batchnorm: bool = True
) -> onnx.ModelProto:
    """torchvision's MobileNetV2 (width 1.0, without the classifier's dropout), random weights.

    Parameters
    ----------
    batch, size
        The input ``image`` is (batch, 3, size, size), NCHW float32.
    classes
        Outputs of the final Gemm (``classifier.1``); the output ``logits`` is (batch, classes).
    seed
        Seed of the random weights (He init) and BatchNormalization statistics.
    batchnorm
        Each Conv (no bias) followed by an eval-mode BatchNormalization, as an unfolded
        ``torch.onnx.export`` writes it; False gives Convs with a bias and no BatchNormalization.

    Returns
    -------
    onnx.ModelProto
        52 Convs (17 depthwise), named after torchvision's modules (``features.0.0``,
        ``features.2.conv.1.0`` for block 2's depthwise conv, ``features.18.0`` the last 1x1).
    """
    g = _Graph(seed)
    net = _MobileNetV2(g, batchnorm)
    h = net.conv("image", (3, 32), 3, 2, "features.0")
    channels, index = 32, 1
    for t, c, n, s in MOBILENET_V2_SETTINGS:
        for i in range(n):
            h = net.inverted_residual(h, channels, c, s if i == 0 else 1, t, f"features.{index}")
            channels, index = c, index + 1
    h = net.conv(h, (channels, 1280), 1, 1, f"features.{index}")
    h = _classifier(g, h, 1280, classes, "classifier.1")
    outputs = [_output(g, h, "logits", [batch, classes])]
    return g.model([_image(batch, size)], outputs, "mobilenet_v2")


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
