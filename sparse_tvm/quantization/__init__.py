"""Static int8 quantization of ONNX models that keeps pruned zeros exactly zero.

:func:`quantize` calibrates a float model on the user's data and writes it back as QDQ ONNX
(``QuantizeLinear`` / ``DequantizeLinear`` around each MatMul, Gemm and Conv with a constant
weight): int8 weights with symmetric scales, so a zero weight stays a zero int8 value, and
uint8 (or int8) activations. The flow users run: ``prune`` -> ``quantize`` -> ``compile``.
"""

from sparse_tvm.quantization.calibration import CalibrationReader, calibration_data
from sparse_tvm.quantization.quantize import QuantizedWeight, quantize, quantized_weights

__all__ = [
    "CalibrationReader",
    "QuantizedWeight",
    "calibration_data",
    "quantize",
    "quantized_weights",
]
