"""The loops of the CUDA kernels that are thread bindings on the GPU and serial loops in their
CPU twins (``emulate=True``)."""

from __future__ import annotations

from tvm.script import tirx as T


def thread_loop(extent, thread: str, emulate: bool):
    """``T.thread_binding(extent, thread=thread)``, or ``T.serial(extent)`` when ``emulate``."""
    return T.serial(extent) if emulate else T.thread_binding(extent, thread=thread)
