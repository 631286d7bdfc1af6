"""The one query of tuned kernels, for every search space and target.

"The best record of this workload for this target, else (when asked) the best record of a
workload with the same shapes": :func:`find_record` answers it with the knob values of that
record. The spaces' wrappers materialise the kernel from the knobs:
:func:`~sparse_tvm.tuning.tune_kernel.lookup_kernel` (x86 / Arm, with the same-shapes fallback)
and :func:`~sparse_tvm.tuning.tune_cuda.lookup_cuda_kernel` (CUDA, exact only).

The float spaces tune the same naive workload (:func:`~sparse_tvm.tuning.space_x86.workload`), with
the knobs annotated on its root sblock (:func:`~sparse_tvm.tuning.space_x86.knobs_of`), so the
query needs no space of its own: the workload's ``sparse_tvm.space`` attribute keeps one
space's records from answering for the other. The int8 space (:mod:`.space_int8`) annotates
its knobs the same way on a workload of its own, keyed by its spec.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms

from ..target.machine import machine_key
from .space_int8 import is_int8_workload, shapes_key
from .space_x86 import knobs_of, spec_of

__all__ = ["FoundRecord", "find_record"]

_SPACE_ATTR = "sparse_tvm.space"


@dataclass(frozen=True)
class FoundRecord:
    """What :func:`find_record` found: the knobs of a record and how it was measured."""

    knobs: dict[str, int]
    latency_s: float | None  # mean of the record's run times while tuning
    exact: bool  # a record of this very workload (sparsity structure), not only the shapes


def find_record(
    database: ms.database.Database,
    mod: tvm.IRModule,
    target: tvm.target.Target,
    *,
    same_shapes: bool = False,
) -> FoundRecord | None:
    """The best record of the workload ``mod["main"]`` for ``target``, else None.

    With ``same_shapes``, a workload without a record of its own takes the best record on
    ``target`` of a workload of the same space with the same shapes, block, layout, fusion and
    machine (the knobs do not depend on where the nonzeros are); ``exact`` is then False.
    """
    record = database.query_tuning_record(mod, target, workload_name="main")
    exact = record is not None
    if record is None and same_shapes:
        record = _same_shapes_record(database, mod["main"], target)
    if record is None:
        return None
    sch = tvm.s_tir.Schedule(record.workload.mod)  # what query_schedule would replay
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    secs = [float(v) for v in record.run_secs] if record.run_secs else []
    return FoundRecord(
        knobs=knobs_of(sch.mod["main"]),
        latency_s=float(np.mean(secs)) if secs else None,
        exact=exact,
    )


def _same_shapes_record(
    database: ms.database.Database, func: tvm.tirx.PrimFunc, target: tvm.target.Target
) -> ms.database.TuningRecord | None:
    spec = _shapes(func)
    target_str = machine_key(target)
    for candidate in database.get_all_tuning_records():  # best first (JSONDatabase sorts)
        if machine_key(candidate.target) != target_str or not candidate.run_secs:
            continue
        try:
            other = _shapes(candidate.workload.mod["main"])
        except Exception:  # noqa: BLE001 - a record of some other kind of workload
            continue
        if other == spec:
            return candidate
    return None


def _shapes(func: tvm.tirx.PrimFunc) -> tuple[str, object]:
    """What a record must share to lend its knobs: the space and the spec but the block count."""
    if is_int8_workload(func):
        return shapes_key(func)
    return str(func.attrs[_SPACE_ATTR]), dataclasses.replace(spec_of(func), n_data_blocks=0)
