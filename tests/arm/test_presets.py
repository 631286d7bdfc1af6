"""The aarch64 and rpi4 presets: Arm family, NEON width, cross compiler, how to run."""

from __future__ import annotations

import pytest

from sparse_tvm.kernels.spmm import vector_lanes
from sparse_tvm.target import presets, resolve_target


@pytest.mark.parametrize("name", ["aarch64", "rpi4"])
def test_arm_presets_resolve(name):
    resolved = resolve_target(name)
    assert resolved.family == "arm"
    assert resolved.vector_width == 4 and vector_lanes(resolved.tvm_target) == 4
    assert resolved.num_cores == 4
    assert str(resolved.tvm_target.attrs["mtriple"]) == "aarch64-linux-gnu"
    assert [str(a) for a in resolved.tvm_target.attrs["mattr"]] == ["+neon"]
    extra = presets()[name].extra
    assert extra["cross_compiler"] == "aarch64-linux-gnu-gcc"
    assert extra["run"][0] == "qemu-aarch64" and extra["run"][-2:] == [
        "-L",
        "/usr/aarch64-linux-gnu",
    ]


def test_rpi4_is_a_cortex_a72():
    assert str(resolve_target("rpi4").tvm_target.attrs["mcpu"]) == "cortex-a72"
    assert presets()["rpi4"].extra["run"][1:3] == ["-cpu", "cortex-a72"]


def test_aarch64_json_target_is_arm():
    custom = resolve_target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    assert custom.family == "arm" and custom.vector_width == 4
