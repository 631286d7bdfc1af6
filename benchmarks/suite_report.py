"""What the benchmark suite writes: the markdown tables and the PNG plots of one run.

Everything here reads the suite's JSON data (``run_suite.py`` writes it as ``suite.json``), so
the tables and plots can be redrawn from a stored run:
``python benchmarks/run_suite.py --redraw DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import common  # noqa: I001  (puts the repository root on sys.path)

import suite_int8
from suite_split import BUCKET_LABELS as BUCKETS  # bucket -> label, the tables' order

SPEEDUP_PNG = "speedup_vs_sparsity.png"
TIME_SPLIT_PNG = "time_split.png"
BASELINES = ("tvm_dense", "ort", "numpy", "scipy_csr")  # the kernel table's column order
# The whole models' baselines, in column order: a column only where some model has its timing
# (OpenVINO needs `pip install openvino`, DeepSparse $DEEPSPARSE_PYTHON).
MODEL_BASELINES = {
    "tvm_dense": "TVM dense",
    "ort": "onnxruntime",
    "openvino": "OpenVINO",
    "deepsparse": "DeepSparse",
}
BUCKET_COLOURS = {
    "dense_conv": "#9ca3af",
    "depthwise_conv": "#f59e0b",
    "sparse_conv": "#1d4ed8",
    "other": "#10b981",
}
# The goals per model family: the dense build within ``dense`` x of onnxruntime's latency; the
# build at the suite's sparsity in ``pattern`` at least ``ort`` x faster than onnxruntime on the
# dense model and (where DeepSparse ran) ``deepsparse`` x faster than DeepSparse on the same
# pruned model. CNNs: issue 14; MiniLM and the BERT-base layer: issue 15.
GOALS = {
    "resnet50": {"dense": 1.2, "pattern": "4x1", "ort": 3.0, "deepsparse": 1.0},
    "mobilenet": {"dense": 1.2, "pattern": "4x1", "ort": 2.0, "deepsparse": 1.0},
    "mobilenet_v2": {"dense": 1.2, "pattern": "4x1", "ort": 1.5, "deepsparse": 1.0},
    "minilm": {"dense": 1.1, "pattern": "1x1", "ort": 2.5, "deepsparse": 1.3},
    "bert_block": {"dense": None, "pattern": "1x1", "ort": 3.5, "deepsparse": None},
}


def per_layer_png(model: str) -> str:
    return f"per_layer_{model}.png"


def report_html(model: str) -> str:
    return f"report_{model}.html"


def write_html_reports(data: dict, folder: Path) -> list[Path]:
    """The sparse-tvm HTML report (``--report``) of each model build that kept its report."""
    from sparse_tvm.report import Report
    from sparse_tvm.report_html import write_html

    written = []
    for result in data.get("models", []):
        for build in result.get("builds", {}).values():
            if "report" in build:
                path = folder / report_html(result["model"])
                written.append(write_html(Report.from_dict(build["report"]), path))
    return written


# ---------------------------------------------------------------------------- markdown


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return [
        _row(head),
        "|" + "|".join("---" if i == 0 else "--:" for i in range(len(head))) + "|",
    ] + [_row(r) for r in rows]


def machine_line(data: dict) -> str:
    info = data["machine"]
    threads = info["threads"]
    model = info.get("lscpu_model") or info["cpu"]
    return (
        f"{model}, {info['cores']} cores"
        f"{' with AVX-512' if info['avx512f'] else ''}; {threads} threads for every runtime "
        f"(TVM_NUM_THREADS={info['tvm_num_threads']}, onnxruntime intra-op {threads}, OpenVINO "
        f"INFERENCE_NUM_THREADS {threads}, OpenBLAS default); onnxruntime {info['onnxruntime']}, "
        f"OpenVINO {info.get('openvino') or 'not installed'}, TVM {info['tvm']}, numpy "
        f"{info['numpy']}, scipy {info['scipy']}; measured {info['date']} at commit "
        f"{info['source']['commit'][:10]}; load average at start "
        f"{common.fmt_load(info['loadavg_at_start'])}"
    )


def kernel_table(cases: list[dict], sparsity: float | None = None) -> list[str]:
    """One row per kernel case (only those at ``sparsity`` when given)."""
    head = [
        "layer",
        "pattern",
        "sparsity",
        "sparse-tvm µs",
        "TVM dense µs",
        "onnxruntime µs",
        "numpy µs",
        "scipy CSR µs",
        "vs TVM dense",
        "vs onnxruntime",
        "vs numpy",
        "vs scipy",
        "ideal 1/(1-s)",
        "bytes",
    ]
    rows = []
    for c in cases:
        if sparsity is not None and abs(c["sparsity_target"] - sparsity) > 1e-9:
            continue
        lat, up = c.get("latency_s", {}), c.get("speedup", {})
        rows.append(
            [
                c["label"],
                c["pattern"],
                f"{c['sparsity']:.0%}",
                *(common.fmt_us(lat.get(name)) for name in ("sparse", *BASELINES)),
                *(common.fmt_ratio(up.get(name)) for name in BASELINES),
                common.fmt_ratio(c.get("ideal_speedup")),
                f"{c['bytes_ratio']:.0%}",
            ]
        )
    return _table(head, rows)


def _baselines_present(models: list[dict]) -> list[str]:
    """The whole-model baselines some model has a timing of, in column order."""
    return [b for b in MODEL_BASELINES if any(b in r.get("latency_s", {}) for r in models)]


def _ratio(lat: dict, base: str, key: str) -> str:
    """``base``'s latency over ``key``'s (> 1: ``key`` is faster); empty for a row itself."""
    if base == key:
        return ""
    value = lat[base] / lat[key] if lat.get(base) and lat.get(key) else None
    return common.fmt_ratio(value)


def _model_rows(r: dict, bases: list[str]) -> list[list[str]]:
    """One model's rows: its baselines (dense model) and its sparse builds."""
    lat, rows = r.get("latency_s", {}), []
    for key in ("ort", "openvino", "deepsparse", "tvm_dense"):
        if key in bases and (key in lat or key in ("ort", "tvm_dense")):
            label = "TVM dense" if key == "tvm_dense" else f"{MODEL_BASELINES[key]}, dense"
            ratios = [_ratio(lat, base, key) for base in bases]
            rows.append([r["description"], label, _ms(lat.get(key)), *ratios, "", "100%"])
    for key, build in r.get("builds", {}).items():
        sparsity = build.get("sparsity", r["sparsity_target"])
        rows.append(
            [
                r["description"],
                f"sparse-tvm, {sparsity:.0%} {build['pattern']}",
                _ms(lat.get(key)),
                *(_ratio(lat, base, key) for base in bases),
                f"{build['sparse_layers']} of {build['layers']}",
                f"{build['weight_bytes_ratio']:.0%}",
            ]
        )
        same = f"deepsparse/{key.split('/', 1)[1]}"  # DeepSparse on the same pruned model
        if same in lat:
            rows.append(
                [
                    r["description"],
                    f"DeepSparse, {sparsity:.0%} {build['pattern']}",
                    _ms(lat[same]),
                    *(_ratio(lat, base, same) for base in bases),
                    "",
                    "",
                ]
            )
    return rows


