"""compiled.profile: every kernel call of a run, timed in the run, grouped by operator."""

from __future__ import annotations

import json

import pytest

import sparse_tvm as st
from sparse_tvm.examples import bert_block, mlp
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.runtime.profile import OTHER, op_group
from tests.conftest import random_inputs


@pytest.mark.parametrize(
    ("symbol", "group"),
    [
        ("sparse_16x1_fc2_weight", "sparse layer"),
        ("im2col_conv1_weight", "sparse conv input (im2col, pad, crop)"),
        ("fused_matmul3_add5_divide_fast_erf_add6_multiply1_multiply21_prepacked", "dense matmul"),
        ("fused_conv2d_add_relu", "dense conv"),
        ("depthwise_nchw_conv_dw_1", "depthwise conv"),
        ("fast_softmax", "softmax"),
        ("attention_1x12x128x128x32_BSHD_BSHD_BSHD_BSHD", "attention"),
        ("fused_layer_norm_multiply", "layer norm"),
        ("fused_reshape4_divide_fast_erf_add4_multiply1_multiply2_reshape", "GELU / erf / tanh"),
        ("fused_reshape1_reshape2_transpose", "layout (transpose, reshape, copy)"),
        ("fused_add1_add", OTHER),
    ],
)
def test_kernel_names_fall_in_their_operator_group(symbol, group):
    assert op_group(symbol) == group


def test_profile_of_a_sparse_transformer_layer():
    model = prune_magnitude(bert_block(seq=32, hidden=128, heads=4, ffn=256), 0.9, "16x1")
    compiled = st.compile(model, "x86", measure=False)
    sparse_layers = sum(row.format != "dense" for row in compiled.report.layers)
    profile = compiled.profile(random_inputs(model), runs=3)
    groups = {row["group"]: row for row in profile.by_group()}
    assert groups["sparse layer"]["calls"] == sparse_layers == 6
    # Q K^T, its softmax and P V in one kernel; the residual adds inside the layer norms
    assert groups["attention"]["calls"] == 1 and "softmax" not in groups
    assert groups["layer norm"]["calls"] == 2
    assert sum(row["pct"] for row in groups.values()) == pytest.approx(100.0)
    assert profile.sum_ms == pytest.approx(sum(row["ms"] for row in groups.values()))
    assert all(kernel.us_per_call > 0 for kernel in profile.kernels)
    assert profile.end_to_end_ms > 0
    data = json.loads(profile.to_json())
    assert len(data["kernels"]) == len(profile.kernels)
    text = str(profile)
    assert text.startswith("time per run by operator") and "sparse layer" in text


def test_profile_counts_every_call_of_a_kernel():
    model = mlp()  # dense: three matmuls (the first two with bias + ReLU)
    compiled = st.compile(model, "x86", dense=True)
    profile = compiled.profile(random_inputs(model), runs=2)
    assert sum(k.calls for k in profile.kernels if k.group == "dense matmul") == 3
