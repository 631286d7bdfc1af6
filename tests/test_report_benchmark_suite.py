"""The benchmark suite's outputs (JSON, markdown, PNG plots) from a tiny measured run.

The default test times one small layer, a small MLP and a tiny MobileNet for real (a couple of
rounds): what it checks is that the suite's numbers reach the JSON, the tables and the plots
intact, and that the CNN's time split adds up. The slow test runs
``benchmarks/run_suite.py --quick`` end to end, as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import run_suite  # noqa: E402
import suite_kernels  # noqa: E402
import suite_models  # noqa: E402
import suite_report  # noqa: E402
import suite_split  # noqa: E402

from sparse_tvm.examples import mlp, mobilenet  # noqa: E402

METHODS = ["sparse", "tvm_dense", "ort", "numpy", "scipy_csr"]
OPENVINO = common.openvino_module() is not None  # its column exists only where it is installed
TINY_CNN_DW = 3  # depthwise convs of the tiny MobileNet (one per block)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    shapes = [
        suite_kernels.KernelShape("tiny.fc", "matmul", 64, 32, 8),
        suite_kernels.KernelShape("tiny.conv", "conv1x1", 32, 16, 16),
    ]
    kernels = []
    for shape in shapes:
        kernels += suite_kernels.run_shape(
            shape, [0.5, 0.9], ["16x1"], rounds=2, batch_s=0.002, say=lambda _: None
        )
    models = [
        suite_models.run_model(
            "mlp",
            0.9,
            ["16x1", "1x1@0.5"],
            rounds=2,
            batch_s=0.002,
            model=mlp(batch=4, features=32, hidden=64),
            say=lambda _: None,
        ),
        suite_models.run_model(
            "mobilenet",
            0.9,
            ["16x1"],
            rounds=2,
            batch_s=0.002,
            model=mobilenet(size=32, width=0.25, blocks=TINY_CNN_DW, classes=10),
            split_runs=3,
            say=lambda _: None,
        ),
    ]
    config = dict(run_suite.PRESETS["quick"], shapes=shapes, kernel_rounds=2, model_rounds=2)
    data = {
        "machine": common.machine(),
        "config": {**config, "shapes": [vars(s) for s in shapes]},
        "kernels": kernels,
        "models": models,
        "goals": suite_report.goals(models),
    }
    folder = tmp_path_factory.mktemp("suite")
    written = run_suite.write_outputs(data, folder)
    return data, folder, written


def test_kernel_cases_are_measured_and_checked(tiny_run):
    data, _, _ = tiny_run
    cases = data["kernels"]
    assert [(c["shape"], c["sparsity_target"]) for c in cases] == [
        ("tiny.fc", 0.5),
        ("tiny.fc", 0.9),
        ("tiny.conv", 0.5),
        ("tiny.conv", 0.9),
    ]
    for c in cases:
        assert c["errors"] == {}, c["errors"]
        assert set(c["max_rel_err"]) == set(METHODS)
        assert max(c["max_rel_err"].values()) < 1e-4
        assert c["format"] == "bsr 16x1"
        assert all(c["latency_s"][name] > 0 for name in METHODS)
        for name in ("tvm_dense", "ort", "numpy", "scipy_csr"):
            assert c["speedup"][name] == pytest.approx(
                c["latency_s"][name] / c["latency_s"]["sparse"]
            )
        assert c["sparsity"] == pytest.approx(c["sparsity_target"], abs=0.01)
        assert c["ideal_speedup"] == pytest.approx(1 / (1 - c["sparsity"]))
        assert c["timing"]["sparse"]["rounds"] == 2 and len(c["timing"]["sparse"]["samples_s"]) == 2
    # the dense baselines are timed once per shape and shared by its variants
    fc = [c for c in cases if c["shape"] == "tiny.fc"]
    assert fc[0]["latency_s"]["ort"] == fc[1]["latency_s"]["ort"]
    assert fc[0]["latency_s"]["sparse"] != fc[1]["latency_s"]["sparse"]


def test_model_result_has_layers_and_matches_onnxruntime(tiny_run):
    result = tiny_run[0]["models"][0]
    assert result["errors"] == {}
    assert max(result["max_rel_err"].values()) < 1e-4
    baselines = {"ort", "tvm_dense"} | ({"openvino"} if OPENVINO else set())
    builds = {"sparse/16x1", "sparse/1x1@0.5"}
    assert set(result["latency_s"]) == baselines | builds
    assert set(result["max_rel_err"]) == baselines - {"ort"} | builds
    assert "time_split" not in result  # an MLP has no convs
    build = result["builds"]["sparse/16x1"]
    assert [r["name"] for r in build["layer_rows"]] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    lat = result["latency_s"]
    assert result["speedup"]["sparse/16x1"]["ort"] == pytest.approx(lat["ort"] / lat["sparse/16x1"])


def test_json_and_markdown_carry_the_measured_numbers(tiny_run):
    data, folder, written = tiny_run
    assert {p.name for p in written} == {
        "suite.json",
        "suite.md",
        suite_report.SPEEDUP_PNG,
        suite_report.TIME_SPLIT_PNG,
        *(suite_report.per_layer_png(m) for m in ("mlp", "mobilenet")),
        *(suite_report.report_html(m) for m in ("mlp", "mobilenet")),
    }
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written)
    stored = json.loads((folder / "suite.json").read_text())
    assert stored["kernels"][1]["latency_s"] == data["kernels"][1]["latency_s"]
    md = (folder / "suite.md").read_text()
    assert "Problems in this run" not in md
    for c in data["kernels"]:
        cells = (
            f"| {c['label']} | 16x1 | {c['sparsity']:.0%} | {common.fmt_us(c['latency_s']['sparse'])}"
            f" | {common.fmt_us(c['latency_s']['tvm_dense'])} |"
        )
        assert cells in md
    headline = md.split("### Kernels at 90%")[1].split("###")[0]
    assert headline.count("| tiny.") == 2  # only the 90 % cases
    assert f"{data['machine']['cores']} cores" in md and "same run" in md
    # every timed batch's core placement, counted in the report
    placements = [
        where
        for entry in [*data["models"], *data["kernels"]]
        for timing in entry["timing"].values()
        for where in timing["placements"]
    ]
    assert placements and set(placements) <= {"near", "far", "mixed", "unknown"}
    assert f"Core placement of the {len(placements)} timed batches" in md
    page = (folder / suite_report.report_html("mlp")).read_text(encoding="utf-8")
    assert page.count('<img class="pattern"') == 3
    assert "fc2.weight" in page.replace("<wbr>", "")  # names may break at their dots


def test_plots_are_real_pictures(tiny_run):
    _, folder, _ = tiny_run
    for name, min_size in (
        (suite_report.SPEEDUP_PNG, (400, 600)),
        ("per_layer_mlp.png", (500, 200)),
        (suite_report.TIME_SPLIT_PNG, (500, 150)),
    ):
        with Image.open(folder / name) as image:
            assert image.format == "PNG"
            assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
            pixels = np.asarray(image.convert("RGB"))
        colours = {tuple(p) for p in pixels.reshape(-1, 3)[::7]}
        assert len(colours) > 20  # lines, bars and text, not a blank canvas


def test_problems_are_listed():
    data = {
        "kernels": [
            {
                "label": "x",
                "pattern": "4x1",
                "sparsity_target": 0.9,
                "errors": {"sparse": "boom"},
                "max_rel_err": {"sparse": 0.5, "ort": 1e-7},
            }
        ],
        "models": [],
    }
    assert suite_report.problems(data) == [
        "x 4x1 90% sparse: boom",
        "x 4x1 90% sparse: output differs from the reference (5.0e-01)",
    ]


def test_other_models_get_their_time_by_operator_and_builds_their_own_sparsity(tiny_run):
    data, folder, _ = tiny_run
    result = data["models"][0]
    assert result["errors"] == {}, result["errors"]
    assert "time_split" not in result
    assert set(result["op_split"]) == {"tvm_dense", "sparse/16x1", "sparse/1x1@0.5"}
    build = result["builds"]["sparse/1x1@0.5"]
    assert (build["pattern"], build["sparsity"]) == ("1x1", 0.5)
    assert all(abs(row["sparsity"] - 0.5) < 0.02 for row in build["layer_rows"])
    for label, split in result["op_split"].items():
        groups = {g["group"]: g for g in split["groups"]}
        assert sum(g["pct"] for g in groups.values()) == pytest.approx(100)
        sparse_layers = result["builds"].get(label, {}).get("sparse_layers", 0)
        assert groups.get("sparse layer", {"calls": 0})["calls"] == sparse_layers
    md = (folder / "suite.md").read_text()
    assert "| sparse-tvm, 50% 1x1 |" in md
    section = md.split("### Where the time goes (by operator)")[1].split("###")[0]
    assert section.count("| MLP") == 3


def test_cnn_time_split_adds_up(tiny_run):
    data, folder, _ = tiny_run
    result = data["models"][1]
    assert result["errors"] == {}, result["errors"]
    assert set(result["time_split"]) == {"tvm_dense", "sparse/16x1"}
    for label, split in result["time_split"].items():
        buckets = split["buckets"]
        assert list(buckets) == list(suite_split.BUCKETS)
        assert sum(b["ms"] for b in buckets.values()) == pytest.approx(split["sum_ms"])
        assert sum(b["pct"] for b in buckets.values()) == pytest.approx(100)
        assert split["end_to_end_ms"] == pytest.approx(result["latency_s"][label] * 1e3)
        # timed in the run, the calls add up to about the latency (plus the hook, ~µs a call)
        assert 0 < split["sum_ms"] < 2 * split["end_to_end_ms"] + 0.01 * split["kernel_calls"]
        assert buckets["depthwise_conv"]["calls"] == TINY_CNN_DW  # depthwise convs stay dense
    dense = result["time_split"]["tvm_dense"]["buckets"]
    assert dense["sparse_conv"]["calls"] == 0
    assert dense["dense_conv"]["calls"] == 1 + TINY_CNN_DW  # the stem and the 1x1 convs
    rows = result["builds"]["sparse/16x1"]["layer_rows"]
    sparse_convs = [r for r in rows if r["format"] != "dense" and r["name"] != "fc.weight"]
    sparse = result["time_split"]["sparse/16x1"]["buckets"]
    assert sparse["sparse_conv"]["calls"] >= len(sparse_convs)
    assert sparse["dense_conv"]["calls"] == 1 + TINY_CNN_DW - len(sparse_convs)
    md = (folder / "suite.md").read_text()
    section = md.split("### Where the time goes")[1].split("###")[0]
    assert section.count("| MobileNet-v1") == 2
    goals = md.split("### Goals\n")[1].split("###")[0]
    assert goals.count("| MobileNet-v1") == 2 and "within 1.2x of onnxruntime" in goals
    assert ("vs OpenVINO" in md) == OPENVINO


def test_split_buckets_by_primfunc():
    layers = {"block1_pw_weight", "stem_weight"}
    nhwc_dw = ((1, 16, 16, 32), (3, 3, 1, 32), (1, 1, 1, 32), (1, 16, 16, 32))
    nhwc_1x1 = ((1, 16, 16, 32), (1, 1, 32, 64), (1, 1, 1, 64), (1, 16, 16, 64))
    nhwc_stem = ((1, 32, 32, 3), (3, 3, 3, 32), (1, 16, 16, 32))
    nchw_dw = ((1, 32, 16, 16), (32, 1, 3, 3), (1, 32, 8, 8))
    nchw_1x1 = ((1, 32, 7, 7), (64, 32, 1, 1), (1, 64, 7, 7))
    assert suite_split.conv_groups(nhwc_dw) == 32 and suite_split.conv_groups(nchw_dw) == 32
    packed_dw = ((1, 16, 16, 64), (2, 3, 3, 1, 32), (1, 1, 1, 64), (1, 16, 16, 64))
    packed_1x1 = ((1, 16, 16, 32), (2, 1, 1, 32, 32), (1, 16, 16, 64))
    assert suite_split.conv_groups(packed_dw) == 64 and suite_split.conv_groups(packed_1x1) == 1
    assert {suite_split.conv_groups(s) for s in (nhwc_1x1, nhwc_stem, nchw_1x1)} == {1}
    classify = suite_split.classify
    assert classify("fused_conv2d3_add2_maximum1_minimum11", nhwc_dw, layers) == "depthwise_conv"
    assert classify("fused_conv2d_add_relu1", nhwc_stem, layers) == "dense_conv"
    assert classify("conv2d1", nchw_1x1, layers) == "dense_conv"
    assert classify("sparse_16x1_block1_pw_weight1", (), layers) == "sparse_conv"
    assert classify("im2col_stem_weight1", (), layers) == "sparse_conv"
    assert classify("depthwise_nchw_32x16x16_s2", nchw_dw, layers) == "depthwise_conv"
    assert classify("sparse_8x1_fc_weight1", (), layers) == "other"  # the classifier's
    assert classify("sparse_4x1_block1_pw_weight_extra", (), layers) == "other"
    for other in ("transpose1", "fused_reshape5_maximum1_minimum11", "mean1", "max_pool2d1"):
        assert classify(other, nhwc_1x1, layers) == "other"


def test_baseline_columns_follow_what_ran():
    def model(latency: dict) -> dict:
        return {
            "model": "resnet50",
            "family": "resnet50",
            "description": "ResNet-50",
            "sparsity_target": 0.9,
            "latency_s": latency,
            "builds": {
                "sparse/4x1": {
                    "pattern": "4x1",
                    "sparse_layers": 50,
                    "layers": 54,
                    "weight_bytes_ratio": 0.15,
                }
            },
        }

    plain = {"ort": 0.02, "tvm_dense": 0.022, "sparse/4x1": 0.005}
    head = suite_report.model_table([model(plain)])[0]
    assert "vs OpenVINO" not in head and "vs DeepSparse" not in head
    table = suite_report.model_table([model({**plain, "openvino": 0.01, "deepsparse": 0.004})])
    assert "vs OpenVINO" in table[0] and "vs DeepSparse" in table[0]
    assert (
        "| ResNet-50 | sparse-tvm, 90% 4x1 | 5.00 | 4.40x | 4.00x | 2.00x | 0.80x |"
        in "\n".join(table)
    )
    verdicts = [(g["measured"], g["met"]) for g in suite_report.goals([model(plain)])]
    assert verdicts == [(pytest.approx(1.1), True), (pytest.approx(4.0), True)]
    # DeepSparse on the same pruned model: a row of the table and a goal of its own
    both = {**plain, "deepsparse": 0.012, "deepsparse/4x1": 0.006}
    table = "\n".join(suite_report.model_table([model(both)]))
    assert "| ResNet-50 | DeepSparse, 90% 4x1 | 6.00 | 3.67x | 3.33x | 2.00x |" in table
    goals = suite_report.goals([model(both)])
    assert [(g["measured"], g["met"]) for g in goals][2] == (pytest.approx(1.2), True)
    assert "same pruned model" in goals[2]["goal"]
    slower = suite_report.goals([model({**both, "deepsparse/4x1": 0.004})])[2]
    assert slower["met"] is False and slower["measured"] == pytest.approx(0.8)
    # a run of models only (the CNN preset) has no kernel sections, not empty tables
    data = {"config": {"kernel_rounds": 0, "model_rounds": 7}, "models": [model(both)]}
    data["machine"] = common.machine()
    md = suite_report.full_markdown(data)
    assert "| ResNet-50 | DeepSparse, 90% 4x1 |" in md and "### Goals" in md
    assert "### Kernels" not in md and "### Every kernel case" not in md


def test_without_openvino_the_column_is_left_out(monkeypatch):
    monkeypatch.setattr(common, "openvino_module", lambda: None)
    result = suite_models.run_model(
        "mlp",
        0.9,
        [],
        rounds=1,
        batch_s=0.001,
        model=mlp(batch=2, features=8, hidden=16),
        say=lambda _: None,
    )
    assert result["errors"] == {} and set(result["latency_s"]) == {"ort", "tvm_dense"}
    table = "\n".join(suite_report.model_table([result]))
    assert "OpenVINO" not in table and "| TVM dense |" in table
    assert "OpenVINO is not installed" in " ".join(suite_report.model_notes([result]))


@pytest.mark.slow
def test_quick_suite_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run_suite.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "suite.json").read_text())
    assert len(data["kernels"]) == 2 * 2 * 3 and len(data["models"]) == 2
    assert suite_report.problems(data) == []
    assert (tmp_path / suite_report.SPEEDUP_PNG).stat().st_size > 10_000
    assert set(data["models"][1]["time_split"]) == {"tvm_dense", "sparse/4x1"}
    assert (tmp_path / suite_report.TIME_SPLIT_PNG).stat().st_size > 10_000
    assert "### Kernels at 90%" in result.stdout and "### Where the time goes" in result.stdout


def test_mobilenet_example_compiles_sparse_and_matches_onnxruntime():
    import sparse_tvm as st
    from sparse_tvm.examples import mobilenet
    from sparse_tvm.pruning import prune_magnitude
    from tests.conftest import ort_run, random_inputs

    model = prune_magnitude(mobilenet(size=32, width=0.5, blocks=4, classes=10), 0.9, "16x1")
    names = [n.name for n in model.graph.node if n.op_type == "Conv"]
    assert names == ["stem"] + [f"block{i}.{kind}" for i in range(1, 5) for kind in ("dw", "pw")]
    inputs = random_inputs(model)
    compiled = st.compile(model, "x86", measure=False)
    formats = {row.name: row.format for row in compiled.report.layers}
    assert formats["block4.dw.weight"] == "dense"  # depthwise convs stay dense
    assert formats["block4.pw.weight"].startswith(("bsr", "csr"))
    np.testing.assert_allclose(
        compiled.run(inputs)[0], ort_run(model, inputs)[0], rtol=1e-4, atol=1e-4
    )


def test_int8_cases_reach_the_table_the_goals_and_the_plot(tmp_path):
    import suite_int8

    def case(name, lat, err):
        st_int8 = lat["st_int8"]
        return {
            "case": name,
            "int8_layers": 1,
            "layers": 1,
            "latency_s": lat,
            "int8_speedup_over": {k: v / st_int8 for k, v in lat.items() if k != "st_int8"},
            "max_rel_err": {"st_int8_vs_ort_int8": err},
        }

    cases = [
        case(
            "ffn.down",
            {"st_int8": 1e-4, "st_float32": 3e-4, "ort_int8": 6e-4, "ort_float32": 3e-3},
            7e-8,
        ),
        case(
            "minilm",
            {"st_int8": 3e-3, "st_float32": 3.5e-3, "ort_int8": 6e-3, "ort_float32": 2e-2},
            0.02,
        ),
    ]
    goals = {(g["case"], g["goal"].split(" (")[0]): g for g in suite_int8.int8_goals(cases)}
    assert goals[("ffn.down", ">= 2x sparse-tvm float32")]["met"]  # 3.00x
    assert goals[("ffn.down", ">= 5x onnxruntime int8")]["met"]  # 6.00x
    assert not goals[("minilm", ">= 3x onnxruntime int8")]["met"]  # 2.00x
    assert not goals[("minilm", "max rel error vs onnxruntime int8 <= 0.01")]["met"]
    text = "\n".join(suite_int8.int8_section(cases))
    assert (
        "| ffn.down | 1/1 | 0.100 | 0.300 | 0.600 | 3.000 | 3.00x / 6.00x / 30.00x | 7.0e-08 |"
        in text
    )
    assert "| minilm | >= 3x onnxruntime int8 (same QDQ model) | 2.00x | MISSED |" in text
    png = suite_int8.plot_int8(cases, tmp_path / "int8.png")
    assert Image.open(png).size[0] > 400
    assert (
        suite_int8.int8_section([]) == [] and suite_int8.plot_int8([], tmp_path / "x.png") is None
    )
