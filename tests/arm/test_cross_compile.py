"""Cross-compiling whole models for aarch64 on an x86 host: cost-model formats, an aarch64 .so."""

from __future__ import annotations

import platform
import tarfile

import pytest

import sparse_tvm as st
from sparse_tvm.arm.emulation import CROSS_COMPILER, run_program
from sparse_tvm.cli.main import main
from sparse_tvm.examples import mlp
from sparse_tvm.pruning import prune_magnitude

EM_AARCH64 = 183

pytestmark = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="checks cross-compilation from an x86-64 host"
)


def _elf_machine(tar_path) -> int:
    with tarfile.open(tar_path) as tar:
        data = tar.extractfile("model.so").read()
    assert data[:4] == b"\x7fELF"
    return int.from_bytes(data[18:20], "little")


def test_aarch64_compile_uses_the_cost_model_and_cross_links(cross_tools, tmp_path):
    model = prune_magnitude(mlp(), 0.9, "4x1")
    compiled = st.compile(model, "aarch64")  # measure=True: not possible on this host
    assert compiled.cross_compiler == CROSS_COMPILER  # from the preset
    assert compiled.report.notes == [
        "formats chosen by the cost model: this x86_64 machine cannot time arm code "
        "(tune on the board over RPC to measure)"
    ]
    rows = compiled.report.layers
    assert all(row.dense_us is None and row.sparse_us is None for row in rows)
    assert any(row.format.startswith("bsr") for row in rows)
    compiled.export(tmp_path / "mlp.tar")
    assert _elf_machine(tmp_path / "mlp.tar") == EM_AARCH64
    with pytest.raises(
        st.ArtefactError,
        match=r"was built for aarch64 \(preset aarch64, triple aarch64-linux-gnu\)",
    ):
        st.load(tmp_path / "mlp.tar")


def test_x86_still_measures():
    compiled = st.compile(prune_magnitude(mlp(), 0.9, "16x1"), "x86")
    assert compiled.report.notes == [] and compiled.cross_compiler is None
    assert all(row.dense_us is not None for row in compiled.report.layers if row.sparsity > 0.5)


def test_cli_cross_compiles_for_rpi4(cross_tools, tmp_path, capsys):
    import onnx

    onnx.save(prune_magnitude(mlp(), 0.9, "4x1"), tmp_path / "mlp.onnx")
    out = tmp_path / "mlp.tar"
    assert main(["compile", str(tmp_path / "mlp.onnx"), "--target", "rpi4", "-o", str(out)]) == 0
    assert "cannot time arm code" in capsys.readouterr().out
    assert _elf_machine(out) == EM_AARCH64


def test_missing_cross_compiler_is_one_clear_line():
    with pytest.raises(st.SparseTVMError, match="cross compiler 'no-such-gcc' not found on PATH"):
        st.compile(mlp(), "aarch64", cross_compiler="no-such-gcc")


@pytest.mark.parametrize("preset", ["aarch64", "rpi4"])
def test_preset_run_key_runs_an_aarch64_program(cross_tools, tmp_path, preset):
    import subprocess

    source = tmp_path / "hello.c"
    source.write_text('#include <stdio.h>\nint main(void) { printf("%d\\n", 6 * 7); return 3; }\n')
    subprocess.run([CROSS_COMPILER, "-O2", str(source), "-o", str(tmp_path / "hello")], check=True)
    done = run_program([tmp_path / "hello"], target=preset)
    assert (done.returncode, done.stdout) == (3, "42\n")
