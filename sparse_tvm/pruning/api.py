"""``prune``: the pruning entry point of the Python API.

This release prunes one-shot by magnitude (no data needed); the fine-tuning methods ("gmp",
"l0") come with the training driver.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from sparse_tvm.errors import SparseTVMError
from sparse_tvm.pruning.magnitude import prune_magnitude
from sparse_tvm.pruning.weights import prunable_weights, read_initializer


@dataclass
class PruneResult:
    """The pruned model and the per-weight sparsity it reached."""

    model: onnx.ModelProto
    report: dict[str, float]  # weight name -> fraction of zeros

    def __str__(self) -> str:
        width = max((len(name) for name in self.report), default=4)
        return "\n".join(f"{name.ljust(width)}  {value:.1%}" for name, value in self.report.items())


def prune(
    model: str | os.PathLike | onnx.ModelProto,
    sparsity: float,
    pattern: str = "1x1",
    method: str = "magnitude",
    exclude: Iterable[str] = (),
    **training,
) -> PruneResult:
    """Prune every prunable weight of ``model`` (MatMul, Gemm, Conv) to ``sparsity``.

    Parameters
    ----------
    model
        Path to an ``.onnx`` file or a ``ModelProto``.
    sparsity
        Fraction of zeros per weight, in [0, 1].
    pattern
        Block shape on the (output x input) view: ``1x1``, ``4x1``, ``16x1``, ``1x4``.
    method
        ``"magnitude"`` (one-shot). ``"gmp"`` and ``"l0"`` need the fine-tuning driver.
    exclude
        Weight or node names to leave dense.
    """
    from sparse_tvm.frontend import load_onnx

    if method != "magnitude":
        raise SparseTVMError(
            f"method '{method}' needs fine-tuning, which this release does not "
            "have yet: use method='magnitude'"
        )
    if training:
        raise SparseTVMError(
            f"option(s) {', '.join(sorted(training))} apply to fine-tuning, "
            "which this release does not have yet"
        )
    pruned = prune_magnitude(load_onnx(model), sparsity, pattern, exclude=exclude)
    report = {}
    for weight in prunable_weights(pruned):
        array = read_initializer(pruned, weight.name)
        report[weight.name] = float(np.count_nonzero(array == 0)) / max(1, array.size)
    return PruneResult(pruned, report)
