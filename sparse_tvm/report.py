"""The per-layer report: what was found, what format each layer got, and what decided it.

Each row says what decided its format (``LayerReport.decided_by``), with the number that
decided it (``decided_speedup``):

- ``"measured"``: the layer was built alone, dense and sparse, and timed on this host at
  compile time; sparse is kept only when it is faster than dense by the keep-sparse margin;
- ``"measured on the board"``: the same, from the dense and sparse latencies a board measured
  while tuning (the records' layer timings), for a target this host cannot run;
- ``"estimated (cost model)"``: the calibrated cost model's estimated speedup; nothing was
  timed (a target the host cannot time, such as aarch64 or cuda, ``measure=False`` /
  ``--no-measure``, or a layer too sparse-poor to be worth timing; ``inspect``);
- ``"tuning records"``: the fastest kernel in the tuning records, not timed against dense;
- ``"rule"``: no number (a layer the sparse kernels do not support, sparsity below the
  threshold); ``"requested"``: ``dense=True`` / ``--dense``, or a forced block shape.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

# Block shapes whose zero fractions the table shows (percent), in this order.
BLOCK_COLUMNS = ("1x1", "4x1", "8x1", "16x1", "1x4")

# The pattern summary of a weight is at most this many cells a side (64 x 64 bytes: a few
# kilobytes of base64 per layer in the artefact's report JSON).
PATTERN_CELLS = 64

MEASURED = "measured"
MEASURED_AS_TWIN = "measured (twin)"
MEASURED_ON_BOARD = "measured on the board"
ESTIMATED = "estimated (cost model)"
TUNING_RECORDS = "tuning records"
RULE = "rule"
REQUESTED = "requested"
# what each decided_by says in the report's footnote: "N layers ..." (in this order)
_DECIDED_FOOTNOTES = {
    MEASURED: "measured on this host at compile time (each layer built alone, dense and "
    "sparse; latencies are medians; a sparse format kept only where it was measurably faster)",
    MEASURED_AS_TWIN: "decided as a twin layer measured on this host (same op, shapes and "
    "epilogue, sparsity within 1 %; only where the twin was at least 1.5x faster one way or the "
    "other; the latencies shown are the twin's)",
    MEASURED_ON_BOARD: "measured on the board while tuning (the dense and sparse latencies in "
    "the records' layer timings), not on this host",
    ESTIMATED: "estimated by the cost model, not timed (no latencies)",
    TUNING_RECORDS: "given the fastest kernel in the tuning records, not timed against dense",
    RULE: "kept dense by a rule (unsupported layer, sparsity threshold), not timed",
    REQUESTED: "as requested (dense build or forced block shape), not timed",
}


def pattern_summary(weight: np.ndarray, cells: int = PATTERN_CELLS) -> dict[str, Any]:
    """A downsampled picture of where the nonzeros of an (n, k) weight are.

    The weight is cut into a grid of at most ``cells`` x ``cells`` cells (each cell covers
    whole rows and columns, sizes differ by at most one); a cell holds the fraction of its
    entries that are nonzero, quantised to a byte (0 = all zero, 255 = all nonzero).

    Returns
    -------
    dict
        ``{"grid": [rows, cols], "density_u8": base64 of rows * cols bytes, row-major}``,
        plain JSON; :func:`pattern_density` decodes it.
    """
    nonzero = np.asarray(weight) != 0
    if nonzero.ndim != 2 or nonzero.size == 0:
        raise ValueError(f"pattern_summary takes a non-empty (n, k) weight, not {nonzero.shape}")
    n, k = nonzero.shape
    row_edges = np.linspace(0, n, min(n, cells) + 1).astype(np.int64)
    col_edges = np.linspace(0, k, min(k, cells) + 1).astype(np.int64)
    counts = np.add.reduceat(nonzero.astype(np.int64), row_edges[:-1], axis=0)
    counts = np.add.reduceat(counts, col_edges[:-1], axis=1)
    sizes = np.outer(np.diff(row_edges), np.diff(col_edges))
    density = np.rint(255.0 * counts / sizes).astype(np.uint8)
    return {
        "grid": [int(density.shape[0]), int(density.shape[1])],
        "density_u8": base64.b64encode(density.tobytes()).decode("ascii"),
    }


def pattern_density(summary: dict[str, Any]) -> np.ndarray:
    """The (rows, cols) nonzero-density grid in [0, 1] of a :func:`pattern_summary`."""
    rows, cols = (int(v) for v in summary["grid"])
    raw = np.frombuffer(base64.b64decode(summary["density_u8"]), dtype=np.uint8)
    if raw.size != rows * cols:
        raise ValueError(f"pattern summary holds {raw.size} cells, not {rows} x {cols}")
    return raw.reshape(rows, cols).astype(np.float64) / 255.0


@dataclass
class LayerReport:
    """One row of the report.

    ``name`` is the weight initializer's name, the layer's key (tuning records, layer timings,
    ``prune --exclude``); ``layer`` is the name the report shows: the PyTorch module path or
    the ONNX node name ('' when the model names neither: the weight name is shown).
    ``decided_by`` and ``decided_speedup``: see the module docstring.
    """

    name: str
    op: str
    weight_shape: list[int]  # (n, k): output features x input features
    m: int
    sparsity: float
    zero_blocks: dict[str, float]  # fraction of all-zero blocks per block shape
    format: str  # "dense", "csr 1x1", "bsr 16x1"
    reason: str = ""
    dense_us: float | None = None  # measured layer latency, microseconds
    sparse_us: float | None = None
    dense_bytes: int = 0
    stored_bytes: int = 0  # values + indices as compiled
    pattern: dict[str, Any] | None = None  # pattern_summary() of the (n, k) weight
    layer: str = ""  # module path / ONNX node name
    decided_by: str = ""  # MEASURED, MEASURED_ON_BOARD, ESTIMATED, ...; '' in old artefacts
    decided_speedup: float | None = None  # the measured or estimated speedup that decided
    fused: list[str] = field(
        default_factory=list
    )  # ops the sparse kernel takes in: bias, relu, gelu

    @property
    def speedup(self) -> float | None:
        if self.dense_us and self.sparse_us:
            return self.dense_us / self.sparse_us
        return None

    @property
    def op_label(self) -> str:
        """The op with what its sparse kernel took in: ``"matmul+bias+gelu"``."""
        return "+".join([self.op, *self.fused])

    @property
    def display_name(self) -> str:
        """The layer's name as shown: its module path or node, else its weight's name."""
        return self.layer or self.name

    @property
    def decision(self) -> str:
        """What decided the format, with its number: ``"measured 13.56x"``,
        ``"measured on the board 2.50x"``, ``"estimated (cost model) 6.00x"``, ``"rule"``;
        ``"-"`` for a row of an artefact that did not record it."""
        if not self.decided_by:
            return "-"
        if self.decided_speedup is None:
            return self.decided_by
        return f"{self.decided_by} {self.decided_speedup:.2f}x"


@dataclass
class Report:
    """Per-layer table of a model; ``str()`` renders it, :meth:`to_json` serialises it."""

    model: str = ""
    target: str = ""
    layers: list[LayerReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON. Each layer row: the dataclass fields, plus ``weight`` (the initializer
        name, the same as ``name``) and ``decision`` (``LayerReport.decision``)."""
        return {
            "model": self.model,
            "target": self.target,
            "notes": self.notes,
            "decisions": self.decision_notes(),
            "layers": [
                asdict(layer) | {"weight": layer.name, "decision": layer.decision}
                for layer in self.layers
            ],
            "totals": self.totals(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(
            model=data.get("model", ""),
            target=data.get("target", ""),
            notes=list(data.get("notes", [])),
            layers=[LayerReport(**_known(row)) for row in data.get("layers", [])],
        )

    def decision_notes(self) -> list[str]:
        """One line per way formats were decided, with its layer count: what was measured
        where and what was only estimated (the footnote of ``str()`` and the HTML page)."""
        counts: dict[str, int] = {}
        for row in self.layers:
            counts[row.decided_by] = counts.get(row.decided_by, 0) + 1
        lines = []
        for key, text in _DECIDED_FOOTNOTES.items():
            if counts.get(key):
                lines.append(f"{_layers(counts[key])} {text}")
        unknown = sum(n for key, n in counts.items() if key not in _DECIDED_FOOTNOTES)
        if unknown:
            lines.append(
                f"{_layers(unknown)} from an artefact that did not record what decided the format"
            )
        return lines

    def totals(self) -> dict[str, Any]:
        dense_bytes = sum(row.dense_bytes for row in self.layers)
        stored = sum(row.stored_bytes for row in self.layers)
        sparse_rows = [row for row in self.layers if row.format != "dense"]
        return {
            "layers": len(self.layers),
            "sparse_layers": len(sparse_rows),
            "weight_bytes_dense": dense_bytes,
            "weight_bytes_stored": stored,
            "weight_bytes_ratio": stored / dense_bytes if dense_bytes else 1.0,
        }

    def __str__(self) -> str:
        head = [
            "layer",
            "weight",
            "op",
            "shape (n x k)",
            "m",
            "sparsity",
            "zero blocks " + "/".join(BLOCK_COLUMNS),
            "format",
            "dense us",
            "sparse us",
            "speedup",
            "bytes",
            "decided by",
            "note",
        ]
        rows = []
        for r in self.layers:
            rows.append(
                [
                    r.display_name,
                    r.name,
                    r.op_label,
                    f"{r.weight_shape[0]}x{r.weight_shape[1]}",
                    str(r.m),
                    f"{r.sparsity:.1%}",
                    "/".join(f"{100 * r.zero_blocks.get(b, 0):.0f}" for b in BLOCK_COLUMNS),
                    r.format,
                    "" if r.dense_us is None else f"{r.dense_us:.1f}",
                    "" if r.sparse_us is None else f"{r.sparse_us:.1f}",
                    "" if r.speedup is None else f"{r.speedup:.2f}x",
                    f"{r.stored_bytes / max(1, r.dense_bytes):.0%}" if r.dense_bytes else "",
                    r.decision,
                    r.reason,
                ]
            )
        widths = [
            max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
            for i, h in enumerate(head)
        ]
        lines = []
        if self.model or self.target:
            lines.append(f"model: {self.model}   target: {self.target}")
        lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
        t = self.totals()
        lines.append(
            f"{t['sparse_layers']} of {t['layers']} layers sparse; weights stored in "
            f"{t['weight_bytes_stored']:,} bytes against {t['weight_bytes_dense']:,} "
            f"dense ({t['weight_bytes_ratio']:.0%})"
        )
        lines += self.decision_notes()
        lines += self.notes
        return "\n".join(lines)


def _layers(n: int) -> str:
    return f"{n} layer{'s' if n != 1 else ''}"


_LAYER_FIELDS = {f.name for f in fields(LayerReport)}


def _known(row: dict[str, Any]) -> dict[str, Any]:
    """The fields of a stored row that this version's LayerReport has (artefacts written by a
    newer version may carry more)."""
    return {key: value for key, value in row.items() if key in _LAYER_FIELDS}
