"""Compile an imported model with plain TVM and compare it with onnxruntime."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.frontend import ImportedModel
from sparse_tvm.runtime.onnxruntime_reference import reference_session

TARGET = {"kind": "llvm", "num-cores": 2}


def run_tvm(imported: ImportedModel, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    mod = relax.transform.BindParams("main", imported.params)(imported.mod)
    executable = tvm.compile(mod, target=tvm.target.Target(TARGET))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(feeds[name]) for name in imported.input_names])
    if isinstance(result, tvm.runtime.Tensor):
        return [result.numpy()]
    return [r.numpy() for r in result]


def run_onnxruntime(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    source = model if isinstance(model, str) else model.SerializeToString()
    session = reference_session(source)
    return session.run(None, feeds)


def random_feeds(imported: ImportedModel, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal(shape).astype(dtype)
        for name, shape, dtype in zip(
            imported.input_names, imported.input_shapes, imported.input_dtypes, strict=True
        )
    }
