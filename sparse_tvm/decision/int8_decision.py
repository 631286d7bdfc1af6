"""The int8 choice of a quantized model's layer: the VNNI kernel, or the float path it replaces.

A layer with int8 operands (``Layer.int8``: a QDQ model's matmul with a symmetric int8 weight
and per-tensor 8-bit activations) on a target with AVX-512 VNNI or the Arm dot product can
run as the int8 16x4-block kernel (:mod:`sparse_tvm.transform.int8_lowering`). Whether that is faster is measured, like
every sparse decision ("never slower"): the layer is built alone twice from the same 8-bit
input, as the model runs it,

- the float path: ``dequantize`` -> the layer as its float decision left it (dense, or the
  float sparse kernel it chose) -> the epilogue -> the output ``quantize`` where it has one;
- the int8 path: the int8 kernel, writing the output quantize's 8-bit values itself;

timed alternately. The int8 kernel computes what the quantized model defines (exact int32
sums, the graph's roundings) where the float path only approximates it (a float sum on a
rounding step's edge rounds the other way now and then, and such flips add up over a model's
layers: 2e-2 relative on MiniLM with 6 of its 36 layers float, 2e-7 with none), so it is kept
unless the float path is faster by
:data:`~sparse_tvm.decision.layer_decision.KEEP_SPARSE_MARGIN` ("never slower", within the
timing noise the margin stands for). Same-shape layers of about the same block density take a
measured twin's result. Where layers are not timed (an Arm target
compiled on an x86 host), the int8 kernel is chosen when at least
:data:`INT8_MIN_ZERO_BLOCKS` of the 16x4 blocks are zero (an int8
multiply-add does 4x a float32 FMA's work, so half the blocks is a safe gain; AVX2's 16-bit
pairs 2x: three quarters).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.analysis.format_choice import FormatChoice
from sparse_tvm.analysis.layers import Layer, find_layers
from sparse_tvm.decision.layer_timing import bind_weights, emit_activation, layer_timer
from sparse_tvm.decision.machine_load import ForeignLoad
from sparse_tvm.frontend.fold_dequantize import WeightScale
from sparse_tvm.kernels.spmm_int8 import Int8Blocks, int8_blocks_fit
from sparse_tvm.report import ESTIMATED, MEASURED, MEASURED_AS_TWIN
from sparse_tvm.target.machine import int8_isa
from sparse_tvm.transform.dense_to_sparse import DenseToSparse, SparsePlan
from sparse_tvm.transform.int8_lowering import int8_layer
from sparse_tvm.tuning.records import layer_key

__all__ = ["INT8_EFFICIENCY", "INT8_MIN_ZERO_BLOCKS", "Int8Twins", "decide_int8", "int8_possible"]

INT8_MIN_ZERO_BLOCKS = {"vnni": 0.5, "sdot": 0.5, "avx2": 0.75, "smlal": 0.75}
# The untimed estimate over the float32 dense layer: int8 multiply-adds do 4x a float32 FMA's
# work, about half of it reached over 1 / block density (BERT FFN layers at 90 % 16x4, M = 128:
# 24-27x the float32 dense layer measured, 2 / 0.1 = 20x estimated); AVX2's vpmaddwd does 2x
# an FMA's, with the X pairs to build: about half that
# NEON's smull + smlal + sadalp: 16 multiply-adds in 3 instructions on one pipe of a
# Cortex-A72 against 4 FMA lanes an instruction on two: about the FMA's rate, a quarter of
# the weight bytes
INT8_EFFICIENCY = {"vnni": 2.0, "sdot": 2.0, "avx2": 1.0, "smlal": 1.0}
ROUNDS = 3  # alternated timings of each path; the fastest median of each counts
TWIN_DENSITY_TOLERANCE = 0.01


def int8_possible(layer: Layer, backend) -> bool:
    """Whether the int8 kernel can run ``layer`` on ``backend``'s target: a matmul, or a
    conv of one group with static quantization (through the 8-bit im2col)."""
    return (
        layer.int8 is not None
        and int8_isa(getattr(backend, "tvm_target", None)) is not None
        and int8_blocks_fit(*layer.shape)
        and (layer.op == "matmul" or _int8_conv(layer))
    )


def _int8_conv(layer: Layer) -> bool:
    g = layer.conv
    return layer.op == "conv2d" and g.groups == 1 and not layer.int8.dynamic


class Int8Twins:
    """Measured int8-against-float timings by layer shape, the ops the int8 kernel fuses
    (its QDQ tail included), block density and float format: a transformer's repeated layers
    are timed once."""

    def __init__(self) -> None:
        self._seen: dict[tuple, list[tuple[float, float, float]]] = {}

    @staticmethod
    def _key(int8: Layer, float_label: str) -> tuple:
        return (layer_key(int8, pattern=False), tuple(int8.fused), float_label)

    def get(self, int8: Layer, float_label: str, density: float):
        for seen_density, float_s, int8_s in self._seen.get(self._key(int8, float_label), []):
            if abs(seen_density - density) <= TWIN_DENSITY_TOLERANCE:
                return float_s, int8_s
        return None

    def add(self, int8: Layer, float_label: str, density: float, float_s, int8_s) -> None:
        self._seen.setdefault(self._key(int8, float_label), []).append((density, float_s, int8_s))


def decide_int8(decision, backend, options, twins: Int8Twins | None = None, records=None):
    """``decision`` (the layer's float decision), or the int8 kernel's decision where that is
    faster (module doc); ``records`` (a MetaSchedule database) may hold the kernel's tuned
    knobs (``sparse-tvm tune``), which it then runs with."""
    from sparse_tvm.decision.layer_decision import KEEP_SPARSE_MARGIN, LayerDecision

    layer = decision.layer
    if options.dense or options.force_block is not None or not int8_possible(layer, backend):
        return decision
    int8, blocks = int8_layer(layer)
    isa = int8_isa(getattr(backend, "tvm_target", None))
    blocks = dataclasses.replace(blocks, isa=isa)  # the layout stored: the report's bytes
    density = blocks.blocks / max(1, (layer.shape[0] // 16) * (layer.shape[1] // 4))
    float_label = decision.choice.label
    label = f"int8 bsr 16x4 ({1 - density:.0%} zero blocks)"
    knobs, tuned = _tuned_knobs(layer, backend, records)
    if not options.measure:
        if 1 - density < INT8_MIN_ZERO_BLOCKS[isa]:
            return decision
        estimate = INT8_EFFICIENCY[isa] / max(density, 1e-6)
        reason = f"{label}{tuned}: estimated {estimate:.1f}x over float32 dense, not timed"
        choice = FormatChoice("int8 bsr", (16, 4), estimate, reason)
        return LayerDecision(int8, choice, blocks, decided_by=ESTIMATED, knobs=knobs)
    twin_label = f"{float_label} {sorted((knobs or {}).items())}"
    timed = twins.get(int8, twin_label, density) if twins is not None else None
    decided_by = MEASURED_AS_TWIN if timed is not None else MEASURED
    if timed is None:
        with ForeignLoad() as load:
            timed = time_int8_against_float(layer, decision, blocks, backend, knobs)
        if twins is not None and not load.loaded:  # a loaded timing is not handed on
            twins.add(int8, twin_label, density, *timed)
    float_s, int8_s = timed
    speedup = float_s / int8_s
    against = f"the float32 {float_label} layer (with its QDQ ops)"
    if float_s * KEEP_SPARSE_MARGIN < int8_s:  # the float path clearly faster
        reason = f"{decision.choice.reason}; {label} measured {speedup:.2f}x over it: kept float32"
        return dataclasses.replace(
            decision, choice=dataclasses.replace(decision.choice, reason=reason)
        )
    dense_s = decision.dense_s
    if dense_s is None and decision.choice.format == "dense":
        dense_s = float_s
    reason = f"{label}{tuned} measured {speedup:.2f}x over {against}: int8"
    choice = FormatChoice("int8 bsr", (16, 4), speedup, reason)
    return LayerDecision(
        int8, choice, blocks, dense_s=dense_s, sparse_s=int8_s, decided_by=decided_by,
        candidate=(16, 4), knobs=knobs,
    )  # fmt: skip


def _tuned_knobs(layer: Layer, backend, records) -> tuple[dict[str, int] | None, str]:
    """The int8 kernel's tuned knobs in ``records`` (None: the hand-written kernel's) and
    how the report says so."""
    lookup = getattr(backend, "lookup_int8_kernel", None)
    found = lookup(layer, records) if records is not None and lookup is not None else None
    if found is None:
        return None, ""
    how = "tuned" if found.exact else "tuned on the same shapes"
    knobs = ", ".join(f"{k} {v}" for k, v in sorted(found.knobs.items()))
    return dict(found.knobs), f", {how} ({knobs})"


def quantized_layer_module(layer: Layer) -> tuple[relax.Function, dict[str, np.ndarray], Layer]:
    """``main(xq, weight[, bias])``: the layer as a QDQ model runs it, from its 8-bit input
    (``dequantize`` -> matmul -> epilogue -> [output ``quantize``]), its weights, and the layer
    ``find_layers`` finds in it (with its int8 operands)."""
    ops = layer.int8
    if ops.dynamic:  # timed with a fixed scale: the same work (two tiny ops less)
        ops = dataclasses.replace(ops, x_scale=0.05, x_zero=0 if ops.x_signed else 128)
    x_dtype = "int8" if ops.x_signed else "uint8"
    out_dtype = "int8" if ops.out_signed else "uint8"
    xq = relax.Var("xq", relax.TensorType(list(layer.input_shape), x_dtype))
    w = relax.Var(layer.name, relax.TensorType(list(layer.weight_shape), "float32"))
    params, values = [xq, w], {layer.name: layer.stored_weight()}
    bias = None
    if layer.bias is not None:  # a conv's as (1, n, 1, 1) (NHWC: (1, 1, 1, n))
        n = layer.shape[0]
        shape = [n]
        if layer.op == "conv2d":
            shape = [1, 1, 1, n] if layer.conv.layout == "NHWC" else [1, n, 1, 1]
        bias = relax.Var(f"{layer.name}.bias", relax.TensorType(shape, "float32"))
        params.append(bias)
        values[bias.name] = layer.bias.reshape(shape)

    def scalar(value, dtype):
        return relax.const(np.array(value, dtype))

    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            x = bb.emit(
                relax.op.dequantize(xq, scalar(ops.x_scale, "float32"), scalar(ops.x_zero, x_dtype))
            )
            y = _emit_linear(bb, layer, x, w)
            if bias is not None:
                y = bb.emit(relax.op.add(y, bias))
            y = emit_activation(bb, layer, y)
            if ops.out is not None:
                y = bb.emit(
                    relax.op.quantize(
                        y, scalar(ops.out_scale, "float32"), scalar(ops.out_zero, out_dtype),
                        out_dtype=out_dtype,
                    )
                )  # fmt: skip
            if ops.out is not None and ops.tail is not None:
                y = _emit_tail(bb, ops, y, scalar)
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    func = bb.get()["main"]
    weights = {p: values[p.name] for p in func.params[1:]}
    axis = 0 if layer.transposed or layer.op == "conv2d" else 1  # the output features' axis
    scale = WeightScale(ops.weight_scale, axis)
    (single,) = find_layers(func, weights, gelu=layer.gelu, weight_scales={layer.name: scale})
    return func, values, single


def _emit_linear(bb: relax.BlockBuilder, layer: Layer, x: relax.Expr, w: relax.Expr):
    """The layer's matmul or conv of ``x`` by its stored weight ``w``."""
    if layer.op == "conv2d":
        g = layer.conv
        kernel_layout = "HWIO" if g.layout == "NHWC" else "OIHW"
        return bb.emit(
            relax.op.nn.conv2d(
                x, w, strides=g.strides, padding=g.padding, dilation=g.dilation, groups=g.groups,
                data_layout=g.layout, kernel_layout=kernel_layout,
            )
        )  # fmt: skip
    weight = bb.emit(relax.op.permute_dims(w, [1, 0])) if layer.transposed else w
    return bb.emit(relax.op.matmul(x, weight))


