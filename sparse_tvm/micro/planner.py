"""Static memory plan: every intermediate tensor and kernel workspace at an offset of one arena.

Liveness is exact because the program is a straight line of calls: a tensor lives from the
call that writes it to the last call that reads it (or its views); a kernel's workspace lives
during its call only. Buffers whose lifetimes overlap must not overlap in memory; the others
may share bytes. Placement is greedy by size (largest first, at the lowest offset that is free
for its whole lifetime), the heuristic TFLite Micro's planner uses; it is optimal or close for
the chains of layers that small models are.
"""

from __future__ import annotations

from dataclasses import dataclass

from sparse_tvm.micro.lower import Program

ALIGNMENT = 16


@dataclass(frozen=True)
class Buffer:
    """A block of the arena: a tensor (``tensor`` >= 0) or a call's workspace (``call``)."""

    name: str
    nbytes: int
    first: int  # first call that needs it
    last: int  # last call that needs it (len(calls) = the copy of the outputs at the end)
    tensor: int = -1
    call: int = -1


@dataclass
class ArenaPlan:
    size: int
    offsets: dict[int, int]  # storage tensor index -> byte offset
    workspace: dict[int, tuple[int, int]]  # call index -> (offset, bytes)
    buffers: list[Buffer]

    @property
    def unshared_size(self) -> int:
        """The arena without sharing (every buffer its own bytes): what the plan saves."""
        return sum(_align(b.nbytes) for b in self.buffers)


def _align(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def buffers_of(program: Program, external: set[int]) -> list[Buffer]:
    """The lifetimes of the intermediate tensors not in ``external`` and of the workspaces."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, call in enumerate(program.calls):
        for position, arg in enumerate(call.args):
            storage = program.storage(arg)
            if program.tensors[storage].kind != "intermediate":
                continue
            if position >= len(call.args) - call.n_outputs:
                first.setdefault(storage, i)
            last[storage] = max(last.get(storage, i), i)
    for out in program.outputs:
        storage = program.storage(out)
        if storage in last:
            last[storage] = len(program.calls)
    buffers = [
        Buffer(program.tensors[s].name, program.tensors[s].nbytes, first[s], last[s], tensor=s)
        for s in first
        if s not in external
    ]
    for i, call in enumerate(program.calls):
        size = program.workspace.get(call.kernel, 0)
        if size:
            buffers.append(Buffer(f"workspace of {call.kernel}", size, i, i, call=i))
    return buffers


def plan_memory(program: Program, external: set[int] = frozenset()) -> ArenaPlan:
    """Place the buffers of ``program`` in one arena (see module doc).

    Parameters
    ----------
    program
        The lowered model.
    external
        Storage tensors that live outside the arena (outputs written to the caller's arrays).
    """
    buffers = buffers_of(program, set(external))
    placed: list[tuple[int, Buffer]] = []
    for buf in sorted(buffers, key=lambda b: (-b.nbytes, b.first)):
        busy = sorted(
            (offset, offset + _align(other.nbytes))
            for offset, other in placed
            if other.first <= buf.last and buf.first <= other.last
        )
        offset = 0
        for start, end in busy:
            if offset + _align(buf.nbytes) <= start:
                break
            offset = max(offset, end)
        placed.append((offset, buf))
    size = max((o + _align(b.nbytes) for o, b in placed), default=0)
    offsets = {b.tensor: o for o, b in placed if b.tensor >= 0}
    workspace = {b.call: (o, b.nbytes) for o, b in placed if b.call >= 0}
    return ArenaPlan(size, offsets, workspace, buffers)


def check_plan(plan: ArenaPlan) -> None:
    """Raise if two buffers that are alive at the same time overlap (a self-check)."""
    placed = [
        (plan.offsets[b.tensor] if b.tensor >= 0 else plan.workspace[b.call][0], b)
        for b in plan.buffers
    ]
    for i, (oa, a) in enumerate(placed):
        for ob, b in placed[i + 1 :]:
            live = a.first <= b.last and b.first <= a.last
            if live and oa < ob + b.nbytes and ob < oa + a.nbytes:
                raise AssertionError(f"arena plan overlaps {a.name} and {b.name}")
