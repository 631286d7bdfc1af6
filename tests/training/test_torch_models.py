"""Fine-tuning PyTorch exports in TVM: ``nn.TransformerEncoder``, ``nn.MultiheadAttention`` and
a CNN with ``nn.BatchNorm2d``, exported (eval mode, static shapes) by both torch exporters.

Each export is checked three ways: the gradients TVM computes are torch autograd's on the
module that was exported (every initializer matched to its torch parameter by value), the loss
goes down in a few steps of ``Trainer.fit``, and ``st.prune(method="gmp")`` returns a model at
the asked sparsity whose metric, as the report states it, is the one onnxruntime computes on
the pruned model.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch

import sparse_tvm as st
from sparse_tvm.frontend.initializers import read_initializer
from sparse_tvm.pruning import prunable_weights
from sparse_tvm.training import TrainConfig, Trainer
from tests.conftest import ort_run

nn = torch.nn
D_MODEL, HEADS, SEQ, BATCH, CLASSES = 16, 2, 8, 8, 4
SAMPLES = 32


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            D_MODEL, HEADS, dim_feedforward=32, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True)
        self.head = nn.Linear(D_MODEL, CLASSES)

    def forward(self, x):
        context, _ = self.attn(x, x, x)
        return self.head(context.mean(1))


class BatchNormCNN(nn.Module):
    """bn0 on the input and bn2 after a ReLU stay BatchNormalization nodes in the export;
    bn1 after conv1 is folded into the convolution by both exporters."""

    def __init__(self) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, CLASSES)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(self.bn0(x))))
        x = self.bn2(torch.relu(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


MODELS = {
    "encoder": (Encoder, (SEQ, D_MODEL)),
    "attention": (Attention, (SEQ, D_MODEL)),
    "bn_cnn": (BatchNormCNN, (3, 8, 8)),
}
CASES = [
    ("encoder", True),
    ("encoder", False),
    ("attention", True),
    ("attention", False),
    ("bn_cnn", True),
    ("bn_cnn", False),
]
IDS = [f"{name}-{'dynamo' if dynamo else 'legacy'}" for name, dynamo in CASES]


def _export(name: str, dynamo: bool, path) -> tuple[nn.Module, onnx.ModelProto]:
    build, sample = MODELS[name]
    torch.manual_seed(0)
    module = build()
    with torch.no_grad():
        # every weight distinct (no zero biases, no all-ones LayerNorm): each initializer of
        # the export is then the value of exactly one torch parameter (or its transpose)
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)  # eval-mode BN is then not the identity
            bn.running_var.uniform_(0.5, 2.0)
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # exporter chatter
        torch.onnx.export(
            module,
            (torch.zeros(BATCH, *sample),),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamo=dynamo,
        )
    return module, onnx.load(str(path))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("torch_exports")
    cache = {}

    def get(name: str, dynamo: bool) -> tuple[nn.Module, onnx.ModelProto]:
        if (name, dynamo) not in cache:
            cache[name, dynamo] = _export(name, dynamo, folder / f"{name}-{dynamo}.onnx")
        return cache[name, dynamo]

    return get


def _data(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and learnable labels: x is noise around a per-sample offset (one per feature,
    or per channel), and the class is the argmax of a fixed projection of that offset."""
    rng = np.random.default_rng(seed)
    sample = MODELS[name][1]
    offset_shape = (1, sample[1]) if name != "bn_cnn" else (sample[0], 1, 1)
    offset = rng.standard_normal((SAMPLES, *offset_shape))
    x = (0.5 * rng.standard_normal((SAMPLES, *sample)) + offset).astype(np.float32)
    features = offset.reshape(SAMPLES, -1)
    return x, (features @ rng.standard_normal((features.shape[1], CLASSES))).argmax(1)


def test_exports_hold_the_operators_under_test(exports):
    ops = {key: {n.op_type for n in exports(*key)[1].graph.node} for key in CASES}
    for dynamo in (True, False):
        assert "Squeeze" in ops["encoder", dynamo] and "Gather" in ops["encoder", dynamo]
        assert "Squeeze" in ops["attention", dynamo] and "Gather" in ops["attention", dynamo]
        nodes = exports("bn_cnn", dynamo)[1].graph.node
        bn = [n for n in nodes if n.op_type == "BatchNormalization"]
        assert len(bn) == 2  # bn0 and bn2; bn1 is folded into conv1


