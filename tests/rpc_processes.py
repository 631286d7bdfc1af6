"""Processes of the RPC tests: free loopback ports, a tracker, waiting for and stopping them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sparse_tvm.tuning.rpc import RPCError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_module(args: list[str], log) -> subprocess.Popen:
    """``python -m ARGS`` in its own session (the RPC server forks a child per session)."""
    return subprocess.Popen(
        [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def start_tracker(port: int, log) -> subprocess.Popen:
    """TVM's RPC tracker on 127.0.0.1:``port``."""
    return start_module(
        ["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port)]
        + ["--port-end", str(port + 1)],
        log,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(condition, seconds: float, what: str, proc: subprocess.Popen, log_path: Path) -> None:
    """Poll ``condition`` until true; fail with the end of the log if ``proc`` dies or it's late."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {Path(log_path).read_text()[-2000:]}")
        try:
            if condition():
                return
        except RPCError:
            pass
        time.sleep(0.2)
    raise TimeoutError(
        f"{what} did not come up in {seconds} s: {Path(log_path).read_text()[-2000:]}"
    )
