"""A quantized model's layer as one call of the int8 VNNI kernel (``kernels/spmm_int8``).

The layer's int8 operands (``Layer.int8``, :mod:`sparse_tvm.analysis.quantized`) replace its
float ones: the kernel reads the 8-bit activations the model's ``quantize`` wrote (the
``dequantize`` in front of the matmul goes dead) and the weight's int8 values in 16x4 blocks.

- Its output is float32 ``x_scale * w_scale[n] * (sum_k xq * wq - x_zero * sum_k wq) + bias``
  [ReLU], what the QDQ layer computes, followed in Relax by a ReLU6's clamp or a GELU the
  layer fused (the kernel's epilogue has neither).
- Where the layer ends in the per-tensor 8-bit ``quantize`` that alone reads its output (a QDQ
  model's layers do: the next layer reads the quantized values), the kernel writes those
  values itself (scale and bias divided by the output scale, rounded half to even, plus the
  zero point, saturated): a quarter of the stores, and the quantize goes dead. The plan's
  layer then ends at that quantize (``int8_layer``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tvm import relax

from sparse_tvm.analysis.layers import Layer
from sparse_tvm.kernels.spmm_int8 import Int8Blocks, Int8Spec, int8_blocks, int8_spmm_kernel
from sparse_tvm.transform.lowering import SparsePlan, add_kernel, sanitize, tensor_type

__all__ = ["int8_arguments", "int8_layer", "lower_int8", "requantizes"]


def requantizes(layer: Layer) -> bool:
    """Whether the layer's kernel writes its output quantize's 8-bit values (module doc)."""
    ops = layer.int8
    return ops is not None and ops.out is not None and layer.end_var.same_as(ops.out)


def int8_layer(layer: Layer) -> tuple[Layer, Int8Blocks]:
    """The layer as the int8 kernel runs it, and its weight in 16x4 blocks: ending at its
    output quantize where it has one and no ReLU6 / GELU comes between (module doc)."""
    ops = layer.int8
    if ops is None:
        raise ValueError(f"layer {layer.name} has no int8 operands")
    blocks = int8_blocks(ops.weight)
    if ops.out is not None and not (layer.relu6 or layer.gelu):
        layer = dataclasses.replace(layer, end_var=ops.out)
    return layer, blocks


def int8_arguments(layer: Layer, blocks: Int8Blocks) -> list[np.ndarray]:
    """The kernel's arrays after ``X``: blocks, zero-point correction, scale, bias."""
    ops = layer.int8
    n = layer.shape[0]
    scale = (np.float32(ops.x_scale) * ops.weight_scale).astype(np.float32)
    bias = np.zeros(n, np.float32) if layer.bias is None else layer.bias.astype(np.float32)
    if requantizes(layer):  # in steps of the output
        scale = (scale / np.float32(ops.out_scale)).astype(np.float32)
        bias = (bias / np.float32(ops.out_scale)).astype(np.float32)
    x_zero = ops.x_zero + 128 if ops.x_signed else ops.x_zero  # int8 X is read as X + 128
    correction = (x_zero * blocks.row_sums.astype(np.int64)).astype(np.int32)
    return [blocks.data, blocks.indices, blocks.indptr, correction, scale, bias]


def lower_int8(builder: relax.BlockBuilder, plan: SparsePlan, xq: relax.Expr) -> relax.Expr:
    """The kernel call of ``plan`` (an :class:`Int8Blocks` weight) reading the 8-bit ``xq``."""
    layer, blocks = plan.layer, plan.weight
    n, k = layer.shape
    requant = requantizes(layer)
    ops = layer.int8
    spec = Int8Spec(
        n, k, layer.m, blocks.blocks, relu=layer.relu,
        out_zero=ops.out_zero if requant else None,
        x_signed=ops.x_signed, out_signed=requant and ops.out_signed,
    )  # fmt: skip
    kernel = add_kernel(builder, int8_spmm_kernel(spec), f"int8_16x4_{sanitize(layer.name)}")
    x2 = xq if len(layer.input_shape) == 2 else builder.emit(relax.op.reshape(xq, (layer.m, k)))
    constants = [relax.const(a) for a in int8_arguments(layer, blocks)]
    out_dtype = ("int8" if ops.out_signed else "uint8") if requant else "float32"
    y = builder.emit(relax.call_tir(kernel, [x2, *constants], tensor_type((layer.m, n), out_dtype)))
    if len(layer.output_shape) != 2:
        y = builder.emit(relax.op.reshape(y, layer.output_shape))
    if layer.relu6:
        y = builder.emit(relax.op.minimum(y, relax.const(6.0, "float32")))
    if layer.gelu:
        y = builder.emit(relax.op.nn.gelu(y))
    return y
