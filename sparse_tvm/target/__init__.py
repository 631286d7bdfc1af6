"""Where a target is described: presets from ``targets/`` and host CPU detection."""

from sparse_tvm.target.host_cpu import host_num_cores, host_x86_mcpu
from sparse_tvm.target.presets import Preset, ResolvedTarget, presets, resolve_target

__all__ = [
    "Preset",
    "ResolvedTarget",
    "presets",
    "resolve_target",
    "host_num_cores",
    "host_x86_mcpu",
]
