"""The per-layer report as one self-contained HTML page.

Everything is inline: the CSS in a ``<style>`` element, each weight's sparsity pattern as a
PNG ``data:`` URI (encoded here with zlib, no imaging library). The page loads nothing from
anywhere, so it can be mailed, attached to a CI run or opened from a folder.

The pattern picture of a layer is its :func:`sparse_tvm.report.pattern_summary`: the (n, k)
weight cut into at most 64 x 64 cells, each drawn darker the more nonzeros it holds (white: all
zero; square-root scale). Rows are output features (n), columns input features (k); the picture keeps the
weight's aspect ratio (within 1:8).
"""

from __future__ import annotations

import base64
import html
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from sparse_tvm.errors import OutputError
from sparse_tvm.files import write_atomically
from sparse_tvm.report import (
    MEASURED,
    MEASURED_AS_TWIN,
    MEASURED_ON_BOARD,
    LayerReport,
    Report,
    pattern_density,
)

# Density 0 is white, density 1 this colour; in between on a square-root scale, so that the
# structure of a 90 %-sparse weight (10 % dense cells) is still visible.
_EMPTY = np.array([255.0, 255.0, 255.0])
_FULL = np.array([24.0, 52.0, 128.0])
_PICTURE_PX = 128  # the longer side of a pattern picture on the page

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1b1b1b; }
h1 { font-size: 20px; margin: 0 0 4px; }
.meta { color: #555; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 5px; text-align: right;
         vertical-align: middle; }
