import numpy as np
import pytest
import tvm
from tvm import relax

import sparse_tvm as st
from sparse_tvm.examples import bert_block, mlp
from sparse_tvm.frontend.initializers import read_initializer
from sparse_tvm.pruning import follows_pattern, parse, prunable_weights
from sparse_tvm.training import TrainConfig, Trainer, TrainingDataError, register_missing_gradients
from tests.conftest import ort_run


def _grad(op, x: np.ndarray) -> np.ndarray:
    register_missing_gradients()
    v = relax.Var("x", relax.TensorType(x.shape, "float32"))
    bb = relax.BlockBuilder()
    with bb.function("f", [v]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.sum(op(v))))
        bb.emit_func_output(out)
    mod = relax.transform.Gradient("f")(bb.get())
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    return vm["f_adjoint"](tvm.runtime.tensor(x))[1][0].numpy()


@pytest.mark.parametrize(
    "op,reference",
    [
        (relax.op.erf, lambda x: 2 / np.sqrt(np.pi) * np.exp(-(x**2))),
        (relax.op.nn.gelu, None),
        (lambda v: relax.op.clip(v, -0.5, 0.5), lambda x: ((x >= -0.5) & (x <= 0.5)) * 1.0),
    ],
)
def test_registered_gradients_match_reference(op, reference):
    from scipy.special import erf

    x = np.linspace(-2.1, 2.1, 16, dtype=np.float32)
    if reference is None:  # gelu' = Phi(x) + x phi(x)
        pdf = np.exp(-(x**2) / 2) / np.sqrt(2 * np.pi)
        expected = 0.5 * (1 + erf(x / np.sqrt(2))) + x * pdf
    else:
        expected = reference(x)
    np.testing.assert_allclose(_grad(op, x), expected, rtol=1e-4, atol=1e-5)


def test_bert_block_trains_a_few_steps():
    model = bert_block(seq=8, hidden=32, heads=2, ffn=64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 8, 32)).astype(np.float32)
    targets = rng.standard_normal((8, 1, 8, 32)).astype(np.float32)
    trainer = Trainer(model, TrainConfig(epochs=4, lr=0.05, lr_schedule="constant"))
    data = trainer.dataset({"x": x, "targets": targets[:, 0]})
    trainer.compile("mse")
    logs = trainer.fit(data)
    losses = [log.loss for log in logs]
    assert losses[-1] < 0.9 * losses[0], losses


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 64)).astype(np.float32)
    return x, x[:, :10].argmax(1)


def test_gmp_exact_sparsity_pattern_export_and_seed():
    model = mlp(batch=16, hidden=64)
    x, y = _data()
    kwargs = dict(method="gmp", data=(x, y), epochs=3, seed=3, callbacks=[])
    a = st.prune(model, 0.5, "2:4", **kwargs)
    b = st.prune(model, 0.5, "2:4", **kwargs)
    for w in prunable_weights(a.model):
        wa = read_initializer(a.model, w.name)
        assert np.array_equal(wa, read_initializer(b.model, w.name)), "same seed, other weights"
        assert follows_pattern(w.to_nk(wa), parse("2:4"))
        assert a.report[w.name] == pytest.approx(0.5, abs=1e-9)
    # same graph, new initializers; the metric after is what onnxruntime sees
    assert [n.op_type for n in a.model.graph.node] == [n.op_type for n in model.graph.node]
    logits = np.concatenate([ort_run(a.model, {"x": x[i : i + 16]})[0] for i in range(0, 96, 16)])
    assert a.report.after == pytest.approx(float(np.mean(logits.argmax(1) == y)))
    assert len(a.report.loss_per_epoch()) == 3


def test_l0_reaches_the_asked_sparsity_in_blocks():
    model = mlp(batch=16, hidden=64)
    x, y = _data(160)
    result = st.prune(model, 0.75, "4x1", method="l0", data=(x, y), epochs=4, callbacks=[])
    assert result.report.unstructured == ["fc3.weight"]  # 64x10: a small weight, in 1x1
    for w in prunable_weights(result.model):
        nk = w.to_nk(read_initializer(result.model, w.name))
        assert follows_pattern(nk, parse("1x1" if w.name == "fc3.weight" else "4x1"))
        if nk.shape[0] % 4 == 0 or w.name == "fc3.weight":
            assert result.report[w.name] == pytest.approx(0.75, abs=0.01)
    assert result.report.gate_sparsity is not None


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"y": np.zeros((4, 64), np.float32), "labels": np.zeros(4, int)},
            "lacks the model's input 'x'",
        ),
        ((np.zeros((4, 63), np.float32), np.zeros(4, int)), r"shape \(63,\)"),
        ((np.zeros((4, 64), np.float32), np.array([0, 1, 2, 10])), "outside \\[0, 10\\)"),
        ((np.full((4, 64), np.nan, np.float32), np.zeros(4, int)), "NaN or inf"),
        ((np.zeros((0, 64), np.float32), np.zeros(0, int)), "no samples"),
    ],
)
def test_bad_data_is_a_one_line_error(data, message):
    with pytest.raises(TrainingDataError, match=message) as info:
        st.prune(mlp(batch=4), 0.5, method="gmp", data=data, epochs=1, callbacks=[])
    assert "\n" not in str(info.value)
    assert isinstance(info.value, st.SparseTVMError)


def test_empty_npz_file(tmp_path):
    path = tmp_path / "train.npz"
    path.write_bytes(b"")
    with pytest.raises(TrainingDataError, match="is empty"):
        st.prune(mlp(batch=4), 0.5, method="gmp", data=str(path), epochs=1, callbacks=[])
