"""Model input shapes: parse ``--input-shapes`` text, list real inputs, make every dim static."""

from __future__ import annotations

import re

import numpy as np
import onnx
from onnx import helper

from sparse_tvm.errors import InputShapeError

_FORM = "name:1x128,mask:1x128 (or name:[1,128])"
# the name may itself hold ':' (e.g. 'onnx::x'); backtracking finds the last ':' before a shape
_ITEM = re.compile(
    r"\s*(?P<name>[^,\[\]]+?)\s*:\s*(?P<shape>\[[\d\s,]*\]|\d+(?:\s*[xX]\s*\d+)*)\s*(?:,|$)"
)

Dim = int | str | None


def parse_input_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """Parse the CLI form ``"name:1x128,mask:1x128"`` (also ``"name:[1,128]"``).

    ``name:[]`` is a scalar. Raises :class:`InputShapeError` on malformed text, repeated
    names or non-positive dimensions.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    pos, text = 0, text.strip()
    if not text:
        raise InputShapeError(f"no input shapes given: use the form {_FORM}")
    while pos < len(text):
        match = _ITEM.match(text, pos)
        if match is None or match.end() == pos:
            raise InputShapeError(
                f"cannot read input shapes '{text}' at '{text[pos:]}': use the form {_FORM}"
            )
        name, shape_text = match["name"], match["shape"]
        if shape_text.startswith("["):
            parts = [p.strip() for p in shape_text[1:-1].split(",")]
            parts = [] if parts == [""] else parts
        else:
            parts = re.split(r"\s*[xX]\s*", shape_text)
        if any(not p.isdigit() for p in parts):
            raise InputShapeError(
                f"cannot read the shape '{shape_text}' of input '{name}': use the form {_FORM}"
            )
        shape = tuple(int(p) for p in parts)
        if any(d <= 0 for d in shape):
            raise InputShapeError(
                f"input '{name}' has a non-positive dimension in {shape_text}: "
                "give dimensions of at least 1"
            )
        if name in shapes:
            raise InputShapeError(f"input '{name}' is given twice in '{text}': give it once")
        shapes[name] = shape
        pos = match.end()
    if text.endswith(","):
        raise InputShapeError(f"input shapes '{text}' end with a comma: use the form {_FORM}")
    return shapes


def _dims(value: onnx.ValueInfoProto) -> tuple[Dim, ...] | None:
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None  # unknown rank
    dims: list[Dim] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def graph_inputs(model: onnx.ModelProto) -> list[tuple[str, tuple[Dim, ...] | None, np.dtype]]:
    """The model's real inputs (graph inputs that are not initializers), in graph order.

    Each entry is ``(name, dims, dtype)``; a dim is an ``int``, a ``str`` (a symbolic
    ``dim_param``) or ``None`` (unknown). ``dims`` is ``None`` when the rank is unknown.
    """
    initializers = {t.name for t in model.graph.initializer}
    result = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        elem_type = value.type.tensor_type.elem_type
        if not value.type.HasField("tensor_type") or elem_type == onnx.TensorProto.UNDEFINED:
            raise InputShapeError(
                f"input '{value.name}' is not a tensor with a known element type: "
                "sparse-tvm only compiles models whose inputs are typed tensors"
            )
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
        result.append((value.name, _dims(value), dtype))
    return result


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) if shape else "[]"


def _example_size(dim: Dim, axis: int) -> int:
    # only a hint in the error message; the user picks the real sizes
    return 1 if axis == 0 or "batch" in str(dim).lower() else 128


def _dim_label(dim: Dim, axis: int) -> str:
    return dim if isinstance(dim, str) else f"axis {axis}"


def _check_fixed_axes(name: str, dims: tuple[Dim, ...], shape: tuple[int, ...]) -> None:
    """An override may set the dynamic axes only: a fixed axis keeps the model's size."""
    clashes = [
        (axis, d, s)
        for axis, (d, s) in enumerate(zip(dims, shape))
        if isinstance(d, int) and d != s
    ]
    if not clashes:
        return
    axes = ", ".join(str(axis) for axis, _, _ in clashes)
    given = ", ".join(str(s) for _, _, s in clashes)
    fixed = ", ".join(str(d) for _, d, _ in clashes)
    what = f"axis {axes}" if len(clashes) == 1 else f"axes {axes}"
    pronoun = "it" if len(clashes) == 1 else "them"
    raise InputShapeError(
        f"--input-shapes {name}:{_shape_text(shape)} sets {what} of '{name}' to {given}, "
        f"but the model fixes {pronoun} at {fixed}: only dynamic axes (names or -1/?) can be set"
    )


