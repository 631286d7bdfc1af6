"""``CompileOptions``: every compile setting checked once, whoever passes it."""

from __future__ import annotations

import pytest

import sparse_tvm as st
from sparse_tvm.options import CompileOptions


def test_defaults_and_replacement():
    options = CompileOptions()
    assert (options.measure, options.dense, options.records, options.prefix) == (
        True,
        False,
        None,
        "model",
    )
    changed = CompileOptions.of(options, dense=True, force_block=[16, 1])
    assert changed.dense and changed.force_block == (16, 1) and not options.dense
    assert CompileOptions.of(None) == CompileOptions()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sparsity_threshold": 1.5}, r"sparsity threshold 1.5 is outside \[0, 1\]"),
        ({"prefix": "my-model"}, "prefix 'my-model' is not a C identifier"),
        ({"mesure": False}, "unknown compile option mesure: use .*measure"),
    ],
)
def test_bad_settings_are_one_line_usage_errors(settings, message):
    with pytest.raises(st.UsageError, match=message):
        CompileOptions.of(**settings)
    with pytest.raises(st.UsageError, match=message):
        st.compile("never-read.onnx", **settings)  # refused before the model is read
