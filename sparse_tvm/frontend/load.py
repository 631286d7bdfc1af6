"""Load an ONNX model from a path or a ``ModelProto`` and check it, with one-line errors."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from sparse_tvm.errors import ModelLoadError

# protobuf cannot serialise a message past 2 GiB: the checker must then read the model from disk
_PROTO_LIMIT = 2**31 - 1


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _check(model: onnx.ModelProto, what: str) -> None:
    try:
        if model.ByteSize() < _PROTO_LIMIT:
            onnx.checker.check_model(model)
        else:
            with tempfile.TemporaryDirectory(prefix="sparse_tvm_check_") as tmp:
                path = os.path.join(tmp, "model.onnx")
                onnx.save_model(model, path, save_as_external_data=True, location="model.data")
                onnx.checker.check_model(path)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as error:
        raise ModelLoadError(
            f"{what} is not a valid ONNX model ({_one_line(error)}): "
            "re-export it or fix it so that onnx.checker.check_model accepts it"
        ) from error


def load_onnx(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Load and validate an ONNX model.

    Parameters
    ----------
    model
        A path to an ``.onnx`` file or an ``onnx.ModelProto``. Tensors stored as external
        data are read from paths relative to the model file's folder.

    Returns
    -------
    onnx.ModelProto
        The model with all tensors in memory (a ``ModelProto`` argument is returned as is).

    Raises
    ------
    ModelLoadError
        The file is missing, a folder, not ONNX, truncated, lacks its external data, or the
        model fails ``onnx.checker``.
    """
    if isinstance(model, onnx.ModelProto):
        if not model.HasField("graph"):
            raise ModelLoadError(
                "the ModelProto has no graph: pass a complete model (e.g. from onnx.load)"
            )
        _check(model, "the ModelProto")
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(
            f"expected a path to an .onnx file or an onnx.ModelProto, got {type(model).__name__}"
        )

    path = Path(model)
    shown = f"model file '{os.fspath(model)}'"
    if not path.exists():
        raise ModelLoadError(f"{shown} not found: check the path")
    if path.is_dir():
        raise ModelLoadError(f"{shown} is a directory: give the path of the .onnx file in it")
    try:
        # onnx.load reads external data relative to the model file's folder
        proto = onnx.load(os.fspath(path), load_external_data=True)
    except (DecodeError, RuntimeError, ValueError, TypeError) as error:
        raise ModelLoadError(
            f"{shown} is not an ONNX model or is truncated ({_one_line(error)}): "
            "give a complete binary .onnx file"
        ) from error
    except (FileNotFoundError, onnx.checker.ValidationError) as error:
        raise ModelLoadError(
            f"{shown} refers to external data that cannot be read ({_one_line(error)}): "
            "keep the model's .data files next to it"
        ) from error
    except OSError as error:
        raise ModelLoadError(f"cannot read {shown} ({_one_line(error)})") from error
    if not proto.HasField("graph") or proto.ir_version == 0:
        raise ModelLoadError(
            f"{shown} is not an ONNX model (no graph or IR version): give a binary .onnx file"
        )
    _check(proto, shown)
    return proto
