"""A PyTorch transformer block exported with torch.onnx.export, imported and run with TVM.

The export has dynamic batch and sequence axes, so the graph computes its reshape targets and
attention masks from ``Shape`` at run time; ``import_onnx`` must make the shapes static and
fold those subgraphs before TVM's importer sees them.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from sparse_tvm.errors import InputShapeError
from sparse_tvm.frontend import import_onnx

from .helpers import run_onnxruntime, run_tvm

nn = torch.nn

HIDDEN, HEADS, SEQ, BATCH = 32, 2, 8, 2
SHAPE_OPS = {"Shape", "ConstantOfShape", "Trilu", "Not", "Equal", "Concat"}


class Block(nn.Module):
    """Pre-softmax causal + padding mask, LayerNorm after each residual, GELU FFN."""

    def __init__(self) -> None:
        super().__init__()
        self.head_dim = HIDDEN // HEADS
        self.qkv = nn.Linear(HIDDEN, 3 * HIDDEN)
        self.out = nn.Linear(HIDDEN, HIDDEN)
        self.ln1, self.ln2 = nn.LayerNorm(HIDDEN), nn.LayerNorm(HIDDEN)
        self.up, self.down = nn.Linear(HIDDEN, 4 * HIDDEN), nn.Linear(4 * HIDDEN, HIDDEN)

    def forward(self, x, mask):
        b, t, h = x.shape
        q, k, v = self.qkv(x).split(h, dim=-1)
        q, k, v = (z.reshape(b, t, HEADS, self.head_dim).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        keep = causal[None, None] & (mask[:, None, None, :] > 0)
        scores = scores.masked_fill(~keep.expand(b, HEADS, t, t), float("-inf"))
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, h)
        x = self.ln1(x + self.out(context))
        return self.ln2(x + self.down(nn.functional.gelu(self.up(x))))


def _export(path, dynamo: bool) -> None:
    torch.manual_seed(0)
    block = Block().eval()
    x, mask = torch.randn(BATCH, SEQ, HIDDEN), torch.ones(BATCH, SEQ, dtype=torch.int64)
    names = {"input_names": ["x", "mask"], "output_names": ["y"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter (deprecations, torchvision)
        if dynamo:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
            dims = {0: batch, 1: seq}
            torch.onnx.export(
                block, (x, mask), str(path), dynamic_shapes={"x": dims, "mask": dims}, **names
            )
        else:
            axes = {0: "batch", 1: "seq"}
            torch.onnx.export(
                block,
                (x, mask),
                str(path),
                dynamic_axes={"x": axes, "mask": axes},
                dynamo=False,
                **names,
            )


# dynamo=True is torch 2.13's default exporter; dynamo=False is the legacy TorchScript one
@pytest.fixture(scope="module", params=[True, False], ids=["default-dynamo", "legacy-torchscript"])
def exported(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "block.onnx"
    _export(path, dynamo=request.param)
    return str(path)


def test_dynamic_axes_need_input_shapes(exported):
    with pytest.raises(InputShapeError) as info:
        import_onnx(exported)
    message = str(info.value)
    assert "input 'x' has dynamic dimensions [batch, seq]" in message
    assert "input 'mask' has dynamic dimensions [batch, seq]" in message
    assert "--input-shapes x:1x128x32,mask:1x128" in message


@pytest.mark.parametrize("batch,seq", [(BATCH, SEQ), (1, 5)])
def test_import_matches_onnxruntime(exported, batch, seq):
    imported = import_onnx(exported, input_shapes={"x": (batch, seq, HIDDEN), "mask": (batch, seq)})
    assert imported.input_names == ["x", "mask"]
    assert imported.input_dtypes == ["float32", "int64"]
    # the run-time shape arithmetic is gone, and every Linear weight is a named parameter
    folded_ops = {n.op_type for n in imported.onnx_model.graph.node}
    assert not folded_ops & SHAPE_OPS
    matmul_weights = [
        n.input[1]
        for n in imported.onnx_model.graph.node
        if n.op_type in ("MatMul", "Gemm") and n.input[1] in imported.params
    ]
    assert len(matmul_weights) == 4  # qkv, out, up, down
    main = imported.mod["main"]
    assert [p.name for p in main.params[2:]] == list(imported.params)

    rng = np.random.default_rng(1)
    mask = np.ones((batch, seq), np.int64)
    mask[-1, seq // 2 :] = 0  # padding; row 0 of the causal mask keeps position 0
    feeds = {"x": rng.standard_normal((batch, seq, HIDDEN)).astype(np.float32), "mask": mask}
    expected = run_onnxruntime(exported, feeds)[0]
    actual = run_tvm(imported, feeds)[0]
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_pruned_export_compiles_sparse_and_matches_onnxruntime(exported, tmp_path):
    import onnx

    import sparse_tvm as st

    pruned = st.prune(exported, 0.8, "4x1").model
    path = tmp_path / "pruned.onnx"
    onnx.save(pruned, path)
    shapes = {"x": (BATCH, SEQ, HIDDEN), "mask": (BATCH, SEQ)}
    compiled = st.compile(path, "x86", input_shapes=shapes, force_block=(4, 1))
    sparse_layers = [row for row in compiled.report.layers if row.format == "bsr 4x1"]
    assert len(sparse_layers) == 4  # qkv, out, up, down
    rng = np.random.default_rng(2)
    feeds = {
        "x": rng.standard_normal((BATCH, SEQ, HIDDEN)).astype(np.float32),
        "mask": np.ones((BATCH, SEQ), np.int64),
    }
    expected = run_onnxruntime(str(path), feeds)[0]
    np.testing.assert_allclose(compiled.run(feeds)[0], expected, rtol=1e-4, atol=1e-4)
