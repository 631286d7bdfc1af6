"""Whole models for the cuda presets: sparse kernels and dlight-scheduled dense operators
through nvcc and ptxas; the artefact; on a GPU (marked ``gpu``) against onnxruntime."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tvm

import sparse_tvm as st
from sparse_tvm.examples import mlp, small_cnn
from sparse_tvm.kernels.cuda.ptx import check_ptx, cuda_source
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.runtime.artefact import read_metadata
from sparse_tvm.target import presets
from tests.conftest import ort_run, random_inputs


def _kernels(compiled, arch):
    usage = check_ptx(cuda_source(compiled.executable), arch)
    assert all(u.spill_bytes == 0 for u in usage), usage
    return {u.name for u in usage}


@pytest.mark.parametrize("block", [(16, 1), (1, 1)])
@pytest.mark.parametrize("preset", ["cuda", "cuda-sm90"])
def test_mlp_90_percent_compiles_to_ptx(nvcc, block, preset):
    model = prune_magnitude(mlp(), 0.9, f"{block[0]}x{block[1]}")
    compiled = st.compile(model, preset, force_block=block)
    assert [row.format for row in compiled.report.layers] == [
        f"bsr {block[0]}x{block[1]}" if block != (1, 1) else "csr 1x1"
    ] * 3
    names = _kernels(compiled, presets()[preset].extra["ptxas_arch"])
    tag = f"{block[0]}x{block[1]}"
    assert {f"sparse_{tag}_fc{i}_weight_kernel" for i in (1, 2, 3)} <= names


def test_cnn_im2col_and_dense_operators_compile_to_ptx(nvcc):
    """kxk convs (im2col + SpMM), a 1x1 conv, and the dense rest (depthwise conv, pooling,
    reshapes) scheduled by the dlight GPU rules."""
    model = prune_magnitude(small_cnn(), 0.9, "1x1")
    compiled = st.compile(model, "cuda", force_block=(1, 1))
    names = _kernels(compiled, "sm_80")
    assert {"im2col_conv1_weight_kernel", "sparse_1x1_conv2_weight_kernel"} <= names
    assert any("conv2d" in name for name in names)  # the depthwise conv stays dense


def test_dense_build_uses_dlight_gpu_rules(nvcc):
    compiled = st.compile(mlp(), "cuda", dense=True)
    names = _kernels(compiled, "sm_80")
    assert names and not any(name.startswith("sparse_") for name in names)


def test_formats_come_from_the_cost_model():
    model = prune_magnitude(mlp(), 0.9, "16x1")
    compiled = st.compile(model, "cuda")
    assert any("cost model" in note and "GPU" in note for note in compiled.report.notes)
    assert all(row.dense_us is None and row.sparse_us is None for row in compiled.report.layers)
    assert any(row.format != "dense" for row in compiled.report.layers)
    assert compiled.target["family"] == "cuda"


@pytest.mark.skipif(tvm.cuda(0).exist, reason="checks the error on a machine without a GPU")
def test_cli_compiles_an_artefact_that_needs_a_gpu(tmp_path):
    import onnx

    model = prune_magnitude(mlp(), 0.9, "16x1")
    path, tar, npz = tmp_path / "m.onnx", tmp_path / "m.tar", tmp_path / "in.npz"
    onnx.save(model, path)
    np.savez(npz, **random_inputs(model))

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "sparse_tvm", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=600,
        )

    done = cli("compile", path, "--target", "cuda", "-o", tar)
    assert done.returncode == 0, done.stderr
    assert tar.is_file()
    assert read_metadata(tar)["target"]["tvm"]["arch"] == "sm_80"
    run = cli("run", tar, "--inputs", npz)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == st.DeviceError.exit_status and lines == [lines[-1]], run.stderr
    assert lines[-1].startswith("error: no CUDA device: ")
    with pytest.raises(st.SparseTVMError, match="^no CUDA device: "):
        st.load(tar)


@pytest.mark.gpu
@pytest.mark.parametrize("block", [(16, 1), (1, 1)])
def test_gpu_mlp_matches_onnxruntime(gpu, block, tmp_path):
    model = prune_magnitude(mlp(), 0.9, f"{block[0]}x{block[1]}")
    inputs = random_inputs(model)
    expected = ort_run(model, inputs)
    compiled = st.compile(model, "cuda", force_block=block)
    np.testing.assert_allclose(compiled.run(inputs)[0], expected[0], rtol=1e-4, atol=1e-4)
    compiled.export(tmp_path / "m.tar")
    again = st.load(tmp_path / "m.tar")
    np.testing.assert_allclose(again.run(inputs)[0], expected[0], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_gpu_cnn_matches_onnxruntime(gpu):
    model = prune_magnitude(small_cnn(), 0.9, "1x1")
    inputs = random_inputs(model)
    expected = ort_run(model, inputs)
    for dense in (False, True):
        compiled = st.compile(model, "cuda", force_block=(1, 1), dense=dense)
        np.testing.assert_allclose(compiled.run(inputs)[0], expected[0], rtol=1e-4, atol=1e-4)


def test_loading_picks_a_cuda_compiler_for_the_kernels(monkeypatch, tmp_path):
    """Without cuda-bindings (NVRTC) the kernels compile with nvcc when it is on PATH; without
    either, loading stops with one line."""
    import importlib.util

    from sparse_tvm.runtime.compiled_model import _choose_cuda_compiler

    if importlib.util.find_spec("cuda") is not None:
        pytest.skip("cuda-bindings is installed here: NVRTC compiles the kernels")
    monkeypatch.delenv("TVM_CUDA_COMPILE_MODE", raising=False)
    (tmp_path / "nvcc").write_text("#!/bin/sh\n")
    (tmp_path / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    _choose_cuda_compiler()
    assert os.environ["TVM_CUDA_COMPILE_MODE"] == "nvcc"
    monkeypatch.delenv("TVM_CUDA_COMPILE_MODE")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(st.SparseTVMError, match="^no CUDA compiler to load"):
        _choose_cuda_compiler()
