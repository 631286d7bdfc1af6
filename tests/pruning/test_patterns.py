import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.strategies import integers as st_int

import sparse_tvm as st
from sparse_tvm.examples import mlp, small_cnn
from sparse_tvm.frontend.initializers import PrunableWeight, read_initializer
from sparse_tvm.pruning import (
    BLOCK_PATTERNS,
    cubic_sparsity,
    follows_pattern,
    n_of_m_mask,
    parse,
    prunable_weights,
    prune_magnitude,
)
from sparse_tvm.pruning.one_shot import MagnitudeSparsifier
from sparse_tvm.pruning.patterns import SMALL_WEIGHT, UNSTRUCTURED, fitted


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4)])
def test_n_of_m_mask_keeps_the_largest_n_of_every_group(n, m):
    scores = np.abs(np.random.default_rng(0).standard_normal((6, 10)))
    mask = n_of_m_mask(scores, n, m)
    for row in range(6):
        for start in range(0, 10, m):
            group = scores[row, start : start + m]
            expected = np.zeros(len(group), bool)
            expected[np.argsort(-group, kind="stable")[:n]] = True
            assert np.array_equal(mask[row, start : start + m], expected)


@pytest.mark.parametrize("pattern", ["1x1", "4x1", "1x4", "2:4", "1:4"])
def test_pruned_zeros_follow_the_pattern(pattern):
    parsed = parse(pattern)
    sparsity = parsed.max_sparsity if parsed.n_of_m else 0.9
    model = st.prune(small_cnn(), sparsity, pattern).model
    blocked = 0
    for w in prunable_weights(model):
        nk = w.to_nk(read_initializer(model, w.name))
        own = fitted(parsed, nk.size)  # small weights: 1x1
        assert follows_pattern(nk, own), w.name
        blocked += own is parsed
        if parsed.n_of_m is None and not np.any(np.mod(nk.shape, parsed.block)):
            assert np.mean(nk == 0) == pytest.approx(0.9, abs=0.02)
        elif parsed.n_of_m and nk.shape[1] % parsed.n_of_m[1] == 0:
            assert np.mean(nk == 0) == pytest.approx(sparsity, abs=1e-9)
    assert blocked >= 1


def test_n_of_m_refuses_another_sparsity():
    with pytest.raises(st.SparseTVMError, match="fixes the sparsity at 0.5"):
        st.prune(mlp(), 0.9, "2:4")


def test_global_magnitude_has_one_threshold():
    model = mlp()
    result = st.prune(model, 0.8, scope="global")
    weights = {w.name: read_initializer(model, w.name) for w in prunable_weights(model)}
    pruned = {w.name: read_initializer(result.model, w.name) for w in prunable_weights(model)}
    all_w = np.concatenate([np.abs(v).ravel() for v in weights.values()])
    threshold = np.sort(all_w)[int(round(0.8 * all_w.size)) - 1]
    for name, value in weights.items():
        assert np.array_equal(pruned[name] == 0, np.abs(value) <= threshold), name
    total = sum(v.size for v in pruned.values())
    assert sum(int(np.sum(v == 0)) for v in pruned.values()) / total == pytest.approx(0.8, abs=1e-3)
    # the layers differ: fc1 (fan-in 64) has larger weights than fc2 (fan-in 256)
    assert result.report["fc1.weight"] < 0.8 < result.report["fc2.weight"]


def test_cubic_schedule_matches_zhu_and_gupta():
    # s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3
    assert cubic_sparsity(0, 0.9, 0, 100) == 0.0
    assert cubic_sparsity(50, 0.9, 0, 100) == pytest.approx(0.9 * (1 - 0.5**3))
    assert cubic_sparsity(100, 0.9, 0, 100) == 0.9
    assert cubic_sparsity(150, 0.9, 0, 100) == 0.9


def test_unknown_exclude_and_option_are_errors():
    with pytest.raises(st.SparseTVMError, match="no prunable weight"):
        st.prune(mlp(), 0.5, exclude=["fc9.weight"])
    with pytest.raises(st.SparseTVMError, match="no option"):
        st.prune(mlp(), 0.5, epoch=3)


OFFERED = (
    "use 1x1, 4x1, 8x1, 16x1, 1x4, 16x4 (output x input blocks) or N:M such as 2:4 (N of every M "
    "input features kept)"
)


