"""cpu_pipeline: numerics against onnxruntime, and hand-scheduled kernels left alone."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from tvm import relax, tirx
from tvm.ir.expr import GenericConst
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
from tvm.relax.frontend.onnx import from_onnx
from tvm.script import ir as I
from tvm.script import relax as R
from tvm.script import tirx as T

from sparse_tvm.examples import bert_block, mlp, small_cnn
from sparse_tvm.pipeline import cpu_pipeline
from sparse_tvm.pipeline.cpu import legalize_passes, schedule_passes, scheduled_kernels

TARGET = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})


def _host_target() -> tvm.target.Target:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and "avx512f" in cpuinfo.read_text():
        return TARGET
    return tvm.target.Target({"kind": "llvm", "num-cores": 2})


def test_matmul_tile_never_straddles_the_innermost_row():
    """The register tile of a conv-as-matmul (I loops h, w fused): mr divides the row."""
    from sparse_tvm.pipeline.cpu_rules._common import ACC_REGS, pick_tile

    assert pick_tile(256, 14, 16) == (7, 32)
    assert pick_tile(1024, 7, 16) == (7, 32)
    assert pick_tile(768, 128, 16) == (4, 64)  # BERT: as before
    assert pick_tile(64, 1, 16) == (1, 64)
    assert pick_tile(24, 56, 16) == (14, 8)  # half vectors, not one 24-lane vector
    for j, rows in [(256, 14), (512, 49), (48, 56), (10, 13)]:
        mr, nr = pick_tile(j, rows, 16)
        assert rows % mr == 0 and j % nr == 0 and mr * -(-nr // 16) <= ACC_REGS


def _onnxruntime(model, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _tvm(model, x: np.ndarray) -> np.ndarray:
    target = _host_target()
    mod = from_onnx(model, keep_params_in_input=False)
    ex = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (mlp(), (8, 64)),
        (small_cnn(), (1, 3, 32, 32)),
        (bert_block(seq=16, hidden=64, heads=4, ffn=128), (1, 16, 64)),
    ],
    ids=["mlp", "small_cnn", "bert_block_small"],
)
def test_matches_onnxruntime(model, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(_tvm(model, x), _onnxruntime(model, x), rtol=1e-4, atol=1e-4)


def _scheduled(model) -> tvm.IRModule:
    mod = from_onnx(model, keep_params_in_input=False)
    with TARGET:
        phases = cpu_generic.library_dispatch_passes(TARGET) + legalize_passes(TARGET)
        return tvm.transform.Sequential(phases + schedule_passes(TARGET))(mod)


def test_every_bert_function_is_scheduled_and_weights_prepacked():
    mod = _scheduled(bert_block(seq=16, hidden=128, heads=4, ffn=256))
    funcs = {gv.name_hint: f for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    unscheduled = [n for n, f in funcs.items() if not f.attrs.get("tirx.is_scheduled", False)]
    assert unscheduled == []
    # the dense layers read pre-packed constant weights; the packing functions are folded
    # q/k/v share one function: qkv, attention output, ffn up, ffn down
    assert sum(name.endswith("_prepacked") for name in funcs) == 4
    assert not any(name.endswith("_weight_prepack") for name in funcs)
    parallel = [n for n, f in funcs.items() if "parallel" not in f.script()]
    assert parallel == []


@I.ir_module
class _HandScheduled:
    @T.prim_func(private=True, s_tir=True)
    def kernel(a: T.Buffer((64,), "float32"), out: T.Buffer((64,), "float32")):
        T.func_attr({"tir.is_scheduled": True, "tirx.noalias": True})
        with T.sblock("root"):
            for i0 in range(4):  # hand-scheduled: serial outer, 16-wide inner
                for i1 in range(16):
                    with T.sblock("scale"):
                        vi = T.axis.spatial(64, i0 * 16 + i1)
                        out[vi] = a[vi] * T.float32(2.0) + T.float32(1.0)

    @R.function
    def main(x: R.Tensor((64,), "float32")) -> R.Tensor((64,), "float32"):
        cls = _HandScheduled
        with R.dataflow():
            y = R.call_tir(cls.kernel, (x,), out_ty=R.Tensor((64,), "float32"))
            z = R.add(y, y)
            R.output(z)
        return z


def test_is_scheduled_kernel_left_untouched():
    before = _HandScheduled["kernel"]
    with TARGET:
        originals = scheduled_kernels(_HandScheduled)
        phases = legalize_passes(TARGET) + schedule_passes(TARGET, originals)
        after = tvm.transform.Sequential(phases)(_HandScheduled)
    # passes may rename private functions ("kernel" -> "kernel1"): find it by name prefix
    (kernel,) = [f for gv, f in after.functions_items() if gv.name_hint.startswith("kernel")]
    tvm.ir.assert_structural_equal(kernel, before)
    # ...while the legalized R.add next to it did get a schedule
    (add,) = [f for gv, f in after.functions_items() if gv.name_hint.startswith("add")]
    assert add.attrs["tirx.is_scheduled"]

    host = _host_target()
    ex = tvm.compile(_HandScheduled, target=host, relax_pipeline=cpu_pipeline(host))
    x = np.arange(64, dtype=np.float32)
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(out, 2 * (2 * x + 1))


@pytest.mark.parametrize(("channels", "hw"), [(8, 28), (4, 56), (16, 7)])
def test_reshape_add_relu_of_nchw_rows_is_vectorised_along_the_row(channels, hw):
    """A sparse conv's (1, c, h * w) output reshaped and added to a residual: a row of 28 or
    56 (no multiple of 16) is vectorised whole, not as fused 16-lane vectors that straddle two
    rows (per-lane gathers); a row shorter than a vector keeps the fused loop."""
    bb = relax.BlockBuilder()
    a = relax.Var("a", R.Tensor((1, channels, hw * hw), "float32"))
    b = relax.Var("b", R.Tensor((1, channels, hw, hw), "float32"))
    with bb.function("main", [a, b]):
        with bb.dataflow():
            r = bb.emit(relax.op.reshape(a, (1, channels, hw, hw)))
            out = bb.emit_output(relax.op.nn.relu(relax.op.add(r, b)))
        bb.emit_func_output(out)
    mod = bb.get()
    with TARGET:
        phases = legalize_passes(TARGET) + schedule_passes(TARGET)
        scheduled = tvm.transform.Sequential(phases)(mod)
    (func,) = [f for f in scheduled.functions.values() if isinstance(f, tirx.PrimFunc)]
    vectorised = [int(e) for e in re.findall(r"T\.vectorized\((?:T\.int64\()?(\d+)", func.script())]
    assert vectorised == ([hw] if hw > 16 else [16])
    rng = np.random.default_rng(0)
    x, y = (
        rng.standard_normal(s).astype(np.float32)
        for s in [(1, channels, hw * hw), (1, channels, hw, hw)]
    )
    target = _host_target()
    with target:
        ex = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x), tvm.runtime.tensor(y)).numpy()
    np.testing.assert_allclose(got, np.maximum(x.reshape(y.shape) + y, 0), rtol=1e-6)


def _nhwc_conv(w: np.ndarray, hw: int, stride: int = 1, groups: int = 1) -> tvm.IRModule:
    """x (1, hw, hw, c_in) -> conv2d NHWC with the constant HWIO weight ``w`` -> relu."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, hw, hw, w.shape[2] * groups), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            conv = relax.op.nn.conv2d(
                x, relax.const(w), strides=stride, padding=w.shape[0] // 2, groups=groups,
                data_layout="NHWC", kernel_layout="HWIO",
            )  # fmt: skip
            out = bb.emit_output(bb.emit(relax.op.nn.relu(conv)))
        bb.emit_func_output(out)
    return bb.get()


