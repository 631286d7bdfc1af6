"""The Relax compilation pipeline for NVIDIA GPUs: TVM's CUDA phases with the dlight GPU rules.

``tvm.compile(mod, target=target, relax_pipeline=cuda_pipeline(target))`` runs, in order:

1. library dispatch (sort/scan/sampling), as TVM's CUDA pipeline does;
2. legalize + fuse, with the already-scheduled sparse kernels kept out of fusion (as on CPUs,
   :func:`sparse_tvm.pipeline.cpu.legalize_passes`);
3. schedule: every PrimFunc not already scheduled gets the first of TVM's dlight GPU rules
   that applies: ``Matmul``, ``GEMV``, ``Reduction``, ``GeneralReduction``, ``Fallback`` (the
   order of ``relax.backend.cuda``'s default pipeline); a rule that raises is skipped, the next
   one tried. The sparse kernels (thread-bound TVMScript, ``tirx.is_scheduled``) are left
   alone and restored exactly as they came in;
4. dataflow lowering and finalization (memory planning, CUDA graphs, VM lowering), as TVM's.

The result holds CUDA C for the device code and host code for the target's ``host``
(x86-64 by default); the CUDA C is compiled to a GPU binary when the module is loaded on a
GPU machine (TVM's ``tvm_callback_cuda_compile``: NVRTC, or nvcc with
``TVM_CUDA_COMPILE_MODE=nvcc``).
"""

from __future__ import annotations

import tvm
from tvm.ir import IRModule
from tvm.relax.backend.cuda import pipeline as cuda_generic
from tvm.s_tir import dlight as dl
from tvm.target import Target

from sparse_tvm.pipeline.cpu import (
    ApplyCPUSchedules,
    legalize_passes,
    restore_scheduled_kernels,
    scheduled_kernels,
)


def gpu_rules() -> list:
    """TVM's dlight GPU rules, in the order of TVM's own CUDA pipeline."""
    return [
        dl.gpu.Matmul(),
        dl.gpu.GEMV(),
        dl.gpu.Reduction(),
        dl.gpu.GeneralReduction(),
        dl.gpu.Fallback(),
    ]


def cuda_passes(target: Target, originals: list) -> list[tvm.transform.Pass]:
    """The passes of :func:`cuda_pipeline`; ``originals`` are the already-scheduled kernels."""
    return (
        cuda_generic.library_dispatch_passes(target)
        + legalize_passes(target)
        # the rule runner skips a rule that raises (dlight's own pass stops the build)
        + [ApplyCPUSchedules(gpu_rules()), restore_scheduled_kernels(originals)]
        + cuda_generic.dataflow_lower_passes(target)
        + cuda_generic.finalize_passes(target)
    )


def cuda_pipeline(target: Target) -> tvm.transform.Pass:
    """Relax pipeline for ``tvm.compile(mod, target=target, relax_pipeline=cuda_pipeline(target))``.

    ``target``: a ``cuda`` target (``arch`` sets the GPU generation the rules plan for).
    """

    @tvm.transform.module_pass(opt_level=0, name="SparseTVMCUDAPipeline")
    def _pipeline(mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        with target:
            return tvm.transform.Sequential(cuda_passes(target, scheduled_kernels(mod)))(mod)

    return _pipeline
