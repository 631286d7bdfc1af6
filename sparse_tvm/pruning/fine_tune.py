"""Pruning with fine-tuning in TVM: a sparsifier (``gmp``, ``l0``) steering a :class:`Trainer`
through its hooks, from ``prepare`` to ``convert``."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import onnx

from sparse_tvm.frontend.initializers import PrunableWeight
from sparse_tvm.pruning.l0 import L0Sparsifier
from sparse_tvm.pruning.sparsifier import Sparsifier
from sparse_tvm.training import TrainConfig, Trainer

# The optimizer steps gmp's cubic ramp and the L0 gates need to win the accuracy back. The
# digits MLP of benchmarks/prune_accuracy.py (1,437 samples, batch 32: 44 steps an epoch) lost,
# in 16x1 blocks, 1.7 points at 90 % and 4.7 at 95 % in 10 epochs (440 steps) and 1.1 / 1.7 in
# 30 (1,320 steps); in 1x1 at 95 % 2.2 -> 0.0. Without ``epochs`` a run takes this many steps.
SCHEDULE_STEPS = 1500
MIN_EPOCHS = 3  # l0: gate epochs, then epochs under the fixed mask
# The learning rate rises linearly over this share of the run's steps. The digits CNN of
# benchmarks/prune_accuracy.py (trained with Adam) collapsed to 10 % accuracy in its first
# epoch at SGD's lr 0.05 without it (gmp 90 %); with 10 % warm-up: 1x1 98.9 %, 16x1 96.9 %
# (dense 98.3 %). lr 0.02 without warm-up: 97.2 / 95.6 %.
WARMUP_SHARE = 0.1


def schedule_epochs(samples: int, batch: int) -> int:
    """Epochs of ``samples`` in batches of ``batch`` that give :data:`SCHEDULE_STEPS` steps."""
    return max(MIN_EPOCHS, math.ceil(SCHEDULE_STEPS / _steps_per_epoch(samples, batch)))


def _steps_per_epoch(samples: int, batch: int) -> int:
    return max(1, samples // batch)


def _warn_if_short(epochs: int, samples: int, batch: int) -> None:
    steps = epochs * _steps_per_epoch(samples, batch)
    if steps * 2 < SCHEDULE_STEPS:
        warnings.warn(
            f"{epochs} epoch(s) of {samples} samples are {steps} fine-tuning steps, too few for "
            f"the pruning schedule to win the accuracy back (about {SCHEDULE_STEPS}): leave "
            f"epochs unset ({schedule_epochs(samples, batch)} here) or raise it",
            stacklevel=5,  # the caller of st.prune
        )


def soft_targets(logits: np.ndarray) -> np.ndarray:
    """The dense model's class probabilities (softmax over the last axis)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def distilled_targets(teacher: np.ndarray, labels: np.ndarray, distill: float) -> np.ndarray:
    """Per sample: ``distill`` of the dense model's probabilities ``teacher`` and the rest the
    label's one-hot, where the dense model predicts the label; the one-hot alone where it does
    not (a wrong or untrained dense model must not teach its mistakes)."""
    one_hot = np.eye(teacher.shape[-1], dtype=np.float32)[labels]
    right = (teacher.argmax(axis=-1) == labels)[..., None]
    return np.where(right, distill * teacher + (1.0 - distill) * one_hot, one_hot).astype(
        np.float32
    )


def fine_tune(
    model: onnx.ModelProto,
    prunable: list[PrunableWeight],
    make_sparsifier: Callable[[int], Sparsifier],
    config: TrainConfig,
    data,
    eval_data,
    callbacks: Sequence[Callable],
    distill: float = 0.0,
) -> tuple[onnx.ModelProto, dict]:
    """Prune ``prunable`` with ``make_sparsifier(epochs)`` while training on ``data``; returns
    the model and the report's training fields.

    ``config.epochs`` None: :func:`schedule_epochs` of the data; ``config.warmup_steps``
    None: :data:`WARMUP_SHARE` of the run. ``distill`` (with labels):
    the share of the dense model's class probabilities in the targets
    (:func:`distilled_targets`; distillation at temperature 1)."""
    trainer = Trainer(model, config)
    train = trainer.dataset(data)
    if config.epochs is None:
        config.epochs = schedule_epochs(len(train), trainer.batch)
    else:
        _warn_if_short(config.epochs, len(train), trainer.batch)
    if config.warmup_steps is None:
        steps = config.epochs * _steps_per_epoch(len(train), trainer.batch)
        config.warmup_steps = round(WARMUP_SHARE * steps)
    sparsifier = make_sparsifier(config.epochs)
    sparsifier.prepare(model, prunable, weights=trainer.weights)
    objective = "cross_entropy" if train.labels is not None else "mse"
    trainer.compile(objective, hooks=sparsifier)
    dense = dict(trainer.weights)
    if objective == "mse" and train.targets is None:  # distillation from the dense model
        train.targets = trainer.predict(train, dense)
    if objective == "cross_entropy" and distill > 0:
        train.soft_labels = distilled_targets(
            soft_targets(trainer.predict(train, dense)), train.labels, distill
        )
    evaluation = train if eval_data is None else trainer.dataset(eval_data, "eval data")
    if evaluation.labels is None and evaluation.targets is None:
        evaluation.targets = trainer.predict(evaluation, dense)
    metric, before = trainer.evaluate(evaluation, dense)
    extra: dict = {}

    if isinstance(sparsifier, L0Sparsifier):
        # the gates train first; then a fixed mask of exactly the sparsity fine-tunes
        total, gate_epochs = config.epochs, sparsifier.gate_epochs
        logs = trainer.fit(
            train, evaluation, epochs=gate_epochs, callbacks=callbacks, total_epochs=total
        )
        extra["gate_sparsity"] = sparsifier.gate_sparsity()
        sparsifier.drop_gates()
        if total > gate_epochs:
            logs += trainer.fit(
                train,
                evaluation,
                epochs=total - gate_epochs,
                callbacks=callbacks,
                first_epoch=gate_epochs + 1,
                total_epochs=total,
            )
    else:
        logs = trainer.fit(train, evaluation, callbacks=callbacks)
    final = sparsifier.squash_mask()
    _, after = trainer.evaluate(evaluation, final)
    extra.update(
        epochs=[asdict(log) for log in logs],
        distill=distill if objective == "cross_entropy" else None,
        metric=metric,
        before=before,
        after=after,
        evaluated_on="training data" if eval_data is None else "eval_data",
    )
    return sparsifier.convert(trainer.export(final)), extra
