"""Same-shape layers are decided once: a clear measurement is handed on to the twins."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sparse_tvm.analysis import analyse, block_zero_fractions
from sparse_tvm.analysis.format_choice import FormatChoice
from sparse_tvm.backends import backend_for
from sparse_tvm.decision import LayerDecision
from sparse_tvm.decision.layer_decision import TWIN_MARGIN, Twins, decide_layers
from sparse_tvm.driver.compile_model import compile_model
from sparse_tvm.frontend import import_onnx
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.report import MEASURED, MEASURED_AS_TWIN
from sparse_tvm.tuning.records import layer_key
from tests.conftest import ort_run

ROWS, WIDTH = 64, 256


def _chain(sparsities: list[float]) -> onnx.ModelProto:
    """x -> (MatMul, Relu) per sparsity, every weight WIDTH x WIDTH, pruned in 16x1 blocks."""
    rng = np.random.default_rng(0)
    nodes, inits, h = [], [], "x"
    for i, _ in enumerate(sparsities):
        w = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [
            helper.make_node("MatMul", [h, f"w{i}"], [f"mm{i}"], name=f"fc{i}"),
            helper.make_node("Relu", [f"mm{i}"], [f"h{i}"]),
        ]
        h = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, WIDTH])],
        [helper.make_tensor_value_info(h, TensorProto.FLOAT, [ROWS, WIDTH])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    pruned = []
    for i, sparsity in enumerate(sparsities):
        others = [f"w{j}" for j in range(len(sparsities)) if j != i]
        pruned.append(prune_magnitude(model, sparsity, "16x1", exclude=others))
    for i, init in enumerate(model.graph.initializer):
        init.CopyFrom(pruned[i].graph.initializer[i])
    return model


def test_layers_with_a_measured_twin_take_its_decision_and_run_right():
    model = _chain([0.95, 0.95, 0.95, 0.8])
    x = np.random.default_rng(1).standard_normal((ROWS, WIDTH)).astype(np.float32)
    compiled = compile_model(model, "x86")
    rows = compiled.report.layers
    assert [row.decided_by for row in rows] == [
        MEASURED,
        MEASURED_AS_TWIN,
        MEASURED_AS_TWIN,
        MEASURED,  # same shapes, other sparsity: timed on its own
    ]
    assert all(row.format == "bsr 16x1" for row in rows[:3])
    assert rows[1].reason.startswith(f"as {rows[0].layer} (same shapes")
    assert (rows[1].dense_us, rows[1].sparse_us) == (rows[0].dense_us, rows[0].sparse_us)
    assert rows[0].dense_us / rows[0].sparse_us >= TWIN_MARGIN
    (want,) = ort_run(model, {"x": x})
    np.testing.assert_allclose(compiled.run({"x": x})[0], want, rtol=1e-4, atol=1e-4)
    notes = compiled.report.decision_notes()
    assert notes[1].startswith("2 layers decided as a twin layer measured on this host")


def test_the_dense_key_ignores_the_pattern_only():
    layers = analyse(import_onnx(_chain([0.95, 0.9])))
    assert layer_key(layers[0]) != layer_key(layers[1])
    assert layer_key(layers[0], pattern=False) == layer_key(layers[1], pattern=False)


def _decision(layer, dense_s: float, sparse_s: float, sparse: bool) -> LayerDecision:
    choice = (
        FormatChoice("bsr", (16, 1), 5.0, "cost model")
        if sparse
        else FormatChoice("dense", None, 1.0, "kept dense")
    )
    return LayerDecision(
        layer, choice, dense_s=dense_s, sparse_s=sparse_s, decided_by=MEASURED, candidate=(16, 1)
    )


def test_only_clear_measurements_are_handed_on():
    first, second = analyse(import_onnx(_chain([0.95, 0.95])))
    fractions = block_zero_fractions(second.weight)
    for dense_s, sparse_s, handed_on in [
        (3e-4, 1e-4, True),  # 3x: clear
        (1.2e-4, 1e-4, False),  # 1.2x: each layer is timed
        (1e-4, 1.2e-4, False),
        (1e-4, 2e-4, True),  # dense by 2x: clear
    ]:
        twins = Twins()
        twins.add(_decision(first, dense_s, sparse_s, dense_s > sparse_s), fractions)
        got = twins.decision_for(second, (16, 1), fractions)
        assert (got is not None) == handed_on, (dense_s, sparse_s)
        if got is not None:
            assert got.layer is second and got.decided_by == MEASURED_AS_TWIN
            assert (got.weight is not None) == (dense_s > sparse_s)
    twins = Twins()
    twins.add(_decision(first, 3e-4, 1e-4, True), fractions)
    assert twins.decision_for(second, (4, 1), fractions) is None  # another format


def test_decide_layers_measures_each_shape_once():
    layers = analyse(import_onnx(_chain([0.95, 0.95, 0.95])))
    decisions, _ = decide_layers(layers, backend_for("x86"))
    assert [d.decided_by for d in decisions] == [MEASURED] + [MEASURED_AS_TWIN] * 2
    for decision in decisions:  # each twin stores its own weight, not its twin's
        np.testing.assert_array_equal(decision.weight.to_dense(), decision.layer.weight)
