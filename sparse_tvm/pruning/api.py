"""``prune``: the pruning entry point of the Python API.

Methods: ``"magnitude"`` (one-shot, no data), ``"gmp"`` (gradual magnitude pruning with
fine-tuning, Zhu & Gupta 2017) and ``"l0"`` (hard-concrete L0 gates, Louizos et al. 2018).
Fine-tuning runs in TVM (:mod:`sparse_tvm.training`).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from sparse_tvm.errors import UsageError
from sparse_tvm.frontend.initializers import (
    PrunableWeight,
    prunable_weights,
    read_initializer,
    select_weights,
)
from sparse_tvm.pruning.gmp import GMPSparsifier
from sparse_tvm.pruning.l0 import L0Sparsifier
from sparse_tvm.pruning.one_shot import MagnitudeSparsifier
from sparse_tvm.pruning.pattern_choice import choose_patterns
from sparse_tvm.pruning.patterns import (
    SMALL_WEIGHT,
    Pattern,
    check_unstructured_below,
    fitted,
    parse,
)
from sparse_tvm.pruning.sparsifier import Sparsifier, check_settings

METHODS = ("magnitude", "gmp", "l0")
AUTO = "auto"  # the pattern that asks the compiler, per layer
# The dense model's share of the targets when fine-tuning on labels (distillation at
# temperature 1). The digits MLP of benchmarks/prune_accuracy.py, 16x1 blocks, points lost
# with 0.5 / without: 30 epochs 1.1 / 1.1 at 90 %, 1.1 / 1.7 at 95 % (gmp), 0.6 / 0.6 (l0,
# 90 %); 10 epochs gmp 1x1 95 % 1.1 / 2.2, l0 16x1 90 % 2.2 / 2.8, gmp 16x1 90 % 2.2 / 1.7.
DISTILL = 0.5


def _progress():
    """One line per stage on stderr where it is a terminal, else nothing."""
    if not sys.stderr.isatty():
        return None
    return lambda line: print(line, file=sys.stderr, flush=True)


@dataclass
class PruneReport:
    """Per-layer sparsity, loss per epoch, and the metric before and after.

    Indexing by weight name gives its sparsity (``report["fc1.weight"]``).
    """

    method: str
    pattern: str
    target_sparsity: float
    sparsity: dict[str, float]  # weight name -> share of zeros (every prunable weight)
    excluded: list[str] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)  # EpochLog fields per epoch
    metric: str | None = None  # "accuracy" or "mse"
    before: float | None = None  # dense model
    after: float | None = None  # pruned (and fine-tuned) model
    evaluated_on: str | None = None  # "eval_data" or "training data"
    gate_sparsity: dict[str, float] | None = None  # l0: zeros the gates reached themselves
    distill: float | None = None  # the dense model's share of the targets (labels: the rest)
    # pattern "auto": weight name -> the PatternChoice fields (pattern, expected speedup, ...)
    auto: dict[str, dict] | None = None
    # weights pruned in a pattern other than ``pattern``: small ones in 1x1 (patterns.fitted)
    unstructured: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> float:
        return self.sparsity[name]

    def __contains__(self, name: object) -> bool:
        return name in self.sparsity

    def __iter__(self):
        return iter(self.sparsity)

    def items(self):
        return self.sparsity.items()

    @property
    def pruned_sparsity(self) -> float:
        """Share of zeros over the weights that were pruned (excluded ones left out)."""
        kept = [v for k, v in self.sparsity.items() if k not in self.excluded]
        return float(np.mean(kept)) if kept else 0.0

    def loss_per_epoch(self) -> list[float]:
        return [e["loss"] for e in self.epochs]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def __str__(self) -> str:
        width = max((len(name) for name in self.sparsity), default=4)
        lines = [
            f"{self.method} pruning, pattern {self.pattern}, target {self.target_sparsity:.1%}"
        ]
        for name, value in self.sparsity.items():
            note = "  (excluded)" if name in self.excluded else ""
            if name in self.unstructured:
                note += "  1x1 (a small weight)"
            if self.auto and name in self.auto:
                c = self.auto[name]
                gain = f"{c['speedup']:.2f}x" if c["speedup"] > 1.0 else "stays dense"
                note += f"  {c['pattern']}: {gain} ({c['decided_by']})"
            lines.append(f"  {name.ljust(width)}  {value:.1%}{note}")
        for e in self.epochs:
            lines.append(f"  epoch {e['epoch']}: loss {e['loss']:.4f}")
        if self.metric is not None:
            fmt = "{:.2%}" if self.metric == "accuracy" else "{:.4g}"
            lines.append(
                f"  {self.metric} on {self.evaluated_on}: before {fmt.format(self.before)}, "
                f"after {fmt.format(self.after)}"
            )
        return "\n".join(lines)


@dataclass
class PruneResult:
    """The pruned model and its report."""

    model: onnx.ModelProto
    report: PruneReport

    def __str__(self) -> str:
        return str(self.report)


def _check(sparsity: float, pattern: Pattern, method: str, scope: str) -> None:
    if method not in METHODS:
        raise UsageError(f"method '{method}' is not one of {', '.join(METHODS)}")
    check_settings(sparsity, pattern, scope)


def make_sparsifier(
    method: str,
    sparsity: float,
    pattern: str | Pattern = "1x1",
    scope: str = "layer",
    *,
    epochs: int = 10,
    seed: int = 0,
    patterns: dict[str, str] | None = None,
    unstructured_below: int = SMALL_WEIGHT,
) -> Sparsifier:
    """The sparsifier of ``method`` (``"magnitude"``, ``"gmp"`` or ``"l0"``); ``epochs`` and
    ``seed`` are those of the fine-tuning run (the L0 gates' phase and initial values);
    ``patterns``: some weights' own patterns, by name, in place of ``pattern``;
    ``unstructured_below``: a block ``pattern`` prunes weights of fewer elements 1x1."""
    if method == "magnitude":
        sparsifier = MagnitudeSparsifier(sparsity, pattern, scope, patterns)
    elif method == "gmp":
        sparsifier = GMPSparsifier(sparsity, pattern, scope, patterns=patterns)
    elif method == "l0":
        sparsifier = L0Sparsifier(
            sparsity, pattern, scope, epochs=epochs, seed=seed, patterns=patterns
        )
    else:
        raise UsageError(f"method '{method}' is not one of {', '.join(METHODS)}")
    check_unstructured_below(unstructured_below)
    sparsifier.unstructured_below = unstructured_below
    return sparsifier


def _sparsity_report(model: onnx.ModelProto) -> dict[str, float]:
    out = {}
    for weight in prunable_weights(model):
        array = read_initializer(model, weight.name)
        out[weight.name] = float(np.count_nonzero(array == 0)) / max(1, array.size)
    return out


def _small_in_1x1(
    model: onnx.ModelProto, chosen: list[PrunableWeight], pattern: Pattern, below: int
) -> list[str]:
    """The weights of ``chosen`` that ``pattern``'s blocks leave to 1x1 (small ones)."""
    return [
        w.name
        for w in chosen
        if fitted(pattern, read_initializer(model, w.name).size, below) is not pattern
    ]


def prune(
    model: str | os.PathLike | onnx.ModelProto,
    sparsity: float,
    pattern: str = "1x1",
    method: str = "magnitude",
    exclude: Iterable[str] = (),
    *,
    scope: str = "layer",
    data=None,
    eval_data=None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 32,
    optimizer: str = "sgd",
    seed: int = 0,
    callbacks: Sequence[Callable] | None = None,
    lr_schedule: str = "cosine",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    target: str | dict | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    distill: float = DISTILL,
    unstructured_below: int = SMALL_WEIGHT,
    **unknown,
) -> PruneResult:
    """Prune the prunable weights of ``model`` (MatMul, Gemm, Conv) to ``sparsity``.

    Parameters
    ----------
    model
        Path to an ``.onnx`` file or a ``ModelProto``.
    sparsity
        Share of zeros per weight (``scope="layer"``) or over all pruned weights
        (``"global"``), in [0, 1]. N:M patterns fix it at ``1 - N/M``.
    pattern
        ``1x1`` (unstructured), ``r x c`` blocks on the (output x input) view (``4x1``,
        ``16x1``, ``1x4``; weights of fewer than ``unstructured_below`` elements in 1x1,
        listed in the report's ``unstructured``), N:M (``2:4``, ``1:4``), or ``auto``: each
        layer in the block shape its sparse kernel runs fastest in on ``target`` (measured where this machine runs the
        target's code, else the compiler's cost model; a finer shape within 10 % of the
        fastest wins, for accuracy); the report gives each layer's pattern and expected speedup.
    target, input_shapes
        For ``pattern="auto"``: the target (a preset name or TVM target JSON, as
        ``st.compile``) and static shapes for inputs with dynamic dimensions.
    method
        ``"magnitude"`` (one-shot), ``"gmp"`` (gradual magnitude + fine-tuning) or ``"l0"``
        (hard-concrete L0 gates + fine-tuning); the last two need ``data``.
    exclude
        Weight or node names to leave dense.
    unstructured_below
        A block ``pattern`` prunes weights of fewer elements than this (default 4,096: a
        CNN's first conv, a small classifier head) 1x1, at the same sparsity: they hold a
        handful of blocks and gain nothing from them (the digits CNN lost 11-21 points at 90-95
        % with its two small weights in blocks, none in 1x1); 0 puts every weight in blocks.
    scope
        ``"layer"``: every weight reaches ``sparsity``; ``"global"``: one threshold overall.
    data, eval_data
        ``(inputs, labels)``, a dict, or an ``.npz`` with the model inputs plus ``labels``
        (class ids: cross-entropy) or ``targets`` (MSE); with neither, the dense model's
        outputs are the targets (distillation). ``eval_data`` (default: ``data``) gives the
        metric before and after.
    epochs, lr, batch_size, optimizer, seed, lr_schedule, momentum, weight_decay
        Fine-tuning: ``epochs`` defaults to what gives the schedule about 1,500 steps (at
        least 3; fewer than half that warns); ``optimizer`` is ``"sgd"`` (momentum) or
        ``"adam"``; ``lr`` defaults to 0.05 (sgd) / 0.002 (adam), reached after a linear
        warm-up over the first 10 % of the steps; ``lr_schedule`` (after it) is ``cosine``,
        ``linear`` or ``constant``. The same ``seed`` gives identical weights.
    distill
        With labels: the share of the dense model's class probabilities in the training
        targets, the labels' one-hot the rest (0: labels only).
    callbacks
        Called with an :class:`~sparse_tvm.training.EpochLog` after every epoch; default:
        a progress line on stderr when it is a terminal.

    Returns
    -------
    PruneResult
        ``model`` (the same graph with pruned weights) and ``report``.
    """
    from sparse_tvm.frontend import load_onnx

    if unknown:
        raise UsageError(f"prune() has no option(s) {', '.join(sorted(unknown))}")
    auto = str(pattern).strip().lower() == AUTO
    if auto and target is None:
        raise UsageError(
            "pattern 'auto' prunes each layer for the kernel that will run it: give the "
            "target (target='x86'; CLI --target x86)"
        )
    if not auto and (target is not None or input_shapes is not None):
        raise UsageError("target and input shapes are for pattern 'auto': pass pattern='auto'")
    parsed = parse("1x1" if auto else pattern)
    _check(sparsity, parsed, method, scope)
    check_unstructured_below(unstructured_below)  # before the (maybe long) auto measurement
    if method == "magnitude" and (data is not None or eval_data is not None):
        raise UsageError(
            "method 'magnitude' prunes without data: use method='gmp' or 'l0' to fine-tune"
        )
    if method != "magnitude":
        if data is None:
            raise UsageError(
                f"method '{method}' fine-tunes and needs data=(inputs, labels) or a .npz file"
            )
        if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
            raise UsageError(f"epochs must be a positive integer, not {epochs!r}")
        if lr is not None and not lr > 0:
            raise UsageError(f"lr must be positive, not {lr!r}")
        if not 0.0 <= distill <= 1.0:
            raise UsageError(
                f"distill is the dense model's share of the targets, in [0, 1], not {distill!r}"
            )
    proto = load_onnx(model)
    chosen, excluded = select_weights(proto, exclude)
    patterns, choices = None, None
    if auto:
        choices = choose_patterns(
            proto, chosen, sparsity, target, input_shapes=input_shapes, progress=_progress()
        )
        patterns = {name: c.pattern for name, c in choices.items()}
        choices = {name: asdict(c) for name, c in choices.items()}
    label = AUTO if auto else parsed.text
    unstructured = [] if auto else _small_in_1x1(proto, chosen, parsed, unstructured_below)
    if method == "magnitude":
        sparsifier = make_sparsifier(
            method, sparsity, parsed, scope, patterns=patterns,
            unstructured_below=unstructured_below,
        )  # fmt: skip
        sparsifier.prepare(proto, chosen)
        sparsifier.step()
        sparsifier.squash_mask()
        out = sparsifier.convert()
        report = PruneReport(
            method, label, sparsity, _sparsity_report(out), excluded,
            auto=choices, unstructured=unstructured,
        )  # fmt: skip
        return PruneResult(out, report)

    from sparse_tvm.pruning.fine_tune import fine_tune
    from sparse_tvm.training import TrainConfig, print_progress

    if callbacks is None:
        callbacks = [print_progress] if sys.stderr.isatty() else []
    config = TrainConfig(
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        lr_schedule=lr_schedule,
        warmup_steps=None,  # fine_tune: a share of the run
        seed=seed,
    )

    def sparsifier(run_epochs: int) -> Sparsifier:
        return make_sparsifier(
            method, sparsity, parsed, scope, epochs=run_epochs, seed=seed, patterns=patterns,
            unstructured_below=unstructured_below,
        )  # fmt: skip

    out, extra = fine_tune(
        proto, chosen, sparsifier, config, data, eval_data, callbacks, distill=distill
    )
    report = PruneReport(
        method, label, sparsity, _sparsity_report(out), excluded,
        auto=choices, unstructured=unstructured, **extra,
    )  # fmt: skip
    return PruneResult(out, report)


__all__ = ["PruneReport", "PruneResult", "PrunableWeight", "make_sparsifier", "prune"]
