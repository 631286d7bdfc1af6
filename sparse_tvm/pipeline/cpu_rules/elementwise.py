"""Elementwise and injective functions (add, erf, transpose/reshape copies): one fused loop
nest, parallel over the outer part and vectorized along the output's innermost axis."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from ._common import inline_injective, schedule_injective_stage


class Elementwise(ScheduleRule):
    """Inline every injective block into the output; fuse, parallelize and vectorize it."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = inline_injective(sch)
        if not infos or not all(info.is_injective() for info in infos):
            return None
        for info in infos:
            schedule_injective_stage(sch, info.block_rv, target)
        return sch
