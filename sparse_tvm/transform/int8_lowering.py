"""A quantized model's layer as one call of the int8 VNNI kernel (``kernels/spmm_int8``).

The layer's int8 operands (``Layer.int8``, :mod:`sparse_tvm.analysis.quantized`) replace its
float ones: the kernel reads the 8-bit activations the model's ``quantize`` wrote (the
``dequantize`` in front of the matmul goes dead) and the weight's int8 values in 16x4 blocks.

- Its output is float32 ``x_scale * w_scale[n] * (sum_k xq * wq - x_zero * sum_k wq) + bias``
  [ReLU], what the QDQ layer computes (a dynamically quantized model's ``x_scale`` and
  ``x_zero`` are computed at run time: the scale and correction vectors are then two small
  Relax ops in front of the kernel), followed in Relax by a ReLU6's clamp or a GELU the
  layer fused (the kernel's epilogue has neither).
- Where the layer ends in the per-tensor 8-bit ``quantize`` that alone reads its output (a QDQ
  model's layers do: the next layer reads the quantized values), the kernel writes those
  values itself (scale and bias divided by the output scale, rounded half to even, plus the
  zero point, saturated): a quarter of the stores, and the quantize goes dead. The plan's
  layer then ends at that quantize (``int8_layer``).
- Where the float ops after that quantize are a QDQ tail (``QdqTail``: dequantize, bias,
  activation, the next quantize: how onnxruntime's quantizer leaves an ONNX MatMul + Add),
  the kernel computes those in its epilogue too, rounding where the graph rounds, and the
  plan's layer ends at the tail's end.
- A conv (groups 1, static quantization) reads the rows of the im2col of its 8-bit input
  (:mod:`sparse_tvm.kernels.im2col_rows`, padded with the activations' zero point; a
  channels-last 1x1 conv's input is those rows already): one row per output pixel of every
  image, the kernel's ``m``. Its ``(pixels, n)`` output is the NHWC output; a channels-first
  conv's is transposed back to NCHW (8-bit where it requantizes).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tvm import relax

from sparse_tvm.analysis.layers import Layer
from sparse_tvm.kernels.im2col_rows import im2col_rows_kernel
from sparse_tvm.kernels.spmm_int8 import (
    ISAS,
    Int8Blocks,
    Int8Spec,
    Int8Tail,
    int8_blocks,
    int8_spmm_kernel,
    weight_layout,
    x_offset,
)
from sparse_tvm.transform.lowering import SparsePlan, add_kernel, sanitize, tensor_type

__all__ = [
    "activation_after_kernel",
    "int8_spec",
    "fuses_tail",
    "int8_arguments",
    "int8_end",
    "int8_layer",
    "int8_rows",
    "lower_int8",
    "requantizes",
]


def requantizes(layer: Layer) -> bool:
    """Whether the layer's kernel rounds to its output quantize's 8-bit values (module doc),
    writing them or computing its QDQ tail from them."""
    ops = layer.int8
    if ops is None or ops.out is None:
        return False
    return layer.end_var.same_as(ops.out) or fuses_tail(layer)


def fuses_tail(layer: Layer) -> bool:
    """Whether the layer's kernel computes its QDQ tail (it ends at the tail's end)."""
    ops = layer.int8
    return ops.tail is not None and layer.end_var.same_as(ops.tail.end)


def int8_rows(layer: Layer) -> int:
    """The int8 kernel's ``m``: a matmul's rows, or a conv's output pixels of every image."""
    return layer.m * layer.batch if layer.op == "conv2d" else layer.m


def int8_layer(layer: Layer) -> tuple[Layer, Int8Blocks]:
    """The layer as the int8 kernel runs it, and its weight in 16x4 blocks: ending at its
    output quantize where it has one and no ReLU6 / GELU comes between (module doc)."""
    if layer.int8 is None:
        raise ValueError(f"layer {layer.name} has no int8 operands")
    return int8_end(layer), int8_blocks(layer.int8.weight)


def int8_end(layer: Layer) -> Layer:
    """The layer ending at its output quantize (and its QDQ tail) where it has one and no
    ReLU6 / GELU comes between: where an int8 kernel's epilogue ends."""
    ops = layer.int8
    if ops.out is not None and not (layer.relu6 or layer.gelu):
        end = ops.out if ops.tail is None else ops.tail.end
        fused = ["quantize"] + ([] if ops.tail is None else ops.tail.fused)
        layer = dataclasses.replace(layer, end_var=end, fused=[*layer.fused, *fused])
    return layer


def int8_arguments(layer: Layer, blocks: Int8Blocks, isa: str = "vnni") -> list[np.ndarray]:
    """The kernel's arrays after ``X`` for the ``isa`` kernel: blocks, zero-point correction,
    scale, bias, tail bias."""
    ops = layer.int8
    n = layer.shape[0]
    x_scale = 1.0 if ops.dynamic else ops.x_scale  # dynamic: times the scale at run time
    scale = (np.float32(x_scale) * ops.weight_scale).astype(np.float32)
    bias = np.zeros(n, np.float32) if layer.bias is None else layer.bias.astype(np.float32)
    if requantizes(layer):  # in steps of the output
        scale = (scale / np.float32(ops.out_scale)).astype(np.float32)
        bias = (bias / np.float32(ops.out_scale)).astype(np.float32)
    x_zero = (0 if ops.dynamic else ops.x_zero) + x_offset(isa, ops.x_signed)  # X as read
    correction = (x_zero * blocks.row_sums.astype(np.int64)).astype(np.int32)
    tail = ops.tail if fuses_tail(layer) else None
    tail_bias = np.zeros(n, np.float32)
    if tail is not None and tail.bias is not None:
        tail_bias = tail.bias.astype(np.float32)
    data = weight_layout(isa, blocks.data)  # AVX2: 16-bit pairs, NEON: smull's byte order
    return [data, blocks.indices, blocks.indptr, correction, scale, bias, tail_bias]


