"""Kernels as plain C functions of data pointers (sparse_tvm/micro/c_functions.py), built
with the host's C compiler and called through ctypes against numpy."""

import ctypes
import subprocess

import numpy as np
import tvm
from tvm.script import tirx as T

from sparse_tvm.micro.c_functions import compile_plain_c
from sparse_tvm.micro.emit import kernel_prototypes, kernels_c, template
from sparse_tvm.micro.lower import C_TARGET_CONFIG, Program
from tests.micro.conftest import needs_host_cc

N = 256


@T.prim_func
def scale_reverse(x: T.Buffer((N,), "float32"), w: T.Buffer((N,), "int8"), y: T.Buffer((N,), "float32")):  # fmt: skip
    t = T.alloc_buffer((N,), "float32")  # large: a workspace, not the stack
    for i in range(N):
        t[i] = x[i] * T.Cast("float32", w[i])
    for i in range(N):
        y[i] = t[N - 1 - i] + T.float32(1)


@T.prim_func
def add_one(x: T.Buffer((N,), "int32"), y: T.Buffer((N,), "int32")):
    for i in range(N):
        y[i] = x[i] + 1


# the allocator model.c writes, reduced to one slice of memory; a limit of 0 makes it fail
# (linked -Bsymbolic: the TVM runtime in this process exports the same names)
ALLOCATOR = """
static unsigned char room[4096] __attribute__((aligned(16)));
static unsigned long used, limit = sizeof(room);
void set_limit(unsigned long n) { limit = n; used = 0; }
void *TVMBackendAllocWorkspace(int t, int d, uint64_t n, int c, int b) {
  if (used + n > limit) return NULL;
  used += n;
  return room + used - n;
}
int TVMBackendFreeWorkspace(int t, int d, void *p) { used = (unsigned char *)p - room; return 0; }
"""


def _source() -> str:
    functions = {"m_scale_reverse": scale_reverse, "m_add_one": add_one}
    with tvm.transform.PassContext(opt_level=3, config=C_TARGET_CONFIG):
        return compile_plain_c(functions)


def test_kernels_are_plain_c_functions_of_typed_pointers():
    source = _source()
    assert kernel_prototypes(source) == {
        "m_scale_reverse": "int32_t m_scale_reverse(float* x, int8_t* w, float* y)",
        "m_add_one": "int32_t m_add_one(int32_t* x, int32_t* y)",
    }
    for packed in ("TVMFFIAny", "DLTensor", "__tvm_ffi_main", "args"):
        assert packed not in source
    assert "TVMBackendAllocWorkspace(1, 0, (uint64_t)1024ULL" in source


def test_one_kernel_alone_gets_no_packed_entry_wrapper():
    with tvm.transform.PassContext(opt_level=3, config=C_TARGET_CONFIG):
        source = compile_plain_c({"m_add_one": add_one})
    assert list(kernel_prototypes(source)) == ["m_add_one"]
    assert "__tvm_ffi_main" not in source


@needs_host_cc
def test_kernels_compute_as_numpy_and_report_a_failed_workspace(tmp_path):
    program = Program([], [], [], [], [], [], kernel_source=_source())
    (tmp_path / "sparse_tvm_micro.h").write_text(template("sparse_tvm_micro.h"))
    (tmp_path / "k.c").write_text(
        '#include "sparse_tvm_micro.h"\n' + ALLOCATOR + kernels_c(program, "m")
    )
    library = tmp_path / "k.so"
    subprocess.run(
        [
            "cc",
            "-O2",
            "-shared",
            "-fPIC",
            "-Wl,-Bsymbolic",
            "-DSPARSE_TVM_HOST",
            "k.c",
            "-o",
            str(library),
            "-lm",
        ],
        cwd=tmp_path,
        check=True,
    )
    lib = ctypes.CDLL(str(library))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(N).astype(np.float32)
    w = rng.integers(-128, 128, N).astype(np.int8)
    y = np.zeros(N, np.float32)
    ptr = np.ctypeslib.as_ctypes

    assert lib.m_scale_reverse(ptr(x), ptr(w), ptr(y)) == 0
    np.testing.assert_array_equal(y, (x * w.astype(np.float32))[::-1] + 1)
    i = rng.integers(-1000, 1000, N).astype(np.int32)
    j = np.zeros(N, np.int32)
    assert lib.m_add_one(ptr(i), ptr(j)) == 0
    np.testing.assert_array_equal(j, i + 1)

    lib.set_limit(ctypes.c_ulong(0))  # no workspace left: the kernel says so, writes nothing
    y[:] = 7
    assert lib.m_scale_reverse(ptr(x), ptr(w), ptr(y)) == -1
    assert (y == 7).all()
