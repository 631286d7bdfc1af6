"""Continue a search after an interruption: the search strategy the tuner wraps its own in.

``tune_tir`` seeds its evolutionary search with the best records of the workload
(``init_measured_ratio`` of the population), but a rerun spends the full trial budget again
and may measure schedules that are already in the database. So
:func:`~sparse_tvm.tuning.tune_kernel.tune_kernel` subtracts the records already measured
from its budget (:func:`~sparse_tvm.tuning.records.measured_records`) and searches with
:class:`ContinueFromRecords`, which trains the cost model on those records and drops
candidates that were measured before.
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy

__all__ = ["ContinueFromRecords"]


@derived_object
class ContinueFromRecords(PySearchStrategy):
    """Wrap a search strategy so that a rerun builds on the records already in the database.

    Before tuning it trains the cost model on the workload's records and remembers their
    schedules; candidates equal to a recorded schedule are dropped instead of measured.
    MetaSchedule's evolutionary search already seeds its population from the database.
    """

    def __init__(self, inner: ms.search_strategy.SearchStrategy):
        self.inner = inner
        self.context = None
        self.seen: set[int] = set()

    def _initialize_with_tune_context(self, context) -> None:
        self.context = context
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(
        self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None
    ):
        self.seen = set()
        if database is not None and database.has_workload(self.context.mod):
            workload = database.commit_workload(self.context.mod)
            records = [r for r in database.get_all_tuning_records() if r.workload.same_as(workload)]
            candidates = []
            for record in records:
                sch = _replay(record)
                if sch is not None:
                    self.seen.add(tvm_ffi.structural_hash(sch.mod))
                    candidates.append(record.as_measure_candidate())
            if cost_model is not None and candidates:
                results = [
                    ms.runner.RunnerResult([float(s) for s in r.run_secs], None) for r in records
                ]
                cost_model.update(self.context, candidates, results[: len(candidates)])
        self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self):
        # The inner strategy remembers what it proposed, so asking again yields new schedules.
        for _ in range(8):
            candidates = self.inner.generate_measure_candidates()
            if candidates is None:
                return None
            fresh = []
            for candidate in candidates:
                shash = tvm_ffi.structural_hash(candidate.sch.mod)
                if shash not in self.seen:
                    self.seen.add(shash)
                    fresh.append(candidate)
            if fresh:
                return fresh
        return None

    def notify_runner_results(self, measure_candidates, results) -> None:
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self):
        return ContinueFromRecords(self.inner.clone())


def _replay(record: ms.database.TuningRecord) -> tvm.s_tir.Schedule | None:
    sch = tvm.s_tir.Schedule(record.workload.mod)
    try:
        record.trace.apply_to_schedule(sch, remove_postproc=False)
    except Exception:  # a trace that no longer replays (e.g. TVM changed) is not a schedule
        return None
    return sch
