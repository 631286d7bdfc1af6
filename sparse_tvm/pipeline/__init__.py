"""Compilation pipelines: Relax pass sequences that end in a runnable executable."""

from sparse_tvm.pipeline.cpu import ApplyCPUSchedules, cpu_pipeline
from sparse_tvm.pipeline.rule_failures import ScheduleRuleWarning

__all__ = ["ApplyCPUSchedules", "ScheduleRuleWarning", "cpu_pipeline"]
