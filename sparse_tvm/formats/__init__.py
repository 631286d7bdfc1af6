"""Sparse weight formats."""

from .block_sparse import BlockSparseWeight, zero_block_fraction

__all__ = ["BlockSparseWeight", "zero_block_fraction"]
