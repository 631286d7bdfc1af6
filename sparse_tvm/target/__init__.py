"""Where a target is described: presets from ``targets/``, host CPU detection, and the
vector lanes and cores the code generators read from a target."""

from sparse_tvm.target.host_cpu import host_num_cores, host_x86_mcpu
from sparse_tvm.target.machine import num_cores, vector_lanes
from sparse_tvm.target.presets import (
    Preset,
    ResolvedTarget,
    preset_names,
    presets,
    resolve_target,
)

__all__ = [
    "Preset",
    "ResolvedTarget",
    "preset_names",
    "presets",
    "resolve_target",
    "host_num_cores",
    "host_x86_mcpu",
    "num_cores",
    "vector_lanes",
]
