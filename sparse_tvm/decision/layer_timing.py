"""Measure one layer dense and sparse, each compiled on its own the way the model will be.

The compiler keeps a layer sparse only where the sparse kernel is measured faster than the
dense layer with the same schedule pipeline: a user never gets a slower model from us. A layer
is rebuilt as a one-layer Relax function (same input shape, weight orientation, fused bias and
ReLU); the sparse version goes through the same :class:`DenseToSparse` pass, with the same
back end's lowering and Relax pipeline, as the model. A board that this host cannot run code for
times layers while tuning (:func:`time_layer_on_board`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.analysis.layers import Layer, find_layers
from sparse_tvm.decision.machine_load import ForeignLoad, quiet_moment
from sparse_tvm.errors import CompileError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.transform.dense_to_sparse import DenseToSparse, SparsePlan
from sparse_tvm.tuning.records import layer_key

_CACHE: dict[tuple, float] = {}


@dataclass(frozen=True)
class LayerTiming:
    dense_s: float
    sparse_s: float
    quiet: bool | None = None  # timed in quiet moments (retime with a quiet budget)

    @property
    def speedup(self) -> float:
        return self.dense_s / self.sparse_s if self.sparse_s > 0 else 0.0


def _single_layer_module(layer: Layer) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """A Relax module ``main(x, weight[, bias])`` computing just this layer."""
    x = relax.Var("x", relax.TensorType(list(layer.input_shape), "float32"))
    w = relax.Var(layer.name, relax.TensorType(list(layer.weight_shape), "float32"))
    params = [x, w]
    values = {layer.name: layer.stored_weight()}
    bias_var = None
    if layer.bias is not None:
        bias_var = relax.Var(f"{layer.name}.bias", relax.TensorType([layer.shape[0]], "float32"))
        params.append(bias_var)
        values[f"{layer.name}.bias"] = layer.bias
    bb = relax.BlockBuilder()
    with bb.function("main", params):
        with bb.dataflow():
            if layer.op == "matmul":
                weight = bb.emit(relax.op.permute_dims(w, [1, 0])) if layer.transposed else w
                y = bb.emit(relax.op.matmul(x, weight))
                if bias_var is not None:
                    y = bb.emit(relax.op.add(y, bias_var))
            else:
                g = layer.conv
                nhwc = g.layout == "NHWC"
                y = bb.emit(
                    relax.op.nn.conv2d(
                        x,
                        w,
                        strides=g.strides,
                        padding=g.padding,
                        dilation=g.dilation,
                        groups=g.groups,
                        data_layout=g.layout,
                        kernel_layout="HWIO" if nhwc else "OIHW",
                    )
                )
                if bias_var is not None:
                    n = layer.shape[0]
                    shape = (1, 1, 1, n) if nhwc else (1, n, 1, 1)
                    shaped = bb.emit(relax.op.reshape(bias_var, shape))
                    y = bb.emit(relax.op.add(y, shaped))
            out = bb.emit_output(emit_activation(bb, layer, y))
        bb.emit_func_output(out)
    return bb.get(), values


def emit_activation(bb: relax.BlockBuilder, layer: Layer, y: relax.Expr) -> relax.Expr:
    """Emit the layer's ReLU / ReLU6 / GELU after ``y`` (as the model's graph has them)."""
    if layer.relu:
        y = bb.emit(relax.op.nn.relu(y))
    if layer.relu6:
        y = bb.emit(relax.op.minimum(y, relax.const(6.0, "float32")))
    if layer.gelu:
        y = bb.emit(relax.op.nn.gelu(y))
    return y


def bind_weights(mod: tvm.IRModule, values: dict[str, np.ndarray]) -> tvm.IRModule:
    present = {p.name for p in mod["main"].params}
    binding = {k: tvm.runtime.tensor(v) for k, v in values.items() if k in present}
    return relax.transform.BindParams("main", binding)(mod)


def layer_module(
    layer: Layer,
    backend,
    weight: BlockSparseWeight | None = None,
    kernel: tvm.tirx.PrimFunc | None = None,
    knobs: dict[str, int] | None = None,
) -> tvm.IRModule:
    """The layer alone, ``main(x)`` with its weights bound: dense when ``weight`` is None, else
    rewritten by :class:`DenseToSparse` with the back end's lowering to the sparse kernel
    (``kernel`` replaces the default; ``knobs`` set the default's schedule variant)."""
    mod, values = _single_layer_module(layer)
    if weight is not None:
        func = mod["main"]
        (single,) = find_layers(func, {p: values[p.name] for p in func.params[1:]}, gelu=layer.gelu)
        plan = SparsePlan(single, weight, kernel, knobs)
        mod = DenseToSparse([plan], backend.lowering())(mod)
    return bind_weights(mod, values)


def variant_id(knobs: dict[str, int] | None) -> str:
    """The timing cache's name of the default kernel with ``knobs``: ``default[:k=v,...]``."""
    if not knobs:
        return "default"
    return "default:" + ",".join(f"{k}={v}" for k, v in sorted(knobs.items()))


def layer_timer(mod: tvm.IRModule, backend, input_shape, number: int, repeat: int, dtype="float32"):
    """A function that times ``mod`` once more each call: median seconds of ``repeat`` runs
    (on a random input of ``dtype``: float32 normal, uint8 / int8 uniform)."""
    executable = backend.compile_module(mod)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    rng = np.random.default_rng(0)
    if dtype in ("uint8", "int8"):
        info = np.iinfo(dtype)
        value = rng.integers(info.min, info.max + 1, input_shape).astype(dtype)
    else:
        value = rng.standard_normal(input_shape, np.float32)
    x = tvm.runtime.tensor(value)
    timer = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=repeat, min_repeat_ms=20)
    return lambda: float(np.median(timer(x).results))


