"""Measuring aarch64 code on an emulated board: tvm.exec.rpc_server under qemu-aarch64,
registered at a tracker on loopback, as a Raspberry Pi would be."""

from __future__ import annotations

import numpy as np
import tvm
from tvm.support import cc

from sparse_tvm.arm.emulation import CROSS_COMPILER
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels.spmm import spmm_kernel
from sparse_tvm.target import resolve_target
from tests.arm.conftest import KEY


def test_sparse_kernel_measured_on_the_emulated_board(emulated_board, tmp_path):
    target = resolve_target("aarch64").tvm_target
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    weight = BlockSparseWeight.from_dense(w, (4, 1))
    func = spmm_kernel(weight, 16, target=target).with_attr("global_symbol", "spmm")
    library = tmp_path / "spmm.so"
    tvm.compile(func, target=target).export_library(
        str(library), fcompile=cc.cross_compiler(CROSS_COMPILER)
    )

    host, port = emulated_board.split(":")
    remote = tvm.rpc.connect_tracker(host, int(port)).request(KEY, session_timeout=60)
    remote.upload(str(library))
    kernel = remote.load_module(library.name)
    dev = remote.cpu()
    x = rng.standard_normal((16, 128)).astype(np.float32)
    args = [tvm.runtime.tensor(a, dev) for a in (x, weight.data, weight.indices, weight.indptr)]
    y = tvm.runtime.empty((16, 64), "float32", dev)
    kernel["spmm"](*args, y)
    np.testing.assert_allclose(y.numpy(), x @ w.T, rtol=1e-5, atol=1e-5)
    seconds = kernel.time_evaluator("spmm", dev, number=5, repeat=3)(*args, y).results
    assert len(seconds) == 3 and all(0 < s < 1 for s in seconds)
