"""What ``CompiledModel.run`` says about input arrays of another shape or dtype."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import sparse_tvm as st
from sparse_tvm.cli.main import main
from sparse_tvm.errors import InputShapeError
from sparse_tvm.runtime import InputCastWarning, TensorSpec


def _relu(dims) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _add(dims) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "mask"], ["y"], name="add")],
        "add",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, dims),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, dims),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def fixed():
    """Relu on x (1, 3, 4, 4), every dim fixed by the model."""
    compiled = st.compile(_relu([1, 3, 4, 4]), target="x86")
    # which dims the ONNX model fixes: recorded here whether or not the driver passes it on
    spec = dataclasses.replace(compiled.inputs[0], dynamic_dims=(None,) * 4)
    return dataclasses.replace(compiled, inputs=[spec], _vm=None, _casts_said=set())


@pytest.fixture(scope="module")
def pair():
    """x + mask, both (batch, seq) in the model, compiled at (1, 4)."""
    compiled = st.compile(
        _add(["batch", "seq"]), target="x86", input_shapes={"x": (1, 4), "mask": (1, 4)}
    )
    specs = [dataclasses.replace(s, dynamic_dims=("batch", "seq")) for s in compiled.inputs]
    return dataclasses.replace(compiled, inputs=specs, _vm=None, _casts_said=set())


def _message(compiled, inputs) -> str:
    with pytest.raises(InputShapeError) as info:
        compiled.run(inputs)
    return str(info.value)


def test_missing_batch_axis_says_add_it_in_every_call_form(fixed):
    image = np.linspace(-1, 1, 48, dtype=np.float32).reshape(3, 4, 4)
    expected = (
        "input 'x' has shape (3, 4, 4) but the model takes (1, 3, 4, 4): "
        "add the batch axis (x[None])"
    )
    assert _message(fixed, image) == expected  # a bare array
    assert _message(fixed, [image]) == expected
    assert _message(fixed, {"x": image}) == expected
    (out,) = fixed.run(image[None])  # the advice works
    np.testing.assert_array_equal(out, np.maximum(image[None], 0))


@pytest.mark.parametrize(
    ("shape", "advice"),
    [
        ((1, 1, 3, 4, 4), "drop the extra leading size-1 axis (x[0])"),
        ((1, 1, 1, 3, 4, 4), "drop the 2 extra leading size-1 axes (x[0, 0])"),
        ((4, 4), "give an array of that shape"),
        ((1, 4, 4, 3), "transpose the axes to the model's order (x.transpose(0, 3, 1, 2))"),
        (
            (4, 4, 3),
            "add the batch axis and transpose the axes to the model's order "
            "(x[None].transpose(0, 3, 1, 2))",
        ),
        ((2, 3, 4, 4), "the model fixes axis 0 at 1; give an array of shape (1, 3, 4, 4)"),
        ((1, 3, 8, 8), "the model fixes axes 2, 3 at 4, 4; give an array of shape (1, 3, 4, 4)"),
    ],
)
def test_shape_advice_for_a_fixed_model(fixed, shape, advice):
    head = f"input 'x' has shape {shape} but the model takes (1, 3, 4, 4): "
    assert _message(fixed, np.zeros(shape, np.float32)) == head + advice


def test_two_missing_leading_axes():
    spec = TensorSpec("x", (1, 1, 8), "float32", (None, None, None))
    model = st.CompiledModel(executable=None, inputs=[spec], outputs=[], report=None)
    with pytest.raises(InputShapeError) as info:
        model._arguments(np.zeros(8, np.float32))
    assert str(info.value) == (
        "input 'x' has shape (8,) but the model takes (1, 1, 8): "
        "add 2 leading size-1 axes (x[None, None])"
    )


def test_input_shapes_advice_only_for_a_dynamic_axis(fixed):
    dynamic = dataclasses.replace(
        fixed, inputs=[dataclasses.replace(fixed.inputs[0], dynamic_dims=("N", None, None, None))]
    )
    assert _message(dynamic, np.zeros((2, 3, 4, 4), np.float32)) == (
        "input 'x' has shape (2, 3, 4, 4) but the model was compiled for (1, 3, 4, 4) "
        "(axis 0 is dynamic in the ONNX model): recompile with --input-shapes x:2x3x4x4 "
        "(API: input_shapes={'x': (2, 3, 4, 4)})"
    )
    # a fixed axis among the changed ones: no recompiling helps
    assert _message(dynamic, np.zeros((2, 3, 8, 4), np.float32)) == (
        "input 'x' has shape (2, 3, 8, 4) but the model takes (1, 3, 4, 4): "
        "the model fixes axis 2 at 4; give an array of shape (1, 3, 4, 4)"
    )


def test_input_shapes_advice_keeps_shared_dims_consistent(pair):
    x = np.ones((1, 6), np.float32)
    advice = (
        "input 'x' has shape (1, 6) but the model was compiled for (1, 4) (axis 1 is dynamic "
        "in the ONNX model): recompile with --input-shapes x:1x6,mask:1x6 "
        "(API: input_shapes={'x': (1, 6), 'mask': (1, 6)})"
    )
    assert _message(pair, {"x": x, "mask": np.ones((1, 4), np.float32)}) == advice
    assert _message(pair, [x, np.ones((1, 6), np.float32)]) == advice
    assert _message(pair, {"x": np.ones((3, 1), np.float32), "mask": np.ones((3, 1))}) == (
        "input 'x' has shape (3, 1) but the model was compiled for (1, 4) (axes 0, 1 are "
        "dynamic in the ONNX model): recompile with --input-shapes x:3x1,mask:3x1 "
        "(API: input_shapes={'x': (3, 1), 'mask': (3, 1)})"
    )
    assert _message(pair, x) == (
        "the model takes 2 inputs (x, mask), got one array: pass a dict by name or a list in "
        "that order"
    )


def test_unknown_dynamic_dims_give_conditional_advice(fixed):
    # an artefact written before the dynamic dims were recorded
    old = dataclasses.replace(
        fixed, inputs=[dataclasses.replace(fixed.inputs[0], dynamic_dims=None)]
    )
    assert _message(old, np.zeros((2, 3, 4, 4), np.float32)) == (
        "input 'x' has shape (2, 3, 4, 4) but the model takes (1, 3, 4, 4): give an array of "
        "that shape (or, if the ONNX model leaves these axes dynamic, recompile with "
        "--input-shapes x:2x3x4x4)"
    )
    assert _message(old, np.zeros((3, 4, 4), np.float32)).endswith("add the batch axis (x[None])")


def test_dynamic_dims_survive_export_and_load(fixed, tmp_path):
    fixed.export(tmp_path / "relu.tar")
    assert st.load(tmp_path / "relu.tar").inputs == [
        TensorSpec("x", (1, 3, 4, 4), "float32", (None, None, None, None))
    ]
    assert TensorSpec.from_dict({"name": "x", "shape": [2], "dtype": "int64"}) == TensorSpec(
        "x", (2,), "int64", None
    )
    assert TensorSpec("x", (2,), "int64").to_dict() == {
        "name": "x",
        "shape": [2],
        "dtype": "int64",
    }
    assert TensorSpec("x", (2, 3), "float32", ("batch", None)).to_dict()["dynamic_dims"] == [
        "batch",
        None,
    ]


def test_compile_records_the_dynamic_dims():
    compiled = st.compile(_relu(["N", 3, 4, 4]), target="x86", input_shapes={"x": (1, 3, 4, 4)})
    assert compiled.inputs[0].dynamic_dims == ("N", None, None, None)
    assert _message(compiled, np.zeros((2, 3, 4, 4), np.float32)).endswith(
        "recompile with --input-shapes x:2x3x4x4 (API: input_shapes={'x': (2, 3, 4, 4)})"
    )


CAST_WARNING = (
    "input 'x' is float64 and the model takes float32: cast it (values may lose precision); "
    "pass float32 arrays to avoid the copy and this warning"
)


def test_float64_is_cast_with_one_warning_per_model(fixed):
    model = dataclasses.replace(fixed, _vm=None, _casts_said=set())
    image = np.linspace(-1, 1, 48).reshape(1, 3, 4, 4)  # float64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # count every warning the code emits
        (out,) = model.run(image)
        model.run({"x": image})
        model.benchmark([image], repeat=2, warmup=0)
        model.run(image.astype(np.float32))
        model.run(image.astype(np.float16))  # float16 -> float32 loses nothing: no warning
    assert [(w.category, str(w.message)) for w in caught] == [(InputCastWarning, CAST_WARNING)]
    assert caught[0].filename == __file__  # points at the caller's line
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.maximum(image.astype(np.float32), 0))
    other = dataclasses.replace(fixed, _vm=None, _casts_said=set())
    with pytest.warns(InputCastWarning) as again:  # another CompiledModel says it again
        other.run(image)
    assert [str(w.message) for w in again] == [CAST_WARNING]


def test_a_complex_array_for_a_float_input_is_refused(fixed):
    assert _message(fixed, np.zeros((1, 3, 4, 4), np.complex64)) == (
        "input 'x' has dtype complex64, the model takes float32: pass a float32 array"
    )


def test_cli_run_says_add_the_batch_axis_and_warns_once(fixed, tmp_path, capsys):
    fixed.export(tmp_path / "relu.tar")
    np.savez(tmp_path / "bad.npz", x=np.ones((3, 4, 4), np.float32))
    code = main(["run", str(tmp_path / "relu.tar"), "--inputs", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err
    assert code == 4  # InputShapeError
    assert err == (
        "error: input 'x' has shape (3, 4, 4) but the model takes (1, 3, 4, 4): "
        "add the batch axis (x[None])\n"
    )
    np.savez(tmp_path / "f64.npz", x=np.ones((1, 3, 4, 4)))
    args = ["run", str(tmp_path / "relu.tar"), "--inputs", str(tmp_path / "f64.npz")]
    shown = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main([*args, "--repeat", "3"]) == 0  # run, then benchmark: one warning
    out, err = capsys.readouterr()
    # the CLI says it in one line of its own, not Python's file:line form
    assert err == f"warning: {CAST_WARNING}\n"
    assert "y: shape [1, 3, 4, 4] float32  mean 1  max 1" in out
    assert warnings.showwarning is shown  # the process's warning display is back


def test_two_inputs_cast_in_one_call_are_one_warning(pair):
    model = dataclasses.replace(pair, _vm=None, _casts_said=set())
    x, mask = np.full((1, 4), 0.5), np.arange(4, dtype=np.int64).reshape(1, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (out,) = model.run({"x": x, "mask": mask})
        model.run([x, mask])
    assert [str(w.message) for w in caught] == [
        "input 'x' is float64 and the model takes float32; input 'mask' is int64 and the "
        "model takes float32: cast them (values may lose precision); pass arrays of the "
        "model's dtypes to avoid the copy and this warning"
    ]
    np.testing.assert_array_equal(out, np.array([[0.5, 1.5, 2.5, 3.5]], np.float32))
