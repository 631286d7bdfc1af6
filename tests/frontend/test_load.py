"""load_onnx, parse_input_shapes, fix_input_shapes and import_onnx on the example models."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from sparse_tvm.errors import InputShapeError, ModelLoadError, SparseTVMError
from sparse_tvm.examples import bert_block, mlp, small_cnn
from sparse_tvm.frontend import (
    fix_input_shapes,
    fold_constants,
    graph_inputs,
    import_onnx,
    load_onnx,
    parse_input_shapes,
)

from .helpers import random_feeds, run_onnxruntime, run_tvm

LAYER_OPS = ("MatMul", "Gemm", "Conv")


def _dynamic_mlp() -> onnx.ModelProto:
    model = mlp(batch=4, features=16, hidden=32)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param = "batch"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return model


# --- load_onnx ---------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "x.onnx"
    with pytest.raises(ModelLoadError) as info:
        load_onnx(path)
    assert str(info.value) == f"model file '{path}' not found: check the path"


def test_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory: give the path of the .onnx file"):
        load_onnx(tmp_path)


def test_text_file_named_onnx(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is not a model\nbut some notes\n")
    with pytest.raises(ModelLoadError) as info:
        load_onnx(str(path))
    message = str(info.value)
    assert message.startswith(f"model file '{path}' is not an ONNX model or is truncated")
    assert "\n" not in message


def test_truncated_file(tmp_path):
    data = mlp().SerializeToString()
    path = tmp_path / "half.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="is not an ONNX model or is truncated"):
        load_onnx(path)


def test_checker_failure(tmp_path):
    model = mlp()
    model.graph.node[0].input[0] = "nowhere"
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelLoadError, match=r"is not a valid ONNX model \(.*nowhere"):
        load_onnx(path)


def test_external_data_loads_relative_to_model(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(mlp(), folder / "m.onnx", save_as_external_data=True, location="m.data")
    monkeypatch.chdir(tmp_path)  # not the model's folder
    model = load_onnx("model/m.onnx")
    weight = next(t for t in model.graph.initializer if t.name == "fc1.weight")
    expected = next(t for t in mlp().graph.initializer if t.name == "fc1.weight")
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(weight), onnx.numpy_helper.to_array(expected)
    )
    (folder / "m.data").unlink()
    with pytest.raises(ModelLoadError, match="external data"):
        load_onnx("model/m.onnx")


def test_model_proto_passes_through():
    model = mlp()
    assert load_onnx(model) is model


# --- input shapes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("input_ids:1x128,mask:1x128", {"input_ids": (1, 128), "mask": (1, 128)}),
        ("x:[1,3,224,224]", {"x": (1, 3, 224, 224)}),
        (" a : [2, 3] , b:4 ", {"a": (2, 3), "b": (4,)}),
        ("onnx::x:2x3", {"onnx::x": (2, 3)}),
        ("scalar:[]", {"scalar": ()}),
    ],
)
def test_parse_input_shapes(text, expected):
    assert parse_input_shapes(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x", "cannot read input shapes 'x'"),
        ("x:1x", "cannot read input shapes 'x:1x'"),
        ("x:1xa", "cannot read input shapes"),
        ("x:[1,", "cannot read input shapes"),
        ("x:1x0", "non-positive dimension"),
        ("x:1,x:2", "given twice"),
        ("", "no input shapes given"),
    ],
)
def test_parse_input_shapes_rejects(text, fragment):
    with pytest.raises(InputShapeError) as info:
        parse_input_shapes(text)
    assert fragment in str(info.value)
    if "cannot read" in fragment or "no input" in fragment:
        assert "name:1x128,mask:1x128" in str(info.value)


def test_graph_inputs_skips_initializers():
    model = mlp(batch=2, features=8)
    # old exporters list the weights as graph inputs too
    model.graph.input.append(helper.make_tensor_value_info("fc1.weight", TensorProto.FLOAT, None))
    assert graph_inputs(model) == [("x", (2, 8), np.dtype("float32"))]


def test_dynamic_dim_message_names_dim_and_fix():
    with pytest.raises(InputShapeError) as info:
        fix_input_shapes(_dynamic_mlp(), None)
    assert str(info.value) == (
        "input 'x' has dynamic dimensions [batch]: give static shapes with "
        "--input-shapes x:1x16 (API: input_shapes={'x': (1, 16)})"
    )


def test_fix_input_shapes_applies_overrides():
    model = _dynamic_mlp()
    fixed = fix_input_shapes(model, {"x": (3, 16)})
    assert graph_inputs(fixed) == [("x", (3, 16), np.dtype("float32"))]
    assert graph_inputs(model)[0][1] == ("batch", 16)  # the original is untouched
    assert not any(d.dim_param for d in fixed.graph.output[0].type.tensor_type.shape.dim)


def test_fix_input_shapes_unknown_name_and_rank():
    with pytest.raises(InputShapeError, match=r"unknown input name\(s\) 'y'.*inputs are 'x'"):
        fix_input_shapes(_dynamic_mlp(), {"y": (1, 16)})
    with pytest.raises(InputShapeError, match="has rank 2 .* has rank 3: give 2 dimensions"):
        fix_input_shapes(_dynamic_mlp(), {"x": (1, 16, 1)})


def test_fix_input_shapes_refuses_to_change_a_fixed_axis():
    # small_cnn fixes (1, 3, 32, 32): onnxruntime would reject a 16x16 model after the change
    with pytest.raises(InputShapeError) as info:
        fix_input_shapes(small_cnn(), {"image": (1, 3, 32, 16)})
    assert str(info.value) == (
        "--input-shapes image:1x3x32x16 sets axis 3 of 'image' to 16, but the model fixes it "
        "at 32: only dynamic axes (names or -1/?) can be set"
    )
    with pytest.raises(InputShapeError) as info:
        fix_input_shapes(small_cnn(), {"image": (1, 3, 16, 16)})
    assert str(info.value) == (
        "--input-shapes image:1x3x16x16 sets axes 2, 3 of 'image' to 16, 16, but the model "
        "fixes them at 32, 32: only dynamic axes (names or -1/?) can be set"
    )


def test_fix_input_shapes_takes_the_fixed_size_and_sets_dynamic_ones():
    same = fix_input_shapes(small_cnn(), {"image": (1, 3, 32, 32)})
    assert graph_inputs(same) == [("image", (1, 3, 32, 32), np.dtype("float32"))]
    with pytest.raises(InputShapeError, match="sets axis 1 of 'x' to 8, but the model fixes it"):
        fix_input_shapes(_dynamic_mlp(), {"x": (3, 8)})  # batch is dynamic, features are not
    unnamed = _dynamic_mlp()
    unnamed.graph.input[0].type.tensor_type.shape.dim[0].Clear()  # "?": no value, no name
    assert graph_inputs(fix_input_shapes(unnamed, {"x": (7, 16)}))[0][1] == (7, 16)


def test_import_records_which_dims_were_dynamic():
    imported = import_onnx(_dynamic_mlp(), input_shapes={"x": (2, 16)})
    assert imported.input_shapes == [(2, 16)]
    assert imported.input_dynamic_dims == [("batch", None)]
    assert import_onnx(small_cnn()).input_dynamic_dims == [(None, None, None, None)]


# --- folding and import ------------------------------------------------------------------


def test_fold_constants_folds_shape_subgraph_and_keeps_names():
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
            helper.make_node("Shape", ["h"], ["s"], name="shape"),
            helper.make_node("Reshape", ["h", "s"], ["y"], name="reshape"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folded = fold_constants(model)
    ops = [n.op_type for n in folded.graph.node]
    assert "Shape" not in ops
    assert [(n.name, list(n.input)) for n in folded.graph.node if n.op_type == "MatMul"] == [
        ("fc", ["x", "w"])
    ]
    assert [o.domain for o in folded.opset_import] == [""]


@pytest.mark.parametrize(
    "make",
    [mlp, small_cnn, lambda: bert_block(seq=16, hidden=64, heads=4, ffn=128)],
    ids=["mlp", "small_cnn", "bert_block"],
)
def test_import_matches_onnxruntime(make):
    model = make()
    imported = import_onnx(model)
    main = imported.mod["main"]
    num_inputs = len(imported.input_names)
    assert [p.name for p in main.params[:num_inputs]] == imported.input_names
    assert [p.name for p in main.params[num_inputs:]] == list(imported.params)
    # small constants may be merged by the folding; the layer weights and nodes keep their names
    weights = {t.name for t in model.graph.initializer if len(t.dims) >= 2}
    assert weights <= set(imported.params)
    layers = {(n.name, n.input[1]) for n in model.graph.node if n.op_type in LAYER_OPS}
    assert layers == {
        (n.name, n.input[1]) for n in imported.onnx_model.graph.node if n.op_type in LAYER_OPS
    }
    assert imported.output_names == [o.name for o in model.graph.output]

    feeds = random_feeds(imported)
    expected = run_onnxruntime(model, feeds)
    actual = run_tvm(imported, feeds)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


def test_import_from_path_with_input_shapes(tmp_path):
    path = tmp_path / "mlp.onnx"
    onnx.save(_dynamic_mlp(), path)
    imported = import_onnx(str(path), input_shapes={"x": (5, 16)})
    assert imported.input_shapes == [(5, 16)]
    assert imported.input_dtypes == ["float32"]
    feeds = random_feeds(imported)
    np.testing.assert_allclose(
        run_tvm(imported, feeds)[0], run_onnxruntime(str(path), feeds)[0], rtol=1e-4, atol=1e-4
    )


def test_unsupported_op_is_named():
    graph = helper.make_graph(
        [helper.make_node("DFT", ["x"], ["y"], name="dft")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(SparseTVMError, match="does not support the operator\\(s\\) DFT"):
        import_onnx(model)
