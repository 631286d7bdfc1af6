"""Building tuning candidates for a board of another architecture (aarch64 from an x86 host).

MetaSchedule's :class:`~tvm.s_tir.meta_schedule.builder.LocalBuilder` compiles a candidate with
``f_build`` and writes it with ``f_export``. Its default export is a ``.tar`` of object files
that the RPC server links on the board with the board's own ``gcc``; a board with only the TVM
runtime (what the README asks for) has none. :class:`CrossExport` links the shared library on
the host with the cross compiler instead, so the board only loads it.

Both functions run in the builder's worker processes: :class:`CrossExport` is a picklable
object, like :class:`~sparse_tvm.tuning.space_x86.MaterializeBuild`.
"""

from __future__ import annotations

import os
import tempfile

import tvm
from tvm.support import cc

__all__ = ["CrossExport", "export_shared"]


def export_shared(module, path: str | os.PathLike, cross_compiler: str | None) -> str:
    """Write ``module`` (a runtime module or an Executable) as a shared library at ``path``,
    linked with ``cross_compiler`` (``None``: the host's compiler)."""
    path = os.fspath(path)
    fcompile = cc.cross_compiler(cross_compiler) if cross_compiler else cc.create_shared
    module.export_library(path, fcompile=fcompile)
    return path


class CrossExport:
    """``f_export`` of the LocalBuilder: link the candidate into a ``.so`` with ``compiler``.

    Each candidate gets its own temporary folder (MetaSchedule removes it after measuring).
    """

    def __init__(self, compiler: str) -> None:
        self.compiler = compiler

    def __call__(self, mod: tvm.runtime.Module) -> str:
        folder = tempfile.mkdtemp(prefix="sparse_tvm_cross_")
        return export_shared(mod, os.path.join(folder, "candidate.so"), self.compiler)