def _reference_conv(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    k, pad = w.shape[0], w.shape[0] // 2
    p = np.pad(x[0], ((pad, pad), (pad, pad), (0, 0)))
    oh = (x.shape[1] + 2 * pad - k) // stride + 1
    taps = [
        np.einsum(
            "hwc,cd->hwd", p[i : i + stride * oh : stride, j : j + stride * oh : stride], w[i, j]
        )
        for i in range(k)
        for j in range(k)
    ]
    return np.maximum(sum(taps), 0)[None]


@pytest.mark.parametrize(
    ("k", "c_out", "stride"), [(3, 128, 1), (3, 96, 2), (3, 32, 1), (1, 128, 1), (1, 256, 2)]
)
def test_conv_weights_are_read_prepacked(k, c_out, stride):
    """A channels-last conv's constant weight (3x3: the spatial rule's; 1x1: the matmul rule's)
    is packed at compile time into (c_out / nr, kh, kw, c_in, nr) panels, each read
    contiguously (a 3x3 512->512 conv at 7x7 with the weights out of cache: 2.1 -> 1.2 ms); a
    weight as narrow as one tile is read as it is."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((k, k, 16, c_out)).astype(np.float32)
    mod = _nhwc_conv(w, 9, stride)
    with TARGET:
        phases = cpu_generic.library_dispatch_passes(TARGET) + legalize_passes(TARGET)
        scheduled = tvm.transform.Sequential(phases + schedule_passes(TARGET))(mod)
    packed = []

    def visit(expr):
        if isinstance(expr, GenericConst) and len(expr.value.shape) == 5:
            packed.append(tuple(expr.value.shape))

    relax.analysis.post_order_visit(scheduled["main"], visit)
    if c_out == 32:
        assert packed == []
    else:
        (shape,) = packed
        nr = shape[-1]
        assert shape == (c_out // nr, k, k, 16, nr) and nr < c_out
    x = rng.standard_normal((1, 9, 9, 16)).astype(np.float32)
    target = _host_target()
    ex = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, _reference_conv(x, w, stride), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("c_in", "groups", "padded_copy"), [(1, 32, False), (3, 1, False), (64, 1, True)]
)
def test_short_reductions_read_the_padding_through_bounds_tests(c_in, groups, padded_copy):
    """A depthwise conv (9 steps per output) and a 3-channel stem (27) read the padding through
    bounds tests; a 64-channel 3x3 conv (576 steps) keeps its padded copy."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 3, c_in, 32)).astype(np.float32)
    mod = _nhwc_conv(w, 10, 1, groups)
    with TARGET:
        phases = cpu_generic.library_dispatch_passes(TARGET) + legalize_passes(TARGET)
        scheduled = tvm.transform.Sequential(phases + schedule_passes(TARGET))(mod)
    (conv,) = [f for gv, f in scheduled.functions_items() if "conv2d" in gv.name_hint]
    assert ('T.sblock("pad_temp")' in conv.script()) == padded_copy
    x = rng.standard_normal((1, 10, 10, c_in * groups)).astype(np.float32)
    target = _host_target()
    ex = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
    got = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    if groups == 1:
        want = _reference_conv(x, w, 1)
    else:
        p = np.pad(x[0], ((1, 1), (1, 1), (0, 0)))
        taps = [p[i : i + 10, j : j + 10] * w[i, j, 0] for i in range(3) for j in range(3)]
        want = np.maximum(sum(taps), 0)[None]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
