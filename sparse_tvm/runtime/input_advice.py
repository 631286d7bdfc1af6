"""The one-line message for an input array whose shape is not the compiled one: what to do
with the array (add the batch axis, transpose), or how to recompile (``--input-shapes``) where
the ONNX model left those axes dynamic."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sparse_tvm.runtime.tensor_spec import TensorSpec


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(int(d) for d in shape))


def _cli_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if shape else "[]"


def _strip_ones(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def _permutation(given: tuple[int, ...], wanted: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of ``given`` in the order that makes ``wanted`` (same sizes, first match)."""
    free = list(range(len(given)))
    order = []
    for size in wanted:
        axis = next(a for a in free if given[a] == size)
        free.remove(axis)
        order.append(axis)
    return tuple(order)


def _differs_on_dynamic_axes_only(spec: TensorSpec, given: tuple[int, ...]) -> bool:
    dynamic = spec.dynamic_dims
    return (
        dynamic is not None
        and len(given) == len(spec.shape)
        and given != spec.shape
        and all(g == w or d is not None for g, w, d in zip(given, spec.shape, dynamic))
    )


def _recompile_shapes(
    spec: TensorSpec, given: tuple[int, ...], specs: Sequence[TensorSpec], arrays: Sequence
) -> str:
    """``--input-shapes`` text for every input with dynamic dims, ``spec`` at ``given``: the
    other inputs keep their sizes, except named dims (``seq``) that ``given`` changes."""
    named = {
        d: size
        for d, size, old in zip(spec.dynamic_dims or (), given, spec.shape)
        if d not in (None, "?") and size != old
    }
    items = []
    for other, array in zip(specs, arrays):
        if not other.dynamic_dims or all(d is None for d in other.dynamic_dims):
            continue
        if other is spec:
            shape = given
        elif _differs_on_dynamic_axes_only(other, tuple(np.shape(array))):
            shape = tuple(np.shape(array))
        else:
            shape = tuple(
                named.get(d, size) if d is not None else size
                for d, size in zip(other.dynamic_dims, other.shape)
            )
        items.append((other.name, shape))
    cli = ",".join(f"{name}:{_cli_shape(shape)}" for name, shape in items)
    api = ", ".join(f"{name!r}: {_shape(shape)}" for name, shape in items)
    return f"--input-shapes {cli} (API: input_shapes={{{api}}})"


def shape_advice(
    spec: TensorSpec, given: Sequence[int], specs: Sequence[TensorSpec], arrays: Sequence
) -> str:
    """The one-line message for an input array whose shape is not the compiled one."""
    given, wanted = tuple(int(d) for d in given), spec.shape
    head = f"input '{spec.name}' has shape {_shape(given)} but the model takes {_shape(wanted)}"
    var = spec.name if spec.name.isidentifier() else "x"
    if len(given) != len(wanted):
        if _strip_ones(given) == _strip_ones(wanted):
            extra = len(given) - len(wanted)
            if extra == -1:
                return f"{head}: add the batch axis ({var}[None])"
            if extra < 0:
                index = ", ".join(["None"] * -extra)
                return f"{head}: add {-extra} leading size-1 axes ({var}[{index}])"
            index = ", ".join(["0"] * extra)
            axes = (
                "the extra leading size-1 axis"
                if extra == 1
                else f"the {extra} extra leading size-1 axes"
            )
            return f"{head}: drop {axes} ({var}[{index}])"
        missing = len(wanted) - len(given)
        padded = (1,) * missing + given
        if missing > 0 and sorted(padded) == sorted(wanted):  # e.g. HWC for (1, C, H, W)
            order = ", ".join(map(str, _permutation(padded, wanted)))
            index = ", ".join(["None"] * missing)
            axes = "the batch axis" if missing == 1 else f"{missing} leading size-1 axes"
            return (
                f"{head}: add {axes} and transpose the axes to the model's order "
                f"({var}[{index}].transpose({order}))"
            )
        return f"{head}: give an array of that shape"
    differ = [axis for axis in range(len(given)) if given[axis] != wanted[axis]]
    dynamic = spec.dynamic_dims
    if _differs_on_dynamic_axes_only(spec, given):
        axes = ", ".join(str(axis) for axis in differ)
        which = f"axis {axes} is" if len(differ) == 1 else f"axes {axes} are"
        return (
            f"input '{spec.name}' has shape {_shape(given)} but the model was compiled for "
            f"{_shape(wanted)} ({which} dynamic in the ONNX model): recompile with "
            + _recompile_shapes(spec, given, specs, arrays)
        )
    if sorted(given) == sorted(wanted):
        order = ", ".join(map(str, _permutation(given, wanted)))
        return f"{head}: transpose the axes to the model's order ({var}.transpose({order}))"
    if dynamic is None:  # an artefact that does not record which dims were dynamic
        return (
            f"{head}: give an array of that shape (or, if the ONNX model leaves these axes "
            f"dynamic, recompile with --input-shapes {spec.name}:{_cli_shape(given)})"
        )
    fixed = [axis for axis in differ if dynamic[axis] is None]
    sizes = ", ".join(str(wanted[axis]) for axis in fixed)
    axes = ", ".join(map(str, fixed))
    which = f"axis {axes}" if len(fixed) == 1 else f"axes {axes}"
    return f"{head}: the model fixes {which} at {sizes}; give an array of shape {_shape(wanted)}"
