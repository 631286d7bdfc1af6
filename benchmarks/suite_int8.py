"""The benchmark suite's int8 part (issue 16): prune -> quantize -> compile, timed against
onnxruntime's int8 and float32 runs and sparse-tvm's float build, its table, goals and plot.

The cases are ``bench_int8_models.py``'s (BERT-base FFN layers at M = 128, a BERT-base encoder
layer, MiniLM-L6: 90 % in 16x4 blocks, per-channel int8 weights, uint8 activations); they need
AVX-512 VNNI, and on a host without it the suite says so and writes no int8 table.
"""

from __future__ import annotations

from pathlib import Path

import common  # noqa: I001  (puts the repository root on sys.path)

from sparse_tvm.target.host_cpu import cpu_flags

INT8_PNG = "int8.png"
METHODS = ("st_int8", "st_float32", "ort_int8", "ort_float32")
LABELS = {
    "st_int8": "sparse-tvm int8",
    "st_float32": "sparse-tvm float32 (same pruned model)",
    "ort_int8": "onnxruntime int8 (same QDQ model)",
    "ort_float32": "onnxruntime float32",
}
# issue 16: (baseline, at least this many times faster) per case
GOALS = {
    "ffn.up": [("st_float32", 2.0), ("ort_int8", 5.0)],
    "ffn.down": [("st_float32", 2.0), ("ort_int8", 5.0)],
    "bert_layer": [("ort_int8", 3.0)],
    "minilm": [("ort_int8", 3.0)],
}
ERROR_GOAL = 1e-2  # max relative error against onnxruntime's run of the same QDQ model


def has_vnni() -> bool:
    return "avx512_vnni" in cpu_flags()


def run_int8(cases: list[str], sparsity: float, rounds: int, seed: int, say) -> list[dict]:
    """Each case of ``bench_int8_models.run_case`` (none without VNNI)."""
    if not cases:
        return []
    if not has_vnni():
        say("# int8: this host has no AVX-512 VNNI: no int8 cases")
        return []
    import bench_int8_models

    results = []
    for name in cases:
        case = bench_int8_models.run_case(name, sparsity, rounds, seed, say)
        over = ", ".join(f"{k} {v:.2f}x" for k, v in case["int8_speedup_over"].items())
        say(f"  int8 {name}: faster than {over}; load {common.fmt_load(common.loadavg())}")
        results.append(case)
    return results


def int8_goals(cases: list[dict]) -> list[dict]:
    """Each case's goals: speed-ups over its baselines and the error bound, measured or not."""
    rows = []
    for case in cases:
        for base, want in GOALS.get(case["case"], []):
            got = case.get("int8_speedup_over", {}).get(base)
            rows.append(
                {
                    "case": case["case"],
                    "goal": f">= {want:g}x {LABELS[base]}",
                    "kind": "speedup",
                    "measured": got,
                    "met": got is not None and got >= want,
                }
            )
        err = case.get("max_rel_err", {}).get("st_int8_vs_ort_int8")
        rows.append(
            {
                "case": case["case"],
                "goal": f"max rel error vs onnxruntime int8 <= {ERROR_GOAL:g}",
                "kind": "error",
                "measured": err,
                "met": err is not None and err <= ERROR_GOAL,
            }
        )
    return rows


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def int8_section(cases: list[dict]) -> list[str]:
    """The markdown of the int8 cases: latencies, ratios, errors and the goals."""
    if not cases:
        return []
    head = ["case (90 % 16x4)", "int8 layers", *(f"{LABELS[m]} ms" for m in METHODS)]
    head += ["int8 over " + ", ".join(LABELS[m].split(" (")[0] for m in METHODS[1:])]
    head += ["max rel err vs ort int8"]
    lines = ["### int8 (issue 16)", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for case in cases:
        lat = case["latency_s"]
        over = case["int8_speedup_over"]
        cells = [case["case"], f"{case['int8_layers']}/{case['layers']}"]
        cells += [_ms(lat.get(m)) for m in METHODS]
        cells.append(" / ".join(f"{over[m]:.2f}x" if m in over else "-" for m in METHODS[1:]))
        cells.append(f"{case['max_rel_err']['st_int8_vs_ort_int8']:.1e}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| case | goal | measured | |", "|---|---|--:|---|"]
    for row in int8_goals(cases):
        got = row["measured"]
        shown = "-" if got is None else f"{got:.2f}x" if row["kind"] == "speedup" else f"{got:.1e}"
        lines.append(
            f"| {row['case']} | {row['goal']} | {shown} | {'met' if row['met'] else 'MISSED'} |"
        )
    lines += ["", f"![int8 latencies]({INT8_PNG})", ""]
    return lines


def plot_int8(cases: list[dict], path: Path) -> Path | None:
    """One group of bars per case: each method's median latency (ms, log scale), the int8
    build's speed-up over each written above its bar."""
    if not cases:
        return None
    from suite_report import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.0))
    width = 0.8 / len(METHODS)
    colours = ["#1d4ed8", "#93c5fd", "#f59e0b", "#9ca3af"]
    for i, method in enumerate(METHODS):
        xs, ys = [], []
        for j, case in enumerate(cases):
            seconds = case["latency_s"].get(method)
            if seconds:
                xs.append(j + (i - (len(METHODS) - 1) / 2) * width)
                ys.append(seconds * 1e3)
        bars = ax.bar(xs, ys, width, label=LABELS[method], color=colours[i])
        if method != "st_int8":
            for bar, case in zip(bars, [c for c in cases if c["latency_s"].get(method)]):
                over = case["int8_speedup_over"].get(method)
                if over:
                    ax.annotate(
                        f"{over:.1f}x",
                        (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)), [c["case"] for c in cases])
    ax.set_ylabel("ms per run (median)")
    ax.set_title("int8 at 90 % (16x4 blocks): labels = sparse-tvm int8's speed-up", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out
