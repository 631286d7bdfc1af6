"""MetaSchedule search space of the int8 16x4-block kernel (:mod:`sparse_tvm.kernels.spmm_int8`).

It works like the float space (:mod:`.space_x86`, whose module doc says why a knob template
and not schedule primitives): the *workload* (:func:`workload`) states the kernel's signature
and, through its attributes, the tuning key (the spec as JSON, the sparsity structure's
digest, the space version); the *space function* samples the knobs with
``sample_categorical`` and annotates them on the root sblock; :func:`materialize` turns the
annotated workload into :func:`~sparse_tvm.kernels.spmm_int8.int8_spmm_kernel` with those
knobs, in the builder (:class:`MaterializeBuild`); :class:`KnobFeatures` gives the cost model
the knobs and the sizes they act on. The workload's body is a stand-in (every output element
one sblock reading its correction): it is never built, only keyed and annotated.

Knobs: ``m_tile`` (rows of X a task keeps in accumulator registers: from 1 to what the ISA's
register file holds) and ``order`` (tasks block row by block row, or tile by tile of X).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.script import tirx as T

from ..kernels.spmm_int8 import (
    ISAS,
    LANES,
    QUAD,
    Int8Blocks,
    Int8Spec,
    Int8Tail,
    int8_spmm_kernel,
    weight_layout,
)
from .records import blocks_digest
from .space_x86 import KNOB_PREFIX, MutateKnob, knobs_of

__all__ = [
    "SPACE_VERSION",
    "Int8Arguments",
    "KnobFeatures",
    "MaterializeBuild",
    "MutateKnob",  # the float space's: re-draws one categorical knob
    "default_knobs",
    "is_int8_workload",
    "materialize",
    "shapes_key",
    "space_fn",
    "spec_of",
    "workload",
]

SPACE_VERSION = "int8-spmm-1"
_SPEC_ATTR = "sparse_tvm.int8"
# accumulator rows a task may keep per ISA: registers of 16 int32 lanes each (VNNI: one zmm,
# sdot / smlal: four q registers, AVX2: two ymm), with room for the weights and X's broadcast
_M_TILES = {
    "vnni": (1, 2, 4, 6, 8, 12, 16),
    "sdot": (1, 2, 3, 4, 6),
    "smlal": (1, 2, 3, 4, 6),
    "avx2": (1, 2, 3, 4, 6),
}


def _spec_json(spec: Int8Spec) -> str:
    """The spec without its knobs, as the workload's key attribute."""
    fields = dataclasses.asdict(dataclasses.replace(spec, m_tile=None, order=0))
    return json.dumps(fields, sort_keys=True)


def spec_of(func: tvm.tirx.PrimFunc) -> Int8Spec:
    """The :class:`Int8Spec` of a :func:`workload` (or an annotated copy), knobs at default."""
    fields = json.loads(str(func.attrs[_SPEC_ATTR]))
    tail = fields.pop("tail")
    if tail is not None:
        requant = tail.pop("requant")
        tail = Int8Tail(**tail, requant=None if requant is None else tuple(requant))
    return Int8Spec(**fields, tail=tail)


def is_int8_workload(func: tvm.tirx.PrimFunc) -> bool:
    """Whether ``func`` is a workload of this space."""
    return _SPEC_ATTR in func.attrs


def shapes_key(func: tvm.tirx.PrimFunc) -> tuple[str, Int8Spec]:
    """What a record must share to lend its knobs to another layer: the space and the spec
    but the block count (the knobs do not depend on where the nonzero blocks are)."""
    return str(func.attrs["sparse_tvm.space"]), dataclasses.replace(spec_of(func), blocks=0)


