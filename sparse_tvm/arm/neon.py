"""Checks on generated aarch64 code: NEON fused multiply-adds inside loops."""

from __future__ import annotations

import re

_LABEL = re.compile(r"^(\.?L\w+|[A-Za-z_]\w*):")
_BRANCH = re.compile(r"^\s*(?:b(?:\.\w+)?|cbn?z|tbn?z)\s+(?:[^,\n]*,\s*)*(\.?L\w+)\s*$")
_VECTOR_FMLA = re.compile(r"^\s*fmla\s+v\d+\.4s\s*,")


def loop_bodies(asm: str) -> list[list[str]]:
    """The instruction lines of each loop in ``asm``: from a label to a later branch back to it."""
    lines = asm.splitlines()
    labels: dict[str, int] = {}
    bodies = []
    for number, line in enumerate(lines):
        label = _LABEL.match(line)
        if label:
            labels[label.group(1)] = number
            continue
        branch = _BRANCH.match(line)
        if branch and branch.group(1) in labels:  # a backward branch closes a loop
            bodies.append(lines[labels[branch.group(1)] + 1 : number + 1])
    return bodies


def neon_fmla_in_loops(asm: str) -> int:
    """How many 4-lane float ``fmla v.4s`` instructions sit inside a loop of ``asm``."""
    inside = {line for body in loop_bodies(asm) for line in body if _VECTOR_FMLA.match(line)}
    return len(inside)


__all__ = ["loop_bodies", "neon_fmla_in_loops"]
