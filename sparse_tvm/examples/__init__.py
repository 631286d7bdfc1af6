"""Example models built in code: the bundled demo and the test suite use them, no download."""

from sparse_tvm.examples.models import bert_block, mlp, mobilenet, small_cnn

__all__ = ["bert_block", "mlp", "mobilenet", "small_cnn"]