def model_table(models: list[dict]) -> list[str]:
    """One row per build of each model; a ``vs X`` column per baseline that ran (X's latency /
    the row's: > 1 means the row is faster)."""
    bases = _baselines_present(models) or ["tvm_dense", "ort"]
    head = [
        "model",
        "build",
        "latency ms",
        *(f"vs {MODEL_BASELINES[b]}" for b in bases),
        "sparse layers",
        "weight bytes",
    ]
    rows = [row for r in models for row in _model_rows(r, bases)]
    return _table(head, rows)


def _goal(r: dict, goal: str, measured: float | None, text: str, met) -> dict:
    return {
        "model": r["model"],
        "description": r["description"],
        "goal": goal,
        "measured": measured,
        "measured_text": "-" if measured is None else text.format(measured),
        "met": None if measured is None else met(measured),
    }


def goals(models: list[dict]) -> list[dict]:
    """The goals (:data:`GOALS`), one row per (model, goal): what was measured, whether met."""
    out = []
    for r in models:
        fam = r.get("family", r["model"])
        if fam not in GOALS:
            continue
        spec, lat = GOALS[fam], r.get("latency_s", {})
        if spec["dense"] is not None:
            dense = (
                lat["tvm_dense"] / lat["ort"] if lat.get("tvm_dense") and lat.get("ort") else None
            )
            out.append(
                _goal(
                    r,
                    f"dense build within {spec['dense']:g}x of onnxruntime's latency",
                    dense,
                    "{:.2f}x onnxruntime's latency",
                    lambda v, limit=spec["dense"]: v <= limit,
                )
            )
        pattern, label = spec["pattern"], f"sparse/{spec['pattern']}"
        what = f"{r['sparsity_target']:.0%} {pattern} build"
        sparse = lat["ort"] / lat[label] if lat.get(label) and lat.get("ort") else None
        out.append(
            _goal(
                r,
                f"{what} >= {spec['ort']:g}x faster than onnxruntime (dense model)",
                sparse,
                "{:.2f}x faster",
                lambda v, target=spec["ort"]: v >= target,
            )
        )
        if spec["deepsparse"] is None:
            continue
        if "deepsparse" not in lat and f"deepsparse/{pattern}" not in lat:
            continue  # DeepSparse did not run: an optional baseline, no goal row
        same = f"deepsparse/{pattern}"
        versus = lat[same] / lat[label] if lat.get(same) and lat.get(label) else None
        target = spec["deepsparse"]
        faster = (
            "faster than DeepSparse" if target == 1 else f">= {target:g}x faster than DeepSparse"
        )
        out.append(
            _goal(
                r,
                f"{what} {faster} on the same pruned model",
                versus,
                "{:.2f}x DeepSparse's speed",
                lambda v, target=target: v > target if target == 1 else v >= target,
            )
        )
    return out


