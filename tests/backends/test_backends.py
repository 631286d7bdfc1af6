"""One back end per target family, chosen once from the resolved target."""

from __future__ import annotations

import platform

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.analysis import analyse
from sparse_tvm.backends import (
    BACKENDS,
    ArmBackend,
    CudaBackend,
    MicroBackend,
    X86Backend,
    backend_for,
)
from sparse_tvm.decision import decide, tuning_blocks
from sparse_tvm.examples import mlp
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.frontend import import_onnx
from sparse_tvm.kernels import spmm_kernel
from sparse_tvm.kernels.cuda import cuda_spmm_kernel
from sparse_tvm.micro.compact import CompactSparseWeight
from sparse_tvm.micro.lowering import MicroLowering
from sparse_tvm.options import CompileOptions
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.target import presets
from sparse_tvm.transform.spmm_lowering import SpmmLowering

ON_X86 = platform.machine().lower() in ("x86_64", "amd64")


def test_every_preset_has_the_back_end_of_its_family():
    for name, preset in presets().items():
        backend = backend_for(name)
        assert backend.family == preset.family and type(backend) is BACKENDS[preset.family]
    assert type(backend_for("x86")) is X86Backend and type(backend_for("rpi4")) is ArmBackend
    assert type(backend_for("cuda-sm90")) is CudaBackend
    assert type(backend_for("cortex-m55")) is MicroBackend
    # a raw TVM target maps by its kind and triple
    assert type(backend_for('{"kind": "llvm", "mtriple": "aarch64-linux-gnu"}')) is ArmBackend


def test_an_unsupported_family_is_a_target_error():
    with pytest.raises(st.TargetError, match="target family 'opencl'.*not supported"):
        backend_for({"kind": "opencl"})


def test_what_each_back_end_says_of_timing_and_tuning():
    assert backend_for("x86").can_time_here() == ON_X86
    if ON_X86:
        assert backend_for("x86").untimed_reason() is None
        assert "cannot time arm code" in backend_for("aarch64").untimed_reason()
        with pytest.raises(st.TargetError, match="needs a board"):
            backend_for("aarch64").check_tuning(None)
    assert not backend_for("cuda").can_time_here()
    assert "does not time layers on a GPU" in backend_for("cuda").untimed_reason()
    with pytest.raises(st.TargetError, match="not over RPC"):
        backend_for("cuda").check_tuning("localhost:9190")
    with pytest.raises(st.TargetError, match="not supported"):
        backend_for("cortex-m4").check_tuning(None)
    assert (
        backend_for("x86").records_choose_format and not backend_for("cuda").records_choose_format
    )


def test_the_lowering_carries_the_back_ends_kernels():
    cpu, gpu = backend_for("x86").lowering(), backend_for("cuda").lowering()
    assert isinstance(cpu, SpmmLowering) and isinstance(gpu, SpmmLowering)
    assert cpu.spmm is spmm_kernel and gpu.spmm is cuda_spmm_kernel
    assert isinstance(backend_for("cortex-m4").lowering(), MicroLowering)


def _layers():
    return analyse(import_onnx(prune_magnitude(mlp(), 0.9, "16x1")))


def test_the_micro_storage_rule_keeps_a_sparse_layer_only_if_smaller():
    micro = backend_for("cortex-m4")
    fc1 = _layers()[0]
    decision = decide(fc1, micro, CompileOptions(measure=False))
    assert isinstance(decision.weight, CompactSparseWeight)
    assert decision.weight.nbytes < fc1.weight.size * 4
    assert (
        decision.choice.reason
        == f"{decision.weight.nbytes / (fc1.weight.size * 4):.0%} of the dense bytes"
    )
    # the dense reference: the compact weight holds exactly the layer's weight
    np.testing.assert_array_equal(decision.weight.to_dense(), fc1.weight)
    # a dense weight has no smaller sparse storage: the rule keeps it dense
    dense_layer = analyse(import_onnx(mlp()))[0]
    forced = decide(dense_layer, micro, CompileOptions(force_block=(1, 1)))
    assert forced.weight is None and forced.choice.format == "dense"
    assert forced.choice.reason == "sparse storage is not smaller than dense"


def test_tuning_blocks_follow_the_back_end():
    fc1 = _layers()[0]
    assert tuning_blocks(fc1, backend_for("x86")) == [(16, 1)]  # 16x1 dominates smaller blocks
    (block,) = tuning_blocks(fc1, backend_for("cuda"))  # the cost model's one format
    assert block == decide(fc1, backend_for("cuda"), CompileOptions(measure=False)).choice.block


def test_a_micro_project_needs_an_output_and_takes_no_records(tmp_path):
    model = prune_magnitude(mlp(), 0.9, "16x1")
    with pytest.raises(st.UsageError, match="name the project folder"):
        st.compile(model, "cortex-m4")
    with pytest.raises(st.UsageError, match="--records is for Linux targets"):
        st.compile(model, "cortex-m4", output=tmp_path / "p", records=str(tmp_path))
    assert not (tmp_path / "p").exists()


def test_the_library_back_end_weights_are_the_layers():
    """A Linux build stores a sparse layer's weight as BSR blocks that hold exactly its dense
    weight, with no zero block stored."""
    fc1 = _layers()[0]
    decision = decide(fc1, backend_for("x86"), CompileOptions(force_block=(16, 1)))
    assert isinstance(decision.weight, BlockSparseWeight) and decision.weight.block == (16, 1)
    np.testing.assert_array_equal(decision.weight.to_dense(), fc1.weight)
    blocks = fc1.weight.reshape(fc1.weight.shape[0] // 16, 16, -1).any(axis=1)
    assert decision.weight.indices.size == int(blocks.sum())
