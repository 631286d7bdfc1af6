"""Run sparse-tvm artefacts on a board that has only the TVM runtime: no sparse-tvm, no compiler.

Copy this file and ``model.tar`` to the board, then::

    pip install apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 numpy
    TVM_USE_RUNTIME_LIB=1 python3 run_artefact.py model.tar in.npz out.npz [--repeat 20]

``in.npz`` maps the model's input names to arrays (``sparse-tvm run`` takes the same file);
``out.npz`` receives the outputs by name. Several ``MODEL IN OUT`` triples may follow each
other: one process runs them all (under emulation the interpreter start is the slow part).

The file imports only the standard library, numpy and ``tvm.runtime`` (with
``TVM_USE_RUNTIME_LIB=1`` that loads libtvm_runtime, not the compiler), so it must not import
``sparse_tvm``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
import tempfile
import time

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine

LIBRARY = "model.so"
METADATA = "metadata.json"

# As sparse_tvm does (see its __init__): TVM's pool pins its workers but not the calling thread,
# which then shares a worker's core in phases; the scheduler places unpinned threads better.
os.environ.setdefault("TVM_BIND_THREADS", "0")


def _extract(artefact: str, folder: str) -> dict:
    """Copy out the two members this needs, by name (boards' Pythons may lack tar filters)."""
    with tarfile.open(artefact) as tar:
        for name in (METADATA, LIBRARY):
            member = tar.getmember(name)
            if not member.isfile():
                raise SystemExit(f"error: {artefact}: {name} is not a regular file")
            with tar.extractfile(member) as src, open(os.path.join(folder, name), "wb") as dst:
                dst.write(src.read())
    with open(os.path.join(folder, METADATA)) as handle:
        return json.load(handle)


def run_artefact(artefact: str, inputs: str, outputs: str, repeat: int = 0) -> dict:
    """Run ``artefact`` on the arrays of ``inputs`` (.npz); write ``outputs`` (.npz)."""
    with tempfile.TemporaryDirectory(prefix="sparse-tvm-board-") as folder:
        metadata = _extract(artefact, folder)
        library = tvm.runtime.load_module(os.path.join(folder, LIBRARY))
        vm = VirtualMachine(library, tvm.cpu())
        with np.load(inputs) as given:
            args = [
                tvm.runtime.tensor(np.ascontiguousarray(given[spec["name"]], spec["dtype"]))
                for spec in metadata["inputs"]
            ]
        result = vm["main"](*args)
        items = result if isinstance(result, (list, tuple, tvm.ir.Array)) else [result]
        named = {spec["name"]: item.numpy() for spec, item in zip(metadata["outputs"], items)}
        with open(outputs, "wb") as handle:
            np.savez(handle, **named)
        stats = {"artefact": artefact, "outputs": {k: list(v.shape) for k, v in named.items()}}
        if repeat > 0:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                vm["main"](*args)
                times.append(time.perf_counter() - start)
            stats["median_s"] = float(np.median(times))
        return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="+", metavar="MODEL.tar IN.npz OUT.npz")
    parser.add_argument("--repeat", type=int, default=0, help="also time this many runs")
    args = parser.parse_args(argv)
    if len(args.jobs) % 3:
        parser.error("give MODEL.tar IN.npz OUT.npz triples")
    for i in range(0, len(args.jobs), 3):
        print(json.dumps(run_artefact(*args.jobs[i : i + 3], repeat=args.repeat)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
