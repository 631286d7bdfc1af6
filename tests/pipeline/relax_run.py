"""Run one Relax expression through the CPU pipeline: the pipeline tests build modules here."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.pipeline import cpu_pipeline

# no mcpu: SSE vectors (4 lanes), runs on any x86 host
TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 2})


def run_relax(fn, *arrays: np.ndarray, target: tvm.target.Target = TARGET):
    """``main(*arrays)`` of a module whose body is ``fn(*params)``, compiled with
    :func:`cpu_pipeline`; the VM's result (a tensor or a tuple of them)."""
    bb = relax.BlockBuilder()
    params = [
        relax.Var(f"x{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(arrays)
    ]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(fn(*params))
        bb.emit_func_output(out)
    ex = tvm.compile(bb.get(), target=target, relax_pipeline=cpu_pipeline(target))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](*(tvm.runtime.tensor(a) for a in arrays))