def goals_table(rows: list[dict]) -> list[str]:
    """The goals as a markdown table: model, goal, measured, met / missed."""
    verdict = {True: "met", False: "**missed**", None: "not run"}
    return _table(
        ["model", "goal", "measured", "result"],
        [[g["description"], g["goal"], g["measured_text"], verdict[g["met"]]] for g in rows],
    )


def _split_cell(bucket: dict) -> str:
    return f"{bucket['ms']:,.2f} ({bucket['pct']:.0f}%)"


def _build_label(result: dict, key: str) -> str:
    if key == "tvm_dense":
        return "TVM dense"
    build = result["builds"].get(key, {"pattern": key.split("/")[-1]})
    return f"sparse-tvm, {build.get('sparsity', result['sparsity_target']):.0%} {build['pattern']}"


def time_split_table(models: list[dict]) -> list[str]:
    """Each CNN build's time split: ms per run (and % of the kernels' sum) per bucket."""
    head = [
        "model",
        "build",
        *(f"{label} ms" for label in BUCKETS.values()),
        "kernels' sum ms",
        "measured ms",
    ]
    rows = []
    for r in models:
        for key, split in r.get("time_split", {}).items():
            rows.append(
                [
                    r["description"],
                    _build_label(r, key),
                    *(_split_cell(split["buckets"][b]) for b in BUCKETS),
                    f"{split['sum_ms']:,.2f}",
                    _ms(None if split["end_to_end_ms"] is None else split["end_to_end_ms"] / 1e3),
                ]
            )
    return _table(head, rows)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.2f}"


def model_notes(models: list[dict]) -> list[str]:
    """What the whole-model table's baselines are (and which are missing), one paragraph."""
    bases = _baselines_present(models)
    notes = [
        "Baselines run on the unpruned model; each `vs X` column is X's latency / the row's "
        "(> 1: the row is faster)."
    ]
    if "openvino" in bases:
        notes.append(
            "OpenVINO: CPU plugin, f32 inference precision, latency hint, one stream, the "
            "same threads, interleaved with the others."
        )
    else:
        notes.append("OpenVINO is not installed: no OpenVINO column.")
    if "deepsparse" in bases:
        notes.append(
            "DeepSparse runs in its own process after the others (not interleaved): its "
            "ratios compare different rounds."
        )
    return [" ".join(notes), ""]


