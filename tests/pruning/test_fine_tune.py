"""Fine-tuning defaults: the epochs the schedule needs, derived from the data size; the dense
model's probabilities mixed into the targets (distillation) where it predicts the label."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as hs

import sparse_tvm as st
from sparse_tvm.examples import mlp
from sparse_tvm.pruning.fine_tune import (
    MIN_EPOCHS,
    SCHEDULE_STEPS,
    distilled_targets,
    schedule_epochs,
    soft_targets,
)


@given(hs.integers(1, 200_000), hs.sampled_from([1, 8, 32, 128]))
def test_schedule_epochs_give_the_schedule_its_steps(samples, batch):
    epochs = schedule_epochs(samples, batch)
    per_epoch = max(1, samples // batch)
    assert epochs >= MIN_EPOCHS
    assert epochs * per_epoch >= SCHEDULE_STEPS
    # not more than needed: one epoch fewer falls short (unless held up by the minimum)
    assert epochs == MIN_EPOCHS or (epochs - 1) * per_epoch < SCHEDULE_STEPS


def test_distilled_targets_mix_where_the_dense_model_is_right():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 1.5, 0.0]], np.float32)
    labels = np.array([0, 0, 1])
    teacher = soft_targets(logits)
    np.testing.assert_allclose(teacher.sum(axis=1), 1.0, rtol=1e-6)
    e = np.exp(logits[0] - logits[0].max())
    np.testing.assert_allclose(teacher[0], e / e.sum(), rtol=1e-6)
    mixed = distilled_targets(teacher, labels, 0.5)
    np.testing.assert_allclose(mixed[0], 0.5 * teacher[0] + 0.5 * np.eye(3)[0], rtol=1e-6)
    np.testing.assert_array_equal(mixed[1], np.eye(3)[0])  # the dense model says 1: label only
    np.testing.assert_allclose(mixed[2], 0.5 * teacher[2] + 0.5 * np.eye(3)[1], rtol=1e-6)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(distilled_targets(teacher, labels, 0.0), np.eye(3)[labels])


def _data(n, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 64)).astype(np.float32)
    return x, x[:, :10].argmax(1)


def test_epochs_left_out_come_from_the_data_size_and_a_short_run_warns():
    model = mlp(batch=64, hidden=32)
    x, y = _data(64 * 300)  # 300 steps an epoch: 5 epochs for 1,500 steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the derived run does not warn
        result = st.prune(model, 0.5, method="gmp", data=(x, y), callbacks=[])
    assert len(result.report.epochs) == schedule_epochs(len(x), 64) == 5
    assert result.report.distill == 0.5
    assert result.report.after > 0.9
    with pytest.warns(UserWarning, match=r"1 epoch\(s\) of 1280 samples are 20 fine-tuning steps"):
        st.prune(model, 0.5, method="gmp", data=_data(1280), epochs=1, callbacks=[])


def test_distill_outside_0_1_is_a_one_line_error():
    with pytest.raises(st.UsageError, match=r"distill .* in \[0, 1\]"):
        st.prune(mlp(batch=4), 0.5, method="gmp", data=_data(64), distill=1.5)
