"""``compile_micro``: an ONNX model to a self-contained C project for a Cortex-M.

1. import    ONNX -> Relax with named weights                (sparse_tvm.frontend)
2. analyse   layers with a constant weight                   (driver.compile_model.analyse)
3. choose    the project's cost model decides sparse or dense (``decide``, unmeasured: there
             is no device to time on); a sparse layer takes the r x 1 block shape and index
             encoding with the fewest bytes (micro.compact), and stays dense unless that is
             smaller than the dense weight: on a microcontroller the rule is "smaller at
             equal speed"
4. lower     rewrite, legalize, fuse, walk into a call sequence; kernels by TVM's c target
5. plan      one static arena for the intermediate tensors and kernel workspaces
6. emit      model.h / model.c / kernels / weights / Makefile / board files, and main.c:
             an example application (the example input; ``make host`` / ``make run``)
7. measure   the objects with arm-none-eabi-gcc; refuse a model that does not fit the preset
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from sparse_tvm.analysis import block_zero_fractions
from sparse_tvm.driver.compile_model import analyse, decide, model_name
from sparse_tvm.errors import SparseTVMError
from sparse_tvm.frontend import ImportedModel, import_onnx
from sparse_tvm.micro import harness
from sparse_tvm.micro.compact import smallest_compact
from sparse_tvm.micro.emit import output_storage, write_project
from sparse_tvm.micro.harness import IOSpec
from sparse_tvm.micro.lower import Program, lower
from sparse_tvm.micro.planner import ArenaPlan, check_plan, plan_memory
from sparse_tvm.micro.report import BuildSizes, LayerRow, MicroReport, check_budget, measure
from sparse_tvm.micro.rewrite import MicroPlan
from sparse_tvm.micro.target import MicroTarget, micro_target
from sparse_tvm.target import resolve_target


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
            raise SparseTVMError(f"no qemu board is known for {self.target.name}")
        self._write_main(inputs, expected, atol)
        return harness.run_qemu(self.folder, [s.shape for s in self.outputs])

    def run_host(self, inputs=None, expected=None, *, atol: float = 1e-4) -> harness.RunResult:
        """The same as :meth:`run_qemu` with ``make host`` (the host's C compiler)."""
        self._write_main(inputs, expected, atol)
        return harness.run_host(self.folder, [s.shape for s in self.outputs])


def _choose(imported: ImportedModel, target, dense: bool, threshold: float | None, say):
    plans, rows = [], []
    for layer in analyse(imported):
        fractions = block_zero_fractions(layer.weight)
        decision = decide(
            layer,
            target,
            dense=dense,
            sparsity_threshold=threshold,
            measure=False,
            zero_fractions=fractions,
        )
        dense_bytes = int(layer.weight.size * 4)
        label, stored, reason = "dense", dense_bytes, decision.choice.reason
        if decision.weight is not None:
            compact = smallest_compact(layer.weight)
            if compact.nbytes < dense_bytes:
                plans.append(MicroPlan(layer, compact))
                label, stored = compact.label, compact.nbytes
                reason = f"{compact.nbytes / dense_bytes:.0%} of the dense bytes"
            else:
                reason = "sparse storage is not smaller than dense"
        rows.append(
            LayerRow(
                layer.name,
                layer.op,
                list(layer.shape),
                layer.sparsity,
                label,
                dense_bytes,
                stored,
                reason,
            )
        )
        say(f"  {layer.name}: {label}")
    return plans, rows


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


def compile_micro(
    model: str | os.PathLike | onnx.ModelProto,
    target: str | dict = "cortex-m4",
    output_dir: str | os.PathLike = "out",
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    sparsity_threshold: float | None = None,
    dense: bool = False,
    progress: Callable[[str], None] | None = None,
    prefix: str = "model",
    compare_dense: bool = True,
) -> MicroProject:
    """Compile an ONNX model into a self-contained C project for a microcontroller.

    Parameters
    ----------
    model
        Path to an ``.onnx`` file or an ``onnx.ModelProto``.
    target
        A microcontroller preset: ``cortex-m3``, ``cortex-m4``, ``cortex-m7``, ``cortex-m55``.
    output_dir
        The project folder (created; files of an earlier project there are overwritten).
    input_shapes
        Static shapes for inputs with dynamic dimensions, by input name.
    sparsity_threshold
        Layers whose sparsity is below this stay dense.
    dense
        Compile every layer dense (the baseline build).
    progress
        Called with one line per stage and per layer.
    prefix
        Prefix of the C files and symbols (``model.h``, ``model_run``).
    compare_dense
        Also lower the dense build (not written) for the size report's dense column.

    Returns
    -------
    MicroProject
        With ``.report`` (per-layer formats and the size table, ``str()`` / ``.to_json()``).

    Raises
    ------
    MicroBudgetError
        When the build does not fit the preset's flash or RAM (the message has the sizes).
    """
    say = progress or (lambda _line: None)
    if sparsity_threshold is not None and not 0.0 <= sparsity_threshold <= 1.0:
        raise SparseTVMError(f"sparsity threshold {sparsity_threshold} is outside [0, 1]")
    if not prefix.isidentifier():
        raise SparseTVMError(f"prefix '{prefix}' is not a C identifier")
    mt = micro_target(target)
    resolved = resolve_target(target)
    name = model_name(model)
    say(f"importing {name}")
    imported = import_onnx(model, input_shapes)
    plans, rows = _choose(imported, resolved, dense, sparsity_threshold, say)
    say(f"lowering {len(plans)} sparse and {len(rows) - len(plans)} dense layers to C")
    program = lower(imported, plans, prefix)
    report = MicroReport(name, mt.name, mt.flash_kb, mt.ram_kb, rows)
    summary = f"model {name}: {len(plans)} sparse layers of {len(rows)}"
    inputs = [
        IOSpec(n, tuple(program.tensors[i].shape))
        for n, i in zip(program.input_names, program.inputs)
    ]
    outputs = [
        IOSpec(n, tuple(program.tensors[i].shape))
        for n, i in zip(program.output_names, program.outputs)
    ]
    out = Path(output_dir)
    with tempfile.TemporaryDirectory(prefix="sparse_tvm_micro_") as tmp:
        staged = Path(tmp) / "project"
        report.sizes, _, _ = _emit(program, mt, staged, prefix, summary)
        if compare_dense and plans:
            say("lowering the dense build for the size report")
            report.dense, _, _ = _emit(
                lower(imported, [], prefix), mt, Path(tmp) / "dense", prefix, "dense baseline"
            )
        elif compare_dense:
            report.dense = report.sizes
        check_budget(report)
        example = harness.example_inputs(inputs)
        harness.write_main(staged, prefix, mt, inputs, outputs, [example[s.name] for s in inputs])
        (staged / "report.txt").write_text(str(report) + "\n")
        (staged / "report.json").write_text(report.to_json() + "\n")
        shutil.rmtree(staged / "build", ignore_errors=True)
        mine = out / "main.c"
        if mine.is_file() and "generated by sparse-tvm" not in mine.read_text(errors="replace"):
            # the user's application replaced the example: recompiling keeps it
            say("keeping your main.c (the example is main.example.c)")
            (staged / "main.c").rename(staged / "main.example.c")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, out, dirs_exist_ok=True)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    # no path here: the caller may move the folder (the CLI builds in a temporary one)
    say(
        f"project: flash {report.sizes.flash / 1024:.1f} KB, arena {report.sizes.arena / 1024:.1f} KB"
    )
    return MicroProject(out, mt, report, inputs, outputs, prefix, files)
