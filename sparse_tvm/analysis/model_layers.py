"""The layers of an imported model, named for a person: the analysis every command starts with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparse_tvm.analysis.layer_names import layer_display_names
from sparse_tvm.analysis.layers import Layer, find_layers

if TYPE_CHECKING:
    from sparse_tvm.frontend import ImportedModel


def analyse(imported: ImportedModel, *, gelu: bool = False) -> list[Layer]:
    """The layers of an imported model that have a constant weight, each with its display
    name (module path or ONNX node, see :mod:`sparse_tvm.analysis.layer_names`); ``gelu``:
    with the GELUs after them fused (for back ends whose kernels take one)."""
    func = imported.mod["main"]
    weights = {var: imported.params[var.name] for var in func.params if var.name in imported.params}
    layers = find_layers(func, weights, gelu=gelu, weight_scales=imported.weight_scales)
    names = layer_display_names([layer.name for layer in layers], imported.onnx_model)
    for layer, name in zip(layers, names, strict=True):
        layer.display_name = name
    return layers


__all__ = ["analyse"]
