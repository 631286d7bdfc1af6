"""Layers named by PyTorch module path or ONNX node, with the weight initializer as the key."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import sparse_tvm as st
from sparse_tvm.analysis.layer_names import layer_display_names, module_path
from sparse_tvm.report_html import render_html

nn = torch.nn


def _node(name: str, **metadata: str) -> onnx.NodeProto:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name=name)
    for key, value in metadata.items():
        entry = node.metadata_props.add()
        entry.key, entry.value = key.replace("__", "."), value
    return node


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("/encoder/layers.0/linear1/MatMul", "encoder.layers.0.linear1"),
        ("/encoder/encoder.0/Gemm", "encoder.0"),  # an nn.Sequential child
        ("/seq/seq.0/seq.0.1/MatMul_1", "seq.0.1"),  # a Sequential in a Sequential
        ("/block/self_attn/Gemm", "block.self_attn"),
        ("/MatMul", ""),  # the root module's own op
        ("fc1", None),  # not a PyTorch export
        ("", None),
    ],
)
def test_module_path_of_legacy_exporter_node_names(name, path):
    assert module_path(_node(name)) == path


def test_module_path_from_dynamo_metadata():
    scopes = _node(
        "node_linear_2",
        pkg__torch__onnx__name_scopes="['', 'encoder', 'encoder.layers.0', "
        "'encoder.layers.0.linear1', 'linear_2']",
    )
    assert module_path(scopes) == "encoder.layers.0.linear1"
    namespace = _node(
        "node_linear",
        namespace=": __main__.M/encoder: torch.nn.modules.container.Sequential/encoder.0: "
        "torch.nn.modules.linear.Linear/linear: aten.linear.default",
    )
    assert module_path(namespace) == "encoder.0"
    root = _node("node_matmul", pkg__torch__onnx__name_scopes="['', 'matmul']")
    assert module_path(root) == ""


def _graph_model(nodes, weights: dict[str, tuple[int, int]]) -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(np.ones(shape, np.float32), name) for name, shape in weights.items()
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph)


def test_display_names_follow_each_use_of_a_weight_through_transpose():
    nodes = [
        helper.make_node("Transpose", ["shared"], ["shared_t"], name="t"),
        helper.make_node("MatMul", ["x", "shared_t"], ["a"], name="/enc/fc/MatMul"),
        helper.make_node("MatMul", ["a", "shared_t"], ["b"], name="/enc/fc/MatMul_1"),
        helper.make_node("Gemm", ["b", "enc.out.weight"], ["c"], name="/enc/Gemm", transB=1),
        helper.make_node("MatMul", ["c", "plain"], ["out"], name=""),
    ]
    model = _graph_model(nodes, {"shared": (4, 4), "enc.out.weight": (4, 4), "plain": (4, 4)})
    names = layer_display_names(["shared", "shared", "enc.out.weight", "plain"], model)
    # the same module applied twice: told apart by the node; a weight named after a finer
    # module than the node's names that module; an unnamed node of no export names nothing
    assert names == ["enc.fc (MatMul)", "enc.fc (MatMul_1)", "enc.out", ""]
    # a weight with more (or fewer) layers than nodes using it: no guess
    assert layer_display_names(["shared"], model) == [""]
    assert layer_display_names(["shared"], None) == [""]


class Net(nn.Module):
    """A named nn.Sequential, a TransformerEncoderLayer (attention, FFN) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32))
        self.block = nn.TransformerEncoderLayer(32, 2, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.block(self.encoder(x)))


# module paths, in program order; the attention's input projection is applied by
# MultiheadAttention itself, its output projection through the out_proj weight
MODULES = [
    "encoder.0",
    "encoder.2",
    "block.self_attn",
    "block.self_attn.out_proj",
    "block.linear1",
    "block.linear2",
    "head",
]


def _weights_by_node(path) -> set[str]:
    """The initializers MatMul / Gemm nodes of the exported file take as their weight."""
    model = onnx.load(str(path))
    inits = {t.name for t in model.graph.initializer}
    return {
        n.input[1]
        for n in model.graph.node
        if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1 and n.input[1] in inits
    }


@pytest.fixture(scope="module", params=[True, False], ids=["dynamo", "legacy"])
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("names") / "net.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter
        torch.onnx.export(Net().eval(), (torch.randn(1, 8, 32),), str(path), dynamo=request.param)
    return path


def test_torch_export_layers_are_named_by_module_path(exported):
    report = st.inspect(exported)
    assert [row.layer for row in report.layers] == MODULES
    weights = [row.name for row in report.layers]
    assert set(weights) == _weights_by_node(exported)
    assert weights[3] == "block.self_attn.out_proj.weight"
    # the exporters' anonymous tensors (val_N, onnx::MatMul_N) are still listed, as the key
    assert any(w.startswith(("val_", "onnx::MatMul_")) for w in weights)

    lines = str(report).splitlines()
    assert lines[1].split()[:3] == ["layer", "weight", "op"]
    for row, line in zip(report.layers, lines[3:], strict=False):
        assert line.split()[:2] == [row.layer, row.name]

    data = json.loads(report.to_json())
    assert [(r["layer"], r["weight"], r["name"]) for r in data["layers"]] == [
        (row.layer, row.name, row.name) for row in report.layers
    ]
    page = render_html(report).replace("<wbr>", "")  # break opportunities after the dots
    for row in report.layers:
        assert f'<td class="text wrap name">{row.layer}</td>' in page
        assert f'<span class="weight">{row.name}</span>' in page


def test_module_paths_of_a_model_proto_and_after_pruning(exported):
    proto = onnx.load(str(exported))
    assert [row.layer for row in st.inspect(proto).layers] == MODULES
    pruned = st.prune(proto, 0.5, "1x1").model
    assert [row.layer for row in st.inspect(pruned).layers] == MODULES
