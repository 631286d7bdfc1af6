"""FuseAttention: an exported attention (heads reshaped and transposed, ``Q K^T``, scale, mask,
softmax, ``P V``, transposed back) becomes one call of the attention kernel reading the
projections as they are; the spellings exporters write (scale multiplied, divided or absent;
mask 4-d, 2-d or absent; keys from the projection or head-major; the output head-major) are all
taken; chains it cannot take are left alone; the compiled model matches onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

from sparse_tvm.frontend import import_onnx
from sparse_tvm.pipeline.cpu import cpu_pipeline
from sparse_tvm.transform.fused_attention import FuseAttention, find_attentions
from tests.conftest import RUN_TARGET, ort_run
from tests.transform.relax_calls import called_ops

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)
B, S, H, D = 1, 24, 3, 8


def _model(
    *,
    scale: str = "mul",
    mask: str = "4d",
    keys: str = "tokens",
    out: str = "tokens",
    axis: int = -1,
    scores_output: bool = False,
) -> onnx.ModelProto:
    """q, k, v (B, S, H*D) -> attention -> y; the variants as the module doc lists them."""
    node = helper.make_node
    inits = [
        numpy_helper.from_array(np.array([B, S, H, D], np.int64), "heads_shape"),
        numpy_helper.from_array(np.array([B, S, H * D], np.int64), "tokens_shape"),
        numpy_helper.from_array(np.array(D**-0.5 if scale == "mul" else D**0.5, np.float32), "c"),
    ]
    nodes = [node("Reshape", [x, "heads_shape"], [f"{x}4"]) for x in "qkv" if x != "k"]
    nodes += [
        node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
    ]
    if keys == "tokens":  # k (B, S, H*D) as the projection gives it
        nodes += [
            node("Reshape", ["k", "heads_shape"], ["k4"]),
            node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        ]
    else:  # k (B, H, S, D) head-major already: the last two axes swapped
        nodes.append(node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]))
    nodes.append(node("MatMul", ["qh", "kt"], ["s0"]))
    last = "s0"
    if scale != "none":
        nodes.append(node("Mul" if scale == "mul" else "Div", [last, "c"], ["s1"]))
        last = "s1"
    inputs = [
        helper.make_tensor_value_info(
            x, TensorProto.FLOAT, [B, H, S, D] if (x, keys) == ("k", "heads") else [B, S, H * D]
        )
        for x in "qkv"
    ]
    if mask != "none":
        shape = [1, 1, S, S] if mask == "4d" else [S, S]
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, shape))
        nodes.append(node("Add", [last, "mask"], ["s2"]))
        last = "s2"
    nodes += [node("Softmax", [last], ["p"], axis=axis), node("MatMul", ["p", "vh"], ["o"])]
    if out == "tokens":
        nodes += [
            node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
            node("Reshape", ["ot", "tokens_shape"], ["y"]),
        ]
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, H * D])]
    else:
        nodes.append(node("Identity", ["o"], ["y"]))
        outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, H, S, D])]
    if scores_output:
        outputs.append(helper.make_tensor_value_info(last, TensorProto.FLOAT, [B, H, S, S]))
    graph = helper.make_graph(nodes, "attention", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.name == "mask":
            out["mask"] = np.where(rng.random(shape) < 0.3, -1e4, 0).astype(np.float32)
        else:
            out[value.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _module(model: onnx.ModelProto) -> tvm.IRModule:
    """The imported model with its weights (the scale) bound, as a compile sees it."""
    imported = import_onnx(model)
    return relax.transform.BindParams("main", imported.params)(imported.mod)


def _run(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    executable = tvm.compile(_module(model), target=TARGET, relax_pipeline=cpu_pipeline(TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    names = [v.name for v in model.graph.input]
    result = vm["main"](*(tvm.runtime.tensor(inputs[n]) for n in names))
    results = result if isinstance(result, tvm.ir.Array) else [result]
    return [r.numpy() for r in results]


VARIANTS = [
    {},
    {"scale": "div"},
    {"scale": "none", "mask": "none"},
    {"mask": "2d"},
    {"keys": "heads"},
    {"out": "heads"},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(v.values()) or "default")
def test_attention_becomes_one_kernel_call(variant):
    model = _model(**variant)
    found = find_attentions(_module(model)["main"])
    assert len(found) == 1
    spec = found[0].spec
    assert (spec.batch, spec.heads, spec.queries, spec.keys, spec.dim) == (B, H, S, S, D)
    assert spec.q_layout == spec.v_layout == "BSHD"  # the projections read as they are
    assert spec.k_layout == ("BHSD" if variant.get("keys") == "heads" else "BSHD")
    assert spec.out_layout == ("BHSD" if variant.get("out") == "heads" else "BSHD")
    ops = called_ops(FuseAttention(TARGET)(_module(model))["main"])
    assert [op for op in ops if op.startswith("attention_")] == [
        f"attention_1x{H}x{S}x{S}x{D}_BSHD_{spec.k_layout}_BSHD_{spec.out_layout}"
    ]
    for gone in ("relax.matmul", "relax.nn.softmax", "relax.add", "relax.multiply"):
        assert gone not in ops
    assert "relax.permute_dims" not in ops  # every transpose is read through

    inputs = _inputs(model)
    (got,) = _run(model, inputs)
    (want,) = ort_run(model, inputs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "variant",
    [{"axis": 2}, {"scores_output": True}],
    ids=["softmax-over-queries", "scores-read-twice"],
)
def test_a_chain_the_kernel_cannot_take_is_left_alone(variant):
    model = _model(**variant)
    mod = _module(model)
    assert find_attentions(mod["main"]) == []
    ops = called_ops(FuseAttention(TARGET)(mod)["main"])
    assert not any(op.startswith("attention_") for op in ops)
    assert ops.count("relax.matmul") == 2 and "relax.nn.softmax" in ops
    inputs = _inputs(model)
    for got, want in zip(_run(model, inputs), ort_run(model, inputs), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
