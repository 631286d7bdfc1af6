"""Pruning with fine-tuning in TVM: a sparsifier (``gmp``, ``l0``) steering a :class:`Trainer`
through its hooks, from ``prepare`` to ``convert``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

import onnx

from sparse_tvm.frontend.initializers import PrunableWeight
from sparse_tvm.pruning.l0 import L0Sparsifier
from sparse_tvm.pruning.sparsifier import Sparsifier
from sparse_tvm.training import TrainConfig, Trainer


def fine_tune(
    model: onnx.ModelProto,
    prunable: list[PrunableWeight],
    sparsifier: Sparsifier,
    config: TrainConfig,
    data,
    eval_data,
    callbacks: Sequence[Callable],
) -> tuple[onnx.ModelProto, dict]:
    """Prune ``prunable`` with ``sparsifier`` while training on ``data``; returns the model
    and the report's training fields."""
    trainer = Trainer(model, config)
    sparsifier.prepare(model, prunable, weights=trainer.weights)
    train = trainer.dataset(data)
    objective = "cross_entropy" if train.labels is not None else "mse"
    trainer.compile(objective, hooks=sparsifier)
    dense = dict(trainer.weights)
    if objective == "mse" and train.targets is None:  # distillation from the dense model
        train.targets = trainer.predict(train, dense)
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
        metric=metric,
        before=before,
        after=after,
        evaluated_on="training data" if eval_data is None else "eval_data",
    )
    return sparsifier.convert(trainer.export(final)), extra
