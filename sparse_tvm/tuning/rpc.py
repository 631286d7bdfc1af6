"""Remote measurement: a MetaSchedule runner that measures on boards behind a TVM RPC tracker.

The board runs ``python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY``; the host that
tunes asks the tracker for a server with that key for each measurement. TVM's own client waits
(and retries for a minute) when the tracker is down, and a request for a key that no server
registered waits forever, so :func:`rpc_runner` checks both first and fails in seconds.

:class:`Board` bundles a tracker, a key and the compiler that links code for the board: the
tuner's runner, and the measurements outside MetaSchedule (the hand-written kernel, the dense
layer) that decide on the board whether a tuned kernel is worth it.
"""

from __future__ import annotations

import os
import socket
import struct
import tempfile
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.rpc import base
from tvm.s_tir import meta_schedule as ms

from sparse_tvm.errors import DeviceError
from sparse_tvm.tuning.cross_build import export_shared


class RPCError(DeviceError):
    """The RPC tracker address is malformed, unreachable, or has no server for the key."""


def parse_tracker(text: str) -> tuple[str, int]:
    """Parse ``"HOST:PORT"`` (``"[::1]:9190"`` for IPv6) into ``(host, port)``."""
    host, sep, port = str(text).strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RPCError(f"tracker address {text!r} is not HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def tracker_summary(tracker: str, *, timeout: float = 5.0) -> dict:
    """The tracker's ``{"queue_info": {key: {...}}, "server_info": [...]}``, within ``timeout``."""
    host, port = parse_tracker(tracker)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            (magic,) = struct.unpack("<i", base.recvall(sock, 4))
            if magic != base.RPC_TRACKER_MAGIC:
                raise RPCError(f"{host}:{port} is not a TVM RPC tracker")
            base.sendjson(sock, [base.TrackerCode.SUMMARY])
            code, summary = base.recvjson(sock)
    except (OSError, struct.error, ValueError) as err:
        reason = "timed out" if isinstance(err, TimeoutError) else getattr(err, "strerror", None)
        raise RPCError(
            f"cannot reach the RPC tracker at {host}:{port} ({reason or err}): start one with "
            f"python -m tvm.exec.rpc_tracker --host {host} --port {port}"
        ) from None
    if code != base.TrackerCode.SUCCESS:
        raise RPCError(f"the RPC tracker at {host}:{port} refused a summary request")
    return summary


def check_tracker(tracker: str, key: str, *, timeout: float = 5.0) -> int:
    """Check that a server is registered under ``key``; returns how many are free now."""
    host, port = parse_tracker(tracker)
    queues = tracker_summary(tracker, timeout=timeout).get("queue_info", {})
    if key not in queues:
        raise RPCError(
            f"no RPC server registered under key {key!r} at {host}:{port}: start one with "
            f"python -m tvm.exec.rpc_server --tracker {host}:{port} --key {key}"
        )
    return int(queues[key].get("free", 0))


def rpc_runner(
    tracker: str,
    key: str,
    *,
    timeout: float = 30.0,
    n_parallel: int = 1,
    evaluator_config: ms.runner.EvaluatorConfig | None = None,
    check: bool = True,
    f_alloc_argument=None,
) -> ms.runner.RPCRunner:
    """A MetaSchedule runner that measures on the RPC servers registered under ``key``.

    Parameters
    ----------
    tracker : str
        The tracker, ``"HOST:PORT"``.
    key : str
        The device key the servers registered with (``--key`` of ``tvm.exec.rpc_server``).
    timeout : float
        Seconds one measurement session may take; a slower trial is recorded as failed.
    n_parallel : int
        Measurements in flight at once: at most the number of boards, since concurrent runs on
        one board disturb each other's timings.
    evaluator_config : EvaluatorConfig, optional
        How each candidate is timed (number, repeat, min_repeat_ms).
    check : bool
        Fail now, with a one-line :class:`RPCError`, when the tracker is unreachable or has no
        server under ``key`` (instead of every trial waiting for one).
    f_alloc_argument : callable, optional
        How the arguments are made on the device, called as the local runner calls it:
        ``f(device, args_info, alloc_repeat)`` (the RPC session argument is dropped). Sparse
        kernels need their real sparsity structure
        (:class:`sparse_tvm.tuning.RealSparsityArguments`), never random indices.
    """
    host, port = parse_tracker(tracker)
    if check:
        check_tracker(tracker, key)
    config = ms.runner.RPCConfig(
        tracker_host=host,
        tracker_port=port,
        tracker_key=key,
        session_priority=1,
        session_timeout_sec=int(max(1, round(timeout))),
    )
    return ms.runner.RPCRunner(
        rpc_config=config,
        evaluator_config=evaluator_config,
        max_workers=n_parallel,
        f_alloc_argument=None if f_alloc_argument is None else _OnDevice(f_alloc_argument),
    )


class _OnDevice:
    """RPCRunner's ``f_alloc_argument(session, device, args_info, alloc_repeat)`` from a local
    runner's ``f(device, args_info, alloc_repeat)``: the tensors are made on the remote device.
    Picklable (the runner calls it in a worker process)."""

    def __init__(self, f) -> None:
        self.f = f

    def __call__(self, session, device, args_info, alloc_repeat):
        return self.f(device, args_info, alloc_repeat)


@dataclass(frozen=True)
class Board:
    """A device behind a TVM RPC tracker and the compiler that links code for it.

    Attributes
    ----------
    tracker, key : str
        ``HOST:PORT`` of the tracker and the key the board's server registered with.
    cross_compiler : str, optional
        Links the shared libraries sent to the board (``aarch64-linux-gnu-gcc`` for an Arm
        board tuned from an x86 host); ``None``: the host's compiler.
    timeout : float
        Seconds one measurement session may take.
    """

    tracker: str
    key: str
    cross_compiler: str | None = None
    timeout: float = 120.0

    def __str__(self) -> str:
        return f"board {self.key!r} at {self.tracker}"

    def check(self) -> int:
        """:func:`check_tracker` for this board: a one-line :class:`RPCError` if it is absent."""
        return check_tracker(self.tracker, self.key)

    def runner(self, *, f_alloc_argument=None, evaluator_config=None) -> ms.runner.RPCRunner:
        """MetaSchedule's runner measuring on this board (one candidate at a time)."""
        return rpc_runner(
            self.tracker,
            self.key,
            timeout=self.timeout,
            evaluator_config=evaluator_config,
            check=False,
            f_alloc_argument=f_alloc_argument,
        )

    def session(self) -> tvm.rpc.RPCSession:
        """A new RPC session on the board (it ends when the object is released)."""
        host, port = parse_tracker(self.tracker)
        client = tvm.rpc.connect_tracker(host, port)
        return client.request(self.key, priority=1, session_timeout=int(self.timeout))

    def load(self, session: tvm.rpc.RPCSession, module, name: str) -> tvm.runtime.Module:
        """Link ``module`` (an Executable or runtime module) for the board, upload, load it."""
        with tempfile.TemporaryDirectory(prefix="sparse_tvm_board_") as folder:
            path = export_shared(module, os.path.join(folder, name), self.cross_compiler)
            session.upload(path, name)
        return session.load_module(name)


def time_remote(
    module, name: str, device, args: list, *, repeat: int = 5, min_repeat_ms: int = 20
) -> float:
    """Median seconds of ``module[name](*args)`` timed on the board by its own clock.

    ``module`` is a runtime module or a ``VirtualMachine`` loaded through a board session;
    ``args`` are tensors on ``device``.
    """
    timer = module.time_evaluator(
        name, device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms
    )
    return float(np.median(timer(*args).results))
