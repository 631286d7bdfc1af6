"""The command line: every command, and bad inputs that exit 1 with one line and no file left."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from sparse_tvm.examples import mlp
from sparse_tvm.pruning import follows_pattern, parse, prune_magnitude
from tests.conftest import ort_run, random_inputs


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sparse_tvm", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess, *fragments: str, status: int
) -> None:
    """One ``error:`` line with ``fragments``, and the exit status of the error's kind."""
    assert result.returncode == status, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1
    for fragment in fragments:
        assert fragment in lines[-1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    model = prune_magnitude(mlp(), 0.9, "16x1")
    onnx.save(model, folder / "mlp.onnx")
    inputs = random_inputs(model)
    np.savez(folder / "in.npz", **inputs)
    np.save(folder / "expected.npy", ort_run(model, inputs)[0])
    return folder


@pytest.fixture(scope="module")
def artefact(workdir):
    result = cli("compile", workdir / "mlp.onnx", "--target", "x86", "-o", workdir / "mlp.tar")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    return workdir / "mlp.tar"


def test_targets():
    result = cli("targets", "--json")
    assert result.returncode == 0
    names = {row["name"] for row in json.loads(result.stdout)}
    assert {"x86", "x86-avx2", "x86-avx512"} <= names


def test_inspect_json(workdir):
    result = cli("inspect", workdir / "mlp.onnx", "--json")
    assert result.returncode == 0, result.stderr
    layers = json.loads(result.stdout)["layers"]
    assert [row["name"] for row in layers] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert layers[0]["sparsity"] == pytest.approx(0.9, abs=0.01)
    assert layers[0]["zero_blocks"]["16x1"] == pytest.approx(0.9, abs=0.01)


def test_compile_run_matches_onnxruntime(workdir, artefact):
    out = workdir / "out.npz"
    result = cli("run", artefact, "--inputs", workdir / "in.npz", "--outputs", out, "--repeat", "3")
    assert result.returncode == 0, result.stderr
    assert "median" in result.stdout
    with np.load(out) as data:
        np.testing.assert_allclose(
            data["logits"], np.load(workdir / "expected.npy"), rtol=1e-4, atol=1e-4
        )


def test_run_profile_says_where_the_time_goes(workdir, artefact):
    result = cli("run", artefact, "--inputs", workdir / "in.npz", "--profile")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "fc1.weight" in out  # the per-layer report
    assert "time per run by operator" in out
    sparse = [line for line in out.splitlines() if line.startswith("sparse layer ")]
    assert len(sparse) == 1 and sparse[0].split()[-1] == "3"  # three sparse layers, one call each


def test_inspect_artefact(artefact):
    result = cli("inspect", artefact)
    assert result.returncode == 0, result.stderr
    assert "fc1.weight" in result.stdout


def test_prune_command(workdir):
    out = workdir / "pruned.onnx"
    result = cli("prune", workdir / "mlp.onnx", "-o", out, "--sparsity", "0.95", "--pattern", "4x1")
    assert result.returncode == 0, result.stderr
    from sparse_tvm.frontend.initializers import read_initializer

    w = read_initializer(onnx.load(out), "fc2.weight")
    assert np.mean(w == 0) == pytest.approx(0.95, abs=0.01)
    assert "fc3.weight  95.0%  1x1 (a small weight)" in result.stdout  # 256 x 10
    result = cli(
        "prune", workdir / "mlp.onnx", "-o", out, "--sparsity", "0.95", "--pattern", "4x1",
        "--unstructured-below", "0",
    )  # fmt: skip
    assert result.returncode == 0 and "small weight" not in result.stdout, result.stderr
    head = read_initializer(onnx.load(out), "fc3.weight").T  # (n, k) = 10 x 256, in 4x1 blocks
    assert follows_pattern(head, parse("4x1"))


def test_prune_auto_pattern_for_a_target(tmp_path):
    onnx.save(mlp(), tmp_path / "dense.onnx")
    out = tmp_path / "auto.onnx"
    result = cli(
        "prune", tmp_path / "dense.onnx", "-o", out, "--sparsity", "0.9", "--pattern", "auto",
        "--target", "cortex-m4", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert report["pattern"] == "auto"
    from sparse_tvm.frontend.initializers import prunable_weights, read_initializer
    from sparse_tvm.pruning import follows_pattern, parse

    pruned = onnx.load(out)
    for w in prunable_weights(pruned):
        choice = report["auto"][w.name]
        assert choice["speedup"] > 1.0 and choice["decided_by"].startswith("estimated")
        nk = w.to_nk(read_initializer(pruned, w.name))
        assert follows_pattern(nk, parse(choice["pattern"]))
        assert np.mean(nk == 0) == pytest.approx(0.9, abs=0.02)


def test_prune_auto_pattern_needs_a_target(workdir, tmp_path):
    out = tmp_path / "auto.onnx"
    result = cli("prune", workdir / "mlp.onnx", "-o", out, "--sparsity", "0.9", "--pattern", "auto")
    assert_one_line_error(result, "give the target", "--target", status=2)
    assert not out.exists()


def test_missing_model(tmp_path):
    out = tmp_path / "m.tar"
    assert_one_line_error(cli("compile", tmp_path / "nope.onnx", "-o", out), "not found", status=3)
    assert not out.exists()


def test_text_file_named_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("this is not a model\n")
    out = tmp_path / "m.tar"
    assert_one_line_error(cli("compile", bad, "-o", out), "not an ONNX model", status=3)
    assert not out.exists()


def test_truncated_onnx(tmp_path, workdir):
    data = (workdir / "mlp.onnx").read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "m.tar"
    assert_one_line_error(cli("compile", bad, "-o", out), status=3)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]


def test_unknown_target(tmp_path, workdir):
    out = tmp_path / "m.tar"
    assert_one_line_error(
        cli("compile", workdir / "mlp.onnx", "--target", "pdp11", "-o", out),
        "unknown target 'pdp11'",
        status=5,
    )
    assert not out.exists()


def test_wrong_input_name(tmp_path, artefact):
    bad = tmp_path / "bad.npz"
    np.savez(bad, nope=np.zeros((8, 64), np.float32))
    out = tmp_path / "out.npz"
    assert_one_line_error(
        cli("run", artefact, "--inputs", bad, "--outputs", out), "'nope'", status=4
    )
    assert not out.exists()


def test_wrong_input_shape(tmp_path, artefact):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 64), np.float32))
    out = tmp_path / "out.npz"
    assert_one_line_error(
        cli("run", artefact, "--inputs", bad, "--outputs", out),
        "has shape (2, 64) but the model takes (8, 64)",
        status=4,
    )
    assert not out.exists()


