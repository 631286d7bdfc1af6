"""64-bit Arm (aarch64, NEON) support: emulation for tests and CI, code checks, the board runner.

* :mod:`.emulation` — qemu-aarch64 and the cached arm64 Python root with the TVM runtime.
* :mod:`.neon` — checks that generated assembly has NEON FMAs in its loops.
* :mod:`.run_artefact` — the script a board runs (TVM runtime only; imports no sparse_tvm).

The presets are ``targets/aarch64.toml`` and ``targets/rpi4.toml``; the sparse kernels take
their 4-lane tiles from :func:`sparse_tvm.kernels.spmm.vector_lanes`.
"""
