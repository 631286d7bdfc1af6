"""Where the Relax rewrite passes live."""

from sparse_tvm.transform.dense_to_sparse import DenseToSparse, SparsePlan

__all__ = ["DenseToSparse", "SparsePlan"]
