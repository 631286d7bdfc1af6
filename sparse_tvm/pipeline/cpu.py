"""The Relax compilation pipeline for CPUs: TVM's default phases plus a default schedule.

``tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))`` runs, in order:

1. each attention chain (``Q K^T``, scale, mask, softmax, ``P V`` and the head transposes
   around them) becomes one call of our attention kernel
   (:mod:`sparse_tvm.transform.fused_attention`); float32 exp, erf, tanh, sigmoid, softmax
   and GELU as vectorisable polynomial code
   (:mod:`sparse_tvm.transform.fast_math`: LLVM would call libm per element); library
   dispatch (sort/scan/sampling), as TVM's CPU pipeline does; NCHW depthwise convs
   with constant weights become calls of our own kernel (:mod:`sparse_tvm.transform.depthwise_nchw`),
   and so do NCHW max pools (:mod:`sparse_tvm.transform.max_pool_nchw`);
2. legalize + fuse: ops become TIR, elementwise epilogues fuse into their matmul, residual
   adds into the layer norm after them (already-scheduled kernels are marked opaque so that
   fusion leaves them whole);
3. schedule: each PrimFunc not already scheduled gets the first CPU rule that applies
   (see :mod:`sparse_tvm.pipeline.cpu_rules`); constant weights the matmul rule asks to be
   packed are packed at compile time (``SplitLayoutRewritePreproc`` + ``FoldConstant``);
4. dataflow lowering and finalization (memory planning, VM lowering), as TVM's.

PrimFuncs carrying ``tir.is_scheduled`` / ``tirx.is_scheduled`` (hand-written sparse kernels)
are left exactly as they are.
"""

from __future__ import annotations

import logging

import tvm
from tvm import relax, s_tir, tirx
from tvm.ir import IRModule
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target
from tvm_ffi import structural_equal

from sparse_tvm.kernels.attrs import HAND_WRITTEN_ATTR
from sparse_tvm.pipeline.cpu_rules import default_rules
from sparse_tvm.pipeline.cpu_rules._common import PREPROC_ATTR
from sparse_tvm.pipeline.rule_failures import report_rule_failure
from sparse_tvm.transform.depthwise_nchw import DepthwiseNCHW
from sparse_tvm.transform.fast_math import FastMath
from sparse_tvm.transform.fused_attention import FuseAttention
from sparse_tvm.transform.max_pool_nchw import MaxPoolNCHW
from sparse_tvm.transform.split_reductions import SplitFullReductions

logger = logging.getLogger(__name__)

SCHEDULED_ATTRS = ("tir.is_scheduled", "tirx.is_scheduled")


