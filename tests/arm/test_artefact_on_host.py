"""An aarch64 artefact on an x86-64 host: the target it was built for, before any loading."""

from __future__ import annotations

import platform

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.cli.main import main
from sparse_tvm.examples import mlp

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="checks an aarch64 artefact on an x86-64 host"
)

BUILT_FOR = (
    "was built for aarch64 (preset aarch64, triple aarch64-linux-gnu), not this x86_64 "
    "machine: run it on the board with run_artefact.py (README: Arm boards)"
)


@pytest.fixture(scope="module")
def aarch64_model(cross_tools):
    return st.compile(mlp(batch=1, features=8, hidden=16, classes=4), target="aarch64")


def test_load_says_which_target_the_artefact_was_built_for(aarch64_model, tmp_path):
    path = tmp_path / "model.tar"
    aarch64_model.export(path)
    with pytest.raises(st.ArtefactError) as info:
        st.load(path)
    assert str(info.value) == f"'{path}' {BUILT_FOR}"


def test_running_the_compiled_model_here_says_where_to_run_it(aarch64_model):
    with pytest.raises(st.SparseTVMError) as info:
        aarch64_model.run(np.zeros((1, 8), np.float32))
    assert str(info.value) == (
        "this model was compiled for aarch64 (preset aarch64, triple aarch64-linux-gnu), not "
        "this x86_64 machine: export it (compiled.export('model.tar') or `sparse-tvm compile "
        "-o model.tar`) and run it on the board with run_artefact.py (README: Arm boards)"
    )


def test_cli_run_is_one_error_line(aarch64_model, tmp_path, capsys):
    path = tmp_path / "model.tar"
    aarch64_model.export(path)
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 8), np.float32))
    capsys.readouterr()
    assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz")]) == 7  # ArtefactError
    captured = capsys.readouterr()
    assert captured.err == f"error: '{path}' {BUILT_FOR}\n"
    assert captured.out == ""
