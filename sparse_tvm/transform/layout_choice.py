"""Which layout a CNN runs in on a CPU: channels-last, or channels-first when its convs go sparse.

Dense convs are fastest channels-last (:mod:`sparse_tvm.transform.channels_last`), but a sparse
conv is fastest channels-first: the column-vector SpMM vectorises along the pixels of one
channel, which NCHW stores contiguously, while in NHWC it has to transpose its input and its
output (a 3136 x 256 float32 activation: 160 us each way on a 2-core Xeon, 3-5x the SpMM's own
time). XNNPACK's sparse inference runs its sparse CNNs in NCHW for the same reason.

Measured (90 % 4x1 blocks on every conv, 2 threads, Xeon with AVX-512, ``time_evaluator``):

=============  ==============  ==============
model          channels-last   channels-first
=============  ==============  ==============
ResNet-50      20.2 ms         15.3 ms
MobileNet-v1   3.5 ms          7.8 ms (depthwise convs: 6.3 ms in NCHW, 1.3 ms in NHWC)
=============  ==============  ==============

So a model runs channels-first when it has no grouped conv (the depthwise convs' NCHW schedule
is slow) and the format cost model expects every conv that carries real work to be at least
:data:`MIN_SPEEDUP` faster sparse: a conv left dense runs far slower in NCHW (4-10x, see
``benchmarks/conv_layouts.py``). The choice is made on the weights alone, before the per-layer
decision; the compiler goes back to channels-last when the decision keeps such a conv dense
(:func:`dense_convs_with_work`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sparse_tvm.analysis import analyse
from sparse_tvm.analysis.format_choice import choose_format

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sparse_tvm.analysis.layers import Layer
    from sparse_tvm.frontend import ImportedModel

__all__ = ["MIN_SPEEDUP", "WORK_SHARE", "dense_convs_with_work", "sparse_layout_pays"]

# The cost model's estimate a conv needs for the model to go channels-first: 4x1 blocks at
# ~88 % zeros and more (the cost model is calibrated channels-last; this leaves it room).
MIN_SPEEDUP = 3.0
# Convs with less than this share of the model's conv work (n * k * m) do not count (a
# 3-channel stem conv may stay dense: it is cheap in either layout).
WORK_SHARE = 0.02


def _work(layer: Layer) -> int:
    n, k = layer.shape
    return n * k * layer.m * layer.batch


def _convs(layers: Iterable[Layer]) -> list[Layer]:
    return [layer for layer in layers if layer.op == "conv2d" and layer.conv is not None]


def sparse_layout_pays(imported: ImportedModel) -> bool:
    """Whether the (NCHW) CNN ``imported`` should run channels-first: no grouped conv, and every
    conv with at least :data:`WORK_SHARE` of the work estimated :data:`MIN_SPEEDUP` faster
    sparse by the format cost model."""
    convs = _convs(analyse(imported))
    if not convs or any(c.conv.groups != 1 or c.conv.layout != "NCHW" for c in convs):
        return False
    total = sum(_work(c) for c in convs)
    for conv in convs:
        if _work(conv) < WORK_SHARE * total:
            continue
        if conv.dense_reason:
            return False
        choice = choose_format(conv.weight, conv.m)
        if choice.block is None or choice.estimated_speedup < MIN_SPEEDUP:
            return False
    return True


def dense_convs_with_work(layers: Iterable[Layer], sparse_names: set[str]) -> list[str]:
    """The convs among ``layers`` with at least :data:`WORK_SHARE` of the conv work that are
    not in ``sparse_names`` (the layers decided sparse): in a channels-first model, each is a
    reason to go back to channels-last."""
    convs = _convs(layers)
    total = sum(_work(c) for c in convs)
    return [c.name for c in convs if _work(c) >= WORK_SHARE * total and c.name not in sparse_names]
