"""``sparse-tvm tune`` on a quantized model tunes each int8 layer's kernel knobs
(MetaSchedule, :mod:`sparse_tvm.tuning.space_int8`) next to its float candidates; ``compile
--records`` then runs the int8 kernels with the tuned knobs (the report says so) and the
outputs stay onnxruntime's."""

from __future__ import annotations

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.analysis import analyse
from sparse_tvm.backends import backend_for
from sparse_tvm.frontend import import_onnx
from sparse_tvm.tuning.records import RecordStore
from tests.conftest import avx2

from .models import output_step, quantized_ffn, run_ort

pytestmark = avx2  # the host's int8 kernel (VNNI hosts have AVX2 too)


def _compiled_with(q, records):
    compiled = st.compile(q, "x86", records=str(records))
    rows = compiled.report.layers
    assert [row.format for row in rows] == ["int8 bsr 16x4"] * 2
    assert all(", tuned (m_tile " in row.reason for row in rows), [r.reason for r in rows]
    x = np.random.default_rng(4).standard_normal((32, 64)).astype(np.float32)
    got, want = np.asarray(compiled.run({"x": x})[0]), run_ort(q, x)
    assert np.abs(got - want).max() <= output_step(q) * 1.001


def test_tuned_int8_knobs_reach_the_compiled_model(tmp_path):
    """The back end's int8 tuner writes each layer's knobs to a records folder; the compiler
    finds them there."""
    q = quantized_ffn()
    backend = backend_for("x86")
    store = RecordStore(tmp_path / "records")
    layers = [layer for layer in analyse(backend.prepare(import_onnx(q))) if layer.int8]
    assert [layer.name for layer in layers] == ["w1", "w2"]
    for layer in layers:
        tuned = backend.tune_int8_kernel(
            layer, trials=2, database=store.database, work_dir=str(store.folder), seed=0
        )
        assert set(tuned.knobs) == {"m_tile", "order"} and tuned.latency_s > 0
    _compiled_with(q, store.folder)


@pytest.mark.slow
def test_tune_command_tunes_the_int8_kernels(tmp_path):
    """The whole run: float candidates and the int8 kernel of each layer."""
    q = quantized_ffn()
    summary = st.tune(q, "x86", str(tmp_path / "records"), trials=2)
    int8_rows = [row for row in summary.candidates if row.format == "int8 bsr 16x4"]
    assert [row.layer for row in int8_rows] == ["w1", "w2"]
    assert all(row.tuned_us and row.tuned_us > 0 and row.trials >= 1 for row in int8_rows)
    _compiled_with(q, tmp_path / "records")
