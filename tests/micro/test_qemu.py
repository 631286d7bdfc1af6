"""Emitted projects built with arm-none-eabi-gcc and run on qemu-system-arm (MPS2 boards):
outputs against onnxruntime, the program's own exit status, and the flash / instruction goals
at 90 % sparsity."""

import numpy as np
import pytest

import sparse_tvm as st
from tests.conftest import ort_run, random_inputs
from tests.micro.conftest import micro_model, needs_qemu

pytestmark = needs_qemu


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m3"])
@pytest.mark.parametrize(("name", "pattern"), [("mlp", "1x1"), ("cnn", "4x1")])
def test_sparse_project_on_qemu_matches_onnxruntime(tmp_path, target, name, pattern):
    model = micro_model(name, pattern)
    project = st.compile(model, target, output=tmp_path / "p", compare_dense=False)
    assert any(r.format != "dense" for r in project.report.layers)
    inputs = random_inputs(model)
    expected = ort_run(model, inputs)
    result = project.run_qemu(inputs, expected, atol=1e-4)
    assert result.returncode == 0, result.stdout  # the program compares on the device too
    np.testing.assert_allclose(result.outputs[0], expected[0], atol=1e-4, rtol=1e-4)
    assert result.instructions and result.instructions > 1000


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_goals_at_90_percent_on_cortex_m4(tmp_path, name):
    model = micro_model(name, "1x1")
    inputs = random_inputs(model)
    expected = ort_run(model, inputs)
    sparse = st.compile(model, "cortex-m4", output=tmp_path / "sparse")
    dense = st.compile(
        model, "cortex-m4", output=tmp_path / "dense", dense=True, compare_dense=False
    )
    assert sparse.report.sizes.flash <= 0.30 * sparse.report.dense.flash
    assert dense.report.sizes.flash == sparse.report.dense.flash
    runs = [p.run_qemu(inputs, expected) for p in (sparse, dense)]
    assert [r.returncode for r in runs] == [0, 0]
    assert runs[0].instructions <= 0.40 * runs[1].instructions