def dynamic_dims(dims: tuple[Dim, ...] | None, rank: int) -> tuple[str | None, ...]:
    """Per axis, the name of a dynamic dimension (``"?"`` when unnamed), ``None`` for a fixed one.

    ``dims`` are the declared dims (:func:`graph_inputs`); ``None`` (unknown rank) makes all
    ``rank`` axes dynamic.
    """
    if dims is None:
        return ("?",) * rank
    return tuple(None if isinstance(d, int) else (d or "?") for d in dims)


def fix_input_shapes(
    model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> onnx.ModelProto:
    """Return a copy of ``model`` whose real inputs all have static shapes.

    Parameters
    ----------
    model
        The ONNX model; it is not modified.
    input_shapes
        Shapes for the inputs with dynamic dimensions, by input name. Only the dynamic
        dimensions may differ from the declared ones: a fixed dimension is the model's.

    Raises
    ------
    InputShapeError
        An override names no real input, has the wrong rank or a non-positive dim, changes a
        dimension the model fixes, or an input keeps a dynamic dimension after the overrides.
    """
    overrides = {name: tuple(int(d) for d in shape) for name, shape in (input_shapes or {}).items()}
    inputs = graph_inputs(model)
    names = [name for name, _, _ in inputs]
    unknown = [name for name in overrides if name not in names]
    if unknown:
        raise InputShapeError(
            f"unknown input name(s) {', '.join(repr(n) for n in unknown)} in the input shapes: "
            f"the model's inputs are {', '.join(repr(n) for n in names)}"
        )

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dynamic: list[str] = []
    examples: dict[str, tuple[int, ...]] = {}
    for value in fixed.graph.input:
        if value.name not in names:
            continue
        dims = _dims(value)
        if value.name in overrides:
            shape = overrides[value.name]
            if dims is not None and len(dims) != len(shape):
                raise InputShapeError(
                    f"input '{value.name}' has rank {len(dims)} (dims {list(dims)}) but the "
                    f"given shape {_shape_text(shape)} has rank {len(shape)}: "
                    f"give {len(dims)} dimensions"
                )
            if any(d <= 0 for d in shape):
                raise InputShapeError(
                    f"input '{value.name}' got the shape {shape}: give dimensions of at least 1"
                )
            if dims is not None:
                _check_fixed_axes(value.name, dims, shape)
        elif dims is None:
            dynamic.append(f"input '{value.name}' has an unknown rank")
            continue
        else:
            free = [_dim_label(d, axis) for axis, d in enumerate(dims) if not isinstance(d, int)]
            if free:
                dynamic.append(f"input '{value.name}' has dynamic dimensions [{', '.join(free)}]")
                examples[value.name] = tuple(
                    d if isinstance(d, int) else _example_size(d, axis)
                    for axis, d in enumerate(dims)
                )
            continue
        tensor_shape = value.type.tensor_type.shape
        tensor_shape.ClearField("dim")
        for d in shape:
            tensor_shape.dim.add().dim_value = d

    if dynamic:
        cli = ",".join(f"{n}:{_shape_text(s)}" for n, s in examples.items()) or "NAME:DIMS"
        api = ", ".join(f"'{n}': {s}" for n, s in examples.items()) or "'NAME': (...)"
        raise InputShapeError(
            f"{'; '.join(dynamic)}: give static shapes with --input-shapes {cli} "
            f"(API: input_shapes={{{api}}})"
        )
    # shapes recorded for the old symbolic dims would now contradict the inputs
    del fixed.graph.value_info[:]
    for value in fixed.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param"):
                dim.ClearField("dim_param")
    return fixed
