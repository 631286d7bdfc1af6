"""``train``: fit an ONNX model's weights in TVM (no pruning)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import onnx

from sparse_tvm.training.trainer import EpochLog, TrainConfig, Trainer


@dataclass
class TrainResult:
    """The trained model, its loss per epoch, and the metric before and after."""

    model: onnx.ModelProto
    epochs: list[EpochLog] = field(default_factory=list)
    metric: str = "accuracy"
    before: float = 0.0
    after: float = 0.0


def train(
    model: str | os.PathLike | onnx.ModelProto,
    data,
    eval_data=None,
    config: TrainConfig | None = None,
    callbacks: Sequence[Callable[[EpochLog], None]] = (),
) -> TrainResult:
    """Train every non-scalar float initializer of ``model`` on ``data`` (labels:
    cross-entropy; targets: MSE); returns the same graph with the new weights."""
    config = config or TrainConfig()
    trainer = Trainer(model, config)
    train_set = trainer.dataset(data, distil=False)
    trainer.compile("cross_entropy" if train_set.labels is not None else "mse")
    evaluation = (
        train_set if eval_data is None else trainer.dataset(eval_data, "eval data", distil=False)
    )
    metric, before = trainer.evaluate(evaluation)
    logs = trainer.fit(train_set, evaluation, callbacks=callbacks)
    _, after = trainer.evaluate(evaluation)
    return TrainResult(trainer.export(), logs, metric, before, after)