def test_usage_error_exits_2():
    assert cli("compile").returncode == 2
    assert cli("prune", "m.onnx", "-o", "x.onnx", "--sparsity", "1.5").returncode == 2


def test_dynamic_input_needs_shapes(tmp_path):
    model = prune_magnitude(mlp(), 0.9, "16x1")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, path)
    out = tmp_path / "m.tar"
    result = cli("compile", path, "-o", out)
    assert_one_line_error(result, "dynamic dimensions [batch]", "--input-shapes", status=4)
    assert not out.exists()
    result = cli("compile", path, "-o", out, "--input-shapes", "x:3x64")
    assert result.returncode == 0, result.stderr
    inputs = tmp_path / "in.npz"
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    np.savez(inputs, x=x)
    result = cli("run", out, "--inputs", inputs, "--outputs", tmp_path / "out.npz")
    assert result.returncode == 0, result.stderr
    static = prune_magnitude(mlp(batch=3), 0.9, "16x1")
    with np.load(tmp_path / "out.npz") as data:
        np.testing.assert_allclose(
            data["logits"], ort_run(static, {"x": x})[0], rtol=1e-4, atol=1e-4
        )


def test_demo_quick():
    result = cli("demo", "--quick")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("build vs onnxruntime") == 4  # 2 models x (dense, sparse)
    assert "MISMATCH" not in result.stdout
    assert "all outputs match onnxruntime" in result.stdout
    assert "layers sparse" in result.stdout  # the per-layer report is printed


def _training_data(path, labels_high=10):
    rng = np.random.default_rng(3)
    np.savez(
        path,
        x=rng.standard_normal((32, 64)).astype(np.float32),
        labels=rng.integers(0, labels_high, 32),
    )


def test_prune_gmp_with_data(tmp_path):
    onnx.save(mlp(), tmp_path / "mlp.onnx")
    _training_data(tmp_path / "train.npz")
    out = tmp_path / "gmp.onnx"
    result = cli(
        "prune",
        tmp_path / "mlp.onnx",
        "-o",
        out,
        "--sparsity",
        "0.8",
        "--method",
        "gmp",
        "--pattern",
        "4x1",
        "--data",
        tmp_path / "train.npz",
        "--epochs",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert report["method"] == "gmp" and len(report["epochs"]) == 2
    from sparse_tvm.frontend.initializers import read_initializer

    w = read_initializer(onnx.load(out), "fc1.weight")
    assert np.mean(w == 0) == pytest.approx(0.8, abs=0.01)


def test_prune_bad_labels(tmp_path):
    onnx.save(mlp(), tmp_path / "mlp.onnx")
    _training_data(tmp_path / "train.npz", labels_high=50)  # the model has 10 classes
    out = tmp_path / "gmp.onnx"
    result = cli(
        "prune",
        tmp_path / "mlp.onnx",
        "-o",
        out,
        "--sparsity",
        "0.8",
        "--method",
        "gmp",
        "--data",
        tmp_path / "train.npz",
        "--epochs",
        "1",
    )
    assert_one_line_error(result, "label", status=12)
    assert not out.exists()


def test_compile_for_cortex_m4_writes_a_c_project(tmp_path, workdir):
    out = tmp_path / "proj"
    result = cli("compile", workdir / "mlp.onnx", "--target", "cortex-m4", "-o", out)
    assert result.returncode == 0, result.stderr
    for name in ("model.h", "model.c", "model_weights.c", "Makefile", "report.txt"):
        assert (out / name).is_file()
    assert "int model_run(" in (out / "model.h").read_text()
    assert "flash total" in result.stdout
    # again into the same folder: refused, nothing touched
    before = sorted(p.name for p in out.iterdir())
    assert_one_line_error(
        cli("compile", workdir / "mlp.onnx", "--target", "cortex-m4", "-o", out),
        "exists",
        status=14,
    )
    assert sorted(p.name for p in out.iterdir()) == before
    tar = tmp_path / "proj.tar"
    result = cli("compile", workdir / "mlp.onnx", "--target", "cortex-m4", "-o", tar)
    assert result.returncode == 0, result.stderr
    import tarfile

    with tarfile.open(tar) as archive:
        assert "proj/model.h" in archive.getnames()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj", "proj.tar"]
