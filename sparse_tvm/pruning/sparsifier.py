"""``Sparsifier``: the lifecycle of ``torch.ao.pruning.BaseSparsifier`` on an ONNX model.

- ``prepare(model)`` attaches a keep-mask (all ones) to every prunable weight;
- ``step()`` updates the masks (the subclasses: one-shot magnitude, the gradual schedule,
  L0 gates);
- ``squash_mask()`` folds the masks into the weights and drops them;
- ``convert()`` returns the pruned ONNX model.

The sparsifier acts on a dict of weights (stored layout, float32): by default its own copy of
the model's initializers; a fine-tuning run passes the trainer's ``weights`` so that the
masks act on the weights being trained, as torch's sparsifier acts on a module's parameters.
A sparsifier is also the trainer's :class:`~sparse_tvm.training.hooks.TrainingHooks`: the
trainer keeps the masked weights at zero and calls ``before_step`` (here: ``step``) every
step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx

from sparse_tvm.errors import UsageError
from sparse_tvm.frontend.initializers import (
    PrunableWeight,
    prunable_weights,
    read_initializer,
    write_initializer,
)
from sparse_tvm.pruning.patterns import SMALL_WEIGHT, Pattern, fitted, parse
from sparse_tvm.training.hooks import TrainingHooks

SCOPES = ("layer", "global")


def check_settings(sparsity: float, pattern: Pattern, scope: str) -> None:
    """Refuse a scope, sparsity or sparsity-pattern pair that cannot be pruned to."""
    if scope not in SCOPES:
        raise UsageError(f"scope '{scope}' is not one of {', '.join(SCOPES)}")
    if not 0.0 <= sparsity <= 1.0:
        raise UsageError(f"sparsity {sparsity} is outside [0, 1]")
    if pattern.n_of_m and abs(sparsity - pattern.max_sparsity) > 1e-6:
        raise UsageError(
            f"pattern {pattern.text} fixes the sparsity at {pattern.max_sparsity:g}: "
            f"pass sparsity={pattern.max_sparsity:g}"
        )


class Sparsifier(TrainingHooks):
    """Base class of the pruning methods: masks on the prunable weights of an ONNX model.

    Parameters
    ----------
    sparsity
        Share of zeros per weight (``scope="layer"``) or over all pruned weights
        (``"global"``), in [0, 1].
    pattern
        ``"1x1"``, a block pattern (``"4x1"``, ``"16x1"``, ...) or N:M (``"2:4"``).
    scope
        ``"layer"`` or ``"global"``.
    patterns
        Patterns of some weights by name, in place of ``pattern`` (``pattern="auto"``: the
        block shape each layer runs fastest in, :mod:`~sparse_tvm.pruning.pattern_choice`).
    """

    def __init__(
        self,
        sparsity: float,
        pattern: str | Pattern = "1x1",
        scope: str = "layer",
        patterns: Mapping[str, str | Pattern] | None = None,
    ):
        self.pattern = pattern if isinstance(pattern, Pattern) else parse(pattern)
        self.patterns = {
            name: p if isinstance(p, Pattern) else parse(p) for name, p in (patterns or {}).items()
        }
        for checked in (self.pattern, *self.patterns.values()):
            check_settings(sparsity, checked, scope)
        self.sparsity, self.scope = sparsity, scope
        # a block ``pattern`` prunes weights of fewer elements 1x1 (patterns.fitted)
        self.unstructured_below = SMALL_WEIGHT
        self.model: onnx.ModelProto | None = None
        self.prunable: list[PrunableWeight] = []
        self.weights: dict[str, np.ndarray] = {}
        self.mask: dict[str, np.ndarray] = {}  # weight name -> keep-mask, stored layout

    # -- lifecycle ----------------------------------------------------------------------------

    def prepare(
        self,
        model: onnx.ModelProto,
        prunable: Sequence[PrunableWeight] | None = None,
        weights: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Attach a keep-mask of ones to each of ``prunable`` (default: every prunable weight
        of ``model``); ``weights`` is the dict the masks act on, in place (default: a float32
        copy of the model's initializers)."""
        self.model = model
        self.prunable = list(prunable_weights(model) if prunable is None else prunable)
        if weights is None:
            weights = {
                w.name: read_initializer(model, w.name).astype(np.float32) for w in self.prunable
            }
        self.weights = weights
        self.mask = {w.name: np.ones_like(weights[w.name]) for w in self.prunable}

    @property
    def layer_patterns(self) -> dict[str, Pattern]:
        """The pattern of every prunable weight, by name: its own (``patterns``), else
        ``pattern`` (1x1 on a small weight, :func:`~sparse_tvm.pruning.patterns.fitted`)."""
        return {
            w.name: self.patterns.get(w.name)
            or fitted(self.pattern, self.weights[w.name].size, self.unstructured_below)
            for w in self.prunable
        }

    def step(self, step: int | None = None, total: int | None = None) -> None:
        """Update the masks: at ``step`` of ``total`` training steps, else the final ones."""
        raise NotImplementedError

    def squash_mask(self) -> dict[str, np.ndarray]:
        """Fold the masks into the weights and drop them; returns the weights."""
        for w in self.prunable:
            self.weights[w.name] = self.weights[w.name] * self.mask[w.name]
        self.mask = {}
        return self.weights

    def convert(self, model: onnx.ModelProto | None = None) -> onnx.ModelProto:
        """A copy of ``model`` (default: the prepared one) holding the pruned weights, each in
        the data type the model stores it in."""
        out = onnx.ModelProto()
        out.CopyFrom(self.model if model is None else model)
        for w in self.prunable:
            dtype = read_initializer(out, w.name).dtype
            write_initializer(out, w.name, self.weights[w.name].astype(dtype))
        return out

    def masked_sparsity(self) -> float:
        """Share of zeros of the masks over the pruned weights."""
        zeros = sum(int(np.sum(self.mask[w.name] == 0)) for w in self.prunable)
        return zeros / max(1, sum(self.mask[w.name].size for w in self.prunable))

    # -- the trainer's hooks ------------------------------------------------------------------

    def masked_weights(self) -> list[str]:
        return [w.name for w in self.prunable]

    def masks(self) -> dict[str, np.ndarray]:
        return self.mask

    def before_step(self, step: int, total: int) -> None:
        self.step(step, total)

    def current_sparsity(self) -> float:
        return self.masked_sparsity()


__all__ = ["SCOPES", "Sparsifier", "check_settings"]
