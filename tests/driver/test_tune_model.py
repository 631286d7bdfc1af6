"""sparse-tvm tune -> records -> compile --records, and the never-slower-than-dense decision."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import sparse_tvm as st
from sparse_tvm.driver.tune_model import tune_model
from sparse_tvm.examples import mlp
from sparse_tvm.pruning import prune_magnitude
from sparse_tvm.tuning.records import LOCK_FILE, tuning_lock
from tests.conftest import ort_run, random_inputs


def test_tune_then_compile_with_records(tmp_path, monkeypatch):
    model = prune_magnitude(mlp(batch=32, features=64, hidden=128, classes=16), 0.9, "16x1")
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    records = tmp_path / "records"
    lines = []
    summary = tune_model(path, "x86", records, trials=4, progress=lines.append)
    tuned = [row for row in summary.candidates if row.tuned_us is not None]
    assert tuned and all(row.trials == 4 for row in tuned)
    assert any("trials, best" in line for line in lines)  # progress per measured batch
    # a rerun finds every trial measured and measures nothing new
    again = tune_model(path, "x86", records, trials=4)
    assert all(row.trials == 0 for row in again.candidates if row.tuned_us is not None)

    # timings pinned, so that the outcome is the setup's, not this machine's load: each
    # layer's record beats the default schedule (25 us against 50) and dense (100 us)
    decision = "sparse_tvm.decision.layer_decision"
    monkeypatch.setattr(f"{decision}.time_dense", lambda *a, **k: 100e-6)
    monkeypatch.setattr(
        f"{decision}.time_sparse",
        lambda *a, kernel=None, **k: 25e-6 if kernel is not None else 50e-6,
    )
    compiled = st.compile(path, target="x86", records=str(records))
    rows = compiled.report.layers
    # every layer was tuned, so every layer runs its record's kernel
    assert len(rows) == 3 and all(row.format == "bsr 16x1" for row in rows)
    for row in rows:
        assert row.reason.startswith("tuned (") and " us while tuning); " in row.reason
        assert row.reason.endswith("; measured 4.00x over dense: kept sparse")
    inputs = random_inputs(model)
    np.testing.assert_allclose(
        compiled.run(inputs)[0], ort_run(model, inputs)[0], rtol=1e-4, atol=1e-4
    )


def test_a_second_tune_on_the_same_folder_fails_at_once(tmp_path):
    model = prune_magnitude(mlp(batch=8, features=32, hidden=64, classes=8), 0.9, "16x1")
    records = tmp_path / "records"
    busy = r"^records folder .* is being tuned by sparse-tvm tune \(pid \d+\): wait for it"
    # held as a running `sparse-tvm tune` holds it
    with tuning_lock(records), pytest.raises(st.SparseTVMError, match=busy):
        tune_model(model, "x86", records, trials=2)
    assert (records / LOCK_FILE).exists() and not (records / "database_workload.json").exists()
    with tuning_lock(records):  # released with the run
        pass


def test_missing_records_folder_is_a_clear_error(tmp_path):
    with pytest.raises(st.SparseTVMError, match="records folder .* not found"):
        st.compile(mlp(), target="x86", records=str(tmp_path / "nope"))


def test_low_sparsity_model_compiles_all_dense():
    # at 30 % no layer can gain: the build is TVM's dense build of the same model
    model = prune_magnitude(mlp(batch=64, hidden=512), 0.3, "1x1")
    compiled = st.compile(model, target="x86")
    assert {row.format for row in compiled.report.layers} == {"dense"}
    inputs = random_inputs(model)
    np.testing.assert_allclose(
        compiled.run(inputs)[0], ort_run(model, inputs)[0], rtol=1e-4, atol=1e-4
    )
