"""Artefact extraction refuses members that would land outside its folder; an artefact this
machine cannot run says which target it was built for before loading anything."""

import io
import json
import tarfile

import pytest

import sparse_tvm as st
from sparse_tvm.errors import ArtefactError
from sparse_tvm.runtime.artefact import FORMAT_VERSION, METADATA, safe_extract


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"x", **kw) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in kw.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data))


def _crafted(path, evil_name: str, link: bool = False) -> None:
    metadata = {"format_version": FORMAT_VERSION, "inputs": [], "outputs": []}
    with tarfile.open(path, "w") as tar:
        _add(tar, METADATA, json.dumps(metadata).encode())
        if link:
            info = tarfile.TarInfo(evil_name)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        else:
            _add(tar, evil_name, b"owned")


@pytest.mark.parametrize(
    "evil", ["../escaped.txt", "/tmp/sparse_tvm_absolute_escape.txt", "a/../../escaped.txt"]
)
def test_member_outside_the_folder_is_refused(tmp_path, evil):
    artefact = tmp_path / "evil.tar"
    _crafted(artefact, evil)
    with pytest.raises(ArtefactError, match="outside the extraction folder"):
        st.load(artefact)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path.parent / "escaped.txt").exists()


def test_link_member_is_refused(tmp_path):
    artefact = tmp_path / "link.tar"
    _crafted(artefact, "model.so", link=True)
    with pytest.raises(ArtefactError, match="link or special file"):
        st.load(artefact)


def test_safe_extract_keeps_regular_members(tmp_path):
    artefact = tmp_path / "ok.tar"
    with tarfile.open(artefact, "w") as tar:
        _add(tar, "inner/file.txt", b"hello")
    out = tmp_path / "out"
    out.mkdir()
    with tarfile.open(artefact) as tar:
        safe_extract(tar, out)
    assert (out / "inner" / "file.txt").read_bytes() == b"hello"


def test_not_an_artefact(tmp_path):
    bogus = tmp_path / "bogus.tar"
    bogus.write_text("not a tar")
    with pytest.raises(ArtefactError, match="not a sparse-tvm artefact"):
        st.load(bogus)
    with pytest.raises(ArtefactError, match="not found"):
        st.load(tmp_path / "missing.tar")


def _relu_model():
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )
    return helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_avx512_artefact_on_a_cpu_without_it_names_the_target(tmp_path, monkeypatch):
    from sparse_tvm.target import host_cpu

    path = tmp_path / "relu.tar"
    st.compile(_relu_model(), target="x86-avx512").export(path)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(host_cpu, "cpu_flags", lambda: frozenset({"avx", "avx2", "fma", "bmi2"}))
    with pytest.raises(ArtefactError) as info:
        st.load(path)
    assert str(info.value) == (
        f"'{path}' was built for x86_64 (preset x86-avx512, cpu skylake-avx512), and this CPU "
        "lacks avx512bw, avx512dq, avx512f, avx512vl: recompile it here with --target x86 "
        "(or x86-avx2 for any AVX2 machine)"
    )


def test_x86_artefact_on_an_arm_machine_names_the_target(tmp_path, monkeypatch):
    path = tmp_path / "relu.tar"
    st.compile(_relu_model(), target="x86-avx2").export(path)
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    with pytest.raises(ArtefactError) as info:
        st.load(path)
    assert str(info.value) == (
        f"'{path}' was built for x86_64 (preset x86-avx2, cpu haswell), not this aarch64 "
        "machine: run it on an x86_64 machine, or recompile it for this one"
    )


def test_host_mismatch_knows_only_what_it_can_tell(monkeypatch):
    from sparse_tvm.runtime.host_check import host_mismatch

    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert host_mismatch({}) is None  # an artefact without a target: try to load it
    assert host_mismatch({"name": "cuda", "family": "cuda", "tvm": {"kind": "cuda"}}) is None
    assert host_mismatch({"name": "x86-avx2", "family": "x86", "tvm": {"kind": "llvm"}}) is None
    raw = {"name": "custom", "family": "arm", "tvm": {"kind": "llvm", "mtriple": "aarch64-linux"}}
    assert host_mismatch(raw) == (
        "aarch64 (triple aarch64-linux), not this x86_64 machine",
        "run it on the board with run_artefact.py (README: Arm boards)",
    )


def test_corrupt_library_message_names_the_metadata_target(tmp_path):
    metadata = {
        "format_version": FORMAT_VERSION,
        "target": {"name": "x86-avx2", "family": "x86", "tvm": {"kind": "llvm"}},
        "inputs": [],
        "outputs": [],
    }
    path = tmp_path / "corrupt.tar"
    with tarfile.open(path, "w") as tar:
        _add(tar, METADATA, json.dumps(metadata).encode())
        _add(tar, "model.so", b"not a shared library")
    with pytest.raises(ArtefactError) as info:
        st.load(path)
    assert str(info.value).startswith(f"cannot load the library in '{path}' (")
    assert str(info.value).endswith(
        "; metadata target x86-avx2): it was built for another target or is corrupt; recompile"
    )