def goals_section(models: list[dict]) -> list[str]:
    """The goals' table (nothing without a model that has goals)."""
    rows = goals(models)
    if not rows:
        return []
    return [
        "### Goals",
        "",
        "Checked on each model with goals that ran; a smaller variant (the quick run's) is "
        "checked against its family's goals for information only: they are set at full size.",
        "",
        *goals_table(rows),
        "",
    ]


def time_split_section(models: list[dict]) -> list[str]:
    """The CNN builds' time split table (nothing without one)."""
    if not any(r.get("time_split") for r in models):
        return []
    return [
        "### Where the time goes (CNN builds)",
        "",
        "Each kernel call of the build timed inside the run (the Relax VM's instrument hook: "
        "`perf_counter` around every call, the median of each call over several runs) and "
        "summed per bucket: ms per run (% of the kernels' sum). Dense / depthwise: conv "
        "PrimFuncs with groups = 1 / > 1; sparse: the `sparse_*` kernels of conv layers and "
        "their `im2col_*`; other: transposes, pools, adds, activations after sparse kernels, "
        "the classifier. `measured` is the build's latency in the table above, without the "
        "hook: the sum holds the hook's own cost (~1-3 µs a call) and leaves out the VM's "
        "builtins (allocation, shape checks).",
        "",
        *time_split_table(models),
        "",
    ]


def op_split_section(models: list[dict]) -> list[str]:
    """Each non-CNN build's time by operator (``compiled.profile``), the largest first."""
    rows = []
    for r in models:
        for key, split in r.get("op_split", {}).items():
            groups = ", ".join(
                f"{g['group']} {g['ms']:,.2f} ({g['pct']:.0f}%)" for g in split["groups"][:6]
            )
            rows.append(
                [
                    r["description"],
                    _build_label(r, key),
                    groups,
                    f"{split['sum_ms']:,.2f}",
                    f"{split['end_to_end_ms']:,.2f}" if split.get("end_to_end_ms") else "-",
                ]
            )
    if not rows:
        return []
    return [
        "### Where the time goes (by operator)",
        "",
        "`compiled.profile`: each kernel call timed inside the run (the VM's instrument hook, "
        "the median of each call over several runs), summed per operator group: ms per run "
        "(% of the kernels' sum); `run alone` is the latency without the hook.",
        "",
        *_table(["model", "build", "largest operator groups, ms (share)", "kernels' sum ms",
                 "run alone ms"], rows),
        "",
    ]  # fmt: skip


def problems(data: dict) -> list[str]:
    """Errors and output mismatches of the run (an empty list on a clean run)."""
    out = []
    for item in data.get("kernels", []) + data.get("models", []):
        where = item.get("label", item.get("model"))
        if "pattern" in item and "label" in item:
            where = f"{where} {item['pattern']} {item['sparsity_target']:.0%}"
        for name, err in item.get("errors", {}).items():
            out.append(f"{where} {name}: {err}")
        for name, value in item.get("max_rel_err", {}).items():
            if value > 1e-3:
                out.append(f"{where} {name}: output differs from the reference ({value:.1e})")
    return out


def placement_line(data: dict) -> list[str]:
    """How the timed rounds of the models and kernels split by core placement (the two cores
    sharing an L3 or not, ``benchmarks/placement.py``), where the run recorded it."""
    counts: dict[str, int] = {}
    for entry in [*data.get("models", []), *data.get("kernels", [])]:
        for timing in (entry.get("timing") or {}).values():
            for where in timing.get("placements") or []:
                counts[where] = counts.get(where, 0) + 1
    total = sum(counts.values())
    if not total:
        return []
    shares = ", ".join(f"{counts[w] / total:.0%} {w}" for w in sorted(counts, key=counts.get)[::-1])
    return [
        f"Core placement of the {total} timed batches (the two cores sharing an L3 or not, "
        f"`benchmarks/placement.py`; 2-thread runs are ~2x slower far): {shares}. Each "
        "timing's rounds and their placements are in `suite.json`.",
        "",
    ]


