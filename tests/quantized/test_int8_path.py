"""The int8 path of a quantized model: the analysis finds a QDQ layer's int8 operands, the
compiler runs the VNNI kernel (x86 without VNNI: the AVX2 one) where it measures faster than
the float path, and the compiled model matches onnxruntime on the same QDQ model; targets
without int8 dot products keep the float path."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

import sparse_tvm as st
from sparse_tvm.analysis import analyse
from sparse_tvm.frontend import import_onnx
from tests.conftest import avx2, avx512, vnni

from .models import ffn, output_step, quantized_ffn, run_ort


def _inits(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("gemm", [False, True])
@pytest.mark.parametrize("per_channel", [False, True])
def test_analysis_finds_the_int8_operands(gemm, per_channel):
    q = quantized_ffn(gemm=gemm, per_channel=per_channel)
    inits = _inits(q)
    layers = analyse(import_onnx(q), gelu=True)
    assert [layer.name for layer in layers] == ["w1", "w2"]
    for layer in layers:
        ops = layer.int8
        assert ops is not None, layer.name
        stored = inits[f"{layer.name}_quantized"]  # the model's own int8 values
        assert ops.weight.dtype == np.int8
        np.testing.assert_array_equal(ops.weight, stored if gemm else stored.T)
        scale = inits[f"{layer.name}_scale"]
        np.testing.assert_array_equal(
            ops.weight_scale, np.broadcast_to(scale, ops.weight.shape[:1])
        )
        assert str(ops.x.ty.dtype) == "uint8" and 0 <= ops.x_zero <= 255 and ops.x_scale > 0
        assert ops.out is not None and ops.out_scale > 0  # the output quantize after the bias
        assert (ops.weight == 0).mean() == pytest.approx(layer.sparsity)


def test_float_and_excluded_layers_have_no_int8_operands():
    model = quantized_ffn(sparsity=0)  # quantized: operands found
    assert all(layer.int8 is not None for layer in analyse(import_onnx(model)))
    float_layers = analyse(import_onnx(ffn()))
    assert all(layer.int8 is None for layer in float_layers)
    data = {"x": np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)}
    partly = st.quantize(ffn(), data, exclude=["down"])
    found = {layer.name: layer.int8 is not None for layer in analyse(import_onnx(partly))}
    assert found == {"w1": True, "w2": False}


@vnni
def test_int8_activations_compile_int8_and_match_onnxruntime():
    """Symmetric int8 activations (``activations="int8"``): the kernel reads them as X + 128
    and writes int8 outputs."""
    data = {"x": np.random.default_rng(1).standard_normal((128, 64)).astype(np.float32)}
    q = st.quantize(st.prune(ffn(), 0.9, "16x4").model, data, activations="int8")
    layers = analyse(import_onnx(q))
    assert all(layer.int8.x_signed and layer.int8.out_signed for layer in layers)
    compiled = st.compile(q, "x86")
    assert {row.format for row in compiled.report.layers} == {"int8 bsr 16x4"}
    x = np.random.default_rng(3).standard_normal((32, 64)).astype(np.float32)
    got, want = np.asarray(compiled.run({"x": x})[0]), run_ort(q, x)
    assert np.abs(got - want).max() <= output_step(q) * 1.001
    assert np.mean(np.isclose(got, want, rtol=1e-6, atol=1e-6)) >= 0.99


@vnni
@pytest.mark.parametrize(("gemm", "per_channel"), [(False, True), (True, False)])
def test_compiled_int8_layers_match_onnxruntime(gemm, per_channel):
    q = quantized_ffn(gemm=gemm, per_channel=per_channel)
    compiled = st.compile(q, "x86")
    rows = {row.name: row for row in compiled.report.layers}
    assert {row.format for row in rows.values()} == {"int8 bsr 16x4"}, compiled.report
    for row in rows.values():
        assert "measured" in row.reason and row.stored_bytes < row.dense_bytes / 8
    # the float ops between the layers' quantizes run in the kernels' epilogues
    up_tail = (
        "quantize+dequantize+relu+quantize" if gemm else "quantize+dequantize+bias+relu+quantize"
    )
    assert "+".join(rows["w1"].fused).endswith(up_tail), rows["w1"].fused
    assert "+".join(rows["w2"].fused).endswith("quantize+dequantize" + ("" if gemm else "+bias"))
    x = np.random.default_rng(3).standard_normal((32, 64)).astype(np.float32)
    got, want = np.asarray(compiled.run({"x": x})[0]), run_ort(q, x)
    # exact int32 sums, the same roundings: a flip of a rounding step at most, rarely (the
    # float epilogues after the last quantize may differ in the last bit: FMA contraction)
    assert np.abs(got - want).max() <= output_step(q) * 1.001
    assert np.mean(np.isclose(got, want, rtol=1e-6, atol=1e-6)) >= 0.99


def test_target_without_int8_dot_products_keeps_the_float_path():
    q = quantized_ffn()
    sse2 = {"kind": "llvm", "mcpu": "x86-64", "num-cores": 2}  # no VNNI, no AVX2
    compiled = st.compile(q, sse2, st.CompileOptions(measure=False))
    assert all("int8" not in row.format for row in compiled.report.layers)
    x = np.random.default_rng(4).standard_normal((32, 64)).astype(np.float32)
    got, want = np.asarray(compiled.run({"x": x})[0]), run_ort(q, x)
    assert np.abs(got - want).max() <= 4 * output_step(q)  # float sums: a few steps flip


@avx2
@pytest.mark.parametrize("target", ["x86-avx2", pytest.param("x86-avx512", marks=avx512)])
def test_x86_without_vnni_runs_the_avx2_int8_kernel(target):
    """vpmaddwd on 16-bit pairs (exact); timed against the float path like VNNI's."""
    q = quantized_ffn(m=32)
    compiled = st.compile(q, target)
    formats = [row.format for row in compiled.report.layers]
    assert all(f in ("int8 bsr 16x4", "bsr 16x1", "dense") for f in formats), formats
    assert "int8 bsr 16x4" in formats  # 90 % of the blocks zero: int8 wins on any x86 core
    x = np.random.default_rng(4).standard_normal((32, 64)).astype(np.float32)
    got, want = np.asarray(compiled.run({"x": x})[0]), run_ort(q, x)
    assert np.abs(got - want).max() <= output_step(q) * 1.001


