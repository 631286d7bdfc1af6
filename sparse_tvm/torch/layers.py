"""The weights of a PyTorch model that sparse-tvm prunes, and how each maps to the (n, k) view.

``nn.Linear`` (``weight``: ``(out, in)``, the (n, k) view itself), ``nn.Conv2d`` (``(out,
in / groups, kh, kw)``: the view is ``(out, in / groups * kh * kw)``, as an ONNX Conv's) and
``nn.MultiheadAttention``'s input projections (``in_proj_weight``, ``(3 E, E)``, or
``q/k/v_proj_weight``; its ``out_proj`` is an ``nn.Linear``), so the linear layers inside
``nn.TransformerEncoderLayer`` too. Each is described by the ONNX side's
:class:`~sparse_tvm.frontend.initializers.PrunableWeight` (its ``name`` the parameter's
qualified name), so the numpy sparsifiers of :mod:`sparse_tvm.pruning` compute the masks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from sparse_tvm.errors import UsageError
from sparse_tvm.frontend.initializers import PrunableWeight

__all__ = ["TorchWeight", "prunable_parameters"]

_ATTENTION_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


@dataclass(frozen=True)
class TorchWeight:
    """A prunable parameter: ``module.<attr>``, named ``name`` in ``model.named_parameters()``."""

    name: str
    module: nn.Module
    attr: str
    spec: PrunableWeight  # the (n, k) view, for the numpy sparsifiers

    @property
    def parameter(self) -> torch.Tensor:
        """The parameter itself (under a parametrization: the original, unmasked)."""
        parametrizations = getattr(self.module, "parametrizations", None)
        if parametrizations is not None and self.attr in parametrizations:
            return parametrizations[self.attr].original
        return getattr(self.module, self.attr)


def _weights_of(prefix: str, module: nn.Module) -> list[tuple[str, str]]:
    """``(attr, op)`` of the prunable weights ``module`` owns itself."""
    if isinstance(module, nn.Linear):
        return [("weight", "Gemm")]
    if isinstance(module, nn.Conv2d):
        return [("weight", "Conv")]
    if isinstance(module, nn.MultiheadAttention):
        return [(a, "Gemm") for a in _ATTENTION_WEIGHTS if getattr(module, a, None) is not None]
    return []


def prunable_parameters(model: nn.Module, exclude: Iterable[str] = ()) -> list[TorchWeight]:
    """The prunable weights of ``model`` in module order, less those named in ``exclude`` (a
    parameter's qualified name, e.g. ``"fc.weight"``, or its module's, ``"fc"``); a
    :class:`UsageError` for a name that is neither, or a model with nothing to prune."""
    found = []
    for prefix, module in model.named_modules():
        for attr, op in _weights_of(prefix, module):
            name = f"{prefix}.{attr}" if prefix else attr
            found.append(TorchWeight(name, module, attr, PrunableWeight(name, prefix, op, False)))
    if not found:
        raise UsageError(
            f"{type(model).__name__} has no nn.Linear, nn.Conv2d or nn.MultiheadAttention "
            "weight to prune"
        )
    excluded = set(exclude)
    known = {w.name for w in found} | {w.spec.node for w in found}
    unknown = sorted(excluded - known)
    if unknown:
        raise UsageError(
            f"exclude names {', '.join(unknown)}, which is no prunable weight or module; the "
            f"prunable weights are {', '.join(w.name for w in found)}"
        )
    chosen = [w for w in found if w.name not in excluded and w.spec.node not in excluded]
    if not chosen:
        raise UsageError("exclude leaves no weight to prune")
    return chosen
