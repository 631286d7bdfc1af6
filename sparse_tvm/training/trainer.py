"""The training loop in TVM: one compiled module holds the forward pass, the loss gradient and
the optimizer steps; numpy holds the data, the masks and the schedules.

``Trainer`` imports an ONNX model at its training batch shape, builds
``loss_adjoint`` (``relax.transform.Gradient``) and the optimizer ``step`` functions, compiles
them once, and then runs mini-batch epochs. A method (pruning) steers it only through the
generic :class:`~sparse_tvm.training.hooks.TrainingHooks` given to ``compile``: keep-masks
(weights kept at zero after every step), transforms of weights and penalties in the loss
graph, extra inputs of the loss (some trained by their own optimizer), per-step callbacks.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import tvm
from tvm import relax

from sparse_tvm.errors import InputShapeError, TrainingError
from sparse_tvm.frontend import graph_inputs, import_onnx, load_onnx
from sparse_tvm.frontend.initializers import write_initializer
from sparse_tvm.logs import native_quiet
from sparse_tvm.training.data import Dataset, load_dataset, minibatches, padded_batches
from sparse_tvm.training.graph import gradient_module
from sparse_tvm.training.hooks import TrainingHooks
from sparse_tvm.training.optim import add_step_function, lr_at, make_optimizer, scalar


@dataclass
class TrainConfig:
    """Hyper-parameters of a fine-tuning run."""

    epochs: int | None = 10  # None: pruning derives it from the data size
    lr: float | None = None  # None: 0.05 for sgd, 0.002 for adam
    batch_size: int = 32
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    warmup_steps: int | None = 0  # linear learning-rate warm-up (pruning: a share of the run)
    seed: int = 0
    gate_lr: float = 0.05  # Adam on the hooks' trained loss inputs (L0 gates' log_alpha)

    def base_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        return 0.05 if self.optimizer == "sgd" else 0.002


@dataclass
class EpochLog:
    """What a callback gets after every epoch."""

    epoch: int
    epochs: int
    loss: float  # mean task loss (cross-entropy or MSE) over the epoch's steps
    objective: float  # mean training objective (task loss + L0 penalty)
    lr: float
    sparsity: float  # share of zeros over the pruned weights (gates: expected)
    seconds: float
    eval_metric: str | None = None
    eval_value: float | None = None
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        text = (
            f"epoch {self.epoch}/{self.epochs}  loss {self.loss:.4f}  lr {self.lr:.4g}  "
            f"sparsity {self.sparsity:.1%}"
        )
        if self.eval_metric is not None:
            value = (
                f"{self.eval_value:.2%}"
                if self.eval_metric == "accuracy"
                else f"{self.eval_value:.4g}"
            )
            text += f"  eval {self.eval_metric} {value}"
        return text + f"  ({self.seconds:.1f} s)"


def print_progress(log: EpochLog) -> None:
    """A callback that prints one line per epoch to stderr."""
    print(log.line(), file=sys.stderr, flush=True)


def _trainable(name: str, value: np.ndarray) -> bool:
    # exporters store constants (sqrt(2), 0.5, a scale) as float initializers: leave scalars
    return value.ndim >= 1 and value.size > 1


def _statistics(model: onnx.ModelProto | None) -> set[str]:
    """Running means and variances of BatchNormalization nodes: statistics, not weights (a
    gradient step could make a variance negative)."""
    if model is None:
        return set()
    return {
        name
        for node in model.graph.node
        if node.op_type == "BatchNormalization"
        for name in node.input[3:5]
    }


def layer_name(model: onnx.ModelProto | None, tensor: str) -> str:
    """The layer that consumes initializer ``tensor``, named as the compiler's report names it
    (:func:`sparse_tvm.analysis.layer_names.display_name`: the PyTorch module path, else the
    node name), else ``tensor`` itself."""
    from sparse_tvm.analysis.layer_names import display_name

    for node in model.graph.node if model is not None else ():
        if tensor in node.input:
            return display_name(node, tensor) or tensor
    return tensor


# the host's preset: its back end's Relax pipeline schedules the training graph's matmuls and
# convs (TVM's default pipeline leaves them as plain loops on one core)
HOST_PRESETS = {"x86_64": "x86", "amd64": "x86", "aarch64": "aarch64", "arm64": "aarch64"}


def _build(mod: tvm.IRModule, target: tvm.target.Target | None):
    """``mod`` compiled for ``target``, by default for this machine with its back end's CPU
    pipeline (on 2 cores: the digits CNN of benchmarks/prune_accuracy.py 10 s -> 0.5 s an
    epoch, the 64-512-512-10 MLP's 35-epoch gmp run 121 -> 14 s)."""
    if target is not None:
        return tvm.compile(mod, target=target)
    from sparse_tvm.backends import backend_for

    preset = HOST_PRESETS.get(platform.machine().lower())
    if preset is None:
        return tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    backend = backend_for(preset)
    return tvm.compile(mod, target=backend.tvm_target, relax_pipeline=backend.relax_pipeline())


class Trainer:
    """A compiled training program for one ONNX model.

    Parameters
    ----------
    model
        The ONNX model (path or ``ModelProto``).
    config
        Hyper-parameters; ``batch_size`` applies where the batch axis is dynamic (a static
        batch axis is the training batch).

    ``weights`` (name -> float32 array, stored layout) is the state training updates; a
    method's hooks may act on the same dict in place.
    """

    def __init__(self, model: str | onnx.ModelProto, config: TrainConfig) -> None:
        self.config = config
        self.objective: str | None = None
        self.model = load_onnx(model)
        self.batch = self._batch_shapes()
        # unfolded: the weights trained are the model's own initializers, written back by name
        self.imported = import_onnx(
            self.model, input_shapes=self.batch_shapes, fold_batchnorms=False
        )
        self.weights = {k: v.astype(np.float32) for k, v in self.imported.params.items()}
        statistics = _statistics(self.imported.onnx_model)
        self.trainable = [
            k for k, v in self.weights.items() if _trainable(k, v) and k not in statistics
        ]
        # weight name -> (TVM tensor, the numpy view of it in ``weights``): the step's new
        # weights stay where the VM wrote them, and go back in without a copy
        self._held: dict[str, tuple[tvm.runtime.Tensor, np.ndarray]] = {}
        self.hooks = TrainingHooks()
        self.masked: list[str] = []  # weights under a keep-mask (set by ``compile``)
        self.trained_inputs: list[str] = []  # loss inputs with an optimizer of their own

    # -- set-up -----------------------------------------------------------------------------

    def _batch_shapes(self) -> int:
        inputs = graph_inputs(self.model)
        firsts = {dims[0] if dims else None for _, dims, _ in inputs}
        static = [d for d in firsts if isinstance(d, int)]
        batch = static[0] if len(firsts) == 1 and static else self.config.batch_size
        shapes = {}
        for name, dims, _ in inputs:
            if dims is None or any(not isinstance(d, int) for d in dims[1:]):
                raise InputShapeError(
                    f"input '{name}' has dynamic dimensions past the batch axis ({dims}): "
                    "export the model with static shapes to fine-tune it"
                )
            shapes[name] = (batch, *dims[1:])
        self.batch_shapes = shapes
        return batch

    def compile(
        self,
        objective: str,
        target: tvm.target.Target | None = None,
        *,
        hooks: TrainingHooks | None = None,
    ) -> None:
        """Build and compile forward, ``loss_adjoint`` and the optimizer steps; ``hooks``
        (read here, called by ``fit``) steer training, by default none (dense)."""
        self.objective = objective
        self.hooks = hooks or TrainingHooks()
        self.masked = [m for m in self.hooks.masked_weights() if m in self.trainable]
        self.trained_inputs = [i.name for i in self.hooks.loss_inputs() if i.trained]
        mod, self.loss_names, grad_names = gradient_module(
            self.imported.mod,
            self.objective,
            self.trainable,
            self.hooks,
            self._layer_of,
        )
        self.grad_names = grad_names
        weight_grads = [n for n in grad_names if n in self.weights]
        assert weight_grads == self.trainable, (weight_grads, self.trainable)
        loss_params = {p.name: p for p in mod["loss"].params}
        self.weight_optimizer = make_optimizer(
            self.config.optimizer, self.config.momentum, self.config.weight_decay
        )
        mod = add_step_function(
            mod,
            "step_weights",
            self.weight_optimizer,
            [loss_params[n] for n in self.trainable],
            [n in self.masked for n in self.trainable],
        )
        if self.trained_inputs:
            self.input_optimizer = make_optimizer("adam")
            mod = add_step_function(
                mod,
                "step_inputs",
                self.input_optimizer,
                [loss_params[n] for n in self.trained_inputs],
                [False] * len(self.trained_inputs),
            )
        with native_quiet():
            executable = _build(mod, target)
        self.vm = relax.VirtualMachine(executable, tvm.cpu())
        self.weight_state = self.weight_optimizer.state
        self.input_state = self.input_optimizer.state if self.trained_inputs else None

    def _layer_of(self, weight: str) -> str:
        # the original graph keeps the exporter's scopes; folding made some initializers
        name = layer_name(self.model, weight)
        return name if name != weight else layer_name(self.imported.onnx_model, weight)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the first output at the training batch."""
        out_ty = self.imported.mod["main"].ret_ty
        if isinstance(out_ty, relax.TupleType):
            out_ty = out_ty.fields[0]
        return tuple(int(d) for d in out_ty.shape)

    # -- data -------------------------------------------------------------------------------

    def dataset(self, data, what: str = "training data", distil: bool = True) -> Dataset:
        """Read and check ``data`` against this model (see :mod:`sparse_tvm.training.data`);
        ``distil=False``: labels or targets are required."""
        names = self.imported.input_names
        return load_dataset(
            data,
            names,
            {n: self.batch_shapes[n][1:] for n in names},
            dict(zip(names, self.imported.input_dtypes)),
            self.output_shape[-1],
            self.output_shape[1:],
            what,
            distil,
        )

    # -- running ----------------------------------------------------------------------------

    def predict(self, data: Dataset, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """First output of the forward pass for every sample (padded batches)."""
        weights = self.weights if weights is None else weights
        values = [tvm.runtime.tensor(weights[n]) for n in self.imported.params]
        outs = []
        for index, real in padded_batches(len(data), self.batch):
            args = [tvm.runtime.tensor(data.inputs[n][index]) for n in self.imported.input_names]
            out = self.vm["main"](*args, *values)
            if not isinstance(out, tvm.runtime.Tensor):
                out = out[0]
            outs.append(out.numpy()[:real])
        return np.concatenate(outs)

    def evaluate(
        self, data: Dataset, weights: dict[str, np.ndarray] | None = None
    ) -> tuple[str, float]:
        """``("accuracy", share)`` with labels, else ``("mse", value)`` against targets."""
        pred = self.predict(data, weights)
        if data.labels is not None:
            return "accuracy", float(np.mean(pred.argmax(axis=-1) == data.labels))
        return "mse", float(np.mean((pred - data.targets) ** 2))

    def effective_weights(self) -> dict[str, np.ndarray]:
        """The weights as the model holds them (the hooks' keep-masks applied)."""
        out = dict(self.weights)
        masks = self.hooks.masks()
        for name in self.masked:
            if name in masks:  # a squashed mask (pruning folded it in) applies no more
                out[name] = self.weights[name] * masks[name]
        return out

    def _y(self, data: Dataset, index: np.ndarray) -> np.ndarray:
        if self.objective == "cross_entropy" and data.soft_labels is not None:
            return data.soft_labels[index]
        if self.objective == "cross_entropy":
            classes = self.output_shape[-1]
            return np.eye(classes, dtype=np.float32)[data.labels[index]]
        return data.targets[index]

    def fit(
        self,
        data: Dataset,
        eval_data: Dataset | None = None,
        epochs: int | None = None,
        callbacks: Sequence[Callable[[EpochLog], None]] = (),
        first_epoch: int = 1,
        total_epochs: int | None = None,
    ) -> list[EpochLog]:
        """Run ``epochs`` epochs from ``first_epoch`` of ``total_epochs`` (the schedules span
        those); the hooks given to ``compile`` run around every step."""
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        total_epochs = total_epochs or epochs
        if len(data) < self.batch:
            raise TrainingError(
                f"training data has {len(data)} samples, fewer than one batch of {self.batch}"
            )
        steps_per_epoch = len(data) // self.batch
        total = steps_per_epoch * total_epochs
        step = (first_epoch - 1) * steps_per_epoch
        rng = np.random.default_rng([cfg.seed, first_epoch])
        trainable, hooks = self.trainable, self.hooks
        masked = set(self.masked)
        logs = []
        for epoch in range(first_epoch, first_epoch + epochs):
            start, losses, tasks = time.perf_counter(), [], []
            for index in minibatches(len(data), self.batch, rng):
                hooks.before_step(step, total)
                lr = lr_at(cfg.lr_schedule, cfg.base_lr(), step, total, cfg.warmup_steps)
                fed = hooks.input_values(rng)
                outputs, grads, fed_weights = self._loss_and_grads(data, index, rng, fed)
                losses.append(float(outputs[0].numpy()))
                tasks.append(float(outputs[1].numpy()))
                # the weights the loss saw: masked ones masked (the step masks its result
                # again, so the new weights are those of the unmasked values)
                params = [fed_weights[n] for n in trainable]
                mask_values = hooks.masks()
                masks = [tvm.runtime.tensor(mask_values[n]) for n in trainable if n in masked]
                weight_grads = [grads[i] for i, n in enumerate(self.grad_names) if n in trainable]
                new, self.weight_state = self.vm["step_weights"](
                    params, weight_grads, self.weight_state, scalar(lr), *masks
                )
                for name, value in zip(trainable, new):
                    view = np.from_dlpack(value)  # the VM's output, not a copy
                    self._held[name] = (value, view)
                    self.weights[name] = view
                trained = {}
                if self.trained_inputs and hooks.trains_inputs():
                    trained = self._step_inputs(grads, fed)
                hooks.after_step(trained, [float(o.numpy()) for o in outputs[2:]])
                if not np.isfinite(losses[-1]):
                    raise TrainingError(
                        f"the training loss became {losses[-1]} at epoch {epoch}: lower the "
                        "learning rate (lr=)"
                    )
                step += 1
            log = EpochLog(
                epoch,
                total_epochs,
                float(np.mean(tasks)),
                float(np.mean(losses)),
                lr,
                hooks.current_sparsity(),
                time.perf_counter() - start,
            )
            if eval_data is not None:
                log.eval_metric, log.eval_value = self.evaluate(eval_data, self.eval_weights())
            logs.append(log)
            for callback in callbacks:
                callback(log)
        return logs

    def eval_weights(self) -> dict[str, np.ndarray]:
        """Weights for evaluation: masks applied, then what the hooks make of them."""
        return self.hooks.eval_weights(self.effective_weights())

    def _loss_and_grads(
        self,
        data: Dataset,
        index: np.ndarray,
        rng: np.random.Generator,
        fed: dict[str, np.ndarray] | None = None,
    ):
        """The loss outputs and gradients of one batch, and the weights fed (name -> TVM
        tensor); ``fed``: the hooks' loss inputs (default: drawn now from ``rng``)."""
        args = {n: data.inputs[n][index] for n in self.imported.input_names}
        weights = {n: self._tensor(n, v) for n, v in self.effective_weights().items()}
        args.update(weights)
        args["y"] = self._y(data, index)
        args.update(self.hooks.input_values(rng) if fed is None else fed)
        inputs = set(self.imported.input_names)
        values = [
            args[n]
            if isinstance(args[n], tvm.runtime.Tensor)
            else tvm.runtime.tensor(args[n] if n in inputs else np.asarray(args[n], np.float32))
            for n in self.loss_names
        ]
        outputs, grads = self.vm["loss_adjoint"](*values)
        return outputs, grads, weights

    def _tensor(self, name: str, value: np.ndarray) -> tvm.runtime.Tensor:
        """``value`` as a TVM tensor: the one it is a view of (the last step's output, no
        copy), else a copy."""
        held = self._held.get(name)
        if held is not None and held[1] is value:
            return held[0]
        return tvm.runtime.tensor(np.asarray(value, np.float32))

    def _step_inputs(self, grads, fed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One Adam step of the trained loss inputs from their values ``fed`` this step."""
        names = self.trained_inputs
        input_grads = [grads[self.grad_names.index(n)] for n in names]
        params = [tvm.runtime.tensor(fed[n]) for n in names]
        new, self.input_state = self.vm["step_inputs"](
            params, input_grads, self.input_state, scalar(self.config.gate_lr)
        )
        return {name: value.numpy() for name, value in zip(names, new)}

    # -- output -----------------------------------------------------------------------------

    def export(self, weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
        """The original ONNX graph with its initializers replaced by the trained weights."""
        weights = self.effective_weights() if weights is None else weights
        out = onnx.ModelProto()
        out.CopyFrom(self.model)
        present = {t.name: t for t in out.graph.initializer}
        for name in self.trainable:
            if name in present:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(present[name].data_type)
                write_initializer(out, name, weights[name].astype(dtype))
        return out
