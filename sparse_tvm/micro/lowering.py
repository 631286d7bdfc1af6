"""``MicroLowering``: a layer as one call of a micro sparse kernel (:mod:`sparse_tvm.micro.kernels`).

The lowering :class:`~sparse_tvm.transform.DenseToSparse` applies for a microcontroller
(``DenseToSparse(plans, MicroLowering())``): plans carry compact ``r x 1`` weights
(:class:`~sparse_tvm.micro.compact.CompactSparseWeight`, 8/16-bit indices), passed as Relax
constants; a matmul or 1x1 conv becomes a compact SpMM, a kxk conv a direct sparse convolution
rather than im2col, whose column buffer would often not fit the device's RAM.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from sparse_tvm.micro import kernels
from sparse_tvm.micro.int8_lowering import lower_micro_int8
from sparse_tvm.transform.lowering import SparsePlan, add_kernel, sanitize, tensor_type


class MicroLowering:
    """Lower a layer to one serial micro sparse kernel; ``plan.kernel`` is not used."""

    def lower(self, builder: relax.BlockBuilder, plan: SparsePlan, x: relax.Expr) -> relax.Expr:
        """The kernel call of ``plan`` reading ``x``, reshaped to the layer's output shape; an
        int8 plan's kernel reads the 8-bit activations (:mod:`.int8_lowering`)."""
        if getattr(plan.weight, "is_int8", False):
            return lower_micro_int8(builder, plan, x)
        layer, w = plan.layer, plan.weight
        bias = layer.bias is not None
        args = [relax.const(w.data), relax.const(w.indices), relax.const(w.indptr)]
        if bias:
            args.append(relax.const(np.ascontiguousarray(layer.bias, np.float32)))
        n, k = w.shape
        if layer.op == "matmul":
            func = kernels.spmm_rows(w, layer.m, bias=bias, relu=layer.relu)
            if len(layer.input_shape) != 2:
                x = builder.emit(relax.op.reshape(x, (layer.m, k)))
            out_shape = (layer.m, n)
        elif layer.conv.is_pointwise:
            batch, channels, height, width = layer.conv.input_shape
            x = builder.emit(relax.op.reshape(x, (batch, channels, height * width)))
            func = kernels.spmm_channels(w, batch, layer.m, bias=bias, relu=layer.relu)
            out_shape = (batch, n, layer.m)
        else:
            g = layer.conv
            func = kernels.sparse_conv2d(
                w,
                g.input_shape,
                g.kernel,
                g.strides,
                g.padding,
                g.dilation,
                g.output_hw,
                bias=bias,
                relu=layer.relu,
            )
            out_shape = layer.output_shape
        # The micro pipeline keys on the kernels' own ``tirx.is_scheduled``: no hand-written mark.
        gv = add_kernel(builder, func, f"sparse_{w.r}x1_{sanitize(layer.name)}", hand_written=False)
        out = relax.call_tir(gv, [x, *args], tensor_type(out_shape))
        if tuple(out_shape) != tuple(layer.output_shape):
            out = relax.op.reshape(builder.emit(out), layer.output_shape)
        if layer.relu6:  # the kernels' epilogue ends at the ReLU; the clamp at 6 follows it
            out = relax.op.minimum(builder.emit(out), relax.const(6.0, "float32"))
        return out
