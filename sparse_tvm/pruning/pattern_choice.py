"""``pattern="auto"``: prune each layer in the block shape its kernel runs fastest on the target.

The compiler is asked, not a table: for every candidate block shape the model is pruned one-shot
by magnitude to the requested sparsity in that shape, and the compiler's own per-layer decision
(:func:`sparse_tvm.decision.decide_layers`, the same one ``compile`` makes) rates each layer:
the sparse kernel measured against the dense layer where this machine runs the target's code,
the calibrated cost model (or a board's timings from tuning records) where it cannot. A layer
gets the fastest shape; a finer shape within :data:`FINER_WITHIN` of it wins instead, since
smaller blocks keep more accuracy after fine-tuning (the README's pruning table: at 95 % the
digits MLP loses 0.6 points in 1x1 and 0.8 in 16x1 with gmp, 0.3 and 0.8 with l0). A layer
that no shape makes faster than dense is pruned unstructured (the compiler will keep it dense; the zeros still shrink a
compressed file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import onnx

from sparse_tvm.frontend.initializers import PrunableWeight

# finest first: the order ties are broken in
AUTO_PATTERNS: tuple[str, ...] = ("1x1", "1x4", "4x1", "8x1", "16x1")
# a finer pattern within this factor of the fastest one's speedup is chosen instead
FINER_WITHIN = 1.1
FALLBACK_PATTERN = "1x1"


@dataclass(frozen=True)
class PatternChoice:
    """The pattern ``pattern="auto"`` gave one weight, and the evidence."""

    pattern: str
    speedup: float  # the layer's expected speedup over dense in that pattern (1.0: stays dense)
    decided_by: str  # how the compiler rated it: measured, estimated (cost model), ...
    layer: str = ""  # the layer's display name
    speedups: dict[str, float] = field(default_factory=dict)  # every candidate pattern's


def _rated(model: onnx.ModelProto, backend, options, database) -> dict[str, tuple[float, str, str]]:
    """Weight name -> (expected speedup, what decided it, layer name) for ``model`` as the
    compiler would build it for ``backend``."""
    from sparse_tvm.analysis import analyse
    from sparse_tvm.decision import decide_layers
    from sparse_tvm.decision.layer_decision import decided_speedup
    from sparse_tvm.frontend import import_onnx

    imported = backend.prepare(import_onnx(model, options.input_shapes))
    decisions, _ = decide_layers(
        analyse(imported, gelu=backend.fuses_gelu), backend, options, records=database
    )
    rated = {}
    for d in decisions:
        sparse = d.choice.format != "dense"
        speedup = (decided_speedup(d) or 1.0) if sparse else 1.0
        rated[d.layer.name] = (speedup, d.decided_by, d.layer.label)
    return rated


def pick_pattern(speedups: dict[str, float], candidates: Sequence[str] = AUTO_PATTERNS) -> str:
    """The pattern to prune in, from each candidate's expected speedup over dense (1.0: the
    compiler keeps the layer dense): the finest (earliest in ``candidates``) sparse one within
    :data:`FINER_WITHIN` of the fastest; :data:`FALLBACK_PATTERN` if none beats dense."""
    best = max(speedups.values(), default=1.0)
    if best <= 1.0:
        return FALLBACK_PATTERN
    return next(
        p for p in candidates if speedups.get(p, 0.0) > 1.0 and speedups[p] * FINER_WITHIN >= best
    )


def choose_patterns(
    model: onnx.ModelProto,
    prunable: Sequence[PrunableWeight],
    sparsity: float,
    target: str | dict,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    measure: bool = True,
    candidates: Sequence[str] = AUTO_PATTERNS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, PatternChoice]:
    """The pattern of each of ``prunable`` at ``sparsity`` for ``target`` (see the module).

    ``measure=False``: the cost model rates every layer, unmeasured. Weights the compiler
    finds no layer for get :data:`FALLBACK_PATTERN`."""
    from sparse_tvm.backends import backend_for
    from sparse_tvm.decision import records_database
    from sparse_tvm.options import CompileOptions
    from sparse_tvm.pruning.one_shot import MagnitudeSparsifier

    backend = backend_for(target)
    measure = measure and backend.untimed_reason() is None
    options = CompileOptions(measure=measure, input_shapes=input_shapes)
    database = records_database(None, backend)
    ratings: dict[str, dict[str, tuple[float, str, str]]] = {}
    for pattern in candidates:
        if progress is not None:
            how = "timing" if measure else "rating (cost model)"
            progress(f"pattern auto: {how} the layers pruned {sparsity:.0%} in {pattern}")
        trial = MagnitudeSparsifier(sparsity, pattern)
        trial.prepare(model, prunable)
        trial.step()
        trial.squash_mask()
        for name, rating in _rated(trial.convert(), backend, options, database).items():
            ratings.setdefault(name, {})[pattern] = rating
    choices = {}
    for w in prunable:
        rated = ratings.get(w.name)
        if not rated:
            choices[w.name] = PatternChoice(FALLBACK_PATTERN, 1.0, "no sparse layer found")
            continue
        speedups = {p: r[0] for p, r in rated.items()}
        pattern = pick_pattern(speedups, candidates)
        _, decided_by, layer = rated.get(pattern, next(iter(rated.values())))
        choices[w.name] = PatternChoice(
            pattern, speedups.get(pattern, 1.0), decided_by, layer, speedups
        )
    return choices


__all__ = ["AUTO_PATTERNS", "FINER_WITHIN", "PatternChoice", "choose_patterns", "pick_pattern"]
