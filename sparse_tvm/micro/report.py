"""The size report of a micro build: flash (code, weights) and RAM (arena, stack), dense beside
sparse, measured on the objects the cross compiler produces from the emitted sources."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sparse_tvm.errors import CompileError, MicroBudgetError
from sparse_tvm.micro.target import MicroTarget

CROSS_CC = "arm-none-eabi-gcc"
CROSS_SIZE = "arm-none-eabi-size"
OBJECT_CFLAGS = ("-O2", "-std=gnu11", "-ffunction-sections", "-fdata-sections", "-fstack-usage")


@dataclass
class BuildSizes:
    """Bytes of one build. ``None``: not measured (no cross compiler on this machine)."""

    weights: int  # constants in flash
    arena: int  # the static arena (intermediate tensors, kernel workspaces)
    code: int | None = None  # .text + .rodata of the model and kernels (descriptors included)
    static_ram: int | None = None  # .data + .bss besides the arena
    stack: int | None = None  # deepest call chain from PREFIX_run(), from -fstack-usage

    @property
    def flash(self) -> int:
        return self.weights + (self.code or 0)

    @property
    def ram(self) -> int:
        return self.arena + (self.static_ram or 0) + (self.stack or 0)


@dataclass
class LayerRow:
    name: str
    op: str
    weight_shape: list[int]
    sparsity: float
    format: str
    dense_bytes: int
    stored_bytes: int
    reason: str = ""


@dataclass
class MicroReport:
    """Per-layer formats and the size table of a micro build."""

    model: str
    target: str
    flash_kb: int
    ram_kb: int
    layers: list[LayerRow] = field(default_factory=list)
    sizes: BuildSizes | None = None
    dense: BuildSizes | None = None  # the dense build of the same model, for comparison

    def table(self) -> str:
        """The size table: one row per quantity, dense beside sparse."""
        builds = (
            [("dense", self.dense), ("sparse", self.sizes)]
            if self.dense
            else [("build", self.sizes)]
        )
        rows = [
            ("flash: code", lambda s: s.code),
            ("flash: weights", lambda s: s.weights),
            ("flash total", lambda s: s.flash if s.code is not None else None),
            ("RAM: arena", lambda s: s.arena),
            (
                "RAM: static + stack",
                lambda s: None if s.stack is None else (s.static_ram or 0) + s.stack,
            ),
            ("RAM total", lambda s: s.ram if s.stack is not None else None),
        ]
        head = f"{'':22}" + "".join(f"{name:>12}" for name, _ in builds)
        if self.dense:
            head += f"{'sparse/dense':>14}"
        lines = [head]
        for label, get in rows:
            values = [get(b) for _, b in builds]
            line = f"{label:22}" + "".join(f"{_kb(v):>12}" for v in values)
            if self.dense and None not in values and values[0]:
                line += f"{values[1] / values[0]:>13.0%} "
            lines.append(line)
        return "\n".join(lines)

    def __str__(self) -> str:
        lines = [
            f"{self.model} for {self.target} (budget: {self.flash_kb} KB flash, {self.ram_kb} KB RAM)"
        ]
        width = max([len(r.name) for r in self.layers] + [5])
        for r in self.layers:
            lines.append(
                f"  {r.name:{width}}  {r.op:7} {'x'.join(map(str, r.weight_shape)):>12}  "
                f"sparsity {r.sparsity:5.1%}  {r.format:22} {_kb(r.stored_bytes):>10} "
                f"(dense {_kb(r.dense_bytes)})"
            )
        lines.append(self.table())
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _kb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1024:.1f} KB"


def cross_compiler_available() -> bool:
    return shutil.which(CROSS_CC) is not None and shutil.which(CROSS_SIZE) is not None


def _stack_usage(folder: Path, prefix: str) -> int:
    frames: dict[str, int] = {}
    for su in (folder / "build").glob("*.su"):
        for line in su.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                frames[parts[0].rsplit(":", 1)[-1]] = int(parts[1])
    kernels = [v for k, v in frames.items() if k.startswith(f"{prefix}_") and k != f"{prefix}_run"]
    workspace = frames.get("TVMBackendAllocWorkspace", 0)
    # PREFIX_run -> one kernel -> the workspace allocator; 64 bytes for the exception frame
    # an interrupt may push on top.
    return frames.get(f"{prefix}_run", 0) + max(kernels, default=0) + workspace + 64


def measure(
    folder: Path, target: MicroTarget, sizes: BuildSizes, prefix: str = "model"
) -> BuildSizes:
    """Compile the project's sources for the target and fill ``code``, RAM and stack."""
    if not cross_compiler_available():
        return sizes
    build = folder / "build"
    build.mkdir(exist_ok=True)
    names = [f"{prefix}.c", f"{prefix}_kernels.c", f"{prefix}_weights.c"]
    jobs = [
        subprocess.Popen(
            [CROSS_CC, *target.cflags, *OBJECT_CFLAGS, "-c", name, "-o", f"build/{name[:-2]}.o"],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    for job, name in zip(jobs, names):
        _, err = job.communicate()
        if job.returncode != 0:
            raise CompileError(f"{CROSS_CC} failed on {name}: {err.strip().splitlines()[-1:]}")
    objects = [f"build/{n[:-2]}.o" for n in names]
    out = subprocess.run(
        [CROSS_SIZE, *objects], cwd=folder, capture_output=True, text=True, check=True
    ).stdout
    rows = {}
    for line in out.splitlines()[1:]:
        text, data, bss, *_rest, name = line.split()
        rows[Path(name).stem] = (int(text), int(data), int(bss))
    weights_text = rows[f"{prefix}_weights"][0]
    sizes.weights = weights_text
    sizes.code = rows[prefix][0] + rows[f"{prefix}_kernels"][0]
    static = sum(d + b for _t, d, b in rows.values())
    sizes.static_ram = max(0, static - sizes.arena)
    sizes.stack = _stack_usage(folder, prefix)
    return sizes


def check_budget(report: MicroReport) -> None:
    """Raise :class:`MicroBudgetError` with the sizes when the build does not fit."""
    s = report.sizes
    problems = []
    if s.flash > report.flash_kb * 1024:
        code = "code n/a" if s.code is None else f"code {_kb(s.code)}"
        problems.append(
            f"flash needs {_kb(s.flash)} ({code} + weights {_kb(s.weights)}) of {report.flash_kb} KB"
        )
    if s.ram > report.ram_kb * 1024:
        problems.append(
            f"RAM needs {_kb(s.ram)} (arena {_kb(s.arena)} + static and stack "
            f"{_kb((s.static_ram or 0) + (s.stack or 0))}) of {report.ram_kb} KB"
        )
    if problems:
        raise MicroBudgetError(
            f"{report.model} does not fit {report.target}: {'; '.join(problems)}; "
            "prune more, use smaller input shapes, or pick a larger target"
        )
