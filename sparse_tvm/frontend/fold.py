"""Constant folding of shape-computation subgraphs with onnxruntime's basic optimiser.

PyTorch exports compute reshape targets at run time (``Shape -> Gather -> Unsqueeze ->
Concat -> Reshape``, ``ConstantOfShape -> Expand -> Where`` for masks). TVM's ONNX importer
cannot follow those; once the input shapes are static, onnxruntime's level-1 ("basic")
optimisation folds them into constants. The fusions of that level that would rename the
prunable layers or their weights are switched off, so that reports can still name layers by
their ONNX node and initializer names.
"""

from __future__ import annotations

import os
import tempfile
import warnings

import onnx

from sparse_tvm.errors import ModelLoadError

# Level-1 rewrites that replace a layer's node or weight initializer with a renamed one:
# MatMul+Add -> Gemm (new node name), Conv+Add/Mul/BatchNormalization -> new Conv weights.
_RENAMING_FUSIONS = ["MatMulAddFusion", "ConvAddFusion", "ConvMulFusion", "ConvBNFusion"]
_PLAIN_DOMAINS = ("", "ai.onnx")
_WEIGHT_OPS = {"MatMul": 1, "Gemm": 1, "Conv": 1, "ConvTranspose": 1}


def _run_basic_optimiser(model: onnx.ModelProto, folder: str) -> onnx.ModelProto:
    import onnxruntime as ort

    source = os.path.join(folder, "model.onnx")
    target = os.path.join(folder, "folded.onnx")
    # external data keeps both files under protobuf's 2 GiB limit
    onnx.save_model(
        model, source, save_as_external_data=True, location="model.data", size_threshold=1024
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = target
    options.log_severity_level = 3  # the lenient shape merges it warns about are harmless
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_file_name", "folded.data"
    )
    options.add_session_config_entry(
        "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
    )
    ort.InferenceSession(
        source,
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=_RENAMING_FUSIONS,
    )
    folded = onnx.load(target, load_external_data=True)
    # the optimiser keeps node names but drops their metadata (the PyTorch module path a
    # dynamo export writes there, which names the layers in the report): copy it back
    meta = {n.name: list(n.metadata_props) for n in model.graph.node if n.name and n.metadata_props}
    for node in folded.graph.node:
        if node.name in meta and not node.metadata_props:
            node.metadata_props.extend(meta[node.name])
    return folded


def _weight_names(model: onnx.ModelProto) -> set[str]:
    initializers = {t.name for t in model.graph.initializer}
    return {
        node.input[_WEIGHT_OPS[node.op_type]]
        for node in model.graph.node
        if node.op_type in _WEIGHT_OPS
        and len(node.input) > _WEIGHT_OPS[node.op_type]
        and node.input[_WEIGHT_OPS[node.op_type]] in initializers
    }


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold the constant parts of ``model`` (shape arithmetic on static shapes) into initializers.

    Parameters
    ----------
    model
        An ONNX model whose inputs have static shapes (see ``fix_input_shapes``); it is not
        modified.

    Returns
    -------
    onnx.ModelProto
        The folded model, with plain ONNX operators only. Initializers and node names that
        survive keep their names; the weights of MatMul/Gemm/Conv layers are kept as they are.
        If onnxruntime cannot load the model, a warning is issued and ``model`` is returned.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="sparse_tvm_fold_") as folder:
            folded = _run_basic_optimiser(model, folder)
    except Exception as error:  # onnxruntime raises its own classes for unsupported models
        reason = " ".join(str(error).split())[:300]
        warnings.warn(
            f"onnxruntime could not fold the model's constant subgraphs ({reason}); "
            "importing it unfolded",
            stacklevel=2,
        )
        return model

    foreign = sorted(
        {f"{n.domain}::{n.op_type}" for n in folded.graph.node if n.domain not in _PLAIN_DOMAINS}
        - {f"{n.domain}::{n.op_type}" for n in model.graph.node}
    )
    if foreign:
        raise ModelLoadError(
            f"constant folding introduced non-standard operators {', '.join(foreign)}: "
            "please report this with the model"
        )
    # the optimiser lists every domain it knows; keep only those the model had or uses
    used = {n.domain for n in folded.graph.node} | {o.domain for o in model.opset_import}
    kept = [o for o in folded.opset_import if o.domain in used]
    del folded.opset_import[:]
    folded.opset_import.extend(kept)

    lost = sorted(_weight_names(model) - {t.name for t in folded.graph.initializer})
    if lost:
        warnings.warn(
            f"constant folding replaced the layer weights {', '.join(lost)}; "
            "reports will name the folded tensors instead",
            stacklevel=2,
        )
    return folded
