"""onnxruntime as the reference that sparse-tvm's outputs are checked against.

A quantized model's u8 x s8 products run in onnxruntime's MLAS kernels; on an x86 CPU
without VNNI (AVX2, AVX-512 without VNNI, SSE4.1) those use ``vpmaddubsw``, which adds two
products in a *saturating* int16 lane: with weights outside [-64, 63] sums clip, and a
``MatMulInteger`` or a fused QDQ matmul is off by up to thousands of integer steps (on an
AMD EPYC with AVX2: 184 of 8,192 sums of a 64-wide layer, 23 output steps after the FFN). The
session option ``session.x64quantprecision`` makes onnxruntime use its exact u8 x u8 kernels
there (microsoft/onnxruntime#12088); on other CPUs it changes nothing. sparse-tvm's int8
kernels are exact, so a reference must be too: :func:`reference_session` sets it. The speed
baselines of ``benchmarks/`` keep onnxruntime's defaults (what its users run).
"""

from __future__ import annotations

import onnx
import onnxruntime as ort

__all__ = ["EXACT_QUANTIZED", "reference_options", "reference_session"]

# onnxruntime's session config key: u8 x s8 products without int16 saturation on x86
EXACT_QUANTIZED = "session.x64quantprecision"


def reference_options(threads: int = 0) -> ort.SessionOptions:
    """Session options for a reference run: exact quantized products, ``threads`` intra-op
    threads (0: onnxruntime's choice)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry(EXACT_QUANTIZED, "1")
    return options


def reference_session(
    model: onnx.ModelProto | str | bytes, threads: int = 0
) -> ort.InferenceSession:
    """An onnxruntime CPU session of ``model`` (a ModelProto, a path or serialized bytes)
    with :func:`reference_options`."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(
        source, reference_options(threads), providers=["CPUExecutionProvider"]
    )