def _key(layer: Layer, extra) -> tuple:
    return (layer_key(layer), extra)


def _dense_key(layer: Layer, target: str) -> tuple:
    """A dense timing's cache key: the layer's shapes and epilogue, not its nonzero pattern
    (the dense layer does the same work whatever its zeros), so same-shape layers share it."""
    return (layer_key(layer, pattern=False), ("dense", target))


def time_dense(layer: Layer, backend, number: int = 5, repeat: int = 5) -> float:
    """Median seconds of the layer compiled dense for ``backend`` (which runs on this host)."""
    key = _dense_key(layer, str(backend.tvm_target))
    if key not in _CACHE:
        mod = layer_module(layer, backend)
        _CACHE[key] = layer_timer(mod, backend, layer.input_shape, number, repeat)()
    return _CACHE[key]


def time_sparse(
    layer: Layer,
    weight: BlockSparseWeight,
    backend,
    number: int = 5,
    repeat: int = 5,
    kernel: tvm.tirx.PrimFunc | None = None,
    kernel_id: str = "default",
    knobs: dict[str, int] | None = None,
) -> float:
    """Median seconds of the layer rewritten to the sparse kernel with ``weight``.

    ``kernel`` (e.g. from tuning records, named by ``kernel_id`` for the cache) replaces the
    default kernel; else ``knobs`` choose the default's schedule variant.
    """
    if kernel is None:
        kernel_id = variant_id(knobs)
    key = _key(layer, ("sparse", weight.block, str(backend.tvm_target), kernel_id))
    if key not in _CACHE:
        mod = layer_module(layer, backend, weight, kernel, knobs)
        _CACHE[key] = layer_timer(mod, backend, layer.input_shape, number, repeat)()
    return _CACHE[key]


