"""The microcontroller back end (Cortex-M): a self-contained C project, not a loadable model.

There is no device to time on, so the cost model decides sparse or dense; a sparse layer then
takes the ``r x 1`` block shape and index encoding with the fewest bytes
(:func:`sparse_tvm.micro.compact.smallest_compact`) and stays dense unless that is smaller
than the dense weight: on a microcontroller the rule is "smaller at equal speed". The kernels are
serial C from TVM's ``c`` target, a direct sparse convolution instead of im2col
(:class:`sparse_tvm.micro.lowering.MicroLowering`). A quantized model's layers with int8
operands run the int8 ``SMLAD`` kernels, in the smallest of the dense int8 and sparse int8
layouts (:meth:`MicroBackend._store_int8`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import tvm

from sparse_tvm.analysis.format_choice import FormatChoice, format_of
from sparse_tvm.backends.base import Backend, Say
from sparse_tvm.errors import TargetError, UsageError
from sparse_tvm.micro.report import LayerRow

if TYPE_CHECKING:
    from sparse_tvm.frontend import ImportedModel
    from sparse_tvm.micro import MicroProject
    from sparse_tvm.options import CompileOptions
    from sparse_tvm.report import Report


class MicroBackend(Backend):
    family = "micro"
    makes_project = True

    def lowering(self):
        from sparse_tvm.micro.lowering import MicroLowering

        return MicroLowering()

    def relax_pipeline(self) -> tvm.transform.Pass:
        from sparse_tvm.micro.lower import relax_pipeline

        return relax_pipeline()

    def can_time_here(self) -> bool:
        return False

    def untimed_reason(self) -> str:
        return "formats chosen by the cost model and the bytes they store: no board to time on"

    def check_tuning(self, rpc_tracker: str | None) -> None:
        raise TargetError(
            f"tuning for {self.target.name} is not supported: microcontroller kernels are "
            "not tuned yet; compile with the cost model's formats"
        )

    def cross_compiler(self, given: str | None) -> str | None:
        return given  # the project's Makefile names arm-none-eabi-gcc itself

    def check(self, options: CompileOptions) -> None:
        from sparse_tvm.micro.target import micro_target

        micro_target(self.target)  # a preset with the board data the project needs
        if options.output is None:
            raise UsageError(
                f"'{self.target.name}' is a microcontroller: it gets a C project, not a "
                "loadable model: name the project folder (output=DIR, `-o DIR`)"
            )
        if options.report is not None:
            raise UsageError(
                "--report is for Linux targets: a microcontroller project has its size "
                "report (report.txt) in the output"
            )
        if options.records is not None:
            raise UsageError(
                "--records is for Linux targets: microcontroller kernels are not tuned"
            )

    def store(self, decision):
        """A layer decided sparse keeps the smallest compact encoding if it is smaller than
        the dense weight; dense otherwise. A quantized model's layer with int8 operands runs
        the int8 kernel (:meth:`_store_int8`)."""
        from sparse_tvm.micro.compact import smallest_compact
        from sparse_tvm.micro.int8_lowering import micro_int8_possible

        if micro_int8_possible(decision.layer):
            return self._store_int8(decision)
        if decision.weight is None:
            return decision
        layer = decision.layer
        dense_bytes = int(layer.weight.size * 4)
        compact = smallest_compact(layer.weight)
        if compact.nbytes < dense_bytes:
            reason = f"{compact.nbytes / dense_bytes:.0%} of the dense bytes"
            block = (compact.r, 1)  # the compact encoding's own block shape
            choice = dataclasses.replace(
                decision.choice, format=format_of(block), block=block, reason=reason
            )
            return dataclasses.replace(decision, weight=compact, choice=choice)
        choice = dataclasses.replace(
            decision.choice,
            format="dense",
            block=None,
            reason="sparse storage is not smaller than dense",
        )
        return dataclasses.replace(decision, weight=None, kernel=None, choice=choice)

    @staticmethod
    def _store_int8(decision):
        """The int8 kernel with the smaller of the dense int8 layout and the sparse ones (the
        dense one for a dense build): 8-bit weights take a quarter of the float bytes, and
        the ``SMLAD`` kernel does two multiply-adds an instruction."""
        from sparse_tvm.micro.conv_patches import patch_offsets
        from sparse_tvm.micro.int8_lowering import micro_int8_layer
        from sparse_tvm.micro.int8_weight import dense_int8, smallest_int8
        from sparse_tvm.report import REQUESTED

        layer = decision.layer
        weight = layer.int8.weight
        dense_requested = decision.decided_by == REQUESTED and decision.weight is None
        # a conv's sparse kernel stores offsets into its padded input as column indices
        columns = None if layer.conv is None else patch_offsets(layer.conv)
        stored = dense_int8(weight) if dense_requested else smallest_int8(weight, columns=columns)
        float_bytes = int(layer.weight.size * 4)
        if stored.dense:
            choice = FormatChoice("int8 dense", None, 1.0, "")
        else:
            choice = FormatChoice(f"int8 {format_of(stored.block)}", stored.block, 1.0, "")
        why = "dense build requested" if dense_requested else "the smallest int8 layout"
        reason = f"{why}: {stored.nbytes / float_bytes:.0%} of the float32 bytes"
        choice = dataclasses.replace(choice, reason=reason)
        return dataclasses.replace(
            decision, layer=micro_int8_layer(layer), weight=stored, kernel=None, choice=choice
        )

    def build(
        self,
        imported: ImportedModel,
        decisions: list,
        report: Report,
        options: CompileOptions,
        say: Say,
    ) -> MicroProject:
        from sparse_tvm.micro.int8_weight import dense_int8
        from sparse_tvm.micro.project import build_project
        from sparse_tvm.micro.target import micro_target
        from sparse_tvm.transform.dense_to_sparse import SparsePlan

        plans, rows, dense_plans = [], [], []
        for decision in decisions:
            layer = decision.layer
            dense_bytes = int(layer.weight.size * 4)
            sparse = decision.weight is not None
            if sparse:
                plans.append(SparsePlan(layer, decision.weight))
            if options.compare_dense and getattr(decision.weight, "is_int8", False):
                # the size report's dense build of an int8 layer: int8 dense
                stored = decision.weight
                dense = stored if stored.dense else dense_int8(layer.int8.weight)
                dense_plans.append(SparsePlan(layer, dense))
            rows.append(
                LayerRow(
                    layer.name,
                    layer.op,
                    list(layer.shape),
                    layer.sparsity,
                    decision.weight.label if sparse else "dense",
                    dense_bytes,
                    decision.weight.nbytes if sparse else dense_bytes,
                    decision.choice.reason,
                )
            )
        return build_project(
            imported,
            plans,
            rows,
            micro_target(self.target),
            options.output,
            name=report.model,
            prefix=options.prefix,
            compare_dense=options.compare_dense,
            dense_plans=dense_plans,
            say=say,
        )


__all__ = ["MicroBackend"]