def _emit_tail(bb: relax.BlockBuilder, ops, y: relax.Expr, scalar) -> relax.Expr:
    """The layer's QDQ tail after its output quantize, as the model has it."""
    tail = ops.tail
    zero_dtype = "int8" if ops.out_signed else "uint8"
    y = bb.emit(
        relax.op.dequantize(y, scalar(ops.out_scale, "float32"), scalar(ops.out_zero, zero_dtype))
    )
    if tail.bias is not None:
        y = bb.emit(relax.op.add(y, relax.const(tail.bias)))
    if tail.relu or tail.relu6:
        y = bb.emit(relax.op.nn.relu(y))
    if tail.relu6:
        y = bb.emit(relax.op.minimum(y, relax.const(6.0, "float32")))
    if tail.gelu:
        y = bb.emit(relax.op.nn.gelu(y))
    if tail.requant is not None:
        scale, zero, signed = tail.requant
        dtype = "int8" if signed else "uint8"
        y = bb.emit(
            relax.op.quantize(y, scalar(scale, "float32"), scalar(zero, dtype), out_dtype=dtype)
        )
    return y


def time_int8_against_float(
    layer: Layer, decision, blocks: Int8Blocks, backend, knobs: dict[str, int] | None = None
) -> tuple[float, float]:
    """Seconds of the layer's float path (as ``decision`` left it) and of its int8 kernel
    (with tuned ``knobs`` where given), each the fastest of :data:`ROUNDS` alternated
    medians."""
    func, values, single = quantized_layer_module(layer)
    x_dtype = "int8" if layer.int8.x_signed else "uint8"
    base = tvm.IRModule({"main": func})
    float_mod = base
    if decision.weight is not None:
        plan = SparsePlan(single, decision.weight, decision.kernel, decision.knobs)
        float_mod = DenseToSparse([plan], backend.lowering())(base)
    int8, _ = int8_layer(single)
    int8_mod = DenseToSparse([SparsePlan(int8, blocks, knobs=knobs)], backend.lowering())(base)
    timers = [
        layer_timer(bind_weights(mod, values), backend, layer.input_shape, 5, 5, dtype=x_dtype)
        for mod in (float_mod, int8_mod)
    ]
    best = [float("inf")] * 2
    for _ in range(ROUNDS):
        for index, timer in enumerate(timers):
            best[index] = min(best[index], timer())
    return best[0], best[1]
