"""Pruning with fine-tuning in TVM: the ``gmp`` and ``l0`` drivers around a :class:`Trainer`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import onnx

from sparse_tvm.pruning import l0
from sparse_tvm.pruning.gmp import gmp_hook, magnitude_masks
from sparse_tvm.pruning.patterns import Pattern
from sparse_tvm.pruning.weights import PrunableWeight, read_initializer
from sparse_tvm.training import TrainConfig, Trainer

GATE_PHASE = 0.7  # share of the epochs l0 trains its gates; the rest fine-tunes the fixed mask


def _masked_sparsity(trainer: Trainer, prunable: list[PrunableWeight]) -> float:
    zeros = sum(int(np.sum(trainer.masks[w.name] == 0)) for w in prunable)
    return zeros / max(1, sum(trainer.masks[w.name].size for w in prunable))


def fine_tune(
    model: onnx.ModelProto,
    prunable: list[PrunableWeight],
    pattern: Pattern,
    sparsity: float,
    method: str,
    scope: str,
    config: TrainConfig,
    data,
    eval_data,
    callbacks: Sequence[Callable],
) -> tuple[onnx.ModelProto, dict]:
    """Prune ``prunable`` to ``sparsity`` with ``method`` (``"gmp"`` or ``"l0"``) while
    training on ``data``; returns the model and the report's training fields."""
    gates = []
    if method == "l0":
        params = {w.name: read_initializer(model, w.name) for w in prunable}
        gates = l0.make_gates(params, prunable, pattern)
    trainer = Trainer(model, config, masked=[w.name for w in prunable], gates=gates)
    train = trainer.dataset(data)
    objective = "cross_entropy" if train.labels is not None else "mse"
    trainer.compile(objective)
    dense = dict(trainer.weights)
    if objective == "mse" and train.targets is None:  # distillation from the dense model
        train.targets = trainer.predict(train, dense)
    evaluation = train if eval_data is None else trainer.dataset(eval_data, "eval data")
    if evaluation.labels is None and evaluation.targets is None:
        evaluation.targets = trainer.predict(evaluation, dense)
    metric, before = trainer.evaluate(evaluation, dense)
    extra: dict = {}

    if method == "gmp":
        hook = gmp_hook(trainer, prunable, sparsity, pattern, scope)
        logs = trainer.fit(
            train,
            evaluation,
            on_step=hook,
            callbacks=callbacks,
            sparsity=lambda: _masked_sparsity(trainer, prunable),
        )
        trainer.masks.update(magnitude_masks(trainer.weights, prunable, sparsity, pattern, scope))
    else:
        rng = np.random.default_rng(config.seed)
        for g in gates:
            shape = g.grid
            trainer.log_alpha[g.weight.name] = (
                l0.INITIAL_LOG_ALPHA + 0.01 * rng.standard_normal(shape)
            ).astype(np.float32)
        gate_epochs = max(1, round(GATE_PHASE * config.epochs))
        controller = l0.L0Controller(trainer, gates, sparsity, scope, rate=0.03)
        total_epochs = config.epochs

        def on_step(step: int, total: int) -> None:
            gate_total = total * gate_epochs // total_epochs
            controller.on_step(step, gate_total)

        trainer.density_hook = controller.update
        trainer.eval_hook = lambda: l0.gated_weights(trainer, gates)
        logs = trainer.fit(
            train,
            evaluation,
            epochs=gate_epochs,
            on_step=on_step,
            callbacks=callbacks,
            sparsity=lambda: l0.expected_sparsity(trainer, gates),
            total_epochs=total_epochs,
        )
        extra["gate_sparsity"] = l0.natural_sparsity(trainer, gates)
        l0.freeze_gates(trainer, gates, sparsity, pattern, scope)
        if total_epochs > gate_epochs:
            logs += trainer.fit(
                train,
                evaluation,
                epochs=total_epochs - gate_epochs,
                callbacks=callbacks,
                sparsity=lambda: _masked_sparsity(trainer, prunable),
                first_epoch=gate_epochs + 1,
                total_epochs=total_epochs,
            )
    final = trainer.effective_weights()
    _, after = trainer.evaluate(evaluation, final)
    extra.update(
        epochs=[asdict(log) for log in logs],
        metric=metric,
        before=before,
        after=after,
        evaluated_on="training data" if eval_data is None else "eval_data",
    )
    return trainer.export(final), extra
