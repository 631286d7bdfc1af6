"""Where the Relax rewrite passes live, and the layer lowerings they take."""

from sparse_tvm.transform.dense_to_sparse import DenseToSparse
from sparse_tvm.transform.lowering import LayerLowering, SparsePlan
from sparse_tvm.transform.spmm_lowering import SpmmLowering

__all__ = ["DenseToSparse", "LayerLowering", "SparsePlan", "SpmmLowering"]
