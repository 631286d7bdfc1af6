"""Fixtures of the aarch64 tests: the cross toolchain, qemu-aarch64 and the arm64 Python root.

Without the Debian packages (gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user, and
debootstrap for the Python root) the tests that need them skip and say which are missing.
"""

from __future__ import annotations

import pytest

from sparse_tvm.arm.emulation import EmulationError, missing_tools, python_root
from sparse_tvm.arm.rpc import start_server
from sparse_tvm.tuning.rpc import check_tracker, tracker_summary
from tests.conftest import skip_missing
from tests.rpc_processes import free_port, start_tracker, stop, wait_for

KEY = "sparse-tvm-arm64-qemu"


@pytest.fixture(scope="session")
def cross_tools() -> None:
    missing = missing_tools()
    if missing:
        skip_missing(f"aarch64 cross toolchain or emulator missing: {', '.join(missing)}")


@pytest.fixture(scope="session")
def arm64_root(cross_tools):
    """The cached arm64 Python root with the TVM runtime (built on first use, ~30-40 s)."""
    missing = missing_tools(python_root=True)
    if missing:
        skip_missing(f"cannot build the arm64 Python root: missing {', '.join(missing)}")
    try:
        return python_root()
    except EmulationError as err:  # no network to Debian or PyPI
        skip_missing(f"arm64 Python root unavailable: {err}")


@pytest.fixture(scope="session")
def emulated_board(arm64_root, tmp_path_factory):
    """A tracker on 127.0.0.1 with one qemu-aarch64 RPC server registered under KEY (one per
    test session: the server forks a fresh emulated worker per RPC session)."""
    logs = tmp_path_factory.mktemp("arm-rpc")
    port = free_port()
    address = f"127.0.0.1:{port}"
    procs = []
    with open(logs / "tracker.log", "w") as tracker_log, open(logs / "server.log", "w") as log:
        try:
            procs.append(start_tracker(port, tracker_log))
            wait_for(
                lambda: tracker_summary(address, timeout=1) is not None,
                30,
                "the tracker",
                procs[0],
                logs / "tracker.log",
            )
            server_port = free_port()
            procs.append(
                start_server(address, KEY, port=server_port, port_end=server_port + 50, log=log)
            )
            wait_for(
                lambda: check_tracker(address, KEY) >= 1,
                90,
                "the emulated RPC server",
                procs[1],
                logs / "server.log",
            )
            yield address
        finally:
            for proc in reversed(procs):
                stop(proc)
