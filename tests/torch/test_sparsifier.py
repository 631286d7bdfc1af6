"""sparse_tvm.torch.Sparsifier: ``st.prune``'s methods, patterns and schedules inside a
PyTorch training loop. The squashed model has exact zeros in the pattern, keeps its accuracy,
exports to ONNX and compiles sparse, equal to onnxruntime; conv and attention weights are
pruned too; bad settings get one-line errors."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import sparse_tvm as st
from sparse_tvm.errors import UsageError
from sparse_tvm.pruning import follows_pattern, parse
from sparse_tvm.pruning.pattern_choice import pick_pattern
from sparse_tvm.torch import Sparsifier
from tests.conftest import ort_run

BATCH, EPOCHS = 50, 15


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    x = torch.from_numpy((x / 16).astype(np.float32))[order]
    y = torch.from_numpy(y)[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def _mlp(hidden: int = 256) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 16),
    )  # fmt: skip


def _train(model, optimizer, x, y, epochs: int, sparsifier: Sparsifier | None = None) -> None:
    model.train()
    for _ in range(epochs):
        for start in range(0, len(x), BATCH):
            loss = nn.functional.cross_entropy(
                model(x[start : start + BATCH]), y[start : start + BATCH]
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if sparsifier is not None:
                sparsifier.step()


def _accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x)[:, :10].argmax(1) == y).float().mean())


def _steps(x, epochs: int = EPOCHS) -> int:
    return epochs * -(-len(x) // BATCH)


def _pruned(digits, method: str, pattern: str, sparsity: float, hidden: int = 256):
    """A digits MLP trained dense, then pruned while it fine-tunes; (model, dense accuracy,
    squash's report)."""
    x, y, xt, yt = digits
    model = _mlp(hidden)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    _train(model, optimizer, x, y, EPOCHS)
    dense = _accuracy(model, xt, yt)
    sparsifier = Sparsifier(model, sparsity, pattern, method, steps=_steps(x))
    _train(model, optimizer, x, y, EPOCHS, sparsifier)
    return model, dense, sparsifier.squash()


def _export(model: nn.Module, x: torch.Tensor) -> onnx.ModelProto:
    model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=18, input_names=["x"])
    program.save(buffer)  # an ONNXProgram
    return onnx.load_from_string(buffer.getvalue())


@pytest.mark.parametrize(
    ("method", "pattern", "sparsity"),
    [("gmp", "16x1", 0.9), ("l0", "16x1", 0.9), ("magnitude", "2:4", 0.5), ("l0", "1x1", 0.9)],
)
def test_pruned_in_a_torch_loop_follows_the_pattern_and_keeps_accuracy(
    digits, method, pattern, sparsity
):
    model, dense, report = _pruned(digits, method, pattern, sparsity)
    assert set(report) == {"0.weight", "2.weight", "4.weight"}
    for name, parameter in model.named_parameters():
        assert "parametrizations" not in name  # squash left plain parameters
        if name.endswith("weight"):
            assert report[name] == pytest.approx(sparsity, abs=0.01)
            assert follows_pattern(parameter.detach().numpy(), parse(pattern))
    # fine-tuned in the loop: within 3 points of the dense model (dense: ~97.7 %)
    assert _accuracy(model, digits[2], digits[3]) >= dense - 0.03


def test_squashed_model_exports_and_compiles_sparse_as_onnxruntime(digits):
    model, _, report = _pruned(digits, "gmp", "16x1", 0.9, hidden=512)
    x = digits[2][:8]
    onnx_model = _export(model, x)
    compiled = st.compile(onnx_model, "x86", measure=False)
    rows = compiled.report.layers
    assert len(rows) == 3 and all(row.format.startswith("bsr 16x1") for row in rows), [
        (row.name, row.format, row.reason) for row in rows
    ]
    got = compiled.run(x.numpy())
    got = got[0] if isinstance(got, (list, tuple)) else got
    (want,) = ort_run(onnx_model, {"x": x.numpy()})
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
    with torch.no_grad():
        np.testing.assert_allclose(want, model(x).numpy(), rtol=1e-4, atol=1e-4)