def int8_spec(
    layer: Layer, blocks: Int8Blocks, isa: str, knobs: dict[str, int] | None = None
) -> Int8Spec:
    """The int8 kernel's spec for ``layer`` (an :func:`int8_layer`) on ``isa``, with the tuned
    ``knobs`` (``m_tile``, ``order``) where given."""
    n, k = layer.shape
    requant = requantizes(layer)
    ops = layer.int8
    tail = None
    if fuses_tail(layer):
        t = ops.tail
        tail = Int8Tail(ops.out_scale, t.relu, t.relu6, t.gelu, t.requant)
    knobs = knobs or {}
    return Int8Spec(
        n, k, int8_rows(layer), blocks.blocks, relu=layer.relu,
        out_zero=ops.out_zero if requant else None,
        x_signed=ops.x_signed, out_signed=requant and ops.out_signed, tail=tail, isa=isa,
        full_range=blocks.full_range, m_tile=knobs.get("m_tile"), order=knobs.get("order", 0),
    )  # fmt: skip


def lower_int8(
    builder: relax.BlockBuilder, plan: SparsePlan, xq: relax.Expr, isa: str | None
) -> relax.Expr:
    """The ``isa`` kernel call of ``plan`` (an :class:`Int8Blocks` weight, its tuned knobs in
    ``plan.knobs``) reading the 8-bit ``xq``; ``isa`` None (a target without int8 dot
    products) is an error."""
    if isa is None:
        raise ValueError(f"layer {plan.layer.name}: an int8 plan for a target without VNNI / sdot")
    layer, blocks = plan.layer, plan.weight
    n, k = layer.shape
    ops = layer.int8
    spec = int8_spec(layer, blocks, isa, plan.knobs)
    kernel = add_kernel(builder, int8_spmm_kernel(spec), f"int8_16x4_{sanitize(layer.name)}")
    x2 = _rows(builder, layer, xq)
    if ISAS[isa].x_wide:  # AVX2: X widened once, a 16-bit pair per word for the kernel
        x2 = builder.emit(relax.op.astype(x2, "int16"))
    constants = [relax.const(a) for a in int8_arguments(layer, blocks, isa)]
    if ops.dynamic:  # scale and zero point computed at run time: scale and correct by them
        constants[4] = builder.emit(relax.op.multiply(constants[4], ops.x_scale))
        zero = relax.op.astype(ops.x_zero, "int32")
        row_sums = relax.const(blocks.row_sums.astype(np.int32))
        constants[3] = builder.emit(relax.op.add(constants[3], relax.op.multiply(zero, row_sums)))
    y = builder.emit(
        relax.call_tir(kernel, [x2, *constants], tensor_type((spec.m, n), spec.out_dtype))
    )
    if layer.op == "conv2d" and layer.conv.layout == "NCHW":  # (b * pixels, n) -> (b, n, oh, ow)
        batch, pixels = layer.batch, layer.m
        y = builder.emit(relax.op.reshape(y, (batch, pixels, n)))
        y = builder.emit(relax.op.permute_dims(y, [0, 2, 1]))
    if len(layer.output_shape) != 2:
        y = builder.emit(relax.op.reshape(y, layer.output_shape))
    return activation_after_kernel(builder, layer, y)


def _rows(builder: relax.BlockBuilder, layer: Layer, xq: relax.Expr) -> relax.Expr:
    """The 8-bit activations as the kernel's ``(m, k)`` rows: a matmul's as they are, a
    conv's im2col rows (module doc)."""
    k = layer.shape[1]
    if layer.op != "conv2d":
        return (
            xq if len(layer.input_shape) == 2 else builder.emit(relax.op.reshape(xq, (layer.m, k)))
        )
    ops = layer.int8
    dtype = "int8" if ops.x_signed else "uint8"
    g = layer.conv
    if g.layout == "NHWC" and g.is_pointwise:  # already the (pixels, c) rows
        return builder.emit(relax.op.reshape(xq, (int8_rows(layer), k)))
    im2col = im2col_rows_kernel(g, dtype, int(ops.x_zero))
    kernel = add_kernel(builder, im2col, f"im2col_rows_{sanitize(layer.name)}")
    return builder.emit(relax.call_tir(kernel, [xq], tensor_type((int8_rows(layer), k), dtype)))


def activation_after_kernel(builder: relax.BlockBuilder, layer: Layer, y: relax.Expr) -> relax.Expr:
    """``y`` (an int8 kernel's float32 output) with the ReLU6's clamp or the GELU the layer
    fused before any quantize: the int8 kernels' epilogues end at the ReLU."""
    if layer.relu6:
        y = builder.emit(relax.op.minimum(y, relax.const(6.0, "float32")))
    if layer.gelu:
        y = builder.emit(relax.op.nn.gelu(y))
    return y
