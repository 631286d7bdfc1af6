"""The gradients sparse-tvm adds to TVM 0.27 (registered, or reached by a rewrite), each against
a reference: numpy where the derivative is a reshuffle of the output gradient, torch autograd
otherwise. Every check differentiates ``sum(op(args) * c)`` with a random ``c``, so that the
output gradient is not all ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from sparse_tvm.training.graph import differentiable


def _run(
    build, args: list[np.ndarray], seed: int = 0
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """``build(*vars)`` as Relax; returns its value, the gradients of ``sum(out * c)`` with
    respect to every argument (through :func:`differentiable`, as the trainer does) and ``c``."""
    params = [
        relax.Var(f"a{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(args)
    ]
    bb = relax.BlockBuilder()
    with bb.function("value", params):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(build(*params)))
        bb.emit_func_output(out)
    shape = tuple(int(d) for d in out.ty.shape)
    c = np.random.default_rng(seed).standard_normal(shape).astype(args[0].dtype)
    fresh = [relax.Var(p.name, p.ty) for p in params]
    with bb.function("f", fresh):
        with bb.dataflow():
            y = bb.emit(build(*fresh))
            loss = bb.emit_output(bb.emit(relax.op.sum(y * relax.const(c))))
        bb.emit_func_output(loss)
    mod = differentiable(bb.get())
    mod = relax.transform.Gradient("f")(mod)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    tensors = [tvm.runtime.tensor(a) for a in args]
    value = vm["value"](*tensors).numpy()
    grads = [g.numpy() for g in vm["f_adjoint"](*tensors)[1]]
    return value, grads, c


@pytest.mark.parametrize("axis", [[1], [-1], None])
def test_squeeze_gradient_is_the_output_gradient_in_the_input_shape(axis):
    x = np.random.default_rng(1).standard_normal((3, 1, 4, 1)).astype(np.float32)
    value, (grad,), c = _run(lambda v: relax.op.squeeze(v, axis), [x])
    np.testing.assert_array_equal(value, np.squeeze(x, None if axis is None else tuple(axis)))
    np.testing.assert_array_equal(grad, c.reshape(x.shape))


@pytest.mark.parametrize(
    "index,axis",
    [
        (np.int64(1), 0),  # ONNX Gather with a scalar index: the q/k/v split of attention
        (np.int64(2), 1),
        (np.array([[0, 2], [2, 2]], np.int64), 0),  # an embedding lookup, with repeats
        (np.array([3, 0, 3], np.int64), 2),  # 1-D: TVM's own take gradient, untouched
    ],
)
def test_take_gradient_scatters_the_output_gradient(index, axis):
    x = np.random.default_rng(2).standard_normal((3, 4, 5)).astype(np.float32)
    value, (grad,), c = _run(
        lambda v: relax.op.take(v, relax.const(index), axis=axis, mode="fast"), [x]
    )
    np.testing.assert_array_equal(value, np.take(x, index, axis=axis))
    expected = np.zeros_like(x)
    moved = np.moveaxis(expected, axis, 0)  # a view: np.add.at writes through it
    np.add.at(
        moved,
        index,
        np.moveaxis(c, list(range(axis, axis + np.ndim(index))), list(range(np.ndim(index)))),
    )
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,axis", [((4, 3, 5, 5), 1), ((6, 8), 1)])
def test_inference_batch_norm_matches_torch_eval_mode(shape, axis):
    rng = np.random.default_rng(3)
    channels = shape[axis]
    x = rng.standard_normal(shape).astype(np.float32)
    gamma, beta, mean = (rng.standard_normal(channels).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2.0, channels).astype(np.float32)

    def build(*v):
        return relax.TupleGetItem(
            relax.op.nn.batch_norm(*v, axis=axis, epsilon=1e-3, training=False), 0
        )

    value, grads, c = _run(build, [x, gamma, beta, mean, var])
    leaves = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta, mean, var)]
    side = [1] * len(shape)
    side[axis] = channels
    g, b, m, v = (t.reshape(side) for t in leaves[1:])
    out = (leaves[0] - m) / torch.sqrt(v + 1e-3) * g + b  # autograd through eval-mode BN
    (out * torch.from_numpy(c)).sum().backward()
    reference = torch.nn.functional.batch_norm(
        *(torch.from_numpy(a) for a in (x, mean, var, gamma, beta)), training=False, eps=1e-3
    )
    np.testing.assert_allclose(out.detach().numpy(), reference.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(value, reference.numpy(), rtol=1e-5, atol=1e-5)
    for name, grad, leaf in zip(["x", "gamma", "beta", "mean", "var"], grads, leaves):
        np.testing.assert_allclose(grad, leaf.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)


def test_gelu_tanh_gradient_matches_torch():
    x = np.linspace(-3.0, 3.0, 25, dtype=np.float32)
    value, (grad,), c = _run(relax.op.nn.gelu_tanh, [x])
    leaf = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.gelu(leaf, approximate="tanh")
    (out * torch.from_numpy(c)).sum().backward()
    np.testing.assert_allclose(value, out.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad, leaf.grad.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("nk", "block"), [((8, 6), (4, 1)), ((10, 7), (4, 2)), ((16, 3), (16, 1))])
def test_l0_block_expansion_gradient_sums_each_block(nk, block):
    """The gates' per-block values over their blocks (``pruning.gates.expand_blocks``, edge
    blocks cut): the value repeats each block's, the gradient sums its block's."""
    from sparse_tvm.pruning.gates import expand_blocks

    (n, k), (r, c) = nk, block
    nb, kb = -(-n // r), -(-k // c)
    z = np.random.default_rng(3).standard_normal((nb, kb)).astype(np.float32)
    value, (grad,), out_grad = _run(lambda v: expand_blocks(v, block, nk), [z])
    np.testing.assert_array_equal(value, np.repeat(np.repeat(z, r, 0), c, 1)[:n, :k])
    padded = np.zeros((nb * r, kb * c), np.float32)
    padded[:n, :k] = out_grad
    np.testing.assert_allclose(grad, padded.reshape(nb, r, kb, c).sum(axis=(1, 3)), rtol=1e-5)