def _torch_gradients(module: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    module.zero_grad()
    loss = nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    return {n: p.grad.numpy().copy() for n, p in module.named_parameters()}


def _torch_match(module: nn.Module, value: np.ndarray) -> tuple[str, bool] | None:
    """The torch parameter an initializer holds, and whether it holds it transposed."""
    for n, p in module.named_parameters():
        p = p.detach().numpy()
        if p.shape == value.shape and np.allclose(p, value, rtol=1e-6, atol=1e-7):
            return n, False
        if p.ndim == 2 and p.T.shape == value.shape and np.allclose(p.T, value, atol=1e-7):
            return n, True
    return None


@pytest.mark.parametrize("name,dynamo", CASES, ids=IDS)
def test_gradients_match_torch_autograd_and_the_loss_goes_down(exports, name, dynamo):
    module, model = exports(name, dynamo)
    x, y = _data(name)
    config = TrainConfig(epochs=3, lr=0.1, lr_schedule="constant", batch_size=BATCH, seed=1)
    trainer = Trainer(model, config)
    data = trainer.dataset((x, y))
    trainer.compile("cross_entropy")
    outputs, grads, _ = trainer._loss_and_grads(data, np.arange(BATCH), np.random.default_rng(0))
    grads = {n: g.numpy() for n, g in zip(trainer.grad_names, grads)}
    expected = _torch_gradients(module, x[:BATCH], y[:BATCH])
    unmatched = []
    for weight in trainer.trainable:
        match = _torch_match(module, trainer.weights[weight])
        if match is None:  # a BatchNorm folded into its convolution: no torch twin
            unmatched.append(weight)
            continue
        reference = expected[match[0]].T if match[1] else expected[match[0]]
        scale = float(np.abs(reference).max())
        np.testing.assert_allclose(
            grads[weight], reference, rtol=1e-3, atol=1e-4 * scale, err_msg=weight
        )
    assert len(unmatched) == (2 if name == "bn_cnn" else 0), unmatched  # conv1 weight, bias
    # running statistics are not trained
    assert not {n for n in trainer.weights if "running" in n} & set(trainer.trainable)
    logs = trainer.fit(data)
    losses = [log.loss for log in logs]
    assert losses[-1] < 0.9 * losses[0], losses


def _ort_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [ort_run(model, {"x": x[i : i + BATCH]})[0] for i in range(0, len(x), BATCH)]
    )


@pytest.mark.parametrize("name,dynamo", CASES, ids=IDS)
def test_gmp_prunes_to_the_sparsity_and_agrees_with_onnxruntime(exports, name, dynamo):
    model = exports(name, dynamo)[1]
    x, y = _data(name)
    targets = np.eye(CLASSES, dtype=np.float32)[y]  # regression: the report's metric is MSE
    result = st.prune(
        model,
        0.5,
        method="gmp",
        data={"x": x, "targets": targets},
        epochs=3,
        lr=0.05,
        batch_size=BATCH,
        callbacks=[],
    )
    pruned = result.model
    weights = prunable_weights(pruned)
    assert len(weights) >= 3
    for w in weights:
        value = read_initializer(pruned, w.name)
        assert np.mean(value == 0) == pytest.approx(0.5, abs=0.5 / value.size), w.name
        assert result.report[w.name] == pytest.approx(np.mean(value == 0))
    # the MSE the report gives, before and after, is what onnxruntime computes: the forward
    # pass TVM trains is the exported function (BatchNorm with its running statistics)
    assert result.report.metric == "mse"
    before = float(np.mean((_ort_logits(model, x) - targets) ** 2))
    after = float(np.mean((_ort_logits(pruned, x) - targets) ** 2))
    assert result.report.before == pytest.approx(before, rel=1e-4)
    assert result.report.after == pytest.approx(after, rel=1e-4)
    # and fine-tuning did more good than pruning half the weights did harm
    assert after < 0.9 * before, (before, after)
    # BatchNorm statistics are left as exported
    for tensor in model.graph.initializer:
        if "running" in tensor.name:
            np.testing.assert_array_equal(
                read_initializer(pruned, tensor.name), read_initializer(model, tensor.name)
            )
