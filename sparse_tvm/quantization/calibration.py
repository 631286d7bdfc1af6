"""Calibration data: read and checked against the model's inputs, fed in the model's batches.

Data is an ``.npz`` path or a dict of arrays by input name (an array alone for a one-input
model), the first axis of every array counting samples, as for training data
(:mod:`sparse_tvm.training.data`); ``labels`` / ``targets`` are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from sparse_tvm.training.data import Dataset, TrainingDataError, load_dataset, read_npz

WHAT = "calibration data"
DYNAMIC_BATCH = 16  # samples per calibration run where the model's batch axis is symbolic


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    """Each axis's size, ``None`` where it is symbolic or unknown."""
    return [
        d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim
    ]


def model_batch(model: onnx.ModelProto) -> int | None:
    """The batch size the model's inputs fix (their first axis), ``None`` where symbolic."""
    sizes = {(_dims(v) or [None])[0] for v in _inputs(model)}
    return sizes.pop() if len(sizes) == 1 else None


def calibration_data(model: onnx.ModelProto, data) -> Dataset:
    """Read ``data`` and check it against ``model``'s inputs; one-line
    :class:`~sparse_tvm.training.data.TrainingDataError` for what does not fit."""
    inputs = _inputs(model)
    names = [v.name for v in inputs]
    if isinstance(data, str | os.PathLike):
        arrays = read_npz(data, WHAT)
    elif isinstance(data, Mapping):
        arrays = dict(data)
    elif len(names) == 1:
        arrays = {names[0]: data}
    else:
        raise TrainingDataError(
            f"the model has {len(names)} inputs ({', '.join(names)}): give the {WHAT} as a "
            "dict or .npz by input name"
        )
    arrays.pop("labels", None)
    arrays.pop("targets", None)
    sample_shapes, dtypes = {}, {}
    for value in inputs:
        given = np.shape(arrays.get(value.name, ()))[1:]
        dims = _dims(value)[1:]
        # a symbolic axis takes the data's size; a fixed one must match
        sample_shapes[value.name] = tuple(
            given[i] if d is None and i < len(given) else d for i, d in enumerate(dims)
        )
        dtypes[value.name] = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
    dataset = load_dataset(arrays, names, sample_shapes, dtypes, None, None, WHAT, distil=True)
    batch = model_batch(model)
    if batch is not None and len(dataset) < batch:
        raise TrainingDataError(
            f"{WHAT} holds {len(dataset)} samples, fewer than the model's batch of {batch}: "
            "give at least one full batch"
        )
    return dataset


class CalibrationReader(CalibrationDataReader):
    """onnxruntime's calibration reader over a checked :class:`Dataset`: whole batches of the
    model's batch size (``DYNAMIC_BATCH`` samples where it is symbolic; a short last one then
    too, a fixed batch drops the rest)."""

    def __init__(self, dataset: Dataset, batch: int | None):
        self.dataset = dataset
        self.batch = batch or DYNAMIC_BATCH
        self.fixed = batch is not None
        self.start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        stop = self.start + self.batch
        if self.start >= len(self.dataset) or (self.fixed and stop > len(self.dataset)):
            return None
        index = np.arange(self.start, min(stop, len(self.dataset)))
        self.start = stop
        return self.dataset.take(index).inputs

    def rewind(self) -> None:
        self.start = 0
