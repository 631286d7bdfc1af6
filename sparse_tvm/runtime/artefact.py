"""The compiled artefact: a ``.tar`` with the model library, its metadata and the report.

Layout: ``model.so`` (the TVM Relax VM executable as a shared library), ``metadata.json``
(inputs, outputs, target, versions, report) and ``report.txt``.

An artefact holds native code that is loaded into the process: trust it like any shared
library, and only load artefacts you or your build system produced. Extraction refuses members
that would land outside the extraction folder (absolute paths, ``..``, links, devices).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING

import tvm

from sparse_tvm.errors import ArtefactError
from sparse_tvm.logs import native_quiet
from sparse_tvm.report import Report

if TYPE_CHECKING:
    from sparse_tvm.runtime.compiled_model import CompiledModel

FORMAT_VERSION = 1
LIBRARY = "model.so"
METADATA = "metadata.json"
REPORT = "report.txt"


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` as a place an artefact can be written: a file name in a folder that exists
    (checked before a compile, so that a bad name fails before the work)."""
    path = Path(path)
    if path.is_dir():
        raise ArtefactError(f"output '{path}' is a directory: give a file name like model.tar")
    if not path.parent.exists():
        raise ArtefactError(f"output folder '{path.parent}' does not exist: create it first")
    return path


def export_artefact(compiled: CompiledModel, path: str | os.PathLike) -> None:
    """Write ``compiled`` to ``path`` atomically: on failure nothing is left at ``path``."""
    path = check_output_path(path)
    metadata = {
        "format_version": FORMAT_VERSION,
        "producer": "sparse-tvm",
        "tvm_version": tvm.__version__,
        "target": compiled.target,
        "inputs": [spec.to_dict() for spec in compiled.inputs],
        "outputs": [spec.to_dict() for spec in compiled.outputs],
        "report": compiled.report.to_dict(),
    }
    with tempfile.TemporaryDirectory(prefix="sparse-tvm-export-") as work:
        work_path = Path(work)
        with native_quiet():  # TVM logs a "Scope Saving:" line per VM function
            if compiled.cross_compiler:
                from tvm.support import cc

                compiled.executable.export_library(
                    str(work_path / LIBRARY), fcompile=cc.cross_compiler(compiled.cross_compiler)
                )
            else:
                compiled.executable.export_library(str(work_path / LIBRARY))
        (work_path / METADATA).write_text(json.dumps(metadata, indent=2))
        (work_path / REPORT).write_text(str(compiled.report) + "\n")
        partial = path.with_name(f".{path.name}.partial")
        try:
            with tarfile.open(partial, "w") as tar:
                for name in (METADATA, REPORT, LIBRARY):
                    tar.add(work_path / name, arcname=name)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def safe_extract(tar: tarfile.TarFile, destination: Path) -> None:
    """Extract regular files and folders only, each strictly inside ``destination``."""
    root = destination.resolve()
    for member in tar.getmembers():
        target = (root / member.name).resolve()
        if not (target == root or root in target.parents):
            raise ArtefactError(
                f"artefact member '{member.name}' would be written outside the "
                "extraction folder: refusing to load this artefact"
            )
        if not (member.isfile() or member.isdir()):
            raise ArtefactError(
                f"artefact member '{member.name}' is a link or special file: "
                "refusing to load this artefact"
            )
    tar.extractall(root, filter="data")


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata.json`` of an artefact, without loading its native code."""
    path = Path(path)
    if not path.is_file():
        raise ArtefactError(f"artefact '{path}' not found: compile one with `sparse-tvm compile`")
    try:
        with tarfile.open(path) as tar:
            member = tar.extractfile(METADATA)
            if member is None:
                raise KeyError(METADATA)
            return json.loads(member.read())
    except (tarfile.TarError, KeyError, json.JSONDecodeError, OSError):
        raise ArtefactError(
            f"'{path}' is not a sparse-tvm artefact (no readable {METADATA}): "
            "compile one with `sparse-tvm compile`"
        ) from None


def load_artefact(path: str | os.PathLike) -> CompiledModel:
    """Load an artefact written by :func:`export_artefact`."""
    from sparse_tvm.runtime.compiled_model import CompiledModel, TensorSpec

    metadata = read_metadata(path)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ArtefactError(
            f"artefact '{path}' has format version "
            f"{metadata.get('format_version')}, this sparse-tvm reads "
            f"{FORMAT_VERSION}: recompile the model"
        )
    from sparse_tvm.runtime.compiled_model import device_for
    from sparse_tvm.runtime.host_check import host_mismatch

    target = metadata.get("target", {})
    mismatch = host_mismatch(target)  # say so before the loader fails on foreign code
    if mismatch is not None:
        what, advice = mismatch
        raise ArtefactError(f"'{path}' was built for {what}: {advice}")
    device_for(target)  # a CUDA artefact needs a GPU before it can load
    folder = Path(tempfile.mkdtemp(prefix="sparse-tvm-artefact-"))
    try:
        with tarfile.open(path) as tar:
            safe_extract(tar, folder)
        with native_quiet():  # and a "Scope Loaded:" line per VM function
            library = tvm.runtime.load_module(str(folder / LIBRARY))
    except ArtefactError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except Exception as err:
        shutil.rmtree(folder, ignore_errors=True)
        built = f"; metadata target {target['name']}" if target.get("name") else ""
        raise ArtefactError(
            f"cannot load the library in '{path}' ({type(err).__name__}{built}): "
            "it was built for another target or is corrupt; recompile"
        ) from None
    compiled = CompiledModel(
        executable=library,
        inputs=[TensorSpec.from_dict(d) for d in metadata["inputs"]],
        outputs=[TensorSpec.from_dict(d) for d in metadata["outputs"]],
        report=Report.from_dict(metadata.get("report", {})),
        target=metadata.get("target", {}),
    )
    weakref.finalize(compiled, shutil.rmtree, folder, True)
    return compiled
