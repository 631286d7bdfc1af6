"""RowReduction: layer norm and softmax with vector partial sums, against numpy; the shapes it
leaves to dlight's rule."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, te, tirx, topi

from sparse_tvm.pipeline.cpu import legalize_passes
from sparse_tvm.pipeline.cpu_rules import RowReduction, default_rules
from tests.pipeline.relax_run import run_relax

AVX512 = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


def _run(op, arrays: list[np.ndarray]) -> np.ndarray:
    return run_relax(op, *arrays).numpy()


@pytest.mark.parametrize("shape", [(1, 128, 384), (3, 7, 64), (5, 100), (2, 4, 8)])
def test_layer_norm_matches_numpy(shape):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    gamma = rng.standard_normal(shape[-1]).astype(np.float32)
    beta = rng.standard_normal(shape[-1]).astype(np.float32)
    got = _run(lambda a, g, b: relax.op.nn.layer_norm(a, g, b, axes=[-1]), [x, gamma, beta])
    x64 = x.astype(np.float64)
    mean, var = x64.mean(-1, keepdims=True), x64.var(-1, keepdims=True)
    np.testing.assert_allclose(got, (x64 - mean) / np.sqrt(var + 1e-5) * gamma + beta,
                               rtol=1e-5, atol=1e-5)  # fmt: skip


def test_the_residual_add_fuses_into_the_layer_norm():
    """skip + layer norm (a transformer's ``layer_norm(x + residual)``) is one kernel."""
    rng = np.random.default_rng(2)
    x, residual = (rng.standard_normal((1, 128, 384)).astype(np.float32) for _ in range(2))
    gamma, beta = (rng.standard_normal(384).astype(np.float32) for _ in range(2))

    def skip_norm(a, r, g, b):
        return relax.op.nn.layer_norm(relax.op.add(a, r), g, b, axes=[-1])

    bb = relax.BlockBuilder()
    params = [relax.Var(n, relax.TensorType(a.shape, "float32"))
              for n, a in zip("argb", (x, residual, gamma, beta), strict=True)]  # fmt: skip
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(skip_norm(*params))
        bb.emit_func_output(out)
    fused = tvm.transform.Sequential(legalize_passes(AVX512))(bb.get())
    kernels = [gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)]
    assert kernels == ["fused_add_layer_norm"]
    got = _run(skip_norm, [x, residual, gamma, beta])
    h = x.astype(np.float64) + residual
    mean, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    np.testing.assert_allclose(got, (h - mean) / np.sqrt(var + 1e-5) * gamma + beta,
                               rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("shape", [(1, 12, 128, 128), (4, 48), (6, 50)])
def test_softmax_matches_numpy(shape):
    x = (np.random.default_rng(1).standard_normal(shape) * 4).astype(np.float32)
    x.reshape(-1, shape[-1])[0, 3:] = np.finfo(np.float32).min  # a masked row
    got = _run(lambda a: relax.op.nn.softmax(a, axis=-1), [x])
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    np.testing.assert_allclose(got, e / e.sum(-1, keepdims=True), rtol=2e-6, atol=1e-8)


def _te(shape, build):
    a = te.placeholder(shape, "float32", name="a")
    return te.create_prim_func([a, build(a)])


def test_the_rule_takes_last_axis_rows_of_whole_vectors():
    rule = RowReduction()
    sch = rule.apply(_te((1536, 128), lambda a: topi.nn.fast_softmax(a, -1)), AVX512, False)
    assert sch is not None
    script = sch.mod.script()
    # the max and the sum: 16-lane partial results, read a vector at a time, folded after
    for stage in ("T_softmax_maxelem", "T_softmax_expsum"):
        assert f'T.sblock("{stage}_rf_update")' in script and f'T.sblock("{stage}")' in script
    assert script.count("T.vectorized(16)") >= 5 and script.count("T.parallel(1536)") == 5
    # rows of 50 (no multiple of 16) and of 16 (one vector: nothing to split) are not its own
    assert rule.apply(_te((8, 50), lambda a: topi.nn.softmax(a, -1)), AVX512, False) is None
    assert rule.apply(_te((8, 16), lambda a: topi.nn.softmax(a, -1)), AVX512, False) is None
    # nor an elementwise function
    assert rule.apply(_te((8, 64), lambda a: topi.exp(a)), AVX512, False) is None


def test_rule_order():
    names = [type(rule).__name__ for rule in default_rules(AVX512)]
    assert names.index("RowReduction") < names.index("Reduction")
