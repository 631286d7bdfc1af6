"""The NVIDIA GPU back end: CUDA kernels (``sparse_tvm.kernels.cuda``), TVM's CUDA phases with
the dlight GPU rules for the dense operators (``sparse_tvm.pipeline.cuda``), tuning on this
machine's GPU, artefacts run on ``tvm.cuda()``.

Layers are not timed (layer timing builds CPU code): the cost model picks each format, and
tuning records hold the tuned kernel of that format, not a choice between formats.
"""

from __future__ import annotations

from typing import Any

import tvm

from sparse_tvm.backends.library import LibraryBackend
from sparse_tvm.errors import DeviceError, TargetError
from sparse_tvm.transform.dense_to_sparse import kernel_options
from sparse_tvm.transform.spmm_lowering import SpmmLowering


class CudaBackend(LibraryBackend):
    family = "cuda"
    shipped_records = "cuda.json"
    records_choose_format = False

    def lowering(self) -> SpmmLowering:
        from sparse_tvm.kernels.cuda import cuda_im2col_kernel, cuda_spmm_kernel

        return SpmmLowering(self.tvm_target, spmm=cuda_spmm_kernel, im2col=cuda_im2col_kernel)

    def relax_pipeline(self) -> tvm.transform.Pass:
        from sparse_tvm.pipeline.cuda import cuda_pipeline

        return cuda_pipeline(self.tvm_target)

    def can_time_here(self) -> bool:
        return False  # layer timing runs CPU builds: nothing times GPU kernels yet

    def untimed_reason(self) -> str:
        return (
            "formats chosen by the cost model: sparse-tvm does not time layers on a GPU "
            "(the CUDA kernels are compiled, not measured)"
        )

    def check_tuning(self, rpc_tracker: str | None) -> None:
        if rpc_tracker is not None:
            raise TargetError(
                "CUDA kernels are tuned on this machine's GPU, not over RPC: drop --rpc-tracker "
                "and run `sparse-tvm tune` on the GPU machine"
            )
        if not tvm.cuda(0).exist:
            raise DeviceError(
                f"no CUDA device: tuning for {self.target.name} runs the candidates on a GPU of "
                "this machine; run `sparse-tvm tune` on the GPU machine"
            )

    def measured_on(self, board) -> str:
        return tvm.cuda(0).device_name

    def tune_kernel(self, weight, layer, **settings: Any):
        """:func:`sparse_tvm.tuning.tune_cuda.tune_cuda_kernel` on the local GPU (``trials``,
        ``database``, ``work_dir``; the CPU runner's other settings do not apply)."""
        from sparse_tvm.tuning.tune_cuda import tune_cuda_kernel

        keep = {k: settings[k] for k in ("trials", "database", "work_dir") if k in settings}
        return tune_cuda_kernel(
            weight, layer.m, target=self.tvm_target, **keep, **kernel_options(layer)
        )

    def lookup_kernel(self, weight, layer, database):
        from sparse_tvm.tuning.tune_cuda import lookup_cuda_kernel

        return lookup_cuda_kernel(
            weight, layer.m, target=self.tvm_target, database=database, **kernel_options(layer)
        )


__all__ = ["CudaBackend"]
