"""The project as a user gets it from the CLI: the lines the CLI prints name the user's folder
(never the temporary one it builds in), and the emitted example ``main.c`` built by ``make host``
(natively) and ``make run`` (qemu) prints onnxruntime's outputs for its built-in input."""

import contextlib
import io
import os
import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest

from sparse_tvm.cli.main import main
from sparse_tvm.micro.harness import IOSpec, example_inputs, parse_outputs
from tests.conftest import ort_run
from tests.micro.conftest import micro_model, needs_host_cc, needs_qemu


@pytest.fixture(scope="module")
def cli_project(tmp_path_factory):
    """``sparse-tvm compile mlp.onnx --target cortex-m4 -o cm4/``, run in the model's folder."""
    folder = tmp_path_factory.mktemp("cli_micro")
    model = micro_model("mlp")
    onnx.save(model, folder / "mlp.onnx")
    stdout, stderr = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            status = main(["compile", "mlp.onnx", "--target", "cortex-m4", "-o", "cm4/"])
    finally:
        os.chdir(cwd)
    return model, folder, status, stdout.getvalue(), stderr.getvalue()


def _expected(model):
    """onnxruntime on the example input that ``main.c`` carries."""
    specs = [
        IOSpec(i.name, tuple(d.dim_value for d in i.type.tensor_type.shape.dim))
        for i in model.graph.input
    ]
    shapes = [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output]
    return ort_run(model, example_inputs(specs)), shapes


def _make(folder, goal=None):
    command = ["make", "-C", str(folder)] + ([goal] if goal else [])
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_cli_output_names_the_users_folder(cli_project):
    _, folder, status, stdout, stderr = cli_project
    assert status == 0, stderr
    said = stdout + stderr
    wrote = [line for line in said.splitlines() if "wrote" in line]
    assert wrote == [
        "wrote cm4  (next: cd cm4 && make host, or make run on qemu; README: Microcontrollers)"
    ], said
    # the CLI builds in .cm4.XXXX/ next to the output: no trace of it, nor of compile_micro's
    # own staging folder, in what it prints, in the project, or beside it
    for leak in (".cm4.", "sparse_tvm_micro_", "/tmp/"):
        assert leak not in said, said
    project = folder / "cm4"
    for path in project.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            assert ".cm4." not in text and "sparse_tvm_micro_" not in text, path
    assert sorted(p.name for p in folder.iterdir()) == ["cm4", "mlp.onnx"]
    names = {p.name for p in project.iterdir()}
    assert {"main.c", "Makefile", "model.h", "report.txt"} <= names
    main_c = (project / "main.c").read_text()
    assert "Your own application replaces this file" in main_c and "model_run(" in main_c
    assert "Replace it with your own application" in (project / "Makefile").read_text()


@needs_qemu  # the Cortex-M toolchain (in CI: installed, so the test runs)
def test_make_builds_only_the_library(cli_project, tmp_path):
    _, folder, *_ = cli_project
    copy = shutil.copytree(folder / "cm4", tmp_path / "cm4")
    assert _make(copy, "clean").returncode == 0  # the other tests may have built there
    done = _make(copy)
    assert done.returncode == 0, done.stderr
    assert (copy / "libmodel.a").is_file()
    assert not (copy / "app.elf").exists() and not (copy / "app_host").exists()
    assert "main.c" not in done.stdout


def _make_and_compare(cli_project, goal: str):
    """``make GOAL`` in the CLI's project: its printed outputs against onnxruntime's."""
    model, folder, *_ = cli_project
    expected, shapes = _expected(model)
    done = _make(folder / "cm4", goal)
    assert done.returncode == 0, done.stdout + done.stderr
    outputs, instructions = parse_outputs(done.stdout, shapes)
    assert len(outputs) == len(expected) == 1
    np.testing.assert_allclose(outputs[0], expected[0], atol=1e-4, rtol=1e-4)
    return done, instructions


@needs_host_cc
def test_make_host_prints_onnxruntimes_outputs(cli_project):
    _make_and_compare(cli_project, "host")


@needs_qemu
def test_make_run_on_qemu_prints_onnxruntimes_outputs(cli_project):
    done, instructions = _make_and_compare(cli_project, "run")
    assert re.search(r"qemu-system-arm -M mps2-an386 .*-kernel app\.elf", done.stdout)
    assert instructions and instructions > 1000
