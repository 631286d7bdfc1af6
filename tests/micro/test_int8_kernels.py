"""The Cortex-M int8 SpMM kernel (sparse_tvm.micro.int8_kernels) built by the host's C
compiler (the plain-C ``stvm_*`` helpers) and called through ctypes: exact integer sums
against numpy, for the index encodings and group sizes, deltas of 128 and more included (a
group's deltas are read as one word and split by bytes)."""

import ctypes
import subprocess

import numpy as np
import pytest
import tvm

from sparse_tvm.micro.c_functions import compile_plain_c
from sparse_tvm.micro.emit import kernels_c, template
from sparse_tvm.micro.int8_kernels import MicroInt8Spec, micro_int8_kernel, pack_blob
from sparse_tvm.micro.int8_weight import sparse_int8
from sparse_tvm.micro.lower import C_TARGET_CONFIG, Program
from tests.micro.conftest import needs_host_cc


def _weight(n: int, k: int, r: int, columns: list[int], seed: int) -> np.ndarray:
    """int8 (n, k) with r x 1 blocks at ``columns`` (shifted per block row), values in
    [-128, 127]."""
    rng = np.random.default_rng(seed)
    w = np.zeros((n, k), np.int8)
    for br in range(n // r):
        for c in columns:
            w[br * r : (br + 1) * r, (c + 7 * br) % k] = rng.integers(-128, 128, r)
    return w


@needs_host_cc
@pytest.mark.parametrize(
    ("r", "k", "columns", "encoding"),
    [
        (1, 700, [3, 200, 390, 600, 610, 650, 699], "delta8"),  # groups of 4, deltas >= 128
        (4, 700, [5, 200, 390, 600], "delta8"),  # groups of 2 (one 16-bit word)
        (4, 200, [0, 130, 199], "col8"),
        (2, 64, [1, 2, 40], "col8"),
    ],
)
def test_int8_kernel_sums_exactly_for_every_index_encoding(tmp_path, r, k, columns, encoding):
    n, m = 8, 3
    w = _weight(n, k, r, columns, seed=r)
    weight = sparse_int8(w, r)
    assert weight.encoding == encoding
    spec = MicroInt8Spec(m, correction=False)  # float32 out: float(sum) * scale, exact
    scale = np.random.default_rng(1).uniform(0.5, 2, n).astype(np.float32)
    arrays = {"data": weight.data, "scale": scale, "bias": None, "tail_bias": None}
    arrays |= {"indices": weight.indices, "indptr": weight.indptr}
    blob = pack_blob(weight, spec, arrays)
    with tvm.transform.PassContext(opt_level=3, config=C_TARGET_CONFIG):
        source = compile_plain_c({"m_spmm": micro_int8_kernel(weight, spec)})
    program = Program([], [], [], [], [], [], kernel_source=source)
    (tmp_path / "sparse_tvm_micro.h").write_text(template("sparse_tvm_micro.h"))
    (tmp_path / "k.c").write_text('#include "sparse_tvm_micro.h"\n' + kernels_c(program, "m"))
    library = tmp_path / "k.so"
    subprocess.run(
        ["cc", "-O2", "-shared", "-fPIC", "-DSPARSE_TVM_HOST", "k.c", "-o", str(library), "-lm"],
        cwd=tmp_path,
        check=True,
    )
    x = np.random.default_rng(2).integers(0, 256, (m, k)).astype(np.uint8)
    y = np.zeros((m, n), np.float32)
    ptr = np.ctypeslib.as_ctypes
    assert ctypes.CDLL(str(library)).m_spmm(ptr(x), ptr(blob), ptr(y)) == 0
    sums = x.astype(np.int64) @ w.astype(np.int64).T
    np.testing.assert_array_equal(y, sums.astype(np.float32) * scale)
