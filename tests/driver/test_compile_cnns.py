"""ResNet-50, MobileNet-v2 and MobileNet-v1 compiled for x86, dense and 90 % sparse, against
onnxruntime (relative error < 1e-4). Small images keep the default suite fast; the whole set of
patterns runs under ``-m slow``."""

from __future__ import annotations

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.examples import mobilenet, mobilenet_v2, resnet50
from sparse_tvm.pruning import prune_magnitude
from tests.conftest import ort_run, random_inputs

BUILDERS = {"resnet50": resnet50, "mobilenet_v2": mobilenet_v2, "mobilenet": mobilenet}
FAST = {("resnet50", "dense"), ("resnet50", "4x1"), ("mobilenet_v2", "16x1"), ("mobilenet", "4x1")}
CASES = [
    pytest.param(model, pattern, marks=() if (model, pattern) in FAST else pytest.mark.slow)
    for model in BUILDERS
    for pattern in ("dense", "1x1", "4x1", "16x1")
]


@pytest.mark.parametrize(("model_name", "pattern"), CASES)
def test_cnn_matches_onnxruntime(model_name, pattern):
    model = BUILDERS[model_name](size=32)
    if pattern != "dense":
        model = prune_magnitude(model, 0.9, pattern)
    inputs = random_inputs(model)
    # the cost model decides (timing every layer is the slow part, tested elsewhere)
    compiled = st.compile(model, "x86", dense=pattern == "dense", measure=False)
    got = compiled.run(*inputs.values())
    got = got[0] if isinstance(got, (list, tuple)) else got
    (want,) = ort_run(model, inputs)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() / scale < 1e-4
    rows = compiled.report.layers
    sparse = [row for row in rows if row.format != "dense"]
    if pattern == "dense":
        assert not sparse
    else:
        # every groups=1 conv and the classifier can be sparse; depthwise convs stay dense
        depthwise = [row for row in rows if "depthwise" in row.reason]
        assert all(row.format == "dense" for row in depthwise)
        assert len(sparse) >= (len(rows) - len(depthwise)) // 2
