"""Hand-scheduled TVMScript kernels: block-sparse SpMM and im2col."""

from .im2col import im2col_kernel, im2col_nhwc_kernel
from .spmm import spmm_kernel

__all__ = ["im2col_kernel", "im2col_nhwc_kernel", "spmm_kernel"]
