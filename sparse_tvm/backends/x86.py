"""The x86-64 back end (AVX2 / AVX-512 / VNNI): Linux on the host, timed and tuned here."""

from __future__ import annotations

from sparse_tvm.backends.cpu import CPUBackend


class X86Backend(CPUBackend):
    family = "x86"
    host_machines = ("x86_64", "amd64", "i686")
    shipped_records = "x86.json"


__all__ = ["X86Backend"]
