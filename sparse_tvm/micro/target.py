"""Microcontroller presets (``targets/cortex-m*.toml``) as plain data for the C project."""

from __future__ import annotations

from dataclasses import dataclass

from sparse_tvm.errors import TargetError
from sparse_tvm.target import ResolvedTarget, preset_names, presets, resolve_target


@dataclass(frozen=True)
class MicroTarget:
    """A microcontroller: compiler flags, budgets, and the qemu board that emulates it."""

    name: str
    cpu: str
    cflags: tuple[str, ...]
    fpu: bool
    flash_kb: int
    ram_kb: int
    qemu_machine: str | None
    flash_origin: int = 0x00000000
    ram_origin: int = 0x20000000
    description: str = ""


def micro_target(spec: str | dict | ResolvedTarget) -> MicroTarget:
    """The :class:`MicroTarget` of a preset name (``cortex-m4``, ...)."""
    resolved = resolve_target(spec)
    preset = presets().get(resolved.name)
    if resolved.family != "micro" or preset is None:
        names = ", ".join(preset_names("micro"))
        raise TargetError(
            f"target '{resolved.name}' is not a microcontroller preset: use one of {names}"
        )
    extra = preset.extra
    try:
        return MicroTarget(
            name=preset.name,
            cpu=str(extra["cpu"]),
            cflags=tuple(str(f) for f in extra["cflags"]),
            fpu=bool(extra.get("fpu", False)),
            flash_kb=int(extra["flash_kb"]),
            ram_kb=int(extra["ram_kb"]),
            qemu_machine=extra.get("qemu_machine"),
            flash_origin=int(extra.get("flash_origin", 0)),
            ram_origin=int(extra.get("ram_origin", 0x20000000)),
            description=preset.description,
        )
    except KeyError as err:
        raise TargetError(f"preset '{preset.name}' lacks the key {err.args[0]}") from None
