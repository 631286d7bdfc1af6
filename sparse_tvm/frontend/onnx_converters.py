"""Our replacements for TVM ONNX converters that block later passes, used during the import.

``Clip`` (ReLU6): TVM's converter always emits two ``call_tir`` of TOPI kernels (maximum,
minimum), which no Relax pass sees through: ``ConvertLayout`` puts a transpose back to NCHW
around each one, so a MobileNet-v2 in NHWC would transpose its activations at every ReLU6. With
constant bounds we emit ``relax.op.maximum`` / ``minimum`` with scalar constants instead:
elementwise ops that follow their input's layout and fuse into the conv before them. A NaN
bound means "no bound" (ONNX), as in TVM's converter.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import tvm
from tvm import relax
from tvm.relax.frontend.onnx import onnx_frontend


def _bound(expr, dtype: str) -> relax.Expr | None:
    """A scalar constant bound, None for no bound (absent or NaN); raises if not constant."""
    if expr is None:
        return None
    if not isinstance(expr, tvm.ir.expr.GenericConst):
        raise TypeError("not a constant")
    value = expr.value.numpy()
    if value.size != 1:
        raise TypeError("not a scalar")
    value = value.reshape(())
    return None if np.isnan(value) else relax.const(value.astype(dtype), dtype)


def _clip(bb: relax.BlockBuilder, x: relax.Expr, low, high) -> relax.Expr:
    if low is not None:
        x = bb.normalize(relax.op.maximum(x, low))
    if high is not None:
        x = bb.normalize(relax.op.minimum(x, high))
    return x


class ConstantBoundClip(onnx_frontend.Clip):
    """``Clip`` with constant bounds as ``maximum`` / ``minimum``; TVM's converter otherwise."""

    @classmethod
    def _impl_v1(cls, bb, inputs, attr, params):
        dtype = str(inputs[0].ty.dtype)
        low, high = float(attr.get("min", -np.inf)), float(attr.get("max", np.inf))
        low = None if np.isinf(low) else relax.const(np.array(low, dtype), dtype)
        high = None if np.isinf(high) else relax.const(np.array(high, dtype), dtype)
        return _clip(bb, inputs[0], low, high)

    @classmethod
    def _impl_v13(cls, bb, inputs, attr, params):
        x = inputs[0]
        dtype = str(x.ty.dtype)
        bounds = list(inputs[1:3]) + [None] * (3 - len(inputs))
        try:
            low, high = (_bound(b, dtype) for b in bounds[:2])
        except TypeError:
            return super()._impl_v13(bb, inputs, attr, params)
        return _clip(bb, x, low, high)

    @classmethod
    def _impl_v11(cls, bb, inputs, attr, params):
        return cls._impl_v13(bb, inputs, attr, params)


REPLACED = {"Clip": ConstantBoundClip}


@contextmanager
def our_converters() -> Iterator[None]:
    """TVM's ONNX importer with :data:`REPLACED` in its converter table, for the ``with``."""
    original = onnx_frontend._get_convert_map

    def table():
        converters = dict(original())
        converters.update(REPLACED)
        return converters

    onnx_frontend._get_convert_map = table
    try:
        yield
    finally:
        onnx_frontend._get_convert_map = original


__all__ = ["ConstantBoundClip", "our_converters"]
