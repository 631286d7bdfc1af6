"""Tuning records: a MetaSchedule ``JSONDatabase`` in a folder the user names.

MetaSchedule keys its records by the structural hash of the tuned IRModule. Our sparse kernels
can read the sparsity structure from arguments (``indices``/``indptr``), so two layers with the
same shape and the same number of blocks but a different structure can have the same IRModule.
:func:`workload_key` names a layer by its shape *and* structure, and :meth:`RecordStore.tag`
writes that key into the kernel as a function attribute, so the structural hash separates
structures and a layer with the same shape and structure finds the same records again.

``JSONDatabase`` appends one line per measured record and closes the file after each line, so
an interrupted run keeps every record of its finished batches. What it does not do:

- load a file whose last line was torn by a kill mid-write: the database refuses the whole
  file. :class:`RecordStore` drops a torn line (with a warning) before loading;
- continue: ``tune_tir`` seeds its evolutionary search with the best records of the workload
  (``init_measured_ratio`` of the population), but it spends the full trial budget again and
  may measure schedules that are already in the database. :meth:`RecordStore.tune` subtracts
  the records already measured from the budget, trains the cost model on them, and drops
  candidates that were measured before.

Tuning on a board (whose code this host cannot time) also writes ``layer_timings.json``: per
layer, the dense layer and each tuned candidate measured on the board
(:meth:`RecordStore.add_layer_timing`); ``compile`` decides dense or sparse from it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tvm
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.search_strategy import PySearchStrategy
from tvm.s_tir.meta_schedule.tune_context import _normalize_mod

from sparse_tvm.errors import SparseTVMError
from sparse_tvm.logs import tune_tir

KEY_ATTR = "sparse_tvm.workload_key"
WORKLOAD_FILE = "database_workload.json"
RECORD_FILE = "database_tuning_record.json"
LAYER_TIMING_FILE = "layer_timings.json"
EXPORT_FORMAT = "sparse-tvm-records"
# AddToDatabase stores a failed trial with run_secs [1e10]
_FAILED_SECS = 1e9


class RecordsError(SparseTVMError):
    """The records folder or an exported records file cannot be used."""


# ---------------------------------------------------------------------------------- layer key


def workload_key(
    op_kind: str,
    weight_shape: Sequence[int],
    block: Sequence[int] | str,
    m: int,
    x_layout: str,
    batch: int | None,
    bias: bool,
    relu: bool,
    target: tvm.target.Target | dict | str,
    structure: np.ndarray,
) -> str:
    """Return a stable key for a sparse layer: same shape and structure -> same key.

    Parameters
    ----------
    op_kind : str
        The kernel family, e.g. ``"matmul"`` or ``"conv2d"``.
    weight_shape : sequence of int
        The weight's ``(n, k)`` view.
    block : (r, c) or "rxc"
        The block shape; ``"1x1"`` is CSR.
    m, x_layout, batch, bias, relu
        The activation columns, the activation layout, the batch and the fused epilogue.
    target : Target, dict or str
        The target the records are measured on.
    structure : np.ndarray
        The nonzero-block pattern, one entry per ``(r, c)`` block; only ``!= 0`` matters.

    Returns
    -------
    str
        ``<op>_<n>x<k>_b<r>x<c>_m<m>_<hash>``: readable, and a SHA-256 of every field.
    """
    r, c = _block_shape(block)
    shape = [int(d) for d in weight_shape]
    pattern = np.asarray(structure) != 0
    if pattern.ndim != 2:
        raise RecordsError(f"structure must be a 2-D block pattern, got {pattern.ndim} dimensions")
    if len(shape) == 2 and pattern.shape != (-(-shape[0] // r), -(-shape[1] // c)):
        raise RecordsError(
            f"structure {pattern.shape} does not match weight {tuple(shape)} in {r}x{c} blocks"
        )
    fields = {
        "op": op_kind,
        "weight_shape": shape,
        "block": [r, c],
        "m": int(m),
        "x_layout": x_layout,
        "batch": None if batch is None else int(batch),
        "bias": bool(bias),
        "relu": bool(relu),
        "target": str(tvm.target.Target(target)),
        "structure_shape": list(pattern.shape),
        "structure": hashlib.sha256(np.packbits(pattern, axis=None).tobytes()).hexdigest(),
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]
    dims = "x".join(str(d) for d in shape)
    return f"{op_kind}_{dims}_b{r}x{c}_m{int(m)}_{digest}"


def _block_shape(block: Sequence[int] | str) -> tuple[int, int]:
    try:
        r, c = (int(v) for v in (block.split("x") if isinstance(block, str) else block))
    except ValueError:
        raise RecordsError(f"block must be (r, c) or 'rxc', got {block!r}") from None
    return r, c


# ------------------------------------------------------------------------------ record store


@dataclasses.dataclass(frozen=True)
class TuneResult:
    """What :meth:`RecordStore.tune` did: trials found in the folder and trials measured now."""

    previous_trials: int
    new_trials: int
    best_latency: float | None


LOCK_FILE = ".tuning.lock"


def records_folder(folder: str | os.PathLike) -> Path:
    """``folder`` as a writable records folder, created if missing (one-line errors)."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise RecordsError(f"records folder {path} is a file: name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RecordsError(f"cannot create records folder {path}: {err.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RecordsError(f"records folder {path} is not writable: name another folder")
    return path


@contextlib.contextmanager
def tuning_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the records folder's tuning lock: one ``tune`` run writes a folder at a time.

    The lock is an ``flock`` on ``folder/.tuning.lock``, released when the run ends however it
    ends (the kernel drops it with the process). A second run fails at once in one line. Take
    it before opening a :class:`RecordStore`: opening repairs a torn last line, which must not
    happen under a running writer."""
    fd = os.open(records_folder(folder) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another process"
            raise RecordsError(
                f"records folder {folder} is being tuned by {holder}: wait for it to finish "
                "or name another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"sparse-tvm tune (pid {os.getpid()})".encode(), 0)
        yield
    finally:
        os.close(fd)


class RecordStore:
    """Tuning records of one folder: ``database_workload.json`` + ``database_tuning_record.json``.

    Parameters
    ----------
    folder : str or Path
        Created if missing. A torn last line (a run killed mid-write) is dropped with a warning.
    module_equality : str
        MetaSchedule's workload equality: ``"structural"``, or ``"ignore-tensor"`` for kernels
        that embed the weight values as constants (the key attribute still separates layers).
    """

    def __init__(self, folder: str | os.PathLike, *, module_equality: str = "structural"):
        self.folder = records_folder(folder)
        n_workloads = _repair_lines(self.folder / WORKLOAD_FILE, _check_workload, strict=True)
        _repair_lines(self.folder / RECORD_FILE, lambda v: _check_record(v, n_workloads))
        try:
            self.database = ms.database.JSONDatabase(
                work_dir=str(self.folder), module_equality=module_equality
            )
        except Exception as err:  # TVM raises its own error types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RecordsError(f"cannot load records in {self.folder}: {first}") from None

    def __len__(self) -> int:
        return len(self.database)

    # -- keys ---------------------------------------------------------------------------------

    @staticmethod
    def tag(func: tvm.tirx.PrimFunc, key: str) -> tvm.tirx.PrimFunc:
        """Return ``func`` carrying ``key``: its records are then found by :meth:`best`."""
        return func.with_attr(KEY_ATTR, key)

    def _records_of_key(self, key: str) -> list[ms.database.TuningRecord]:
        # get_all_tuning_records is sorted by mean run time, best first
        return [r for r in self.database.get_all_tuning_records() if _key_of(r.workload.mod) == key]

    def best(self, key: str) -> ms.database.TuningRecord | None:
        """The fastest successful record of the layer ``key``, or None."""
        return next((r for r in self._records_of_key(key) if _latency(r) is not None), None)

    def best_latency(self, key: str) -> float | None:
        """The mean run time in seconds of :meth:`best`, or None."""
        record = self.best(key)
        return None if record is None else _latency(record)

    def best_schedule(self, key: str) -> tvm.s_tir.Schedule | None:
        """The schedule of :meth:`best` replayed on its workload, or None."""
        record = self.best(key)
        return None if record is None else _replay(record)

    # -- continue -----------------------------------------------------------------------------

    def measured(
        self, mod: tvm.tirx.PrimFunc | tvm.IRModule, target: tvm.target.Target | None = None
    ) -> list[ms.database.TuningRecord]:
        """All records (failed trials included) of the workload ``mod`` [on ``target``]."""
        mod = _normalize_mod(mod)
        if not self.database.has_workload(mod):
            return []
        workload = self.database.commit_workload(mod)
        target_str = None if target is None else str(tvm.target.Target(target))
        return [
            r
            for r in self.database.get_all_tuning_records()
            if r.workload.same_as(workload) and (target_str is None or str(r.target) == target_str)
        ]

    def tune(
        self,
        mod: tvm.tirx.PrimFunc | tvm.IRModule,
        target: tvm.target.Target | dict,
        max_trials: int,
        *,
        num_trials_per_iter: int = 16,
        space: ms.space_generator.SpaceGenerator.SpaceGeneratorType = "post-order-apply",
        strategy: ms.search_strategy.SearchStrategy.SearchStrategyType = "evolutionary",
        builder: ms.builder.Builder.BuilderType = "local",
        runner: ms.runner.Runner.RunnerType = "local",
        cost_model: ms.cost_model.CostModel.CostModelType = "xgb",
        num_tuning_cores: int | str = "physical",
        seed: int | None = None,
    ) -> TuneResult:
        """Tune ``mod`` (one PrimFunc) until its workload has ``max_trials`` records here.

        A rerun with the same folder continues: it measures only the remaining trials, starts
        its cost model from the records, seeds the search with the best of them, and does not
        measure a schedule that is already recorded. Each record reaches the disk as soon as
        its batch of ``num_trials_per_iter`` is measured.
        """
        mod = _normalize_mod(mod)
        if sum(isinstance(f, tvm.tirx.PrimFunc) for f in mod.functions.values()) != 1:
            raise RecordsError(
                "RecordStore.tune takes one PrimFunc; tune a module's functions one by one"
            )
        target = tvm.target.Target(target)
        previous = len(self.measured(mod, target))
        remaining = max_trials - previous
        if remaining > 0:
            if not isinstance(strategy, ms.search_strategy.SearchStrategy):
                strategy = ms.search_strategy.SearchStrategy.create(strategy)
            tune_tir(
                mod,
                target,
                work_dir=str(self.folder),
                max_trials_global=remaining,
                num_trials_per_iter=min(num_trials_per_iter, remaining),
                space=space,
                strategy=ContinueFromRecords(strategy),
                builder=builder,
                runner=runner,
                database=self.database,
                cost_model=cost_model,
                num_tuning_cores=num_tuning_cores,
                seed=seed,
            )
        records = self.measured(mod, target)
        best = next((_latency(r) for r in records if _latency(r) is not None), None)
        return TuneResult(previous, len(records) - previous, best)

    # -- layer timings measured on a board ---------------------------------------------------

    def add_layer_timing(self, entry: dict) -> None:
        """Append one layer's measurements (a JSON object with ``"layer"`` and ``"target"``)."""
        line = json.dumps(entry, sort_keys=True)
        with open(self.folder / LAYER_TIMING_FILE, "a") as f:
            f.write(line + "\n")

    def layer_timings(self, target: tvm.target.Target | dict | str) -> dict[str, dict]:
        """The latest entry of each layer measured for ``target``, by ``"layer"`` key."""
        path = self.folder / LAYER_TIMING_FILE
        target_str = str(tvm.target.Target(target))
        found: dict[str, dict] = {}
        if not path.exists():
            return found
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line torn by a kill mid-write
                continue
            if isinstance(entry, dict) and entry.get("target") == target_str:
                found[str(entry.get("layer"))] = entry
        return found

    # -- shipping -----------------------------------------------------------------------------

    def export(self, path: str | os.PathLike, *, top_k: int | None = 1) -> Path:
        """Write the ``top_k`` best successful records of every workload to one JSON file.

        The file (``{"format", "workloads", "records"}``) is what ``schedules/`` ships; read it
        back with :meth:`merge` or :func:`load_exported`.
        """
        seen: list[ms.database.Workload] = []
        workloads: list[Any] = []
        records: list[Any] = []
        kept: dict[int, int] = {}
        for record in self.database.get_all_tuning_records():  # best first
            if _latency(record) is None:
                continue
            wid = next((i for i, w in enumerate(seen) if w.same_as(record.workload)), None)
            if wid is None:
                wid = len(seen)
                seen.append(record.workload)
                workloads.append(record.workload.as_json())
            if top_k is None or kept.get(wid, 0) < top_k:
                kept[wid] = kept.get(wid, 0) + 1
                records.append([wid, record.as_json()])
        data = {"format": EXPORT_FORMAT, "version": 1, "workloads": workloads, "records": records}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data) + "\n")
        os.replace(tmp, path)
        return path

    def merge(self, path: str | os.PathLike) -> int:
        """Add the records of an exported file to this folder; returns how many were new."""
        return _commit_exported(self.database, _read_exported(path))


