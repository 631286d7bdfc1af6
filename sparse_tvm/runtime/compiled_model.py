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

from sparse_tvm.errors import ArtefactError, DeviceError, InputShapeError, ToolchainError
from sparse_tvm.report import Report
from sparse_tvm.runtime.host_check import host_mismatch
from sparse_tvm.runtime.input_advice import shape_advice
from sparse_tvm.runtime.profile import Profile, profile_executable
from sparse_tvm.runtime.tensor_spec import TensorSpec


class InputCastWarning(UserWarning):
    """An input array was cast to the dtype the model takes with a possible loss (float64 to
    float32, int64 to int32): said once per :class:`CompiledModel`, input and dtype."""


def device_for(target: Mapping[str, Any]) -> tvm.runtime.Device:
    """The device a model compiled for ``target`` (``CompiledModel.target``) runs on.

    Raises :class:`~sparse_tvm.errors.DeviceError` for a CUDA build on a machine without
    a usable GPU.
    """
    if target.get("tvm", {}).get("kind") != "cuda":  # the device is the code's kind
        return tvm.cpu()
    device = tvm.cuda(0)
    if not device.exist:
        raise DeviceError(
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
        raise ToolchainError(
            "no CUDA compiler to load the model's kernels: `pip install cuda-bindings` (NVRTC) "
            "or put the CUDA toolkit's nvcc on PATH"
        )
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"


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
                raise ArtefactError(
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
                raise InputShapeError(shape_advice(spec, array.shape, self.inputs, arrays))
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

    def profile(
        self,
        inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] | np.ndarray,
        runs: int = 20,
    ) -> Profile:
        """Where a run's time goes: every kernel call timed in the run, grouped by operator
        (sparse layers, dense matmuls, softmax, layer norm, ...); ``str()`` is a table.

        Each call's time is its median over ``runs`` runs; see :mod:`sparse_tvm.runtime.profile`
        for what the instrumented times include.
        """
        args = self._arguments(inputs)
        end_to_end = self.benchmark(inputs, repeat=max(5, runs // 2))["median"]
        return profile_executable(self.executable, args, self.device, runs, end_to_end)

    def export(self, path: str) -> None:
        """Write the artefact (shared library, metadata and report) as a ``.tar``."""
        from sparse_tvm.runtime.artefact import export_artefact

        export_artefact(self, path)
