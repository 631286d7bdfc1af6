"""A TVM RPC server "board" under qemu-aarch64, for tuning and measuring without an Arm board.

``tvm.exec.rpc_server`` starts its serving loop in a child Python (``sys.executable -m
tvm.exec.popen_worker``). Under qemu-user without binfmt_misc the host kernel cannot exec an
aarch64 ``python3.11``, so the child is started through a small host shell script that calls
the emulator again; :func:`start_server` points ``sys.executable`` at it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import IO

from sparse_tvm.arm.emulation import PYTHON, QEMU, python_command, python_env, python_root

_LAUNCH = (
    "import runpy, sys; sys.executable = sys.argv.pop(1); sys.argv[0] = 'rpc_server'; "
    "runpy.run_module('tvm.exec.rpc_server', run_name='__main__', alter_sys=True)"
)


def python_wrapper(root: str | os.PathLike) -> Path:
    """A host script that runs the root's Python under qemu (what ``sys.executable`` execs)."""
    root = Path(root)
    wrapper = root.with_name(f"{root.name}-python")
    text = f'#!/bin/sh\nexec {QEMU} -L "{root}" "{root / PYTHON}" "$@"\n'
    if not wrapper.exists() or wrapper.read_text() != text:
        partial = wrapper.with_name(f".{wrapper.name}.{os.getpid()}")
        partial.write_text(text)
        partial.chmod(0o755)
        os.replace(partial, wrapper)
    return wrapper


def start_server(
    tracker: str,
    key: str,
    *,
    host: str = "127.0.0.1",
    port: int = 9090,
    port_end: int = 9199,
    root: str | os.PathLike | None = None,
    log: IO | None = None,
) -> subprocess.Popen:
    """Start ``tvm.exec.rpc_server`` in the arm64 root under qemu, registered at ``tracker``.

    The process runs in its own session (it forks per RPC session): stop it with
    ``os.killpg(proc.pid, signal.SIGTERM)``.
    """
    root = python_root(root)
    argv = python_command(
        root,
        "-c",
        _LAUNCH,
        str(python_wrapper(root)),
        "--host",
        host,
        "--port",
        str(port),
        "--port-end",
        str(port_end),
        "--tracker",
        tracker,
        "--key",
        key,
        "--custom-addr",
        host,
    )
    return subprocess.Popen(
        argv,
        env=python_env(),
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


__all__ = ["python_wrapper", "start_server"]
