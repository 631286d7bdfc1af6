"""Flash, RAM and instructions of the micro builds, dense beside sparse (issue 6 goals).

For the test MLP and the small CNN (16x16 input), pruned to 90 % ("1x1" and "4x1"), on
Cortex-M4 (qemu mps2-an386) and Cortex-M3 (mps2-an385): compile dense and sparse C projects,
run each once on qemu (instructions counted with -icount + SysTick, outputs checked against
onnxruntime), and print the table. Goals: sparse flash <= 30 % of dense, instructions <= 40 %.

    python benchmarks/micro_size.py [--json benchmarks/results/micro_size.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from sparse_tvm.examples import mlp, small_cnn
import sparse_tvm as st
from sparse_tvm.pruning import prune_magnitude

MODELS = {"mlp": mlp, "cnn": lambda: small_cnn(size=16)}
TARGETS = ("cortex-m4", "cortex-m3")
PATTERNS = ("1x1", "4x1")
FLASH_GOAL, INSTRUCTION_GOAL = 0.30, 0.40


def _run(model, target, folder, inputs, expected, dense):
    project = st.compile(model, target, output=folder, dense=dense, compare_dense=False)
    result = project.run_qemu(inputs, expected)
    if result.returncode != 0:
        raise SystemExit(f"{folder}: wrong outputs on qemu\n{result.stdout}")
    return project.report.sizes, result.instructions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in MODELS.items():
            base = build()
            inputs = {
                i.name: rng.standard_normal(
                    [d.dim_value for d in i.type.tensor_type.shape.dim]
                ).astype(np.float32)
                for i in base.graph.input
            }
            dense_ref = ort.InferenceSession(base.SerializeToString()).run(None, inputs)
            pruned = {pattern: prune_magnitude(base, 0.9, pattern) for pattern in PATTERNS}
            refs = {
                pattern: ort.InferenceSession(model.SerializeToString()).run(None, inputs)
                for pattern, model in pruned.items()
            }
            for target in TARGETS:
                dense, dense_insn = _run(
                    base, target, Path(tmp) / f"{name}-{target}-dense", inputs, dense_ref, True
                )
                for pattern in PATTERNS:
                    folder = Path(tmp) / f"{name}-{target}-{pattern}"
                    sparse, insn = _run(
                        pruned[pattern], target, folder, inputs, refs[pattern], False
                    )
                    rows.append(
                        {
                            "model": name,
                            "target": target,
                            "pattern": pattern,
                            "dense_flash": dense.flash,
                            "sparse_flash": sparse.flash,
                            "dense_code": dense.code,
                            "sparse_code": sparse.code,
                            "dense_weights": dense.weights,
                            "sparse_weights": sparse.weights,
                            "dense_ram": dense.ram,
                            "sparse_ram": sparse.ram,
                            "arena": sparse.arena,
                            "dense_instructions": dense_insn,
                            "sparse_instructions": insn,
                        }
                    )
    head = (
        f"{'model':5} {'target':10} {'pat':4} {'flash dense':>11} {'sparse':>9} {'ratio':>6}"
        f" {'RAM dense':>10} {'sparse':>9} {'insn dense':>11} {'sparse':>10} {'ratio':>6}  goals"
    )
    print(head)
    ok = True
    for r in rows:
        flash = r["sparse_flash"] / r["dense_flash"]
        insn = r["sparse_instructions"] / r["dense_instructions"]
        met = flash <= FLASH_GOAL and insn <= INSTRUCTION_GOAL
        ok &= met
        print(
            f"{r['model']:5} {r['target']:10} {r['pattern']:4} {r['dense_flash'] / 1024:9.1f}KB"
            f" {r['sparse_flash'] / 1024:7.1f}KB {flash:6.0%} {r['dense_ram'] / 1024:8.1f}KB"
            f" {r['sparse_ram'] / 1024:7.1f}KB {r['dense_instructions']:11,d}"
            f" {r['sparse_instructions']:10,d} {insn:6.0%}  {'met' if met else 'MISSED'}"
        )
    print("flash: code + weights (libc/libgcc not counted); RAM: arena + static + stack estimate")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
