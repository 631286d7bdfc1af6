"""Quantized (QDQ) models on Cortex-M: the int8 ``SMLAD`` kernels, run on qemu-system-arm
against onnxruntime's run of the same QDQ model, bit-exact between the device, a core without
the DSP extension (Cortex-M3, plain C) and the host build."""

import subprocess

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.runtime.onnxruntime_reference import reference_session
from tests.micro.conftest import needs_qemu
from tests.quantized.models import ffn, output_step, quantized_ffn, run_ort

pytestmark = needs_qemu


def _x(m: int, d: int = 64, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((m, d)).astype(np.float32)


def _disassembly(project) -> str:
    objects = sorted((project.folder / "build").glob("*_kernels.o"))
    done = subprocess.run(
        ["arm-none-eabi-objdump", "-d", *map(str, objects)], capture_output=True, text=True
    )
    return done.stdout


def _calib(model, m: int = 2):
    d = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    return {"x": np.random.default_rng(1).standard_normal((8 * m, d)).astype(np.float32)}


@pytest.mark.parametrize(
    ("pattern", "kw", "label"),
    [
        ("4x1", {}, "int8 bsr 4x1"),  # MatMul + Add: the QDQ tail in the epilogue
        ("1x1", {"per_channel": False}, "int8 csr"),  # one weight scale
        ("8x1", {"gemm": True}, "int8 bsr 8x1"),  # Gemm: the bias before the quantize
    ],
)
def test_quantized_model_runs_int8_on_qemu_as_onnxruntime(tmp_path, pattern, kw, label):
    q = quantized_ffn(0.9, pattern, m=2, **kw)
    x = _x(2)
    ref = run_ort(q, x)
    project = st.compile(q, "cortex-m4", output=tmp_path / "p", compare_dense=False)
    formats = [row.format for row in project.report.layers]
    assert formats and all(f.startswith(label) for f in formats), formats
    result = project.run_qemu({"x": x})
    assert result.returncode == 0, result.stdout
    # the same sums and roundings: at most one step of the output's quantization apart
    assert np.abs(result.outputs[0] - ref).max() <= output_step(q) * 1.001
    assert "smlad" in _disassembly(project)
    if pattern == "4x1":  # the tail's requantize in fixed point (micro/integer_tail.py)
        kernels = (tmp_path / "p" / "model_kernels.c").read_text()
        assert "stvm_usat8(" in kernels or "stvm_ssat8(" in kernels
    host = project.run_host({"x": x})
    np.testing.assert_array_equal(host.outputs[0], result.outputs[0])  # bit-exact


def test_int8_activations_and_the_dense_int8_build(tmp_path):
    model = st.prune(ffn(2), 0.9, "4x1").model
    q = st.quantize(model, _calib(model), per_channel=True, activations="int8")
    x = _x(2)
    ref = run_ort(q, x)
    sparse = st.compile(q, "cortex-m4", output=tmp_path / "s", compare_dense=False)
    dense = st.compile(q, "cortex-m4", output=tmp_path / "d", dense=True, compare_dense=False)
    assert [r.format for r in dense.report.layers] == ["int8 dense"] * 2
    runs = [p.run_qemu({"x": x}) for p in (sparse, dense)]
    for run in runs:
        assert run.returncode == 0, run.stdout
        assert np.abs(run.outputs[0] - ref).max() <= output_step(q) * 1.001
    assert runs[0].instructions < 0.4 * runs[1].instructions
    # the dense int8 weights are a quarter of the float ones, the sparse ones a tenth of that
    assert dense.report.sizes.weights < 0.3 * 4 * 2 * 64 * 256
    assert sparse.report.sizes.weights < 0.3 * dense.report.sizes.weights


def test_cortex_m3_without_dsp_computes_the_same_bits(tmp_path):
    q = quantized_ffn(0.9, "4x1", m=1)
    x = _x(1)
    m4 = st.compile(q, "cortex-m4", output=tmp_path / "m4", compare_dense=False)
    m3 = st.compile(q, "cortex-m3", output=tmp_path / "m3", compare_dense=False)
    runs = [p.run_qemu({"x": x}) for p in (m4, m3)]
    assert [r.returncode for r in runs] == [0, 0]
    np.testing.assert_array_equal(runs[0].outputs[0], runs[1].outputs[0])
    assert "smlad" not in _disassembly(m3)  # no DSP extension: the plain C arithmetic


def test_size_report_compares_with_the_int8_dense_build(tmp_path):
    q = quantized_ffn(0.9, "4x1", m=1)
    project = st.compile(q, "cortex-m4", output=tmp_path / "p")
    sizes, dense = project.report.sizes, project.report.dense
    # the dense column is the int8 dense build: a quarter of the float bytes, not the
    # float32 weights the QDQ model's dequantize computes
    assert dense.weights < 0.3 * 4 * 2 * 64 * 256
    assert sizes.flash < 0.4 * dense.flash


def _quantized_cnn():
    """A small CNN (3x3 convs with padding, a max pool, global average pool, Gemm) pruned to
    90 % in 4x1 blocks and quantized per channel."""
    from sparse_tvm.examples import small_cnn

    model = st.prune(small_cnn(size=8), 0.9, "4x1").model
    rng = np.random.default_rng(0)
    calib = {model.graph.input[0].name: rng.random((16, 3, 8, 8)).astype(np.float32)}
    return st.quantize(model, calib, per_channel=True)


def test_quantized_cnn_runs_int8_convs_on_qemu(tmp_path):
    q = _quantized_cnn()
    name = q.graph.input[0].name
    x = np.random.default_rng(5).random((1, 3, 8, 8)).astype(np.float32)

    ref = reference_session(q).run(None, {name: x})[0]
    sparse = st.compile(q, "cortex-m4", output=tmp_path / "s", compare_dense=False)
    dense = st.compile(q, "cortex-m4", output=tmp_path / "d", dense=True, compare_dense=False)
    layers = sparse.report.layers
    assert [r.op for r in layers if r.format.startswith("int8 bsr")].count("conv2d") >= 2
    runs = [p.run_qemu({name: x}) for p in (sparse, dense)]
    for run in runs:
        assert run.returncode == 0, run.stdout
        assert np.abs(run.outputs[0] - ref).max() <= output_step(q) * 1.001
    assert runs[0].instructions < 0.5 * runs[1].instructions
    # the sparse convs read their padded input in place: no im2col buffer, no transposes
    source = (tmp_path / "s" / "model.c").read_text()
    assert "im2col" not in source and "transpose" not in source
    assert "DLTensor" not in source  # kernels take plain pointers (micro/c_functions.py)
    assert "im2col" in (tmp_path / "d" / "model.c").read_text()
