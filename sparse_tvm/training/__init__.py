"""Training in TVM: ONNX model -> Relax forward + loss -> ``relax.transform.Gradient`` ->
TVM's optimizers, compiled once and run over mini-batches.

``train`` fits a dense model; a method steers the same :class:`Trainer` through the generic
:class:`TrainingHooks` (the pruning sparsifiers: masks, L0 gates, schedules). Nothing here
knows a pruning method: :mod:`sparse_tvm.pruning` imports this package, never the reverse.
"""

from sparse_tvm.training.data import Dataset, TrainingDataError, load_dataset
from sparse_tvm.training.gradients import register_missing_gradients
from sparse_tvm.training.hooks import LossInput, LossTerms, TrainingHooks
from sparse_tvm.training.train import TrainResult, train
from sparse_tvm.training.trainer import EpochLog, TrainConfig, Trainer, print_progress

__all__ = [
    "Dataset",
    "EpochLog",
    "LossInput",
    "LossTerms",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDataError",
    "TrainingHooks",
    "load_dataset",
    "print_progress",
    "register_missing_gradients",
    "train",
]
