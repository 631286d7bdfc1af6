"""What the benchmark suite writes: the markdown tables and the PNG plots of one run.

Everything here reads the suite's JSON data (``run_suite.py`` writes it as ``suite.json``), so
the tables and plots can be redrawn from a stored run:
``python benchmarks/run_suite.py --redraw DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import common  # noqa: I001  (puts the repository root on sys.path)

SPEEDUP_PNG = "speedup_vs_sparsity.png"
BASELINES = ("tvm_dense", "ort", "numpy", "scipy_csr")  # the kernel table's column order


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
        f"(TVM_NUM_THREADS={info['tvm_num_threads']}, onnxruntime intra-op {threads}, OpenBLAS "
        f"default); onnxruntime {info['onnxruntime']}, TVM {info['tvm']}, numpy "
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


def model_table(models: list[dict]) -> list[str]:
    head = [
        "model",
        "build",
        "latency ms",
        "vs TVM dense",
        "vs onnxruntime",
        "sparse layers",
        "weight bytes",
    ]
    rows = []
    for r in models:
        lat = r.get("latency_s", {})
        for key, label in (("ort", "onnxruntime, dense"), ("tvm_dense", "TVM dense")):
            rows.append([r["description"], label, _ms(lat.get(key)), "", "", "", "100%"])
        for key, build in r.get("builds", {}).items():
            up = r["speedup"].get(key, {})
            rows.append(
                [
                    r["description"],
                    f"sparse-tvm, {r['sparsity_target']:.0%} {build['pattern']}",
                    _ms(lat.get(key)),
                    common.fmt_ratio(up.get("tvm_dense")),
                    common.fmt_ratio(up.get("ort")),
                    f"{build['sparse_layers']} of {build['layers']}",
                    f"{build['weight_bytes_ratio']:.0%}",
                ]
            )
    return _table(head, rows)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:,.2f}"


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


def markdown(data: dict, headline_sparsity: float = 0.9) -> str:
    """The suite's report: machine, whole models, kernels at the headline sparsity, all
    kernel cases."""
    cfg = data["config"]
    lines = [
        "## Benchmark results",
        "",
        f"Machine: {machine_line(data)}.",
        "",
        f"Latencies are medians over {cfg['kernel_rounds']} (kernels) and "
        f"{cfg['model_rounds']} (models) interleaved rounds; every ratio compares timings "
        "measured in the same run (same process, same rounds). A ratio > 1 means sparse-tvm is "
        "faster. Weights are pruned by block magnitude; `bytes` / `weight bytes` = stored "
        "sparse weights / dense weights.",
        "",
        "### Whole models",
        "",
        *model_table(data.get("models", [])),
        "",
        f"### Kernels at {headline_sparsity:.0%}",
        "",
        *kernel_table(data.get("kernels", []), headline_sparsity),
        "",
    ]
    trouble = problems(data)
    if trouble:
        lines += ["Problems in this run:", "", *(f"- {t}" for t in trouble), ""]
    return "\n".join(lines)


def full_markdown(data: dict) -> str:
    """:func:`markdown` plus every kernel case (all sparsities)."""
    return (
        markdown(data)
        + "\n### Every kernel case\n\n"
        + "\n".join(kernel_table(data.get("kernels", [])))
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


def plot_all(data: dict, folder: Path, per_layer_pattern: str = "16x1") -> list[Path]:
    """Every plot of one run into ``folder``: the speed-up plot and one per-layer plot per
    model (its ``per_layer_pattern`` build, else its first)."""
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
    return written
