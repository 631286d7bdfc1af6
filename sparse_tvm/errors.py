"""Exceptions raised by sparse-tvm.

Every error a user can fix derives from :class:`SparseTVMError`; its message is one line that
says what is wrong and what to do. The CLI prints it as ``error: <message>`` and exits 1.
"""

from __future__ import annotations


class SparseTVMError(Exception):
    """Base class of every error a user can act on."""


class ModelLoadError(SparseTVMError):
    """The model file is missing, unreadable or not a valid ONNX model."""


class InputShapeError(SparseTVMError):
    """An input has a dynamic or wrong shape, or an unknown name."""


class TargetError(SparseTVMError):
    """The target preset or TVM target description is unknown or malformed."""


class ArtefactError(SparseTVMError):
    """A compiled artefact is missing, corrupt or unsafe to extract."""


class CompileError(SparseTVMError):
    """TVM could not compile the model."""
