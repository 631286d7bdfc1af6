"""What a pruned weight's forward sees: ``weight * mask`` [* the L0 gates' ``z``].

:class:`MaskedWeight` is a ``torch.nn.utils.parametrize`` parametrization (as torch.ao's
``FakeSparsity``): the module's parameter stays the dense original, its forward reads the
masked weight, and gradients reach the original through the mask. With L0 gates attached
(:meth:`MaskedWeight.gate`) it multiplies in one hard-concrete gate per block of the (n, k)
view: sampled while the module trains, the deterministic test-time gate in eval mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparse_tvm.pruning.gates import BETA, GAMMA, ZETA

__all__ = ["MaskedWeight", "expected_density"]


class MaskedWeight(nn.Module):
    """``weight * mask`` (``mask`` a buffer in the weight's layout) [* gates]."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight))
        self.log_alpha: torch.Tensor | None = None  # gates per block; not a module parameter
        self.block: tuple[int, int] = (1, 1)

    def gate(self, log_alpha: torch.Tensor | None, block: tuple[int, int] = (1, 1)) -> None:
        """Attach gates (``log_alpha`` per (r, c) block of the (n, k) view), or drop them."""
        self.log_alpha, self.block = log_alpha, block

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        out = weight * self.mask
        if self.log_alpha is None:
            return out
        la = self.log_alpha
        if self.training:
            u = torch.rand_like(la).clamp(1e-6, 1.0 - 1e-6)
            s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + la) / BETA)
        else:
            s = torch.sigmoid(la)
        z = (s * (ZETA - GAMMA) + GAMMA).clamp(0.0, 1.0)
        n = weight.shape[0]
        k = weight[0].numel()
        r, c = self.block
        nk = z.repeat_interleave(r, 0)[:n].repeat_interleave(c, 1)[:, :k]
        return out * nk.reshape(weight.shape).to(weight.dtype)


def expected_density(log_alpha: torch.Tensor, block_sizes: torch.Tensor, size: int) -> torch.Tensor:
    """``E[L0] / size``: the expected share of nonzero weights under the gates (Louizos et al.,
    eq. 12, each gate counted for the weights of its block)."""
    p = torch.sigmoid(log_alpha - BETA * math.log(-GAMMA / ZETA))
    return (p * block_sizes).sum() / size
