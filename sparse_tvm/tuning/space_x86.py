"""MetaSchedule search space of the x86 SpMM kernels.

Why a knob template and not schedule primitives
-----------------------------------------------
The sparse loop (``for b in range(indptr[br], indptr[br + 1])``) has data-dependent bounds, and
the register tile of the fast kernels lives *across* it: ``MT x r`` (rowvec) or ``RP x MV``
(colvec) accumulators are loaded once, updated per nonzero block and stored once. In sblock
form that loop has to sit inside the block (a block iter needs a fixed domain), so ``split``,
``reorder`` and ``cache_write`` can tile only the output loops around it, never put a register
tile inside it; and a ``cache_write`` buffer under a parallel loop becomes a heap workspace per
iteration (see :mod:`sparse_tvm.kernels.spmm`), not registers. So the space works like this:

1. The *workload* is a naive sblock kernel (:func:`workload`): one block per output element,
   the nonzero loop inside. It fixes the signature, the semantics and, through its attributes,
   the tuning key (shapes, fusion, the :func:`~sparse_tvm.tuning.records.structure_digest` of
   the sparsity structure, the space version).
2. The *space function* (:func:`space_fn`) samples every knob with MetaSchedule's sampling
   instructions (``sample_perfect_tile`` on the workload's block-row / row-in-block loop,
   ``sample_categorical`` for the rest) and annotates the sampled values on the root sblock.
   Each knob is thus a decision of the trace: the trace replays, mutates and is stored in the
   database like any other.
3. :func:`materialize` turns the annotated workload into the real kernel: the template of
   :mod:`sparse_tvm.kernels.spmm_rowvec` / ``spmm_colvec`` for the annotated knobs. The builder
   (:class:`MaterializeBuild`) does it before compiling each candidate; the cost model sees the
   knobs through :class:`KnobFeatures`; :class:`MutateKnob` mutates the categorical decisions
   (MetaSchedule's own mutators only touch unroll / parallel / thread-binding samples).

Knobs per strategy: rowvec ``G`` (block rows per group), ``MT``, ``partition``, ``order``,
``unroll``; colvec ``RP``, ``MV``, ``order``, ``unroll``; scalar ``accs`` (partial-sum
registers), ``unroll``. Small layers (:func:`~sparse_tvm.kernels.spmm_unrolled.unroll_eligible`)
add ``unrolled`` (full unroll: straight-line code generated from the structure, which the
workload then carries in its attributes) and ``parts`` (its thread chunks).
"""

from __future__ import annotations

import random

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.script import tirx as T

from ..kernels.spmm import SpmmSpec, choose_strategy, spmm_spec, wrap_kernel
from ..kernels.spmm_colvec import ColvecKnobs, colvec_body
from ..kernels.spmm_rowvec import RowvecKnobs, rowvec_body
from ..kernels.spmm_scalar import ScalarKnobs, scalar_body
from ..kernels.spmm_unrolled import UnrolledKnobs, unroll_eligible, unrolled_body
from .records import structure_digest  # the structure part of the layer key

__all__ = [
    "SPACE_VERSION",
    "KnobFeatures",
    "MaterializeBuild",
    "MutateKnob",
    "default_knobs",
    "knobs_of",
    "make_spec",
    "knobs_fit",
    "materialize",
    "space_fn",
    "spec_of",
    "structure_digest",
    "supports",
    "workload",
]

SPACE_VERSION = "x86-spmm-1"
KNOB_PREFIX = "sparse_tvm.knob."
# Register budget: accumulator tiles stay under 1 KiB (LowerTVMBuiltin keeps smaller "global"
# allocations on the stack where LLVM promotes them to registers) and under 16 vector registers.
_MAX_TILE_FLOATS = 255
_MAX_TILE_VECTORS = 16


make_spec = spmm_spec  # the spec spmm_kernel builds; re-exported for the tuning API


