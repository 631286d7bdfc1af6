"""Which layout a CNN runs in on a CPU: channels-last, or channels-first when its convs go sparse.

Dense convs are fastest channels-last (:mod:`sparse_tvm.transform.channels_last`), but a sparse
conv is fastest channels-first: the column-vector SpMM vectorises along the pixels of one
channel, which NCHW stores contiguously, while in NHWC it has to transpose its input and its
output (a 3136 x 256 float32 activation: 160 us each way on a 2-core Xeon, 3-5x the SpMM's own
time). XNNPACK's sparse inference runs its sparse CNNs in NCHW for the same reason.

Depthwise convs run channels-first on their own kernel
(:mod:`sparse_tvm.transform.depthwise_nchw`): MobileNet-v1's nine depthwise shapes take 1.0 ms
there on 2 Xeon threads, against 2.4 ms channels-last and 4.8 ms on TVM's generic NCHW schedule
(``benchmarks/conv_layouts.py``), so they no longer keep a sparse MobileNet channels-last.

So a model runs channels-first when its only grouped convs are depthwise convs that kernel
runs, and the format cost model expects every other conv that carries real work to be at least
:data:`MIN_SPEEDUP` faster sparse: a groups=1 conv left dense runs far slower in NCHW (4-10x,
see ``benchmarks/conv_layouts.py``). The choice is made on the weights alone, before the
per-layer decision; the compiler goes back to channels-last when the decision keeps such a conv
dense (:func:`dense_convs_with_work`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sparse_tvm.analysis import analyse
from sparse_tvm.analysis.format_choice import choose_format

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sparse_tvm.analysis.layers import Layer
    from sparse_tvm.frontend import ImportedModel

__all__ = [
    "MIN_SPEEDUP",
    "WORK_SHARE",
    "dense_convs_with_work",
    "runs_depthwise_nchw",
    "sparse_layout_pays",
]

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


def runs_depthwise_nchw(layer: Layer) -> bool:
    """Whether ``layer`` is an NCHW depthwise conv that the channels-first depthwise kernel runs
    (one filter per channel, one image, no dilation, equal strides, float32): what
    :func:`sparse_tvm.transform.depthwise_nchw.depthwise_geometry` accepts."""
    conv = layer.conv
    return (
        conv is not None
        and conv.is_depthwise
        and conv.layout == "NCHW"
        and tuple(layer.weight_shape[:2]) == (conv.groups, 1)
        and conv.input_shape[0] == 1
        and conv.dilation == (1, 1)
        and conv.strides[0] == conv.strides[1]
        and layer.weight.dtype == np.float32
    )


def _weighty_convs(layers: Iterable[Layer]) -> list[Layer]:
    """The convs other than depthwise ones, each with at least :data:`WORK_SHARE` of their work."""
    convs = [c for c in _convs(layers) if not runs_depthwise_nchw(c)]
    total = sum(_work(c) for c in convs)
    return [c for c in convs if _work(c) >= WORK_SHARE * total]


def sparse_layout_pays(imported: ImportedModel) -> bool:
    """Whether the (NCHW) CNN ``imported`` should run channels-first: every grouped conv is a
    depthwise conv :func:`runs_depthwise_nchw`, and every other conv with at least
    :data:`WORK_SHARE` of their work is estimated :data:`MIN_SPEEDUP` faster sparse by the
    format cost model."""
    convs = _convs(analyse(imported))
    others = [c for c in convs if not runs_depthwise_nchw(c)]
    if not others or any(c.conv.groups != 1 or c.conv.layout != "NCHW" for c in others):
        return False
    for conv in _weighty_convs(others):
        if conv.dense_reason:
            return False
        choice = choose_format(conv.weight, conv.m)
        if choice.block is None or choice.estimated_speedup < MIN_SPEEDUP:
            return False
    return True


def dense_convs_with_work(layers: Iterable[Layer], sparse_names: set[str]) -> list[str]:
    """The convs among ``layers`` (depthwise ones aside) with at least :data:`WORK_SHARE` of
    their work that are not in ``sparse_names`` (the layers decided sparse): in a channels-first
    model, each is a reason to go back to channels-last."""
    return [c.name for c in _weighty_convs(layers) if c.name not in sparse_names]
