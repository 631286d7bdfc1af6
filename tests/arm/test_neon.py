"""The sparse kernels built for aarch64 have NEON fmla (4 x float32) in their loops."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from sparse_tvm.arm.neon import loop_bodies, neon_fmla_in_loops
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels.spmm import SpmmSpec, choose_strategy, spmm_kernel
from sparse_tvm.target import resolve_target


def _weight(block, sparsity=0.9, shape=(128, 256)):
    # big enough for the loop kernels (small layers get straight-line code, no loops)
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) < sparsity] = 0
    return BlockSparseWeight.from_dense(w, block)


def _asm(weight, m, layout, target):
    func = spmm_kernel(weight, m, x_layout=layout, target=target).with_attr("global_symbol", "k")
    return tvm.compile(func, target=target).mod.inspect_source("asm")


CASES = [  # (block, m, layout, strategy)
    ((4, 1), 16, "MK", "rowvec"),
    ((16, 1), 1, "MK", "rowvec"),
    ((1, 1), 16, "KM", "colvec"),
    ((1, 4), 32, "KM", "colvec"),
]


@pytest.mark.parametrize("preset", ["aarch64", "rpi4"])
@pytest.mark.parametrize(("block", "m", "layout", "strategy"), CASES)
def test_inner_loops_use_neon_fmla(preset, block, m, layout, strategy):
    target = resolve_target(preset).tvm_target
    weight = _weight(block)
    spec = SpmmSpec(128, 256, *block, int(weight.data.shape[0]), m, 1, layout, False, False, 4, 4)
    assert choose_strategy(spec) == strategy
    asm = _asm(weight, m, layout, target)
    assert neon_fmla_in_loops(asm) >= 1, "no fmla v.4s inside a loop"
    # 4-lane tiles: no wider-than-NEON vectors, and no x86 in the output
    assert not re.search(r"\b(vfmadd|ymm|zmm)\w*", asm)


def test_loop_detection_on_a_hand_written_loop():
    asm = "\n".join(
        [
            "k:",
            "\tmov\tx8, xzr",
            ".LBB0_1:",
            "\tldr\tq0, [x1, x8]",
            "\tfmla\tv1.4s, v0.4s, v2.s[0]",
            "\tadd\tx8, x8, #16",
            "\tcmp\tx8, #64",
            "\tb.ne\t.LBB0_1",
            "\tfmla\tv3.4s, v0.4s, v2.4s",
            "\tret",
        ]
    )
    assert len(loop_bodies(asm)) == 1
    assert neon_fmla_in_loops(asm) == 1  # the fmla after the loop does not count
