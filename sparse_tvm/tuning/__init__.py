"""Auto-tuned sparse schedules: MetaSchedule search spaces of the SpMM kernels.

* :mod:`sparse_tvm.kernels` — the SpMM kernels, with their knobs as parameters;
* :mod:`.space_x86` — the x86 search space (workload, schedule function, builder, mutator,
  cost-model features);
* :mod:`.tune_kernel` — :func:`tune_kernel` for one layer, :func:`query_kernel` for the compiler.
"""

from .tune_kernel import RealSparsityArguments, TunedKernel, query_kernel, tune_kernel

__all__ = ["RealSparsityArguments", "TunedKernel", "query_kernel", "tune_kernel"]
