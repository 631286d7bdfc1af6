"""The one constant blob of a Cortex-M int8 kernel: every array where ``blob_layout`` says,
the per-row values as one record a row (the correction negated: each sum's start), the
padding rows of the last block zero."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st_

from sparse_tvm.micro.int8_kernels import MicroInt8Spec, blob_layout, pack_blob, padded_rows
from sparse_tvm.micro.int8_weight import dense_int8, sparse_int8

PLAIN = ("data", "indices", "indptr")


def _field(blob: np.ndarray, entry) -> np.ndarray:
    dtype, length, offset, stride = entry
    size = np.dtype(dtype).itemsize
    raw = blob[offset : offset + size * (stride * (length - 1) + 1)]
    return raw.view(dtype)[::stride]


@settings(max_examples=30, deadline=None)
@given(
    n=st_.integers(1, 30),
    k=st_.integers(4, 40),
    r=st_.sampled_from([0, 1, 2, 4, 8]),  # 0: the dense layout
    correction=st_.booleans(),
    bias=st_.booleans(),
    tail_bias=st_.booleans(),
    seed=st_.integers(0, 2**16),
)
def test_blob_holds_every_array_where_the_layout_says(n, k, r, correction, bias, tail_bias, seed):
    rng = np.random.default_rng(seed)
    w = np.where(rng.random((n, k)) < 0.3, rng.integers(-127, 128, (n, k)), 0).astype(np.int8)
    weight = dense_int8(w) if r == 0 else sparse_int8(w, r)
    spec = MicroInt8Spec(1, correction=correction, bias=bias, tail_bias=tail_bias)
    arrays = {
        "data": weight.data,
        "corr": rng.integers(-(2**20), 2**20, n).astype(np.int32),
        "scale": rng.random(n).astype(np.float32),
        "bias": rng.standard_normal(n).astype(np.float32) if bias else None,
        "tail_bias": rng.standard_normal(n).astype(np.float32) if tail_bias else None,
    }
    if not weight.dense:
        arrays |= {"indices": weight.indices, "indptr": weight.indptr}
    layout = blob_layout(weight, spec)
    blob = pack_blob(weight, spec, arrays)
    assert blob.size % 4 == 0
    fields = [f for f, on in (("corr", correction), ("bias", bias), ("tail_bias", tail_bias)) if on]
    assert set(layout) == {"data", "scale", *fields} | (
        set() if weight.dense else {"indices", "indptr"}
    )
    rows = padded_rows(weight)
    for name, entry in layout.items():
        got = _field(blob, entry)
        if name in PLAIN:
            np.testing.assert_array_equal(got, np.asarray(arrays[name]).reshape(-1))
            continue
        assert entry[1] == rows and entry[3] == 1 + len(fields)
        want = -arrays[name] if name == "corr" else arrays[name]
        np.testing.assert_array_equal(got[:n], want)
        assert not got[n:].any()  # padding rows: a zero start and scale
    size = {name: np.dtype(e[0]).itemsize for name, e in layout.items()}
    spans = [(e[2], e[2] + size[name] * e[1]) for name, e in layout.items() if name in PLAIN]
    first = min(e[2] for name, e in layout.items() if name not in PLAIN)
    spans.append((first, first + 4 * (1 + len(fields)) * rows))  # the records
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start  # no two sections overlap
