"""Static post-training int8 quantization through onnxruntime's quantizer, zeros kept.

onnxruntime's ``quantize_static`` does the calibration (min/max of each activation over the
data) and the QDQ rewriting; it is the tool onnxruntime's own int8 runs are made with, so the
quantized model is one onnxruntime, TVM's importer and our compile all read. What is ours:
the settings that keep sparsity (symmetric int8 weights: zero point 0, so a pruned zero is
the int8 value 0 and dequantizes to exactly 0.0; only MatMul / Gemm / Conv with a constant
weight, so activation-by-activation products such as attention's stay float), checking the
data against the model, names for unnamed nodes (the quantizer selects nodes by name), and a
check of the result: every weight quantized, every zero still zero.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from sparse_tvm.errors import QuantizationError, UsageError
from sparse_tvm.frontend.fold_dequantize import dequantize
from sparse_tvm.frontend.initializers import prunable_weights, select_weights
from sparse_tvm.frontend.load import load_onnx
from sparse_tvm.logs import is_verbose, native_quiet
from sparse_tvm.quantization.calibration import CalibrationReader, calibration_data, model_batch

OPS = ["MatMul", "Gemm", "Conv"]
ACTIVATIONS = ("uint8", "int8")
QUANTIZED_SUFFIX = "_quantized"  # onnxruntime's name for a weight's int8 initializer


@dataclass(frozen=True)
class QuantizedWeight:
    """A float weight and its int8 form in the quantized model."""

    name: str  # the float weight's initializer name
    node: str  # the layer that reads it
    per_channel: bool  # one scale per output channel (else one per tensor)
    size: int  # elements
    zeros: int  # zeros of the float weight
    kept: int  # of those, zero in int8
    max_error: float  # largest |dequantized - float|, in units of the weight's scale


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hide the quantizer's logging, warnings and onnxruntime's native lines unless verbose."""
    if is_verbose():
        yield
        return
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), native_quiet():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every node named (the quantizer selects nodes by name)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    taken = {n.name for n in out.graph.node if n.name}
    for i, node in enumerate(out.graph.node):
        if not node.name:
            name, k = f"{node.op_type}_{i}", 0
            while name in taken:
                k += 1
                name = f"{node.op_type}_{i}_{k}"
            node.name = name
            taken.add(name)
    return out


def quantize(
    model: str | os.PathLike | onnx.ModelProto,
    data,
    *,
    per_channel: bool = False,
    exclude: Iterable[str] = (),
    activations: str = "uint8",
) -> onnx.ModelProto:
    """Quantize the MatMul / Gemm / Conv layers of ``model`` to int8, calibrated on ``data``.

    Parameters
    ----------
    model
        An ONNX path or ``ModelProto`` (float32, pruned or not).
    data
        Calibration samples: an ``.npz`` path or arrays by input name (an array alone for a
        one-input model), the first axis counting samples; at least one batch of the model's.
    per_channel
        One weight scale per output channel instead of one per tensor.
    exclude
        Weight or layer names to keep in float32.
    activations
        ``"uint8"`` (asymmetric, what x86 VNNI multiplies with int8) or ``"int8"`` (symmetric).

    Returns
    -------
    onnx.ModelProto
        The QDQ model: each quantized layer reads ``DequantizeLinear(int8 weight)`` and its
        input through ``QuantizeLinear`` / ``DequantizeLinear``; zero weights stay zero.

    Raises
    ------
    ModelLoadError, UsageError, TrainingError, QuantizationError
        One-line messages: the model, an option, the data, or the quantizer's refusal.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if activations not in ACTIVATIONS:
        raise UsageError(
            f"activations must be one of {', '.join(ACTIVATIONS)}, not '{activations}'"
        )
    proto = _named(load_onnx(model))
    chosen, _ = select_weights(proto, exclude)
    if not chosen:
        raise UsageError(
            "no layer left to quantize: the model has no MatMul, Gemm or Conv with a constant "
            "weight, or --exclude names all of them"
        )
    dataset = calibration_data(proto, data)
    reader = CalibrationReader(dataset, model_batch(proto))
    with tempfile.TemporaryDirectory(prefix="sparse_tvm_quantize_") as tmp:
        source, path = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "quantized.onnx")
        onnx.save(proto, source)  # given a ModelProto, the quantizer rewrites it in place
        try:
            with _quiet():
                quantize_static(
                    source,
                    path,
                    reader,
                    quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=OPS,
                    nodes_to_quantize=[w.node for w in chosen],
                    per_channel=per_channel,
                    activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    extra_options={
                        "WeightSymmetric": True,
                        "ActivationSymmetric": activations == "int8",
                        "MatMulConstBOnly": True,
                    },
                )
        except Exception as err:  # noqa: BLE001 - the quantizer raises anything
            text = " ".join(str(err).split())[:200]
            raise QuantizationError(
                f"onnxruntime's quantizer failed on this model ({type(err).__name__}: {text}); "
                "--exclude the layer it names, or --verbose for its log"
            ) from None
        quantized = onnx.load(path)
    found = {w.name: w for w in quantized_weights(proto, quantized)}
    missing = [w.name for w in chosen if w.name not in found]
    if missing:
        raise QuantizationError(
            f"onnxruntime's quantizer left weights {', '.join(missing)} in float32; "
            "--exclude them to quantize the rest"
        )
    lost = [w.name for w in found.values() if w.kept != w.zeros]
    if lost:  # symmetric scales cannot do this: a guard, not a user error
        raise QuantizationError(f"quantizing turned zeros of {', '.join(lost)} nonzero")
    return quantized


def quantized_weights(model: onnx.ModelProto, quantized: onnx.ModelProto) -> list[QuantizedWeight]:
    """The weights of ``model`` (float) that ``quantized`` (its QDQ form) holds as int8, each
    compared element by element with its float values."""
    floats = {t.name: t for t in model.graph.initializer}
    ints = {t.name: t for t in quantized.graph.initializer}
    nodes = {w.name: w for w in prunable_weights(model)}
    out = []
    for node in quantized.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in ints:
            continue
        name = node.input[0].removesuffix(QUANTIZED_SUFFIX)
        if name == node.input[0] or name not in floats or name not in nodes:
            continue
        q = numpy_helper.to_array(ints[node.input[0]])
        scale = numpy_helper.to_array(ints[node.input[1]])
        zero = numpy_helper.to_array(ints[node.input[2]]) if len(node.input) > 2 else np.zeros(1)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        w = numpy_helper.to_array(floats[name])
        error = np.abs(dequantize(q, scale, zero, axis) - w)
        unit = dequantize(np.ones_like(q), scale, np.zeros_like(zero), axis)  # each one's step
        out.append(
            QuantizedWeight(
                name,
                nodes[name].node,
                scale.ndim == 1 and scale.size > 1,
                int(w.size),
                int(np.count_nonzero(w == 0)),
                int(np.count_nonzero((w == 0) & (q == 0))),
                float(np.max(error / np.maximum(unit, np.finfo(np.float32).tiny)))
                if w.size
                else 0.0,
            )
        )
    return out
