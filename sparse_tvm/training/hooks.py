"""How a method steers a :class:`~sparse_tvm.training.Trainer` without the trainer knowing
the method: the generic hooks the training loop calls.

A method (a pruning sparsifier) subclasses :class:`TrainingHooks` and overrides what it
needs; the defaults are dense training. Through the hooks a method can

- keep weights under a keep-mask (``masked_weights``, ``masks``): the optimizer step
  multiplies them by their mask, and the model holds ``weight * mask``;
- add inputs to the loss function (``loss_inputs``), some of them trained by their own Adam
  optimizer (``TrainConfig.gate_lr``), and emit Relax code that replaces a weight by a
  transform of it, adds penalty terms to the objective and returns values to watch
  (``emit_loss_terms``);
- feed those inputs and take their new values every step (``input_values``, ``after_step``),
  act before every step (``before_step``), choose the weights evaluation uses
  (``eval_weights``) and report a sparsity per epoch (``current_sparsity``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from tvm import relax


@dataclass(frozen=True)
class LossInput:
    """A float32 input that the hooks add to the loss function, after the target ``y``."""

    name: str
    shape: tuple[int, ...]
    trained: bool = False  # gets a gradient and an Adam step while ``trains_inputs()``


@dataclass
class LossTerms:
    """What the hooks emit into the loss function."""

    # weight name -> the expression the forward pass uses instead of the weight
    weights: dict[str, relax.Expr] = field(default_factory=dict)
    # added to the task loss, in order: ``objective = task + penalties[0] + ...``
    penalties: list[relax.Expr] = field(default_factory=list)
    # returned after the objective and the task loss; ``after_step`` gets their values
    outputs: list[relax.Expr] = field(default_factory=list)


class TrainingHooks:
    """The hooks a :class:`~sparse_tvm.training.Trainer` calls; every default is a no-op."""

    # -- the compiled program (read once, by ``Trainer.compile``) -----------------------------

    def masked_weights(self) -> list[str]:
        """Names of the weights that carry a keep-mask."""
        return []

    def loss_inputs(self) -> list[LossInput]:
        """The extra inputs of the loss function, in order."""
        return []

    def emit_loss_terms(
        self,
        bb: relax.BlockBuilder,
        weights: Mapping[str, relax.Var],
        inputs: Mapping[str, relax.Var],
    ) -> LossTerms:
        """Emit, inside the loss function's dataflow block, the weight transforms, penalties
        and watched outputs; ``weights`` and ``inputs`` are the function's parameters."""
        return LossTerms()

    # -- every step ---------------------------------------------------------------------------

    def masks(self) -> Mapping[str, np.ndarray]:
        """The keep-mask of every masked weight now (stored layout, float32)."""
        return {}

    def before_step(self, step: int, total: int) -> None:
        """Called before step ``step`` of ``total`` (over all the epochs of the run)."""

    def input_values(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The value of every loss input for this step; ``rng`` is the loop's generator."""
        return {}

    def trains_inputs(self) -> bool:
        """Whether the trained loss inputs get an optimizer step after this step."""
        return any(i.trained for i in self.loss_inputs())

    def after_step(self, trained: Mapping[str, np.ndarray], outputs: list[float]) -> None:
        """Called after every step with the new values of the trained loss inputs (empty when
        ``trains_inputs()`` was false) and the values of ``LossTerms.outputs``."""

    # -- reporting ----------------------------------------------------------------------------

    def eval_weights(self, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The weights to evaluate the model with, given the masked ones."""
        return weights

    def current_sparsity(self) -> float:
        """The sparsity an epoch's log reports (``EpochLog.sparsity``)."""
        return 0.0


__all__ = ["LossInput", "LossTerms", "TrainingHooks"]