@pytest.mark.parametrize(
    "pattern,reason",
    [
        ("3x3", "is not a pattern sparse-tvm prunes to"),
        ("2x2", "is not a pattern sparse-tvm prunes to"),
        ("16", "is not a pattern sparse-tvm prunes to"),
        ("blocks", "is not a pattern sparse-tvm prunes to"),
        ("2:x", "is not a pattern sparse-tvm prunes to"),
        ("4:2", "is not an N:M pattern with 1 <= N < M"),
        ("0:4", "is not an N:M pattern with 1 <= N < M"),
    ],
)
def test_unknown_patterns_are_refused_with_the_offered_ones(pattern, reason):
    message = f"pattern '{pattern}' {reason}: {OFFERED}"
    for method in ("magnitude", "gmp"):  # refused before any data is read
        with pytest.raises(st.SparseTVMError) as info:
            st.prune(mlp(), 0.5, pattern, method=method)
        assert str(info.value) == message
    if ":" not in pattern:
        with pytest.raises(st.SparseTVMError) as info:
            prune_magnitude(mlp(), 0.5, pattern)
        assert str(info.value) == message


def test_cli_prune_refuses_an_unknown_pattern(tmp_path, capsys):
    import onnx

    from sparse_tvm.cli.main import main

    onnx.save(mlp(), tmp_path / "mlp.onnx")
    args = ["prune", str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "out.onnx")]
    # a bad option value: the usage error's exit status (sparse_tvm.errors)
    assert main([*args, "--sparsity", "0.5", "--pattern", "3x3"]) == st.UsageError.exit_status
    assert (
        capsys.readouterr().err
        == f"error: pattern '3x3' is not a pattern sparse-tvm prunes to: {OFFERED}\n"
    )
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("pattern", BLOCK_PATTERNS)
def test_every_offered_block_pattern_prunes_in_its_blocks(pattern):
    parsed = parse(pattern.upper())
    assert parsed.text == pattern
    result = st.prune(mlp(), 0.75, pattern)
    model = result.model
    for w in prunable_weights(model):
        nk = w.to_nk(read_initializer(model, w.name))
        # the 10-class head: 1x1, said in the report
        small = nk.size < SMALL_WEIGHT and parsed != UNSTRUCTURED
        assert (w.name in result.report.unstructured) == small
        assert follows_pattern(nk, UNSTRUCTURED if small else parsed), w.name
        if small or not np.any(np.mod(nk.shape, parsed.block)):  # no edge blocks
            assert np.mean(nk == 0) == pytest.approx(0.75, abs=1e-9)
    if parsed != UNSTRUCTURED:
        assert result.report.unstructured == ["fc3.weight"]
        assert "fc3.weight  75.0%  1x1 (a small weight)" in str(result.report)


@pytest.mark.parametrize("pattern", ["4x1", "16x1", "1x4"])
@given(n=st_int(1, 80), k=st_int(1, 80))
@settings(max_examples=30, deadline=None)
def test_small_weights_are_pruned_unstructured(pattern, n, k):
    """Below SMALL_WEIGHT elements a block pattern gives 1x1; N:M and 1x1 are kept."""
    parsed = parse(pattern)
    assert fitted(parsed, n * k) == (UNSTRUCTURED if n * k < SMALL_WEIGHT else parsed)
    assert fitted(parse("2:4"), n * k).text == "2:4"
    weights = {"w": np.random.default_rng(n * k).standard_normal((n, k)).astype(np.float32)}
    masks = MagnitudeSparsifier(0.5, pattern)
    masks.prepare(None, [PrunableWeight("w", "w", "Gemm", False)], weights)
    assert masks.layer_patterns["w"] == fitted(parsed, n * k)


def test_offered_blocks_are_the_compilers_formats():
    """The float formats' blocks, and the int8 kernel's 16x4 (kernels/spmm_int8)."""
    from sparse_tvm.analysis.format_choice import CANDIDATE_BLOCKS
    from sparse_tvm.kernels.spmm_int8 import LANES, QUAD

    offered = {parse(p).block for p in BLOCK_PATTERNS}
    assert offered == set(CANDIDATE_BLOCKS) | {(LANES, QUAD)}


def test_unstructured_below_zero_puts_every_weight_in_blocks():
    result = st.prune(mlp(), 0.75, "16x1", unstructured_below=0)
    assert result.report.unstructured == []
    for w in prunable_weights(result.model):
        assert follows_pattern(w.to_nk(read_initializer(result.model, w.name)), parse("16x1"))
    head = read_initializer(result.model, "fc3.weight")  # 256x10 MatMul: (n, k) = 10 x 256
    assert np.all((head == 0).all(axis=1) | (head != 0).all(axis=1))  # whole input features
    with pytest.raises(st.SparseTVMError, match="unstructured_below is a number of weights"):
        st.prune(mlp(), 0.75, "16x1", unstructured_below=-1)
