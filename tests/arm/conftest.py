"""Fixtures of the aarch64 tests: the cross toolchain, qemu-aarch64 and the arm64 Python root.

Without the Debian packages (gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user, and
debootstrap for the Python root) the tests that need them skip and say which are missing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from sparse_tvm.arm.emulation import EmulationError, missing_tools, python_root
from sparse_tvm.arm.rpc import start_server
from sparse_tvm.tuning.rpc import RPCError, check_tracker, tracker_summary

KEY = "sparse-tvm-arm64-qemu"


@pytest.fixture(scope="session")
def cross_tools() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"aarch64 cross toolchain or emulator missing: {', '.join(missing)}")


@pytest.fixture(scope="session")
def arm64_root(cross_tools):
    """The cached arm64 Python root with the TVM runtime (built on first use, ~30-40 s)."""
    missing = missing_tools(python_root=True)
    if missing:
        pytest.skip(f"cannot build the arm64 Python root: missing {', '.join(missing)}")
    try:
        return python_root()
    except EmulationError as err:  # no network to Debian or PyPI
        pytest.skip(f"arm64 Python root unavailable: {err}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for(condition, seconds: float, what: str, proc: subprocess.Popen, log_path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {log_path.read_text()[-2000:]}")
        try:
            if condition():
                return
        except RPCError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} did not come up in {seconds} s: {log_path.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def emulated_board(arm64_root, tmp_path_factory):
    """A tracker on 127.0.0.1 with one qemu-aarch64 RPC server registered under KEY (one per
    test session: the server forks a fresh emulated worker per RPC session)."""
    pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado")
    logs = tmp_path_factory.mktemp("arm-rpc")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs = []
    with open(logs / "tracker.log", "w") as tracker_log, open(logs / "server.log", "w") as log:
        try:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1"]
                    + ["--port", str(port), "--port-end", str(port + 1)],
                    stdout=tracker_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            _wait_for(
                lambda: tracker_summary(address, timeout=1) is not None,
                30,
                "the tracker",
                procs[0],
                logs / "tracker.log",
            )
            server_port = _free_port()
            procs.append(
                start_server(address, KEY, port=server_port, port_end=server_port + 50, log=log)
            )
            _wait_for(
                lambda: check_tracker(address, KEY) >= 1,
                90,
                "the emulated RPC server",
                procs[1],
                logs / "server.log",
            )
            yield address
        finally:
            for proc in reversed(procs):
                _stop(proc)