def load_exported(path: str | os.PathLike) -> ms.database.Database:
    """An in-memory database holding the records of an exported file (e.g. from ``schedules/``)."""
    database = ms.database.MemoryDatabase()
    _commit_exported(database, _read_exported(path))
    return database


# ------------------------------------------------------------------- continue: search strategy


@derived_object
class ContinueFromRecords(PySearchStrategy):
    """Wrap a search strategy so that a rerun builds on the records already in the database.

    Before tuning it trains the cost model on the workload's records and remembers their
    schedules; candidates equal to a recorded schedule are dropped instead of measured.
    MetaSchedule's evolutionary search already seeds its population from the database.
    """

    def __init__(self, inner: ms.search_strategy.SearchStrategy):
        self.inner = inner
        self.context = None
        self.seen: set[int] = set()

    def _initialize_with_tune_context(self, context) -> None:
        self.context = context
        self.inner._initialize_with_tune_context(context)

    def pre_tuning(
        self, max_trials, num_trials_per_iter, design_spaces, database=None, cost_model=None
    ):
        self.seen = set()
        if database is not None and database.has_workload(self.context.mod):
            workload = database.commit_workload(self.context.mod)
            records = [r for r in database.get_all_tuning_records() if r.workload.same_as(workload)]
            candidates = []
            for record in records:
                sch = _replay(record)
                if sch is not None:
                    self.seen.add(tvm_ffi.structural_hash(sch.mod))
                    candidates.append(record.as_measure_candidate())
            if cost_model is not None and candidates:
                results = [
                    ms.runner.RunnerResult([float(s) for s in r.run_secs], None) for r in records
                ]
                cost_model.update(self.context, candidates, results[: len(candidates)])
        self.inner.pre_tuning(max_trials, num_trials_per_iter, design_spaces, database, cost_model)

    def post_tuning(self) -> None:
        self.inner.post_tuning()

    def generate_measure_candidates(self):
        # The inner strategy remembers what it proposed, so asking again yields new schedules.
        for _ in range(8):
            candidates = self.inner.generate_measure_candidates()
            if candidates is None:
                return None
            fresh = []
            for candidate in candidates:
                shash = tvm_ffi.structural_hash(candidate.sch.mod)
                if shash not in self.seen:
                    self.seen.add(shash)
                    fresh.append(candidate)
            if fresh:
                return fresh
        return None

    def notify_runner_results(self, measure_candidates, results) -> None:
        self.inner.notify_runner_results(measure_candidates, results)

    def clone(self):
        return ContinueFromRecords(self.inner.clone())


