"""``DepthwiseNCHW``: NCHW depthwise convs with constant weights as calls of our own kernel.

TVM's generic NCHW schedule reads a depthwise conv's input as gathers wherever the rows are
short or the stride is 2 (MobileNet-v1's nine depthwise shapes: 4.8 ms on 2 Xeon cores, against
2.4 ms channels-last). :mod:`sparse_tvm.kernels.depthwise_conv` computes one channel at a time
from a padded (and, for stride 2, phase-split) copy of its image, with contiguous vector loads
only (1.0 ms for the same nine). With it a sparse CNN with depthwise convs (the MobileNets) can
stay channels-first, where the column-vector SpMM of its 1x1 convs needs no transposes.

The pass rewrites, in ``main``, each ``conv2d`` with ``groups == in channels == out channels``,
NCHW data, an OIHW constant float32 weight, one image, no dilation and equal strides; the bias
add (a constant per channel) and the ReLU or ReLU6 (``maximum(x, 0)`` then ``minimum(x, 6)``,
as our Clip converter emits it) that only it feeds are fused into the call. It runs in the CPU
pipeline after the weights are bound, so every CPU build (dense or sparse) takes it.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import GenericConst
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.analysis.layers import FuncIndex, activation_after, op_name, static_shape
from sparse_tvm.kernels.depthwise_conv import DepthwiseConv, depthwise_conv_kernel
from sparse_tvm.target.machine import vector_lanes
from sparse_tvm.transform.dense_to_sparse import rebind
from sparse_tvm.transform.lowering import add_kernel, tensor_type

__all__ = ["DepthwiseNCHW", "depthwise_geometry", "window_geometry"]


def window_geometry(call: relax.Call, kernel: tuple[int, int]) -> DepthwiseConv | None:
    """The geometry of a window op's call (a conv, a pool) over one float32 image, ``kernel``
    its window: None unless the strides are equal, there is no dilation and the call's output
    shape is the geometry's (the caller checks the op, its layouts and the rest)."""
    attrs = call.attrs
    x_shape, out_shape = static_shape(call.args[0]), static_shape(call)
    if x_shape is None or out_shape is None or len(x_shape) != 4:
        return None
    strides = tuple(int(s) for s in attrs.strides)
    if (
        x_shape[0] != 1
        or str(call.args[0].ty.dtype) != "float32"
        or any(int(d) != 1 for d in attrs.dilation)
        or strides[0] != strides[1]
    ):
        return None
    pad = [int(p) for p in attrs.padding]
    pad = pad * 2 if len(pad) == 2 else pad
    geometry = DepthwiseConv(*x_shape[1:], kernel, strides[0], tuple(pad))
    if (1, geometry.channels, *geometry.out_hw) != tuple(out_shape):
        return None
    return geometry


def depthwise_geometry(call: relax.Call) -> DepthwiseConv | None:
    """The kernel geometry of a ``relax.nn.conv2d`` call the kernel can run, else None."""
    if op_name(call) != "relax.nn.conv2d":
        return None
    attrs = call.attrs
    weight = call.args[1]
    x_shape = static_shape(call.args[0])
    if x_shape is None or len(x_shape) != 4 or not isinstance(weight, GenericConst):
        return None
    out_layout = str(attrs.out_layout) if attrs.out_layout else str(attrs.data_layout)
    channels = x_shape[1]
    if (
        (str(attrs.data_layout), str(attrs.kernel_layout), out_layout) != ("NCHW", "OIHW", "NCHW")
        or int(attrs.groups) != channels
        or tuple(weight.value.shape)[:2] != (channels, 1)
        or str(weight.value.dtype) != "float32"
    ):
        return None
    return window_geometry(call, (int(weight.value.shape[2]), int(weight.value.shape[3])))


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, index: FuncIndex, lanes: int) -> None:
        super().__init__(mod)
        self.index = index
        self.lanes = lanes
        # end var of a fused chain -> (conv call, geometry, bias, activation)
        self.chains: dict[relax.Var, tuple] = {}
        for var, value in index.value.items():
            geometry = depthwise_geometry(value) if isinstance(value, relax.Call) else None
            if geometry is not None:
                end, bias, activation = self._epilogue(var, geometry.channels)
                self.chains[end] = (value, geometry, bias, activation)

    def _epilogue(self, var: relax.Var, channels: int):
        """The chain's last var, its bias (or None) and activation, from ``var`` (the conv)."""
        index, end, bias = self.index, var, None
        user = index.single_user(end)
        if user is not None and op_name(index.value[user]) == "relax.add":
            a, b = index.value[user].args
            other = b if a.same_as(end) else a
            if isinstance(other, GenericConst) and other.value.shape in (
                (1, channels, 1, 1),
                (channels, 1, 1),
            ):
                bias = other.value.numpy().reshape(channels).astype(np.float32)
                end = user
        end, activation = activation_after(index, end)
        return end, bias, activation

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        chain = self.chains.get(binding.var)
        if chain is None:
            super().visit_var_binding_(binding)
            return
        call, geometry, bias, activation = chain
        func = depthwise_conv_kernel(geometry, activation=activation, lanes=self.lanes)
        gv = add_kernel(
            self.builder_,
            func,
            f"depthwise_nchw_{geometry.channels}x{geometry.height}x{geometry.width}_s{geometry.stride}",
        )
        if bias is None:
            bias = np.zeros(geometry.channels, np.float32)
        args = [self.visit_expr(call.args[0]), call.args[1], relax.const(bias)]
        out_type = tensor_type((1, geometry.channels, *geometry.out_hw))
        rebind(self, binding.var, relax.call_tir(gv, args, out_type))


@tvm.transform.module_pass(opt_level=0, name="DepthwiseNCHW")
class DepthwiseNCHW:
    """Rewrite ``main``'s NCHW depthwise convs (with their bias and ReLU/ReLU6) into calls of
    :func:`~sparse_tvm.kernels.depthwise_conv.depthwise_conv_kernel` for ``target``'s vector
    width; a module without ``main`` or without such a conv is returned as it is."""

    def __init__(self, target: tvm.target.Target | None) -> None:
        self.lanes = vector_lanes(target)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if "main" not in _names(mod) or not isinstance(mod["main"], relax.Function):
            return mod
        folded = relax.transform.FoldConstant()(mod)  # the bias reshapes, to constants
        rewriter = _Rewriter(folded, FuncIndex(folded["main"]), self.lanes)
        if not rewriter.chains:
            return mod
        mod = folded
        new_main = rewriter.visit_expr(mod["main"])
        rewriter.builder_.update_func(mod.get_global_var("main"), new_main)
        return relax.transform.DeadCodeElimination(["main"])(rewriter.builder_.get())


def _names(mod: tvm.IRModule) -> set[str]:
    return {gv.name_hint for gv in mod.get_global_vars()}
