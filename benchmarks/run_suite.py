"""The benchmark suite: sparse kernels and whole models against dense baselines, one command.

    python benchmarks/run_suite.py                 # full: ~1 h on a 2-core machine
    python benchmarks/run_suite.py --quick         # ~3 min: 2 shapes, 2 sparsities, 2 models
    python benchmarks/run_suite.py --preset cnn    # ~10 min: the CNN goals (dense and 90 % 4x1)
    python benchmarks/run_suite.py --preset transformer  # MiniLM-L6 + BERT-base layer goals
    python benchmarks/run_suite.py --preset int8   # ~5 min: the int8 goals (needs AVX-512 VNNI)
    python benchmarks/run_suite.py --out DIR       # default benchmarks/results/suite
    python benchmarks/run_suite.py --redraw DIR    # tables and plots again from DIR/suite.json

Kernels (``suite_kernels.py``): BERT-base feed-forward (3072x768, 768x3072) and attention
projection (768x768) MatMuls at M = 128 tokens, MobileNet-v1 1x1 convolutions; each pruned to
every sparsity in every block pattern (1x1, 4x1, 16x1), against sparse-tvm's dense build,
onnxruntime, numpy and scipy.sparse. Whole models (``suite_models.py``): a BERT-base encoder
layer at sequence 128, ResNet-50, MobileNet-v1 and -v2 at 224x224 and an MLP, dense against
90 % in each pattern, against onnxruntime and OpenVINO (where installed: ``pip install -r
benchmarks/requirements.txt``) and DeepSparse (where ``$DEEPSPARSE_PYTHON`` names its own
environment's Python); for the CNNs, where each build's time goes (``suite_split.py``).
int8 (``suite_int8.py``, hosts with AVX-512 VNNI): the BERT-base FFN layers, a BERT-base layer
and MiniLM-L6 pruned 90 % in 16x4, quantized and compiled, against onnxruntime int8 / float32
and sparse-tvm's float build.

Writes into the output folder: ``suite.json`` (every sample, the machine, the config),
``suite.md`` (the tables, the goals), ``speedup_vs_sparsity.png``, ``per_layer_<model>.png``,
``time_split.png`` (the CNN builds' time split), ``int8.png`` and ``report_<model>.html``
(sparse-tvm's own HTML report of the model's 90 % 16x1 build).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import common  # noqa: I001  (puts the repository root on sys.path, sets TVM_NUM_THREADS)

import suite_kernels
import suite_int8
import suite_models
import suite_report
from suite_kernels import KernelShape

BERT_SHAPES = [
    KernelShape("ffn.up", "matmul", 3072, 768, 128),
    KernelShape("ffn.down", "matmul", 768, 3072, 128),
    KernelShape("attn.proj", "matmul", 768, 768, 128),
]
# MobileNet-v1 pointwise convolutions: (out, in) channels at H = W = 56, 28, 14, 7
CONV_SHAPES = [
    KernelShape("conv1x1", "conv1x1", 128, 128, 56 * 56),
    KernelShape("conv1x1", "conv1x1", 256, 256, 28 * 28),
    KernelShape("conv1x1", "conv1x1", 512, 512, 14 * 14),
    KernelShape("conv1x1", "conv1x1", 1024, 1024, 7 * 7),
]

PRESETS = {
    "full": {
        "shapes": BERT_SHAPES + CONV_SHAPES,
        "sparsities": [0.5, 0.7, 0.8, 0.9, 0.95, 0.98],
        "patterns": ["1x1", "4x1", "16x1"],
        "kernel_rounds": 9,
        "kernel_batch_s": 0.03,
        "models": ["resnet50", "mobilenet", "mobilenet_v2", "bert_block", "mlp"],
        "model_patterns": ["4x1", "16x1", "1x1"],  # 4x1 first: the CNN goals' pattern
        "model_rounds": 9,
        "model_batch_s": 0.25,
        "split_runs": 20,
        "int8_cases": ["ffn.up", "ffn.down", "bert_layer", "minilm"],
    },
    "quick": {
        "shapes": [BERT_SHAPES[2], CONV_SHAPES[2]],
        "sparsities": [0.7, 0.9],
        "patterns": ["1x1", "4x1", "16x1"],
        "kernel_rounds": 3,
        "kernel_batch_s": 0.01,
        "models": ["mlp_small", "mobilenet_v2_96"],
        "model_patterns": ["4x1"],
        "model_rounds": 3,
        "model_batch_s": 0.05,
        "split_runs": 5,
        "int8_cases": ["ffn.down"],
    },
    # the CNN goals only (issue 14's table): three CNNs, dense and 90 % 4x1, no kernel cases
    "cnn": {
        "shapes": [],
        "sparsities": [],
        "patterns": [],
        "kernel_rounds": 0,
        "kernel_batch_s": 0.0,
        "models": ["resnet50", "mobilenet", "mobilenet_v2"],
        "model_patterns": ["4x1"],
        "model_rounds": 7,
        "model_batch_s": 0.25,
        "split_runs": 10,
    },
}
# the transformer goals (issue 15): MiniLM-L6 and a BERT-base encoder layer, dense and 80 / 90 /
# 95 % unstructured and 90 % 16x1; the BERT-base FFN kernels at M = 128 and M = 1, 90 % 1x1
PRESETS["transformer"] = {
    "shapes": BERT_SHAPES[:2]
    + [
        KernelShape("ffn.up", "matmul", 3072, 768, 1),
        KernelShape("ffn.down", "matmul", 768, 3072, 1),
    ],
    "sparsities": [0.9],
    "patterns": ["1x1", "16x1"],
    "kernel_rounds": 9,
    "kernel_batch_s": 0.03,
    "models": ["minilm", "bert_block"],
    "model_patterns": ["1x1", "1x1@0.8", "1x1@0.95", "16x1"],
    "model_rounds": 7,
    "model_batch_s": 0.25,
    "split_runs": 10,
}
# the int8 goals (issue 16) only
PRESETS["int8"] = {
    "shapes": [],
    "sparsities": [],
    "patterns": [],
    "kernel_rounds": 0,
    "kernel_batch_s": 0.0,
    "models": [],
    "model_patterns": [],
    "model_rounds": 11,
    "model_batch_s": 0.05,
    "int8_cases": ["ffn.up", "ffn.down", "bert_layer", "minilm"],
}
SPARSITY = 0.9  # whole models, the int8 cases and the headline kernel table


def lscpu_model() -> str | None:
    """``lscpu``'s model name (what the README quotes), or None without lscpu."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


