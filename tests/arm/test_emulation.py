"""aarch64 artefacts of the test models, run under qemu-aarch64 with the TVM runtime only,
give onnxruntime's outputs (computed on the host)."""

from __future__ import annotations

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.arm.emulation import run_artefacts
from sparse_tvm.examples import bert_block, mlp, small_cnn
from sparse_tvm.pruning import prune_magnitude
from tests.conftest import ort_run, random_inputs

MODELS = {
    "mlp": mlp,
    "small_cnn": small_cnn,
    "bert_block": lambda: bert_block(seq=16, hidden=64, heads=4, ffn=128),
}
BUILDS = {  # how each model is compiled: name -> compile_model keywords
    "dense": {"dense": True},
    "sparse": {},  # formats by the cost model (aarch64 cannot be timed here)
    "csr": {"force_block": (1, 1)},  # the unstructured kernels too
}


def _run_under_qemu(tmp_path, target, builds, cpu=None):
    jobs, expected = [], {}
    for name, make in MODELS.items():
        model = prune_magnitude(make(), 0.9, "4x1" if name != "small_cnn" else "1x1")
        inputs = random_inputs(model)
        np.savez(tmp_path / f"{name}.in.npz", **inputs)
        reference = ort_run(model, inputs)
        for build in builds:
            compiled = st.compile(model, target, **BUILDS[build])
            if build == "sparse":
                assert any(row.format != "dense" for row in compiled.report.layers)
            tag = f"{name}.{build}"
            compiled.export(tmp_path / f"{tag}.tar")
            jobs.append(
                (tmp_path / f"{tag}.tar", tmp_path / f"{name}.in.npz", tmp_path / f"{tag}.out.npz")
            )
            expected[tag] = dict(zip([s.name for s in compiled.outputs], reference))
    summaries = run_artefacts(jobs, cpu=cpu)
    assert len(summaries) == len(jobs)
    for tag, outputs in expected.items():
        with np.load(tmp_path / f"{tag}.out.npz") as got:
            assert sorted(got.files) == sorted(outputs)
            for key, value in outputs.items():
                np.testing.assert_allclose(got[key], value, rtol=2e-4, atol=2e-4, err_msg=tag)


def test_models_under_qemu_match_onnxruntime(arm64_root, tmp_path):
    _run_under_qemu(tmp_path, "aarch64", ["dense", "sparse"])


@pytest.mark.slow
def test_rpi4_builds_and_csr_kernels_under_qemu_cortex_a72(arm64_root, tmp_path):
    _run_under_qemu(tmp_path, "rpi4", ["dense", "sparse", "csr"], cpu="cortex-a72")