def workload(spec: Int8Spec, blocks: Int8Blocks, cores: int) -> tvm.tirx.PrimFunc:
    """The tuning task of ``spec``'s kernel on ``blocks``' structure (module doc)."""
    n, k, m = spec.n, spec.k, spec.m
    n_data = max(spec.blocks, 1) * LANES * (2 if ISAS[spec.isa].pairs else 1)
    n_blocks, block_rows = max(spec.blocks, 1), n // LANES
    x_dtype = "int16" if ISAS[spec.isa].x_wide else "int8" if spec.x_signed else "uint8"
    out_dtype = spec.out_dtype
    digest = blocks_digest((n, k), (LANES, QUAD), blocks.indptr, blocks.indices[: spec.blocks])
    attrs = {
        "tirx.noalias": True,
        "sparse_tvm.space": SPACE_VERSION,
        "sparse_tvm.structure": digest,
        "sparse_tvm.cores": cores,
        _SPEC_ATTR: _spec_json(spec),
    }

    @T.prim_func(s_tir=True)
    def spmm_int8(
        X: T.Buffer((m, k), x_dtype),
        data: T.Buffer((n_data,), "int32"),
        indices: T.Buffer((n_blocks,), "int32"),
        indptr: T.Buffer((block_rows + 1,), "int32"),
        correction: T.Buffer((n,), "int32"),
        scale: T.Buffer((n,), "float32"),
        bias: T.Buffer((n,), "float32"),
        tail_bias: T.Buffer((n,), "float32"),
        Y: T.Buffer((m, n), out_dtype),
    ):
        T.func_attr(attrs)
        with T.sblock("root"):
            for i, j in T.grid(m, n):
                with T.sblock("spmm"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    T.reads(correction[vj])
                    T.writes(Y[vi, vj])
                    Y[vi, vj] = T.Cast(out_dtype, correction[vj])

    return spmm_int8


def _m_tiles(spec: Int8Spec) -> list[int]:
    return [t for t in _M_TILES[spec.isa] if t <= spec.m] or [1]


def default_knobs(spec: Int8Spec) -> dict[str, int]:
    """The hand-written kernel's knobs: the ISA's tile (clamped to ``m``), order 0."""
    return {"m_tile": max(1, min(ISAS[spec.isa].m_tile, spec.m)), "order": 0}


def space_fn(spec: Int8Spec):
    """The MetaSchedule schedule function: sample ``m_tile`` and ``order``, annotate them."""
    choices = {"m_tile": _m_tiles(spec), "order": [0, 1]}

    def fn(sch: tvm.s_tir.Schedule) -> None:
        root = sch.get_sblock("root")
        for name, values in choices.items():
            if len(values) > 1:
                value = sch.sample_categorical(values, [1.0 / len(values)] * len(values))
                sch.annotate(root, KNOB_PREFIX + name, value)
            else:
                sch.annotate(root, KNOB_PREFIX + name, values[0])

    return fn


def materialize(
    func: tvm.tirx.PrimFunc, knobs: dict[str, int] | None = None, spec: Int8Spec | None = None
) -> tvm.tirx.PrimFunc:
    """The int8 kernel for an annotated workload (or for explicit ``knobs``)."""
    spec = spec if spec is not None else spec_of(func)
    knobs = knobs if knobs is not None else knobs_of(func)
    tuned = dataclasses.replace(spec, m_tile=int(knobs["m_tile"]), order=int(knobs["order"]))
    return int8_spmm_kernel(tuned)


class MaterializeBuild:
    """``f_build`` of the LocalBuilder: materialise the annotated workload, then build it.
    Picklable: it runs in the builder's worker processes."""

    def __init__(self, spec: Int8Spec) -> None:
        self.spec = spec

    def __call__(self, mod: tvm.IRModule, target: tvm.target.Target, _params=None):
        func = materialize(mod["main"], spec=self.spec)
        return tvm.tirx.build(
            tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target
        )


class Int8Arguments:
    """``f_alloc_argument`` of the runners: the layer's real blocks (in the ISA's layout),
    indices and block pointers; random 8-bit activations; unit scales, zero corrections and
    biases. Picklable."""

    def __init__(self, blocks: Int8Blocks, spec: Int8Spec, seed: int = 0) -> None:
        self.fixed = {
            1: weight_layout(spec.isa, blocks.data),
            2: np.ascontiguousarray(blocks.indices, np.int32),
            3: np.ascontiguousarray(blocks.indptr, np.int32),
        }
        self.seed = seed

    def __call__(self, device, args_info, alloc_repeat: int) -> list[list]:
        return [
            [tvm.runtime.tensor(a, device=device) for a in self.arrays(args_info)]
            for _ in range(alloc_repeat)
        ]

    def arrays(self, args_info) -> list[np.ndarray]:
        """The arguments as numpy arrays (``args_info``: ``("TENSOR", dtype, shape)`` each)."""
        rng = np.random.default_rng(self.seed)
        out = []
        for index, (_, dtype, shape) in enumerate(args_info):
            shape = tuple(int(v) for v in shape)
            if index in self.fixed:
                out.append(self.fixed[index])
            elif index == 0:  # X: 8-bit values (widened to int16 for AVX2)
                low, high = (-128, 127) if dtype == "int8" else (0, 255)
                out.append(rng.integers(low, high + 1, shape).astype(dtype))
            elif index == 5:  # scale: outputs in range
                out.append(np.full(shape, 1e-3, dtype))
            else:
                out.append(np.zeros(shape, dtype))
        return out


@derived_object
class KnobFeatures(ms.feature_extractor.PyFeatureExtractor):
    """Features for the cost model: the knobs and what they act on (tiles, tasks per core,
    the rows of the last tile, blocks per block row)."""

    def extract_from(self, context, candidates):
        func = context.mod["main"]
        spec = spec_of(func)
        cores = max(1, int(func.attrs["sparse_tvm.cores"]))
        block_rows = spec.n // LANES
        out = []
        for candidate in candidates:
            knobs = knobs_of(candidate.sch.mod["main"])
            mt = max(1, min(int(knobs["m_tile"]), spec.m))
            tiles = -(-spec.m // mt)
            values = [
                float(mt),
                float(knobs["order"]),
                float(tiles),
                float(block_rows * tiles) / cores,
                float(spec.m % mt),
                float(spec.blocks) / max(1, block_rows),
                float(spec.m),
            ]
            out.append(tvm.runtime.tensor(np.asarray([values], dtype=np.float32)))
        return out
