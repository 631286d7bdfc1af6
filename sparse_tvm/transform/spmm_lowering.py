"""``SpmmLowering``: a layer as one SpMM kernel call, with int32 CSR/BSR weight constants.

The lowering of the Linux back ends (x86, aarch64, CUDA: the back end passes its kernel
factories). The weight is passed as three Relax constants (``data``, ``indices``, ``indptr``),
so it is stored compressed in the compiled artefact; the kernel fuses the bias and ReLU.

- MatMul / Gemm: activations (..., k) are viewed as an (m, k) matrix, multiplied by W^T.
- Conv 1x1 (stride 1, no padding): NCHW is already (batch, k, m) with m = H*W: one SpMM in the
  "KM" layout, no copy.
- Conv kxk of stride 1 with r x 1 blocks (the CPU kernels, no tuned kernel given): the direct
  SpMM (:mod:`sparse_tvm.kernels.direct_conv`): the input padded and flattened once, each
  block's index the offset of its shifted input row, the output cropped of its junk columns;
  no column buffer (ResNet-50's 3x3 layers at 90 % 4x1: 13.1 -> 10.7 ms for the model).
- Other convs (strided, dilated, tuned, CUDA): im2col into (batch, c*kh*kw, oh*ow), then the
  same SpMM, which reuses the one tuned SpMM kernel (and its schedules and records) for every
  conv shape; its cost is the column buffer, c*kh*kw*oh*ow floats.
- Channels-last convs (NHWC / HWIO, what the CPU back ends run CNNs in): a 1x1 conv's input is
  already the (pixels, c) matrix of the "MK" layout, a kxk conv's im2col has one row of
  kh*kw*c per output pixel; the SpMM's (pixels, n) output is the NHWC output, so no transpose
  is ever needed between layers. Where the default kernel is the column-vector one (narrow
  blocks: 4x1 on AVX-512), which wants each input feature's pixels contiguous, a kxk conv's
  im2col writes its columns transposed instead ((kh*kw*c, pixels), layout "KM_MK"): the
  transposing costs the same there as inside the kernel, and the column matrix is not written
  and read once more (1x1 convs have no im2col to fold it into: their kernel transposes).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.analysis.layers import Layer
from sparse_tvm.kernels import im2col_kernel, im2col_nhwc_kernel, spmm_kernel
from sparse_tvm.kernels.direct_conv import DirectConv, crop_kernel, pad_flat_kernel
from sparse_tvm.kernels.im2col import im2col_nhwc_columns_kernel
from sparse_tvm.kernels.spmm import choose_strategy, spmm_arrays, spmm_spec, vector_lanes
from sparse_tvm.kernels.spmm_int8 import Int8Blocks
from sparse_tvm.kernels.spmm_unrolled import unroll_eligible
from sparse_tvm.target.machine import int8_isa
from sparse_tvm.transform.int8_lowering import lower_int8
from sparse_tvm.transform.lowering import SparsePlan, add_kernel, sanitize, tensor_type


def kernel_layout(layer: Layer) -> tuple[str, int]:
    """``(x_layout, batch)`` of the SpMM kernel a layer becomes: a matmul and an NHWC conv read
    their activations as (m, k) rows ("MK"); an NCHW conv reads (batch, k, m) ("KM")."""
    if layer.op == "matmul" or layer.conv.layout == "NHWC":
        return "MK", 1
    return "KM", int(layer.conv.input_shape[0])


def kernel_fusion(layer: Layer) -> dict[str, bool]:
    """The epilogue the layer's SpMM kernel takes in: ``bias``, ``relu``, ``relu6``, and
    ``gelu`` where set (only the CPU kernels take one)."""
    fusion = {"bias": layer.bias is not None, "relu": layer.relu, "relu6": layer.relu6}
    if layer.gelu:
        fusion["gelu"] = True
    return fusion


def kernel_options(layer: Layer) -> dict[str, Any]:
    """The keyword arguments of the layer's SpMM kernel (``spmm_kernel``, ``tune_kernel``,
    ``lookup_kernel``, ...): its layout and batch (:func:`kernel_layout`) and its fusion
    (:func:`kernel_fusion`)."""
    x_layout, batch = kernel_layout(layer)
    return {"x_layout": x_layout, "batch": batch, **kernel_fusion(layer)}


class SpmmLowering:
    """Lower a layer to (im2col +) SpMM on ``target``.

    Parameters
    ----------
    target
        The target the kernels are generated for (passed to ``spmm``).
    spmm, im2col, im2col_nhwc
        The kernel factories, with the parameters and results of
        :func:`sparse_tvm.kernels.spmm_kernel`, :func:`sparse_tvm.kernels.im2col_kernel` and
        :func:`sparse_tvm.kernels.im2col_nhwc_kernel` (the defaults, the CPU kernels); the CUDA
        back end passes :mod:`sparse_tvm.kernels.cuda`'s ``cuda_spmm_kernel`` and
        ``cuda_im2col_kernel`` (its models stay NCHW).
    """

    def __init__(
        self,
        target: tvm.target.Target | None,
        spmm: Callable[..., tvm.tirx.PrimFunc] = spmm_kernel,
        im2col: Callable[..., tvm.tirx.PrimFunc] = im2col_kernel,
        im2col_nhwc: Callable[..., tvm.tirx.PrimFunc] = im2col_nhwc_kernel,
    ) -> None:
        self.target = target
        self.spmm = spmm
        self.im2col = im2col
        self.im2col_nhwc = im2col_nhwc

    def lower(self, builder: relax.BlockBuilder, plan: SparsePlan, x: relax.Expr) -> relax.Expr:
        """The SpMM call(s) of ``plan`` reading ``x`` (see the module doc); an int8 plan's
        kernel reads the uint8 activations instead (:mod:`.int8_lowering`)."""
        if isinstance(plan.weight, Int8Blocks):
            return lower_int8(builder, plan, x, int8_isa(self.target))
        layer = plan.layer
        n = layer.weight.shape[0]
        if layer.op == "conv2d" and layer.conv.layout == "NHWC":
            return self._lower_nhwc(builder, plan, x)
        if layer.op == "matmul":
            k = layer.weight.shape[1]
            x2 = (
                x
                if len(layer.input_shape) == 2
                else builder.emit(relax.op.reshape(x, (layer.m, k)))
            )
            out = builder.emit(
                relax.call_tir(
                    self._kernel(builder, plan, "MK", 1),
                    [x2, *self._constants(plan, "MK", 1)],
                    tensor_type((layer.m, n)),
                )
            )
            if len(layer.output_shape) == 2:
                return out
            return relax.op.reshape(out, layer.output_shape)
        geometry = layer.conv
        batch, channels, height, width = geometry.input_shape
        if self._direct(plan):
            return self._lower_direct(builder, plan, x)
        if geometry.is_pointwise:
            cols = builder.emit(relax.op.reshape(x, (batch, channels, height * width)))
        else:
            cols_type = tensor_type((batch, layer.weight.shape[1], layer.m))
            cols = self._im2col(builder, self.im2col, layer, x, cols_type)
        out = builder.emit(
            relax.call_tir(
                self._kernel(builder, plan, "KM", batch),
                [cols, *self._constants(plan, "KM", batch)],
                tensor_type((batch, n, layer.m)),
            )
        )
        return relax.op.reshape(out, layer.output_shape)

    def _lower_nhwc(
        self, builder: relax.BlockBuilder, plan: SparsePlan, x: relax.Expr
    ) -> relax.Expr:
        layer = plan.layer
        n, k = layer.weight.shape
        geometry = layer.conv
        x_layout = "MK"
        if geometry.is_pointwise:
            rows = builder.emit(relax.op.reshape(x, (layer.m, k)))
        elif self._columns_im2col(plan):
            x_layout = "KM_MK"
            columns = partial(im2col_nhwc_columns_kernel, lanes=vector_lanes(self.target))
            rows = self._im2col(builder, columns, layer, x, tensor_type((k, layer.m)))
        else:
            rows = self._im2col(builder, self.im2col_nhwc, layer, x, tensor_type((layer.m, k)))
        out = builder.emit(
            relax.call_tir(
                self._kernel(builder, plan, x_layout, 1),
                [rows, *self._constants(plan, x_layout, 1)],
                tensor_type((layer.m, n)),
            )
        )
        return relax.op.reshape(out, layer.output_shape)

    def _direct(self, plan: SparsePlan) -> bool:
        """Whether an NCHW conv runs as the direct SpMM (:mod:`sparse_tvm.kernels.direct_conv`):
        the CPU kernels with no given kernel (tuned ones are keyed by the im2col layout), a
        kxk conv of stride 1 on one image, r x 1 blocks."""
        g = plan.layer.conv
        return (
            self._default_cpu_kernel(plan)
            and not g.is_pointwise
            and g.groups == 1
            and g.strides == (1, 1)
            and g.dilation == (1, 1)
            and g.input_shape[0] == 1
            and plan.weight.block[1] == 1
        )

    def _lower_direct(
        self, builder: relax.BlockBuilder, plan: SparsePlan, x: relax.Expr
    ) -> relax.Expr:
        layer = plan.layer
        g = layer.conv
        n = layer.weight.shape[0]
        _, channels, height, width = g.input_shape
        direct = DirectConv(channels, height, width, g.kernel, g.padding)
        pad = add_kernel(builder, pad_flat_kernel(direct), f"pad_{sanitize(layer.name)}")
        flat = builder.emit(relax.call_tir(pad, [x], tensor_type((direct.x_size,))))
        kernel = self._kernel(builder, plan, "DIRECT", 1, m=direct.m, x_size=direct.x_size)
        offsets = direct.offsets(plan.weight.indices)
        out = builder.emit(
            relax.call_tir(
                kernel,
                [flat, *self._constants(plan, "DIRECT", 1, offsets)],
                tensor_type((1, n, direct.m)),
            )
        )
        crop = add_kernel(builder, crop_kernel(n, direct), f"crop_{sanitize(layer.name)}")
        return relax.call_tir(crop, [out], tensor_type(layer.output_shape))

    def _columns_im2col(self, plan: SparsePlan) -> bool:
        """Whether a channels-last kxk conv's im2col writes columns (see the module doc): the
        CPU kernels, no given kernel (tuned ones read rows), and a column-vector default."""
        if not self._default_cpu_kernel(plan):
            return False
        spec = spmm_spec(plan.weight, plan.layer.m, x_layout="MK", target=self.target)
        return not unroll_eligible(spec) and choose_strategy(spec) == "colvec"

    def _default_cpu_kernel(self, plan: SparsePlan) -> bool:
        """Whether the layer gets the CPU factory's own kernel: no given (tuned) kernel, whose
        records know only the im2col layouts, and the CPU ``spmm`` factory."""
        return plan.kernel is None and self.spmm is spmm_kernel

    @staticmethod
    def _im2col(builder, factory, layer: Layer, x: relax.Expr, out_type) -> relax.Expr:
        """The call of ``factory``'s im2col kernel for the layer's geometry, reading ``x``."""
        g = layer.conv
        func = factory(*g.input_shape, g.kernel, g.strides, g.padding, g.dilation)
        gv = add_kernel(builder, func, f"im2col_{sanitize(layer.name)}")
        return builder.emit(relax.call_tir(gv, [x], out_type))

    def _constants(
        self,
        plan: SparsePlan,
        x_layout: str,
        batch: int,
        indices: np.ndarray | None = None,
    ) -> list[relax.Expr]:
        """The kernel's weight (and bias) arguments: the arrays in the order the CPU
        factory's kernel for ``x_layout`` reads them (:func:`spmm_arrays`: K panels), the
        weight's own for a given kernel or another factory; ``indices`` replaces the weight's
        own (the direct conv's element offsets, in the weight's order)."""
        w = plan.weight
        data, own_indices, indptr = w.data, w.indices, w.indptr
        if indices is None and self._default_cpu_kernel(plan):
            data, own_indices, indptr = spmm_arrays(
                w, plan.layer.m, x_layout=x_layout, batch=batch, knobs=plan.knobs,
                **kernel_fusion(plan.layer), target=self.target,
            )  # fmt: skip
        indices = own_indices if indices is None else indices
        args = [relax.const(data), relax.const(indices), relax.const(indptr)]
        if plan.layer.bias is not None:
            args.append(relax.const(np.ascontiguousarray(plan.layer.bias, np.float32)))
        return args

    def _kernel(
        self,
        builder: relax.BlockBuilder,
        plan: SparsePlan,
        x_layout: str,
        batch: int,
        *,
        m: int | None = None,
        **extra: Any,
    ) -> relax.GlobalVar:
        """The layer's SpMM kernel: the given one, else the factory's for ``x_layout`` with
        ``m`` columns (default: the layer's), ``extra`` settings (``x_size``) and the plan's
        knobs."""
        layer = plan.layer
        if plan.kernel is not None:
            func = plan.kernel
        else:
            if plan.knobs:
                extra["knobs"] = plan.knobs
            func = self.spmm(
                plan.weight,
                layer.m if m is None else m,
                x_layout=x_layout,
                batch=batch,
                **kernel_fusion(layer),
                target=self.target,
                **extra,
            )
        name = f"sparse_{plan.weight.block[0]}x{plan.weight.block[1]}_{sanitize(layer.name)}"
        return add_kernel(builder, func, name)
