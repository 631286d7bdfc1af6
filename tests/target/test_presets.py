import os

import pytest

from sparse_tvm.errors import TargetError
from sparse_tvm.target import presets, resolve_target
from sparse_tvm.target.host_cpu import host_x86_mcpu


def test_x86_preset_reads_the_host():
    target = resolve_target("x86")
    assert target.family == "x86"
    assert target.tvm_target.kind.name == "llvm"
    assert str(target.tvm_target.attrs["mcpu"]) == host_x86_mcpu()
    assert int(target.tvm_target.attrs["num-cores"]) >= 1


@pytest.mark.parametrize(
    ("flags", "mcpu", "width"),
    [
        ({"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma"}, "skylake-avx512", 16),
        (
            {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "avx512_vnni"},
            "cascadelake",
            16,
        ),
        ({"avx2", "fma", "bmi2", "avx"}, "haswell", 8),
        ({"sse2"}, "x86-64", 4),
    ],
)
def test_host_flags_map_to_llvm_cpu_and_vector_width(flags, mcpu, width):
    assert host_x86_mcpu(frozenset(flags)) == mcpu
    assert resolve_target({"kind": "llvm", "mcpu": mcpu}).vector_width == width


def test_presets_are_shipped_data():
    names = set(presets())
    assert {"x86", "x86-avx2", "x86-avx512"} <= names
    assert all(p.description for p in presets().values())


def test_json_target():
    target = resolve_target('{"kind": "llvm", "mcpu": "haswell"}')
    assert target.family == "x86" and str(target.tvm_target.attrs["mcpu"]) == "haswell"
    assert int(target.tvm_target.attrs["num-cores"]) >= 1  # MetaSchedule needs it


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown target 'nope'"),
        ("{bad json", "target JSON is malformed"),
        ('{"kind": "nosuchkind"}', "TVM rejects the target"),
    ],
)
def test_bad_targets_have_clear_errors(spec, message):
    with pytest.raises(TargetError, match=message):
        resolve_target(spec)


def test_tvm_uses_every_core_unless_told_otherwise():
    import os
    import subprocess
    import sys

    from sparse_tvm.target import host_num_cores

    code = "import os, sparse_tvm; print(os.environ['TVM_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == str(host_num_cores())
    env["TVM_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "1"


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads Linux's /proc")
def test_tvm_worker_threads_are_left_unpinned_unless_told_otherwise():
    """TVM pins its pool's workers to cores but not the calling thread, which then shares a
    worker's core in phases (2x slower kernels): after a parallel run no thread is pinned."""
    import os
    import subprocess
    import sys

    code = (
        "import glob, numpy as np, sparse_tvm as st\n"
        "from sparse_tvm.examples import mlp\n"
        "c = st.compile(mlp(batch=64), 'x86', dense=True)\n"
        "c.run([np.ones((64, 64), np.float32)])\n"
        "for status in glob.glob('/proc/self/task/*/status'):\n"
        "    line = [l for l in open(status) if l.startswith('Cpus_allowed_list')][0]\n"
        "    print(line.split()[-1])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TVM_BIND_THREADS"}
    env["TVM_NUM_THREADS"] = "2"
    with open("/proc/self/status") as status:
        (allowed,) = [line.split()[-1] for line in status if line.startswith("Cpus_allowed_list")]
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    masks = out.stdout.split()
    assert len(masks) >= 2 and set(masks) == {allowed}, masks  # the pool's worker too
    if os.cpu_count() >= 2:  # the user's choice stands: TVM pins its worker
        env["TVM_BIND_THREADS"] = "1"
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert len(set(out.stdout.split())) >= 2, out.stdout
