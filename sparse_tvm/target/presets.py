"""Target presets: the device descriptions in ``targets/*.toml`` turned into TVM targets.

A preset is plain data (name, description, family, the TVM target dict, and for edge devices the
cross compiler and how to run a program). ``--target`` takes a preset name or a TVM target as
JSON; the value ``"host"`` in a preset's TVM dict is filled in from the machine.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import tvm

from sparse_tvm.errors import TargetError
from sparse_tvm.target.host_cpu import host_num_cores, host_x86_mcpu
from sparse_tvm.target.machine import num_cores, vector_lanes


@dataclass(frozen=True)
class Preset:
    """One device description from ``targets/``."""

    name: str
    description: str
    family: str
    tvm: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedTarget:
    """A target ready for TVM: the preset (or ``None`` for raw JSON) and the concrete target."""

    name: str
    family: str
    tvm_target: tvm.target.Target
    description: str = ""

    @property
    def vector_width(self) -> int:
        """float32 lanes of one vector register on this target (see :mod:`.machine`)."""
        return vector_lanes(self.tvm_target)

    @property
    def num_cores(self) -> int:
        """Cores the code is generated for (see :func:`.machine.num_cores`)."""
        return num_cores(self.tvm_target)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "tvm": _target_dict(self.tvm_target)}


def _target_dict(target: tvm.target.Target) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": target.kind.name}
    for key, value in target.attrs.items():
        if isinstance(value, (int, float, str)):
            out[str(key)] = value
        else:
            try:
                out[str(key)] = [str(v) for v in value]
            except TypeError:
                out[str(key)] = str(value)
    return out


@lru_cache(maxsize=1)
def presets() -> dict[str, Preset]:
    """All presets shipped in ``targets/``, by name."""
    folder = resources.files("sparse_tvm") / "_data" / "targets"
    found: dict[str, Preset] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".toml"):
            continue
        data = tomllib.loads(entry.read_text())
        known = {"name", "description", "family", "tvm"}
        found[data["name"]] = Preset(
            name=data["name"],
            description=data.get("description", ""),
            family=data.get("family", "generic"),
            tvm=dict(data["tvm"]),
            extra={k: v for k, v in data.items() if k not in known},
        )
    return found


def preset_names(family: str) -> list[str]:
    """The names of the presets of one target family (``"micro"``, ``"arm"``, ...)."""
    return [name for name, preset in presets().items() if preset.family == family]


def _fill_host(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if out.get("mcpu") == "host":
        out["mcpu"] = host_x86_mcpu()
    if out.get("num-cores") == "host":
        out["num-cores"] = host_num_cores()
    return out


def _family_of(tvm_dict: dict[str, Any]) -> str:
    kind = tvm_dict.get("kind")
    triple = str(tvm_dict.get("mtriple", ""))
    if kind == "cuda":
        return "cuda"
    if kind == "c" or triple.startswith("thumb"):
        return "micro"
    if triple.startswith(("aarch64", "arm")):
        return "arm"
    return "x86" if kind == "llvm" else str(kind)


def resolve_target(spec: str | dict[str, Any] | ResolvedTarget) -> ResolvedTarget:
    """Turn a preset name, a TVM target JSON string or dict into a :class:`ResolvedTarget`."""
    if isinstance(spec, ResolvedTarget):
        return spec
    if isinstance(spec, str) and spec.strip().startswith("{"):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as err:
            raise TargetError(
                f"target JSON is malformed ({err.msg}): give a preset name "
                f"({', '.join(presets())}) or a JSON object like "
                '{"kind": "llvm", "mcpu": "haswell"}'
            ) from None
    if isinstance(spec, dict):
        tvm_dict = _fill_host(spec)
        if tvm_dict.get("kind") == "llvm":
            tvm_dict.setdefault("num-cores", host_num_cores())  # MetaSchedule needs it
        name, family, description = "custom", _family_of(tvm_dict), "TVM target given as JSON"
    else:
        preset = presets().get(str(spec))
        if preset is None:
            raise TargetError(
                f"unknown target '{spec}': use one of {', '.join(presets())} "
                "(see `sparse-tvm targets`) or a TVM target as JSON"
            )
        tvm_dict, name, family = _fill_host(preset.tvm), preset.name, preset.family
        description = preset.description
    try:
        target = tvm.target.Target(tvm_dict)
    except Exception as err:  # TVM raises a variety of errors for malformed targets
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise TargetError(f"TVM rejects the target {json.dumps(tvm_dict)}: {first}") from None
    return ResolvedTarget(name=name, family=family, tvm_target=target, description=description)
