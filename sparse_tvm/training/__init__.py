"""Training in TVM: ONNX model -> Relax forward + loss -> ``relax.transform.Gradient`` ->
TVM's optimizers, compiled once and run over mini-batches.

``train`` fits a dense model; the pruning drivers (:mod:`sparse_tvm.pruning.fine_tune`) use
the same :class:`Trainer` with masks and L0 gates.
"""

from sparse_tvm.training.data import Dataset, TrainingDataError, load_dataset
from sparse_tvm.training.gradients import register_missing_gradients
from sparse_tvm.training.train import TrainResult, train
from sparse_tvm.training.trainer import EpochLog, TrainConfig, Trainer, print_progress

__all__ = [
    "Dataset",
    "EpochLog",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDataError",
    "load_dataset",
    "print_progress",
    "register_missing_gradients",
    "train",
]
