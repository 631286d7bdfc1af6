"""Vector lanes and cores: one answer for the sparse kernels, the dense rules and the presets.

The values pinned here are the ones the kernels had before the three copies became one
(``sparse_tvm.target.machine``), so the generated code of the shipped presets is unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels.spmm import spmm_spec
from sparse_tvm.target import resolve_target
from sparse_tvm.target.host_cpu import host_num_cores, host_x86_mcpu
from sparse_tvm.target.machine import DEFAULT_CORES, num_cores, vector_bits, vector_lanes

HOST_LANES = {"cascadelake": 16, "skylake-avx512": 16, "haswell": 8, "sandybridge": 8, "x86-64": 4}


def _kernel_spec(target):
    weight = BlockSparseWeight.from_dense(np.eye(16, dtype=np.float32), (4, 1))
    return spmm_spec(weight, 8, target=target)


def test_x86_preset_gets_the_hosts_lanes_and_cores():
    resolved = resolve_target("x86")
    spec = _kernel_spec(resolved.tvm_target)
    assert spec.lanes == HOST_LANES[host_x86_mcpu()] == resolved.vector_width
    assert spec.cores == host_num_cores() == resolved.num_cores


@pytest.mark.parametrize("spec", ["x86-avx2", {"kind": "llvm", "mcpu": "haswell"}])
def test_haswell_is_eight_lanes_whatever_the_host(spec):
    # LLVM's own llvm_get_vector_width answers the compiling host's 512 bits here
    target = resolve_target(spec).tvm_target
    assert _kernel_spec(target).lanes == 8 == vector_lanes(target)
    assert vector_bits(target) == 256 and vector_lanes(target, 16) == 16


@pytest.mark.parametrize("name", ["aarch64", "rpi4", "aarch64-dotprod"])
def test_arm_presets_are_neon_with_four_cores(name):
    target = resolve_target(name).tvm_target
    spec = _kernel_spec(target)
    assert (spec.lanes, spec.cores) == (4, 4)
    assert vector_lanes(target, 64) == 2


def test_avx512_lanes_by_element_width():
    target = resolve_target("x86-avx512").tvm_target
    assert [vector_lanes(target, bits) for bits in (8, 16, 32, 64)] == [64, 32, 16, 8]


@pytest.mark.parametrize(
    "target",
    [
        None,
        tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512"}),
        resolve_target("cuda").tvm_target,
    ],
    ids=["none", "llvm-without-num-cores", "cuda"],
)
def test_targets_without_num_cores_get_the_default(target):
    # 2, what the kernels always assumed (it is in the workload key of cuda tuning records)
    assert DEFAULT_CORES == 2
    assert num_cores(target) == _kernel_spec(target).cores == 2


def test_targets_without_simd_features_get_128_bits():
    for target in (None, resolve_target("cuda").tvm_target, resolve_target("cortex-m4").tvm_target):
        assert vector_bits(target) == 128 and _kernel_spec(target).lanes == 4


def test_llvm_targets_from_resolve_target_always_say_their_cores():
    for spec in ("x86", "x86-avx2", "x86-avx512", "aarch64", "rpi4", {"kind": "llvm"}):
        assert "num-cores" in resolve_target(spec).tvm_target.attrs


def test_vnni_level_shares_the_float_machine_key():
    """cascadelake (skylake-avx512 + VNNI) generates the same float32 code: tuned records and
    board timings of one count for the other; other cpus stay apart."""
    from sparse_tvm.target.machine import has_vnni, machine_key

    vnni = tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake", "num-cores": 2})
    plain = tvm.target.Target({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 2})
    other = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})
    assert machine_key(vnni) == machine_key(plain) == str(plain)
    assert machine_key(other) == str(other) != machine_key(plain)
    assert has_vnni(vnni) and not has_vnni(plain) and not has_vnni(other)