def markdown(data: dict, headline_sparsity: float = 0.9) -> str:
    """The suite's report: machine, whole models, kernels at the headline sparsity, all
    kernel cases."""
    cfg = data["config"]
    lines = [
        "## Benchmark results",
        "",
        f"Machine: {machine_line(data)}.",
        "",
        "Latencies are medians over "
        + (f"{cfg['kernel_rounds']} (kernels) and " if data.get("kernels") else "")
        + f"{cfg['model_rounds']} (models, int8 cases) interleaved rounds; every ratio compares timings "
        "measured in the same run (same process, same rounds). A ratio > 1 means sparse-tvm is "
        "faster. Weights are pruned by block magnitude; `bytes` / `weight bytes` = stored "
        "sparse weights / dense weights.",
        "",
        *placement_line(data),
    ]
    if data.get("models"):  # the int8 preset times no whole float models
        lines += [
            "### Whole models",
            "",
            *model_notes(data["models"]),
            *model_table(data["models"]),
            "",
            *goals_section(data["models"]),
            *time_split_section(data["models"]),
            *op_split_section(data["models"]),
        ]
    lines += suite_int8.int8_section(data.get("int8", []))
    if data.get("kernels"):  # the CNN preset times no kernel cases: no empty table
        lines += [
            f"### Kernels at {headline_sparsity:.0%}",
            "",
            *kernel_table(data["kernels"], headline_sparsity),
            "",
        ]
    trouble = problems(data)
    if trouble:
        lines += ["Problems in this run:", "", *(f"- {t}" for t in trouble), ""]
    return "\n".join(lines)


def full_markdown(data: dict) -> str:
    """:func:`markdown` plus every kernel case (all sparsities), where there are any."""
    if not data.get("kernels"):
        return markdown(data)
    return (
        markdown(data)
        + "\n### Every kernel case\n\n"
        + "\n".join(kernel_table(data["kernels"]))
        + "\n"
    )


