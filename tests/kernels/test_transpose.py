"""The register-transposed matrix transpose (tile shuffles, scalar edges) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.kernels.transpose import tile_size, transpose_kernel

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


def run_transpose(a: np.ndarray, lanes: int) -> np.ndarray:
    rows, cols = a.shape
    rt = tvm.compile(transpose_kernel(rows, cols, lanes), TARGET).jit()
    out = tvm.runtime.tensor(np.full(rows * cols, np.nan, np.float32))
    rt["main"](tvm.runtime.tensor(a.ravel()), out)
    return out.numpy().reshape(cols, rows)


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 70),
    cols=st.integers(1, 70),
    lanes=st.sampled_from([4, 8, 16]),
    seed=st.integers(0, 2**16),
)
def test_transpose_random_shapes(rows, cols, lanes, seed):
    """Whole tiles, ragged rows, ragged columns and matrices smaller than one tile."""
    a = np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)
    np.testing.assert_array_equal(run_transpose(a, lanes), a.T)


def test_transpose_conv_activation_shape():
    a = np.random.default_rng(1).standard_normal((3136, 64)).astype(np.float32)
    np.testing.assert_array_equal(run_transpose(a, 16), a.T)


def test_tiles_are_shuffled_in_vectors():
    """The whole tiles compile to vector shuffles, not one scalar move per element."""
    asm = tvm.compile(transpose_kernel(64, 64, 16), TARGET).mod.inspect_source("asm")
    shuffles = [line for line in asm.splitlines() if "zmm" in line and "vperm" in line]
    assert len(shuffles) >= 16


@pytest.mark.parametrize(("lanes", "tile"), [(2, 4), (4, 4), (8, 8), (16, 16), (32, 16)])
def test_tile_size(lanes, tile):
    assert tile_size(lanes) == tile
