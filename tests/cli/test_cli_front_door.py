"""What a new user meets at the command line: file modes, help texts, the demo's load note."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import onnx
import pytest

from sparse_tvm.cli.main import main
from sparse_tvm.demo import busy_cores_elsewhere, load_note
from sparse_tvm.examples import mlp
from sparse_tvm.files import user_file_mode, write_atomically


@pytest.fixture
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    os.umask(old)
    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_pruned_model_gets_the_mode_of_any_file_the_user_writes(tmp_path, umask, mask):
    umask(mask)
    model = tmp_path / "m.onnx"
    onnx.save(mlp(batch=2, features=8, hidden=16, classes=4), model)
    out = tmp_path / "pruned.onnx"
    assert main(["prune", str(model), "-o", str(out), "--sparsity", "0.5"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask
    assert user_file_mode() == 0o666 & ~mask
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_write_atomically_leaves_nothing_when_the_writer_fails(tmp_path):
    def fail(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "out.onnx", fail)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "option", "words"),
    [
        ("prune", "--sparsity", "fraction of each prunable weight set to zero"),
        ("compile", "--sparsity-threshold", "less sparse than this"),
        ("inspect", "--sparsity-threshold", "less sparse than this"),
    ],
)
def test_sparsity_options_have_help(command, option, words, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    described = text[
        text.index(
            f"{option} {option.lstrip('-').upper().replace('-', '_')} ", text.index("options:")
        ) :
    ]
    assert words in described[:300]


def test_load_note_words():
    assert load_note(0.1, 2, (0.3, 0.2, 0.1)) is None
    assert load_note(1.3, 2, (2.4, 2.0, 1.5)) == (
        "note: other processes keep 1.3 of 2 cores busy, load average 2.4: the timings below "
        "are unreliable; rerun on a quiet machine"
    )


def test_busy_cores_elsewhere_sees_another_process_spinning():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy_cores_elsewhere(0.3)  # let it start
        assert busy_cores_elsewhere(1.0) > 0.6  # one core, less the time the scheduler shares
    finally:
        spinner.kill()
        spinner.wait()


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(mlp(batch=2, features=8, hidden=16, classes=4), model)
    # a folder that exists but takes no new file (root may write anywhere else)
    assert (
        main(["prune", str(model), "-o", "/proc/pruned.onnx", "--sparsity", "0.5"]) == 14
    )  # OutputError
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write '/proc/pruned.onnx': ") and err.count("\n") == 1


def test_the_readme_documents_every_exit_status():
    """The README's table of exit statuses is the errors module's map, row for row."""
    import re
    from pathlib import Path

    import sparse_tvm as st
    from sparse_tvm.errors import INTERRUPTED

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| *(?:`(\w+)`)? *\|", readme, flags=re.M)
    documented = {int(status): name for status, name in rows}
    expected = {status: cls.__name__ for cls, status in st.EXIT_STATUS.items()}
    assert documented == expected | {INTERRUPTED: ""}
    assert len(set(expected)) == len(expected)  # one status per kind
