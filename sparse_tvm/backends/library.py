"""``LibraryBackend``: the back ends whose artefact is a TVM library run by the Relax VM.

Linux CPUs and NVIDIA GPUs build the same way: the chosen layers rewritten to sparse kernel
calls (the back end's lowering), the dense weights bound as constants, ``tvm.compile`` with the
back end's Relax pipeline, and a :class:`~sparse_tvm.runtime.CompiledModel` around the
executable (exported as a ``.tar`` when the options name an output).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tvm
from tvm import relax

from sparse_tvm.backends.base import Backend, Say
from sparse_tvm.errors import CompileError
from sparse_tvm.logs import native_quiet
from sparse_tvm.runtime.artefact import check_output_path
from sparse_tvm.runtime.compiled_model import CompiledModel, TensorSpec, device_for
from sparse_tvm.transform.dense_to_sparse import DenseToSparse, SparsePlan

if TYPE_CHECKING:
    from sparse_tvm.frontend import ImportedModel
    from sparse_tvm.options import CompileOptions
    from sparse_tvm.report import Report


class LibraryBackend(Backend):
    """A back end whose artefact is a shared library with the Relax VM's executable."""

    def device(self) -> tvm.runtime.Device:
        """The device the artefact runs on."""
        return device_for(self.target.to_json())

    def check(self, options: CompileOptions) -> None:
        self.cross_compiler(options.cross_compiler)  # a missing one fails before the work
        if options.output is not None:
            check_output_path(options.output)
        if options.report is not None:
            from sparse_tvm.report_html import check_report_path

            check_report_path(options.report)

    def compile_module(self, mod: tvm.IRModule) -> tvm.runtime.Executable:
        """``tvm.compile`` of a Relax module with this back end's pipeline (TVM's log quiet)."""
        with native_quiet():
            return tvm.compile(mod, target=self.tvm_target, relax_pipeline=self.relax_pipeline())

    def build(
        self,
        imported: ImportedModel,
        decisions: list,
        report: Report,
        options: CompileOptions,
        say: Say,
    ) -> CompiledModel:
        plans = [
            SparsePlan(d.layer, d.weight, d.kernel, d.knobs)
            for d in decisions
            if d.weight is not None
        ]
        say(f"building {len(plans)} sparse and {len(decisions) - len(plans)} dense layers")
        mod = DenseToSparse(plans, self.lowering())(imported.mod)
        present = {p.name for p in mod["main"].params}
        binding = {
            name: tvm.runtime.tensor(value)
            for name, value in imported.params.items()
            if name in present
        }
        mod = relax.transform.BindParams("main", binding)(mod)
        try:
            executable = self.compile_module(mod)
        except Exception as err:  # TVM reports failures as many exception types
            message = " ".join(str(err).split())[:300]
            raise CompileError(
                f"TVM failed to compile the model ({type(err).__name__}: {message}); "
                "try --dense, and report the model if that fails too"
            ) from err
        compiled = CompiledModel(
            cross_compiler=self.cross_compiler(options.cross_compiler),
            executable=executable,
            inputs=_input_specs(imported),
            outputs=_output_specs(imported),
            report=report,
            target=self.target.to_json(),
        )
        if options.output is not None:
            compiled.export(options.output)
        if options.report is not None:
            from sparse_tvm.report_html import write_html

            write_html(report, options.report)
        return compiled


def _input_specs(imported: ImportedModel) -> list[TensorSpec]:
    dynamic = imported.input_dynamic_dims or [None] * len(imported.input_names)
    return [
        TensorSpec(n, tuple(s), d, dyn)
        for n, s, d, dyn in zip(
            imported.input_names, imported.input_shapes, imported.input_dtypes, dynamic
        )
    ]


def _output_specs(imported: ImportedModel) -> list[TensorSpec]:
    ret = imported.mod["main"].ret_ty
    fields = ret.fields if isinstance(ret, relax.TupleType) else [ret]
    specs = []
    for name, field in zip(imported.output_names, fields):
        shape = tuple(int(s) for s in field.shape) if field.shape is not None else ()
        specs.append(TensorSpec(name, shape, str(field.dtype)))
    return specs


__all__ = ["LibraryBackend"]
