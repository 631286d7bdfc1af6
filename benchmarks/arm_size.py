"""Code and artefact size of the aarch64 builds of the test models, dense against sparse.

Wall time under qemu-aarch64 is not a performance figure (the emulator translates every
instruction; it says nothing about a Cortex-A72 or a Graviton core), so for Arm this prints
sizes only: the weights as stored, the artefact (.tar), its shared library (model.so), and
the library's code (.text) and read-only data (.rodata, where the VM executable keeps the
weights) as ``aarch64-linux-gnu-size -A`` counts them. Latency on a board: compile, copy, run ``run_artefact.py --repeat``.

Models: ``mlp()``, ``small_cnn()``, ``bert_block(seq=16, hidden=64, heads=4, ffn=128)``, pruned
to 90 % (4x1 blocks, by magnitude); sparse formats chosen by the cost model.

Run from the repository root (needs gcc-aarch64-linux-gnu)::

    python benchmarks/arm_size.py [--target rpi4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import sparse_tvm as st
from sparse_tvm.examples import bert_block, mlp, small_cnn
from sparse_tvm.pruning import prune_magnitude

MODELS = {
    "mlp": mlp,
    "small_cnn": small_cnn,
    "bert_block": lambda: bert_block(seq=16, hidden=64, heads=4, ffn=128),
}
SIZE_TOOL = "aarch64-linux-gnu-size"


def _sections(library: Path) -> dict[str, int]:
    """Bytes of the code (.text) and read-only data (.rodata: the weights) of an ELF library."""
    if shutil.which(SIZE_TOOL) is None:
        return {}
    out = subprocess.run(
        [SIZE_TOOL, "-A", str(library)], capture_output=True, text=True, check=True
    ).stdout
    sizes = {
        p[0]: int(p[1])
        for p in (line.split() for line in out.splitlines())
        if len(p) == 3 and p[1].isdigit()
    }
    return {"text": sizes.get(".text", 0), "rodata": sizes.get(".rodata", 0)}


def measure(target: str, sparsity: float, pattern: str) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparse-tvm-arm-size-") as work:
        work = Path(work)
        for name, make in MODELS.items():
            model = prune_magnitude(make(), sparsity, pattern)
            for build in ("dense", "sparse"):
                compiled = st.compile(model, target, dense=build == "dense")
                tar_path = work / f"{name}.{build}.tar"
                compiled.export(tar_path)
                with tarfile.open(tar_path) as tar:
                    tar.extract("model.so", work / f"{name}.{build}", filter="data")
                library = work / f"{name}.{build}" / "model.so"
                sparse_layers = sum(row.format != "dense" for row in compiled.report.layers)
                rows.append(
                    {
                        "model": name,
                        "build": build,
                        "sparse_layers": f"{sparse_layers}/{len(compiled.report.layers)}",
                        "weights_bytes": compiled.report.totals()["weight_bytes_stored"],
                        "artefact_bytes": tar_path.stat().st_size,
                        "library_bytes": library.stat().st_size,
                        **_sections(library),
                    }
                )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="aarch64", help="Arm preset (aarch64, rpi4)")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--pattern", default="4x1", help="pruning block pattern")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = measure(args.target, args.sparsity, args.pattern)
    print(
        f"aarch64 code size, target {args.target}, pruned {args.sparsity:.0%} ({args.pattern}). "
        "Sizes only: wall time under qemu is not a performance figure."
    )
    header = (
        "model",
        "build",
        "sparse",
        "weights B",
        "artefact B",
        "model.so B",
        "code B",
        "rodata B",
    )
    line = "{:<11} {:<7} {:>6} {:>10} {:>11} {:>11} {:>9} {:>9}"
    print(line.format(*header))
    for row in rows:
        print(
            line.format(
                row["model"],
                row["build"],
                row["sparse_layers"],
                row["weights_bytes"],
                row["artefact_bytes"],
                row["library_bytes"],
                row.get("text", "-"),
                row.get("rodata", "-"),
            )
        )
    for name in MODELS:
        dense, sparse = (r for r in rows if r["model"] == name)
        print(
            f"{name}: sparse library {sparse['library_bytes'] / dense['library_bytes']:.2f}x "
            "the dense one"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
