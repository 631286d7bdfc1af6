"""RPC measurement: tracker address parsing, fast failures, and tuning through a loopback board."""

from __future__ import annotations

import socket
import time

import pytest

from sparse_tvm.tuning.rpc import (
    RPCError,
    check_tracker,
    parse_tracker,
    rpc_runner,
    tracker_summary,
)
from tests.rpc_processes import free_port, start_module, start_tracker, stop, wait_for

KEY = "sparse-tvm-test"


def test_parse_tracker():
    assert parse_tracker("127.0.0.1:9190") == ("127.0.0.1", 9190)
    assert parse_tracker(" board.local:9000 ") == ("board.local", 9000)
    assert parse_tracker("[::1]:9190") == ("::1", 9190)


@pytest.mark.parametrize("text", ["127.0.0.1", ":9190", "host:", "host:port", "host:0", "h:70000"])
def test_parse_tracker_rejects_bad_text(text):
    with pytest.raises(RPCError, match=r"is not HOST:PORT, e\.g\. 127\.0\.0\.1:9190"):
        parse_tracker(text)


def test_unreachable_tracker_fails_at_once():
    port = free_port()
    start = time.monotonic()
    with pytest.raises(RPCError, match=f"cannot reach the RPC tracker at 127.0.0.1:{port}"):
        rpc_runner(f"127.0.0.1:{port}", KEY)
    assert time.monotonic() - start < 5


def test_a_silent_service_is_not_waited_for():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(RPCError, match="timed out"):
            check_tracker(f"127.0.0.1:{port}", KEY, timeout=0.5)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    """A tracker on 127.0.0.1 with one server registered under KEY; stopped afterwards."""
    logs = tmp_path_factory.mktemp("rpc")
    port = free_port()
    address = f"127.0.0.1:{port}"
    tracker_log = open(logs / "tracker.log", "w")  # noqa: SIM115 (closed in finally)
    server_log = open(logs / "server.log", "w")  # noqa: SIM115
    procs = [start_tracker(port, tracker_log)]
    try:
        wait_for(
            lambda: tracker_summary(address, timeout=1) is not None,
            30,
            "the tracker",
            procs[0],
            logs / "tracker.log",
        )
        server_port = free_port()
        procs.append(
            start_module(
                [
                    "tvm.exec.rpc_server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(server_port),
                    "--port-end",
                    str(server_port + 50),
                    "--tracker",
                    address,
                    "--key",
                    KEY,
                    "--custom-addr",
                    "127.0.0.1",
                ],
                server_log,
            )
        )
        wait_for(
            lambda: check_tracker(address, KEY) >= 1,
            60,
            "the RPC server",
            procs[1],
            logs / "server.log",
        )
        yield address
    finally:
        for proc in reversed(procs):
            stop(proc)
        tracker_log.close()
        server_log.close()


def test_unknown_key_fails_with_the_command_to_run(tracker):
    with pytest.raises(RPCError) as info:
        rpc_runner(tracker, "x")
    assert str(info.value) == (
        f"no RPC server registered under key 'x' at {tracker}: start one with "
        f"python -m tvm.exec.rpc_server --tracker {tracker} --key x"
    )


def test_tuning_through_rpc_records_and_matches_numpy(tracker, tmp_path):
    import numpy as np

    from sparse_tvm.tuning import RealSparsityArguments
    from sparse_tvm.tuning.records import RecordStore
    from sparse_tvm.tuning.space_x86 import make_spec
    from tests.tuning.test_continue import LAYER, M, evaluator, layer, task, tune
    from tests.tuning.test_spaces import run

    w, weight = layer()
    runner = rpc_runner(
        tracker,
        KEY,
        timeout=30,
        n_parallel=1,
        evaluator_config=evaluator(),
        f_alloc_argument=RealSparsityArguments(weight),  # the layer's real indices, remotely
    )
    result = tune(tmp_path, 8, runner=runner)
    assert result.trials == 8
    records = RecordStore(tmp_path).measured(task(weight))
    assert len(records) == 8
    best = records[0]  # sorted by run time
    assert all(float(s) < 1e-2 for s in best.run_secs)  # measured, not a failed trial
    y, ref = run(result.func, w, weight, make_spec(weight, M, **LAYER))
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
