"""``pattern="auto"``: each layer pruned in the block shape the compiler rates fastest for the
target (measured on this machine for x86, the cost model for a microcontroller)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import sparse_tvm as st
from sparse_tvm.analysis.format_choice import choose_format, parse_block
from sparse_tvm.examples import mlp
from sparse_tvm.frontend.initializers import prunable_weights, read_initializer
from sparse_tvm.pruning.pattern_choice import (
    AUTO_PATTERNS,
    FALLBACK_PATTERN,
    FINER_WITHIN,
    pick_pattern,
)
from sparse_tvm.pruning.patterns import follows_pattern, parse
from tests.conftest import ort_run

speedups = hs.dictionaries(
    hs.sampled_from(AUTO_PATTERNS), hs.floats(0.2, 20.0), min_size=1, max_size=len(AUTO_PATTERNS)
)


@given(speedups)
def test_pick_is_the_finest_pattern_close_to_the_fastest(rated):
    chosen = pick_pattern(rated)
    best = max(rated.values())
    if best <= 1.0:
        assert chosen == FALLBACK_PATTERN
        return
    assert rated[chosen] > 1.0 and rated[chosen] * FINER_WITHIN >= best
    finer = AUTO_PATTERNS[: AUTO_PATTERNS.index(chosen)]
    # no finer candidate was as good: each was dense or further than FINER_WITHIN behind
    assert all(rated.get(p, 0.0) <= 1.0 or rated[p] * FINER_WITHIN < best for p in finer)


def test_pick_prefers_the_finer_block_on_near_ties_and_1x1_when_nothing_gains():
    assert pick_pattern({"1x1": 2.0, "4x1": 2.1, "16x1": 2.15}) == "1x1"
    assert pick_pattern({"1x1": 1.5, "4x1": 3.0, "16x1": 3.2}) == "4x1"
    assert pick_pattern({"1x1": 1.5, "4x1": 2.0, "16x1": 3.2}) == "16x1"
    assert pick_pattern({"1x1": 1.0, "16x1": 1.0}) == "1x1"
    # a candidate the compiler keeps dense (1.0) is not chosen for being "close"
    assert pick_pattern({"1x1": 1.0, "16x1": 1.08}) == "16x1"


def test_auto_for_a_microcontroller_follows_the_cost_model():
    model = mlp(batch=1, hidden=64)
    result = st.prune(model, 0.9, "auto", target="cortex-m4")
    assert result.report.pattern == "auto"
    for w in prunable_weights(model):
        choice = result.report.auto[w.name]
        assert choice["decided_by"].startswith("estimated")
        assert choice["pattern"] == pick_pattern(choice["speedups"])
        for pattern, rated in choice["speedups"].items():
            if rated > 1.0:  # the cost model's pick for the weight pruned that way, m = 1
                trial = st.prune(model, 0.9, pattern).model
                estimate = choose_format(w.to_nk(read_initializer(trial, w.name)), 1)
                assert rated == pytest.approx(estimate.estimated_speedup)
        nk = w.to_nk(read_initializer(result.model, w.name))
        assert follows_pattern(nk, parse(choice["pattern"]))
        assert np.mean(nk == 0) == pytest.approx(0.9, abs=0.02)
    text = str(result.report)
    assert "pattern auto" in text
    for choice in result.report.auto.values():
        assert f"{choice['pattern']}: {choice['speedup']:.2f}x (estimated" in text


def test_auto_on_x86_measures_and_the_compiler_then_runs_each_layer_in_its_pattern():
    model = mlp(batch=32, hidden=256, features=256)
    result = st.prune(model, 0.9, "auto", target="x86")
    choices = result.report.auto
    assert set(choices) == {w.name for w in prunable_weights(model)}
    big = choices["fc2.weight"]  # 256 x 256 at 90 %, 32 rows: sparse wins in some pattern
    assert big["decided_by"].startswith("measured")
    assert big["speedup"] > 1.0
    for name, choice in choices.items():
        w = next(w for w in prunable_weights(model) if w.name == name)
        assert follows_pattern(
            w.to_nk(read_initializer(result.model, name)), parse(choice["pattern"])
        )
        assert choice["pattern"] == pick_pattern(choice["speedups"])
    compiled = st.compile(result.model, target="x86")
    rows = {row.name: row for row in compiled.report.layers}
    row = rows["fc2.weight"]
    assert row.format != "dense"
    # the compiler runs fc2 in the chosen block (1x1 is CSR)
    r, c = parse_block(big["pattern"])
    assert row.format.endswith(f"{r}x{c}")
    x = np.random.default_rng(0).standard_normal((32, 256)).astype(np.float32)
    np.testing.assert_allclose(
        compiled.run({"x": x})[0], ort_run(result.model, {"x": x})[0], rtol=1e-4, atol=1e-4
    )


def test_auto_needs_a_target_and_a_target_needs_auto():
    model = mlp(batch=1, hidden=32)
    with pytest.raises(st.UsageError, match="give the target"):
        st.prune(model, 0.9, "auto")
    with pytest.raises(st.UsageError, match="pattern 'auto'"):
        st.prune(model, 0.9, "16x1", target="x86")
