"""aarch64 code on an x86 host: qemu-aarch64, and an arm64 Python root that has the TVM runtime.

Two ways to run what the ``aarch64`` / ``rpi4`` presets build:

* a C program (or any aarch64 Linux executable): ``qemu-aarch64 -L /usr/aarch64-linux-gnu``
  (:func:`run_program`); needs the Debian packages ``qemu-user`` and ``libc6-arm64-cross``.
* a whole artefact, through the TVM runtime in Python as a board runs it
  (:func:`run_artefacts`, :func:`python_command`): an arm64 Debian root made with
  ``debootstrap --foreign`` holding ``python3.11``, plus the ``manylinux_2_28_aarch64`` wheels
  of apache-tvm, apache-tvm-ffi and numpy, run with ``qemu-aarch64 -L ROOT``. Building it
  downloads about 150 MB (Debian and PyPI) and takes ~30 s; it is cached in
  ``~/.cache/sparse-tvm/arm64-root`` (``SPARSE_TVM_ARM64_ROOT`` moves it) and rebuilt only when
  the pinned versions change. The root keeps only TVM's runtime libraries, as a board needs:
  ``libtvm_compiler.so`` (240 MB) is removed, and TVM then loads the runtime alone, as
  ``TVM_USE_RUNTIME_LIB=1`` asks anyway (artefact runner and RPC server alike).

binfmt_misc is not mounted in containers, so the emulator is always called explicitly.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from sparse_tvm.errors import DeviceError

QEMU = "qemu-aarch64"
CROSS_COMPILER = "aarch64-linux-gnu-gcc"
SYSROOT = Path("/usr/aarch64-linux-gnu")  # the arm64 libc of libc6-arm64-cross
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
ROOT_PACKAGES = ("python3-minimal", "libpython3.11-stdlib")
PYTHON = "usr/bin/python3.11"
SITE = "opt/site"  # where the wheels go inside the root (PYTHONPATH=/opt/site)
WHEEL_PLATFORM = "manylinux_2_28_aarch64"  # what the aarch64 TVM wheels are tagged (not 2014)
RUN_ARTEFACT = Path(__file__).with_name("run_artefact.py")
COMPILER_LIB = f"{SITE}/tvm/lib/libtvm_compiler.so"  # not needed on a board: removed
_STAMP = ".sparse-tvm-root.json"

# The tool each check needs, with the Debian package that brings it.
_TOOLS = {
    QEMU: "qemu-user",
    CROSS_COMPILER: "gcc-aarch64-linux-gnu",
    "debootstrap": "debootstrap",
}


class EmulationError(DeviceError):
    """The emulator, the cross toolchain or the arm64 Python root is missing or failed."""


def wheels() -> tuple[str, ...]:
    """The requirements installed in the root: the host's TVM pins, so artefacts match."""
    return (
        f"apache-tvm=={metadata.version('apache-tvm')}",
        f"apache-tvm-ffi=={metadata.version('apache-tvm-ffi')}",
        "numpy",
        "ml_dtypes",
        "typing_extensions",
        # tvm.exec.rpc_server's worker process
        "cloudpickle",
        "psutil",
    )