def space_strategy(spec: SpmmSpec) -> str:
    """The kernel the space searches for ``spec``: :func:`choose_strategy`'s, except that a
    CSR matrix-vector layer (the sliced kernel, whose arrays depend on its own layout, no knobs)
    searches the scalar row kernel, on the weight's own arrays; the tuner times the best of
    those against the sliced kernel and the decision keeps the faster."""
    strategy = choose_strategy(spec)
    return "scalar" if strategy == "sliced" else strategy


def supports(spec: SpmmSpec) -> bool:
    """Whether the space covers the strategy :func:`space_strategy` picks for ``spec``."""
    return space_strategy(spec) in ("rowvec", "colvec", "scalar")


# -- workload ------------------------------------------------------------------------------


def workload(spec: SpmmSpec, digest: str) -> tvm.tirx.PrimFunc:
    """The naive sblock SpMM that the space annotates: the tuning task and its key.

    Same parameters as :func:`sparse_tvm.kernels.spmm_kernel`'s kernel. It is correct but slow
    (never built during tuning: :func:`materialize` replaces it).
    """
    n, k, r, c, m = spec.n, spec.k, spec.r, spec.c, spec.m
    nbr, nnzb, batch = spec.block_rows, spec.n_data_blocks, spec.batch
    x_shape, y_shape = spec.x_shape, spec.y_shape
    mk = spec.x_layout == "MK"
    attrs = {
        "tirx.noalias": True,
        "sparse_tvm.space": SPACE_VERSION,
        "sparse_tvm.strategy": space_strategy(spec),
        "sparse_tvm.structure": digest,
        "sparse_tvm.lanes": spec.lanes,
        "sparse_tvm.cores": spec.cores,
        "sparse_tvm.relu": spec.relu,
    }
    if spec.relu6:  # only when set: the records of every other layer keep their workload
        attrs["sparse_tvm.relu6"] = True
    if spec.gelu:
        attrs["sparse_tvm.gelu"] = True
    if unroll_eligible(spec):  # the unrolled kernel is generated from the structure itself
        attrs["sparse_tvm.indptr"] = list(spec.structure[0])
        attrs["sparse_tvm.indices"] = list(spec.structure[1])

    @T.macro
    def element(X, data, indices, indptr, B, Y, bt, i, br, ri):
        # Y[.., row, ..] for output row br * r + ri and activation column i
        with T.sblock("spmm"):
            vb, vi, vbr, vri = T.axis.remap("SSSS", [bt, i, br, ri])
            T.where(br * r + ri < n)
            if mk:
                T.reads(X[vi, 0:k], data[0:nnzb, 0:c, vri], indices[0:nnzb], indptr[vbr : vbr + 2])
                T.writes(Y[vi, vbr * r + vri])
            else:
                T.reads(
                    X[vb, 0:k, vi], data[0:nnzb, 0:c, vri], indices[0:nnzb], indptr[vbr : vbr + 2]
                )
                T.writes(Y[vb, vbr * r + vri, vi])
            acc = T.sblock_alloc_buffer((1,), "float32", scope="local")
            acc[0] = T.float32(0)
            for b in range(indptr[vbr], indptr[vbr + 1]):
                for j in range(c):
                    if indices[b] * c + j < k:
                        if mk:
                            acc[0] = acc[0] + data[b, j, vri] * X[vi, indices[b] * c + j]
                        else:
                            acc[0] = acc[0] + data[b, j, vri] * X[vb, indices[b] * c + j, vi]
            value = T.meta_var(spec.epilogue(acc[0], B, vbr * r + vri))
            if mk:
                Y[vi, vbr * r + vri] = value
            else:
                Y[vb, vbr * r + vri, vi] = value

    @T.macro
    def body(X, data, indices, indptr, B, Y):
        with T.sblock("root"):
            for bt, br, ri, i in T.grid(batch, nbr, r, m):
                element(X, data, indices, indptr, B, Y, bt, i, br, ri)

    d_shape = (nnzb, c, r)
    if spec.bias:

        @T.prim_func(s_tir=True)
        def spmm(
            X: T.Buffer(x_shape, "float32"),
            data: T.Buffer(d_shape, "float32"),
            indices: T.Buffer((nnzb,), "int32"),
            indptr: T.Buffer((nbr + 1,), "int32"),
            bias: T.Buffer((n,), "float32"),
            Y: T.Buffer(y_shape, "float32"),
        ):
            T.func_attr(attrs)
            body(X, data, indices, indptr, bias, Y)

    else:

        @T.prim_func(s_tir=True)
        def spmm(
            X: T.Buffer(x_shape, "float32"),
            data: T.Buffer(d_shape, "float32"),
            indices: T.Buffer((nnzb,), "int32"),
            indptr: T.Buffer((nbr + 1,), "int32"),
            Y: T.Buffer(y_shape, "float32"),
        ):
            T.func_attr(attrs)
            body(X, data, indices, indptr, None, Y)

    return spmm


