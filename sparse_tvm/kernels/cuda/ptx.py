"""Compile-only checks of generated CUDA code, for machines without a GPU (CI).

:func:`cuda_source` finds the CUDA C that ``tvm.compile`` put in a built module (a kernel's, or
a whole model's VM executable: the CUDA module sits in the import tree); :func:`check_ptx`
compiles it with nvcc to PTX (``tvm.support.nvcc.compile_cuda``) and assembles the PTX with
``ptxas`` for one architecture, returning the kernels' resource usage as ptxas reports it
(registers, spills, shared memory). Both tools come from the CUDA toolkit; :func:`toolkit`
says what is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import tvm

from sparse_tvm.errors import CompileError

CUDA_PATH = "/usr/local/cuda"

__all__ = ["KernelUsage", "check_ptx", "cuda_source", "toolkit"]


@dataclass(frozen=True)
class KernelUsage:
    """One kernel's resources as ``ptxas -v`` reports them."""

    name: str
    registers: int
    spill_bytes: int
    shared_bytes: int


def toolkit() -> str | None:
    """``None`` when nvcc and ptxas are on PATH, else a sentence saying what is missing."""
    missing = [tool for tool in ("nvcc", "ptxas") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found on PATH (install the CUDA toolkit)"
    return None


def _modules(module):
    yield module
    for child in module.imports:
        yield from _modules(child)


def cuda_source(built) -> str:
    """The CUDA C of a ``tvm.compile`` result (``Executable``) or runtime module."""
    module = built.mod if hasattr(built, "mod") else built
    sources = [m.inspect_source() for m in _modules(module) if m.kind == "cuda"]
    if not sources:
        raise ValueError("the module holds no CUDA code")
    return "\n".join(sources)


_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_USAGE = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores")
_SMEM = re.compile(r"(\d+) bytes smem")


def check_ptx(source: str, arch: str = "sm_80") -> list[KernelUsage]:
    """Compile ``source`` with nvcc to PTX for ``arch`` and assemble it with ptxas.

    Raises :class:`~sparse_tvm.errors.CompileError` with ptxas's message when it rejects the
    PTX (nvcc's own failure comes as TVM reports it). Returns one
    :class:`KernelUsage` per ``__global__`` kernel.
    """
    from tvm.support import nvcc

    os.environ.setdefault("CUDA_PATH", CUDA_PATH)  # else TVM looks for libdevice elsewhere
    with tvm.target.Target({"kind": "cuda", "arch": arch}):
        ptx = nvcc.compile_cuda(source, target_format="ptx", arch=arch, compiler="nvcc")
    with tempfile.TemporaryDirectory(prefix="sparse-tvm-ptx-") as work:
        path = os.path.join(work, "kernels.ptx")
        with open(path, "wb") as out:
            out.write(bytes(ptx))
        done = subprocess.run(
            ["ptxas", f"-arch={arch}", "-v", path, "-o", os.path.join(work, "kernels.cubin")],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise CompileError(f"ptxas -arch={arch} failed: {' '.join(done.stderr.split())[:300]}")
    usages = []
    parts = _ENTRY.split(done.stderr)
    for name, text in zip(parts[1::2], parts[2::2]):
        regs, spill, smem = _USAGE.search(text), _SPILL.search(text), _SMEM.search(text)
        usages.append(
            KernelUsage(
                name=name,
                registers=int(regs.group(1)) if regs else 0,
                spill_bytes=int(spill.group(1)) if spill else 0,
                shared_bytes=int(smem.group(1)) if smem else 0,
            )
        )
    return usages