def missing_tools(*, python_root: bool = False) -> list[str]:
    """What is missing to cross-build and emulate, as ``"tool (Debian package)"``; [] if none.

    With ``python_root`` also what building the Python root needs (debootstrap, running as
    root), unless a built root is already cached.
    """
    missing = [
        f"{tool} ({package})"
        for tool, package in _TOOLS.items()
        if tool != "debootstrap" and shutil.which(tool) is None
    ]
    if not (SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        missing.append(f"{SYSROOT} (libc6-arm64-cross)")
    if python_root and not _is_current(default_root()):
        if shutil.which("debootstrap") is None:
            missing.append("debootstrap (debootstrap)")
        elif os.geteuid() != 0:
            missing.append("root privileges for debootstrap (or a cached arm64 root)")
    return missing


def default_root() -> Path:
    """Where the arm64 Python root is cached."""
    if os.environ.get("SPARSE_TVM_ARM64_ROOT"):
        return Path(os.environ["SPARSE_TVM_ARM64_ROOT"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "sparse-tvm" / "arm64-root"


def _spec() -> dict:
    return {"suite": DEBIAN_SUITE, "packages": list(ROOT_PACKAGES), "wheels": list(wheels())}


def _is_current(root: Path) -> bool:
    try:
        return json.loads((root / _STAMP).read_text()) == _spec()
    except (OSError, ValueError):
        return False


def python_root(
    root: str | os.PathLike | None = None, *, progress: Callable[[str], None] | None = None
) -> Path:
    """The arm64 Python root, built first if it is missing or stale. Safe to call concurrently."""
    root = Path(root) if root is not None else default_root()
    if _is_current(root):
        _drop_compiler(root)  # roots built before it was dropped
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it
        if not _is_current(root):
            _build(root, progress or (lambda _line: None))
    return root


def _drop_compiler(root: Path) -> None:
    """Remove TVM's compiler library from the root (no process in the root loads it)."""
    (root / COMPILER_LIB).unlink(missing_ok=True)


def _run(argv: Sequence[str], what: str, timeout: float) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise EmulationError(f"{what} failed: {err}") from None
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise EmulationError(f"{what} failed (exit {done.returncode}): {tail}")


def _build(root: Path, say: Callable[[str], None]) -> None:
    missing = [m for m in missing_tools(python_root=True) if not m.startswith(CROSS_COMPILER)]
    if missing:
        raise EmulationError(f"cannot build the arm64 Python root: missing {', '.join(missing)}")
    work = root.with_name(f".{root.name}.building-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        say(f"debootstrap arm64 {DEBIAN_SUITE} ({', '.join(ROOT_PACKAGES)}) into {work}")
        _run(
            [
                "debootstrap",
                "--foreign",  # no second stage: nothing runs inside the root while building
                "--arch=arm64",
                "--variant=minbase",
                f"--include={','.join(ROOT_PACKAGES)}",
                DEBIAN_SUITE,
                str(work),
                DEBIAN_MIRROR,
            ],
            "debootstrap",
            timeout=600,
        )
        # --foreign leaves the extra packages downloaded but not unpacked.
        archives = work / "var" / "cache" / "apt" / "archives"
        for deb in sorted(archives.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(work)], f"unpacking {deb.name}", timeout=120)
            deb.unlink()
        say(f"installing {', '.join(wheels())} ({WHEEL_PLATFORM} wheels)")
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                f"--platform={WHEEL_PLATFORM}",
                "--python-version=3.11",
                "--implementation=cp",
                f"--target={work / SITE}",
                *wheels(),
            ],
            "pip install of the aarch64 wheels",
            timeout=600,
        )
        _drop_compiler(work)
        if not (work / PYTHON).exists():
            raise EmulationError(f"the arm64 root has no {PYTHON} after debootstrap")
        (work / _STAMP).write_text(json.dumps(_spec()))
        shutil.rmtree(root, ignore_errors=True)
        os.replace(work, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def python_env(runtime_only: bool = True) -> dict[str, str]:
    """The environment of a Python run in the root (``TVM_USE_RUNTIME_LIB``: 3.5 s, not 9.5 s).

    ``runtime_only=False`` changes nothing since the root has no compiler library to load.
    """
    env = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        env.pop(name, None)
    env["PYTHONPATH"] = "/" + SITE  # qemu -L looks paths up in the root first
    env["PYTHONNOUSERSITE"] = "1"
    if runtime_only:
        env["TVM_USE_RUNTIME_LIB"] = "1"
    else:
        env.pop("TVM_USE_RUNTIME_LIB", None)
    return env


def python_command(root: str | os.PathLike, *args: str, cpu: str | None = None) -> list[str]:
    """argv that runs ``python3.11 ARGS`` of the arm64 ``root`` under qemu-aarch64."""
    root = Path(root)
    cpu_args = ["-cpu", cpu] if cpu else []
    return [QEMU, *cpu_args, "-L", str(root), str(root / PYTHON), *args]


def run_artefacts(
    jobs: Sequence[tuple[str | os.PathLike, str | os.PathLike, str | os.PathLike]],
    *,
    root: str | os.PathLike | None = None,
    cpu: str | None = None,
    timeout: float = 600,
) -> list[dict]:
    """Run artefacts under qemu-aarch64 with the TVM runtime only, as a board would.

    ``jobs`` are ``(model.tar, inputs.npz, outputs.npz)``; one emulated process runs them all
    (:mod:`sparse_tvm.arm.run_artefact`). Returns its per-artefact summaries.
    """
    root = python_root(root)
    argv = python_command(root, str(RUN_ARTEFACT), *[os.fspath(p) for job in jobs for p in job])
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=python_env()
        )
    except subprocess.TimeoutExpired:
        raise EmulationError(f"the emulated run took more than {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise EmulationError(f"the emulated run failed (exit {done.returncode}):\n{tail}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def run_program(
    argv: Sequence[str | os.PathLike], *, target: str = "aarch64", timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run an aarch64 Linux executable the way the preset's ``run`` key says (qemu, cross libc)."""
    from sparse_tvm.target import presets

    prefix = list(presets()[target].extra["run"])
    return subprocess.run(
        [*prefix, *map(os.fspath, argv)], capture_output=True, text=True, timeout=timeout
    )


__all__ = [
    "CROSS_COMPILER",
    "EmulationError",
    "QEMU",
    "SYSROOT",
    "default_root",
    "missing_tools",
    "python_command",
    "python_env",
    "python_root",
    "run_artefacts",
    "run_program",
    "wheels",
]
