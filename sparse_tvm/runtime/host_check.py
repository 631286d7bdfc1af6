"""Whether code built for a target can run on this machine, and where to run it if not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# platform.machine() names of the architectures sparse-tvm builds for, by LLVM triple prefix
_MACHINES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64")}
_FAMILY_ARCH = {"x86": "x86_64", "arm": "aarch64"}


def _describe(target: Mapping[str, Any], arch: str) -> str:
    tvm_dict = target.get("tvm", {})
    parts = [f"preset {target['name']}"] if target.get("name") not in (None, "custom") else []
    if tvm_dict.get("mtriple"):
        parts.append(f"triple {tvm_dict['mtriple']}")
    if tvm_dict.get("mcpu"):
        parts.append(f"cpu {tvm_dict['mcpu']}")
    return f"{arch} ({', '.join(parts)})" if parts else arch


def host_mismatch(target: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why code built for ``target`` (``CompiledModel.target``) cannot run on this machine.

    Returns ``(what, advice)``: ``what`` completes "built for ..." (architecture, preset,
    triple, and this machine), ``advice`` says where to run it; ``None`` when it can run here
    or when nothing is known (a CUDA build, a target without a known architecture).
    """
    import platform

    from sparse_tvm.target.host_cpu import X86_LEVELS, cpu_flags

    tvm_dict = target.get("tvm", {})
    if tvm_dict.get("kind") != "llvm":  # GPU code runs where a GPU is; c code is a project
        return None
    triple = str(tvm_dict.get("mtriple", ""))
    arch = triple.split("-")[0] if triple else _FAMILY_ARCH.get(str(target.get("family")))
    machine = platform.machine().lower()
    if arch not in _MACHINES:
        return None
    if machine not in _MACHINES[arch]:
        if arch == "aarch64":
            advice = "run it on the board with run_artefact.py (README: Arm boards)"
        else:
            advice = f"run it on an {arch} machine, or recompile it for this one"
        return f"{_describe(target, arch)}, not this {machine} machine", advice
    needed = dict(X86_LEVELS).get(str(tvm_dict.get("mcpu", ""))) if arch == "x86_64" else None
    flags = cpu_flags()
    if needed and flags and not needed <= flags:  # e.g. AVX-512 code on an AVX2 machine
        lacking = ", ".join(sorted(needed - flags))
        return (
            f"{_describe(target, arch)}, and this CPU lacks {lacking}",
            "recompile it here with --target x86 (or x86-avx2 for any AVX2 machine)",
        )
    return None
