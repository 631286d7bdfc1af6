"""Where the host put this VM's cores: the round-trip time of a cache line between two CPUs.

On the 2-vCPU cloud machine the benchmarks run on, the hypervisor moves the two vCPUs every few
seconds between cores that share an L3 (a cache line goes there and back in ~55 ns) and cores
that do not (300-1000 ns: another CCD or socket). Every 2-thread kernel whose threads hand data
to each other (a kernel's output read by the next kernel split another way, a packing
transpose, the thread pool's barrier) runs ~2x slower in the second placement: MiniLM-L6 at
90 % 1x1 took 6.1 ms a run while the line went in 55 ns and 13.4 ms while it took 300+ ns,
in the same process (softmax, layer norm and transposes 2-3x, the sparse layers 2.3x), while
one-thread loops (FMA, L2, L3 and DRAM streams) kept their speed. No engine escapes it
(onnxruntime's medians move the same way); a benchmark records the placement of each round so
that medians can be compared within one placement.

The probe is 30 lines of C built with the system's C compiler on first use (cached next to the
results); without a compiler :func:`core_to_core_ns` gives None and every round is
"unknown".
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

# A round trip under this is two cores sharing a last-level cache (measured 50-65 ns here;
# the other placement 300-1000 ns).
NEAR_NS = 150.0
ROUND_TRIPS = 4000

_SOURCE = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
static _Atomic int flag __attribute__((aligned(64)));
static int trips, cpu_b;
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9; }
static void pin(int cpu) { cpu_set_t s; CPU_ZERO(&s); CPU_SET(cpu, &s);
  pthread_setaffinity_np(pthread_self(), sizeof s, &s); }
static void *pong(void *unused) { pin(cpu_b);
  for (int i = 0; i < trips; i++) {
    while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 1) ;
    atomic_store_explicit(&flag, 2 * i + 2, memory_order_release); }
  return unused; }
/* Mean round trip in ns of a cache line between cpu_a (this thread) and cpu_b; -1 if a
   thread cannot be made. The calling thread's CPU affinity is restored. */
double round_trip_ns(int cpu_a, int other, int n) {
  cpu_set_t saved; pthread_getaffinity_np(pthread_self(), sizeof saved, &saved);
  trips = n; cpu_b = other; atomic_store(&flag, 0);
  pthread_t t; if (pthread_create(&t, 0, pong, 0)) return -1;
  pin(cpu_a);
  double t0 = now();
  for (int i = 0; i < n; i++) {
    atomic_store_explicit(&flag, 2 * i + 1, memory_order_release);
    while (atomic_load_explicit(&flag, memory_order_acquire) != 2 * i + 2) ; }
  double dt = now() - t0;
  pthread_join(t, 0);
  pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
  return dt / n * 1e9; }
"""

_LIB: ctypes.CDLL | None | bool = False  # False: not tried yet


def _library() -> ctypes.CDLL | None:
    global _LIB
    if _LIB is not False:
        return _LIB
    _LIB = None
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None or not hasattr(os, "sched_getaffinity"):
        return None
    cache = Path(__file__).resolve().parent / "results" / ".placement"
    lib_path = cache / "round_trip.so"
    if not lib_path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(tmp) / "round_trip.c"
            source.write_text(_SOURCE)
            built = Path(tmp) / "round_trip.so"
            result = subprocess.run(
                [cc, "-O2", "-shared", "-fPIC", "-o", str(built), str(source), "-lpthread"],
                capture_output=True,
            )
            if result.returncode != 0:
                return None
            os.replace(built, lib_path)  # whole or not at all
    lib = ctypes.CDLL(str(lib_path))
    lib.round_trip_ns.restype = ctypes.c_double
    lib.round_trip_ns.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    _LIB = lib
    return lib


def core_to_core_ns(trips: int = ROUND_TRIPS) -> float | None:
    """Round trip of a cache line between the first two CPUs this process may use, in ns
    (None: one CPU, or no C compiler to build the probe)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    lib = _library() if len(cpus) >= 2 else None
    if lib is None:
        return None
    value = lib.round_trip_ns(cpus[0], cpus[1], trips)
    return value if value > 0 else None


def placement(before_ns: float | None, after_ns: float | None) -> str:
    """A timed stretch's placement from the probes around it: "near" (the cores shared a
    cache before and after), "far" (neither), "mixed" (it changed), "unknown" (no probe)."""
    if before_ns is None or after_ns is None:
        return "unknown"
    near = (before_ns < NEAR_NS, after_ns < NEAR_NS)
    return "near" if all(near) else "far" if not any(near) else "mixed"
