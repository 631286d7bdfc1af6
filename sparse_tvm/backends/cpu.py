"""``CPUBackend``: what x86 and Arm CPUs share: LLVM code, the hand-scheduled SpMM kernels
(im2col + SpMM, int32 indices), the CPU Relax pipeline, and MetaSchedule tuning of the
kernels' knob space on this host or on a board over RPC."""

from __future__ import annotations

import dataclasses
import platform
from typing import TYPE_CHECKING, Any

import tvm

from sparse_tvm.backends.library import LibraryBackend
from sparse_tvm.errors import TargetError
from sparse_tvm.kernels.spmm import kernel_knobs, spmm_spec
from sparse_tvm.kernels.spmm_colvec import row_split_knobs
from sparse_tvm.pipeline import cpu_pipeline
from sparse_tvm.target.machine import int8_isa
from sparse_tvm.transform.channels_last import to_channels_last
from sparse_tvm.transform.dense_to_sparse import kernel_options
from sparse_tvm.transform.int8_lowering import int8_layer, int8_spec
from sparse_tvm.transform.layout_choice import sparse_layout_pays
from sparse_tvm.transform.spmm_lowering import SpmmLowering

if TYPE_CHECKING:
    from sparse_tvm.frontend import ImportedModel


class CPUBackend(LibraryBackend):
    """An LLVM CPU target: Linux on x86-64 or aarch64."""

    fuses_gelu = True

    def prepare(self, imported: ImportedModel, *, channels_first: bool = True) -> ImportedModel:
        """CNNs in channels-last (NHWC convs and pools, HWIO weights), except a CNN whose convs
        all go sparse, which stays channels-first where ``channels_first`` allows it: see
        :mod:`sparse_tvm.transform.channels_last` and :mod:`sparse_tvm.transform.layout_choice`
        for why."""
        if channels_first and sparse_layout_pays(imported):
            return imported
        return to_channels_last(imported)

    def lowering(self) -> SpmmLowering:
        return SpmmLowering(self.tvm_target)

    def relax_pipeline(self) -> tvm.transform.Pass:
        return cpu_pipeline(self.tvm_target)

    def schedule_variants(self, layer, weight) -> list[dict[str, int]]:
        """The other loop order of the vector kernels (``order`` 1: for the column-vector one,
        m tiles innermost in the parallel space, so a thread keeps a block row's weights and
        writes Y rows contiguously). Neither order wins by a rule one can state: at 90 % 4x1,
        MobileNet-v2's 96x16 1x1 conv at 112x112 ran 377 us in order 0 and 182 us in order 1,
        its 144x24 one at 56x56 73 us against 93 us.

        A column-vector kernel with K panels (the default for CSR, see
        :mod:`sparse_tvm.kernels.spmm_colvec`) has no loop order of its own; its variants are
        the unpanelled kernel in both orders. A small CSR weight's default kernel splits the m
        columns between the cores (``split``); its variants are the row-split kernels, with and
        without K panels. The sliced matrix-vector kernel on AVX-512 takes the columns in
        chunks gathered by permutes (``chunk`` 32, :mod:`sparse_tvm.kernels.spmv_chunked`): a
        2x-padded weight for cheaper gathers, which wins where the weight streams fast enough;
        its variant is the element-by-element gather (``chunk`` 0). The other kernels (scalar,
        unrolled) have no loop order to vary."""
        strategy, knobs = kernel_knobs(
            weight, layer.m, **kernel_options(layer), target=self.tvm_target
        )
        if strategy == "sliced":
            return [{"chunk": 0}] if knobs.chunk else []
        if strategy not in ("rowvec", "colvec"):
            return []
        if strategy == "colvec" and knobs.split:
            # the m-split kernel's gain is in the model too (its neighbours find their rows
            # in their own core's cache), which a layer timed alone does not show: its
            # variants are the row-split kernels, kept where faster alone by VARIANT_MARGIN
            rows = spmm_spec(weight, layer.m, **kernel_options(layer), target=self.tvm_target)
            row = row_split_knobs(rows)
            variants = [{"split": 0, "MV": row.MV, "panel": row.panel}]
            if row.panel > 0:
                variants.append({"split": 0, "MV": row.MV, "panel": 0})
            return variants
        if strategy == "colvec" and knobs.panel > 0:
            return [{"panel": 0}, {"panel": 0, "order": 1}]
        return [{"order": 1}]

    def check_tuning(self, rpc_tracker: str | None) -> None:
        if rpc_tracker is None and not self.can_time_here():
            raise TargetError(
                f"tuning for {self.target.name} needs a board: this {platform.machine()} machine "
                "cannot run its code; start python -m tvm.exec.rpc_server on the board and pass "
                "--rpc-tracker HOST:PORT --rpc-key KEY"
            )

    def tune_kernel(self, weight, layer, **settings: Any):
        """:func:`sparse_tvm.tuning.tune_kernel` of the layer (``trials``, ``database``,
        ``board``, ``max_seconds``, ``work_dir``, ``progress``); ``ValueError`` when the layer
        has no tuning space (m = 1 CSR: the scalar kernel)."""
        from sparse_tvm.tuning import tune_kernel

        return tune_kernel(
            weight, layer.m, **kernel_options(layer), target=self.tvm_target, **settings
        )

    def lookup_kernel(self, weight, layer, database):
        from sparse_tvm.tuning import lookup_kernel

        return lookup_kernel(
            weight, layer.m, **kernel_options(layer), target=self.tvm_target, database=database
        )

    def _int8_task(self, layer):
        """The int8 kernel's (blocks, spec) of ``layer`` (a layer with int8 operands)."""
        isa = int8_isa(self.tvm_target)
        int8, blocks = int8_layer(layer)
        blocks = dataclasses.replace(blocks, isa=isa)
        return blocks, int8_spec(int8, blocks, isa)

    def tune_int8_kernel(self, layer, **settings: Any):
        """:func:`sparse_tvm.tuning.tune_int8.tune_int8_kernel` of the layer's int8 kernel
        (``layer.int8`` set, the target with int8 dot products; settings as
        :meth:`tune_kernel`'s)."""
        from sparse_tvm.tuning.tune_int8 import tune_int8_kernel

        blocks, spec = self._int8_task(layer)
        return tune_int8_kernel(blocks, spec, target=self.tvm_target, **settings)

    def lookup_int8_kernel(self, layer, database):
        """The tuned knobs of the layer's int8 kernel in ``database`` (a ``KernelRecord``), or
        None."""
        from sparse_tvm.tuning.tune_int8 import lookup_int8_kernel

        blocks, spec = self._int8_task(layer)
        return lookup_int8_kernel(blocks, spec, target=self.tvm_target, database=database)

    def kernel_with_knobs(self, weight, layer, knobs: dict[str, int]):
        from sparse_tvm.tuning.tune_kernel import kernel_with_knobs

        return kernel_with_knobs(
            weight, layer.m, knobs, **kernel_options(layer), target=self.tvm_target
        )


__all__ = ["CPUBackend"]
