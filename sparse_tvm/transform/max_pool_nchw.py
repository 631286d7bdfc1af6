"""``MaxPoolNCHW``: NCHW float32 max pools as calls of our own kernel.

TVM's generic NCHW schedule reads a max pool's windows with the same gathers as a depthwise
conv's: ResNet-50's 3x3 / 2 stem pool of a 64 x 112 x 112 image took 1.25 ms on 2 Xeon cores, a
twentieth of the 90 % sparse model. :mod:`sparse_tvm.kernels.max_pool` computes one channel at a
time from the depthwise kernel's padded, phase-split copy, with contiguous vector loads only.

The pass rewrites, in ``main``, each ``max_pool2d`` of one float32 NCHW image with equal
strides, no dilation and ``ceil_mode`` off whose output shape is the kernel's. It runs in the
CPU pipeline beside :class:`~sparse_tvm.transform.depthwise_nchw.DepthwiseNCHW`, so every CPU
build (dense or sparse) takes it.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.analysis.layers import op_name
from sparse_tvm.kernels.depthwise_conv import DepthwiseConv
from sparse_tvm.kernels.max_pool import max_pool_kernel
from sparse_tvm.target.machine import vector_lanes
from sparse_tvm.transform.depthwise_nchw import window_geometry
from sparse_tvm.transform.lowering import add_kernel, tensor_type

__all__ = ["MaxPoolNCHW", "max_pool_geometry"]


def max_pool_geometry(call: relax.Call) -> DepthwiseConv | None:
    """The kernel geometry of a ``relax.nn.max_pool2d`` call the kernel can run, else None."""
    if op_name(call) != "relax.nn.max_pool2d":
        return None
    attrs = call.attrs
    out_layout = str(attrs.out_layout) if attrs.out_layout else str(attrs.layout)
    kernel = tuple(int(k) for k in attrs.pool_size)
    if (
        (str(attrs.layout), out_layout) != ("NCHW", "NCHW")
        or bool(attrs.ceil_mode)
        # a window of padding only would give the lowest float32, not the pool's value
        or any(int(p) >= min(kernel) for p in attrs.padding)
    ):
        return None
    return window_geometry(call, kernel)


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, lanes: int) -> None:
        super().__init__(mod)
        self.lanes = lanes
        self.rewritten = 0

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        geometry = max_pool_geometry(call)
        if geometry is None:
            return super().visit_call_(call)
        g = geometry
        gv = add_kernel(
            self.builder_,
            max_pool_kernel(g, lanes=self.lanes),
            f"max_pool_nchw_{g.channels}x{g.height}x{g.width}_k{g.kernel[0]}x{g.kernel[1]}_s{g.stride}",
        )
        self.rewritten += 1
        return relax.call_tir(
            gv, [self.visit_expr(call.args[0])], tensor_type((1, g.channels, *g.out_hw))
        )


@tvm.transform.module_pass(opt_level=0, name="MaxPoolNCHW")
class MaxPoolNCHW:
    """Rewrite ``main``'s NCHW float32 max pools into calls of
    :func:`~sparse_tvm.kernels.max_pool.max_pool_kernel` for ``target``'s vector width; a module
    without ``main`` or without such a pool is returned as it is."""

    def __init__(self, target: tvm.target.Target | None) -> None:
        self.lanes = vector_lanes(target)

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        names = {gv.name_hint for gv in mod.get_global_vars()}
        if "main" not in names or not isinstance(mod["main"], relax.Function):
            return mod
        rewriter = _Rewriter(mod, self.lanes)
        new_main = rewriter.visit_expr(mod["main"])
        if not rewriter.rewritten:
            return mod
        rewriter.builder_.update_func(mod.get_global_var("main"), new_main)
        return rewriter.builder_.get()
