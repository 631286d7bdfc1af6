"""What the host CPU really is: the LLVM cpu name its vector extensions allow, and its cores.

TVM 0.27's bundled LLVM refuses ``mcpu=native``, so the x86 preset reads ``/proc/cpuinfo``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

# Checked in order: the first whose flags the host has all of wins. cascadelake is
# skylake-avx512 with AVX-512 VNNI (``vpdpbusd``, the int8 kernels' instruction): the same
# float32 code, so tuned records of one count for the other (``machine.machine_key``).
_AVX512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"}
X86_LEVELS = (
    ("cascadelake", _AVX512 | {"avx512_vnni"}),
    ("skylake-avx512", _AVX512),
    ("haswell", {"avx2", "fma", "bmi2"}),
    ("sandybridge", {"avx"}),
    ("x86-64", set()),
)


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The feature flags of the first processor in ``/proc/cpuinfo`` (empty if unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def host_x86_mcpu(flags: frozenset[str] | None = None) -> str:
    """The most capable LLVM x86 cpu name whose required flags the host has."""
    flags = cpu_flags() if flags is None else flags
    for mcpu, needed in X86_LEVELS:
        if needed <= flags:
            return mcpu
    return "x86-64"


def host_num_cores() -> int:
    """Cores this process may run on (respects affinity masks and containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
