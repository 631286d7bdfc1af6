"""ONNX frontend: from a path or ``ModelProto`` to a Relax IRModule with named weights.

``import_onnx`` runs the stages in order: ``load_onnx`` -> ``fix_input_shapes`` ->
``fold_constants`` -> TVM's ``from_onnx`` with the weights kept as parameters.
"""

from sparse_tvm.frontend.fold import fold_constants
from sparse_tvm.frontend.input_shapes import fix_input_shapes, graph_inputs, parse_input_shapes
from sparse_tvm.frontend.load import load_onnx
from sparse_tvm.frontend.to_relax import ImportedModel, import_onnx

__all__ = [
    "ImportedModel",
    "fix_input_shapes",
    "fold_constants",
    "graph_inputs",
    "import_onnx",
    "load_onnx",
    "parse_input_shapes",
]
