"""What the code generators need to know of a target's machine: vector lanes and cores.

The one place the sparse kernels, the dense CPU schedule rules and :class:`ResolvedTarget`
read them from, so that a kernel and the dense layer next to it are tiled for the same
registers and the same number of threads.
"""

from __future__ import annotations

import tvm
from tvm.target import codegen

# When a target does not say how many cores it has. Every llvm target that resolve_target
# makes carries num-cores (the host's for the x86 presets, the board's for the Arm ones), so
# this is for targets made by hand and for non-CPU targets (cuda), whose SpMM spec, and with
# it the workload key of their tuning records, has always said 2.
DEFAULT_CORES = 2

# The SIMD baseline of a target whose features say nothing wider (SSE2, NEON): 128 bits.
BASELINE_VECTOR_BITS = 128


def vector_bits(target: tvm.target.Target | None) -> int:
    """Bits of the widest vector register of ``target`` (AVX-512 512, AVX/AVX2 256, else 128).

    Read from the target's ``mcpu`` / ``mattr`` through LLVM's feature tables, never from the
    compiling host: ``llvm_get_vector_width`` answers the host's width for any x86 ``mcpu``,
    which would tile a ``haswell`` build for AVX-512 on an AVX-512 workstation.
    """
    if target is None or target.kind.name != "llvm":
        return BASELINE_VECTOR_BITS
    if codegen.target_has_features("avx512f", target):
        return 512
    if codegen.target_has_features("avx2", target) or codegen.target_has_features("avx", target):
        return 256
    return BASELINE_VECTOR_BITS


def vector_lanes(target: tvm.target.Target | None, dtype_bits: int = 32) -> int:
    """Lanes of ``dtype_bits`` in one vector register of ``target`` (float32: 16 on AVX-512,
    8 on AVX2, 4 on NEON, SSE and non-llvm targets); at least 1."""
    return max(vector_bits(target) // dtype_bits, 1)


# LLVM cpus that generate the float32 kernels' code of another: a record tuned on either
# counts for both (cascadelake only adds AVX-512 VNNI, which only the int8 kernels use)
_SAME_FLOAT_CODE = {"cascadelake": "skylake-avx512"}


def machine_key(target: tvm.target.Target | dict | str) -> str:
    """``target`` as tuning records and layer timings compare it: its string, with an ``mcpu``
    that only adds int8 instructions named as the cpu it extends (:data:`_SAME_FLOAT_CODE`)."""
    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    mcpu = str(target.attrs["mcpu"]) if "mcpu" in target.attrs else ""
    if mcpu not in _SAME_FLOAT_CODE:
        return str(target)
    config = dict(target.export())
    config["mcpu"] = _SAME_FLOAT_CODE[mcpu]
    return str(tvm.target.Target(config))


def has_vnni(target: tvm.target.Target | None) -> bool:
    """Whether ``target`` has AVX-512 VNNI (``vpdpbusd``: the int8 x86 kernels)."""
    if target is None or target.kind.name != "llvm":
        return False
    return bool(codegen.target_has_features("avx512vnni", target))


def has_dotprod(target: tvm.target.Target | None) -> bool:
    """Whether ``target`` is aarch64 with the Armv8.2 dot product (``sdot``)."""
    if target is None or target.kind.name != "llvm":
        return False
    triple = str(target.attrs.get("mtriple", ""))
    return triple.startswith("aarch64") and bool(codegen.target_has_features("dotprod", target))


def int8_isa(target: tvm.target.Target | None) -> str | None:
    """The int8 dot-product instruction the int8 kernels use on ``target`` (``"vnni"``,
    ``"sdot"``, ``"avx2"``: x86 without VNNI, 16-bit ``vpmaddwd``, or ``"smlal"``: aarch64
    without dotprod, NEON's widening multiply-adds; ``kernels.spmm_int8.ISAS``), None where
    it has none of them."""
    if has_vnni(target):
        return "vnni"
    if has_dotprod(target):
        return "sdot"
    if target is not None and target.kind.name == "llvm":
        triple = str(target.attrs.get("mtriple", ""))
        if triple.startswith("aarch64"):  # NEON is part of Armv8-A
            return "smlal"
        x86 = not triple or triple.startswith(("x86_64", "i686"))
        if x86 and codegen.target_has_features("avx2", target):
            return "avx2"
    return None


def num_cores(target: tvm.target.Target | None) -> int:
    """The target's ``num-cores``; :data:`DEFAULT_CORES` when it has none (or no target)."""
    if target is not None and "num-cores" in target.attrs:
        return max(1, int(target.attrs["num-cores"]))
    return DEFAULT_CORES


__all__ = [
    "DEFAULT_CORES",
    "has_dotprod",
    "has_vnni",
    "int8_isa",
    "machine_key",
    "num_cores",
    "vector_bits",
    "vector_lanes",
]
