"""The register-transposed matrix transpose (tile shuffles, scalar edges) against numpy."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm.script import tirx as T

from sparse_tvm.kernels.transpose import (
    tile_size,
    transpose_block_macro,
    transpose_kernel,
    transpose_rows_macro,
)
from tests.conftest import RUN_TARGET

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)
AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


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
    asm = tvm.compile(transpose_kernel(64, 64, 16), AVX512).mod.inspect_source("asm")
    shuffles = [line for line in asm.splitlines() if "zmm" in line and "vperm" in line]
    assert len(shuffles) >= 16


@pytest.mark.parametrize(("lanes", "tile"), [(2, 4), (4, 4), (8, 8), (16, 16), (32, 16)])
def test_tile_size(lanes, tile):
    assert tile_size(lanes) == tile


def rows_kernel(rows: int, cols: int, row0: int, count: int, base: int, lanes: int):
    """``B`` (flat, ``base`` + ``cols x rows``) gets rows ``row0 : row0 + count`` of ``A`` (flat
    ``rows x cols``) as its columns, from element ``base`` on."""
    transpose_rows = transpose_rows_macro(lanes)

    @T.prim_func
    def kernel(
        A: T.Buffer((rows * cols,), "float32"), B: T.Buffer((base + cols * rows,), "float32")
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        transpose_rows(A, B, row0, count, rows, cols, base)

    return kernel


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 70),
    cols=st.integers(1, 40),
    lanes=st.sampled_from([4, 16]),
    base=st.sampled_from([0, 5, 64]),
    data=st.data(),
)
def test_transpose_rows_writes_only_its_rows(rows, cols, lanes, base, data):
    """The rows one thread of a kernel computed, transposed into their columns of the output
    (at an offset: a thread's own copy): whole tiles and ragged edges right, the rest of the
    output untouched."""
    row0 = data.draw(st.integers(0, rows - 1))
    count = data.draw(st.integers(0, rows - row0))
    a = np.random.default_rng(rows * cols).standard_normal((rows, cols)).astype(np.float32)
    rt = tvm.compile(rows_kernel(rows, cols, row0, count, base, lanes), TARGET).jit()
    out = tvm.runtime.tensor(np.full(base + rows * cols, np.nan, np.float32))
    rt["main"](tvm.runtime.tensor(a.ravel()), out)
    got = out.numpy()
    assert np.isnan(got[:base]).all()
    got = got[base:].reshape(cols, rows)
    want = np.full((cols, rows), np.nan, np.float32)
    want[:, row0 : row0 + count] = a[row0 : row0 + count].T
    np.testing.assert_array_equal(got, want)


def block_kernel(rows, cols, row0, nrows, col0, ncols, lanes):
    transpose_block = transpose_block_macro(lanes)

    @T.prim_func
    def kernel(A: T.Buffer((rows * cols,), "float32"), B: T.Buffer((cols * rows,), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        transpose_block(A, B, row0, nrows, col0, ncols, rows, cols, 0, 0)

    return kernel


@settings(max_examples=20, deadline=None)
@given(
    rows=st.integers(1, 50), cols=st.integers(1, 50), lanes=st.sampled_from([4, 16]), data=st.data()
)
def test_transpose_block_writes_only_its_block(rows, cols, lanes, data):
    """One thread's tile of a kernel's output (rows and columns off the tile grid) transposed;
    the rest of the output untouched."""
    row0 = data.draw(st.integers(0, rows - 1))
    nrows = data.draw(st.integers(0, rows - row0))
    col0 = data.draw(st.integers(0, cols - 1))
    ncols = data.draw(st.integers(0, cols - col0))
    a = np.random.default_rng(rows + cols).standard_normal((rows, cols)).astype(np.float32)
    kernel = block_kernel(rows, cols, row0, nrows, col0, ncols, lanes)
    rt = tvm.compile(kernel, TARGET).jit()
    out = tvm.runtime.tensor(np.full(rows * cols, np.nan, np.float32))
    rt["main"](tvm.runtime.tensor(a.ravel()), out)
    want = np.full((cols, rows), np.nan, np.float32)
    want[col0 : col0 + ncols, row0 : row0 + nrows] = a[row0 : row0 + nrows, col0 : col0 + ncols].T
    np.testing.assert_array_equal(out.numpy().reshape(cols, rows), want)