# ---------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Save atomically: a reader never sees half a PNG."""
    tmp = path.with_name(f".{path.name}.partial")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def plot_speedup(cases: list[dict], path: Path) -> Path:
    """Speed-up against sparsity, one panel per (baseline, pattern), one line per layer, with
    the ideal 1/(1-s) line."""
    import numpy as np

    plt = _pyplot()
    patterns = list(dict.fromkeys(c["pattern"] for c in cases))
    shapes = list(dict.fromkeys(c["label"] for c in cases))
    baselines = [("tvm_dense", "TVM dense"), ("ort", "onnxruntime")]
    fig, axes = plt.subplots(
        len(baselines),
        len(patterns),
        figsize=(4.6 * len(patterns), 3.6 * len(baselines)),
        sharex=True,
        sharey="row",
        squeeze=False,
    )
    colours = plt.get_cmap("tab10")
    s_all = [c["sparsity"] for c in cases]
    s_line = np.linspace(min(s_all + [0.5]), max(s_all), 100)
    for row, (base, base_label) in enumerate(baselines):
        for col, pattern in enumerate(patterns):
            ax = axes[row][col]
            ax.plot(s_line, 1 / (1 - s_line), "k--", lw=1.2, label="ideal 1/(1-s)")
            ax.axhline(1.0, color="0.6", lw=0.8)
            for i, shape in enumerate(shapes):
                points = sorted(
                    (c["sparsity"], c["speedup"][base])
                    for c in cases
                    if c["label"] == shape
                    and c["pattern"] == pattern
                    and c.get("speedup", {}).get(base)
                )
                if points:
                    xs, ys = zip(*points)
                    ax.plot(xs, ys, "o-", ms=3.5, lw=1.3, color=colours(i % 10), label=shape)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.25)
            ax.set_title(f"{pattern} blocks: vs {base_label}", fontsize=10)
            if row == len(baselines) - 1:
                ax.set_xlabel("sparsity (fraction of zero weights)")
            if col == 0:
                ax.set_ylabel(f"speed-up over {base_label}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    legend_rows = -(-len(labels) // 4)
    bottom = 0.02 + 0.035 * legend_rows
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    fig.suptitle("sparse-tvm sparse kernels: speed-up over dense, same run (medians)", fontsize=11)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_per_layer(result: dict, build: str, path: Path) -> Path | None:
    """Per-layer latency of one model, dense beside sparse (the compiler's measurements)."""
    import numpy as np

    rows = [
        r
        for r in result["builds"][build]["layer_rows"]
        if r["dense_us"] is not None and r["sparse_us"] is not None
    ]
    if not rows:
        return None
    plt = _pyplot()
    height = 1.6 + 0.42 * len(rows)
    fig, ax = plt.subplots(figsize=(8, height))
    y = np.arange(len(rows))
    dense = [r["dense_us"] for r in rows]
    kept = [r["sparse_us"] if r["format"] != "dense" else r["dense_us"] for r in rows]
    ax.barh(y - 0.2, dense, 0.4, color="#9ca3af", label="dense")
    ax.barh(y + 0.2, kept, 0.4, color="#1d4ed8", label="as compiled (sparse where faster)")
    for i, r in enumerate(rows):
        ax.text(
            max(dense[i], kept[i]) * 1.03,
            i,
            f"{r['format']}  {r['dense_us'] / kept[i]:.1f}x",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(y, [f"{r['name']} ({r['weight_shape'][0]}x{r['weight_shape'][1]})" for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("layer latency, µs (log)")
    ax.set_title(
        f"{result['description']}\n{result['sparsity_target']:.0%} "
        f"{result['builds'][build]['pattern']}: per-layer latency measured by the compiler",
        fontsize=10,
    )
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    ax.set_xlim(right=max(dense + kept) * 4)
    fig.tight_layout(rect=(0, 0.3 / height, 1, 1))  # room for the legend below
    out = _save(fig, path)
    plt.close(fig)
    return out


def _split_panel(ax, result: dict) -> None:
    """One model's builds as stacked horizontal bars (ms per run in each bucket)."""
    import numpy as np

    splits = list(result["time_split"].items())
    y = np.arange(len(splits))
    left = np.zeros(len(splits))
    for bucket, label in BUCKETS.items():
        widths = np.array([split["buckets"][bucket]["ms"] for _, split in splits])
        ax.barh(y, widths, 0.6, left=left, color=BUCKET_COLOURS[bucket], label=label)
        left += widths
    for i in range(len(splits)):
        ax.text(left[i] * 1.01, i, f"{left[i]:.2f} ms", va="center", fontsize=7)
    ax.set_yticks(y, [_build_label(result, key) for key, _ in splits], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left) * 1.15 or 1)
    ax.set_title(result["description"], fontsize=9)


def plot_time_split(models: list[dict], path: Path) -> Path | None:
    """The CNN builds' time split: one panel per model (its own scale), a stacked bar per build."""
    cnns = [r for r in models if r.get("time_split")]
    if not cnns:
        return None
    plt = _pyplot()
    heights = [0.6 + 0.35 * len(r["time_split"]) for r in cnns]
    total = sum(heights) + 1.0
    fig, axes = plt.subplots(
        len(cnns), 1, figsize=(8.5, total), squeeze=False, height_ratios=heights
    )
    for ax, result in zip(axes[:, 0], cnns, strict=True):
        _split_panel(ax, result)
    axes[-1][0].set_xlabel("ms per run (each kernel call timed in the run, summed per bucket)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Where the CNN builds' time goes", fontsize=10)
    fig.tight_layout(rect=(0, 0.3 / total, 1, 1))
    out = _save(fig, path)
    plt.close(fig)
    return out


def plot_all(data: dict, folder: Path, per_layer_pattern: str = "16x1") -> list[Path]:
    """Every plot of one run into ``folder``: the speed-up plot, one per-layer plot per
    model (its ``per_layer_pattern`` build, else its first) and the CNNs' time split."""
    written = []
    if data.get("kernels"):
        written.append(plot_speedup(data["kernels"], folder / SPEEDUP_PNG))
    for result in data.get("models", []):
        builds = result.get("builds", {})
        if not builds:
            continue
        build = f"sparse/{per_layer_pattern}"
        build = build if build in builds else next(iter(builds))
        path = plot_per_layer(result, build, folder / per_layer_png(result["model"]))
        if path is not None:
            written.append(path)
    path = plot_time_split(data.get("models", []), folder / TIME_SPLIT_PNG)
    if path is not None:
        written.append(path)
    path = suite_int8.plot_int8(data.get("int8", []), folder / suite_int8.INT8_PNG)
    if path is not None:
        written.append(path)
    return written
