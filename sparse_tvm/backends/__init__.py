"""One back end per target family: :class:`~sparse_tvm.backends.base.Backend`.

``backend_for(target)`` is the one place that turns a resolved target into the object the
compiler asks everything target-specific of. Adding a target family is one new module here
(a :class:`Backend` subclass) plus its preset in ``targets/`` (see docs/architecture.md).
"""

from __future__ import annotations

from sparse_tvm.backends.arm import ArmBackend
from sparse_tvm.backends.base import Backend
from sparse_tvm.backends.cuda import CudaBackend
from sparse_tvm.backends.micro import MicroBackend
from sparse_tvm.backends.x86 import X86Backend
from sparse_tvm.errors import TargetError
from sparse_tvm.target import ResolvedTarget, resolve_target

BACKENDS: dict[str, type[Backend]] = {
    cls.family: cls for cls in (X86Backend, ArmBackend, CudaBackend, MicroBackend)
}


def backend_for(target: str | dict | ResolvedTarget) -> Backend:
    """The back end of a target (a preset name, TVM target JSON, or a resolved target)."""
    resolved = resolve_target(target)
    cls = BACKENDS.get(resolved.family)
    if cls is None:
        raise TargetError(
            f"target family '{resolved.family}' ({resolved.name}) is not supported by this "
            "release: use an x86, Arm (aarch64, rpi4), CUDA (cuda, cuda-sm90) or Cortex-M preset"
        )
    return cls(resolved)


__all__ = [
    "BACKENDS",
    "ArmBackend",
    "Backend",
    "CudaBackend",
    "MicroBackend",
    "X86Backend",
    "backend_for",
]
