"""``CompiledModel``: a compiled model that runs, times itself, reports and exports."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.errors import InputShapeError, SparseTVMError
from sparse_tvm.report import Report


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and dtype of a model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        return cls(str(data["name"]), tuple(int(s) for s in data["shape"]), str(data["dtype"]))


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

    @property
    def device(self) -> tvm.runtime.Device:
        """Where the model runs: the first GPU for a CUDA build, else the CPU."""
        return device_for(self.target)

    @property
    def vm(self) -> relax.VirtualMachine:
        if self._vm is None:
            self._vm = relax.VirtualMachine(self.executable, self.device)
        return self._vm

    def _arguments(self, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> list:
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
        else:
            arrays = list(inputs)
            if len(arrays) != len(self.inputs):
                raise InputShapeError(
                    f"the model takes {len(self.inputs)} input(s) "
                    f"({', '.join(s.name for s in self.inputs)}), got {len(arrays)}"
                )
        device, args = self.device, []
        for spec, array in zip(self.inputs, arrays):
            array = np.asarray(array)
            if tuple(array.shape) != spec.shape:
                raise InputShapeError(
                    f"input '{spec.name}' has shape {list(array.shape)}, the model "
                    f"was compiled for {list(spec.shape)}: recompile with "
                    f"--input-shapes {spec.name}:{'x'.join(map(str, array.shape))}"
                )
            if array.dtype != np.dtype(spec.dtype):
                if np.can_cast(array.dtype, spec.dtype, casting="same_kind"):
                    array = array.astype(spec.dtype)
                else:
                    raise InputShapeError(
                        f"input '{spec.name}' has dtype {array.dtype}, expected {spec.dtype}"
                    )
            args.append(tvm.runtime.tensor(np.ascontiguousarray(array), device=device))
        return args

    def run(self, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run the model; ``inputs`` by name or in input order. Returns the outputs in order."""
        result = self.vm["main"](*self._arguments(inputs))
        items = result if isinstance(result, (list, tuple, tvm.ir.Array)) else [result]
        return [item.numpy() for item in items]

    def benchmark(
        self,
        inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray],
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
