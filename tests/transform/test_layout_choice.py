"""The CPU layout of a CNN: channels-first where every conv with real work is expected sparse
(and the only grouped convs are depthwise ones), else channels-last; the compiler goes back to channels-last when the
decision keeps such a conv dense."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.analysis import analyse
from sparse_tvm.backends import backend_for
from sparse_tvm.examples import mobilenet, resnet50
from sparse_tvm.frontend import import_onnx
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.transform.layout_choice import (
    dense_convs_with_work,
    runs_depthwise_nchw,
    sparse_layout_pays,
)
from tests.conftest import ort_run, random_inputs


@pytest.fixture(scope="module")
def resnet():
    return resnet50(size=32)


@pytest.fixture(scope="module")
def sparse_resnet(resnet):
    return prune_magnitude(resnet, 0.9, "4x1")


def test_a_sparse_cnn_without_grouped_convs_runs_channels_first(resnet, sparse_resnet):
    assert sparse_layout_pays(import_onnx(sparse_resnet))
    assert not sparse_layout_pays(import_onnx(resnet))  # dense: channels-last
    assert not sparse_layout_pays(import_onnx(prune_magnitude(resnet, 0.3, "4x1")))


def test_a_sparse_mobilenet_runs_channels_first_with_its_depthwise_convs():
    sparse = import_onnx(prune_magnitude(mobilenet(size=32), 0.9, "4x1"))
    assert sparse_layout_pays(sparse)
    assert not sparse_layout_pays(import_onnx(mobilenet(size=32)))
    convs = [layer for layer in analyse(sparse) if layer.conv is not None]
    depthwise = [c for c in convs if runs_depthwise_nchw(c)]
    assert len(depthwise) == 13
    assert all(c.conv.groups == c.conv.input_shape[1] == c.weight_shape[0] for c in depthwise)
    # a grouped conv that is not depthwise, or a dilated depthwise conv, has no NCHW kernel
    layer = depthwise[0]
    for changed in ({"groups": 2}, {"dilation": (2, 2)}):
        odd = dataclasses.replace(layer, conv=dataclasses.replace(layer.conv, **changed))
        assert not runs_depthwise_nchw(odd)
    # depthwise convs never count as dense convs with work (their kernel is fast channels-first)
    assert dense_convs_with_work(convs, {c.name for c in convs if c not in depthwise}) == []


def test_the_cpu_backend_prepares_the_chosen_layout(resnet, sparse_resnet):
    backend = backend_for("x86")
    layouts = {
        name: {
            layer.conv.layout for layer in analyse(backend.prepare(import_onnx(m))) if layer.conv
        }
        for name, m in [("dense", resnet), ("sparse", sparse_resnet)]
    }
    assert layouts == {"dense": {"NHWC"}, "sparse": {"NCHW"}}
    forced = backend.prepare(import_onnx(sparse_resnet), channels_first=False)
    assert {layer.conv.layout for layer in analyse(forced) if layer.conv} == {"NHWC"}


def test_dense_convs_with_work_names_the_big_convs_left_dense(sparse_resnet):
    layers = analyse(import_onnx(sparse_resnet))
    convs = [layer for layer in layers if layer.op == "conv2d"]
    work = {c.name: c.shape[0] * c.shape[1] * c.m for c in convs}
    biggest = max(work, key=work.get)
    everything = {layer.name for layer in layers}
    assert dense_convs_with_work(layers, everything) == []
    assert dense_convs_with_work(layers, everything - {biggest}) == [biggest]
    # a conv with under 2 % of the work does not count
    small = min(work, key=work.get)
    assert work[small] < 0.02 * sum(work.values())
    assert dense_convs_with_work(layers, everything - {small}) == []


def test_convs_kept_dense_send_the_compile_back_to_channels_last(sparse_resnet):
    said: list[str] = []
    inputs = random_inputs(sparse_resnet)
    # the threshold rule keeps every layer dense, which channels-first would run slowly
    compiled = st.compile(
        sparse_resnet, "x86", measure=False, sparsity_threshold=0.95, progress=said.append
    )
    assert any("compiling channels-last instead" in line for line in said)
    assert all(row.format == "dense" for row in compiled.report.layers)
    got = compiled.run(*inputs.values())
    got = got[0] if isinstance(got, (list, tuple)) else got
    (want,) = ort_run(sparse_resnet, inputs)
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
