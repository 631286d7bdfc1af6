"""The one progress line of ``sparse-tvm tune``: trials done, best so far, time left."""

from __future__ import annotations

from sparse_tvm.driver.tune_progress import TuneProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_counts_trials_of_the_whole_run_and_estimates_the_time_left():
    clock = Clock()
    progress = TuneProgress(kernels=4, trials=10, clock=clock)
    assert progress.line(1, "fc1", "bsr 16x1", 0, None) == (
        "[1/4] fc1 bsr 16x1: 0/10 trials, best - | 0/40 in all, time left unknown yet"
    )
    clock.now += 20.0  # 5 trials in 20 s: 35 left at 4 s each
    assert progress.line(1, "fc1", "bsr 16x1", 5, 27.14e-6) == (
        "[1/4] fc1 bsr 16x1: 5/10 trials, best 27.1 us | 5/40 in all, about 2 min 20 s left"
    )
    progress.next_kernel()
    clock.now += 20.0  # 10 + 10 trials in 40 s: 20 left at 2 s each
    assert progress.line(2, "fc2", "csr", 10, 1e-3).endswith(
        "10/10 trials, best 1000.0 us | 20/40 in all, about 40 s left"
    )


def test_the_timeout_caps_the_time_left():
    clock = Clock()
    progress = TuneProgress(kernels=2, trials=100, timeout=30.0, clock=clock)
    assert progress.line(1, "fc", "csr", 0, None).endswith("about 30 s left")
    clock.now += 10.0  # the rate says 190 s, the timeout 20 s
    assert progress.line(1, "fc", "csr", 10, None).endswith("about 20 s left")
    clock.now += 3600.0
    assert progress.line(1, "fc", "csr", 11, None).endswith("about 0 s left")


def test_long_runs_are_worded_in_hours():
    clock = Clock()
    progress = TuneProgress(kernels=100, trials=100, clock=clock)
    clock.now += 60.0
    assert progress.line(1, "fc", "csr", 10, None).endswith("about 16 h 39 min left")


def test_a_skipped_kernel_leaves_the_total_and_takes_no_time():
    clock = Clock()
    progress = TuneProgress(kernels=3, trials=10, clock=clock)
    progress.skip_kernel()  # no search space: nothing measured, no time spent
    clock.now += 10.0  # 5 trials of the second kernel in 10 s: 15 left at 2 s each
    assert progress.line(2, "fc2", "csr", 5, None).endswith(
        "5/10 trials, best - | 5/20 in all, about 30 s left"
    )
