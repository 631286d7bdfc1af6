"""The emitted C project: its files and header, the size report, the budget check, and a
host build of the same sources against onnxruntime."""

import re

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.errors import TargetError
from sparse_tvm.micro import MicroBudgetError, micro_target
from tests.conftest import ort_run, random_inputs
from tests.micro.conftest import micro_model, needs_host_cc


@pytest.fixture(scope="module")
def mlp_project(tmp_path_factory):
    model = micro_model("mlp")
    folder = tmp_path_factory.mktemp("mlp")
    project = st.compile(model, "cortex-m4", output=folder)
    return model, project, (folder / "main.c").read_text()  # main.c as emitted


def test_project_files_and_header(mlp_project):
    _, project, _ = mlp_project
    names = {p.relative_to(project.folder).as_posix() for p in project.files}
    assert {
        "main.c",
        "model.h",
        "model.c",
        "model_kernels.c",
        "model_weights.c",
        "sparse_tvm_micro.h",
        "Makefile",
        "board/startup.c",
        "board/link.ld",
        "report.txt",
    } <= names
    header = (project.folder / "model.h").read_text()
    assert "int model_run(const float *x, float *logits);" in header
    assert "#define MODEL_INPUT_X_SHAPE {8, 64}" in header
    assert "#define MODEL_OUTPUT_LOGITS_SHAPE {8, 10}" in header
    source = (project.folder / "model.c").read_text() + (
        project.folder / "model_kernels.c"
    ).read_text()
    assert "malloc" not in source and '#include "tvm/' not in source
    weights = (project.folder / "model_weights.c").read_text()
    assert re.search(r"const uint8_t model_c\d+\[", weights)  # delta-encoded indices
    assert "-mcpu=cortex-m4" in (project.folder / "Makefile").read_text()


def test_report_has_dense_beside_sparse(mlp_project):
    model, project, _ = mlp_project
    report = project.report
    assert [r.format for r in report.layers] == ["csr 1x1 delta8"] * 3
    dense_weights = sum(r.dense_bytes for r in report.layers)
    assert report.dense.weights >= dense_weights  # plus the biases
    assert report.sizes.weights < 0.2 * report.dense.weights
    assert report.sizes.arena == report.dense.arena == 2 * 8 * 256 * 4
    assert "sparse/dense" in project.size_table and "flash: weights" in project.size_table


@needs_host_cc
def test_host_build_matches_onnxruntime(mlp_project):
    model, project, _ = mlp_project
    inputs = random_inputs(model)
    expected = ort_run(model, inputs)
    result = project.run_host(inputs, expected)
    assert result.returncode == 0, result.stdout
    np.testing.assert_allclose(result.outputs[0], expected[0], atol=1e-4, rtol=1e-4)
    # the program checks on its own: wrong expected outputs give exit status 1 through make
    wrong = project.run_host(inputs, [expected[0] + 1.0])
    assert wrong.returncode == 1 and "MISMATCH" in wrong.stdout, wrong.stdout
    np.testing.assert_allclose(wrong.outputs[0], expected[0], atol=1e-4, rtol=1e-4)


@needs_host_cc
def test_emitted_main_is_the_harness_main(mlp_project):
    model, project, emitted = mlp_project
    assert (
        "model_expected_" not in emitted
        and "model_run(model_input_x, model_output_logits)" in emitted
    )
    # run_host() without inputs writes the emitted main.c again (the example input) and runs it
    result = project.run_host()
    assert (project.folder / "main.c").read_text() == emitted
    assert result.returncode == 0, result.stdout
    expected = ort_run(model, project.example_inputs)
    np.testing.assert_allclose(result.outputs[0], expected[0], atol=1e-4, rtol=1e-4)


def test_recompiling_keeps_the_users_main(tmp_path):
    model = micro_model("mlp")
    st.compile(model, "cortex-m4", output=tmp_path / "p", compare_dense=False)
    example = (tmp_path / "p" / "main.c").read_text()
    st.compile(model, "cortex-m4", output=tmp_path / "p", compare_dense=False)  # ours: rewritten
    assert (tmp_path / "p" / "main.c").read_text() == example
    assert not (tmp_path / "p" / "main.example.c").exists()
    app = '#include "model.h"\nint main(void) { return 0; }\n'
    (tmp_path / "p" / "main.c").write_text(app)
    said = []
    st.compile(model, "cortex-m4", output=tmp_path / "p", compare_dense=False, progress=said.append)
    assert (tmp_path / "p" / "main.c").read_text() == app
    assert (tmp_path / "p" / "main.example.c").read_text() == example
    assert "keeping your main.c (the example is main.example.c)" in said


def test_model_too_large_for_the_ram_says_by_how_much(tmp_path):
    from sparse_tvm.examples import small_cnn

    with pytest.raises(MicroBudgetError, match=r"does not fit cortex-m3: RAM needs \d+\.\d KB"):
        st.compile(small_cnn(size=32), "cortex-m3", output=tmp_path / "out", compare_dense=False)
    assert not (tmp_path / "out").exists()


def test_presets_and_non_micro_target():
    m3, m4 = micro_target("cortex-m3"), micro_target("cortex-m4")
    assert not m3.fpu and "-mfloat-abi=soft" in m3.cflags and m3.qemu_machine == "mps2-an385"
    assert m4.fpu and "-mfpu=fpv4-sp-d16" in m4.cflags and m4.qemu_machine == "mps2-an386"
    assert micro_target("cortex-m7").ram_kb > m4.ram_kb
    assert micro_target("cortex-m55").cpu == "cortex-m55"
    with pytest.raises(TargetError, match="not a microcontroller preset"):
        micro_target("x86")
