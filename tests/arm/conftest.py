"""Fixtures of the aarch64 tests: the cross toolchain, qemu-aarch64 and the arm64 Python root.

Without the Debian packages (gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user, and
debootstrap for the Python root) the tests that need them skip and say which are missing.
"""

from __future__ import annotations

import pytest

from sparse_tvm.arm.emulation import EmulationError, missing_tools, python_root


@pytest.fixture(scope="session")
def cross_tools() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"aarch64 cross toolchain or emulator missing: {', '.join(missing)}")


@pytest.fixture(scope="session")
def arm64_root(cross_tools):
    """The cached arm64 Python root with the TVM runtime (built on first use, ~30-40 s)."""
    missing = missing_tools(python_root=True)
    if missing:
        pytest.skip(f"cannot build the arm64 Python root: missing {', '.join(missing)}")
    try:
        return python_root()
    except EmulationError as err:  # no network to Debian or PyPI
        pytest.skip(f"arm64 Python root unavailable: {err}")
