"""Compilation pipelines: Relax pass sequences that end in a runnable executable."""

from sparse_tvm.pipeline.cpu import ApplyCPUSchedules, cpu_pipeline

__all__ = ["ApplyCPUSchedules", "cpu_pipeline"]
