"""Dynamically quantized models (onnxruntime's ``quantize_dynamic``: DynamicQuantizeLinear +
MatMulInteger): their linear layers are read in QDQ form, so they are found, compiled sparse
(int8 kernels where the target has them, with the activations' scale computed at run time)
and match onnxruntime on the same model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import QuantType, quantize_dynamic

import sparse_tvm as st
from sparse_tvm.analysis import analyse
from sparse_tvm.frontend import import_onnx
from sparse_tvm.frontend.dynamic_quantization import matmul_integer_to_qdq
from tests.conftest import vnni

from .models import ffn, run_ort


def dynamic_ffn(tmp_path, *, gemm=False, per_channel=False, weight_type=QuantType.QInt8):
    pruned = st.prune(ffn(gemm=gemm), 0.9, "16x4").model
    onnx.save(pruned, tmp_path / "float.onnx")
    quantize_dynamic(
        tmp_path / "float.onnx", tmp_path / "q.onnx", weight_type=weight_type,
        per_channel=per_channel,
    )  # fmt: skip
    return onnx.load(tmp_path / "q.onnx")


def _ops(model) -> list[str]:
    return [node.op_type for node in model.graph.node]


@pytest.mark.parametrize(("gemm", "per_channel"), [(False, False), (True, True)])
def test_matmul_integer_chains_become_qdq_with_the_same_outputs(tmp_path, gemm, per_channel):
    q = dynamic_ffn(tmp_path, gemm=gemm, per_channel=per_channel)
    assert _ops(q).count("MatMulInteger") == 2
    qdq = matmul_integer_to_qdq(q)
    ops = _ops(qdq)
    assert "MatMulInteger" not in ops and "Cast" not in ops
    assert ops.count("MatMul") == 2 and ops.count("DequantizeLinear") == 4
    assert ops.count("DynamicQuantizeLinear") == 2  # the activations stay quantized at run time
    x = np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32)
    np.testing.assert_allclose(run_ort(qdq, x), run_ort(q, x), rtol=1e-5, atol=1e-6)
    assert _ops(q).count("MatMulInteger") == 2  # the input model is left as it was


def test_uint8_weights_with_a_zero_point_are_left_alone(tmp_path):
    q = dynamic_ffn(tmp_path, weight_type=QuantType.QUInt8)
    assert _ops(matmul_integer_to_qdq(q)) == _ops(q)


def test_the_layers_are_found_and_compile_sparse_on_the_float_path(tmp_path):
    q = dynamic_ffn(tmp_path)
    layers = analyse(import_onnx(q))
    assert [layer.name for layer in layers] == ["w1", "w2"]
    assert all(layer.int8 is not None and layer.int8.dynamic for layer in layers)
    sse2 = {"kind": "llvm", "mcpu": "x86-64", "num-cores": 2}  # no VNNI, no AVX2
    compiled = st.compile(q, sse2, st.CompileOptions(measure=False))
    assert [row.format for row in compiled.report.layers] == ["bsr 16x1"] * 2
    x = np.random.default_rng(1).standard_normal((32, 64)).astype(np.float32)
    np.testing.assert_allclose(compiled.run({"x": x})[0], run_ort(q, x), rtol=1e-5, atol=1e-5)


@vnni
@pytest.mark.parametrize("per_channel", [False, True])
def test_int8_kernels_take_the_run_time_scale(tmp_path, per_channel):
    q = dynamic_ffn(tmp_path, per_channel=per_channel)
    compiled = st.compile(q, "x86")
    assert [row.format for row in compiled.report.layers] == ["int8 bsr 16x4"] * 2
    for seed in (2, 3):  # other inputs, other run-time scales
        x = (np.random.default_rng(seed).standard_normal((32, 64)) * seed).astype(np.float32)
        want = run_ort(q, x)
        np.testing.assert_allclose(compiled.run({"x": x})[0], want, rtol=1e-5, atol=1e-5)
