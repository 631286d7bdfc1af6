"""Shared helpers of the benchmark scripts: machine header, runners, interleaved timing, output.

Every runner is a zero-argument callable that runs the workload once. :func:`measure`
times all runners of one case in the same process, *interleaved*: in each round every
runner is warmed once and then timed over a batch of ``number`` calls, and the reported
latency is the median (over rounds) of the per-call batch mean. Interleaving spreads any
background load over all methods instead of penalising the one that happened to run while
something else was busy.

TVM is timed by the VM's C++ ``time_evaluator`` (no Python in the loop); the other runners
are timed with ``time.perf_counter`` around a Python loop of ``number`` calls (their
per-call Python overhead is about a microsecond, see ``python_overhead_s`` in the JSON).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/bench_*.py` from a plain checkout
    sys.path.insert(0, str(ROOT))


def _threads_from_argv() -> int | None:
    """``--threads N`` of the calling script, read before numpy and TVM start their pools."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return None


# Two threads everywhere by default (the machine has two cores): TVM_NUM_THREADS is set only
# where the user did not, OpenBLAS is left to its default (one thread per core). An explicit
# --threads N sets TVM_NUM_THREADS, OPENBLAS_NUM_THREADS and OMP_NUM_THREADS to N.
EXPLICIT_THREADS = _threads_from_argv()
THREADS = EXPLICIT_THREADS or 2
if EXPLICIT_THREADS:
    for _var in ("TVM_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ[_var] = str(EXPLICIT_THREADS)
else:
    os.environ.setdefault("TVM_NUM_THREADS", str(THREADS))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import scipy  # noqa: E402
import tvm  # noqa: E402

import placement  # noqa: E402  (benchmarks/placement.py)

RESULTS = ROOT / "benchmarks" / "results"


# ---------------------------------------------------------------------------- machine header


def add_threads_option(parser) -> None:
    """The scripts' ``--threads N`` (read from sys.argv at import, see EXPLICIT_THREADS; the
    option is declared so that argparse accepts it and --help lists it)."""
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads of every runtime (default 2; an explicit value also sets "
        "TVM_NUM_THREADS / OPENBLAS_NUM_THREADS / OMP_NUM_THREADS)",
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def blas_info() -> dict:
    """What numpy's BLAS is and how many threads it uses (threadpoolctl when installed)."""
    info: dict = {
        "env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("OPENBLAS", "OMP_", "MKL_", "GOTO", "BLIS"))
        }
    }
    try:
        from threadpoolctl import threadpool_info

        info["threadpoolctl"] = threadpool_info()
    except ImportError:
        info["threadpoolctl"] = "not installed"
        try:
            cfg = np.show_config(mode="dicts")
            info["numpy_blas"] = cfg.get("Build Dependencies", {}).get("blas", {})
        except TypeError:  # numpy < 1.26 has no mode=
            pass
    return info


def source_state() -> dict:
    """The git commit of the checkout and the files modified in it (what was measured)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "modified": [
            line
            for line in git(
                "status", "--porcelain", "--", "sparse_tvm", "schedules", "targets"
            ).splitlines()
            if line
        ],
    }


def loadavg() -> tuple[float, float, float] | None:
    """The load averages (1, 5, 15 min), or None where the system has none."""
    try:
        return os.getloadavg()
    except OSError:
        return None


def machine() -> dict:
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "avx512f": "avx512f" in flags,
        "threads": THREADS,
        "threads_set_by_flag": EXPLICIT_THREADS is not None,
        "tvm_num_threads": os.environ.get("TVM_NUM_THREADS"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "tvm": tvm.__version__,
        "openvino": openvino_version(),
        "deepsparse_python": os.environ.get(DEEPSPARSE_ENV),
        "loadavg_at_start": loadavg(),
        "blas": blas_info(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "source": source_state(),
    }


def header_line(info: dict) -> str:
    return (
        f"# {info['cpu']}, {info['cores']} cores"
        f"{' (AVX-512)' if info['avx512f'] else ''}, {info['threads']} threads; "
        f"onnxruntime {info['onnxruntime']}, OpenVINO {info.get('openvino') or 'absent'}, "
        f"TVM {info['tvm']}, numpy {info['numpy']}, scipy {info['scipy']}; "
        f"load avg {fmt_load(info['loadavg_at_start'])}"
    )


def fmt_load(load) -> str:
    return "n/a" if load is None else " ".join(f"{v:.2f}" for v in load)


# ---------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """One way of running a workload: ``call`` runs it once; ``tvm_timer`` if TVM."""

    name: str
    call: Callable[[], object]
    tvm_timer: Callable[[int], float] | None = None  # number -> mean seconds per call
    note: str = ""
    info: dict = field(default_factory=dict)  # what the JSON should say about this runtime
    fetch: Callable[[], np.ndarray] | None = None  # the first output of the last call


def tvm_arguments(compiled, x: np.ndarray | dict[str, np.ndarray]) -> list:
    """The VM arguments of a ``CompiledModel``: one array, or a feed by input name."""
    arrays = [x] if isinstance(x, np.ndarray) else [x[spec.name] for spec in compiled.inputs]
    return [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays]


def tvm_runner(
    name: str, compiled, x: np.ndarray | dict[str, np.ndarray], note: str = ""
) -> Runner:
    """A runner of a sparse-tvm ``CompiledModel`` on one input (or a feed by input name),
    timed by time_evaluator."""
    vm = compiled.vm
    args = tvm_arguments(compiled, x)
    main = vm["main"]

    def timer(number: int) -> float:
        evaluator = vm.time_evaluator("main", tvm.cpu(), number=number, repeat=1)
        return float(evaluator(*args).mean)

    return Runner(name, lambda: main(*args), timer, note or "VM time_evaluator")


def ort_session(model: onnx.ModelProto, threads: int = THREADS) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_reference(model: onnx.ModelProto, threads: int = THREADS) -> ort.InferenceSession:
    """onnxruntime as the accuracy reference: exact quantized products on x86 without VNNI
    (its default u8 x s8 kernels saturate there; ``sparse_tvm.runtime.onnxruntime_reference``).
    The timed baselines keep :func:`ort_session`'s defaults."""
    from sparse_tvm.runtime.onnxruntime_reference import reference_session

    return reference_session(model, threads)


def ort_runner(name: str, session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> Runner:
    """onnxruntime through IO binding: inputs bound once, outputs left to ORT to allocate."""
    binding = session.io_binding()
    for key, value in feeds.items():
        binding.bind_cpu_input(key, np.ascontiguousarray(value))
    for out in session.get_outputs():
        binding.bind_output(out.name)

    def call():
        session.run_with_iobinding(binding)

    return Runner(name, call, note="run_with_iobinding, perf_counter loop")


def ort_run(session: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return session.run(None, feeds)


# ---------------------------------------------------------------------------- OpenVINO

# float32 on every CPU (the plugin would run bf16 where the CPU has it), the latency hint with
# one stream: one request at a time on THREADS threads, like the other runtimes.
OPENVINO_CONFIG = {
    "INFERENCE_PRECISION_HINT": "f32",
    "PERFORMANCE_HINT": "LATENCY",
    "NUM_STREAMS": "1",
}
OPENVINO_MISSING = "OpenVINO not installed (pip install -r benchmarks/requirements.txt)"


def openvino_module():
    """The ``openvino`` module, or None where it is not installed (the column is then left
    out of the tables)."""
    try:
        import openvino
    except ImportError:
        return None
    return openvino


def openvino_version() -> str | None:
    """OpenVINO's version (the short form, ``2026.4.1``), or None without it."""
    ov = openvino_module()
    return None if ov is None else ov.__version__.split("-")[0]


def openvino_runner(
    name: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray], threads: int = THREADS
) -> Runner:
    """OpenVINO's CPU plugin on ``model`` (read from the ONNX bytes in memory, no file), inputs
    set once: ``call`` runs one inference, ``fetch`` returns the first output of the last one.

    Raises ImportError where OpenVINO is not installed (see :func:`openvino_module`).
    """
    ov = openvino_module()
    if ov is None:
        raise ImportError(OPENVINO_MISSING)
    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": str(threads), **OPENVINO_CONFIG}
    compiled = core.compile_model(core.read_model(model.SerializeToString()), "CPU", config)
    request = compiled.create_infer_request()
    for port in compiled.inputs:
        request.set_tensor(port, ov.Tensor(np.ascontiguousarray(feeds[port.get_any_name()])))
    keys = [*config, "ENABLE_CPU_PINNING", "EXECUTION_DEVICES"]
    return Runner(
        name,
        request.infer,
        note="InferRequest.infer, perf_counter loop",
        info={key: _openvino_text(compiled.get_property(key)) for key in keys},
        fetch=lambda: request.get_output_tensor(0).data.copy(),
    )


def _openvino_text(value) -> str:
    """A compiled model's property as the JSON keeps it (an element type by its short name)."""
    if hasattr(value, "get_type_name"):  # openvino.Type: "f32", not "<Type: 'float32'>"
        return value.get_type_name()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


# ---------------------------------------------------------------------------- DeepSparse

# DeepSparse 1.8 pins old numpy / onnx: it lives in its own virtual environment, and the suite
# times it in a subprocess of that environment's Python when this variable names it.
DEEPSPARSE_ENV = "DEEPSPARSE_PYTHON"
DEEPSPARSE_SCRIPT = Path(__file__).resolve().parent / "deepsparse_time.py"
# DeepSparse 1.8's onnxruntime reads ONNX IR <= 9 ("Unsupported model IR version: 10"); the
# models here use nothing of IR 10, so the timed copy is labelled 9
DEEPSPARSE_MAX_IR = 9


def deepsparse_python() -> str | None:
    """The Python of DeepSparse's environment (``$DEEPSPARSE_PYTHON``), or None: no column."""
    return os.environ.get(DEEPSPARSE_ENV) or None


def deepsparse_timing(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray],
    rounds: int,
    batch_s: float,
    threads: int = THREADS,
    timeout_s: float = 900,
) -> tuple[dict, np.ndarray]:
    """Time ``model`` with DeepSparse in ``$DEEPSPARSE_PYTHON`` (``deepsparse_time.py``):
    ``rounds`` batches of ~``batch_s`` seconds on ``threads`` cores, in its own process (not
    interleaved with the other runners). Returns (the timing as :meth:`Timing.to_dict` writes
    it, plus ``version``; the first output on ``feeds``). Raises RuntimeError on failure."""
    import subprocess
    import tempfile

    python = deepsparse_python()
    if python is None:
        raise RuntimeError(f"{DEEPSPARSE_ENV} is not set")
    with tempfile.TemporaryDirectory(prefix="deepsparse_") as tmp:
        folder = Path(tmp)
        if model.ir_version > DEEPSPARSE_MAX_IR:  # torch's exporter writes IR 10
            model = onnx.ModelProto.FromString(model.SerializeToString())
            model.ir_version = DEEPSPARSE_MAX_IR
        onnx.save(model, folder / "model.onnx")
        np.savez(folder / "inputs.npz", **feeds)
        command = [python, str(DEEPSPARSE_SCRIPT), str(folder), "--threads", str(threads)]
        command += ["--rounds", str(rounds), "--batch-s", str(batch_s)]
        env = {**os.environ, "NM_DISABLE_ANALYTICS": "1"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
        if done.returncode != 0:
            raise RuntimeError(" ".join((done.stderr or done.stdout).split()[-60:]))
        timing = json.loads(done.stdout.strip().splitlines()[-1])
        return timing, np.load(folder / "output.npy")


def tune_candidates(summary) -> list[dict]:
    """The candidate kernels of a ``tune_model`` summary as JSON rows."""
    return [
        {
            "format": row.format,
            "tuned_us": row.tuned_us,
            "default_us": row.default_us,
            "new_trials": row.trials,
            "note": row.note,
        }
        for row in summary.candidates
    ]


def error_text(err: BaseException) -> str:
    """One line for the tables and the JSON: the exception type and its message, shortened."""
    return f"{type(err).__name__}: {' '.join(str(err).split())[:400]}"


def compiled_runner(
    label: str,
    model: onnx.ModelProto,
    x: np.ndarray | dict[str, np.ndarray],
    reference: np.ndarray,
    case: dict,
    **kwargs,
):
    """Compile ``model`` with sparse-tvm (``compile_model(model, "x86", **kwargs)``), check its
    first output on ``x`` (one array, or a feed by input name) against ``reference`` and
    return ``(compiled, runner)``.

    The compile time goes to ``case["compile_s"][label]``, the output's relative error to
    ``case["max_rel_err"][label]``; a failure is recorded in ``case["errors"][label]`` (the run
    goes on with the other methods) and gives ``(None, None)``.
    """
    import sparse_tvm as st

    try:
        start = time.perf_counter()
        compiled = st.compile(model, "x86", **kwargs)
        case["compile_s"][label] = time.perf_counter() - start
        out = compiled.run([x] if isinstance(x, np.ndarray) else x)[0]
        case["max_rel_err"][label] = rel_err(out, reference)
        return compiled, tvm_runner(label, compiled, x)
    except Exception as err:  # keep going: report the failure in the table and JSON
        case["errors"][label] = error_text(err)
        traceback.print_exc()
        return None, None


# ---------------------------------------------------------------------------- timing


def choose_number(runner: Runner, target_s: float) -> int:
    """Calls per batch so that a batch lasts about ``target_s`` (at least 1)."""
    runner.call()
    start = time.perf_counter()
    calls = 0
    while True:
        runner.call()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed > 0.02 or calls >= 1000:
            break
    per_call = elapsed / calls
    return max(1, min(100_000, int(target_s / max(per_call, 1e-7))))


def _time_batch(runner: Runner, number: int) -> float:
    runner.call()  # warm the caches and this runtime's thread pool after the previous runner
    if runner.tvm_timer is not None:
        return runner.tvm_timer(number)
    call = runner.call
    start = time.perf_counter()
    for _ in range(number):
        call()
    return (time.perf_counter() - start) / number


@dataclass
class Timing:
    name: str
    median_s: float
    min_s: float
    max_s: float
    rounds: int
    number: int
    note: str = ""
    samples_s: list[float] = field(default_factory=list)
    # each round's core placement (benchmarks/placement.py): near / far / mixed / unknown
    placements: list[str] = field(default_factory=list)

    def median_in(self, where: str) -> float | None:
        """The median of the rounds timed in placement ``where`` (None: no such round)."""
        values = [s for s, p in zip(self.samples_s, self.placements) if p == where]
        return float(np.median(values)) if values else None

    def to_dict(self) -> dict:
        return {
            "median_s": self.median_s,
            "min_s": self.min_s,
            "max_s": self.max_s,
            "rounds": self.rounds,
            "number": self.number,
            "how": self.note,
            "samples_s": self.samples_s,
            "placements": self.placements,
            "median_near_s": self.median_in("near"),
            "median_far_s": self.median_in("far"),
        }


class ForeignLoad:
    """CPU time used by *other* processes while a block runs, in cores (0 = machine quiet).

    Read from /proc/stat (all CPUs busy time) minus this process's own CPU time; on a
    shared 2-core machine a value near 1 means another process had a core to itself.
    """

    def __enter__(self) -> ForeignLoad:
        self.cores = None
        self._start = (_busy_s(), _own_s(), time.perf_counter())
        return self

    def __exit__(self, *exc) -> None:
        busy, own, wall = _busy_s(), _own_s(), time.perf_counter()
        if self._start[0] is None or busy is None:
            return
        elapsed = wall - self._start[2]
        if elapsed > 0:
            self.cores = max(0.0, ((busy - self._start[0]) - (own - self._start[1])) / elapsed)


def _busy_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_s() -> float:
    t = os.times()
    return t.user + t.system


# Thread pools spin-wait after a call (OpenBLAS for up to ~0.1 s, onnxruntime briefly): a runner
# timed right after another runtime would share the cores with those spinning threads. The
# pause lets them park first. Without it the fast sparse kernels timed right after numpy came
# out 5-80x slower than alone.
SETTLE_S = 0.15


def measure(runners: list[Runner], rounds: int, batch_s: float = 0.05) -> dict[str, Timing]:
    """Interleaved timing of ``runners``: ``rounds`` rounds, each runner once per round, each
    batch with the core placement it ran in (probed before and after it)."""
    numbers = {r.name: choose_number(r, batch_s) for r in runners}
    samples: dict[str, list[float]] = {r.name: [] for r in runners}
    where: dict[str, list[str]] = {r.name: [] for r in runners}
    for _ in range(rounds):
        for runner in runners:
            time.sleep(SETTLE_S)
            before = placement.core_to_core_ns()
            samples[runner.name].append(_time_batch(runner, numbers[runner.name]))
            where[runner.name].append(placement.placement(before, placement.core_to_core_ns()))
    out = {}
    for runner in runners:
        values = np.array(samples[runner.name])
        out[runner.name] = Timing(
            runner.name,
            float(np.median(values)),
            float(values.min()),
            float(values.max()),
            rounds,
            numbers[runner.name],
            runner.note,
            [float(v) for v in values],
            where[runner.name],
        )
    return out


def time_case(
    case: dict, runners: list[Runner], methods: list[str], rounds: int, batch_s: float
) -> dict[str, float | None]:
    """:func:`measure` ``runners`` and record the result in ``case``: ``foreign_load_cores``,
    the median and best-round latency of each of ``methods`` (None for one that did not run:
    ``latency_s``, ``latency_min_s``) and every ``timing``. Returns ``case["latency_s"]``."""
    with ForeignLoad() as load:
        timings = measure(runners, rounds, batch_s)
    case["foreign_load_cores"] = load.cores
    case["latency_s"] = {
        name: (timings[name].median_s if name in timings else None) for name in methods
    }
    case["latency_min_s"] = {
        name: (timings[name].min_s if name in timings else None) for name in methods
    }
    case["timing"] = {name: t.to_dict() for name, t in timings.items()}
    return case["latency_s"]


def python_overhead_s(number: int = 20000) -> float:
    """Per-iteration cost of the Python timing loop with a trivial call."""

    def nothing():
        return None

    start = time.perf_counter()
    for _ in range(number):
        nothing()
    return (time.perf_counter() - start) / number


# ---------------------------------------------------------------------------- output


def fmt_us(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    us = seconds * 1e6
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def table(head: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)
    ]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(head, widths, strict=True))
        ),
        "  ".join("-" * w for w in widths),
    ]
    for row in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def write_json(path: str | os.PathLike, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default))
    os.replace(tmp, path)
    return path


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def max_abs_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|: a scale-free check that two implementations agree."""
    scale = float(np.max(np.abs(b))) or 1.0
    return max_abs_err(a, b) / scale
