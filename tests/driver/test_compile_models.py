"""Whole models compiled by sparse-tvm give onnxruntime's outputs, dense and sparse."""

from __future__ import annotations

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.driver.compile_model import compile_model
from sparse_tvm.examples import bert_block, mlp, small_cnn
from sparse_tvm.pruning import prune_magnitude
from tests.conftest import ort_run, random_inputs

SMALL_BERT = dict(seq=16, hidden=64, heads=4, ffn=128)


def _check(model, compiled, rtol=1e-4, atol=1e-4):
    inputs = random_inputs(model)
    expected = ort_run(model, inputs)
    actual = compiled.run(inputs)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("block", [(1, 1), (16, 1)])
def test_mlp_sparse_matches_onnxruntime(sparsity, block):
    model = prune_magnitude(mlp(), sparsity, f"{block[0]}x{block[1]}")
    compiled = compile_model(model, "x86", force_block=block)
    assert all(row.format != "dense" for row in compiled.report.layers)
    _check(model, compiled)


@pytest.mark.parametrize(("sparsity", "block"), [(0.5, (1, 1)), (0.9, (4, 1)), (0.9, (1, 4))])
def test_cnn_sparse_matches_onnxruntime(sparsity, block):
    model = prune_magnitude(small_cnn(), sparsity, f"{block[0]}x{block[1]}")
    compiled = compile_model(model, "x86", force_block=block)
    formats = {row.name: row.format for row in compiled.report.layers}
    assert formats["dwconv.weight"] == "dense"  # depthwise stays dense, and says so
    assert formats["conv1.weight"] != "dense" and formats["conv2.weight"] != "dense"
    _check(model, compiled)


@pytest.mark.parametrize(("sparsity", "block"), [(0.0, None), (0.7, (1, 1)), (0.9, (16, 1))])
def test_bert_block_matches_onnxruntime(sparsity, block):
    model = prune_magnitude(
        bert_block(**SMALL_BERT), sparsity, f"{block[0]}x{block[1]}" if block else "1x1"
    )
    compiled = compile_model(model, "x86", force_block=block, dense=block is None)
    _check(model, compiled, rtol=2e-4, atol=2e-4)


def test_measured_decision_never_picks_a_slower_layer():
    model = prune_magnitude(mlp(batch=64, hidden=512), 0.95, "16x1")
    compiled = st.compile(model, target="x86")
    for row in compiled.report.layers:
        if row.format != "dense":
            assert row.sparse_us is not None and row.dense_us is not None
            assert row.sparse_us < row.dense_us
    _check(model, compiled)


def test_export_load_roundtrip(tmp_path):
    model = prune_magnitude(mlp(), 0.9, "16x1")
    compiled = compile_model(model, "x86", force_block=(16, 1))
    path = tmp_path / "mlp.tar"
    compiled.export(path)
    again = st.load(path)
    assert [s.name for s in again.inputs] == ["x"]
    assert str(again.report) == str(compiled.report)
    _check(model, again)
    stats = again.benchmark(random_inputs(model), repeat=3, warmup=1)
    assert 0 < stats["min"] <= stats["median"] <= stats["max"]


def test_wrong_input_is_a_clear_error():
    compiled = compile_model(mlp(), "x86", dense=True)
    with pytest.raises(st.InputShapeError, match="compiled for"):
        compiled.run({"x": np.zeros((3, 64), np.float32)})
    with pytest.raises(st.InputShapeError, match="unknown input"):
        compiled.run({"y": np.zeros((8, 64), np.float32)})
