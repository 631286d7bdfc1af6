"""A quantized model's layer on a microcontroller: one call of the int8 ``SMLAD`` kernel.

The micro counterpart of :mod:`sparse_tvm.transform.int8_lowering`: a MatMul / Gemm layer with
int8 operands (``Layer.int8``: a QDQ model, scales known at compile time) reads the 8-bit
activations the model's ``quantize`` wrote and its int8 weight, packed dense or sparse
(:mod:`sparse_tvm.micro.int8_weight`), and where it ends in its output quantize (and the QDQ
tail onnxruntime's quantizer leaves after a MatMul + Add: dequantize, bias, ReLU / ReLU6,
quantize) writes those 8-bit values itself, so a quantized MLP runs ``quantize -> kernel ->
kernel -> ... -> dequantize`` with float32 only at its edges. A GELU tail is left to Relax
(the micro epilogue has no GELU), as are a ReLU6 or GELU fused before the quantize.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from tvm import relax

from sparse_tvm.analysis.layers import Layer
from sparse_tvm.micro.conv_patches import im2col_kernel, pad_kernel, padded_shape
from sparse_tvm.micro.int8_kernels import MicroInt8Spec, MicroTail, micro_int8_kernel, pack_blob
from sparse_tvm.micro.int8_weight import MicroInt8Weight
from sparse_tvm.micro.integer_tail import integer_tail
from sparse_tvm.transform.int8_lowering import (
    activation_after_kernel,
    fuses_tail,
    int8_end,
    requantizes,
)
from sparse_tvm.transform.lowering import SparsePlan, add_kernel, sanitize, tensor_type

__all__ = ["lower_micro_int8", "micro_int8_arrays", "micro_int8_layer", "micro_int8_possible"]


def micro_int8_possible(layer: Layer) -> bool:
    """Whether the micro int8 kernel can run ``layer``: a matmul or conv (the analysis gives
    int8 operands to channels-first convs of groups 1 only) with int8 operands whose scales
    are constants (a dynamically quantized model's are computed at run time)."""
    return layer.int8 is not None and not layer.int8.dynamic


def micro_int8_layer(layer: Layer) -> Layer:
    """The layer as the micro int8 kernel runs it: ending at its output quantize, or at the
    end of its QDQ tail unless that has a GELU."""
    ops = layer.int8
    if ops.tail is not None and ops.tail.gelu:
        layer = dataclasses.replace(layer, int8=dataclasses.replace(ops, tail=None))
    return int8_end(layer)


def micro_int8_arrays(layer: Layer, weight: MicroInt8Weight) -> tuple[MicroInt8Spec, np.ndarray]:
    """The kernel's spec and its constant blob (the weight's arrays and the epilogue's,
    :func:`~sparse_tvm.micro.int8_kernels.pack_blob`); arrays that would be all zeros (a
    correction for activations without a zero point, an absent bias) are left out and the
    spec says so."""
    ops = layer.int8
    n = layer.shape[0]
    requant = requantizes(layer)
    scale = (np.float32(ops.x_scale) * ops.weight_scale).astype(np.float32)
    bias = None if layer.bias is None else layer.bias.astype(np.float32)
    if requant:  # in steps of the output
        scale = (scale / np.float32(ops.out_scale)).astype(np.float32)
        bias = None if bias is None else (bias / np.float32(ops.out_scale)).astype(np.float32)
    correction = (int(ops.x_zero) * weight.row_sums).astype(np.int32)
    tail = tail_bias = None
    if fuses_tail(layer):
        t = ops.tail
        tail = MicroTail(float(ops.out_scale), t.relu, t.relu6, t.requant)
        tail_bias = None if t.bias is None else np.asarray(t.bias, np.float32).reshape(n)
        if t.requant is not None:  # in fixed point where that gives every value
            lowest, highest = (-128, 127) if ops.out_signed else (0, 255)
            q_range = (ops.out_zero if layer.relu else lowest, highest)
            found = integer_tail(q_range, ops.out_zero, tail, tail_bias)
            if found is not None:
                tail = dataclasses.replace(tail, integer=found[0])
                tail_bias = found[1]
    conv = layer.conv
    direct = conv if conv is not None and not weight.dense else None
    spec = MicroInt8Spec(
        layer.m,
        x_signed=ops.x_signed,
        correction=bool(correction.any()),
        bias=bias is not None,
        relu=layer.relu,
        out_zero=ops.out_zero if requant else None,
        out_signed=requant and ops.out_signed,
        tail=tail,
        tail_bias=tail_bias is not None,
        direct=direct,
        pixels=None if conv is None else conv.output_hw[0] * conv.output_hw[1],
    )
    arrays = {"data": weight.data, "corr": correction, "scale": scale}
    arrays |= {"bias": bias, "tail_bias": tail_bias}
    if not weight.dense:
        arrays |= {"indices": weight.indices, "indptr": weight.indptr}
    return spec, pack_blob(weight, spec, arrays)


def lower_micro_int8(builder: relax.BlockBuilder, plan: SparsePlan, xq: relax.Expr) -> relax.Expr:
    """The int8 kernel call of ``plan`` (a :class:`MicroInt8Weight`) reading the 8-bit ``xq``."""
    layer, weight = plan.layer, plan.weight
    n, k = layer.shape
    conv = layer.conv
    m = layer.m * layer.batch  # a conv's rows: every output pixel of every image
    spec, blob = micro_int8_arrays(dataclasses.replace(layer, m=m), weight)
    kind = "dense" if weight.dense else f"{weight.r}x1"
    name = sanitize(layer.name)
    gv = add_kernel(
        builder, micro_int8_kernel(weight, spec), f"int8_{kind}_{name}", hand_written=False
    )
    if conv is not None:  # the input padded with its zero point (the quantized 0.0)
        dtype = "int8" if layer.int8.x_signed else "uint8"
        pad = add_kernel(
            builder, pad_kernel(conv, dtype, int(layer.int8.x_zero)), f"pad_{name}",
            hand_written=False,
        )  # fmt: skip
        x2 = builder.emit(relax.call_tir(pad, [xq], tensor_type(padded_shape(conv), dtype)))
        if weight.dense:  # the patches as rows; the sparse kernel reads them in place
            rows = add_kernel(
                builder, im2col_kernel(conv, dtype), f"im2col_{name}", hand_written=False
            )
            x2 = builder.emit(relax.call_tir(rows, [x2], tensor_type((m, k), dtype)))
        else:
            size = int(np.prod(padded_shape(conv)))
            x2 = builder.emit(relax.op.reshape(x2, (size,)))
    elif len(layer.input_shape) != 2:
        x2 = builder.emit(relax.op.reshape(xq, (m, k)))
    else:
        x2 = xq
    shape = (m, n) if conv is None else (layer.batch, n, layer.m)  # a conv's: channels first
    out = builder.emit(
        relax.call_tir(gv, [x2, relax.const(blob)], tensor_type(shape, spec.out_dtype))
    )
    if tuple(int(s) for s in out.ty.shape) != tuple(layer.output_shape):
        out = builder.emit(relax.op.reshape(out, layer.output_shape))
    return activation_after_kernel(builder, layer, out)
