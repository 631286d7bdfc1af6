"""``CompileOptions``: every setting of a compile, in one object.

``st.compile``, the ``sparse-tvm compile`` command and each back end read the same object, so a
setting is spelled, defaulted and checked in one place.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from sparse_tvm.errors import UsageError


@dataclass(frozen=True)
class CompileOptions:
    """How to compile a model.

    Attributes
    ----------
    records
        Tuning records folder written by ``sparse-tvm tune``; without it the records shipped in
        ``schedules/`` apply where they match a layer, and the default schedules elsewhere.
    sparsity_threshold
        Layers whose sparsity is below this, in [0, 1], stay dense without being measured.
    dense
        Compile every layer dense (the baseline build).
    input_shapes
        Static shapes for inputs with dynamic dimensions, by input name.
    measure
        Measure each sparse candidate against its dense layer and keep the faster (default).
        Without it the calibrated cost model alone decides; it also decides where this machine
        cannot run the target's code, and the report says so.
    force_block
        Compile every sparse-capable layer sparse with this block shape, unmeasured (tests and
        benchmarks: it can make a model slower).
    cross_compiler
        The C compiler that links the exported library (default: the preset's
        ``cross_compiler`` when the target is not this machine, else the host's).
    output
        Where the artefact is written: a ``.tar`` for a Linux target (also loadable with
        ``st.load``), a C project folder (or its ``.tar``) for a microcontroller.
    report
        Also write the per-layer report as a self-contained HTML page here (Linux targets).
    prefix
        Microcontrollers: the prefix of the C files and symbols (``model.h``, ``model_run``).
    compare_dense
        Microcontrollers: also lower the dense build (not written) for the size report.
    """

    records: str | os.PathLike | None = None
    sparsity_threshold: float | None = None
    dense: bool = False
    input_shapes: dict[str, tuple[int, ...]] | None = None
    measure: bool = True
    force_block: tuple[int, int] | None = None
    cross_compiler: str | None = None
    output: str | os.PathLike | None = None
    report: str | os.PathLike | None = None
    prefix: str = "model"
    compare_dense: bool = True

    def __post_init__(self) -> None:
        threshold = self.sparsity_threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise UsageError(f"sparsity threshold {threshold} is outside [0, 1]")
        if not self.prefix.isidentifier():
            raise UsageError(f"prefix '{self.prefix}' is not a C identifier")
        if self.force_block is not None:
            object.__setattr__(self, "force_block", tuple(int(v) for v in self.force_block))

    @classmethod
    def of(cls, options: CompileOptions | None = None, **settings: Any) -> CompileOptions:
        """``options`` (default: all defaults) with ``settings`` replaced; an unknown setting
        is a :class:`~sparse_tvm.errors.UsageError` naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise UsageError(
                f"unknown compile option {', '.join(unknown)}: use {', '.join(sorted(known))}"
            )
        base = options if options is not None else cls()
        return dataclasses.replace(base, **settings) if settings else base


__all__ = ["CompileOptions"]
