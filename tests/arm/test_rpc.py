"""Measuring aarch64 code on an emulated board: tvm.exec.rpc_server under qemu-aarch64,
registered at a tracker on loopback, as a Raspberry Pi would be."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tvm
from tvm.support import cc

from sparse_tvm.arm.emulation import CROSS_COMPILER
from sparse_tvm.arm.rpc import start_server
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels.spmm import spmm_kernel
from sparse_tvm.target import resolve_target
from sparse_tvm.tuning.rpc import RPCError, check_tracker, tracker_summary

KEY = "sparse-tvm-arm64-qemu"


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


@pytest.fixture(scope="module")
def emulated_board(arm64_root, tmp_path_factory):
    """A tracker on 127.0.0.1 with one qemu-aarch64 RPC server registered under KEY."""
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


def test_sparse_kernel_measured_on_the_emulated_board(emulated_board, tmp_path):
    target = resolve_target("aarch64").tvm_target
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    weight = BlockSparseWeight.from_dense(w, (4, 1))
    func = spmm_kernel(weight, 16, target=target).with_attr("global_symbol", "spmm")
    library = tmp_path / "spmm.so"
    tvm.compile(func, target=target).export_library(
        str(library), fcompile=cc.cross_compiler(CROSS_COMPILER)
    )

    host, port = emulated_board.split(":")
    remote = tvm.rpc.connect_tracker(host, int(port)).request(KEY, session_timeout=60)
    remote.upload(str(library))
    kernel = remote.load_module(library.name)
    dev = remote.cpu()
    x = rng.standard_normal((16, 128)).astype(np.float32)
    args = [tvm.runtime.tensor(a, dev) for a in (x, weight.data, weight.indices, weight.indptr)]
    y = tvm.runtime.empty((16, 64), "float32", dev)
    kernel["spmm"](*args, y)
    np.testing.assert_allclose(y.numpy(), x @ w.T, rtol=1e-5, atol=1e-5)
    seconds = kernel.time_evaluator("spmm", dev, number=5, repeat=3)(*args, y).results
    assert len(seconds) == 3 and all(0 < s < 1 for s in seconds)
