"""Tuning works whatever handlers the process's logging has, and stays quiet by default.

MetaSchedule's ``tune_tir`` used to crash (``'NoneType' object has no attribute 'format'``)
when its logger held an unnamed handler: a user's ``StreamHandler``, or pytest >= 9.2's capture
handlers, which pytest attaches to every non-propagating logger (as MetaSchedule's is after a
first ``tune_tir``). Each case runs in one process, one after the other.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

import sparse_tvm as st
from sparse_tvm.cli.main import main
from sparse_tvm.examples import mlp
from sparse_tvm.logs import MS_LOGGER, is_verbose, metaschedule_logging, native_quiet, verbosity
from sparse_tvm.pruning import prune_magnitude

# what MetaSchedule prints when its console handler is on
MS_NOISE = ("Logging directory", "task_scheduler", "[INFO]", "[DEBUG]", "Total trials")


def _tiny_model(path: Path) -> Path:
    # one MatMul layer with one candidate format: each tune is one short MetaSchedule run
    model = prune_magnitude(mlp(batch=8, features=32, hidden=64, classes=8), 0.9, "16x1")
    keep = {"fc1.weight"}
    graph = model.graph
    first = [node for node in graph.node if node.name == "fc1" or keep & set(node.input)][0]
    out = onnx.helper.make_tensor_value_info(first.output[0], onnx.TensorProto.FLOAT, [8, 64])
    model = onnx.helper.make_model(
        onnx.helper.make_graph(
            [first],
            "one_matmul",
            list(graph.input),
            [out],
            [t for t in graph.initializer if t.name in keep],
        ),
        opset_imports=model.opset_import,
    )
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _records(folder: Path) -> int:
    lines = (folder / "database_tuning_record.json").read_text().splitlines()
    return sum(1 for line in lines if line.strip())


def test_three_tunes_in_one_process_with_unnamed_handlers(tmp_path, capfd):
    """pytest's capture handlers are on MetaSchedule's logger from the second call on (and a
    user's unnamed handler from the first): API, CLI, then verbose, one after the other."""
    model = _tiny_model(tmp_path / "m.onnx")
    ms_logger = logging.getLogger(MS_LOGGER)
    mine = logging.StreamHandler()  # unnamed, as a user's application puts it there
    ms_logger.addHandler(mine)
    try:
        summary = st.tune(model, target="x86", records=str(tmp_path / "r1"), trials=2)
        assert [row.trials for row in summary.candidates] == [2]
        assert _records(tmp_path / "r1") == 2
        # the process's handler is back, unnamed and not closed
        assert mine in ms_logger.handlers and mine.get_name() is None
        out, err = capfd.readouterr()
        for noise in MS_NOISE:
            assert noise not in out and noise not in err
        # MetaSchedule's full log went to the records folder instead
        logs = "".join(p.read_text() for p in (tmp_path / "r1" / "logs").glob("*.log"))
        assert "Logging directory" in logs

        assert main(["tune", str(model), "--records", str(tmp_path / "r2"), "--trials", "3"]) == 0
        out, err = capfd.readouterr()
        for noise in MS_NOISE:
            assert noise not in out and noise not in err
        # not a terminal: each batch's progress line as it comes: trials, best, time left
        progress = [line for line in err.splitlines() if " in all, " in line]
        assert progress, err
        assert all(" trials, best " in line and line.endswith("left") for line in progress)
        assert progress[-1].startswith("[1/1] fc1.weight bsr 16x1: 3/3 trials, best ")
        assert " us | 3/3 in all, about " in progress[-1]
        assert "records:" in out and mine in ms_logger.handlers

        with verbosity(True):  # --verbose: MetaSchedule's console is back
            st.tune(model, target="x86", records=str(tmp_path / "r3"), trials=2)
        out, _ = capfd.readouterr()
        assert "Logging directory" in out and _records(tmp_path / "r3") == 2
    finally:
        ms_logger.removeHandler(mine)


def test_basic_config_and_a_root_handler_first_in_a_fresh_process(tmp_path):
    # a fresh interpreter: no pytest handler anywhere; the user's logging configured first
    model = _tiny_model(tmp_path / "m.onnx")
    script = textwrap.dedent(
        f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        logging.getLogger("tvm.s_tir.meta_schedule").addHandler(logging.StreamHandler())
        import sparse_tvm as st
        summary = st.tune({str(model)!r}, target="x86", records={str(tmp_path / "r")!r},
                          trials=2)
        assert [row.trials for row in summary.candidates] == [2], summary
        logging.getLogger("app").info("root handler still works")
        print("tuned")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tuned" in result.stdout
    assert "INFO:app:root handler still works" in result.stderr
    for noise in ("Logging directory", "task_scheduler", "Total trials"):
        assert noise not in result.stdout and noise not in result.stderr


def test_metaschedule_logging_restores_level_and_handlers():
    ms_logger = logging.getLogger(MS_LOGGER)
    mine = logging.NullHandler()
    ms_logger.addHandler(mine)
    ms_logger.setLevel(logging.WARNING)
    try:
        with metaschedule_logging():
            assert ms_logger.handlers == [] and ms_logger.level == logging.ERROR
            ms_logger.addHandler(logging.StreamHandler())  # as tune_tir's dictConfig does
        assert ms_logger.handlers == [mine] and ms_logger.level == logging.WARNING
    finally:
        ms_logger.removeHandler(mine)
        ms_logger.setLevel(logging.NOTSET)


def _native_warning() -> None:
    # a TVM C++ LOG(WARNING), written to fd 2 by native code: legalizing a gather in fast mode
    import tvm
    from tvm import relax, topi

    a = tvm.te.placeholder((4, 3), name="a")
    i = tvm.te.placeholder((2,), dtype="int64", name="i")
    topi.take(a, i, axis=0, mode="fast")
    del relax


def test_native_quiet_hides_tvm_warnings_unless_verbose(capfd):
    with native_quiet():
        _native_warning()
    assert "Fast mode segfaults" not in capfd.readouterr().err
    with verbosity(True), native_quiet():
        _native_warning()
    assert "Fast mode segfaults" in capfd.readouterr().err


def test_native_quiet_restores_stderr_after_an_error(capfd):
    with pytest.raises(RuntimeError), native_quiet():
        raise RuntimeError("boom")
    print("visible", file=sys.stderr)
    assert "visible" in capfd.readouterr().err


def test_export_and_load_print_nothing(tmp_path, capfd):
    model = prune_magnitude(mlp(batch=4, features=16, hidden=32, classes=4), 0.9, "1x1")
    compiled = st.compile(model, target="x86", measure=False)
    compiled.export(tmp_path / "m.tar")
    st.load(tmp_path / "m.tar")
    out, err = capfd.readouterr()
    assert "Scope" not in out + err and "Warning" not in out + err
    assert json.loads(compiled.report.to_json())  # the report itself is intact


def test_sparse_tvm_verbose_in_the_environment_reaches_the_cli(monkeypatch, tmp_path, capfd):
    monkeypatch.setenv("SPARSE_TVM_VERBOSE", "1")
    assert is_verbose()
    with pytest.raises(st.SparseTVMError):  # verbose: the traceback, not the one line
        main(["inspect", str(tmp_path / "missing.onnx")])
    assert is_verbose()  # the CLI left the process's verbosity as it was
    with native_quiet():
        _native_warning()
    assert "Fast mode segfaults" in capfd.readouterr().err
    monkeypatch.delenv("SPARSE_TVM_VERBOSE")
    assert not is_verbose()
    assert main(["inspect", str(tmp_path / "missing.onnx")]) == 3  # ModelLoadError
    assert capfd.readouterr().err.startswith("error: ")


def test_native_quiet_drops_what_it_hid_when_the_block_raises(capfd):
    with pytest.raises(RuntimeError), native_quiet():
        os.write(2, b"native noise\n")
        raise RuntimeError("boom")
    assert "native noise" not in capfd.readouterr().err
