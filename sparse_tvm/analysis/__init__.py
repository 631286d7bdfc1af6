"""Where layers are found and formats chosen: analysis of a Relax model, no compilation."""

from sparse_tvm.analysis.format_choice import (
    CANDIDATE_BLOCKS,
    FormatChoice,
    block_label,
    block_zero_fractions,
    choose_format,
    parse_block,
)
from sparse_tvm.analysis.layers import ConvGeometry, Layer, find_layers
from sparse_tvm.analysis.model_layers import analyse

__all__ = [
    "CANDIDATE_BLOCKS",
    "ConvGeometry",
    "FormatChoice",
    "Layer",
    "analyse",
    "block_label",
    "block_zero_fractions",
    "choose_format",
    "find_layers",
    "parse_block",
]