# ---------------------------------------------------------------------------------- helpers


def _key_of(mod: tvm.IRModule) -> str | None:
    for func in mod.functions.values():
        attrs = func.attrs
        if attrs is not None and KEY_ATTR in attrs:
            return str(attrs[KEY_ATTR])
    return None


def _latency(record: ms.database.TuningRecord) -> float | None:
    if not record.run_secs:
        return None
    secs = float(np.mean([float(s) for s in record.run_secs]))
    return secs if secs < _FAILED_SECS else None


def _replay(record: ms.database.TuningRecord) -> tvm.s_tir.Schedule | None:
    sch = tvm.s_tir.Schedule(record.workload.mod)
    try:
        record.trace.apply_to_schedule(sch, remove_postproc=False)
    except Exception:  # a trace that no longer replays (e.g. TVM changed) is not a schedule
        return None
    return sch


def _check_workload(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], str)


def _check_record(value: Any, n_workloads: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and 0 <= value[0] < n_workloads
        and isinstance(value[1], list)
    )


def _repair_lines(path: Path, check, *, strict: bool = False) -> int:
    """Drop lines a kill tore (or that are not records) so that JSONDatabase can load the file.

    Returns the number of good lines. With ``strict`` (the workload table, whose line numbers
    the records refer to) only the last line may be dropped.
    """
    if not path.exists():
        return 0
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    good, dropped = [], []
    for number, line in enumerate(lines, start=1):
        try:
            ok = check(json.loads(line))
        except ValueError:
            ok = False
        if ok:
            good.append(line)
        elif strict and number != len(lines):
            raise RecordsError(f"line {number} of {path} is not a workload: the folder is corrupt")
        else:
            dropped.append(number)
    if dropped:
        warnings.warn(
            f"{path}: skipped {len(dropped)} unreadable line(s) {dropped[:5]} "
            "(a tuning run killed while writing)",
            stacklevel=3,
        )
    repaired = b"".join(line + b"\n" for line in good)
    if repaired != raw:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(repaired)
        os.replace(tmp, path)
    return len(good)


def _read_exported(path: str | os.PathLike) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise RecordsError(f"cannot read exported records {path}: {err}") from None
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise RecordsError(
            f"{path} is not a sparse-tvm records file (written by RecordStore.export)"
        )
    return data


def _commit_exported(database: ms.database.Database, data: dict) -> int:
    workloads = [
        database.commit_workload(ms.database.Workload.from_json(w).mod) for w in data["workloads"]
    ]
    existing = database.get_all_tuning_records()
    known = [
        {json.dumps(r.as_json()[0]) for r in existing if r.workload.same_as(w)} for w in workloads
    ]
    added = 0
    for wid, record_json in data["records"]:
        record = ms.database.TuningRecord.from_json(record_json, workloads[wid])
        trace = json.dumps(record.as_json()[0])
        if trace not in known[wid]:
            known[wid].add(trace)
            database.commit_tuning_record(record)
            added += 1
    return added
