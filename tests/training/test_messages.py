"""One-line errors of fine-tuning: training data with wrong keys, and an operator TVM cannot
differentiate (named with the layer it belongs to)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import sparse_tvm as st
from sparse_tvm.examples import mlp
from sparse_tvm.training import TrainConfig, TrainingDataError, train

EXPECTED = (
    "expected the model's inputs (x) plus 'labels' (class ids) or 'targets' (regression "
    "values), or the inputs alone (then the pruned model learns the dense model's outputs)"
)
X = np.zeros((4, 64), np.float32)
LABELS = np.zeros(4, np.int64)


def _prune(data, model=None):
    model = model if model is not None else mlp(batch=4)
    return st.prune(model, 0.5, method="gmp", data=data, epochs=1, callbacks=[])


@pytest.mark.parametrize(
    "data,problem",
    [
        ({"x": X, "y": LABELS}, "has an unknown array 'y'"),
        ({"x": X, "y": LABELS, "w": X}, "has unknown arrays 'w', 'y'"),
        ({"labels": LABELS}, "lacks the model's input 'x'"),
        (
            {"image": X, "labels": LABELS},
            "lacks the model's input 'x' and has an unknown array 'image'",
        ),
    ],
    ids=["unknown", "two-unknown", "missing", "both"],
)
def test_wrong_keys_say_what_is_wrong_and_what_is_expected(data, problem, tmp_path):
    for given in (data, tmp_path / "train.npz"):
        np.savez(tmp_path / "train.npz", **data)
        with pytest.raises(TrainingDataError) as info:
            _prune(str(given) if not isinstance(given, dict) else given)
        assert str(info.value) == f"training data {problem}: {EXPECTED}"


def test_a_model_with_two_inputs_lists_both():
    model = mlp(batch=4)
    model.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [4, 64]))
    add = helper.make_node("Add", ["x", "mask"], ["x_masked"], name="mask_add")
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == "x":
                node.input[i] = "x_masked"
    model.graph.node.insert(0, add)
    with pytest.raises(TrainingDataError) as info:
        _prune({"x": X, "labels": LABELS}, model)
    assert str(info.value).startswith(
        "training data lacks the model's input 'mask': expected the model's inputs (x, mask) "
        "plus 'labels'"
    )


def test_dense_training_needs_labels_or_targets():
    with pytest.raises(TrainingDataError) as info:
        train(mlp(batch=4), {"x": X}, config=TrainConfig(epochs=1))
    assert str(info.value) == (
        "training data holds neither 'labels' nor 'targets': expected the model's inputs (x) "
        "plus 'labels' (class ids) or 'targets' (regression values)"
    )


def _unsupported(case: str) -> onnx.ModelProto:
    """x (4, 8) -> fc1 (8 -> 16) -> (4, 4, 4) -> reduce over axis 1 -> fc2 -> logits (4, 4), with
    an operator TVM 0.27 has no gradient for: ReduceMax (``relax.max``) after fc1 or on the
    input, PRelu (``relax.nn.prelu``, whose slope is a weight of its own), or Tile (a TIR
    function the importer emits)."""
    rng = np.random.default_rng(0)

    def init(name, value):
        return numpy_helper.from_array(np.asarray(value), name)

    fc2_in = 8 if case == "tile" else 4
    inits = [
        init("fc1.weight", rng.standard_normal((8, 16)).astype(np.float32)),
        init("fc2.weight", rng.standard_normal((fc2_in, 4)).astype(np.float32)),
        init("shape", np.array([4, 4, 4], np.int64)),
        init("axis", np.array([1], np.int64)),
    ]
    node = helper.make_node
    nodes = [node("Identity", ["x"], ["x1"], name="input")]
    if case == "max-input":  # max over pairs of input features, fed to fc1 twice
        inits.append(init("pairs", np.array([4, 4, 2], np.int64)))
        inits.append(init("last", np.array([2], np.int64)))
        nodes += [
            node("Reshape", ["x", "pairs"], ["x2"], name="pairs"),
            node("ReduceMax", ["x2", "last"], ["x3"], name="pool", keepdims=0),
            node("Concat", ["x3", "x3"], ["x1"], name="twice", axis=1),
        ]
        nodes.pop(0)
    nodes.append(node("MatMul", ["x1", "fc1.weight"], ["h"], name="fc1"))
    if case == "prelu":
        inits.append(init("act.slope", np.full(16, 0.25, np.float32)))
        nodes.append(node("PRelu", ["h", "act.slope"], ["h1"], name="act"))
    else:
        nodes.append(node("Identity", ["h"], ["h1"], name="same"))
    nodes.append(node("Reshape", ["h1", "shape"], ["h3"], name="split"))
    reduce = "ReduceMax" if case == "max-after" else "ReduceMean"
    nodes.append(node(reduce, ["h3", "axis"], ["h4"], name="reduce", keepdims=0))
    if case == "tile":
        inits.append(init("repeats", np.array([1, 2], np.int64)))
        nodes.append(node("Tile", ["h4", "repeats"], ["h5"], name="tile"))
    else:
        nodes.append(node("Identity", ["h4"], ["h5"], name="same2"))
    nodes.append(node("MatMul", ["h5", "fc2.weight"], ["logits"], name="fc2"))
    graph = helper.make_graph(
        nodes,
        "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize(
    "case,what",
    [
        ("max-after", "relax.max (after layer fc1)"),
        ("max-input", "relax.max (before layer fc1)"),
        ("prelu", "relax.nn.prelu (in layer act)"),
        ("tile", "the TIR function 'tile' (relax.call_tir) (after layer fc1)"),
    ],
)
def test_an_operator_without_gradient_is_named_with_its_layer(case, what):
    model = _unsupported(case)
    x = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)
    with pytest.raises(st.SparseTVMError) as info:
        st.prune(model, 0.5, method="gmp", data={"x": x}, epochs=1, batch_size=4, callbacks=[])
    assert str(info.value) == (
        f"fine-tuning needs the gradient of {what}, which TVM does not have: prune without "
        "fine-tuning (method='magnitude', CLI --method magnitude), or export the model with "
        "another operator there"
    )
    # what it says to do works: one-shot magnitude pruning needs no gradient
    pruned = st.prune(model, 0.5, method="magnitude")
    assert pruned.report["fc1.weight"] == pytest.approx(0.5)
    assert pruned.report["fc2.weight"] == pytest.approx(0.5)
