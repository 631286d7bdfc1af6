"""Example models built in code: the bundled demo and the test suite use them, no download."""

from sparse_tvm.examples.models import (
    bert_block,
    mlp,
    mobilenet,
    mobilenet_v2,
    resnet50,
    small_cnn,
)

__all__ = ["bert_block", "mlp", "mobilenet", "mobilenet_v2", "resnet50", "small_cnn"]
