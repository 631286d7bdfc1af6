"""Which layout should dense CNN convs use on CPU? One conv + ReLU at a time, same-run medians.

For each conv shape (ResNet-50 / MobileNet layers, batch 1) and each data layout (NCHW, the
graph's own; NHWC, where a 1x1 conv is the matmul-layout GEMM), two TVM builds:

    rules    sparse-tvm's CPU pipeline (``pipeline/cpu_rules``), no tuning
    tuned    MetaSchedule's own space (``tune_relax``, ``--trials`` per layer), as an upper bound
             of what TVM's generic code reaches in that layout

against onnxruntime on the NCHW ONNX Conv (MLAS's NCHWc kernels), 2 threads everywhere. The
output of every build is checked against onnxruntime's. Layout transforms at the edges are not
timed: the question is the layout the whole network would run in.

    python benchmarks/conv_layouts.py [--trials 48] [--shapes pw56,conv3x3,dw56]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import common  # noqa: F401, I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)

import numpy as np
import onnx
import onnxruntime as ort
import tvm
from onnx import TensorProto, helper
from tvm import relax

from sparse_tvm.logs import metaschedule_logging, native_quiet
from sparse_tvm.pipeline import cpu_pipeline
from sparse_tvm.target import resolve_target


@dataclass(frozen=True)
class ConvShape:
    name: str
    c_in: int
    c_out: int
    hw: int
    kernel: int
    stride: int = 1
    groups: int = 1

    @property
    def pad(self) -> int:
        return self.kernel // 2


SHAPES = {
    "pw56": ConvShape("1x1 128->128 @56 (MobileNet-v1)", 128, 128, 56, 1),
    "pw56x4": ConvShape("1x1 64->256 @56 (ResNet-50 expand)", 64, 256, 56, 1),
    "conv3x3": ConvShape("3x3 64->64 @56 (ResNet-50)", 64, 64, 56, 3),
    "dw56": ConvShape("dw 3x3 128 @56 (MobileNet-v1)", 128, 128, 56, 3, groups=128),
    "first": ConvShape("3x3/2 3->32 @224 (first layer)", 3, 32, 224, 3, stride=2),
}


def _weight(shape: ConvShape) -> np.ndarray:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((shape.c_out, shape.c_in // shape.groups, shape.kernel, shape.kernel))
    return (w * 0.1).astype(np.float32)


def _onnx_model(shape: ConvShape, w: np.ndarray) -> onnx.ModelProto:
    out_hw = (shape.hw + 2 * shape.pad - shape.kernel) // shape.stride + 1
    conv = helper.make_node(
        "Conv",
        ["x", "w"],
        ["c"],
        kernel_shape=[shape.kernel] * 2,
        pads=[shape.pad] * 4,
        strides=[shape.stride] * 2,
        group=shape.groups,
    )
    relu = helper.make_node("Relu", ["c"], ["y"])
    graph = helper.make_graph(
        [conv, relu],
        "conv",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, [1, shape.c_in, shape.hw, shape.hw]
            )
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, shape.c_out, out_hw, out_hw])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _relax_module(shape: ConvShape, w: np.ndarray, layout: str) -> tvm.IRModule:
    """``main(x)``: conv2d + ReLU in ``layout`` with the weight bound as a constant."""
    if layout == "NCHW":
        x_shape, kernel_layout, weight = (1, shape.c_in, shape.hw, shape.hw), "OIHW", w
    else:
        # HWIO, as the CPU back ends run CNNs (sparse_tvm.transform.channels_last)
        x_shape, kernel_layout = (1, shape.hw, shape.hw, shape.c_in), "HWIO"
        weight = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    x = relax.Var("x", relax.TensorType(list(x_shape), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(
                relax.op.nn.conv2d(
                    x,
                    relax.const(weight),
                    strides=[shape.stride] * 2,
                    padding=[shape.pad] * 4,
                    groups=shape.groups,
                    data_layout=layout,
                    kernel_layout=kernel_layout,
                )
            )
            out = bb.emit_output(bb.emit(relax.op.nn.relu(y)))
        bb.emit_func_output(out)
    return bb.get()


def _timer(executable, x: np.ndarray, repeat: int):
    vm = relax.VirtualMachine(executable, tvm.cpu())
    xt = tvm.runtime.tensor(x)
    timer = vm.time_evaluator("main", tvm.cpu(), number=5, repeat=repeat, min_repeat_ms=50)
    return (lambda: float(np.median(timer(xt).results))), vm["main"](xt).numpy()


def _tuned(mod: tvm.IRModule, target: tvm.target.Target, trials: int):
    from tvm.s_tir import meta_schedule as ms

    work_dir = tempfile.mkdtemp(prefix="conv_layouts_")
    # tasks are the fused PrimFuncs: legalize and fuse first, as TVM's default pipeline does
    mod = tvm.transform.Sequential(
        [
            relax.transform.LegalizeOps(),
            relax.transform.AnnotateTIROpPattern(),
            relax.transform.FuseOps(),
            relax.transform.FuseTIR(),
        ]
    )(mod)
    with metaschedule_logging(), native_quiet():
        database = ms.relax_integration.tune_relax(
            mod, {}, target, work_dir, max_trials_global=trials, num_trials_per_iter=16
        )
        return ms.relax_integration.compile_relax(database, mod, target, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=48, help="MetaSchedule trials per layer")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="which of: " + ",".join(SHAPES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = parser.parse_args()
    target = resolve_target("x86").tvm_target
    threads = int(os.environ["TVM_NUM_THREADS"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    print(f"# {threads} threads, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| layer | onnxruntime ms | NCHW rules | NCHW tuned | NHWC rules | NHWC tuned |")
    print("|---|--:|--:|--:|--:|--:|")
    for key in args.shapes.split(","):
        shape = SHAPES[key]
        w = _weight(shape)
        x = np.random.default_rng(1).standard_normal((1, shape.c_in, shape.hw, shape.hw))
        x = x.astype(np.float32)
        session = ort.InferenceSession(
            _onnx_model(shape, w).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        (expected,) = session.run(None, {"x": x})
        timers = {"onnxruntime": lambda s=session, x=x: _time_ort(s, x)}
        for layout in ("NCHW", "NHWC"):
            mod = _relax_module(shape, w, layout)
            xin = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
            want = expected if layout == "NCHW" else expected.transpose(0, 2, 3, 1)
            start = time.perf_counter()
            with native_quiet():
                rules = tvm.compile(mod, target=target, relax_pipeline=cpu_pipeline(target))
            builds = {"rules": rules}
            if args.trials:
                builds["tuned"] = _tuned(mod, target, args.trials)
            for how, executable in builds.items():
                timer, got = _timer(executable, xin, 3)
                np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
                timers[f"{layout} {how}"] = timer
            print(f"  ({shape.name}: {layout} built in {time.perf_counter() - start:.0f} s)")
        samples = {name: [] for name in timers}
        for _ in range(args.rounds):
            for name, timer in timers.items():
                samples[name].append(timer())
        ms = {name: statistics.median(v) * 1e3 for name, v in samples.items()}
        ref = ms["onnxruntime"]
        cells = [f"{ms['onnxruntime']:.3f}"] + [
            f"{ms[n]:.3f} ({ref / ms[n]:.2f}x)" if n in ms else "-"
            for n in ("NCHW rules", "NCHW tuned", "NHWC rules", "NHWC tuned")
        ]
        print(f"| {shape.name} | " + " | ".join(cells) + " |", flush=True)
    print("ratios: onnxruntime's time / the build's (> 1: faster than onnxruntime)")


def _time_ort(session: ort.InferenceSession, x: np.ndarray, number: int = 20) -> float:
    session.run(None, {"x": x})
    start = time.perf_counter()
    for _ in range(number):
        session.run(None, {"x": x})
    return (time.perf_counter() - start) / number


if __name__ == "__main__":
    main()