def is_scheduled(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` says it is already scheduled (and must be left alone)."""
    attrs = func.attrs
    return attrs is not None and any(bool(attrs.get(name, False)) for name in SCHEDULED_ATTRS)


def scheduled_kernels(mod: IRModule) -> list[tirx.PrimFunc]:
    """The PrimFuncs of ``mod`` that say they are already scheduled."""
    return [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc) and is_scheduled(f)]


@tvm.transform.module_pass(opt_level=0, name="ApplyCPUSchedules")
class ApplyCPUSchedules:
    """Give every unscheduled PrimFunc the schedule of the first rule that applies.

    Unlike ``dlight.ApplyDefaultSchedule``, a rule that raises is skipped (the next rule
    is tried), so a bug in a rule costs speed, not the compilation; it is never silent: a
    :class:`~sparse_tvm.pipeline.rule_failures.ScheduleRuleWarning` names the function and
    the rule (an error under ``SPARSE_TVM_STRICT_SCHEDULES=1``, as in the tests).

    Parameters
    ----------
    rules : list of ScheduleRule
        Tried in order; ``None`` from ``apply`` means "not mine" (quietly: debug log only).
    """

    def __init__(self, rules: list[ScheduleRule]) -> None:
        self.rules = list(rules)

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or is_scheduled(func):
                continue
            target = func.attrs.get("target") if func.attrs else None
            target = target or Target.current(allow_none=False)
            sch = self._schedule(func, target, gvar.name_hint)
            if sch is not None:
                updates[gvar] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    def _schedule(self, func: tirx.PrimFunc, target: Target, name: str) -> s_tir.Schedule | None:
        for rule in self.rules:
            try:
                sch = rule.apply(func, target, False)
            except Exception as err:  # noqa: BLE001 - a bug in the rule: say so, try the next
                report_rule_failure(name, type(rule).__name__, err)
                continue
            if sch is not None:
                logger.debug("%s: scheduled by %s", name, type(rule).__name__)
                return sch[0] if isinstance(sch, list) else sch
        logger.debug("%s: no rule applies, left unscheduled", name)
        return None


def _has_inner_blocks(func: tirx.PrimFunc) -> bool:
    """Whether ``func`` is a root sblock with sblocks inside (what schedules work on).

    Hand-written loop-nest kernels carry ``sparse_tvm.hand_written`` (or have no root sblock).
    """
    if not isinstance(func.body, s_tir.SBlockRealize):
        return False
    return not (func.attrs is not None and bool(func.attrs.get(HAND_WRITTEN_ATTR, False)))


def _packs_a_weight(func: tirx.PrimFunc) -> bool:
    """Whether a root-level sblock of ``func`` is a weight pre-packing copy (``PREPROC_ATTR``,
    where the matmul rule leaves it), the only thing ``SplitLayoutRewritePreproc`` changes."""
    body = func.body.block.body
    for stmt in body.seq if isinstance(body, tirx.SeqStmt) else [body]:
        while isinstance(stmt, tirx.For):
            stmt = stmt.body
        if isinstance(stmt, s_tir.SBlockRealize) and PREPROC_ATTR in stmt.block.annotations:
            return True
    return False


@tvm.transform.module_pass(opt_level=0, name="SplitWeightPrepack")
def split_weight_prepack(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """``SplitLayoutRewritePreproc`` on the functions that pre-pack a weight only.

    TVM's pass asserts that every PrimFunc has a root sblock with blocks inside; hand-written
    loop-nest kernels have at most an empty root, and the legalized CumSum and TopK are loops
    under the root with no sblock, so everything without a packing copy is set aside.
    """
    aside = {
        gvar: func
        for gvar, func in mod.functions_items()
        if isinstance(func, tirx.PrimFunc)
        and not (_has_inner_blocks(func) and _packs_a_weight(func))
    }
    if not aside:
        return relax.transform.SplitLayoutRewritePreproc()(mod)
    rest = IRModule(
        {gvar: func for gvar, func in mod.functions_items() if gvar not in aside},
        attrs=mod.attrs,
    )
    rest = relax.transform.SplitLayoutRewritePreproc()(rest)
    for gvar, func in aside.items():
        rest[gvar] = func
    return rest


OPAQUE_PATTERN = 8  # relax.OpPatternKind.kOpaque: FuseOps never fuses it


@tvm.transform.module_pass(opt_level=0, name="KeepScheduledKernelsUnfused")
def keep_scheduled_kernels_unfused(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Mark scheduled kernels opaque so that ``FuseOps``/``FuseTIR`` leave them whole."""
    for gvar, func in list(mod.functions_items()):
        if (
            isinstance(func, tirx.PrimFunc)
            and is_scheduled(func)
            and "op_pattern" not in func.attrs
        ):
            mod[gvar] = func.with_attr("op_pattern", OPAQUE_PATTERN)
    return mod


REDUCE_PATTERN = 3  # relax.OpPatternKind.kCommReduce: injective producers fuse into it
NORMS = ("layer_norm", "rms_norm")  # the names LegalizeOps gives these ops' PrimFuncs


@tvm.transform.module_pass(opt_level=0, name="NormsTakeTheirInputs")
def norms_take_their_inputs(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
    """Mark the legalized layer / RMS norms as reductions, so that ``FuseOps`` fuses the
    elementwise ops that only they read into them: a transformer's residual add (skip + layer
    norm, one pass over the rows instead of two).

    ``AnnotateTIROpPattern`` calls them "out-elementwise fusable" (like a matmul), which takes
    ops after it only; the :class:`~sparse_tvm.pipeline.cpu_rules.row_reduction.RowReduction`
    rule schedules the fused function, the add inlined into the row reads.
    """
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, tirx.PrimFunc) and gvar.name_hint.startswith(NORMS):
            mod[gvar] = func.with_attr("op_pattern", REDUCE_PATTERN)
    return mod


def restore_scheduled_kernels(originals: list[tirx.PrimFunc]) -> tvm.transform.Pass:
    """Give back the exact definitions of ``originals`` (attributes added on the way dropped).

    ``keep_scheduled_kernels_unfused`` and ``AttachAttrLayoutFreeBuffers`` add attributes (the
    latter also renames); the kernels leave the schedule phase as they came in.
    """

    def _strip(func: tirx.PrimFunc, original: tirx.PrimFunc) -> tirx.PrimFunc:
        for key in list(func.attrs.keys()):
            if key not in original.attrs:
                func = func.without_attr(key)
        return func

    @tvm.transform.module_pass(opt_level=0, name="RestoreScheduledKernels")
    def _restore(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        for gvar, func in list(mod.functions_items()):
            if not isinstance(func, tirx.PrimFunc) or not is_scheduled(func):
                continue
            for original in originals:
                if structural_equal(_strip(func, original), original):
                    mod[gvar] = original
                    break
        return mod

    return _restore


def legalize_passes(target: Target) -> list[tvm.transform.Pass]:
    """TVM's CPU legalize + fuse phase, with scheduled kernels kept out of fusion."""
    del target
    return [
        relax.transform.LegalizeOps(),
        keep_scheduled_kernels_unfused,
        relax.transform.AnnotateTIROpPattern(),
        norms_take_their_inputs,
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def schedule_passes(
    target: Target, originals: list[tirx.PrimFunc] | None = None
) -> list[tvm.transform.Pass]:
    """Mark constant weights, schedule every PrimFunc, then pre-pack the weights.

    ``originals`` are the already-scheduled kernels of the input module, restored at the end.
    """
    return [
        relax.transform.AttachAttrLayoutFreeBuffers(),
        ApplyCPUSchedules(default_rules(target)),
        split_weight_prepack,
        relax.transform.FoldConstant(),
        relax.transform.DeadCodeElimination(),
        restore_scheduled_kernels(originals or []),
    ]


def cpu_pipeline(target: Target) -> tvm.transform.Pass:
    """Relax pipeline for ``tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))``.

    Parameters
    ----------
    target : tvm.target.Target
        An ``llvm`` target; its ``mcpu`` / ``mattr`` set the vector width the rules use
        (:func:`sparse_tvm.target.machine.vector_lanes`); the parallel loops run on TVM's
        thread pool (``TVM_NUM_THREADS``).

    Returns
    -------
    tvm.transform.Pass
        A module pass running dispatch, legalize/fuse, schedule and finalize phases.
    """

    @tvm.transform.module_pass(opt_level=0, name="SparseTVMCPUPipeline")
    def _pipeline(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        originals = scheduled_kernels(mod)
        with target:
            seq = tvm.transform.Sequential(
                [FuseAttention(target), FastMath(), SplitFullReductions()]
                + cpu_generic.library_dispatch_passes(target)
                + [DepthwiseNCHW(target), MaxPoolNCHW(target)]
                + legalize_passes(target)
                + schedule_passes(target, originals)
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return seq(mod)

    return _pipeline
