"""Where a compiled model's time goes: each kernel call of a run, timed in the run, by operator.

TVM 0.27's Relax VM has no profiler any more (``VirtualMachine(..., profile=True)`` is gone), so
the split is built on the hook the VM does have: ``VirtualMachine.set_instrument``, a callback
before and after every ``Call`` instruction. On a VM of its own (the model's stays clean), a
run records each call's symbol and argument shapes, then ``runs`` more runs time each kernel
call between the callback's two ``perf_counter`` reads; a call's time is its median over the
runs. VM builtins (``vm.builtin.*``: allocation, reshape views, shape checks) are not kernels.

Each interval also holds part of the callback's own cost (the VM hands the arguments to Python,
~1-3 us a call), and the thread pool may park while Python runs between kernels, so the sum of
the kernels can exceed the latency measured without the hook: :class:`Profile` gives both, and
its shares are what to read.

Kernels are grouped by the operator a person would name (:func:`op_group`), from the names TVM
gives fused functions (``fused_matmul3_add5_divide_fast_erf_...``: a matmul with its epilogue)
and those of sparse-tvm's own kernels (``sparse_1x1_<weight>``, ``im2col_...``).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

# (group, the patterns of kernel names in it), first match wins: a fused matmul + GELU is a
# matmul with its epilogue, a sparse kernel is sparse whatever it fuses.
OP_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("sparse layer", (r"^sparse_", r"^int8_16x4_")),
    ("sparse conv input (im2col, pad, crop)", (r"^im2col", r"^direct_pad", r"^direct_crop")),
    ("depthwise conv", (r"^depthwise", r"depthwise")),
    ("dense conv", (r"conv2d",)),
    ("attention", (r"^attention_",)),
    ("dense matmul", (r"matmul", r"dense", r"batch_matmul")),
    ("softmax", (r"softmax",)),
    ("layer norm", (r"layer_norm", r"rms_norm", r"group_norm")),
    ("GELU / erf / tanh", (r"gelu", r"erf", r"tanh")),
    ("pooling", (r"pool",)),
    ("layout (transpose, reshape, copy)", (r"transpose", r"reshape", r"layout", r"concat")),
)
OTHER = "elementwise and other"


def op_group(symbol: str) -> str:
    """The operator group of a kernel named ``symbol`` (see :data:`OP_GROUPS`)."""
    for group, patterns in OP_GROUPS:
        if any(re.search(pattern, symbol) for pattern in patterns):
            return group
    return OTHER


@dataclass
class KernelTime:
    """One distinct kernel of a run (symbol and argument shapes) and its time per run."""

    symbol: str
    group: str
    calls: int
    us_per_call: float
    shapes: list[list[int] | None]

    @property
    def total_us(self) -> float:
        return self.us_per_call * self.calls


@dataclass
class Profile:
    """The kernels of one model run, timed in the run (see the module docstring)."""

    kernels: list[KernelTime]
    end_to_end_ms: float | None = None

    @property
    def sum_ms(self) -> float:
        return sum(k.total_us for k in self.kernels) / 1e3

    def by_group(self) -> list[dict[str, Any]]:
        """Per operator group: ms per run, share of the kernels' sum, calls; slowest first."""
        groups: dict[str, dict[str, Any]] = {}
        for kernel in self.kernels:
            row = groups.setdefault(kernel.group, {"group": kernel.group, "ms": 0.0, "calls": 0})
            row["ms"] += kernel.total_us / 1e3
            row["calls"] += kernel.calls
        total = self.sum_ms or 1.0
        for row in groups.values():
            row["pct"] = 100.0 * row["ms"] / total
        return sorted(groups.values(), key=lambda r: -r["ms"])

    def slowest(self, count: int = 10) -> list[KernelTime]:
        return sorted(self.kernels, key=lambda k: -k.total_us)[:count]

    def to_json(self) -> str:
        return json.dumps(
            {
                "end_to_end_ms": self.end_to_end_ms,
                "sum_ms": self.sum_ms,
                "groups": self.by_group(),
                "kernels": [asdict(k) for k in self.kernels],
            },
            indent=2,
        )

    def __str__(self) -> str:
        lines = [
            f"time per run by operator ({len(self.kernels)} kernels timed in the run; their sum "
            f"{self.sum_ms:.3f} ms"
            + (
                f", the run alone {self.end_to_end_ms:.3f} ms"
                if self.end_to_end_ms is not None
                else ""
            )
            + ")",
            f"{'operator':<40} {'ms':>9} {'share':>6} {'calls':>6}",
        ]
        for row in self.by_group():
            lines.append(
                f"{row['group']:<40} {row['ms']:>9.3f} {row['pct']:>5.1f}% {row['calls']:>6}"
            )
        lines.append("slowest kernels:")
        for kernel in self.slowest(8):
            name = kernel.symbol if len(kernel.symbol) <= 60 else kernel.symbol[:57] + "..."
            lines.append(
                f"  {name:<60} {kernel.total_us / 1e3:>8.3f} ms  {kernel.calls} x "
                f"{kernel.us_per_call:.1f} us"
            )
        return "\n".join(lines)


