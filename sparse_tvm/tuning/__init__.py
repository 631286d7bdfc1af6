"""Auto-tuned sparse schedules: MetaSchedule search spaces of the SpMM kernels.

* :mod:`sparse_tvm.kernels` — the SpMM kernels, with their knobs as parameters;
* :mod:`.space_x86` — the x86 search space (workload, schedule function, builder, mutator,
  cost-model features);
* :mod:`.space_cuda` — the CUDA search space, :mod:`.tune_cuda` its tuner and lookup;
* :mod:`.tune_kernel` — :func:`tune_kernel` for one layer, :func:`lookup_kernel` for the
  compiler (same structure first, else the knobs of the same shapes);
* :mod:`.search` — continuing an interrupted search;
* :mod:`.lookup` — the one query of tuned records that both lookups wrap;
* :mod:`.records` — storage: the records folder (torn-line repair, the one-writer lock,
  export, merge), the layer key, the board's layer timings;
* :mod:`.rpc` — measuring on a board through a TVM RPC tracker.
"""

from .tune_kernel import (
    KernelRecord,
    RealSparsityArguments,
    TunedKernel,
    lookup_kernel,
    tune_kernel,
)

__all__ = [
    "KernelRecord",
    "RealSparsityArguments",
    "TunedKernel",
    "lookup_kernel",
    "tune_kernel",
]
