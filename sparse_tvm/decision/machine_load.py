"""How much CPU other processes use while this one measures: timings taken under load lie.

A 2-thread kernel whose second thread shares a core with another process waits for that core at
every parallel region: it runs 5-50x slower while a one-thread kernel beside it (the scalar
CSR kernel of an m = 1 layer) hardly notices. Timed on a machine busy with other work, a dense
layer came out 3,486 us instead of 63 us and its 2x slower sparse version was kept. The
decision therefore watches the machine: :class:`ForeignLoad` measures the cores other processes
used during a block (the whole machine's busy time less this process's own), and
:func:`quiet_moment` waits, within a budget, for a moment when they use (almost) none.
"""

from __future__ import annotations

import time

import psutil

# Other processes using more than this many cores (on average over a window) make it a loaded
# window: its timings are not kept where a quiet one can be had.
LOADED_CORES = 0.25
# The probe window of quiet_moment, and the shortest window ForeignLoad reads at all: the kernel
# counts CPU time in 10 ms ticks, so a window of a few ms sees 0 or a whole tick (a window of
# 1 ms around two cached timings read "11.7 cores").
PROBE_S = 0.1


def _busy_s() -> float:
    """Seconds all CPUs have been busy (idle and I/O wait left out) since boot."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _own_s() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


class ForeignLoad:
    """Cores used by *other* processes while the ``with`` block runs (0: the machine was
    quiet); ``cores`` is None where the system does not tell or the block took less than
    :data:`PROBE_S` (too short for the kernel's 10 ms accounting)."""

    def __init__(self) -> None:
        self.cores: float | None = None
        self._start: tuple[float, float, float] | None = None

    def __enter__(self) -> ForeignLoad:
        try:
            self._start = (_busy_s(), _own_s(), time.perf_counter())
        except (OSError, psutil.Error):
            self._start = None
        return self

    def __exit__(self, *exc) -> None:
        if self._start is None:
            return
        try:
            busy, own, wall = _busy_s(), _own_s(), time.perf_counter()
        except (OSError, psutil.Error):
            return
        elapsed = wall - self._start[2]
        if elapsed >= PROBE_S:  # shorter: unknown (see PROBE_S)
            foreign = (busy - self._start[0]) - (own - self._start[1])
            self.cores = min(max(0.0, foreign / elapsed), float(psutil.cpu_count() or 1))

    @property
    def loaded(self) -> bool:
        return self.cores is not None and self.cores > LOADED_CORES


def quiet_moment(deadline: float) -> bool:
    """Wait until other processes leave the cores alone for a :data:`PROBE_S` window, or until
    ``deadline`` (a ``time.perf_counter`` value); True if a quiet window came."""
    while True:
        with ForeignLoad() as probe:
            time.sleep(PROBE_S)
        if not probe.loaded:
            return True
        if time.perf_counter() >= deadline:
            return False
