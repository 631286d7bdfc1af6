"""Artefact extraction refuses members that would land outside its folder."""

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