@vnni
def test_untimed_decision_follows_the_zero_blocks():
    options = st.CompileOptions(measure=False)
    sparse = st.compile(quantized_ffn(), "x86", options)
    assert [row.format for row in sparse.report.layers] == ["int8 bsr 16x4"] * 2
    assert all("estimated" in row.reason for row in sparse.report.layers)
    dense = st.compile(quantized_ffn(sparsity=0), "x86", options)
    assert all("int8" not in row.format for row in dense.report.layers)


@vnni  # the float decision is timed: cascadelake code runs
@pytest.mark.parametrize(
    ("float_s", "int8_s", "kept"),
    [(1.0, 0.5, "int8"), (1.0, 1.02, "int8"), (1.0, 1.1, "float"), (1.0, 2.0, "float")],
)
def test_int8_is_kept_unless_the_float_path_is_clearly_faster(monkeypatch, float_s, int8_s, kept):
    """The int8 kernel computes the quantized model exactly; the float path must beat it by
    KEEP_SPARSE_MARGIN to replace it (timings stubbed: the rule, not the machine)."""
    from sparse_tvm.analysis import analyse
    from sparse_tvm.backends import backend_for
    from sparse_tvm.decision import decide, int8_decision
    from sparse_tvm.target.machine import has_vnni

    monkeypatch.setattr(int8_decision, "time_int8_against_float", lambda *a: (float_s, int8_s))
    backend = backend_for({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
    assert has_vnni(backend.tvm_target)
    layer = analyse(import_onnx(quantized_ffn()))[0]
    decision = decide(layer, backend, st.CompileOptions(measure=True))
    assert decision.choice.label.startswith("int8") == (kept == "int8"), decision.choice.reason
    assert f"measured {float_s / int8_s:.2f}x" in decision.choice.reason
