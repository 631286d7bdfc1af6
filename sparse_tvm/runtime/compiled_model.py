"""``CompiledModel``: a compiled model that runs, times itself, reports and exports."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.errors import InputShapeError, SparseTVMError
from sparse_tvm.report import Report


class InputCastWarning(UserWarning):
    """An input array was cast to the dtype the model takes with a possible loss (float64 to
    float32, int64 to int32): said once per :class:`CompiledModel`, input and dtype."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and dtype of a model input or output.

    ``dynamic_dims`` (inputs): per axis, the name of the dimension the ONNX model left dynamic
    and the compiler fixed to ``shape`` (``"?"`` when unnamed), ``None`` for an axis the model
    fixes; ``None`` altogether when unknown (an artefact written before it was recorded).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    dynamic_dims: tuple[str | None, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.dynamic_dims is not None:
            data["dynamic_dims"] = list(self.dynamic_dims)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        dynamic = data.get("dynamic_dims")
        return cls(
            str(data["name"]),
            tuple(int(s) for s in data["shape"]),
            str(data["dtype"]),
            None if dynamic is None else tuple(None if d is None else str(d) for d in dynamic),
        )


# platform.machine() names of the architectures sparse-tvm builds for, by LLVM triple prefix
_MACHINES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64")}
_FAMILY_ARCH = {"x86": "x86_64", "arm": "aarch64"}


def _describe(target: Mapping[str, Any], arch: str) -> str:
    tvm_dict = target.get("tvm", {})
    parts = [f"preset {target['name']}"] if target.get("name") not in (None, "custom") else []
    if tvm_dict.get("mtriple"):
        parts.append(f"triple {tvm_dict['mtriple']}")
    if tvm_dict.get("mcpu"):
        parts.append(f"cpu {tvm_dict['mcpu']}")
    return f"{arch} ({', '.join(parts)})" if parts else arch


def host_mismatch(target: Mapping[str, Any]) -> tuple[str, str] | None:
    """Why code built for ``target`` (``CompiledModel.target``) cannot run on this machine.

    Returns ``(what, advice)``: ``what`` completes "built for ..." (architecture, preset,
    triple, and this machine), ``advice`` says where to run it; ``None`` when it can run here
    or when nothing is known (a CUDA build, a target without a known architecture).
    """
    import platform

    from sparse_tvm.target.host_cpu import _X86_LEVELS, cpu_flags

    tvm_dict = target.get("tvm", {})
    if target.get("family") == "cuda" or tvm_dict.get("kind") != "llvm":
        return None
    triple = str(tvm_dict.get("mtriple", ""))
    arch = triple.split("-")[0] if triple else _FAMILY_ARCH.get(str(target.get("family")))
    machine = platform.machine().lower()
    if arch not in _MACHINES:
        return None
    if machine not in _MACHINES[arch]:
        if arch == "aarch64":
            advice = "run it on the board with run_artefact.py (README: Arm boards)"
        else:
            advice = f"run it on an {arch} machine, or recompile it for this one"
        return f"{_describe(target, arch)}, not this {machine} machine", advice
    needed = dict(_X86_LEVELS).get(str(tvm_dict.get("mcpu", ""))) if arch == "x86_64" else None
    flags = cpu_flags()
    if needed and flags and not needed <= flags:  # e.g. AVX-512 code on an AVX2 machine
        lacking = ", ".join(sorted(needed - flags))
        return (
            f"{_describe(target, arch)}, and this CPU lacks {lacking}",
            "recompile it here with --target x86 (or x86-avx2 for any AVX2 machine)",
        )
    return None


def device_for(target: Mapping[str, Any]) -> tvm.runtime.Device:
    """The device a model compiled for ``target`` (``CompiledModel.target``) runs on.

    Raises :class:`~sparse_tvm.errors.SparseTVMError` for a CUDA build on a machine without
    a usable GPU.
    """
    if target.get("family") != "cuda" and target.get("tvm", {}).get("kind") != "cuda":
        return tvm.cpu()
    device = tvm.cuda(0)
    if not device.exist:
        raise SparseTVMError(
            "no CUDA device: this model was compiled for an NVIDIA GPU "
            f"({target.get('name', 'cuda')}) and this machine has none (or no driver); "
            "run it on a GPU machine"
        )
    _choose_cuda_compiler()
    return device


def _choose_cuda_compiler() -> None:
    """The kernels are CUDA C compiled when the model loads: by NVRTC (``cuda-bindings``),
    else by nvcc when it is there (``TVM_CUDA_COMPILE_MODE=nvcc``), else a one-line error."""
    import importlib.util
    import os
    import shutil

    if "TVM_CUDA_COMPILE_MODE" in os.environ:
        return
    try:
        has_nvrtc = importlib.util.find_spec("cuda.bindings") is not None
    except ModuleNotFoundError:
        has_nvrtc = False
    if has_nvrtc:
        return
    if shutil.which("nvcc") is None:
        raise SparseTVMError(
            "no CUDA compiler to load the model's kernels: `pip install cuda-bindings` (NVRTC) "
            "or put the CUDA toolkit's nvcc on PATH"
        )
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"


def _shape(shape: Sequence[int]) -> str:
    return str(tuple(int(d) for d in shape))


def _cli_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if shape else "[]"


def _strip_ones(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(shape)
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


def _permutation(given: tuple[int, ...], wanted: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of ``given`` in the order that makes ``wanted`` (same sizes, first match)."""
    free = list(range(len(given)))
    order = []
    for size in wanted:
        axis = next(a for a in free if given[a] == size)
        free.remove(axis)
        order.append(axis)
    return tuple(order)


def _differs_on_dynamic_axes_only(spec: TensorSpec, given: tuple[int, ...]) -> bool:
    dynamic = spec.dynamic_dims
    return (
        dynamic is not None
        and len(given) == len(spec.shape)
        and given != spec.shape
        and all(g == w or d is not None for g, w, d in zip(given, spec.shape, dynamic))
    )


def _recompile_shapes(
    spec: TensorSpec, given: tuple[int, ...], specs: Sequence[TensorSpec], arrays: Sequence
) -> str:
    """``--input-shapes`` text for every input with dynamic dims, ``spec`` at ``given``: the
    other inputs keep their sizes, except named dims (``seq``) that ``given`` changes."""
    named = {
        d: size
        for d, size, old in zip(spec.dynamic_dims or (), given, spec.shape)
        if d not in (None, "?") and size != old
    }
    items = []
    for other, array in zip(specs, arrays):
        if not other.dynamic_dims or all(d is None for d in other.dynamic_dims):
            continue
        if other is spec:
            shape = given
        elif _differs_on_dynamic_axes_only(other, tuple(np.shape(array))):
            shape = tuple(np.shape(array))
        else:
            shape = tuple(
                named.get(d, size) if d is not None else size
                for d, size in zip(other.dynamic_dims, other.shape)
            )
        items.append((other.name, shape))
    cli = ",".join(f"{name}:{_cli_shape(shape)}" for name, shape in items)
    api = ", ".join(f"{name!r}: {_shape(shape)}" for name, shape in items)
    return f"--input-shapes {cli} (API: input_shapes={{{api}}})"


def _shape_advice(
    spec: TensorSpec, given: Sequence[int], specs: Sequence[TensorSpec], arrays: Sequence
) -> str:
    """The one-line message for an input array whose shape is not the compiled one."""
    given, wanted = tuple(int(d) for d in given), spec.shape
    head = f"input '{spec.name}' has shape {_shape(given)} but the model takes {_shape(wanted)}"
    var = spec.name if spec.name.isidentifier() else "x"
    if len(given) != len(wanted):
        if _strip_ones(given) == _strip_ones(wanted):
            extra = len(given) - len(wanted)
            if extra == -1:
                return f"{head}: add the batch axis ({var}[None])"
            if extra < 0:
                index = ", ".join(["None"] * -extra)
                return f"{head}: add {-extra} leading size-1 axes ({var}[{index}])"
            index = ", ".join(["0"] * extra)
            axes = (
                "the extra leading size-1 axis"
                if extra == 1
                else f"the {extra} extra leading size-1 axes"
            )
            return f"{head}: drop {axes} ({var}[{index}])"
        missing = len(wanted) - len(given)
        padded = (1,) * missing + given
        if missing > 0 and sorted(padded) == sorted(wanted):  # e.g. HWC for (1, C, H, W)
            order = ", ".join(map(str, _permutation(padded, wanted)))
            index = ", ".join(["None"] * missing)
            axes = "the batch axis" if missing == 1 else f"{missing} leading size-1 axes"
            return (
                f"{head}: add {axes} and transpose the axes to the model's order "
                f"({var}[{index}].transpose({order}))"
            )
        return f"{head}: give an array of that shape"
    differ = [axis for axis in range(len(given)) if given[axis] != wanted[axis]]
    dynamic = spec.dynamic_dims
    if _differs_on_dynamic_axes_only(spec, given):
        axes = ", ".join(str(axis) for axis in differ)
        which = f"axis {axes} is" if len(differ) == 1 else f"axes {axes} are"
        return (
            f"input '{spec.name}' has shape {_shape(given)} but the model was compiled for "
            f"{_shape(wanted)} ({which} dynamic in the ONNX model): recompile with "
            + _recompile_shapes(spec, given, specs, arrays)
        )
    if sorted(given) == sorted(wanted):
        order = ", ".join(map(str, _permutation(given, wanted)))
        return f"{head}: transpose the axes to the model's order ({var}.transpose({order}))"
    if dynamic is None:  # an artefact that does not record which dims were dynamic
        return (
            f"{head}: give an array of that shape (or, if the ONNX model leaves these axes "
            f"dynamic, recompile with --input-shapes {spec.name}:{_cli_shape(given)})"
        )
    fixed = [axis for axis in differ if dynamic[axis] is None]
    sizes = ", ".join(str(wanted[axis]) for axis in fixed)
    axes = ", ".join(map(str, fixed))
    which = f"axis {axes}" if len(fixed) == 1 else f"axes {axes}"
    return f"{head}: the model fixes {which} at {sizes}; give an array of shape {_shape(wanted)}"


@dataclass
class CompiledModel:
    """A model compiled by :func:`sparse_tvm.compile`.

    Attributes
    ----------
    executable
        The TVM executable (``tvm.compile`` result) or a loaded runtime module.
    inputs, outputs
        What :meth:`run` takes and returns.
    report
        The per-layer report (formats chosen, sparsity, measured latencies, bytes).
    target
        The target description as a JSON-able dict.
    """

    executable: Any
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    report: Report
    target: dict[str, Any] = field(default_factory=dict)
    cross_compiler: str | None = None  # C compiler that links the exported library
    _vm: Any = field(default=None, repr=False)
    _casts_said: set = field(default_factory=set, repr=False)

    @property
    def device(self) -> tvm.runtime.Device:
        """Where the model runs: the first GPU for a CUDA build, else the CPU."""
        return device_for(self.target)

    @property
    def vm(self) -> relax.VirtualMachine:
        if self._vm is None:
            mismatch = host_mismatch(self.target)
            if mismatch is not None:
                what, advice = mismatch
                raise SparseTVMError(
                    f"this model was compiled for {what}: export it (compiled.export("
                    f"'model.tar') or `sparse-tvm compile -o model.tar`) and {advice}"
                )
            self._vm = relax.VirtualMachine(self.executable, self.device)
        return self._vm

    def _arguments(
        self, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray
    ) -> list:
        if isinstance(inputs, Mapping):
            names = [spec.name for spec in self.inputs]
            unknown = sorted(set(inputs) - set(names))
            missing = [name for name in names if name not in inputs]
            if unknown or missing:
                parts = []
                if unknown:
                    parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
                if missing:
                    parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
                raise InputShapeError(
                    f"{'; '.join(parts)}: the model takes "
                    + ", ".join(f"{s.name} {list(s.shape)}" for s in self.inputs)
                )
            arrays = [inputs[name] for name in names]
        elif isinstance(inputs, np.ndarray):
            if len(self.inputs) != 1:
                raise InputShapeError(
                    f"the model takes {len(self.inputs)} inputs "
                    f"({', '.join(s.name for s in self.inputs)}), got one array: pass a dict "
                    "by name or a list in that order"
                )
            arrays = [inputs]
        else:
            arrays = list(inputs)
            if len(arrays) != len(self.inputs):
                raise InputShapeError(
                    f"the model takes {len(self.inputs)} input(s) "
                    f"({', '.join(s.name for s in self.inputs)}), got {len(arrays)}"
                )
        arrays = [np.asarray(array) for array in arrays]
        for spec, array in zip(self.inputs, arrays):
            if tuple(array.shape) != spec.shape:
                raise InputShapeError(_shape_advice(spec, array.shape, self.inputs, arrays))
        device, args, casts = self.device, [], []
        for spec, array in zip(self.inputs, arrays):
            if array.dtype != np.dtype(spec.dtype):
                if not np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
                    raise InputShapeError(
                        f"input '{spec.name}' has dtype {array.dtype}, the model takes "
                        f"{spec.dtype}: pass a {spec.dtype} array"
                    )
                if not np.can_cast(array.dtype, spec.dtype, casting="safe"):
                    casts.append((spec.name, str(array.dtype), spec.dtype))
                array = array.astype(spec.dtype)
            args.append(tvm.runtime.tensor(np.ascontiguousarray(array), device=device))
        self._say_casts(casts)
        return args

    def _say_casts(self, casts: list[tuple[str, str, str]]) -> None:
        new = [cast for cast in casts if cast not in self._casts_said]
        if not new:
            return
        self._casts_said.update(new)
        what = "; ".join(
            f"input '{name}' is {source} and the model takes {dest}" for name, source, dest in new
        )
        if len(new) == 1:
            advice = f"cast it (values may lose precision); pass {new[0][2]} arrays"
        else:
            advice = "cast them (values may lose precision); pass arrays of the model's dtypes"
        warnings.warn(
            f"{what}: {advice} to avoid the copy and this warning",
            InputCastWarning,
            stacklevel=4,  # _say_casts <- _arguments <- run/benchmark <- the caller
        )

    def run(
        self, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray
    ) -> list[np.ndarray]:
        """Run the model; ``inputs`` by name, in input order, or one array for a one-input model.

        Arrays of another dtype of the same kind are cast (with an :class:`InputCastWarning`,
        once per input and dtype, where that may lose precision). Returns the outputs in order.
        """
        result = self.vm["main"](*self._arguments(inputs))
        items = result if isinstance(result, (list, tuple, tvm.ir.Array)) else [result]
        return [item.numpy() for item in items]

    def benchmark(
        self,
        inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray,
        repeat: int = 50,
        warmup: int = 5,
    ) -> dict[str, float]:
        """Time ``repeat`` runs after ``warmup``: median, min, max and mean seconds."""
        args = self._arguments(inputs)
        main = self.vm["main"]
        device = self.device  # GPU launches are asynchronous: wait for each run to finish
        for _ in range(max(0, warmup)):
            main(*args)
        device.sync()
        times = []
        for _ in range(max(1, repeat)):
            start = time.perf_counter()
            main(*args)
            device.sync()
            times.append(time.perf_counter() - start)
        values = np.array(times)
        return {
            "median": float(np.median(values)),
            "min": float(values.min()),
            "max": float(values.max()),
            "mean": float(values.mean()),
            "repeat": len(times),
        }

    def export(self, path: str) -> None:
        """Write the artefact (shared library, metadata and report) as a ``.tar``."""
        from sparse_tvm.runtime.artefact import export_artefact

        export_artefact(self, path)
