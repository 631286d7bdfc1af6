"""Pruning in the user's own PyTorch training loop (``pip install sparse-tvm[torch]``).

:class:`Sparsifier` prunes a ``torch.nn.Module``'s ``nn.Linear``, ``nn.Conv2d`` and attention
weights with ``st.prune``'s methods, patterns and schedules, in torch.ao.pruning's lifecycle
(``step()`` after each optimizer step, ``squash()`` at the end); the model then exports to
ONNX with exact zeros, and ``sparse-tvm compile`` finds them.
"""

try:
    import torch  # noqa: F401
except ImportError as err:  # pragma: no cover - the extra is not installed
    raise ImportError("sparse_tvm.torch needs PyTorch: pip install 'sparse-tvm[torch]'") from err

from sparse_tvm.torch.layers import TorchWeight, prunable_parameters
from sparse_tvm.torch.sparsifier import Sparsifier

__all__ = ["Sparsifier", "TorchWeight", "prunable_parameters"]
