"""The report's weight-pattern summary, its JSON round trip, and the HTML page built from it."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from sparse_tvm.errors import SparseTVMError
from sparse_tvm.report import (
    ESTIMATED,
    MEASURED,
    MEASURED_ON_BOARD,
    RULE,
    LayerReport,
    Report,
    pattern_density,
    pattern_summary,
)
from sparse_tvm.report_html import pattern_png, png_bytes, render_html, write_html


def test_pattern_summary_is_the_exact_density_of_each_cell():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3072, 768)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0.0
    w[:48, :] = 0.0  # the first row of cells (3072 / 64 = 48 rows each) is empty
    summary = pattern_summary(w)
    assert summary["grid"] == [64, 64]
    density = pattern_density(summary)
    cells = (w != 0).reshape(64, 48, 64, 12).mean(axis=(1, 3))
    np.testing.assert_allclose(density, cells, atol=0.5 / 255)
    assert density[0].max() == 0.0
    assert density.mean() == pytest.approx(np.mean(w != 0), abs=1e-3)


def test_pattern_summary_of_a_small_weight_keeps_every_entry():
    w = np.zeros((10, 7), np.float32)
    w[3, 5] = 1.0
    w[9, 0] = -2.0
    density = pattern_density(pattern_summary(w))
    assert density.shape == (10, 7)
    np.testing.assert_array_equal(np.argwhere(density == 1.0), [[3, 5], [9, 0]])
    assert density.sum() == 2.0


def test_pattern_summary_of_uneven_cells():
    w = np.ones((100, 130), np.float32)
    w[:, 65:] = 0.0  # the right half of the columns is zero
    density = pattern_density(pattern_summary(w))
    assert density.shape == (64, 64)
    assert density[:, :32].min() == 1.0 and density[:, 33:].max() == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        pattern_summary(np.zeros((0, 4)))


def _report() -> Report:
    w = np.zeros((64, 32), np.float32)
    w[:16, :8] = 1.0  # a quarter of the (64, 32) weight: the top-left 16 x 8 corner
    rows = [
        LayerReport(
            name="fc1 <b>&</b>",
            op="matmul",
            weight_shape=[64, 32],
            m=8,
            sparsity=float(np.mean(w == 0)),
            zero_blocks={"1x1": 0.9375},
            format="bsr 16x1",
            dense_us=10.0,
            sparse_us=4.0,
            dense_bytes=w.size * 4,
            stored_bytes=1000,
            pattern=pattern_summary(w),
            layer="blocks.0.fc1",
            decided_by=MEASURED,
            decided_speedup=2.5,
            fused=["bias", "gelu"],
        ),
        LayerReport(
            name="fc2",
            op="matmul",
            weight_shape=[10, 64],
            m=8,
            sparsity=0.0,
            zero_blocks={},
            format="dense",
            dense_us=2.0,
            sparse_us=3.0,
            dense_bytes=2560,
            stored_bytes=2560,
            pattern=pattern_summary(np.ones((10, 64))),
            decided_by=MEASURED,
            decided_speedup=2 / 3,
        ),
    ]
    return Report(model="m.onnx", target="x86", layers=rows, notes=["a note"])


def test_report_json_round_trip_keeps_the_pattern_and_skips_unknown_fields():
    report = _report()
    data = report.to_dict()
    data["layers"][0]["field_of_a_newer_version"] = 1
    again = Report.from_dict(data)
    assert again.layers[0].pattern == report.layers[0].pattern
    assert again.to_dict() == report.to_dict()
    old = report.to_dict()
    del old["layers"][1]["pattern"]  # artefacts written before patterns were stored
    assert Report.from_dict(old).layers[1].pattern is None


def test_rows_say_what_the_sparse_kernel_took_in():
    report = _report()
    text = str(report).splitlines()
    fc1 = next(line for line in text if line.startswith("blocks.0.fc1"))
    fc2 = next(line for line in text if line.startswith("fc2"))
    assert " matmul+bias+gelu " in fc1 and " matmul " in fc2 and "+" not in fc2
    assert ">matmul+bias+gelu<" in render_html(report)
    assert report.to_dict()["layers"][0]["fused"] == ["bias", "gelu"]
    old = report.to_dict()
    del old["layers"][0]["fused"]  # artefacts written before the field
    assert Report.from_dict(old).layers[0].op_label == "matmul"


def test_png_bytes_decode_to_the_same_pixels():
    rgb = np.random.default_rng(1).integers(0, 256, (5, 9, 3), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(rgb))).convert("RGB"))
    np.testing.assert_array_equal(decoded, rgb)
    image = np.asarray(Image.open(io.BytesIO(pattern_png(np.array([[0.0, 1.0]])))))
    assert tuple(image[0, 0]) == (255, 255, 255) and image[0, 1].max() < 140


def test_html_is_self_contained_and_escaped():
    report = _report()
    page = render_html(report)
    assert page.count('<tr class="layer') == 2
    assert page.count('<tr class="layer sparse">') == 1
    shown = page.replace("<wbr>", "")  # line-break opportunities in names, after / and .
    assert "fc1 &lt;b&gt;&amp;&lt;/b&gt;" in shown and "<b>&</b>" not in page
    assert '<td class="text wrap name">blocks.<wbr>0.<wbr>fc1</td>' in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len(sources) == 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "<link" not in page and "url(" not in page
    # totals: 12 us all dense against 4 + 2 us as compiled (fc2 stays dense)
    assert "6.0 µs as compiled against 12.0 µs all dense (2.00x" in page


def test_write_html_is_atomic_and_refuses_bad_paths(tmp_path):
    path = write_html(_report(), tmp_path / "r.html")
    assert path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    with pytest.raises(SparseTVMError, match="does not exist"):
        write_html(_report(), tmp_path / "missing" / "r.html")
    with pytest.raises(SparseTVMError, match="is a directory"):
        write_html(_report(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def _row(name: str, decided_by: str, speedup: float | None, **extra) -> LayerReport:
    fields = dict(
        name=name,
        op="matmul",
        weight_shape=[64, 32],
        m=8,
        sparsity=0.9,
        zero_blocks={"16x1": 0.9},
        format="bsr 16x1",
        dense_bytes=8192,
        stored_bytes=1000,
        decided_by=decided_by,
        decided_speedup=speedup,
    )
    return LayerReport(**(fields | extra))


def test_each_layer_says_what_decided_its_format_in_text_json_and_html():
    report = Report(
        model="m.onnx",
        target="aarch64",
        layers=[
            _row(
                "val_86",
                MEASURED,
                13.56,
                layer="encoder.layers.0.linear1",
                dense_us=13.56,
                sparse_us=1.0,
                reason="cost model estimated 6.0x; measured 13.56x over dense: kept sparse",
            ),
            _row(
                "onnx::MatMul_7", MEASURED_ON_BOARD, 2.5, layer="head", dense_us=5.0, sparse_us=2.0
            ),
            _row("w3", ESTIMATED, 6.0, reason="estimated (cost model) 6.00x over dense; not timed"),
            _row("w4", ESTIMATED, 0.75, format="dense", stored_bytes=8192),
            _row("w5", RULE, None, format="dense", reason="depthwise conv stays dense"),
        ],
    )
    expected = [
        "measured 13.56x",
        "measured on the board 2.50x",
        "estimated (cost model) 6.00x",
        "estimated (cost model) 0.75x",
        "rule",
    ]
    assert [row.decision for row in report.layers] == expected
    assert report.decision_notes() == [
        "1 layer measured on this host at compile time (each layer built alone, dense and "
        "sparse; latencies are medians; a sparse format kept only where it was measurably "
        "faster)",
        "1 layer measured on the board while tuning (the dense and sparse latencies in the "
        "records' layer timings), not on this host",
        "2 layers estimated by the cost model, not timed (no latencies)",
        "1 layer kept dense by a rule (unsupported layer, sparsity threshold), not timed",
    ]

    lines = str(report).splitlines()
    head = lines[1]
    assert head.index("layer") < head.index("weight") < head.index("op")
    decided = head.index("decided by")
    for row, line in zip(report.layers, lines[3:8], strict=True):
        assert line.startswith(row.display_name)  # the module path, else the weight name
        assert f" {row.name} " in line or line.split()[0] == row.name
        assert line[decided:].startswith(row.decision)
    assert lines[3].split()[:2] == ["encoder.layers.0.linear1", "val_86"]
    assert lines[5].split()[:2] == ["w3", "w3"]
    assert lines[-4:] == report.decision_notes()

    data = report.to_dict()
    assert data["decisions"] == report.decision_notes()
    assert [r["decision"] for r in data["layers"]] == expected
    assert [(r["decided_by"], r["decided_speedup"]) for r in data["layers"]] == [
        (row.decided_by, row.decided_speedup) for row in report.layers
    ]
    assert [(r["layer"], r["weight"]) for r in data["layers"]][:2] == [
        ("encoder.layers.0.linear1", "val_86"),
        ("head", "onnx::MatMul_7"),
    ]

    page = render_html(report)
    for text in expected:
        assert f'<td class="text wrap decided">{text}</td>' in page
    decisions = re.search(r'<ul class="decisions" id="decisions">(.*?)</ul>', page).group(1)
    assert re.findall(r"<li>(.*?)</li>", decisions) == [
        line.replace("'", "&#x27;") for line in report.decision_notes()
    ]
    assert "Latencies are medians measured per layer" not in page
    # the two timed layers: one on this host, one on the board
    assert "over the 2 layers measured on this host at compile time or on the board" in page


def test_rows_of_an_older_artefact_say_nothing_was_recorded():
    data = _report().to_dict()
    for row in data["layers"]:
        del row["decided_by"], row["decided_speedup"], row["layer"]
    old = Report.from_dict(data)
    assert [row.decision for row in old.layers] == ["-", "-"]
    assert [row.display_name for row in old.layers] == ["fc1 <b>&</b>", "fc2"]
    assert old.decision_notes() == [
        "2 layers from an artefact that did not record what decided the format"
    ]
    assert "over the 2 layers measured)" in render_html(old)