def _shapes(args: tuple) -> tuple:
    return tuple(tuple(int(d) for d in a.shape) if hasattr(a, "shape") else None for a in args)


def _instrument(calls: list, times: list, device: tvm.runtime.Device):
    """The VM callback: records (symbol, shapes) of each kernel call while ``times`` is empty,
    then appends each call's seconds to ``times[-1]``."""
    no_op = int(relax.VMInstrumentReturnKind.NO_OP)
    started = [0.0]
    on_cpu = device.dlpack_device_type() == tvm.cpu().dlpack_device_type()

    def instrument(func, symbol, before_run, ret_value, *args):
        if not on_cpu:
            device.sync()  # GPU launches return at once: wait for the kernel
        now = time.perf_counter()
        if str(symbol).startswith("vm.builtin."):
            return no_op
        if not before_run:
            if times:
                times[-1].append(now - started[0])
            return no_op
        if not times:
            calls.append((str(symbol), _shapes(args)))
        started[0] = time.perf_counter()  # last: the bookkeeping above is not the kernel's
        return no_op

    return instrument


def timed_calls(
    executable, args: list, device: tvm.runtime.Device | None = None, runs: int = 20
) -> list[dict[str, Any]]:
    """Every kernel call of a run of ``main(*args)``, in order: symbol, argument shapes and the
    median seconds of that call over ``runs`` instrumented runs (after a recording one)."""
    device = device or tvm.cpu()
    vm = relax.VirtualMachine(executable, device)  # its own VM: the caller's stays clean
    calls: list[tuple[str, tuple]] = []
    times: list[list[float]] = []
    vm.set_instrument(_instrument(calls, times, device))
    vm["main"](*args)  # records the calls, warms up
    for _ in range(max(1, runs)):
        times.append([])
        vm["main"](*args)
    per_call = np.median(np.array(times), axis=0) if calls else []
    return [
        {"symbol": symbol, "shapes": shapes, "seconds": float(seconds)}
        for (symbol, shapes), seconds in zip(calls, per_call, strict=True)
    ]


def profile_executable(
    executable,
    args: list,
    device: tvm.runtime.Device | None = None,
    runs: int = 20,
    end_to_end_s: float | None = None,
) -> Profile:
    """The :class:`Profile` of ``main(*args)``: one row per distinct kernel (symbol and argument
    shapes), its calls and mean time per call (each call's median over ``runs`` runs)."""
    grouped: dict[tuple, KernelTime] = {}
    for call in timed_calls(executable, args, device, runs):
        key = (call["symbol"], call["shapes"])
        if key not in grouped:
            grouped[key] = KernelTime(
                call["symbol"],
                op_group(call["symbol"]),
                0,
                0.0,
                [list(s) if s is not None else None for s in call["shapes"]],
            )
        row = grouped[key]
        row.us_per_call = (row.us_per_call * row.calls + call["seconds"] * 1e6) / (row.calls + 1)
        row.calls += 1
    return Profile(list(grouped.values()), None if end_to_end_s is None else end_to_end_s * 1e3)
