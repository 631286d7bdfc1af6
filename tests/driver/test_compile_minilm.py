"""all-MiniLM-L6-v2 (a real sentence-transformer, exported by torch.onnx.export from the packaged
weights) compiled for x86, dense and pruned, against onnxruntime on the same model. The default
suite compiles it dense and at 90 % unstructured with every layer timed, as a user would; the
other sparsities and 16x1 blocks run under ``-m slow``."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

import sparse_tvm as st
from sparse_tvm.analysis import analyse
from sparse_tvm.examples.minilm import SENTENCES, minilm, minilm_inputs
from sparse_tvm.frontend import import_onnx
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.report import MEASURED, MEASURED_AS_TWIN
from sparse_tvm.transform.fused_attention import find_attentions
from tests.conftest import ort_run

CASES = [
    pytest.param(0.0, "1x1", id="dense"),
    pytest.param(0.9, "1x1", id="90%-1x1"),
    pytest.param(0.8, "1x1", id="80%-1x1", marks=pytest.mark.slow),
    pytest.param(0.95, "1x1", id="95%-1x1", marks=pytest.mark.slow),
    pytest.param(0.9, "16x1", id="90%-16x1", marks=pytest.mark.slow),
]


@pytest.fixture(scope="module")
def exported():
    return minilm(batch=1, seq=128)


@pytest.mark.parametrize(("sparsity", "pattern"), CASES)
def test_minilm_matches_onnxruntime(exported, sparsity, pattern):
    model = exported if sparsity == 0 else prune_magnitude(exported, sparsity, pattern)
    compiled = st.compile(model, "x86", dense=sparsity == 0)
    rows = compiled.report.layers
    assert len(rows) == 36  # q, k, v, attention output, FFN up and down in six layers
    if sparsity == 0:
        assert all(row.format == "dense" for row in rows)
    else:
        # every layer timed, each distinct shape at least once (the others as its twins)
        assert {row.decided_by for row in rows} <= {MEASURED, MEASURED_AS_TWIN}
        assert sum(row.decided_by == MEASURED for row in rows) >= 3
        assert sum(row.format != "dense" for row in rows) >= 30
        assert all(abs(row.sparsity - sparsity) < 0.01 for row in rows)
        # a sparse kernel takes its layer's bias, and the FFN up layers' GELU too
        for row in rows:
            if row.format != "dense":
                gelu = ["gelu"] if "intermediate" in row.display_name else []
                assert row.fused == ["bias", *gelu], row.display_name
    for text in SENTENCES[:2]:  # real token ids, padded: the attention mask is used
        inputs = minilm_inputs([text])
        (want,) = ort_run(model, inputs)
        (got,) = compiled.run(inputs)
        assert got.shape == (1, 384)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_the_ffn_up_layers_take_their_gelu(exported):
    # torch's export spells GELU as Div / Erf / Add / Mul / Mul with initializer constants
    layers = analyse(import_onnx(exported), gelu=True)
    fused = [layer.display_name or layer.name for layer in layers if layer.gelu]
    assert len(fused) == 6 and all("intermediate" in name for name in fused)
    assert not any(layer.gelu for layer in analyse(import_onnx(exported)))  # off by default


def test_the_attentions_become_one_kernel_each(exported):
    # the six self-attentions, read straight from the projections' (tokens, hidden) outputs
    imported = import_onnx(exported)
    main = relax.transform.BindParams("main", imported.params)(imported.mod)["main"]
    found = find_attentions(main)
    assert len(found) == 6
    assert {(m.spec.heads, m.spec.queries, m.spec.keys, m.spec.dim) for m in found} == {
        (12, 128, 128, 32)
    }
    assert {
        (m.spec.q_layout, m.spec.k_layout, m.spec.v_layout, m.spec.out_layout) for m in found
    } == {("BSHD",) * 4}
    assert all(m.scale is not None and m.mask is not None for m in found)