def spec_of(func: tvm.tirx.PrimFunc) -> SpmmSpec:
    """Recover the :class:`SpmmSpec` from a :func:`workload` (or an annotated copy of it)."""
    params = [[int(v) for v in info.shape] for info in ArgInfo.from_prim_func(func)]
    x_shape, y_shape = params[0], params[-1]
    nnzb, c, r = params[1]
    mk = len(x_shape) == 2
    m, k = (x_shape[0], x_shape[1]) if mk else (x_shape[2], x_shape[1])
    n = y_shape[1]
    structure = None
    if "sparse_tvm.indptr" in func.attrs:
        structure = tuple(
            tuple(int(v) for v in func.attrs[f"sparse_tvm.{name}"])
            for name in ("indptr", "indices")
        )
    return SpmmSpec(
        n=n,
        k=k,
        r=r,
        c=c,
        n_data_blocks=nnzb,
        m=m,
        batch=1 if mk else x_shape[0],
        x_layout="MK" if mk else "KM",
        bias=len(params) == 6,
        relu=bool(func.attrs["sparse_tvm.relu"]),
        relu6="sparse_tvm.relu6" in func.attrs,
        gelu="sparse_tvm.gelu" in func.attrs,
        lanes=int(func.attrs["sparse_tvm.lanes"]),
        cores=int(func.attrs["sparse_tvm.cores"]),
        structure=structure,
    )


# -- knobs ---------------------------------------------------------------------------------


