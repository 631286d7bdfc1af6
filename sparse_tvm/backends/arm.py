"""The Arm back end (aarch64 Linux, NEON / dotprod): cross-compiled on an x86 host, where its
code cannot be timed (the cost model decides, or board timings from tuning over RPC); on an
aarch64 host timed and tuned like x86. Artefacts run on the board (:mod:`sparse_tvm.arm`)."""

from __future__ import annotations

from sparse_tvm.backends.cpu import CPUBackend


class ArmBackend(CPUBackend):
    family = "arm"
    host_machines = ("aarch64", "arm64")
    shipped_records = "arm.json"


__all__ = ["ArmBackend"]
