"""The per-layer report: what was found, what format each layer got, and what it measured."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

# Block shapes whose zero fractions the table shows (percent), in this order.
BLOCK_COLUMNS = ("1x1", "4x1", "8x1", "16x1", "1x4")


@dataclass
class LayerReport:
    """One row of the report."""

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

    @property
    def speedup(self) -> float | None:
        if self.dense_us and self.sparse_us:
            return self.dense_us / self.sparse_us
        return None


@dataclass
class Report:
    """Per-layer table of a model; ``str()`` renders it, :meth:`to_json` serialises it."""

    model: str = ""
    target: str = ""
    layers: list[LayerReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "target": self.target,
            "notes": self.notes,
            "layers": [asdict(layer) for layer in self.layers],
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
            layers=[LayerReport(**row) for row in data.get("layers", [])],
        )

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
            "op",
            "weight (n x k)",
            "m",
            "sparsity",
            "zero blocks " + "/".join(BLOCK_COLUMNS),
            "format",
            "dense us",
            "sparse us",
            "speedup",
            "bytes",
            "note",
        ]
        rows = []
        for r in self.layers:
            rows.append(
                [
                    r.name,
                    r.op,
                    f"{r.weight_shape[0]}x{r.weight_shape[1]}",
                    str(r.m),
                    f"{r.sparsity:.1%}",
                    "/".join(f"{100 * r.zero_blocks.get(b, 0):.0f}" for b in BLOCK_COLUMNS),
                    r.format,
                    "" if r.dense_us is None else f"{r.dense_us:.1f}",
                    "" if r.sparse_us is None else f"{r.sparse_us:.1f}",
                    "" if r.speedup is None else f"{r.speedup:.2f}x",
                    f"{r.stored_bytes / max(1, r.dense_bytes):.0%}" if r.dense_bytes else "",
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
        lines += self.notes
        return "\n".join(lines)
