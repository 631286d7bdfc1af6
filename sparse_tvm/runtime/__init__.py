"""Running, timing, exporting and loading compiled models."""

from sparse_tvm.runtime.artefact import export_artefact, load_artefact, read_metadata
from sparse_tvm.runtime.compiled_model import CompiledModel, InputCastWarning, TensorSpec

__all__ = [
    "CompiledModel",
    "InputCastWarning",
    "TensorSpec",
    "export_artefact",
    "load_artefact",
    "read_metadata",
]
