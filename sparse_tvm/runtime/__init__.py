"""Running, timing, exporting and loading compiled models."""

from sparse_tvm.runtime.artefact import export_artefact, load_artefact, read_metadata
from sparse_tvm.runtime.compiled_model import CompiledModel, TensorSpec

__all__ = ["CompiledModel", "TensorSpec", "export_artefact", "load_artefact", "read_metadata"]
