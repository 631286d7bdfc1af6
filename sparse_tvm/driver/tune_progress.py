"""The one progress line of ``sparse-tvm tune``: trials done, best so far, time left."""

from __future__ import annotations

import time
from collections.abc import Callable


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class TuneProgress:
    """Counts the trials of a whole ``tune`` run and words its progress line.

    ``kernels`` candidate kernels of ``trials`` trials each; ``timeout`` caps the time left.
    The estimate is the run's own rate so far (measured trials per second of tuning).
    """

    def __init__(
        self,
        kernels: int,
        trials: int,
        timeout: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.kernels = kernels
        self.trials = trials
        self.timeout = timeout
        self.clock = clock
        self.start = clock()
        self.finished_trials = 0  # trials of the kernels already done (measured or skipped)
        self.current = 0  # trials measured of the kernel being tuned
        self.skipped = 0  # kernels without a search space

    @property
    def total(self) -> int:
        return (self.kernels - self.skipped) * self.trials

    @property
    def done(self) -> int:
        return self.finished_trials + self.current

    def next_kernel(self) -> None:
        """The kernel being tuned is finished (all its trials count as done)."""
        self.finished_trials += self.trials
        self.current = 0

    def skip_kernel(self) -> None:
        """The kernel being tuned has no search space: its trials leave the run's total (it
        took no tuning time, so counting them as done would make the rate look faster)."""
        self.skipped += 1
        self.current = 0

    def seconds_left(self) -> float | None:
        elapsed = self.clock() - self.start
        left = None
        if self.done > 0:
            left = elapsed / self.done * (self.total - self.done)
        if self.timeout is not None:
            cap = max(0.0, self.timeout - elapsed)
            left = cap if left is None else min(left, cap)
        return left

    def line(self, index: int, layer: str, label: str, done: int, best_s: float | None) -> str:
        """``[2/7] fc1 bsr 16x1: 32/64 trials, best 27.1 us | 96/448 in all, about 3 min left``"""
        self.current = min(done, self.trials)
        best = "-" if best_s is None else f"{best_s * 1e6:.1f} us"
        left = self.seconds_left()
        eta = "time left unknown yet" if left is None else f"about {_duration(left)} left"
        return (
            f"[{index}/{self.kernels}] {layer} {label}: {done}/{self.trials} trials, best {best}"
            f" | {self.done}/{self.total} in all, {eta}"
        )
