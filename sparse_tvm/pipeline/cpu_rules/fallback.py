"""Last resort: parallelize the outermost data-parallel loop of every block that has one."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target


class Fallback(ScheduleRule):
    """Parallel outer loops, nothing more; ``None`` when no loop can be parallelized."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        try:
            blocks = sch.get_child_blocks(get_root_block(sch))
        except Exception:  # noqa: BLE001 - functions without a root sblock are unschedulable
            return None
        changed = False
        for block in blocks:
            loops = sch.get_loops(block)
            if not loops:
                continue
            try:
                sch.parallel(loops[0])
            except Exception:  # noqa: BLE001 - a reduction or opaque outer loop: keep it serial
                continue
            changed = True
        return sch if changed else None
