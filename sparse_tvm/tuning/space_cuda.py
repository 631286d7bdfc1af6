"""MetaSchedule search space of the CUDA SpMM kernel (:mod:`sparse_tvm.kernels.cuda.spmm`).

It works like the x86 space (:mod:`sparse_tvm.tuning.space_x86`, whose module docstring says
why the knobs are a template and not schedule primitives): the task is the same naive sblock
:func:`~sparse_tvm.tuning.space_x86.workload`, marked with this space's version so that a
record of one space never answers a query of the other; :func:`space_fn` samples every knob of
:class:`~sparse_tvm.kernels.cuda.CudaKnobs` with MetaSchedule's sampling instructions and
annotates it on the root sblock; :func:`materialize` generates the thread-bound kernel from the
annotated knobs, and :class:`MaterializeBuild` is the builder that does it for each candidate.

Knobs and how they are sampled:

``threads`` (``sample_categorical`` 32 to 512) and ``TM`` (threads along m, powers of two
up to the m tile that the activations fill) give ``TR = threads / TM`` threads along the block
rows; ``VM`` columns per thread (1, 2, 4 within 64 accumulators); ``G`` row groups from
``sample_perfect_tile`` of the workload's block-row loop (``G`` groups of about
``block_rows / G`` rows, balanced by nonzeros on the device); ``smem`` (stage the m tile of X in
shared memory; dropped when it does not fit), ``order`` (what a warp spans), ``unroll``.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..formats.block_sparse import BlockSparseWeight
from ..kernels.cuda.spmm import (
    MAX_ACCUMULATORS,
    CudaKnobs,
    _pow2_at_least,
    cuda_spmm_body,
    default_cuda_knobs,
    smem_fits,
)
from ..kernels.spmm import SpmmSpec, wrap_kernel
from .records import structure_digest
from .space_x86 import (
    KNOB_PREFIX,
    MutateKnob,
    knobs_of,
    make_spec,
    spec_of,
)
from .space_x86 import MaterializeBuild as X86MaterializeBuild
from .space_x86 import workload as x86_workload

__all__ = [
    "SPACE_VERSION",
    "CudaKnobFeatures",
    "MaterializeBuild",
    "MutateKnob",
    "cuda_knobs",
    "default_knobs",
    "design_space",
    "make_spec",
    "materialize",
    "sample_knobs",
    "space_fn",
    "workload",
]

SPACE_VERSION = "cuda-spmm-1"
THREAD_CHOICES = (32, 64, 128, 256, 512)


def workload(weight: BlockSparseWeight, spec: SpmmSpec) -> tvm.tirx.PrimFunc:
    """The tuning task of a layer on a GPU: the naive workload, keyed by this space (the layer
    key's fields in its IR and attributes, the structure as
    :func:`~sparse_tvm.tuning.records.structure_digest`)."""
    func = x86_workload(spec, structure_digest(weight))
    return func.with_attr("sparse_tvm.space", SPACE_VERSION).with_attr(
        "sparse_tvm.strategy", "cuda"
    )


def _tm_choices(spec: SpmmSpec) -> list[int]:
    return [v for v in (1, 2, 4, 8, 16, 32) if v <= _pow2_at_least(spec.m)]


def _vm_choices(spec: SpmmSpec) -> list[int]:
    return [v for v in (1, 2, 4) if spec.r * v <= MAX_ACCUMULATORS and v <= spec.m] or [1]


def space_fn(spec: SpmmSpec):
    """The MetaSchedule schedule function: sample the knobs, annotate them on the root sblock."""

    def fn(sch: tvm.s_tir.Schedule) -> None:
        block = sch.get_sblock("spmm")
        root = sch.get_sblock("root")
        _, br_loop, _, _ = sch.get_loops(block)

        # block rows per row group: a perfect tile of the block-row loop
        _, rows = sch.sample_perfect_tile(br_loop, n=2, max_innermost_factor=64)
        sch.annotate(root, KNOB_PREFIX + "rows", rows)
        knobs = {
            "threads": list(THREAD_CHOICES),
            "TM": _tm_choices(spec),
            "VM": _vm_choices(spec),
            "smem": [0, 1] if smem_fits(spec, 1) else [0],
            "order": [0, 1],
            "unroll": [1, 2, 4],
        }
        for name, choices in knobs.items():
            uniform = [1.0 / len(choices)] * len(choices)
            value = sch.sample_categorical(choices, uniform) if len(choices) > 1 else choices[0]
            sch.annotate(root, KNOB_PREFIX + name, value)

    return fn


def cuda_knobs(spec: SpmmSpec, knobs: dict[str, int]) -> CudaKnobs:
    """The kernel knobs for sampled values (made valid: smem only where the tile fits)."""
    tm = knobs["TM"]
    vm = knobs["VM"]
    tr = max(1, knobs["threads"] // tm)
    groups = max(1, -(-spec.block_rows // max(1, knobs["rows"])))
    smem = int(bool(knobs["smem"]) and smem_fits(spec, tm * vm))
    return CudaKnobs(
        TM=tm, TR=tr, VM=vm, G=groups, smem=smem, order=knobs["order"], unroll=knobs["unroll"]
    )


def default_knobs(spec: SpmmSpec) -> dict[str, int]:
    """The sampled-knob values of the hand-picked kernel (one point of the space)."""
    d = default_cuda_knobs(spec)
    return {
        "rows": -(-spec.block_rows // d.G),
        "threads": d.threads,
        "TM": d.TM,
        "VM": d.VM,
        "smem": d.smem,
        "order": d.order,
        "unroll": d.unroll,
    }


def materialize(
    func: tvm.tirx.PrimFunc,
    knobs: dict[str, int] | None = None,
    spec: SpmmSpec | None = None,
    *,
    emulate: bool = False,
) -> tvm.tirx.PrimFunc:
    """The CUDA kernel for an annotated workload (or for explicit ``knobs``).

    Parameters and attributes as :func:`sparse_tvm.kernels.cuda.cuda_spmm_kernel`'s result;
    ``emulate`` gives its CPU twin.
    """
    spec = spec if spec is not None else spec_of(func)
    knobs = knobs if knobs is not None else knobs_of(func)
    return wrap_kernel(spec, cuda_spmm_body(spec, cuda_knobs(spec, knobs), emulate=emulate))


def design_space(spec: SpmmSpec) -> ms.space_generator.ScheduleFn:
    """The space generator of a tuning context (no default rules: the knobs are the space)."""
    return ms.space_generator.ScheduleFn(
        space_fn(spec),
        sch_rules=[],
        postprocs=[],
        mutator_probs={MutateKnob(): 1.0},
    )


def sample_knobs(func: tvm.tirx.PrimFunc, seed: int) -> tvm.tirx.PrimFunc:
    """Apply the space function to the workload once with a seeded random state: one
    candidate of the space, as the search draws it (the annotated workload)."""
    spec = spec_of(func)
    # spread the seeds: the schedule's LCG draws alike first values for neighbouring seeds
    spread = (int(seed) * 2654435761) % 2147483646 + 1
    sch = tvm.s_tir.Schedule(tvm.IRModule({"main": func}), seed=spread)
    space_fn(spec)(sch)
    return sch.mod["main"]


class MaterializeBuild(X86MaterializeBuild):
    """``f_build`` of the :class:`~tvm.s_tir.meta_schedule.builder.LocalBuilder`: materialise
    the annotated workload into the CUDA kernel, then build it for the GPU. Picklable."""

    def __call__(self, mod: tvm.IRModule, target: tvm.target.Target, _params=None):
        func = materialize(mod["main"], spec=self.spec).with_attr("global_symbol", "main")
        return tvm.tirx.build(tvm.IRModule({"main": func}), target)


@derived_object
class CudaKnobFeatures(ms.feature_extractor.PyFeatureExtractor):
    """Cost-model features: the effective knobs plus the work per thread and per block."""

    def extract_from(self, context, candidates):
        spec = spec_of(context.mod["main"])
        nnz = spec.n_data_blocks * spec.r * spec.c
        out = []
        for candidate in candidates:
            k = cuda_knobs(spec, knobs_of(candidate.sch.mod["main"]))
            tiles = -(-spec.m // k.m_tile) * spec.batch
            values = [float(v) for v in vars(k).values()] + [
                np.log2(k.threads),
                float(tiles * k.G),  # thread blocks
                nnz * k.m_tile / (k.G * k.threads),  # multiply-adds per thread
                float(spec.k * k.m_tile * k.smem),  # staged floats per block
            ]
            out.append(tvm.runtime.tensor(np.asarray([values], dtype=np.float32)))
        return out
