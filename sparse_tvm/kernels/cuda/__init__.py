"""Sparse kernels for NVIDIA GPUs (TVMScript with thread bindings): SpMM and im2col."""

from .im2col import cuda_im2col_kernel
from .spmm import CudaKnobs, cuda_spmm_kernel, default_cuda_knobs

__all__ = ["CudaKnobs", "cuda_im2col_kernel", "cuda_spmm_kernel", "default_cuda_knobs"]
