"""``Backend``: everything the compiler needs to know about one family of targets, as one object.

The driver resolves the target, asks :func:`sparse_tvm.backends.backend_for` for its back end
once, and from then on only calls the back end: which kernels a sparse layer becomes (the
lowering the rewrite pass applies), the Relax pipeline of the rest of the model, whether this
machine can time the target's code, the tuning space and runner, the device an artefact runs on,
and how the artefact is built and written.
"""

from __future__ import annotations

import platform
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import tvm

from sparse_tvm.errors import TargetError, ToolchainError

if TYPE_CHECKING:  # types only: the decision and driver layers sit above the back ends
    from sparse_tvm.analysis.layers import Layer
    from sparse_tvm.frontend import ImportedModel
    from sparse_tvm.options import CompileOptions
    from sparse_tvm.report import Report
    from sparse_tvm.target import ResolvedTarget

Say = Callable[[str], None]


class Backend(ABC):
    """One target family. Subclasses set the class attributes and implement the code parts.

    Attributes
    ----------
    family
        The ``family`` of the presets this back end compiles for (``targets/*.toml``).
    host_machines
        ``platform.machine()`` of the hosts that run this family's code, so can time it.
    shipped_records
        File name in ``schedules/`` of the tuning records shipped for this family, if any.
    records_choose_format
        Whether tuning records pick a layer's format among the candidates (CPUs: each
        candidate's kernel is tuned), or only hold the kernel of the cost model's format (GPU).
    makes_project
        Whether the artefact is a source project (C) rather than a loadable library.
    fuses_gelu
        Whether the sparse kernels take a GELU after the bias in their epilogue (the analysis
        then fuses one into the layer before it: :func:`~sparse_tvm.analysis.analyse`).
    """

    family: ClassVar[str]
    host_machines: ClassVar[tuple[str, ...]] = ()
    shipped_records: ClassVar[str | None] = None
    records_choose_format: ClassVar[bool] = True
    makes_project: ClassVar[bool] = False
    fuses_gelu: ClassVar[bool] = False

    def __init__(self, target: ResolvedTarget) -> None:
        self.target = target

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target.name})"

    @property
    def tvm_target(self) -> tvm.target.Target:
        return self.target.tvm_target

    # -- code ---------------------------------------------------------------------------------

    def prepare(self, imported: ImportedModel, *, channels_first: bool = True) -> ImportedModel:
        """The imported model in the layouts this family runs it in, before the analysis
        (default: as imported; the CPU back ends convert CNNs to channels-last unless their
        convs all go sparse). ``channels_first=False``: a layout with the dense convs' speed
        (the compiler's second try when the decision keeps a conv dense after all)."""
        del channels_first
        return imported

    @abstractmethod
    def lowering(self):
        """The per-layer lowering the rewrite pass applies (``sparse_tvm.transform``)."""

    @abstractmethod
    def relax_pipeline(self) -> tvm.transform.Pass:
        """The Relax pipeline that compiles everything the rewrite left dense."""

    def store(self, decision):
        """The weight storage of a layer decided sparse (default: as decided)."""
        return decision

    # -- timing -------------------------------------------------------------------------------

    def can_time_here(self) -> bool:
        """Whether this machine runs the target's code, so that layers can be timed here."""
        return platform.machine().lower() in self.host_machines

    def schedule_variants(self, layer: Layer, weight) -> list[dict[str, int]]:
        """Knob overrides of the default sparse kernel worth timing against it for ``layer``
        when the compiler measures (default: none)."""
        return []

    def untimed_reason(self) -> str | None:
        """Why layers of this target cannot be timed here (the report's note), else None."""
        if self.can_time_here():
            return None
        return (
            f"formats chosen by the cost model: this {platform.machine()} machine cannot time "
            f"{self.family} code (tune on the board over RPC to measure)"
        )

    # -- tuning -------------------------------------------------------------------------------

    def check_tuning(self, rpc_tracker: str | None) -> None:
        """Refuse, in one line, a tuning run this back end cannot do here."""
        raise TargetError(
            f"tuning for target family '{self.family}' is not supported: "
            "use an x86, Arm (aarch64, rpi4) or CUDA preset"
        )

    def measured_on(self, board) -> str:
        """Where tuning measures: the board when one is given, else this host."""
        return "this host" if board is None else str(board)

    def tune_kernel(self, weight, layer: Layer, **settings: Any):
        """Tune one layer's sparse kernel (MetaSchedule, this back end's space and runner)."""
        raise TargetError(f"{self.family} kernels are not tuned")

    def lookup_kernel(self, weight, layer: Layer, database):
        """The best tuned kernel in ``database`` for this layer and weight, or None."""
        return None

    def kernel_with_knobs(self, weight, layer: Layer, knobs: dict[str, int]):
        """The layer's kernel with these knob values (board timings name the knobs)."""
        raise TargetError(f"{self.family} kernels have no knobs")

    # -- artefact -----------------------------------------------------------------------------

    def cross_compiler(self, given: str | None) -> str | None:
        """The C compiler that links the artefact: ``given``, else the preset's
        ``cross_compiler`` when this machine cannot run the target's code; checked on PATH."""
        from sparse_tvm.target import presets

        chosen = given
        if chosen is None and not self.can_time_here():
            preset = presets().get(self.target.name)
            chosen = preset.extra.get("cross_compiler") if preset is not None else None
        if chosen is not None and shutil.which(chosen) is None:
            raise ToolchainError(
                f"cross compiler '{chosen}' not found on PATH: install it or give its full path"
            )
        return chosen

    def check(self, options: CompileOptions) -> None:
        """Refuse, before any long work, options this back end cannot honour."""
        return None

    @abstractmethod
    def build(
        self,
        imported: ImportedModel,
        decisions: list,
        report: Report,
        options: CompileOptions,
        say: Say,
    ):
        """The artefact of the decided model (written to ``options.output`` when given)."""


__all__ = ["Backend", "Say"]
