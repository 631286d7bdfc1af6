"""``sparse-tvm quantize``: writes the QDQ model and a one-line summary; on bad data, one
error line, its exit status, and no output file."""

from __future__ import annotations

import numpy as np
import onnx

import sparse_tvm as st
from sparse_tvm.cli.main import main
from sparse_tvm.examples import mlp


def test_quantize_writes_the_model_and_says_what_it_did(tmp_path, capsys):
    model = tmp_path / "pruned.onnx"
    onnx.save(st.prune(mlp(batch=8, features=32, hidden=64), 0.9, "1x1").model, model)
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((32, 32)).astype(np.float32))
    out = tmp_path / "q.onnx"
    args = ["quantize", str(model), "-o", str(out), "--data", str(data), "--per-channel"]
    assert main(args) == 0
    captured = capsys.readouterr()
    printed = captured.out
    # quiet: the quantizer's and onnxruntime's own warnings are not shown
    assert captured.err.strip().splitlines() == [f"quantizing {model} on {data} ..."]
    assert "quantized 3 layers to int8 weights (per channel) and uint8 activations" in printed
    assert "all kept" in printed and f"wrote {out}" in printed
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert "DequantizeLinear" in ops and "QuantizeLinear" in ops


def test_bad_data_leaves_no_file(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(mlp(batch=8, features=32, hidden=64), model)
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.zeros((8, 5), np.float32))
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(model), "-o", str(out), "--data", str(data)]) == 12
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if line.startswith("error")] == err[-1:]
    assert err[-1].startswith("error: calibration data input 'x' has samples of shape (5,)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npz", "m.onnx"]
