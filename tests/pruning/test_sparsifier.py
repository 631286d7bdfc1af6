"""The sparsifier lifecycle (prepare -> step -> squash_mask -> convert) and the layering that
lets training steer pruning only through its own hooks."""

import ast
from pathlib import Path

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.examples import mlp
from sparse_tvm.frontend.initializers import prunable_weights, read_initializer
from sparse_tvm.pruning import GMPSparsifier, L0Sparsifier, MagnitudeSparsifier, cubic_sparsity
from sparse_tvm.pruning.patterns import block_scores
from sparse_tvm.training import TrainingHooks


def test_lifecycle_gives_the_weights_prune_gives():
    model = mlp(batch=4, hidden=32)
    sparsifier = MagnitudeSparsifier(0.75, "1x1")
    sparsifier.prepare(model)
    assert all(np.all(m == 1) for m in sparsifier.masks().values())
    sparsifier.step()
    squashed = sparsifier.squash_mask()
    assert sparsifier.masks() == {}
    pruned = sparsifier.convert()
    expected = st.prune(model, 0.75, "1x1").model
    for w in prunable_weights(model):
        dense = read_initializer(model, w.name)
        value = read_initializer(pruned, w.name)
        assert value.dtype == dense.dtype
        np.testing.assert_array_equal(value, read_initializer(expected, w.name))
        np.testing.assert_array_equal(value, squashed[w.name])
        # the values: the quarter of largest |w| kept as they were, the rest zero
        keep = np.abs(dense) >= np.quantile(np.abs(dense), 0.75)
        np.testing.assert_array_equal(value, np.where(keep, dense, 0.0))
    # the model given to prepare is left as it was
    assert np.count_nonzero(read_initializer(model, "fc1.weight") == 0) == 0


def test_gmp_steps_follow_the_cubic_schedule_and_squash_at_the_target():
    model = mlp(batch=4, hidden=32)
    sparsifier = GMPSparsifier(0.8, "1x1", updates=4)
    sparsifier.prepare(model)
    total = 100  # the ramp ends at step 75; masks update every 18 steps until then
    for step, expected in [(0, 0.0), (18, cubic_sparsity(18, 0.8, 0, 75)), (75, 0.8)]:
        sparsifier.step(step, total)
        assert sparsifier.current_sparsity() == pytest.approx(expected, abs=0.01)
    before = sparsifier.current_sparsity()
    sparsifier.step(80, total)  # past the ramp: held
    assert sparsifier.current_sparsity() == before
    sparsifier.squash_mask()
    for w in prunable_weights(model):
        zeros = np.mean(sparsifier.weights[w.name] == 0)
        assert zeros == pytest.approx(0.8, abs=0.01)


def test_l0_sparsifier_hooks_name_its_gate_inputs():
    model = mlp(batch=4, hidden=64)  # fc1 64x64: not small (1x1 below 4096 weights)
    sparsifier = L0Sparsifier(0.5, "4x1", epochs=10, seed=1)
    sparsifier.prepare(model)
    assert sparsifier.gate_epochs == 7
    inputs = sparsifier.loss_inputs()
    assert [i.name for i in inputs[:3]] == [
        "fc1.weight.log_alpha",
        "fc1.weight.noise",
        "fc1.weight.lambda",
    ]
    assert [i.trained for i in inputs[:3]] == [True, False, False]
    assert inputs[0].shape == (16, 64)  # 64 outputs in blocks of 4 x 64 inputs
    values = sparsifier.input_values(np.random.default_rng(0))
    assert set(values) == {i.name for i in inputs}
    # gates start by magnitude: open (evaluation sees the dense weights) for blocks above the
    # mean log-magnitude, partly open below it, in the blocks' order
    weights = prunable_weights(model)
    dense = {w.name: read_initializer(model, w.name) for w in weights}
    gated = sparsifier.eval_weights(dense)
    for w in weights:
        value = dense[w.name]
        r, c = sparsifier.layer_patterns[w.name].block  # fc3 (64x10): 1x1, a small weight
        scores = block_scores(w.to_nk(value), (r, c))
        order = np.argsort(scores.ravel())
        log_alpha = sparsifier.log_alpha[w.name].ravel()
        assert np.all(np.diff(log_alpha[order]) > -0.1)  # up to the 0.01 noise
        above = np.log(scores) > np.log(scores).mean() + 0.05
        n = w.to_nk(value).shape[0]
        kept = w.from_nk(np.repeat(np.repeat(above, r, axis=0), c, axis=1)[:n], value)
        np.testing.assert_array_equal(gated[w.name][kept], value[kept])
        assert np.all(np.abs(gated[w.name]) >= 0.6 * np.abs(value))
    sparsifier.drop_gates()
    assert not sparsifier.trains_inputs()
    assert sparsifier.current_sparsity() == pytest.approx(0.5, abs=0.01)
    assert np.all(sparsifier.input_values(None)["fc1.weight.noise"] == 0)


def test_the_default_hooks_are_dense_training():
    hooks = TrainingHooks()
    assert hooks.masked_weights() == [] and hooks.loss_inputs() == []
    assert not hooks.trains_inputs() and hooks.current_sparsity() == 0.0


def test_training_imports_nothing_from_pruning():
    root = Path(st.__file__).parent / "training"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("sparse_tvm.pruning") for n in names), path.name


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(sparsity=1.5), r"outside \[0, 1\]"),
        (dict(sparsity=0.5, scope="model"), "scope 'model'"),
        (dict(sparsity=0.4, pattern="2:4"), "fixes the sparsity at 0.5"),
        (dict(sparsity=0.5, pattern="3x3"), "is not a pattern"),
    ],
)
def test_bad_settings_are_usage_errors(kwargs, message):
    with pytest.raises(st.UsageError, match=message):
        MagnitudeSparsifier(**kwargs)
