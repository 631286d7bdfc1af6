"""The demo's timing: the dense and sparse builds take turns, round by round."""

from __future__ import annotations

from sparse_tvm import demo


class _Model:
    """A stand-in with ``benchmark``'s signature: its latencies in order, every call logged."""

    def __init__(self, name: str, latencies: list[float], log: list) -> None:
        self.name, self.latencies, self.log = name, list(latencies), log

    def benchmark(self, inputs, repeat: int, warmup: int = 5) -> dict[str, float]:
        self.log.append((self.name, repeat))
        return {"median": self.latencies.pop(0)}


def test_builds_take_turns_and_the_median_of_the_rounds_is_kept():
    log: list = []
    # estimate, then 5 rounds; the dense build hits a slow phase in round 2, the sparse in 4
    dense = _Model("dense", [1e-3, 1e-3, 9e-3, 1e-3, 1e-3, 1e-3], log)
    sparse = _Model("sparse", [1e-4, 5e-4, 5e-4, 5e-4, 9e-3, 5e-4], log)
    got = demo.interleaved_medians([dense, sparse], None, repeat=20, rounds=5)
    assert got == [1e-3, 5e-4]
    assert [name for name, _ in log] == ["dense", "sparse"] + ["dense", "sparse"] * 5
    # batches of ~BATCH_S: 50 runs of the 1 ms build, 500 of the 0.1 ms one (never below repeat)
    assert log[2] == ("dense", 50) and log[3] == ("sparse", 500)
