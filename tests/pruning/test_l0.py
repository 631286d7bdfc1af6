"""L0 gates steered to the asked sparsity: the gates get there themselves (fast, toy data)."""

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.examples import mlp
from sparse_tvm.frontend.initializers import read_initializer
from sparse_tvm.pruning import follows_pattern, parse, prunable_weights


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_l0_gates_reach_the_asked_sparsity_themselves(scope):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((320, 64)).astype(np.float32)
    y = x[:, :10].argmax(1)
    result = st.prune(
        mlp(batch=16, hidden=64),
        0.8,
        method="l0",
        data=(x, y),
        epochs=20,
        scope=scope,
        callbacks=[],
    )
    report = result.report
    gates, sizes = report.gate_sparsity, {}
    for w in prunable_weights(result.model):
        nk = w.to_nk(read_initializer(result.model, w.name))
        assert follows_pattern(nk, parse("1x1"))
        sizes[w.name] = nk.size
        if scope == "layer":
            assert gates[w.name] == pytest.approx(0.8, abs=0.01)
            assert report[w.name] == pytest.approx(0.8, abs=0.01)
    total = sum(sizes.values())
    overall = sum(gates[n] * s for n, s in sizes.items()) / total
    assert overall == pytest.approx(0.8, abs=0.01)
    assert sum(report[n] * s for n, s in sizes.items()) / total == pytest.approx(0.8, abs=0.01)
    assert report.after > 0.9  # y depends on 10 of the 64 inputs: 80 % zeros lose nothing