def say(line: str) -> None:
    print(line, flush=True)


def run(config: dict, seed: int = 0) -> dict:
    """Run the kernels and the models of ``config``; the suite's data (not yet written)."""
    info = common.machine()
    info["lscpu_model"] = lscpu_model()
    say(common.header_line(info))
    if common.openvino_module() is None:
        say(f"# {common.OPENVINO_MISSING}: no OpenVINO column")
    start = time.perf_counter()
    kernels = []
    for shape in config["shapes"]:
        kernels += suite_kernels.run_shape(
            shape,
            config["sparsities"],
            config["patterns"],
            rounds=config["kernel_rounds"],
            batch_s=config["kernel_batch_s"],
            seed=seed,
            say=say,
        )
    models = [
        suite_models.run_model(
            name,
            SPARSITY,
            config["model_patterns"],
            rounds=config["model_rounds"],
            batch_s=config["model_batch_s"],
            seed=seed,
            split_runs=config.get("split_runs", 20),
            say=say,
        )
        for name in config["models"]
    ]
    int8 = suite_int8.run_int8(
        config.get("int8_cases", []), SPARSITY, config["model_rounds"], seed, say
    )
    stored = dict(config)
    stored["shapes"] = [asdict(shape) for shape in config["shapes"]]
    stored["seed"] = seed
    stored["timing"] = common.__doc__.strip()
    return {
        "benchmark": "suite",
        "machine": info,
        "loadavg_at_end": common.loadavg(),
        "wall_s": time.perf_counter() - start,
        "config": stored,
        "kernels": kernels,
        "models": models,
        "goals": suite_report.goals(models),
        "int8": int8,
        "int8_goals": suite_int8.int8_goals(int8),
    }


def write_outputs(data: dict, folder: Path) -> list[Path]:
    """suite.json, suite.md and the PNGs into ``folder`` (each written atomically)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [common.write_json(folder / "suite.json", data)]
    md = folder / "suite.md"
    tmp = md.with_name(f".{md.name}.partial")
    tmp.write_text(suite_report.full_markdown(data), encoding="utf-8")
    os.replace(tmp, md)
    written.append(md)
    written += suite_report.plot_all(data, folder)
    written += suite_report.write_html_reports(data, folder)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~3 minute subset")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named preset (cnn: the CNN goals, ~10 min; transformer: MiniLM-L6 and the "
        "BERT-base layer, the FFN kernels at 90 %% 1x1; int8: the int8 goals, ~5 min)",
    )
    parser.add_argument(
        "--out", default=str(common.RESULTS / "suite"), help="output folder (created)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (kernels and models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--redraw", metavar="DIR", help="redraw DIR/suite.json; run nothing")
    common.add_threads_option(parser)
    args = parser.parse_args(argv)
    if args.redraw:
        import json

        folder = Path(args.redraw)
        data = json.loads((folder / "suite.json").read_text())
    else:
        preset = args.preset or ("quick" if args.quick else "full")
        config = dict(PRESETS[preset])
        config["preset"] = preset
        if args.rounds:
            config["kernel_rounds"] = config["model_rounds"] = args.rounds
        folder = Path(args.out)
        data = run(config, seed=args.seed)
    for path in write_outputs(data, folder):
        say(f"wrote {path}")
    print()
    print(suite_report.markdown(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
