"""Exceptions raised by sparse-tvm, and the exit status of each kind.

Every error a user can fix derives from :class:`SparseTVMError`; its message is one line that
says what is wrong and what to do. Each subclass names one kind of problem and carries the
exit status the command line returns for it (``error: <message>`` on stderr), as tvmc and
IREE's tools map their error kinds to statuses:

====  ==========================  ===================================================
 1    ``SparseTVMError``          any other problem a user can fix
 2    ``UsageError``              a bad option value or combination (argparse's too)
 3    ``ModelLoadError``          the model file is missing, unreadable or invalid
 4    ``InputShapeError``         an input is dynamic, of the wrong shape, or unknown
 5    ``TargetError``             the target is unknown, malformed or not supported here
 6    ``CompileError``            TVM could not compile the model
 7    ``ArtefactError``           a compiled artefact is missing, corrupt or unsafe
 8    ``RecordsError``            a tuning records folder or file cannot be used
 9    ``TuningError``             tuning measured no valid candidate
10    ``DeviceError``             a board, GPU, RPC server or emulator is not reachable
11    ``ToolchainError``          a compiler or tool the job needs is not installed
12    ``TrainingError``           training data or a pruning / fine-tuning setting is bad
13    ``MicroBudgetError``        the model does not fit the microcontroller
14    ``OutputError``             an output file or folder cannot be written
15    ``QuantizationError``       the model cannot be quantized as asked
130   (interrupted)               Ctrl-C; records measured so far are kept
====  ==========================  ===================================================

:data:`EXIT_STATUS` is this table; :func:`exit_status` looks an error up in it.
"""

from __future__ import annotations


class SparseTVMError(Exception):
    """Base class of every error a user can act on."""

    exit_status = 1


class UsageError(SparseTVMError):
    """An option value or a combination of options is not valid."""

    exit_status = 2


class ModelLoadError(SparseTVMError):
    """The model file is missing, unreadable or not a valid ONNX model."""

    exit_status = 3


class InputShapeError(SparseTVMError):
    """An input has a dynamic or wrong shape, or an unknown name."""

    exit_status = 4


class TargetError(SparseTVMError):
    """The target preset or TVM target description is unknown, malformed or unsupported."""

    exit_status = 5


class CompileError(SparseTVMError):
    """TVM could not compile the model."""

    exit_status = 6


class ArtefactError(SparseTVMError):
    """A compiled artefact is missing, corrupt or unsafe to extract."""

    exit_status = 7


class RecordsError(SparseTVMError):
    """The records folder or an exported records file cannot be used."""

    exit_status = 8


class TuningError(SparseTVMError):
    """Tuning could not measure a valid candidate."""

    exit_status = 9


class DeviceError(SparseTVMError):
    """The device that must run or time the code (board, GPU, RPC server, emulator) is not
    there or does not answer."""

    exit_status = 10


class ToolchainError(SparseTVMError):
    """A compiler or tool that the job needs (cross compiler, nvcc, qemu) is not installed."""

    exit_status = 11


class TrainingError(SparseTVMError):
    """Training data, or a pruning or fine-tuning setting, cannot be used."""

    exit_status = 12


class MicroBudgetError(CompileError):
    """The compiled model does not fit the microcontroller's flash or RAM."""

    exit_status = 13


class OutputError(SparseTVMError):
    """An output file or folder cannot be written (nothing partial is left behind)."""

    exit_status = 14


class QuantizationError(SparseTVMError):
    """The model cannot be quantized as asked (onnxruntime's quantizer refused it)."""

    exit_status = 15


INTERRUPTED = 130

EXIT_STATUS: dict[type[SparseTVMError], int] = {
    cls: cls.exit_status
    for cls in (
        SparseTVMError,
        UsageError,
        ModelLoadError,
        InputShapeError,
        TargetError,
        CompileError,
        ArtefactError,
        RecordsError,
        TuningError,
        DeviceError,
        ToolchainError,
        TrainingError,
        MicroBudgetError,
        OutputError,
        QuantizationError,
    )
}


def exit_status(err: BaseException) -> int:
    """The command line's exit status for ``err`` (1 for an error of no listed kind)."""
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED
    return getattr(err, "exit_status", 1) if isinstance(err, SparseTVMError) else 1


__all__ = [
    "EXIT_STATUS",
    "INTERRUPTED",
    "ArtefactError",
    "CompileError",
    "DeviceError",
    "InputShapeError",
    "MicroBudgetError",
    "ModelLoadError",
    "OutputError",
    "QuantizationError",
    "RecordsError",
    "SparseTVMError",
    "TargetError",
    "ToolchainError",
    "TrainingError",
    "TuningError",
    "UsageError",
    "exit_status",
]