def retime(
    layer: Layer,
    weight: BlockSparseWeight,
    backend,
    kernel: tvm.tirx.PrimFunc | None = None,
    kernel_id: str = "default",
    rounds: int = 3,
    knobs: dict[str, int] | None = None,
    quiet_budget_s: float = 0.0,
) -> LayerTiming:
    """Time the layer dense and sparse again, alternating for ``rounds`` rounds, and keep each
    one's fastest median, the first timings included.

    Another process taking a core slows a 2-thread kernel 5-40x for as long as it runs: a
    timing that disagrees with the cost model is more often such a moment than the truth, and
    load only ever adds time, so the fastest of several alternated medians is the fair one.

    With ``quiet_budget_s`` (the first timings were taken while other processes used the
    cores), each round first waits for a quiet moment (:func:`quiet_moment`) and only rounds
    the machine stayed quiet through count, the first timings not at all: under load a
    one-thread kernel keeps its speed while a 2-thread one does not, so no minimum of loaded
    timings compares them fairly. ``LayerTiming.quiet`` says whether such rounds were had
    (None: not asked); without one, the alternated minima of the loaded rounds are kept.
    """
    target = str(backend.tvm_target)
    if kernel is None:
        kernel_id = variant_id(knobs)
    dense_key = _dense_key(layer, target)
    sparse_key = _key(layer, ("sparse", weight.block, target, kernel_id))
    timers = (
        layer_timer(layer_module(layer, backend), backend, layer.input_shape, 5, 5),
        layer_timer(
            layer_module(layer, backend, weight, kernel, knobs), backend, layer.input_shape, 5, 5
        ),
    )
    best = [_CACHE.get(dense_key, float("inf")), _CACHE.get(sparse_key, float("inf"))]
    if quiet_budget_s <= 0:
        for _ in range(rounds):
            for index, timer in enumerate(timers):
                best[index] = min(best[index], timer())
        _CACHE[dense_key], _CACHE[sparse_key] = best
        return LayerTiming(*best)
    deadline = time.perf_counter() + quiet_budget_s
    quiet, loaded = [float("inf")] * 2, [float("inf")] * 2
    quiet_rounds = 0
    while quiet_rounds < rounds:
        calm = quiet_moment(deadline)
        with ForeignLoad() as window:
            seconds = [timer() for timer in timers]
        kept = quiet if calm and not window.loaded else loaded
        quiet_rounds += kept is quiet
        for index, value in enumerate(seconds):
            kept[index] = min(kept[index], value)
        if time.perf_counter() >= deadline:
            break
    best = quiet if quiet_rounds else [min(a, b) for a, b in zip(best, loaded)]
    _CACHE[dense_key], _CACHE[sparse_key] = best
    return LayerTiming(*best, quiet=quiet_rounds > 0)


def time_layer_on_board(layer: Layer, tuned: list, backend, board) -> dict:
    """Time the dense layer and each tuned candidate layer on ``board`` (one RPC session).

    ``tuned`` holds ``(block, weight, TunedKernel)``; a candidate runs with its tuned kernel,
    or the hand-written one where the board timed that faster while tuning. Every variant's
    output on the board must equal the dense layer's. Returns the ``layer_timings.json`` entry.
    """
    from sparse_tvm.analysis import block_label
    from sparse_tvm.analysis.format_choice import format_label
    from sparse_tvm.tuning.rpc import time_remote

    session = board.session()
    device = session.cpu()
    x = np.random.default_rng(0).standard_normal(layer.input_shape).astype(np.float32)
    variants = [(None, None, None)]
    for block, weight, result in tuned:
        use_tuned = result.latency_s <= result.default_latency_s
        variants.append((block, weight, result if use_tuned else None))
    seconds, outputs = [], []
    for index, (block, weight, result) in enumerate(variants):
        kernel = None if result is None else result.func
        executable = backend.compile_module(layer_module(layer, backend, weight, kernel))
        vm = tvm.runtime.vm.VirtualMachine(
            board.load(session, executable, f"layer{index}.so"), device
        )
        xt = tvm.runtime.tensor(x, device)
        outputs.append(vm["main"](xt).numpy())
        seconds.append(time_remote(vm, "main", device, [xt]))
        if index and not np.allclose(outputs[-1], outputs[0], rtol=1e-3, atol=1e-3):
            raise CompileError(
                f"{layer.name}: the {block_label(block)} sparse layer disagrees with the dense "
                f"layer on the {board} (max diff {np.abs(outputs[-1] - outputs[0]).max():.3g})"
            )
    candidates = []
    for (block, _, result), secs in zip(variants[1:], seconds[1:]):
        candidates.append(
            {
                "block": list(block),
                "format": format_label(block),
                "knobs": None if result is None else result.knobs,
                "sparse_s": secs,
            }
        )
    return {
        "layer": layer_key(layer),
        "name": layer.name,
        "target": str(backend.tvm_target),
        "board": str(board),
        "dense_s": seconds[0],
        "candidates": candidates,
    }
