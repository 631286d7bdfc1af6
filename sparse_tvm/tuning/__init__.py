"""Auto-tuned sparse schedules: MetaSchedule search spaces of the SpMM kernels.

* :mod:`sparse_tvm.kernels` — the SpMM kernels, with their knobs as parameters;
* :mod:`.space_x86` — the x86 search space (workload, schedule function, builder, mutator,
  cost-model features);
* :mod:`.tune_kernel` — :func:`tune_kernel` for one layer, :func:`lookup_kernel` for the
  compiler (same structure first, else the knobs of the same shapes);
* :mod:`.records` — the records folder (continue after an interruption, export, merge);
* :mod:`.rpc` — measuring on a board through a TVM RPC tracker.
"""

from .tune_kernel import (
    KernelRecord,
    RealSparsityArguments,
    TunedKernel,
    lookup_kernel,
    query_kernel,
    tune_kernel,
)

__all__ = [
    "KernelRecord",
    "RealSparsityArguments",
    "TunedKernel",
    "lookup_kernel",
    "query_kernel",
    "tune_kernel",
]
