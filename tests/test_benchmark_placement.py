"""The benchmarks' core-placement probe (benchmarks/placement.py) and its use in
``common.measure``: real round trips between two CPUs, each round tagged."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import placement  # noqa: E402

TWO_CPUS = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="the probe needs two CPUs")


@TWO_CPUS
def test_round_trip_between_two_cpus_is_measured_and_affinity_restored():
    before = os.sched_getaffinity(0)
    value = placement.core_to_core_ns(trips=2000)
    assert value is not None and 10 < value < 100_000  # ns: a cache line's round trip
    assert os.sched_getaffinity(0) == before


@pytest.mark.parametrize(
    ("before", "after", "where"),
    [(55, 60, "near"), (320, 900, "far"), (55, 320, "mixed"), (None, 60, "unknown")],
)
def test_placement_of_a_stretch(before, after, where):
    assert placement.placement(before, after) == where


@TWO_CPUS
def test_measure_tags_every_round():
    runner = common.Runner("sum", lambda: sum(range(100)))
    timing = common.measure([runner], rounds=3, batch_s=0.001)["sum"]
    assert len(timing.placements) == 3
    assert set(timing.placements) <= {"near", "far", "mixed"}
    near = [s for s, p in zip(timing.samples_s, timing.placements, strict=True) if p == "near"]
    assert timing.median_in("near") == (float(np.median(near)) if near else None)
    assert timing.to_dict()["placements"] == timing.placements
