"""A schedule for the dense TIR functions on a microcontroller: one core, no vectors, little RAM.

Legalized and fused Relax operators come out as a chain of full-size stages (pad, reduction,
bias add, ReLU), each a buffer of the whole tensor: on a microcontroller those buffers are RAM
the device may not have, and every extra pass over a tensor costs instructions. The schedule
only removes them; the loops stay serial and in TOPI's order:

1. inline the injective producers (padding, transposes) into their consumers;
2. for a reduction, initialise the accumulator outside the reduction loops and compute the
   epilogue (bias, ReLU) right after each output element, so the intermediate shrinks to one
   element that the C compiler keeps in a register.

A step that does not apply is skipped: the function is still correct, just larger.
"""

from __future__ import annotations

import tvm
from tvm import s_tir
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial


def _try(action, *args) -> bool:
    try:
        action(*args)
        return True
    except Exception:  # a schedule primitive that does not apply raises ScheduleError
        return False


def micro_schedule(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """``func`` with its intermediate buffers inlined or shrunk (see module doc)."""
    if func.attrs is not None and "tirx.is_scheduled" in func.attrs:
        return func
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if infos is None:
        return func
    infos = try_inline_contiguous_spatial(sch, infos)
    for position, info in enumerate(infos):
        if not info.is_reduction():
            continue
        kinds = info.dom_kind()
        n_spatial = len(kinds) - len(kinds.lstrip("S"))
        if n_spatial == 0 or "S" in kinds[n_spatial:]:
            continue
        anchor = info.iters[n_spatial - 1].loop_rv
        attached = 0
        for consumer in infos[position + 1 :]:
            if not consumer.is_injective():
                break
            if not _try(sch.reverse_compute_at, consumer.block_rv, anchor):
                break
            attached += 1
        if attached == 0 and _writes_param(sch, info.block_rv):
            # accumulate in a local, stored once: the C compiler cannot keep an element of
            # an output pointer in a register (the input may alias it)
            _try(_local_accumulator, sch, info.block_rv, anchor)
        if n_spatial < len(kinds):
            _try(sch.decompose_reduction, info.block_rv, info.iters[n_spatial].loop_rv)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _writes_param(sch: s_tir.Schedule, block) -> bool:
    """Whether ``block`` writes one of the function's parameters."""
    params = sch.mod["main"].params
    return any(
        any(region.source.same_as(param) for param in params) for region in sch.get(block).writes
    )


def _local_accumulator(sch: s_tir.Schedule, block, anchor) -> None:
    written = sch.cache_write(block, 0, "global")  # small: on the C stack
    sch.reverse_compute_at(written, anchor)
