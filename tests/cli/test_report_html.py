"""``compile --report`` and ``inspect model.tar --report``: the HTML page, rendered by Chromium.

The page is opened in headless Chromium (Debian's ``chromium`` package, as CI installs it) with
a probe script added to a copy: it reports what the browser actually laid out and decoded, the
rows of the layer table and, for each pattern picture, its decoded size and the mean colour
of its pixels (read back through a canvas), which must match the stored density grid.
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
from sparse_tvm.report import Report, pattern_density
from sparse_tvm.runtime import read_metadata
from tests.cli.test_cli import assert_one_line_error, cli
from tests.conftest import needs

CHROMIUM = "/usr/bin/chromium"

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
  document.getElementById("probe").textContent = JSON.stringify({
    rows: rows.length,
    names: rows.map((row) => row.cells[0].textContent),
    tableWidth: box.width, tableHeight: box.height, images: images,
    footer: table.querySelector("tfoot").textContent});
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


def check_page(page: Path, report: Report, probe: dict) -> None:
    assert probe["rows"] == len(report.layers) > 0
    assert probe["names"] == [row.name for row in report.layers]
    assert probe["tableWidth"] > 300 and probe["tableHeight"] > 50 * len(report.layers)
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
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "x.tar").exists()
    result = run_main(capsys, "inspect", compiled / "mlp.tar", "--report", tmp_path)
    assert_one_line_error(result, "is a directory")
    result = run_main(
        capsys, "inspect", compiled / "mlp.onnx", "--report", tmp_path / "no" / "r.html"
    )
    assert_one_line_error(result, "does not exist")
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
    assert_one_line_error(result, "--report is for Linux targets")
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"not a tar")
    result = run_main(capsys, "inspect", bogus, "--report", tmp_path / "r.html")
    assert_one_line_error(result, "not a sparse-tvm artefact")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bogus.tar"]
    assert sorted(p.name for p in compiled.iterdir()) == before