def _mt_choices(spec: SpmmSpec) -> list[int]:
    regs_per_row = -(-spec.r // spec.lanes)
    out = [
        v
        for v in (1, 2, 3, 4, 5, 6, 8, 10, 12, 14, 16)
        if v * regs_per_row <= _MAX_TILE_VECTORS and v * spec.r <= _MAX_TILE_FLOATS
    ]
    fits = [v for v in out if v <= spec.rows]
    return fits or [1]


def _mv_choices(spec: SpmmSpec) -> list[int]:
    vl = spec.lanes
    if spec.m < vl:
        return [spec.m]
    return [vl * v for v in (1, 2, 3, 4, 6, 8) if vl * v <= spec.m] or [vl]


def _parts_choices(spec: SpmmSpec) -> list[int]:
    return [p for p in (1, 2, 4, 8, 16, 32) if p <= spec.cores and p <= spec.block_rows] or [1]


def space_fn(spec: SpmmSpec):
    """The MetaSchedule schedule function of the space: sample the knobs, annotate them.

    Small layers (:func:`~sparse_tvm.kernels.spmm_unrolled.unroll_eligible`) get two more
    knobs, sampled last so that the traces of the other layers stay as they were: ``unrolled``
    (the fully unrolled kernel instead of the strategy's) and its thread ``parts``.
    """
    strategy = space_strategy(spec)

    def fn(sch: tvm.s_tir.Schedule) -> None:
        block = sch.get_sblock("spmm")
        root = sch.get_sblock("root")
        _, br_loop, ri_loop, _ = sch.get_loops(block)

        def categorical(name: str, choices: list[int]) -> None:
            if len(choices) > 1:
                value = sch.sample_categorical(choices, [1.0 / len(choices)] * len(choices))
                sch.annotate(root, KNOB_PREFIX + name, value)
            else:
                sch.annotate(root, KNOB_PREFIX + name, choices[0])

        if strategy == "rowvec":
            # block rows per thread group: a perfect tile of the block-row loop
            _, group = sch.sample_perfect_tile(br_loop, n=2, max_innermost_factor=64)
            sch.annotate(root, KNOB_PREFIX + "G", group)
            categorical("MT", _mt_choices(spec))
            categorical("partition", [0, 1, 2])
            categorical("order", [0, 1])
            categorical("unroll", [1, 2, 4])
        elif strategy == "colvec":
            # output rows per pass: a perfect tile of the row-in-block loop
            _, rp = sch.sample_perfect_tile(ri_loop, n=2, max_innermost_factor=8)
            sch.annotate(root, KNOB_PREFIX + "RP", rp)
            categorical("MV", _mv_choices(spec))
            categorical("order", [0, 1])
            categorical("unroll", [1, 2, 4])
        if strategy == "scalar":
            # partial-sum registers per row (r == 1 only) and unroll of the nonzero loop
            categorical("accs", [1, 2, 4] if spec.r == 1 else [1])
            categorical("unroll", [1, 2, 4])
        if unroll_eligible(spec):
            categorical("unrolled", [0, 1])
            categorical("parts", _parts_choices(spec))

    return fn


def knobs_of(func: tvm.tirx.PrimFunc) -> dict[str, int]:
    """The knob values annotated on the root sblock of an annotated workload."""
    root = func.body.block
    return {
        str(key)[len(KNOB_PREFIX) :]: int(value)
        for key, value in root.annotations.items()
        if str(key).startswith(KNOB_PREFIX)
    }


Knobs = RowvecKnobs | ColvecKnobs | ScalarKnobs | UnrolledKnobs


def _knob_objects(spec: SpmmSpec, knobs: dict[str, int]) -> Knobs:
    """The kernel knobs the annotated values stand for (unrolled kernel first)."""
    if knobs.get("unrolled", 0):
        return UnrolledKnobs(parts=knobs.get("parts", 1))
    return _strategy_knobs(spec, knobs)


def _strategy_knobs(
    spec: SpmmSpec, knobs: dict[str, int]
) -> RowvecKnobs | ColvecKnobs | ScalarKnobs:
    strategy = space_strategy(spec)
    if strategy == "scalar":
        return ScalarKnobs(accs=knobs["accs"], unroll=knobs["unroll"])
    if strategy == "rowvec":
        group = max(1, knobs["G"])
        return RowvecKnobs(
            MT=knobs["MT"],
            NG=-(-spec.block_rows // group),
            partition=knobs["partition"],
            order=knobs["order"],
            unroll=knobs["unroll"],
        )
    rp = knobs["RP"]
    mv = knobs["MV"]
    if rp * mv > _MAX_TILE_FLOATS and mv > spec.lanes:
        mv = max(spec.lanes, _MAX_TILE_FLOATS // rp // spec.lanes * spec.lanes)
    return ColvecKnobs(RP=rp, MV=mv, order=knobs["order"], unroll=knobs["unroll"])


def knobs_fit(spec: SpmmSpec, knobs: dict[str, int]) -> bool:
    """Whether ``knobs`` are knobs of the kernel the space searches for ``spec`` (a record
    tuned when the block count picked another kernel, or before the strategy rules changed,
    has another kernel's knobs)."""
    if knobs.get("unrolled", 0):
        return unroll_eligible(spec)
    return set(_strategy_defaults(spec)) <= set(knobs)


def default_knobs(spec: SpmmSpec) -> dict[str, int]:
    """The knobs of the hand-written kernel (:mod:`sparse_tvm.kernels`): one point of the space.

    Small layers default to the unrolled kernel on one thread, like ``spmm_kernel``."""
    knobs = _strategy_defaults(spec)
    if unroll_eligible(spec):
        knobs.update(unrolled=1, parts=1)
    return knobs


def _strategy_defaults(spec: SpmmSpec) -> dict[str, int]:
    from ..kernels.spmm_colvec import colvec_tiles
    from ..kernels.spmm_rowvec import rowvec_tiles

    if space_strategy(spec) == "rowvec":
        mt, groups = rowvec_tiles(spec)
        return {
            "G": -(-spec.block_rows // groups),
            "MT": mt,
            "partition": 0,
            "order": 0,
            "unroll": 1,
        }
    if space_strategy(spec) == "scalar":
        return {"accs": 1, "unroll": 1}
    rp, mv = colvec_tiles(spec)
    return {"RP": rp, "MV": mv, "order": 0, "unroll": 1}


def materialize(
    func: tvm.tirx.PrimFunc, knobs: dict[str, int] | None = None, spec: SpmmSpec | None = None
) -> tvm.tirx.PrimFunc:
    """The kernel for an annotated workload (or for explicit ``knobs``).

    Returns a kernel with the parameters of :func:`sparse_tvm.kernels.spmm_kernel`'s, marked
    ``tirx.is_scheduled``, no ``global_symbol``.
    """
    spec = spec if spec is not None else spec_of(func)
    knobs = knobs if knobs is not None else knobs_of(func)
    objects = _knob_objects(spec, knobs)
    builders = {
        RowvecKnobs: rowvec_body,
        ColvecKnobs: colvec_body,
        ScalarKnobs: scalar_body,
        UnrolledKnobs: unrolled_body,
    }
    return wrap_kernel(spec, builders[type(objects)](spec, objects))


class MaterializeBuild:
    """``f_build`` of the :class:`~tvm.s_tir.meta_schedule.builder.LocalBuilder`: materialise
    the annotated workload, then build it as the default builder would. Picklable: it runs in
    the builder's worker processes."""

    def __init__(self, spec: SpmmSpec) -> None:
        self.spec = spec

    def __call__(self, mod: tvm.IRModule, target: tvm.target.Target, _params=None):
        func = materialize(mod["main"], spec=self.spec)
        return tvm.tirx.build(
            tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target
        )


# -- search helpers ------------------------------------------------------------------------


@derived_object
class MutateKnob(ms.mutator.PyMutator):
    """Re-draw the decision of one ``SampleCategorical`` instruction of the trace."""

    def _initialize_with_tune_context(self, context) -> None:
        pass

    def apply(self, trace, rand_state):
        rng = random.Random(int(rand_state))
        sites = [
            inst
            for inst in trace.insts
            if inst.kind.name == "SampleCategorical" and len(inst.attrs[0]) > 1
        ]
        if not sites:
            return None
        inst = rng.choice(sites)
        current = int(trace.decisions[inst])
        options = [i for i in range(len(inst.attrs[0])) if i != current]
        return trace.with_decision(inst, rng.choice(options), remove_postproc=True)

    def clone(self):
        return MutateKnob()


@derived_object
class KnobFeatures(ms.feature_extractor.PyFeatureExtractor):
    """Features for the cost model: the effective knob values plus the spec's sizes.

    The per-store features of MetaSchedule see the naive workload (identical for every
    candidate) and cannot read loops with data-dependent bounds; the knobs are what differs.
    """

    def extract_from(self, context, candidates):
        spec = spec_of(context.mod["main"])
        out = []
        for candidate in candidates:
            annotated = knobs_of(candidate.sch.mod["main"])
            knobs = _strategy_knobs(spec, annotated)
            values = [float(v) for v in vars(knobs).values()]
            if isinstance(knobs, RowvecKnobs):
                mt = max(1, min(knobs.MT, spec.rows))
                tiles = -(-spec.rows // mt)
                values += [np.log2(mt), float(tiles * knobs.NG), float(spec.rows % mt)]
            elif isinstance(knobs, ColvecKnobs):
                tiles = -(-spec.m // knobs.MV)
                values += [knobs.RP * knobs.MV / spec.lanes, float(tiles * spec.block_rows)]
            else:
                values += [float(knobs.accs * knobs.unroll)]
            if unroll_eligible(spec):
                values += [float(annotated.get("unrolled", 0)), float(annotated.get("parts", 1))]
            out.append(tvm.runtime.tensor(np.asarray([values], dtype=np.float32)))
        return out
