"""A microcontroller C project: what ``st.compile(model, target="cortex-m4", output=DIR)``
returns, and how the back end builds it from the compiler's per-layer decisions.

1. lower     rewrite (the micro lowering), legalize, fuse, walk into a call sequence; kernels by
             TVM's c target
2. plan      one static arena for the intermediate tensors and kernel workspaces
3. emit      model.h / model.c / kernels / weights / Makefile / board files, and main.c:
             an example application (the example input; ``make host`` / ``make run``)
4. measure   the objects with arm-none-eabi-gcc; refuse a model that does not fit the preset
5. write     the folder (or its ``.tar``) whole: staged in a temporary folder first
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sparse_tvm.errors import DeviceError, OutputError
from sparse_tvm.frontend import ImportedModel
from sparse_tvm.micro import harness
from sparse_tvm.micro.emit import output_storage, write_project
from sparse_tvm.micro.harness import IOSpec
from sparse_tvm.micro.lower import Program, lower
from sparse_tvm.micro.planner import ArenaPlan, check_plan, plan_memory
from sparse_tvm.micro.report import BuildSizes, LayerRow, MicroReport, check_budget, measure
from sparse_tvm.micro.target import MicroTarget


@dataclass
class MicroProject:
    """An emitted C project: where it is, what it computes, and its size report."""

    folder: Path
    target: MicroTarget
    report: MicroReport
    inputs: list[IOSpec]
    outputs: list[IOSpec]
    prefix: str = "model"
    files: list[Path] = field(default_factory=list)

    @property
    def size_table(self) -> str:
        return self.report.table()

    @property
    def example_inputs(self) -> dict[str, np.ndarray]:
        """The built-in test input of the emitted ``main.c``, by input name."""
        return harness.example_inputs(self.inputs)

    def _write_main(self, inputs, expected, atol: float) -> None:
        if inputs is None:
            inputs = self.example_inputs
        if isinstance(inputs, dict):
            inputs = [inputs[spec.name] for spec in self.inputs]
        harness.write_main(
            self.folder,
            self.prefix,
            self.target,
            self.inputs,
            self.outputs,
            inputs,
            expected,
            atol=atol,
            rtol=atol,
        )

    def run_qemu(self, inputs=None, expected=None, *, atol: float = 1e-4) -> harness.RunResult:
        """Write ``main.c`` for these inputs and run it with ``make run`` (qemu).

        ``inputs`` is a dict by input name or a list in input order (default: the example
        input, which gives the emitted ``main.c`` again); with ``expected`` the program also
        checks its outputs (exit status 1 on a mismatch). Replaces the project's ``main.c``.
        """
        if not self.target.qemu_machine:
            raise DeviceError(
                f"no qemu board is known for {self.target.name}: run it with run_host"
            )
        self._write_main(inputs, expected, atol)
        return harness.run_qemu(self.folder, [s.shape for s in self.outputs])

    def run_host(self, inputs=None, expected=None, *, atol: float = 1e-4) -> harness.RunResult:
        """The same as :meth:`run_qemu` with ``make host`` (the host's C compiler)."""
        self._write_main(inputs, expected, atol)
        return harness.run_host(self.folder, [s.shape for s in self.outputs])


def _emit(
    program: Program, target: MicroTarget, folder: Path, prefix: str, summary: str
) -> tuple[BuildSizes, list[Path], ArenaPlan]:
    out_storage = output_storage(program)
    plan = plan_memory(program, set(out_storage))
    check_plan(plan)
    files = write_project(
        program, plan, out_storage, target, folder, prefix=prefix, summary=summary
    )
    weights = sum(t.nbytes for t in program.tensors if t.kind == "constant")
    sizes = measure(folder, target, BuildSizes(weights=weights, arena=plan.size), prefix)
    # the linker script reserves the measured stack (at least 2 KB: the test's printf)
    if sizes.stack is not None:
        stack = max(2048, -(-sizes.stack // 256) * 256)
        link = folder / "board" / "link.ld"
        link.write_text(link.read_text().replace("- 4096;", f"- {stack};"))
    return sizes, files, plan


def build_project(
    imported: ImportedModel,
    plans: list,
    rows: list[LayerRow],
    target: MicroTarget,
    output: str | os.PathLike,
    *,
    name: str,
    prefix: str = "model",
    compare_dense: bool = True,
    dense_plans: list | None = None,
    say: Callable[[str], None] = lambda _line: None,
) -> MicroProject:
    """Lower, plan, emit and measure the C project of ``imported`` with the sparse ``plans``
    (``SparsePlan`` of compact weights), and write it to ``output``: a folder (an earlier
    project's files there are overwritten, the user's own ``main.c`` kept), or a ``.tar`` of the
    folder when ``output`` ends in ``.tar``. Nothing is written when a step fails.

    The size report's dense column is the build with ``dense_plans`` only (a quantized
    model's layers in the dense int8 layout; none: every layer dense float32).

    Raises :class:`~sparse_tvm.errors.MicroBudgetError` when the build does not fit the preset.
    """
    say(f"lowering {len(plans)} sparse and {len(rows) - len(plans)} dense layers to C")
    program = lower(imported, plans, prefix)
    report = MicroReport(name, target.name, target.flash_kb, target.ram_kb, rows)
    summary = f"model {name}: {len(plans)} sparse layers of {len(rows)}"
    inputs = [
        IOSpec(n, tuple(program.tensors[i].shape))
        for n, i in zip(program.input_names, program.inputs)
    ]
    outputs = [
        IOSpec(n, tuple(program.tensors[i].shape))
        for n, i in zip(program.output_names, program.outputs)
    ]
    out = Path(output)
    as_tar = out.suffix == ".tar"
    if as_tar and out.is_dir():
        raise OutputError(f"output '{out}' is a folder: name a .tar file or drop the .tar")
    if not out.parent.exists():
        raise OutputError(f"output folder '{out.parent}' does not exist: create it first")
    with tempfile.TemporaryDirectory(prefix="sparse_tvm_micro_") as tmp:
        staged = Path(tmp) / (out.stem if as_tar else "project")
        report.sizes, _, _ = _emit(program, target, staged, prefix, summary)
        dense_plans = dense_plans or []
        dense_already = len(plans) == len(dense_plans) and all(
            p.weight is d.weight for p, d in zip(plans, dense_plans)
        )  # the build is its own dense build
        if compare_dense and not dense_already:
            say("lowering the dense build for the size report")
            report.dense, _, _ = _emit(
                lower(imported, dense_plans, prefix),
                target, Path(tmp) / "dense", prefix, "dense baseline",
            )  # fmt: skip
        elif compare_dense:
            report.dense = report.sizes
        check_budget(report)
        example = harness.example_inputs(inputs)
        harness.write_main(
            staged, prefix, target, inputs, outputs, [example[s.name] for s in inputs]
        )
        (staged / "report.txt").write_text(str(report) + "\n")
        (staged / "report.json").write_text(report.to_json() + "\n")
        shutil.rmtree(staged / "build", ignore_errors=True)
        if as_tar:
            _write_tar(staged, out)
        else:
            _write_folder(staged, out, say)
    files = [] if as_tar else sorted(p for p in out.rglob("*") if p.is_file())
    say(
        f"project: flash {report.sizes.flash / 1024:.1f} KB, arena {report.sizes.arena / 1024:.1f} KB"
    )
    return MicroProject(out, target, report, inputs, outputs, prefix, files)


def _write_folder(staged: Path, out: Path, say: Callable[[str], None]) -> None:
    mine = out / "main.c"
    if mine.is_file() and "generated by sparse-tvm" not in mine.read_text(errors="replace"):
        # the user's application replaced the example: recompiling keeps it
        say("keeping your main.c (the example is main.example.c)")
        (staged / "main.c").rename(staged / "main.example.c")
    try:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, out, dirs_exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot write '{out}': {err.strerror or err}") from None


def _write_tar(staged: Path, out: Path) -> None:
    import tarfile

    from sparse_tvm.files import write_atomically

    def write(tmp: str) -> None:
        with tarfile.open(tmp, "w") as tar:
            tar.add(staged, arcname=staged.name)

    try:
        write_atomically(out, write)
    except OSError as err:
        raise OutputError(f"cannot write '{out}': {err.strerror or err}") from None
