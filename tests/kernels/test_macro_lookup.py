"""TVMScript macros find their parser by walking frames: the same kernels as TVM's lookup."""

from __future__ import annotations

import pytest
import tvm
from tvm.script.parser.core.parser import ScriptMacro

import sparse_tvm  # noqa: F401 - installs the lookup
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels import macro_lookup, spmm_kernel
from tests.conftest import RUN_TARGET, sparse_array

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)


def _kernels():
    """Kernels whose TVMScript calls macros (row-vector, column-vector with K panels, scalar)."""
    return [
        spmm_kernel(BlockSparseWeight.from_dense(sparse_array((64, 96), 1, 0.2), (16, 1)), 40,
                    target=TARGET, bias=True, relu=True),
        spmm_kernel(BlockSparseWeight.from_dense(sparse_array((48, 512), 2, 0.1), (1, 1)), 64,
                    target=TARGET),
        spmm_kernel(BlockSparseWeight.from_dense(sparse_array((32, 32), 3, 0.3), (1, 1)), 1,
                    target=TARGET),
    ]  # fmt: skip


def test_the_package_installs_the_frame_walk():
    assert ScriptMacro._find_parser_def is macro_lookup._find_parser_def
    macro_lookup.install_fast_macro_lookup()  # idempotent
    assert ScriptMacro._find_parser_def is macro_lookup._find_parser_def


def test_kernels_equal_those_built_with_tvms_lookup(monkeypatch):
    ours = _kernels()
    monkeypatch.setattr(ScriptMacro, "_find_parser_def", macro_lookup.TVM_FIND_PARSER_DEF)
    theirs = _kernels()
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        tvm.ir.assert_structural_equal(a, b)


def test_a_macro_outside_any_parser_says_so():
    with pytest.raises(RuntimeError, match=f"^{ScriptMacro.parser_object_name} not available$"):
        macro_lookup._find_parser_def(None)
