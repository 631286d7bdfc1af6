"""``compile --report`` and ``inspect model.tar --report``: the HTML page, rendered by Chromium.

The page is opened in headless Chromium (Debian's ``chromium`` package, as CI installs it) in a
1400 px wide window with a probe script added to a copy: it reports what the browser actually
laid out and decoded, the rows of the layer table, the table's width against the window's
and, for each pattern picture, its decoded size and the mean colour of its pixels (read back
through a canvas), which must match the stored density grid.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from sparse_tvm.cli.main import main
from sparse_tvm.examples import mlp
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.report import LayerReport, Report, pattern_density, pattern_summary
from sparse_tvm.report_html import write_html
from sparse_tvm.runtime import read_metadata
from tests.cli.test_cli import assert_one_line_error, cli
from tests.conftest import needs

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1400, 1000)  # a laptop browser window, CSS pixels

PROBE = """
<pre id="probe"></pre>
<script>
window.addEventListener("load", () => {
  const table = document.getElementById("layers");
  const rows = [...table.querySelectorAll("tbody tr")];
  const images = rows.map((row) => {
    const img = row.querySelector("img.pattern");
    if (!img) return null;
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let red = 0;
    for (let i = 0; i < px.length; i += 4) red += px[i];
    const box = img.getBoundingClientRect();
    return {complete: img.complete, naturalWidth: img.naturalWidth,
            naturalHeight: img.naturalHeight, shownWidth: box.width, shownHeight: box.height,
            meanRed: red / (px.length / 4)};
  });
  const box = table.getBoundingClientRect();
  const column = (i) => rows.map((row) => row.cells[i].textContent);
  document.getElementById("probe").textContent = JSON.stringify({
    rows: rows.length, names: column(0), weights: column(1), decided: column(7),
    notes: rows.map((row) => row.cells[row.cells.length - 1].textContent),
    tableWidth: box.width, tableHeight: box.height, tableRight: box.right,
    tableScrollWidth: table.scrollWidth, innerWidth: window.innerWidth,
    viewportWidth: document.documentElement.clientWidth,
    pageScrollWidth: document.documentElement.scrollWidth,
    rowHeights: rows.map((row) => row.getBoundingClientRect().height),
    decisions: [...document.querySelectorAll("#decisions li")].map((li) => li.textContent),
    images: images, footer: table.querySelector("tfoot").textContent});
});
</script>
"""


def render_in_chromium(page: Path, tmp_path: Path) -> dict:
    """Open a copy of ``page`` with the probe in headless Chromium; the probe's JSON."""
    probed = tmp_path / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found and found.group(1), f"the probe did not run: {result.stdout[-2000:]}"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<"))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A pruned MLP compiled with --report (in a subprocess, as a user runs it)."""
    folder = tmp_path_factory.mktemp("report")
    onnx.save(prune_magnitude(mlp(), 0.9, "4x1"), folder / "mlp.onnx")
    result = cli(
        "compile", folder / "mlp.onnx", "-o", folder / "mlp.tar", "--report", folder / "c.html"
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {folder / 'c.html'}" in result.stderr
    return folder


def run_main(capsys, *args) -> subprocess.CompletedProcess:
    """The command line in this process (no second TVM start-up): exit status and output."""
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def check_fits_the_window(probe: dict) -> None:
    """The table, and the page, are no wider than the 1400 px window (no sideways scrolling)."""
    assert probe["innerWidth"] == WINDOW[0]
    viewport = probe["viewportWidth"]  # the window less a vertical scroll bar, if any
    assert viewport > WINDOW[0] - 30
    assert probe["tableScrollWidth"] <= viewport and probe["tableRight"] <= viewport
    assert probe["pageScrollWidth"] <= viewport


def check_page(page: Path, report: Report, probe: dict) -> None:
    assert probe["rows"] == len(report.layers) > 0
    assert probe["names"] == [row.display_name for row in report.layers]
    assert probe["weights"] == [row.name for row in report.layers]
    assert probe["decided"] == [row.decision for row in report.layers]
    assert probe["decisions"] == report.decision_notes()
    assert probe["tableWidth"] > 300 and probe["tableHeight"] > 50 * len(report.layers)
    check_fits_the_window(probe)
    assert (
        f"{len(report.layers)} layers, {report.totals()['sparse_layers']} sparse"
        in (probe["footer"])
    )
    for row, image in zip(report.layers, probe["images"], strict=True):
        density = pattern_density(row.pattern)
        assert image["complete"]
        assert (image["naturalHeight"], image["naturalWidth"]) == density.shape
        assert min(image["shownWidth"], image["shownHeight"]) >= 16
        # red channel: 255 for an empty cell, 24 for a full one, square-root scale in between
        expected = 255 - (255 - 24) * np.sqrt(density).mean()
        assert image["meanRed"] == pytest.approx(expected, abs=2.0), row.name
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text and "<link" not in text
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', text))


@needs(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium")
def test_compile_and_inspect_reports_render_in_chromium(compiled, tmp_path, capsys):
    report = Report.from_dict(read_metadata(compiled / "mlp.tar")["report"])
    assert any(row.format != "dense" for row in report.layers)
    # compiled for this x86 host: every layer's format measured here, and the page says so
    assert [(row.layer, row.name) for row in report.layers] == [
        ("fc1", "fc1.weight"),
        ("fc2", "fc2.weight"),
        ("fc3", "fc3.weight"),
    ]
    assert {row.decided_by for row in report.layers} == {"measured"}
    assert report.decision_notes() == [
        "3 layers measured on this host at compile time (each layer built alone, dense and "
        "sparse; latencies are medians; a sparse format kept only where it was measurably "
        "faster)"
    ]
    # the pictures show the pruning: about 10 % of each pruned conv weight is nonzero
    pruned = [row for row in report.layers if row.sparsity > 0.5]
    assert pruned and all(
        abs(pattern_density(row.pattern).mean() - (1 - row.sparsity)) < 0.01 for row in pruned
    )
    check_page(compiled / "c.html", report, render_in_chromium(compiled / "c.html", tmp_path))

    result = run_main(
        capsys, "inspect", compiled / "mlp.tar", "--report", compiled / "i.html", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layers"][0]["name"] == report.layers[0].name
    check_page(compiled / "i.html", report, render_in_chromium(compiled / "i.html", tmp_path))


def test_inspect_onnx_report_has_patterns_and_no_latencies(compiled, capsys):
    result = run_main(capsys, "inspect", compiled / "mlp.onnx", "--report", compiled / "o.html")
    assert result.returncode == 0, result.stderr
    page = (compiled / "o.html").read_text(encoding="utf-8")
    layers = Report.from_dict(read_metadata(compiled / "mlp.tar")["report"]).layers
    assert page.count('<img class="pattern"') == len(layers)
    assert "measured layer time" not in page


def test_bad_report_paths_exit_1_and_write_nothing(compiled, tmp_path, capsys):
    before = sorted(p.name for p in compiled.iterdir())
    result = run_main(
        capsys,
        "compile",
        compiled / "mlp.onnx",
        "-o",
        tmp_path / "x.tar",
        "--report",
        tmp_path / "missing" / "r.html",
    )
    assert_one_line_error(result, "does not exist", status=14)
    assert not (tmp_path / "x.tar").exists()
    result = run_main(capsys, "inspect", compiled / "mlp.tar", "--report", tmp_path)
    assert_one_line_error(result, "is a directory", status=14)
    result = run_main(
        capsys, "inspect", compiled / "mlp.onnx", "--report", tmp_path / "no" / "r.html"
    )
    assert_one_line_error(result, "does not exist", status=14)
    result = run_main(
        capsys,
        "compile",
        compiled / "mlp.onnx",
        "--target",
        "cortex-m4",
        "-o",
        tmp_path / "m",
        "--report",
        tmp_path / "r.html",
    )
    assert_one_line_error(result, "--report is for Linux targets", status=2)
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"not a tar")
    result = run_main(capsys, "inspect", bogus, "--report", tmp_path / "r.html")
    assert_one_line_error(result, "not a sparse-tvm artefact", status=7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bogus.tar"]
    assert sorted(p.name for p in compiled.iterdir()) == before


def _long_report() -> Report:
    """Long module paths, long initializer names, long notes, big numbers: what a large
    transformer export gives."""
    rng = np.random.default_rng(0)
    rows = []
    shapes = [(3072, 768), (768, 3072), (10, 4096), (2304, 768), (64, 64)]
    for i, (n, k) in enumerate(shapes):
        w = rng.standard_normal((n, k)).astype(np.float32)
        w[rng.random(w.shape) < 0.9] = 0.0
        rows.append(
            LayerReport(
                name=f"onnx::MatMul_{4821 + i}_of_an_exporter_that_names_tensors_at_length",
                layer=f"model.encoder.transformer_blocks.{i}.attention.self_attention"
                ".output_projection_dense",
                op="matmul",
                weight_shape=[n, k],
                m=2048,
                sparsity=0.9,
                zero_blocks={"1x1": 0.9, "16x1": 0.9},
                format="bsr 16x1",
                reason="default schedule (measured faster than the record, tuned on the same "
                "shapes (12345 us while tuning)); measured 13.56x over dense: kept sparse; "
                + "a note that goes on and on "
                * 6,
                dense_us=12345.6,
                sparse_us=910.4,
                dense_bytes=n * k * 4,
                stored_bytes=n * k * 4 // 9,
                pattern=pattern_summary(w),
                decided_by="measured on the board",
                decided_speedup=13.56,
            )
        )
    notes = ["a long note about the whole model " * 12]
    return Report(
        model="a-transformer-exported-by-torch.onnx", target="aarch64", layers=rows, notes=notes
    )


@needs(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: apt-get install chromium")
def test_long_names_and_notes_wrap_so_the_table_fits_1400_px(tmp_path):
    report = _long_report()
    page = write_html(report, tmp_path / "long.html")
    probe = render_in_chromium(page, tmp_path)
    check_page(page, report, probe)
    # the cells wrapped rather than widening the table: each row is several lines tall
    assert all(height > 100 for height in probe["rowHeights"])
    assert probe["notes"] == [row.reason for row in report.layers]