th { background: #f3f4f6; font-weight: 600; }
td.text, th.text { text-align: left; }
td { white-space: nowrap; }
/* names, decisions and notes wrap (names anywhere: module paths have no spaces), so the
   table fits the window; numbers, ops, formats and pictures keep their width */
td.wrap { white-space: normal; overflow-wrap: anywhere; }
td.name { min-width: 6em; max-width: 16em; }
td.decided { min-width: 6em; max-width: 10em; overflow-wrap: normal; }
tr.sparse td.format { color: #14532d; font-weight: 600; }
tfoot td { font-weight: 600; border-top: 2px solid #999; }
img.pattern { image-rendering: pixelated; border: 1px solid #999; display: block; }
.reason { color: #555; font-size: 12px; min-width: 10em; max-width: 26em; white-space: normal;
          overflow-wrap: anywhere; }
.weight { color: #555; font-size: 12px; }
ul.notes, ul.decisions { color: #555; }
"""


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG file of an (h, w, 3) uint8 image (8-bit RGB, no filtering)."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width, channels = rgb.shape
    if channels != 3 or height == 0 or width == 0:
        raise ValueError(f"png_bytes takes a non-empty (h, w, 3) image, not {rgb.shape}")
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 9))
        + chunk(b"IEND", b"")
    )


def pattern_png(density: np.ndarray) -> bytes:
    """The PNG picture of a nonzero-density grid in [0, 1] (one pixel per cell, white for an
    empty cell, darker for more nonzeros on a square-root scale)."""
    d = np.sqrt(np.clip(np.asarray(density, np.float64), 0.0, 1.0))[..., None]
    rgb = np.rint(_EMPTY + d * (_FULL - _EMPTY)).astype(np.uint8)
    return png_bytes(rgb)


def _picture_size(n: int, k: int) -> tuple[int, int]:
    """(width, height) in CSS pixels: the weight's aspect ratio, clamped to 1:8."""
    aspect = min(8.0, max(1.0 / 8.0, n / max(1, k)))
    if aspect >= 1.0:
        return max(1, round(_PICTURE_PX / aspect)), _PICTURE_PX
    return _PICTURE_PX, max(1, round(_PICTURE_PX * aspect))


def _picture(row: LayerReport) -> str:
    if not row.pattern:
        return '<span class="reason">no pattern stored</span>'
    density = pattern_density(row.pattern)
    uri = "data:image/png;base64," + base64.b64encode(pattern_png(density)).decode("ascii")
    n, k = row.weight_shape
    width, height = _picture_size(n, k)
    cells = f"{density.shape[0]}x{density.shape[1]}"
    title = (
        f"{row.display_name}: {n} x {k} weight in {cells} cells; "
        f"darker = more nonzeros ({1 - row.sparsity:.1%} nonzero overall)"
    )
    return (
        f'<img class="pattern" src="{uri}" width="{width}" height="{height}" '
        f'alt="nonzero pattern of {html.escape(row.display_name)}" title="{html.escape(title)}">'
    )


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _breakable(name: str) -> str:
    """``name`` escaped, with line-break opportunities after its dots and slashes (a module
    path wraps between its parts before it wraps anywhere)."""
    return html.escape(name).replace(".", ".<wbr>").replace("/", "/<wbr>")


def _cell(text: str, cls: str = "", tag: str = "td") -> str:
    return f'<{tag} class="{cls}">{text}</{tag}>' if cls else f"<{tag}>{text}</{tag}>"


def _layer_row(row: LayerReport) -> str:
    esc = html.escape
    sparse = row.format != "dense"
    stored_pct = f"{row.stored_bytes / row.dense_bytes:.0%}" if row.dense_bytes else "-"
    cells = [
        _cell(_breakable(row.display_name), "text wrap name"),
        _cell(f'<span class="weight">{_breakable(row.name)}</span>', "text wrap name"),
        _cell(esc(row.op_label), "text"),
        _cell(f"{row.weight_shape[0]} x {row.weight_shape[1]}"),
        _cell(str(row.m)),
        _cell(f"{row.sparsity:.1%}"),
        _cell(esc(row.format), "text format"),
        _cell(esc(row.decision), "text wrap decided"),
        _cell(_us(row.dense_us)),
        _cell(_us(row.sparse_us)),
        _cell("-" if row.speedup is None else f"{row.speedup:.2f}x"),
        _cell(f"{row.dense_bytes:,}"),
        _cell(f"{row.stored_bytes:,}"),
        _cell(stored_pct),
        _cell(_picture(row)),
        _cell(f'<div class="reason">{esc(row.reason)}</div>', "text wrap"),
    ]
    return f'<tr class="layer{" sparse" if sparse else ""}">' + "".join(cells) + "</tr>"


def layer_time_totals(report: Report) -> dict[str, float | int | str] | None:
    """Sum of the measured layer latencies, all dense against as compiled (microseconds).

    Only layers with both measurements count (the compiler measures a layer when a sparse
    format is a candidate); ``None`` when there are none (``inspect`` and unmeasured builds).
    ``where``: where they were measured, as the summary line says it.
    """
    measured = [r for r in report.layers if r.dense_us is not None and r.sparse_us is not None]
    if not measured:
        return None
    dense = sum(r.dense_us for r in measured)
    compiled = sum(r.sparse_us if r.format != "dense" else r.dense_us for r in measured)
    places = {r.decided_by for r in measured}
    if places == {MEASURED_ON_BOARD}:
        where = "measured on the board while tuning"
    elif places <= {MEASURED, MEASURED_AS_TWIN}:
        where = "measured on this host at compile time"
    elif places <= {MEASURED, MEASURED_AS_TWIN, MEASURED_ON_BOARD}:
        where = "measured on this host at compile time or on the board while tuning"
    else:
        where = "measured"  # rows of an artefact that did not record where
    return {"layers": len(measured), "dense_us": dense, "compiled_us": compiled, "where": where}


def render_html(report: Report) -> str:
    """The report as a self-contained HTML page (inline CSS, pictures as data URIs).

    Parameters
    ----------
    report
        The per-layer report of a compiled model (``compiled.report``), of an artefact, or of
        ``st.inspect`` (no latencies then).

    Returns
    -------
    str
        The whole HTML document.
    """
    esc = html.escape
    totals = report.totals()
    times = layer_time_totals(report)
    head = [
        ("layer", "text"),
        ("weight", "text"),
        ("op", "text"),
        ("shape (n x k)", ""),
        ("m", ""),
        ("sparsity", ""),
        ("format", "text"),
        ("decided by", "text"),
        ("dense µs", ""),
        ("sparse µs", ""),
        ("speedup", ""),
        ("dense bytes", ""),
        ("stored bytes", ""),
        ("stored", ""),
        ("nonzero pattern", ""),
        ("note", "text"),
    ]
    thead = "".join(_cell(esc(name), cls, "th") for name, cls in head)
    body = "\n".join(_layer_row(row) for row in report.layers)
    time_cells = ["", ""]
    speed = None
    if times is not None:
        time_cells = [_us(times["dense_us"]), _us(times["compiled_us"])]
        if times["compiled_us"]:
            speed = times["dense_us"] / times["compiled_us"]
    foot = (
        '<tr class="totals">'
        + _cell(f"{totals['layers']} layers, {totals['sparse_layers']} sparse", "text wrap")
        + '<td colspan="7"></td>'
        + _cell(time_cells[0])
        + _cell(time_cells[1])
        + _cell("" if speed is None else f"{speed:.2f}x")
        + _cell(f"{totals['weight_bytes_dense']:,}")
        + _cell(f"{totals['weight_bytes_stored']:,}")
        + _cell(f"{totals['weight_bytes_ratio']:.0%}")
        + '<td colspan="2"></td></tr>'
    )
    summary = [
        f"{totals['sparse_layers']} of {totals['layers']} layers sparse",
        f"weights stored in {totals['weight_bytes_stored']:,} bytes against "
        f"{totals['weight_bytes_dense']:,} dense ({totals['weight_bytes_ratio']:.0%})",
    ]
    if times is not None:
        summary.append(
            f"measured layer time {times['compiled_us']:,.1f} µs as compiled against "
            f"{times['dense_us']:,.1f} µs all dense ({speed or 0.0:.2f}x, over the "
            f"{times['layers']} layers {times['where']})"
        )
    notes = "".join(f"<li>{esc(note)}</li>" for note in report.notes)
    decisions = "".join(f"<li>{esc(line)}</li>" for line in report.decision_notes())
    title = f"sparse-tvm report: {report.model or 'model'}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<p class="meta">target: {esc(report.target or "-")}</p>
<ul id="summary">{"".join(f"<li>{esc(line)}</li>" for line in summary)}</ul>
<table id="layers">
<thead><tr>{thead}</tr></thead>
<tbody>
{body}
</tbody>
<tfoot>{foot}</tfoot>
</table>
<p class="meta">How the formats were decided (per layer: the "decided by" column, with the
speedup over dense that decided):</p>
<ul class="decisions" id="decisions">{decisions}</ul>
{f'<ul class="notes" id="notes">{notes}</ul>' if notes else ""}
<p class="meta">Pictures: the weight as (n output features x k input features), cut
into at most 64 x 64 cells; darker cells hold more nonzeros (square-root scale), white cells
none.</p>
</body>
</html>
"""


def check_report_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path, if a report can be written there (the command line checks before
    any long work).

    Raises
    ------
    OutputError
        When ``path`` is a folder or its folder does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"report '{path}' is a directory: give a file name like report.html")
    if not path.parent.is_dir():
        raise OutputError(f"report folder '{path.parent}' does not exist: create it first")
    return path


def write_html(report: Report, path: str | os.PathLike) -> Path:
    """Write :func:`render_html` of ``report`` to ``path`` atomically (no partial file).

    Raises
    ------
    OutputError
        When ``path`` is a folder, its folder does not exist, or it cannot be written.
    """
    path = check_report_path(path)
    text = render_html(report)
    try:
        write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except OSError as err:
        raise OutputError(f"cannot write report '{path}': {err.strerror or err}") from None
    return path


__all__ = [
    "check_report_path",
    "layer_time_totals",
    "pattern_png",
    "png_bytes",
    "render_html",
    "write_html",
]
