"""``Sparsifier``: sparse-tvm's pruning inside the user's own PyTorch training loop.

The lifecycle is torch.ao.pruning's::

    s = Sparsifier(model, sparsity=0.9, pattern="16x1", method="gmp", steps=N)
    for batch in data:                     # N optimizer steps in all
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        s.step()
    s.squash()                             # exact zeros in the weights, masks and gates gone
    torch.onnx.export(model, ...)          # then: sparse-tvm compile model.onnx

The masks and the schedule are :mod:`sparse_tvm.pruning`'s own (the numpy sparsifiers that
``st.prune`` drives): ``magnitude`` prunes at once, ``gmp`` raises the sparsity along Zhu &
Gupta's cubic schedule over the first 3/4 of ``steps`` and holds it, ``l0`` trains a
hard-concrete gate per block for the first 70 % of ``steps`` (the penalty's multipliers kept on
the same schedule by :class:`~sparse_tvm.pruning.l0_controller.L0Controller`; the gates'
``log_alpha`` trained by the sparsifier's own Adam on the task gradient the user's
``backward`` left plus the penalty's), then folds them into a mask of exactly ``sparsity`` that
the rest of the run trains under. The forward reads ``weight * mask`` through a
``torch.nn.utils.parametrize`` parametrization (:mod:`.masking`), as torch.ao's sparsifiers
do; ``squash`` removes it, leaving plain parameters with exact zeros.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterable
from dataclasses import replace

import numpy as np
import onnx
import torch
from torch import nn
from torch.nn.utils import parametrize

from sparse_tvm.errors import UsageError
from sparse_tvm.frontend.initializers import prunable_weights
from sparse_tvm.pruning.api import AUTO, METHODS, make_sparsifier
from sparse_tvm.pruning.l0 import L0Sparsifier
from sparse_tvm.pruning.pattern_choice import PatternChoice, choose_patterns, pick_pattern
from sparse_tvm.pruning.patterns import (
    SMALL_WEIGHT,
    Pattern,
    check_unstructured_below,
    fitted,
    parse,
)
from sparse_tvm.torch.layers import TorchWeight, prunable_parameters
from sparse_tvm.torch.masking import MaskedWeight, expected_density

__all__ = ["GATE_LR", "Sparsifier"]

GATE_LR = 0.05  # Adam on the gates' log_alpha (st.prune's TrainConfig.gate_lr)


class Sparsifier:
    """Prune ``model``'s ``nn.Linear`` / ``nn.Conv2d`` / attention weights while it trains.

    Parameters
    ----------
    model
        The ``torch.nn.Module``; its weights get masks at once (one-shot magnitude: pruned).
    sparsity
        Share of zeros per weight (``scope="layer"``) or over all of them (``"global"``), in
        [0, 1).
    pattern
        ``"1x1"``, a block of the (n, k) view (``"4x1"``, ``"16x1"``, ``"1x4"``, ...; it must
        divide every pruned weight; weights of fewer than ``unstructured_below`` elements,
        4,096 by default, are pruned 1x1) or N:M (``"2:4"``), as ``st.prune``; or ``"auto"``:
        each weight in the block shape the compiler runs its layer fastest in on ``target``
        (the model exported once with ``example_inputs`` and rated as
        ``st.prune(pattern="auto")`` does; only shapes that divide the weight), see
        :attr:`choices`.
    method
        ``"magnitude"``, ``"gmp"`` or ``"l0"``.
    steps
        How many times :meth:`step` will be called (optimizer steps of the run); required by
        ``gmp`` and ``l0``, whose schedules it spans.
    scope, exclude, seed
        As ``st.prune``: per layer or global; weights (``"fc.weight"``) or modules (``"fc"``)
        left dense; the L0 gates' initial values.
    target, example_inputs
        For ``pattern="auto"``: the target (a preset name or TVM target JSON) and a tuple of
        inputs to export the model with (their shapes are the ones the layers are timed at).
    """

    def __init__(
        self,
        model: nn.Module,
        sparsity: float,
        pattern: str = "1x1",
        method: str = "gmp",
        steps: int | None = None,
        *,
        scope: str = "layer",
        exclude: Iterable[str] = (),
        seed: int = 0,
        target: str | dict | None = None,
        example_inputs: tuple | None = None,
        unstructured_below: int = SMALL_WEIGHT,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise UsageError(f"Sparsifier prunes a torch.nn.Module, not a {type(model).__name__}")
        if not 0.0 <= sparsity < 1.0:
            raise UsageError(f"sparsity {sparsity} is outside [0, 1)")
        if method not in METHODS:
            raise UsageError(f"method '{method}' is not one of {', '.join(METHODS)}")
        if method != "magnitude" and (steps is None or int(steps) < 1):
            raise UsageError(
                f"method '{method}' needs steps=N: how many times step() will be called "
                "(the optimizer steps of the run), which its schedule spans"
            )
        auto = str(pattern).strip().lower() == AUTO
        if auto and (target is None or example_inputs is None):
            raise UsageError(
                "pattern 'auto' asks the compiler which block each layer runs fastest in: "
                "give target='x86' (or another preset) and example_inputs=(x,) to export with"
            )
        if not auto and (target is not None or example_inputs is not None):
            raise UsageError("target and example_inputs are for pattern 'auto'")
        check_unstructured_below(unstructured_below)
        self.pattern: Pattern = parse("1x1" if auto else pattern)
        self.method, self.steps = method, int(steps or 1)
        self.weights: list[TorchWeight] = prunable_parameters(model, exclude)
        # pattern "auto": weight name -> the compiler's PatternChoice for it
        self.choices: dict[str, PatternChoice] = {}
        if auto:
            self.choices = _auto_patterns(model, self.weights, sparsity, target, example_inputs)
        patterns = {name: parse(c.pattern) for name, c in self.choices.items()}
        for w in self.weights:  # small weights are pruned 1x1 (patterns.fitted)
            own = fitted(self.pattern, w.parameter.numel(), unstructured_below)
            _check_divides(w, patterns.get(w.name) or own)
        self.model = model
        self.inner = make_sparsifier(
            method,
            sparsity,
            self.pattern,
            scope,
            epochs=self.steps,
            seed=seed,
            patterns={name: p.text for name, p in patterns.items()},
            unstructured_below=unstructured_below,
        )
        self._arrays = {w.name: _numpy(w.parameter) for w in self.weights}
        self.inner.prepare(None, [w.spec for w in self.weights], self._arrays)
        self.masks: dict[str, MaskedWeight] = {}
        for w in self.weights:
            masked = MaskedWeight(w.parameter.detach())
            parametrize.register_parametrization(w.module, w.attr, masked, unsafe=True)
            self.masks[w.name] = masked
        self.count = 0
        self.log_alpha: dict[str, torch.Tensor] = {}
        self.gate_optimizer: torch.optim.Optimizer | None = None
        if isinstance(self.inner, L0Sparsifier):
            self._attach_gates()
        if method == "magnitude":
            self._update_masks()

    # -- lifecycle ----------------------------------------------------------------------------

    def step(self) -> None:
        """After each optimizer step: the schedule's masks (gmp), or the gates' own step and
        their controller (l0); the gates become a fixed mask when their phase ends."""
        self._check_not_squashed("step")
        self.count += 1
        if self.count == self.steps + 1:
            warnings.warn(
                f"Sparsifier.step() called more than steps={self.steps} times: the schedule "
                "ended, the sparsity holds",
                stacklevel=2,
            )
        if self.gate_optimizer is not None:
            self._gate_step()
            return
        if self.method == "gmp" and self.count <= self.steps:
            self._update_masks(self.count, self.steps)

    def squash(self) -> dict[str, float]:
        """Fold the masks (and gates) into the weights and remove the parametrizations: the
        model's parameters are plain tensors again, with exact zeros. Returns each weight's
        sparsity."""
        self._check_not_squashed("squash")
        if self.gate_optimizer is not None:
            self._drop_gates()
        self._sync_to_numpy()
        folded = self.inner.squash_mask()
        report = {}
        for w in self.weights:
            parametrize.remove_parametrizations(w.module, w.attr, leave_parametrized=False)
            with torch.no_grad():
                parameter = getattr(w.module, w.attr)
                parameter.copy_(torch.from_numpy(folded[w.name]).to(parameter.dtype))
            report[w.name] = float((parameter == 0).float().mean())
        self.masks = {}
        return report

    def sparsity(self) -> float:
        """Share of zeros of the masks over the pruned weights now (l0: of the expected
        gates while they train)."""
        if self.gate_optimizer is not None:
            self._sync_gates()
            return self.inner.current_sparsity()
        zeros = sum(int((m.mask == 0).sum()) for m in self.masks.values())
        return zeros / max(1, sum(m.mask.numel() for m in self.masks.values()))

    def _check_not_squashed(self, call: str) -> None:
        if not self.masks:
            raise UsageError(
                f"{call}() after squash(): the masks are folded in; make a new Sparsifier to "
                "prune again"
            )

    # -- masks --------------------------------------------------------------------------------

    def _sync_to_numpy(self) -> None:
        """The masked weights as the numpy sparsifier scores them (pruned ones stay zero)."""
        for w in self.weights:
            masked = w.parameter.detach() * self.masks[w.name].mask
            self._arrays[w.name][...] = _numpy(masked)

    def _update_masks(self, step: int | None = None, total: int | None = None) -> None:
        self._sync_to_numpy()
        self.inner.step(step, total)
        self._load_masks()

    def _load_masks(self) -> None:
        with torch.no_grad():
            for w in self.weights:
                mask = self.masks[w.name].mask
                mask.copy_(torch.from_numpy(self.inner.mask[w.name]).to(mask.dtype))
                w.parameter.mul_(mask)  # the pruned values are gone, as st.prune's

    # -- L0 gates -----------------------------------------------------------------------------

    def _attach_gates(self) -> None:
        inner = self.inner
        for g in inner.gates:
            name = g.weight.name
            la = torch.tensor(inner.log_alpha[name], requires_grad=True)
            self.log_alpha[name] = la
            self.masks[name].gate(la, g.block)
        self._block_sizes = {g.weight.name: torch.from_numpy(g.block_sizes()) for g in inner.gates}
        self.gate_optimizer = torch.optim.Adam(list(self.log_alpha.values()), lr=GATE_LR)
        self.gate_steps = inner.gate_epochs  # in steps: the inner sparsifier's epochs are steps
        inner.step(0, self.steps)

    def _gate_step(self) -> None:
        inner = self.inner
        penalty = sum(
            inner.lambdas[g.weight.name]
            * expected_density(
                self.log_alpha[g.weight.name],
                self._block_sizes[g.weight.name],
                g.nk_shape[0] * g.nk_shape[1],
            )
            for g in inner.gates
        )
        penalty.backward()  # onto the task gradient the user's backward left on log_alpha
        self.gate_optimizer.step()
        self.gate_optimizer.zero_grad()
        self._sync_gates()
        inner.controller.update([])
        if self.count >= self.gate_steps:
            self._drop_gates()
        else:
            inner.step(self.count, self.steps)

    def _sync_gates(self) -> None:
        for name, la in self.log_alpha.items():
            self.inner.log_alpha[name] = la.detach().numpy().copy()

    def _drop_gates(self) -> None:
        """The gates folded into the weights and a fixed mask of exactly ``sparsity``."""
        self._sync_gates()
        self._sync_to_numpy()
        self.inner.drop_gates()
        with torch.no_grad():
            for w in self.weights:
                self.masks[w.name].gate(None)
                w.parameter.copy_(torch.from_numpy(self._arrays[w.name]))
        self._load_masks()
        self.gate_optimizer = None
        self.log_alpha = {}


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).numpy().copy()


def _nk_shape(w: TorchWeight) -> tuple[int, int]:
    """The (n, k) shape of a weight: out features x the rest (a conv's in x kh x kw)."""
    shape = tuple(w.parameter.shape)
    return shape[0], int(np.prod(shape[1:]))


def _divides(pattern: Pattern, shape: tuple[int, int]) -> bool:
    r, c = (1, pattern.n_of_m[1]) if pattern.n_of_m else pattern.block
    return shape[0] % r == 0 and shape[1] % c == 0


def _check_divides(w: TorchWeight, pattern: Pattern) -> None:
    """The pruned weight is a whole number of the pattern's blocks (N:M: groups of M)."""
    if not _divides(pattern, _nk_shape(w)):
        n, k = _nk_shape(w)
        raise UsageError(
            f"{w.name} ({n}x{k} as out x in) is not a whole number of {pattern.text} "
            f"blocks: choose a pattern that divides it, or leave it dense "
            f"(exclude=['{w.spec.node or w.name}'])"
        )


def _export(model: nn.Module, example_inputs: tuple) -> onnx.ModelProto:
    """``model`` exported to ONNX (``torch.onnx.export``, dynamo), quietly, in eval mode."""
    training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, tuple(example_inputs), dynamo=True)
    except Exception as error:  # torch raises many kinds; the user needs the one line
        raise UsageError(
            f"pattern 'auto' exports the model to ONNX to ask the compiler, and the export "
            f"failed ({type(error).__name__}): check example_inputs, or give a pattern"
        ) from None
    finally:
        model.train(training)
    buffer = io.BytesIO()
    program.save(buffer)
    return onnx.load_from_string(buffer.getvalue())


def _auto_patterns(
    model: nn.Module, weights: list[TorchWeight], sparsity: float, target, example_inputs
) -> dict[str, PatternChoice]:
    """Each weight's pattern for ``target``: the compiler's choice among the shapes that
    divide it (those the exported graph holds as a constant layer weight; 1x1 elsewhere)."""
    exported = _export(model, example_inputs)
    names = {w.name for w in weights}
    prunable = [w for w in prunable_weights(exported) if w.name in names]
    choices = choose_patterns(exported, prunable, sparsity, target)
    shapes = {w.name: _nk_shape(w) for w in weights}
    out = {}
    for name, choice in choices.items():
        fits = {p: v for p, v in choice.speedups.items() if _divides(parse(p), shapes[name])}
        pattern = pick_pattern(fits)
        out[name] = replace(choice, pattern=pattern, speedup=fits.get(pattern, 1.0))
    return out
