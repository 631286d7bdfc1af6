"""What a transformed ``main`` calls: the tests of the rewriting passes read it from here."""

from __future__ import annotations

import tvm
from tvm import relax


def called_ops(func: relax.Function) -> list[str]:
    """The operators ``func`` calls and the kernels it calls through ``call_tir``, post order."""
    names = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            names.append(expr.op.name)
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            names.append(expr.args[0].name_hint)

    relax.analysis.post_order_visit(func, visit)
    return names