class _ConvAttention(nn.Module):
    """A conv stem and a transformer encoder layer (attention, feed-forward) on its pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 64, 3, padding=1)
        self.encoder = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
        self.head = nn.Linear(64, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.conv(x).flatten(2).transpose(1, 2)  # (batch, pixels, 64)
        return self.head(self.encoder(tokens).mean(1))


def test_conv_and_attention_weights_are_pruned_and_export(digits):
    torch.manual_seed(0)
    model = _ConvAttention()
    optimizer = torch.optim.SGD(model.parameters(), 0.01)
    sparsifier = Sparsifier(model, 0.8, "16x1", "gmp", steps=8)
    x = torch.randn(4, 16, 4, 4)
    for _ in range(8):
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sparsifier.step()
    report = sparsifier.squash()
    assert set(report) == {
        "conv.weight",
        "encoder.self_attn.in_proj_weight",
        "encoder.self_attn.out_proj.weight",
        "encoder.linear1.weight",
        "encoder.linear2.weight",
        "head.weight",
    }
    assert all(abs(s - 0.8) < 0.01 for s in report.values()), report
    conv = model.conv.weight.detach().numpy().reshape(64, -1)
    assert follows_pattern(conv, parse("16x1"))  # the (out, in * kh * kw) view, as ONNX's
    onnx_model = _export(model, x)
    big = [
        onnx.numpy_helper.to_array(t)
        for t in onnx_model.graph.initializer
        if len(t.dims) >= 2 and np.prod(t.dims) >= 1024
    ]
    # every weight the exporter wrote (the attention's in one or three) keeps its zeros
    assert len(big) >= 5 and all(np.mean(w == 0) >= 0.79 for w in big)
    (want,) = ort_run(onnx_model, {"x": x.numpy()})
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(want, model(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("build", "kwargs", "message"),
    [
        (lambda: nn.Linear(512, 10), {"pattern": "16x1"}, r"10x512 .* not a whole number of 16x1"),
        (lambda: nn.Linear(64, 32), {"sparsity": 1.0}, r"sparsity 1.0 is outside \[0, 1\)"),
        (lambda: nn.Linear(64, 32), {"sparsity": -0.1}, r"outside \[0, 1\)"),
        (lambda: nn.Sequential(nn.ReLU()), {}, r"no nn.Linear, nn.Conv2d or nn.Multihead"),
        (lambda: nn.Linear(64, 32), {"steps": None}, r"needs steps=N"),
        (lambda: nn.Linear(64, 32), {"method": "random"}, r"method 'random' is not one of"),
        (lambda: nn.Linear(64, 32), {"pattern": "3x3"}, r"3x3"),
        (lambda: nn.Linear(64, 32), {"exclude": ["fc"]}, r"exclude names fc"),
        (lambda: nn.Linear(64, 32), {"pattern": "2:4"}, r"fixes the sparsity at 0.5"),
        (lambda: nn.Linear(64, 32), {"pattern": "auto"}, r"give target='x86'"),
        (lambda: nn.Linear(64, 32), {"target": "x86"}, r"are for pattern 'auto'"),
        (lambda: nn.Linear(64, 32), {"unstructured_below": -1}, r"unstructured_below is a num"),
    ],
)
def test_bad_settings_get_one_line_errors(build, kwargs, message):
    settings = {"sparsity": 0.9, "pattern": "1x1", "method": "gmp", "steps": 10} | kwargs
    model = build()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(UsageError, match=message) as error:
        Sparsifier(model, **settings)
    assert "\n" not in str(error.value)
    # nothing was changed: no parametrization, the same weights
    after = dict(model.named_parameters())
    assert set(after) == set(before)
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_auto_pattern_asks_the_compiler_per_layer_among_the_dividing_shapes(digits):
    x, y, xt, yt = digits
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    _train(model, optimizer, x, y, 5)
    sparsifier = Sparsifier(
        model, 0.9, "auto", "gmp", steps=_steps(x, 5), target="cortex-m4",
        example_inputs=(x[:1],),
    )  # fmt: skip
    choices = sparsifier.choices
    assert set(choices) == {"0.weight", "2.weight", "4.weight"}
    for name in ("0.weight", "2.weight"):  # every candidate divides them
        choice = choices[name]
        assert choice.decided_by.startswith("estimated") and choice.speedup > 1.0
        assert choice.pattern == pick_pattern(choice.speedups)
    # the 10-output head: only 1x1 and 1x4 divide it, the faster of those (cost model) is kept
    head = choices["4.weight"]
    fits = {p: v for p, v in head.speedups.items() if p in ("1x1", "1x4")}
    assert head.pattern == pick_pattern(fits) and head.speedup == fits[head.pattern]
    _train(model, optimizer, x, y, 5, sparsifier)
    report = sparsifier.squash()
    for name, parameter in model.named_parameters():
        if name in choices:
            assert report[name] == pytest.approx(0.9, abs=0.01)
            nk = parameter.detach().numpy().reshape(parameter.shape[0], -1)
            assert follows_pattern(nk, parse(choices[name].pattern))
    assert _accuracy(model, xt, yt) > 0.85


def test_step_or_squash_after_squash_is_a_clear_error():
    model = nn.Linear(64, 32)
    sparsifier = Sparsifier(model, 0.5, "1x1", "magnitude")
    assert sparsifier.squash() == {"weight": 0.5}
    for call in (sparsifier.step, sparsifier.squash):
        with pytest.raises(UsageError, match=r"after squash\(\): the masks are folded in"):
            call()
    assert float((model.weight == 0).float().mean()) == 0.5
