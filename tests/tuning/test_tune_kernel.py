"""tune_kernel: a short MetaSchedule run returns a kernel that matches numpy; lookup_kernel
finds it again; typed errors."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import tvm
from tvm.s_tir import meta_schedule as ms

from sparse_tvm.errors import TuningError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels.spmm import kernel_knobs
from sparse_tvm.tuning import RealSparsityArguments, lookup_kernel, tune_kernel
from sparse_tvm.tuning.space_x86 import make_spec
from sparse_tvm.tuning.tune_kernel import NoTuningSpaceError
from tests.tuning.test_spaces import TARGET, run, sparse_weight


def test_real_sparsity_arguments():
    bw = BlockSparseWeight.from_dense(sparse_weight(20, 12, (4, 1), 0.5), (4, 1))
    infos = [
        ("TENSOR", "float32", [3, 12]),
        ("TENSOR", "float32", list(bw.data.shape)),
        ("TENSOR", "int32", list(bw.indices.shape)),
        ("TENSOR", "int32", list(bw.indptr.shape)),
        ("TENSOR", "float32", [3, 20]),
    ]
    (args,) = RealSparsityArguments(bw)(tvm.cpu(), infos, 1)
    np.testing.assert_array_equal(args[2].numpy(), bw.indices)
    np.testing.assert_array_equal(args[3].numpy(), bw.indptr)
    np.testing.assert_array_equal(args[1].numpy(), bw.data)
    assert args[0].shape == (3, 12)


def _tune_and_check(tmp_path, n, k, block, m, layout, batch, trials):
    w = sparse_weight(n, k, block, 0.8, seed=2, empty_rows=range(0, n, 9))
    bw = BlockSparseWeight.from_dense(w, block)
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    kwargs = dict(x_layout=layout, batch=batch, bias=True, relu=True, target=TARGET)
    result = tune_kernel(
        bw, m, trials=trials, work_dir=str(tmp_path), database=database, seed=0, **kwargs
    )
    assert 0 < result.trials <= trials
    assert result.latency_s > 0 and result.default_latency_s > 0
    spec = make_spec(bw, m, **kwargs)
    y, ref = run(result.func, w, bw, spec)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
    # the compiler's view: the record is found again for the same layer; another structure of
    # the same shapes gets its knobs, not as its own record
    again = lookup_kernel(bw, m, database=database, **kwargs)
    assert again is not None and again.exact and again.knobs == result.knobs
    y2, _ = run(again.func, w, bw, spec)
    np.testing.assert_array_equal(y2, y)
    other = BlockSparseWeight.from_dense(np.roll(w, 1, axis=1), block)
    borrowed = lookup_kernel(other, m, database=database, **kwargs)
    assert borrowed is not None and not borrowed.exact and borrowed.knobs == result.knobs
    return result


def test_a_layer_without_a_search_space_is_a_tuning_error_and_a_value_error(tmp_path, monkeypatch):
    # every strategy has a space today; a kernel the space leaves out is skipped by `tune`
    # (the package's `tune_kernel` is the function: get the module itself)
    module = importlib.import_module("sparse_tvm.tuning.tune_kernel")
    monkeypatch.setattr(module, "supports", lambda spec: False)
    bw = BlockSparseWeight.from_dense(sparse_weight(16, 16, (2, 2), 0.5), (2, 2))
    with pytest.raises(NoTuningSpaceError, match="^no tuning space for this layer") as info:
        tune_kernel(bw, 1, target=TARGET, trials=1, work_dir=str(tmp_path))
    assert isinstance(info.value, TuningError) and isinstance(info.value, ValueError)
    assert lookup_kernel(bw, 1, target=TARGET, database=ms.database.MemoryDatabase()) is None


@pytest.mark.slow  # ~40 s idle, over 60 s on a loaded machine (worker start-up ~20 s)
def test_short_tuning_rowvec(tmp_path, monkeypatch):
    result = _tune_and_check(tmp_path, 64, 48, (16, 1), 30, "MK", 1, trials=6)
    assert set(result.knobs) == {"G", "MT", "partition", "order", "unroll"}
    # a record of another kernel than the one the rules pick now (records shipped before a
    # strategy rule changed: a BERT FFN 4x1 layer found row-vector knobs for its column-vector
    # kernel and compile raised KeyError 'RP') is ignored, the default kernel runs
    bw = BlockSparseWeight.from_dense(sparse_weight(64, 48, (16, 1), 0.8, seed=2), (16, 1))
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    space = importlib.import_module("sparse_tvm.tuning.space_x86")
    monkeypatch.setattr(space, "space_strategy", lambda spec: "colvec")
    assert lookup_kernel(bw, 30, target=TARGET, database=database) is None


def test_knobs_fit_the_kernel_the_rules_pick():
    bw = BlockSparseWeight.from_dense(sparse_weight(64, 48, (16, 1), 0.8, seed=2), (16, 1))
    space = importlib.import_module("sparse_tvm.tuning.space_x86")
    spec = make_spec(bw, 30, target=TARGET)
    assert space.space_strategy(spec) == "rowvec"
    assert space.knobs_fit(spec, space.default_knobs(spec))
    assert not space.knobs_fit(spec, {"RP": 4, "MV": 16, "order": 0, "unroll": 1})


@pytest.mark.slow
def test_short_tuning_colvec(tmp_path):
    result = _tune_and_check(tmp_path, 40, 36, (1, 1), 45, "KM", 2, trials=6)
    # a layer this small also samples the fully unrolled kernel and its thread parts
    assert set(result.knobs) == {"RP", "MV", "order", "unroll", "unrolled", "parts"}


@pytest.mark.slow
def test_short_tuning_of_a_csr_layer_whose_default_reads_k_panels(tmp_path):
    # 512 inputs at m = 128 (64 columns a core): the hand-written kernel reads the weight in
    # K panels (its own indptr); it is timed on those arrays, the tuned one on the weight's own
    bw = BlockSparseWeight.from_dense(sparse_weight(48, 512, (1, 1), 0.9, seed=1), (1, 1))
    strategy, knobs = kernel_knobs(bw, 128, target=TARGET)
    assert strategy == "colvec" and knobs.panel > 0
    _tune_and_check(tmp_path, 48, 512, (1, 1), 128, "MK", 1, trials=4)


@pytest.mark.slow
def test_short_tuning_of_a_csr_matrix_vector_layer(tmp_path):
    # m = 1 with 1x1 blocks: the hand-written kernel is the sliced one (its own arrays, no
    # knobs); the space searches the scalar row kernel on the weight's own arrays
    bw = BlockSparseWeight.from_dense(sparse_weight(300, 90, (1, 1), 0.8, seed=2), (1, 1))
    assert kernel_knobs(bw, 1, target=TARGET)[0] == "sliced"
    result = _tune_and_check(tmp_path, 300, 90, (1, 1), 1, "MK", 1, trials=4)
    assert set(result.knobs) == {"accs", "unroll"}
