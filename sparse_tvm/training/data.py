"""Training data: reading, checking against the model, mini-batches.

Data is ``(inputs, labels)`` (``inputs`` an array for a one-input model or a dict by input
name; ``labels`` class ids, or ``None``), a dict / ``.npz`` with the model inputs plus
``labels`` (class ids) or ``targets`` (regression targets of the first output). Without
either, the objective is distillation: the dense model's outputs become the targets.
The first axis of every array is the sample axis.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from sparse_tvm.errors import TrainingError


class TrainingDataError(TrainingError):
    """Training or evaluation data that does not fit the model."""


@dataclass
class Dataset:
    """Checked arrays: ``inputs`` by model input name, ``labels`` or ``targets`` (or neither)."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    targets: np.ndarray | None = None
    # the cross-entropy's target distribution per sample in place of the labels' one-hot
    # (pruning mixes in the dense model's probabilities: distillation); labels still score
    soft_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, index: np.ndarray) -> Dataset:
        return Dataset(
            {k: v[index] for k, v in self.inputs.items()},
            None if self.labels is None else self.labels[index],
            None if self.targets is None else self.targets[index],
            None if self.soft_labels is None else self.soft_labels[index],
        )


def read_npz(path: str | os.PathLike, what: str) -> dict[str, np.ndarray]:
    """The arrays of the .npz file ``path`` by name; :class:`TrainingDataError` (one line,
    naming ``what``) when it is missing, empty or unreadable."""
    if not os.path.exists(path):
        raise TrainingDataError(f"{what} file '{path}' does not exist")
    if os.path.getsize(path) == 0:
        raise TrainingDataError(f"{what} file '{path}' is empty: write it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise TrainingDataError(
            f"{what} file '{path}' is not a readable .npz ({type(error).__name__}): "
            "write it with numpy.savez"
        ) from None
    if not arrays:
        raise TrainingDataError(f"{what} file '{path}' holds no arrays")
    return arrays


def _as_mapping(data, input_names: list[str], what: str) -> dict[str, np.ndarray]:
    if isinstance(data, str | os.PathLike):
        return read_npz(data, what)
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, tuple | list) and len(data) == 2:
        inputs, labels = data
        out = dict(_inputs_mapping(inputs, input_names, what))
        if labels is not None:
            out["labels"] = labels
        return out
    return _inputs_mapping(data, input_names, what)


def _inputs_mapping(inputs, input_names: list[str], what: str) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if len(input_names) != 1:
        raise TrainingDataError(
            f"the model has {len(input_names)} inputs ({', '.join(input_names)}): give the "
            f"{what} inputs as a dict by name"
        )
    return {input_names[0]: inputs}


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def _key_message(
    what: str, unknown: list[str], missing: list[str], input_names: list[str], distil: bool
) -> str:
    """One line: which arrays are missing or unknown, and the keys the data needs."""
    problems = []
    if missing:
        noun = "input" if len(missing) == 1 else "inputs"
        problems.append(f"lacks the model's {noun} {_quoted(missing)}")
    if unknown:
        noun = "an unknown array" if len(unknown) == 1 else "unknown arrays"
        problems.append(f"has {noun} {_quoted(unknown)}")
    return f"{what} {' and '.join(problems)}: {_expected(input_names, distil)}"


def _expected(input_names: list[str], distil: bool) -> str:
    text = (
        f"expected the model's inputs ({', '.join(input_names)}) plus 'labels' (class ids) or "
        "'targets' (regression values)"
    )
    if distil:
        text += ", or the inputs alone (then the pruned model learns the dense model's outputs)"
    return text


