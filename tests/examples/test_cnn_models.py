"""The torchvision-style example CNNs: ResNet-50 and MobileNet-v2, built in code."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from sparse_tvm.examples import mobilenet_v2, resnet50
from sparse_tvm.frontend import import_onnx
from sparse_tvm.frontend.fold_batchnorm import fold_batchnorm
from tests.conftest import ort_run, random_inputs
from tests.frontend.helpers import random_feeds, run_tvm

SIZE = 64  # small images: fast, and still every stride of the 224 architecture
CLASSES = 1000
# builder, Convs, depthwise Convs, names a torchvision state_dict has
MODELS = [
    (resnet50, 53, 0, ["conv1.weight", "layer1.0.conv1.weight", "layer4.2.bn3.running_var"]),
    (mobilenet_v2, 52, 17, ["features.0.0.weight", "features.2.conv.1.0.weight"]),
]
IDS = ["resnet50", "mobilenet_v2"]


@pytest.fixture(scope="module", params=MODELS, ids=IDS)
def case(request):
    build, convs, depthwise, names = request.param
    return build(size=SIZE, classes=CLASSES), convs, depthwise, names


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def test_architecture(case):
    model, convs, depthwise, names = case
    nodes = model.graph.node
    conv_nodes = [n for n in nodes if n.op_type == "Conv"]
    assert len(conv_nodes) == convs
    assert sum(_group(n) > 1 for n in conv_nodes) == depthwise
    # unfolded, as torch.onnx.export writes it: Conv without bias, then BatchNormalization
    assert sum(n.op_type == "BatchNormalization" for n in nodes) == convs
    assert all(len(n.input) == 2 for n in conv_nodes)
    initializers = {t.name for t in model.graph.initializer}
    assert set(names) <= initializers
    assert [v.name for v in model.graph.input] == ["image"]


def test_onnxruntime_logits_are_sane(case):
    model = case[0]
    (logits,) = ort_run(model, random_inputs(model))
    assert logits.shape == (1, CLASSES)
    assert np.isfinite(logits).all()
    assert 0.01 < logits.std() < 100  # activations neither vanish nor blow up


def test_folding_keeps_outputs(case):
    model = case[0]
    folded = fold_batchnorm(model)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    feeds = random_inputs(model)
    (want,), (got,) = ort_run(model, feeds), ort_run(folded, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_import_onnx_folds_every_batchnorm(case):
    model, convs, _, names = case
    imported = import_onnx(model)
    assert "batch_norm" not in imported.mod.script()
    # every conv has a bias now, and the weights keep torchvision's names
    biases = [n for n in imported.params if n.endswith(".bias")]
    assert len(biases) == convs + 1  # + the classifier's
    assert all(v.dtype == np.float32 for v in imported.params.values())
    assert {n for n in names if ".bn" not in n} <= set(imported.params)


def test_imported_mobilenet_v2_runs_like_onnxruntime():
    # depthwise convs, ReLU6 (Clip with bound inputs) and residual Adds, BatchNorm folded;
    # one model is enough for the import (ResNet-50's compile doubles this file's time)
    model = mobilenet_v2(size=SIZE, classes=CLASSES)
    imported = import_onnx(model)
    feeds = random_feeds(imported)
    (want,), (got,) = ort_run(model, feeds), run_tvm(imported, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("build", [resnet50, mobilenet_v2], ids=IDS)
def test_without_batchnorm_convs_have_biases(build):
    model = build(size=32, classes=CLASSES, batchnorm=False)
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert all(len(n.input) == 3 for n in model.graph.node if n.op_type == "Conv")
    (logits,) = ort_run(model, random_inputs(model))
    assert logits.shape == (1, CLASSES) and np.isfinite(logits).all()