def load_dataset(
    data,
    input_names: list[str],
    sample_shapes: dict[str, tuple[int, ...]],
    input_dtypes: dict[str, str],
    num_classes: int | None,
    target_shape: tuple[int, ...] | None,
    what: str = "training data",
    distil: bool = True,
) -> Dataset:
    """Read ``data`` and check it against the model; raise :class:`TrainingDataError`.

    Parameters
    ----------
    sample_shapes
        Per input, the shape of one sample (the input shape without its first axis).
    num_classes
        Size of the last axis of the first output (labels must lie in ``[0, num_classes)``).
    target_shape
        Shape of one sample of the first output (for ``targets``).
    distil
        Whether data without labels or targets is valid (the caller distils a dense model).
    """
    arrays = _as_mapping(data, input_names, what)
    labels = arrays.pop("labels", None)
    targets = arrays.pop("targets", None)
    if labels is not None and targets is not None:
        raise TrainingDataError(f"{what} holds both 'labels' and 'targets': give one of them")
    unknown = sorted(set(arrays) - set(input_names))
    missing = [name for name in input_names if name not in arrays]
    if unknown or missing:
        raise TrainingDataError(_key_message(what, unknown, missing, input_names, distil))
    if labels is None and targets is None and not distil:
        raise TrainingDataError(
            f"{what} holds neither 'labels' nor 'targets': {_expected(input_names, False)}"
        )
    inputs: dict[str, np.ndarray] = {}
    for name in input_names:
        array = np.asarray(arrays[name])
        if array.ndim == 0 or array.shape[0] == 0:
            raise TrainingDataError(f"{what} input '{name}' holds no samples")
        if tuple(array.shape[1:]) != tuple(sample_shapes[name]):
            raise TrainingDataError(
                f"{what} input '{name}' has samples of shape {tuple(array.shape[1:])}, the model "
                f"expects {tuple(sample_shapes[name])} (the first axis counts samples)"
            )
        dtype = np.dtype(input_dtypes[name])
        if np.issubdtype(dtype, np.floating):
            if not np.issubdtype(array.dtype, np.number):
                raise TrainingDataError(f"{what} input '{name}' is not numeric ({array.dtype})")
            if not np.all(np.isfinite(array)):
                raise TrainingDataError(
                    f"{what} input '{name}' holds {int(np.sum(~np.isfinite(array)))} NaN or "
                    "inf values: clean or drop those samples"
                )
        inputs[name] = np.ascontiguousarray(array, dtype=dtype)
    count = {len(v) for v in inputs.values()}
    if len(count) > 1:
        raise TrainingDataError(f"{what} inputs hold different numbers of samples: {count}")
    n = count.pop()
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n:
            raise TrainingDataError(f"{what} has {len(labels)} labels for {n} samples")
        if not np.issubdtype(labels.dtype, np.integer) and not (
            np.issubdtype(labels.dtype, np.floating)
            and np.all(np.isfinite(labels) & (labels == np.round(labels)))
        ):
            raise TrainingDataError(f"{what} labels must be integer class ids")
        labels = labels.astype(np.int64)
        if target_shape is not None and tuple(labels.shape[1:]) != tuple(target_shape[:-1]):
            raise TrainingDataError(
                f"{what} labels have shape {tuple(labels.shape[1:])} per sample, the model's "
                f"output needs {tuple(target_shape[:-1])}"
            )
        bad = (labels < 0) | (labels >= (num_classes or 0))
        if np.any(bad):
            raise TrainingDataError(
                f"{what} has {int(bad.sum())} labels outside [0, {num_classes}) (e.g. "
                f"{int(labels[bad].ravel()[0])}): the model has {num_classes} classes"
            )
    if targets is not None:
        targets = np.asarray(targets, dtype=np.float32)
        if tuple(targets.shape) != (n, *target_shape):
            raise TrainingDataError(
                f"{what} targets have shape {tuple(targets.shape)}, expected "
                f"({n}, {', '.join(map(str, target_shape))})"
            )
        if not np.all(np.isfinite(targets)):
            raise TrainingDataError(f"{what} targets hold NaN or inf values")
    return Dataset(inputs, labels, targets)


def minibatches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays of full batches (shuffled when ``rng`` is given); the remainder is dropped
    for training (it is seen in other epochs), so every step has the model's static shape."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def padded_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """Every sample once, in order, in batches padded by repeating the last sample;
    yields (indices, number of real samples)."""
    for start in range(0, n, batch_size):
        index = np.arange(start, min(start + batch_size, n))
        real = len(index)
        if real < batch_size:
            index = np.concatenate([index, np.full(batch_size - real, index[-1])])
        yield index, real
